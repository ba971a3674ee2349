//! The `trunkd` binary as an operator runs it: configuration commands, and `serve`
//! stopped by SIGTERM with gateways connected.

mod common;

use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use trunkd::config::{Config, DEFAULT_TOML};
use trunkd::link::gateway::{GatewayError, GatewayLink};
use trunkd::protocol::{Cause, SiteKey};

const BIN: &str = env!("CARGO_BIN_EXE_trunkd");

#[tokio::test]
async fn config_default_prints_the_documented_defaults() {
    let out = Command::new(BIN)
        .args(["config", "default"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, DEFAULT_TOML);
    assert_eq!(Config::from_toml(&text).unwrap(), Config::default());
}

#[tokio::test]
async fn config_check_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[link]\nkeepalive_interval_ms = 5\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keepalive_interval_ms"), "{err}");
}

#[tokio::test]
async fn keygen_prints_a_fresh_usable_key() {
    let a = Command::new(BIN)
        .args(["config", "keygen"])
        .output()
        .await
        .unwrap();
    let b = Command::new(BIN)
        .args(["config", "keygen"])
        .output()
        .await
        .unwrap();
    let (a, b) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    assert!(SiteKey::from_hex(a.trim()).is_ok(), "{a}");
    assert_ne!(a, b);
}

/// A config file whose embedded database lives in `dir`, and a runner for `trunkd`.
struct Cli {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Cli {
    fn new() -> Cli {
        Cli::on_database("")
    }

