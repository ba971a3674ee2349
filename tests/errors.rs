//! Honest configuration and errors, through the real `trunkd` binary: `config check`
//! refuses what `serve` would refuse or misread, naming the field as the user wrote it,
//! once; an unreachable PostgreSQL is named by host and port, never with its password.

use std::process::Output;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_trunkd");

/// `trunkd ARGS` with `toml` as its configuration file (its database in a scratch
/// directory) and `env` added to a clean environment.
async fn trunkd(toml: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trunkd.toml");
    let data = dir.path().join("data");
    std::fs::write(&path, format!("{toml}\n[database]\ndata_dir = {data:?}\n")).unwrap();
    Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .await
        .unwrap()
}

/// The error `trunkd ARGS` ends with; it must fail and say it in one line.
async fn refused(toml: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = trunkd(toml, env, args).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{args:?} with {toml:?} {env:?} should fail"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "the error is printed once:\n{err}"
    );
    err
}

#[tokio::test]
async fn config_check_refuses_a_log_filter_that_means_nothing_or_does_not_parse() {
    let err = refused("[log]\nlevel = \"inof\"\n", &[], &["config", "check"]).await;
    assert!(
        err.contains("log.level") && err.contains("`inof` is not a level"),
        "{err}"
    );
    let err = refused(
        "[log]\nlevel = \"warn,trunkd=degub\"\n",
        &[],
        &["config", "check"],
    )
    .await;
    assert!(err.contains("log.level"), "{err}");
    // serve reads RUST_LOG over log.level, so config check checks it too.
    let err = refused("", &[("RUST_LOG", "debgu")], &["config", "check"]).await;
    assert!(err.contains("RUST_LOG"), "{err}");
    let err = refused("", &[("RUST_LOG", "debgu")], &["serve"]).await;
    assert!(err.contains("RUST_LOG"), "{err}");
    let ok = trunkd(
        "[log]\nlevel = \"warn,trunkd::link=debug\"\n",
        &[],
        &["config", "check"],
    )
    .await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[tokio::test]
async fn a_database_url_of_another_kind_is_refused_by_check_and_serve() {
    // The URL comes from the environment: the test's file already has a [database].
    for args in [
        &["config", "check"][..],
        &["serve"],
        &["fleet", "add", "--id", "1", "--name", "A"],
    ] {
        let err = refused("", &[("DATABASE_URL", "mysql://trunkd:hunter2@db/trunkd")], args).await;
        assert!(err.contains("database.url") && err.contains("`mysql:`"), "{err}");
        assert!(!err.contains("hunter2"), "the password was printed: {err}");
    }
    let err = refused("", &[("TRUNKD_DATABASE__URL", "trunkd.db")], &["config", "check"]).await;
    assert!(err.contains("database.url") && err.contains("not a URL"), "{err}");
    for good in ["sqlite://x.db", "postgres://u@h/d", "postgresql://u@h/d"] {
        let ok = trunkd("", &[("DATABASE_URL", good)], &["config", "check"]).await;
        assert!(
            ok.status.success(),
            "{good}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
}

#[tokio::test]
async fn an_unknown_key_is_named_as_written_once() {
    let err = refused("[link]\nlisen = \"0.0.0.0:7300\"\n", &[], &["config", "check"]).await;
    assert!(err.contains("link.lisen:"), "{err}");
    assert!(!err.contains("default."), "figment's profile leaked: {err}");
    assert!(err.contains("trunkd.toml"), "the file is named: {err}");
    let err = refused("", &[("TRUNKD_LINK__LISEN", "0.0.0.0:7300")], &["serve"]).await;
    assert!(err.contains("TRUNKD_LINK__LISEN:"), "{err}");
    assert!(!err.contains("default."), "{err}");
    let err = refused("", &[("TRUNKD_LINK__LISTEN", "nowhere")], &["config", "check"]).await;
    assert!(err.contains("TRUNKD_LINK__LISTEN:"), "{err}");
    // One underscore is a variable serve would silently ignore.
    let err = refused("", &[("TRUNKD_LINK_LISTEN", "127.0.0.1:1")], &["config", "check"]).await;
    assert!(
        err.contains("TRUNKD_LINK_LISTEN is not a configuration variable"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_postgresql_is_named_by_host_and_port_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let url = ("DATABASE_URL", "postgres://trunkd:s3cret-pw@127.0.0.1:1/trunkd");
    for args in [
        &["serve"][..],
        &["migrate"],
        &["fleet", "add", "--id", "1", "--name", "A"],
    ] {
        let err = refused("[link]\nlisten = \"127.0.0.1:0\"\n", &[url], args).await;
        assert!(err.contains("PostgreSQL at 127.0.0.1:1"), "{args:?}: {err}");
        assert!(!err.contains("s3cret-pw"), "the password was printed: {err}");
    }
}
