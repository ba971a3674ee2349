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
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("trunkd.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!("[link]\nlisten = \"127.0.0.1:0\"\n[database]\ndata_dir = {data:?}\n"),
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
    assert!(cli
        .ok(&["subscriber", "import", file.to_str().unwrap()])
        .await
        .contains("imported 3"));
    cli.ok(&["subscriber", "show", "001010000000003"]).await;
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
    let mut child = cli
        .cmd()
        .env("RUST_LOG", "trace")
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("link server listening") {
                let addr = line
                    .split("addr=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap();
                return addr.parse::<std::net::SocketAddr>().unwrap();
            }
        }
        panic!("trunkd exited before listening:\n{log}");
    })
    .await
    .expect("trunkd did not start");

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

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());
    assert!(matches!(
        next_service(&mut gw).await,
        Err(GatewayError::Closed(Cause::ShuttingDown))
    ));
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("trunkd did not exit")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
    }
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