    /// On the database at `url` (empty: the embedded one).
    fn on_database(url: &str) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("trunkd.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!("[link]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = {url:?}\ndata_dir = {data:?}\n"),
        )
        .unwrap();
        Cli { dir, config }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL");
        c
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    async fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().await.unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[tokio::test]
async fn provisioning_from_the_command_line() {
    let cli = Cli::new();
    cli.ok(&["fleet", "add", "--id", "100", "--name", "Police"]).await;
    cli.ok(&[
        "talkgroup",
        "add",
        "--fleet",
        "100",
        "--id",
        "10",
        "--name",
        "Dispatch",
    ])
    .await;
    cli.ok(&[
        "talkgroup",
        "add",
        "--fleet",
        "100",
        "--id",
        "11",
        "--name",
        "Tactical",
    ])
    .await;
    let out = cli
        .ok(&["site", "add", "--id", "1", "--name", "North", "--carriers", "2"])
        .await;
    assert!(out.contains("link key"), "{out}");
    let imei = imei(35_000_000_000_001).to_string();
    let k = radio_keys(1).k.to_hex();
    let out = cli
        .cmd()
        .args([
            "subscriber",
            "add",
            "--imei",
            &imei,
            "--fleet",
            "100",
            "--member",
            "7",
            "--talkgroups",
            "10,11",
        ])
        .env("TRUNKD_K", &k)
        .env("TRUNKD_OPC", radio_keys(1).opc.to_hex())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imsi 001010000000001"));
    let shown = cli.ok(&["subscriber", "show", "001010000000001"]).await;
    assert!(
        shown.contains(&imei) && shown.contains("100/7") && shown.contains("10,11"),
        "{shown}"
    );
    assert!(!shown.to_lowercase().contains(&k), "K printed by show");
    assert!(
        !shown.to_lowercase().contains(&radio_keys(1).opc.to_hex()),
        "OPc printed by show"
    );
    cli.ok(&["subscriber", "inhibit", "001010000000001"]).await;
    assert!(cli
        .ok(&["subscriber", "show", "001010000000001"])
        .await
        .contains("inhibited"));
    let err = cli.fails(&["subscriber", "show", "001019999999999"]).await;
    assert!(err.contains("does not exist"), "{err}");
    let err = cli
        .fails(&["fleet", "add", "--id", "100", "--name", "again"])
        .await;
    assert!(err.contains("already exists"), "{err}");
}

#[tokio::test]
async fn a_csv_import_with_one_bad_row_writes_nothing() {
    let cli = Cli::new();
    cli.ok(&["fleet", "add", "--id", "100", "--name", "Police"]).await;
    cli.ok(&[
        "talkgroup",
        "add",
        "--fleet",
        "100",
        "--id",
        "10",
        "--name",
        "Dispatch",
    ])
    .await;
    let header = "imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups\n";
    let row = |n: u64, member: u32| {
        let keys = radio_keys(n as u8);
        format!(
            "{},,,100,{member},,{},{},2,all,10\n",
            imei(35_000_000_000_000 + n),
            keys.k.to_hex(),
            keys.opc.to_hex()
        )
    };
    let file = cli.dir.path().join("units.csv");
    // Line 4 reuses member 1.
    std::fs::write(&file, format!("{header}{}{}{}", row(1, 1), row(2, 2), row(3, 1))).unwrap();
    let err = cli.fails(&["subscriber", "import", file.to_str().unwrap()]).await;
    assert!(
        err.contains("line 4: member 1 of fleet 100 duplicates line 2"),
        "{err}"
    );
    assert!(err.contains("nothing imported"), "{err}");
    cli.fails(&["subscriber", "show", "001010000000001"]).await;
    std::fs::write(&file, format!("{header}{}{}{}", row(1, 1), row(2, 2), row(3, 3))).unwrap();
    let out = cli.ok(&["subscriber", "import", file.to_str().unwrap()]).await;
    // The identities it assigned, by line.
    assert!(out.starts_with("imported 3 subscribers\n"), "{out}");
    let assigned = format!("4,{},001010000000003,3\n", imei(35_000_000_000_003));
    assert!(
        out.contains("line,imei,imsi,individual_id\n") && out.ends_with(&assigned),
        "{out}"
    );
    cli.ok(&["subscriber", "show", "001010000000003"]).await;

    // With --assigned they go to a file; CRLF line ends count lines as LF ones do.
    let listing = cli.dir.path().join("assigned.csv");
    let crlf = format!("{header}{}{}", row(4, 4), row(5, 5)).replace('\n', "\r\n");
    std::fs::write(&file, crlf).unwrap();
    let args = [
        "subscriber",
        "import",
        file.to_str().unwrap(),
        "--assigned",
        listing.to_str().unwrap(),
    ];
    let out = cli.ok(&args).await;
    assert!(out.contains("2 assigned identities written to"), "{out}");
    let written = std::fs::read_to_string(&listing).unwrap();
    assert_eq!(
        written.lines().nth(2),
        Some(format!("3,{},001010000000005,5", imei(35_000_000_000_005)).as_str())
    );
    // The same file again: line 2 duplicates the database.
    let err = cli.fails(&args[..3]).await;
    let want = format!("line 2: IMEI {} is already provisioned", imei(35_000_000_000_004));
    assert!(err.contains(&want), "{err}");
}

#[tokio::test]
async fn serve_stops_cleanly_on_sigterm_and_never_logs_keys() {
    let cli = Cli::new();
    let key_hex = key(1).to_hex();
    cli.ok(&["site", "add", "--id", "1", "--name", "North", "--key", &key_hex])
        .await;
    cli.ok(&["fleet", "add", "--id", "100", "--name", "Police"]).await;
    cli.ok(&[
        "talkgroup",
        "add",
        "--fleet",
        "100",
        "--id",
        "10",
        "--name",
        "Dispatch",
    ])
    .await;
    let keys = radio_keys(1);
    let unit_imei = imei(35_000_000_000_001);
    let out = cli
        .cmd()
        .args([
            "subscriber",
            "add",
            "--imei",
            &unit_imei.to_string(),
            "--fleet",
            "100",
            "--member",
            "1",
        ])
        .args(["--talkgroups", "10"])
        .env("TRUNKD_K", keys.k.to_hex())
        .env("TRUNKD_OPC", keys.opc.to_hex())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    // Everything the controller can log, logged.
    let mut child = LoggingChild::spawn(cli.cmd().env("RUST_LOG", "trace").arg("serve"));
    let addr = child.link_addr().await;

    let mut gw = GatewayLink::connect(addr, site(1), &key(1)).await.unwrap();
    // A wrong key too, so that the failure path is logged.
    assert!(GatewayLink::connect(addr, site(1), &key(2)).await.is_err());
    // A registration, and one with the wrong K.
    let f = trunkd::sim::register(&mut gw, trunkd::protocol::Identity::Imei(unit_imei), &keys)
        .await
        .unwrap();
    assert!(
        matches!(f.msg, trunkd::protocol::Message::RegAccept { .. }),
        "{f:?}"
    );
    let f = trunkd::sim::register(
        &mut gw,
        trunkd::protocol::Identity::Imei(unit_imei),
        &radio_keys(2),
    )
    .await
    .unwrap();
    assert!(
        matches!(f.msg, trunkd::protocol::Message::RegReject { .. }),
        "{f:?}"
    );

    let status = child.terminate().await;
    assert!(matches!(
        next_service(&mut gw).await,
        Err(GatewayError::Closed(Cause::ShuttingDown))
    ));
    assert!(status.success(), "exit status {status}");
    let log = &child.log;
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("link rejected"), "{log}");
    let lower = log.to_lowercase();
    for secret in [
        key_hex.clone(),
        key(2).to_hex(),
        keys.k.to_hex(),
        keys.opc.to_hex(),
    ] {
        assert!(!lower.contains(&secret), "a secret reached the log");
    }
}

/// A subscriber CSV with members `members` of fleet 100 on talkgroups 10 and 11.
fn units_csv(members: std::ops::RangeInclusive<u16>) -> String {
    let mut text =
        "imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups\n".to_string();
    for m in members {
        let keys = radio_keys(m as u8);
        text += &format!(
            "{},,,100,{m},,{},{},2,all,10;11\n",
            imei(35_000_000_000_000 + u64::from(m)),
            keys.k.to_hex(),
            keys.opc.to_hex()
        );
    }
    text
}

impl Cli {
    /// Fleet 100 with talkgroups 10 and 11, and subscribers `members` imported.
    async fn provisioned(members: std::ops::RangeInclusive<u16>) -> Cli {
        let cli = Cli::new();
        cli.ok(&["fleet", "add", "--id", "100", "--name", "Police"]).await;
        for (id, name) in [("10", "Dispatch"), ("11", "Tactical")] {
            cli.ok(&["talkgroup", "add", "--fleet", "100", "--id", id, "--name", name])
                .await;
        }
        let file = cli.dir.path().join("units.csv");
        std::fs::write(&file, units_csv(members)).unwrap();
        cli.ok(&["subscriber", "import", file.to_str().unwrap()]).await;
        cli
    }
}

#[tokio::test]
async fn listing_and_removing_from_the_command_line() {
    let cli = Cli::provisioned(1..=3).await;
    let key_hex = key(1).to_hex();
    cli.ok(&[
        "site",
        "add",
        "--id",
        "1",
        "--name",
        "North",
        "--carriers",
        "2",
        "--key",
        &key_hex,
    ])
    .await;
    cli.ok(&["site", "fault", "--id", "1", "--carrier", "1", "--slot", "2"])
        .await;
    cli.ok(&["fleet", "add", "--id", "200", "--name", "Fire"]).await;

    let fleets = cli.ok(&["fleet", "list"]).await;
    assert!(
        fleets.contains("100    Police\n") && fleets.contains("200    Fire\n"),
        "{fleets}"
    );
    let tgs = cli.ok(&["talkgroup", "list", "--fleet", "100"]).await;
    assert_eq!(tgs.lines().count(), 3, "{tgs}");
    assert!(tgs.contains("Tactical"), "{tgs}");
    assert_eq!(
        cli.ok(&["talkgroup", "list", "--fleet", "200"])
            .await
            .lines()
            .count(),
        1
    );
    let sites = cli.ok(&["site", "list"]).await;
    assert!(sites.contains("North") && sites.contains("c1s2"), "{sites}");
    assert!(
        !sites.to_lowercase().contains(&key_hex),
        "site list printed a key"
    );

    let out = cli
        .cmd()
        .args(["subscriber", "list", "--fleet", "100", "--limit", "2"])
        .output()
        .await
        .unwrap();
    let (page, hint) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(page.lines().count(), 3, "{page}");
    assert!(
        page.contains("001010000000002") && !page.contains("001010000000003"),
        "{page}"
    );
    assert!(hint.contains("--after 001010000000002"), "{hint}");
    let rest = cli
        .ok(&["subscriber", "list", "--after", "001010000000002"])
        .await;
    assert!(
        rest.contains("001010000000003") && rest.lines().count() == 2,
        "{rest}"
    );
    for m in 1..=3 {
        let keys = radio_keys(m);
        for secret in [keys.k.to_hex(), keys.opc.to_hex()] {
            assert!(
                !page.contains(&secret) && !rest.contains(&secret),
                "subscriber list printed a key"
            );
        }
    }

    let err = cli.fails(&["fleet", "remove", "--id", "100"]).await;
    assert!(err.contains("still has 2 talkgroups and 3 subscribers"), "{err}");
    let err = cli
        .fails(&["talkgroup", "remove", "--fleet", "100", "--id", "11"])
        .await;
    assert!(err.contains("permitted to 3 subscribers"), "{err}");
    for imsi in ["001010000000001", "001010000000002", "001010000000003"] {
        cli.ok(&["subscriber", "remove", imsi]).await;
    }
    let err = cli.fails(&["subscriber", "show", "001010000000001"]).await;
    assert!(err.contains("does not exist"), "{err}");
    for id in ["10", "11"] {
        cli.ok(&["talkgroup", "remove", "--fleet", "100", "--id", id])
            .await;
    }
    cli.ok(&["fleet", "remove", "--id", "100"]).await;
    cli.ok(&["site", "remove", "--id", "1"]).await;
    assert_eq!(cli.ok(&["site", "list"]).await.lines().count(), 1);
    assert!(!cli.ok(&["fleet", "list"]).await.contains("Police"));
    let err = cli.fails(&["site", "remove", "--id", "1"]).await;
    assert!(err.contains("site 1 does not exist"), "{err}");
}

#[tokio::test]
async fn admin_commands_refuse_what_cannot_be_right() {
    let cli = Cli::provisioned(1..=1).await;
    cli.ok(&["site", "add", "--id", "1", "--name", "North"]).await;
    // Arguments separated by `|`.
    let zero_key = format!("site|add|--id|2|--name|X|--key|{}", "0".repeat(64));
    let refusals = [
        ("fleet|add|--id|0|--name|X", "1..=65535"),
        ("fleet|add|--id|65536|--name|X", "1..=65535"),
        ("fleet|add|--id|7|--name| ", "needs a name"),
        ("talkgroup|add|--fleet|100|--id|12|--name|", "needs a name"),
        ("site|add|--id|4096|--name|X", "1..=4095"),
        ("site|add|--id|2|--name|X|--slots|5", "6, 4, 3 or 2"),
        ("site|add|--id|2|--name|X|--carriers|65", "1..=64"),
        (zero_key.as_str(), "all zeros"),
        ("site|fault|--id|1|--carrier|1", "no carrier 1"),
        ("site|fault|--id|1|--carrier|0|--slot|0", "control channel"),
        ("site|restore|--id|1|--carrier|0|--slot|6", "0..=5"),
        ("subscriber|list|--limit|0", "1..=10000"),
    ];
    for (args, why) in refusals {
        let args: Vec<&str> = args.split('|').collect();
        let err = cli.fails(&args).await;
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(cli.ok(&["site", "list"]).await.lines().count(), 2);
    // One subscriber is not a file: no line numbers.
    let add = |tgs: &'static str, member: &'static str| {
        let mut c = cli.cmd();
        c.args([
            "subscriber",
            "add",
            "--imei",
            &imei(35_000_000_000_009).to_string(),
        ])
        .args(["--fleet", "100", "--member", member, "--talkgroups", tgs]);
        c
    };
    for (tgs, member, why) in [
        ("10,", "9", "talkgroup list `10,` has an empty item"),
        ("10,12", "9", "talkgroup 12 does not exist in fleet 100"),
        ("10", "1", "member 1 of fleet 100 is already provisioned"),
    ] {
        let out = add(tgs, member).output().await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{err}");
        assert!(!err.contains("line"), "{err}");
    }
}

#[tokio::test]
async fn a_listing_into_a_closed_pipe_ends_quietly() {
    // Far more than a pipe holds, so trunkd is still writing when the reader leaves.
    let cli = Cli::provisioned(1..=3000).await;
    let mut child = cli
        .cmd()
        .args(["subscriber", "list", "--limit", "10000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next_line().await.unwrap().unwrap().starts_with("imsi"));
    drop(lines);
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("trunkd did not exit")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.is_empty(), "{err}");
}

impl Cli {
    /// Runs `trunkd args` with `input` on its standard input.
    async fn with_input(&self, args: &[&str], input: &str) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // A command that refuses its arguments exits without reading: its stdin is then
        // closed (broken pipe), and its output says why.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        child.wait_with_output().await.unwrap()
    }
}

#[tokio::test]
async fn operators_from_the_command_line_with_passwords_read_twice() {
    let cli = Cli::new();
    cli.ok(&["fleet", "add", "--id", "100", "--name", "Police"]).await;
    // There is no default account.
    assert_eq!(cli.ok(&["operator", "list"]).await.lines().count(), 1);

    let pw = "a long passphrase\na long passphrase\n";
    let out = cli
        .with_input(&["operator", "add", "alice", "--role", "admin"], pw)
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli
        .with_input(
            &[
                "operator",
                "add",
                "bob",
                "--role",
                "dispatcher",
                "--fleets",
                "100",
            ],
            pw,
        )
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Refusals, each saying why, and nothing written.
    let refused = [
        (
            vec!["operator", "add", "carol", "--role", "viewer"],
            "a long passphrase\nanother one!!\n",
            "differ",
        ),
        (
            vec!["operator", "add", "carol", "--role", "viewer"],
            "short\nshort\n",
            "12",
        ),
        (
            vec!["operator", "add", "carol", "--role", "viewer"],
            "a long passphrase\n",
            "two lines",
        ),
        (
            vec!["operator", "add", "carol", "--role", "root"],
            pw,
            "unknown role",
        ),
        (
            vec!["operator", "add", "carol", "--role", "viewer", "--fleets", "200"],
            pw,
            "fleet 200 does not exist",
        ),
        (
            vec!["operator", "add", "Carol", "--role", "viewer"],
            pw,
            "operator name",
        ),
        (
            vec!["operator", "add", "alice", "--role", "viewer"],
            pw,
            "already exists",
        ),
    ];
    for (args, input, why) in refused {
        let out = cli.with_input(&args, input).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // The password is never an argument.
    let err = cli
        .fails(&["operator", "add", "carol", "--role", "viewer", "--password", "x"])
        .await;
    assert!(err.contains("--password"), "{err}");

    let list = cli.ok(&["operator", "list"]).await;
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["alice", "admin", "enabled", "all"],
            vec!["bob", "dispatcher", "enabled", "100"]
        ]
    );
    assert!(!list.contains("argon2"), "{list}");

    cli.ok(&["operator", "update", "bob", "--role", "viewer", "--fleets", "all"])
        .await;
    cli.ok(&["operator", "disable", "bob"]).await;
    let out = cli
        .with_input(
            &["operator", "passwd", "bob"],
            "another passphrase\nanother passphrase\n",
        )
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = cli.ok(&["operator", "list"]).await;
    assert!(
        list.contains("bob")
            && list
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["bob", "viewer", "disabled", "all"]),
        "{list}"
    );
    assert!(cli
        .fails(&["operator", "disable", "nobody"])
        .await
        .contains("operator nobody does not exist"));
    cli.ok(&["operator", "remove", "bob"]).await;
    assert!(!cli.ok(&["operator", "list"]).await.contains("bob"));
}

