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
        .args(["config", "check"])
        .arg(&path)
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

#[tokio::test]
async fn serve_stops_cleanly_on_sigterm_and_never_logs_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trunkd.toml");
    let key_hex = key(1).to_hex();
    std::fs::write(
        &path,
        format!(
            "[link]\nlisten = \"127.0.0.1:0\"\n\n[[sites]]\nid = 1\nname = \"North\"\nkey = \"{key_hex}\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
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
    assert!(
        !log.contains(&key_hex) && !log.contains(&key(2).to_hex()),
        "a key reached the log"
    );
}
