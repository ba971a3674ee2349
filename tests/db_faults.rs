//! The controller while its database fails: a short data request it cannot store is
//! refused "busy" (retryable), and an outage of PostgreSQL is logged once when it begins
//! and once when it ends, however many background ticks fail in between, and the
//! operator API's `/healthz` says the database is down meanwhile.

mod common;

use std::time::Duration;

use common::*;
use sqlx::Connection;
use tokio::process::Command;
use trunkd::config::Config;
use trunkd::controller::start;
use trunkd::protocol::{Cause, Message, MessageType, ShortData, Target};
use trunkd::store::{Pool, Store};

async fn execute(store: &Store, sql: &str) {
    match store.pool() {
        Pool::Sqlite(p) => sqlx::query(sql).execute(p).await.map(drop),
        Pool::Postgres(p) => sqlx::query(sql).execute(p).await.map(drop),
    }
    .unwrap();
}

#[tokio::test]
async fn short_data_the_database_cannot_store_is_refused_busy() {
    for db in TestDb::all().await {
        provision_units(&db, 2).await;
        let cfg = Config {
            link: fast_config(),
            database: db.database_config(),
            ..Config::default()
        };
        let c = start(cfg).await.unwrap();
        let mut g1 = gw(&c, 1).await;
        let t1 = reg(&mut g1, 1).await;
        // The store fails every write of short data from now on.
        execute(&c.store, "DROP TABLE short_data").await;
        let txn = g1
            .request(Message::ShortDataReq {
                tmsi: t1,
                target: Target::Unit(unit(2)),
                data: ShortData::new(b"gate 4".to_vec()).unwrap(),
            })
            .await
            .unwrap();
        assert_eq!(
            until(&mut g1, |f| f.txn == txn).await.msg,
            deny(MessageType::ShortDataReq, Cause::Busy),
            "{}",
            db.name
        );
        c.stop().await;
    }
}

#[tokio::test]
async fn a_postgresql_outage_is_logged_once_down_and_once_back() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let base = std::env::var("TEST_DATABASE_URL").unwrap();
    let name = db.url.rsplit('/').next().unwrap().to_string();
    provision_units(&db, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trunkd.toml");
    // Many ticks of every background task during the outage.
    std::fs::write(
        &config,
        "[link]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registration]\nhlr_refresh_ms = 20\nlocation_flush_ms = 20\n\
         [messaging]\ndelivery_timeout_ms = 20\n",
    )
    .unwrap();
    let mut trunkd = LoggingChild::spawn(
        Command::new(env!("CARGO_BIN_EXE_trunkd"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "info"),
    );
    let health = format!("http://{}/healthz", trunkd.api_addr().await);
    trunkd.read_until("trunkd started").await;
    let database = |body: serde_json::Value| body["database"].as_str().unwrap_or_default().to_string();
    let health_now = || async { database(reqwest::get(&health).await.unwrap().json().await.unwrap()) };
    assert_eq!(health_now().await, "up");

    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let outage = [
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ];
    for sql in &outage {
        sqlx::query(sql).execute(&mut admin).await.unwrap();
    }
    trunkd.read_until("database unavailable").await;
    // The operator API tells it, and keeps answering.
    assert_eq!(health_now().await, "down");
    // Let the background tasks fail for a while (each tick would have logged before).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true");
    sqlx::query(&back).execute(&mut admin).await.unwrap();
    trunkd.read_until("database available again").await;
    assert_eq!(health_now().await, "up");
    admin.close().await.unwrap();

    trunkd.terminate().await;
    let log = trunkd.log;
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("database unavailable"), 1, "{log}");
    assert_eq!(count("database available again"), 1, "{log}");
    let warnings = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("trunkd::"))
        .count();
    assert_eq!(warnings, 1, "one warning for the whole outage:\n{log}");
}