#[tokio::test]
async fn rotate_key_adds_a_signing_key() {
    let cli = Cli::new();
    let first = cli.ok(&["auth", "rotate-key"]).await;
    let second = cli.ok(&["auth", "rotate-key"]).await;
    assert!(
        first.starts_with("signing key ") && second.starts_with("signing key "),
        "{first}"
    );
    assert_ne!(first, second);
}

/// `trunkd serve` on `cli`'s configuration (killed when dropped); its API's base URL.
async fn serve_api(cli: &Cli) -> (tokio::process::Child, String) {
    let mut serving = LoggingChild::spawn(cli.cmd().env("RUST_LOG", "info").arg("serve"));
    let addr = serving.api_addr().await;
    // The rest of the log is read, so that a full pipe never stops the server.
    let mut lines = serving.lines;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (serving.child, format!("http://{addr}/api/v1"))
}

#[tokio::test]
async fn two_serve_processes_on_one_postgresql_database_accept_each_others_tokens() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let cli = Cli::on_database(&db.url);
    let pw = "a long passphrase";
    let out = cli
        .with_input(
            &["operator", "add", "alice", "--role", "admin"],
            &format!("{pw}\n{pw}\n"),
        )
        .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_a, a) = serve_api(&cli).await;
    let (_b, b) = serve_api(&cli).await;
    let http = reqwest::Client::new();
    let whoami = |base: &str, token: &str| {
        let r = http.get(format!("{base}/auth/whoami")).bearer_auth(token).send();
        async move { r.await.unwrap().status().as_u16() }
    };
    let tokens = |r: serde_json::Value| {
        let access = r["access_token"].as_str().unwrap().to_string();
        (access, r["refresh_token"].as_str().unwrap().to_string())
    };

    // Signed by one, accepted by the other; a refresh token of one rotated by the other.
    let r = http
        .post(format!("{a}/auth/login"))
        .json(&serde_json::json!({"username": "alice", "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (from_a, refresh_a) = tokens(r.json().await.unwrap());
    assert_eq!(whoami(&b, &from_a).await, 200);
    let r = http
        .post(format!("{b}/auth/refresh"))
        .json(&serde_json::json!({"refresh_token": refresh_a}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (from_b, _) = tokens(r.json().await.unwrap());
    assert_eq!(whoami(&a, &from_b).await, 200);

    // Disabled from the command line: both refuse its tokens.
    cli.ok(&["operator", "disable", "alice"]).await;
    tokio::time::timeout(PATIENCE, async {
        while whoami(&a, &from_b).await != 401 || whoami(&b, &from_a).await != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a disabled operator's tokens still open the API");
}

/// A self-signed certificate for `localhost` written over `cert` and `key`: its PEM.
fn new_certificate(cert: &std::path::Path, key: &std::path::Path) -> String {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(cert, c.cert.pem()).unwrap();
    std::fs::write(key, c.key_pair.serialize_pem()).unwrap();
    c.cert.pem()
}

/// `GET /healthz` over TLS at `port`, trusting only `ca`: the status, or the error.
async fn healthz_trusting(port: u16, ca: &str) -> Result<u16, String> {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = http.get(format!("https://localhost:{port}/healthz")).send().await;
    r.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}"))
}

/// The next notification trunkd sends systemd.
async fn notified(socket: &tokio::net::UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(PATIENCE * 3, socket.recv(&mut buf))
        .await
        .expect("no notification")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn serve_tells_systemd_it_is_ready_and_reloads_its_certificate_and_log_level_on_sighup() {
    let cli = Cli::new();
    let (cert, key) = (cli.dir.path().join("api.crt"), cli.dir.path().join("api.key"));
    let first = new_certificate(&cert, &key);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |level: &str| {
        let base = std::fs::read_to_string(&cli.config).unwrap();
        let base = base.split("[log]").next().unwrap().to_string();
        let base = base.replace(
            "listen = \"127.0.0.1:0\"\n[database]",
            &format!("listen = \"127.0.0.1:{port}\"\ntls_cert = {cert:?}\ntls_key = {key:?}\n[database]"),
        );
        std::fs::write(&cli.config, format!("{base}[log]\nlevel = {level:?}\n")).unwrap();
    };
    config("warn");
    let socket_path = cli.dir.path().join("notify.sock");
    let systemd = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let mut serving = LoggingChild::spawn(cli.cmd().env("NOTIFY_SOCKET", &socket_path).arg("serve"));

    // Ready once it serves: the API answers with the first certificate.
    assert_eq!(notified(&systemd).await, "READY=1\nSTATUS=serving\n");
    assert_eq!(healthz_trusting(port, &first).await, Ok(200));

    // SIGHUP: the configuration read again, a new certificate and a new log level.
    let second = new_certificate(&cert, &key);
    config("info");
    let pid = serving.child.id().unwrap().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().await.unwrap();
    assert!(hup.success());
    let reloading = notified(&systemd).await;
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(notified(&systemd).await, "READY=1\nSTATUS=serving\n");
    // At warn, the info lines of the reload show only once the new level is in force.
    serving.read_until("reload: log.level reloaded").await;
    serving
        .read_until("reload: api.tls_cert and api.tls_key reloaded")
        .await;
    assert_eq!(healthz_trusting(port, &second).await, Ok(200));
    assert!(
        healthz_trusting(port, &first).await.is_err(),
        "the old certificate is still served"
    );

    // A certificate file that cannot be read keeps the one in force.
    std::fs::write(&cert, "not a certificate").unwrap();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().await.unwrap();
    assert!(hup.success());
    serving
        .read_until("reload: the API's certificate kept as it was")
        .await;
    assert_eq!(healthz_trusting(port, &second).await, Ok(200));

    let status = serving.terminate().await;
    assert!(status.success(), "{status}");
    let mut stopping = notified(&systemd).await;
    while stopping.starts_with("RELOADING") || stopping.starts_with("READY") {
        stopping = notified(&systemd).await;
    }
    assert_eq!(stopping, "STOPPING=1\nSTATUS=stopping\n");
}
