//! Active-standby controllers on one PostgreSQL database (`src/ha`): the lease, the
//! fence the database keeps, and two `trunkd serve` processes taking over from each
//! other. PostgreSQL only: skipped without `TEST_DATABASE_URL`.

mod common;

use std::time::Duration;

use common::*;
use trunkd::ha::Lease;
use trunkd::hlr::Fleet;
use trunkd::link::gateway::{ControllerList, GatewayError, GatewayLink};
use trunkd::protocol::{CallScope, FleetId};
use trunkd::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_trunkd");

async fn add_fleet(store: &Store, id: u16) -> Result<(), trunkd::store::StoreError> {
    let fleet = Fleet {
        id: FleetId::new(id).unwrap(),
        name: format!("Fleet {id}"),
    };
    store.add_fleet("test", &fleet).await
}

fn pg(store: &Store) -> &sqlx::PgPool {
    match store.pool() {
        trunkd::store::Pool::Postgres(pool) => pool,
        trunkd::store::Pool::Sqlite(_) => unreachable!("the HA tests run on PostgreSQL only"),
    }
}

/// Waits until unit `n` is written behind to `units_on_air` under `tmsi`.
async fn written_behind(store: &Store, n: u64, tmsi: trunkd::protocol::Tmsi) {
    eventually(|| async {
        let written: Option<i64> = sqlx::query_scalar("SELECT tmsi FROM units_on_air WHERE imsi = $1")
            .bind(imsi(n).to_string())
            .fetch_optional(pg(store))
            .await
            .unwrap();
        (written == Some(i64::from(tmsi.get()))).then_some(())
    })
    .await;
}

/// Polls `f` until it gives `Some`, within [`PATIENCE`].
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("waited in vain")
}

/// Tries `lease` until it is won, within [`PATIENCE`]: the epoch.
async fn won(lease: &mut Lease) -> i64 {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(epoch) = lease.try_acquire("127.0.0.1:7301", "").await.unwrap() {
                return epoch;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lease was never won")
}

#[tokio::test]
async fn one_node_holds_the_lease_and_the_next_takes_over_with_a_new_epoch() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.open().await.close().await; // the schema
    let mut a = Lease::connect(&db.url, "a", 1000).await.unwrap();
    let mut b = Lease::connect(&db.url, "b", 1000).await.unwrap();
    let first = a.try_acquire("127.0.0.1:7300", "127.0.0.1:7380").await.unwrap();
    assert_eq!(first, Some(1));
    assert_eq!(
        b.try_acquire("127.0.0.1:7301", "127.0.0.1:7381").await.unwrap(),
        None
    );
    let holder = b.holder().await.unwrap();
    assert!(holder.live(), "{holder:?}");
    assert_eq!(
        (
            holder.epoch,
            holder.node_id.as_deref(),
            holder.link_address.as_deref()
        ),
        (1, Some("a"), Some("127.0.0.1:7300"))
    );
    assert!(a.renew().await.unwrap());

    // What a writes as the active node of epoch 1 is taken while it holds the lease.
    let fenced = Store::open_active(&db.url, db.dir.path(), &a.active_epoch(1))
        .await
        .unwrap();
    add_fleet(&fenced, 101).await.unwrap();

    // a's session ends (a crash ends it): b takes over at once, with epoch 2.
    drop(a);
    let second = won(&mut b).await;
    assert_eq!(second, 2);
    // a's writes are refused from now on, whatever connection they come through; a
    // session of no epoch (the command line) and b's are not.
    let refused = add_fleet(&fenced, 102).await.unwrap_err().to_string();
    let refused = if refused.contains("fenced") {
        refused
    } else {
        // The takeover ended a's pooled session: the next one is refused.
        add_fleet(&fenced, 102).await.unwrap_err().to_string()
    };
    assert!(refused.contains("fenced"), "{refused}");
    let plain = db.open().await;
    add_fleet(&plain, 103).await.unwrap();
    let active = Store::open_active(&db.url, db.dir.path(), &b.active_epoch(2))
        .await
        .unwrap();
    add_fleet(&active, 104).await.unwrap();
    let ids: Vec<u16> = plain.fleets().await.unwrap().iter().map(|f| f.id.get()).collect();
    assert!(!ids.contains(&102), "{ids:?}");
    assert!(b.renew().await.unwrap());
}

#[tokio::test]
async fn a_long_write_of_the_active_node_does_not_hold_up_its_lease_renewal() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.open().await.close().await;
    let mut a = Lease::connect(&db.url, "a", 1000).await.unwrap();
    assert_eq!(a.try_acquire("a:1", "a:2").await.unwrap(), Some(1));
    let fenced = Store::open_active(&db.url, db.dir.path(), &a.active_epoch(1))
        .await
        .unwrap();
    // A fenced write under way (a large batch written behind), not yet committed.
    let mut tx = pg(&fenced).begin().await.unwrap();
    sqlx::query("INSERT INTO fleets (id, name, created_at) VALUES (200, 'Fleet 200', 0)")
        .execute(&mut *tx)
        .await
        .unwrap();
    // The renewal goes by it (before, it waited past its statement timeout).
    assert!(a.renew().await.unwrap());
    tx.commit().await.unwrap();
    assert!(a.renew().await.unwrap());
}

#[tokio::test]
async fn a_lease_that_ran_out_is_taken_from_a_node_that_stopped_renewing() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.open().await.close().await;
    let mut a = Lease::connect(&db.url, "a", 500).await.unwrap();
    let mut b = Lease::connect(&db.url, "b", 500).await.unwrap();
    assert_eq!(a.try_acquire("a:1", "a:2").await.unwrap(), Some(1));
    // a's session stays open but a renews no more (paused, cut off): once the lease ran
    // out, b ends that session and takes over.
    assert_eq!(b.try_acquire("b:1", "b:2").await.unwrap(), None);
    let taken = won(&mut b).await;
    assert_eq!(taken, 2);
    assert!(
        !matches!(a.renew().await, Ok(true)),
        "a deposed node cannot renew"
    );
}

#[tokio::test]
async fn every_table_but_the_lease_is_fenced() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.open().await;
    let pool = pg(&store);
    let unfenced: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::TEXT FROM pg_tables t WHERE schemaname = current_schema() \
         AND tablename NOT IN ('ha_lease', '_sqlx_migrations') AND NOT EXISTS (\
           SELECT 1 FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid \
           WHERE c.relname = t.tablename AND g.tgname = 'trunkd_fence')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        unfenced.is_empty(),
        "tables without the fence trigger: {unfenced:?}"
    );
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node's configuration file in `dir`: HA on `url` as `node`.
fn node_config(dir: &std::path::Path, url: &str, node: &str) -> (std::path::PathBuf, u16, u16) {
    let (link, api) = (free_port(), free_port());
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(
        &path,
        format!(
            "[link]\nlisten = \"127.0.0.1:{link}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
             [database]\nurl = {url:?}\n[ha]\nenabled = true\nnode_id = \"{node}\"\nlease_ms = 1000\n"
        ),
    )
    .unwrap();
    (path, link, api)
}

fn serve(config: &std::path::Path) -> LoggingChild {
    LoggingChild::spawn(
        tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .env_remove("DATABASE_URL"),
    )
}

async fn role(http: &reqwest::Client, api: u16) -> Option<(String, i64)> {
    let r = http
        .get(format!("http://127.0.0.1:{api}/healthz"))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    Some((v["role"].as_str()?.to_string(), v["epoch"].as_i64()?))
}

/// Two nodes on `db`'s two units: `a` active, `b` standing by; each with its config,
/// link port and API port.
struct Pair {
    a: (LoggingChild, std::path::PathBuf, u16, u16),
    b: (LoggingChild, std::path::PathBuf, u16, u16),
    http: reqwest::Client,
}

impl Pair {
    async fn start(db: &TestDb) -> Pair {
        Self::start_on(db, &db.url).await
    }

    /// As [`start`](Self::start), `a` reaching the database at `url_a`.
    async fn start_on(db: &TestDb, url_a: &str) -> Pair {
        provision_units(db, 2).await;
        let (cfg_a, link_a, api_a) = node_config(db.dir.path(), url_a, "a");
        let (cfg_b, link_b, api_b) = node_config(db.dir.path(), &db.url, "b");
        let mut a = serve(&cfg_a);
        a.read_until("this node is now active").await;
        a.read_until("link server listening").await;
        let mut b = serve(&cfg_b);
        b.read_until("standing by").await;
        Pair {
            a: (a, cfg_a, link_a, api_a),
            b: (b, cfg_b, link_b, api_b),
            http: reqwest::Client::new(),
        }
    }
}

/// Adds `alice`, an admin of every fleet, whom [`login`] logs in.
async fn add_alice(store: &Store) {
    let hash = trunkd::auth::password::hash("a long passphrase").unwrap();
    let admin = trunkd::auth::Role::Admin;
    store
        .add_operator("test", "alice", &hash, admin, &trunkd::auth::Fleets::All)
        .await
        .unwrap();
}

/// `method` `path` with a JSON `body` (none for `null`) on the API at `api` with
/// `token`: the status and the JSON answer (`null` for none).
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    api: u16,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut r = http
        .request(method, format!("http://127.0.0.1:{api}{path}"))
        .bearer_auth(token);
    if !body.is_null() {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Logs `alice` in on the API at `api`: her access token.
async fn login(http: &reqwest::Client, api: u16) -> String {
    let r = http
        .post(format!("http://127.0.0.1:{api}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "alice", "password": "a long passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login on {api}");
    r.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `GET` of `path` on the API at `api` with `token`: the status and the JSON answer.
async fn get(http: &reqwest::Client, api: u16, path: &str, token: &str) -> (u16, serde_json::Value) {
    send(
        http,
        reqwest::Method::GET,
        api,
        path,
        token,
        serde_json::Value::Null,
    )
    .await
}

/// Where the node on `link` sends gateways, once it is standing by and knows.
async fn redirect_of(link: u16) -> String {
    let to = eventually(|| async {
        match GatewayLink::connect(("127.0.0.1", link), site(1), &key(1)).await {
            Err(GatewayError::Redirected(to)) => Some(to),
            _ => None,
        }
    })
    .await;
    to.as_str().to_string()
}

#[tokio::test]
async fn a_standby_redirects_gateways_and_takes_over_when_the_active_node_is_killed() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.open().await;
    add_alice(&store).await;
    let Pair {
        a: (mut a, _, link_a, api_a),
        b: (mut b, _, link_b, api_b),
        http,
    } = Pair::start(&db).await;
    assert_eq!(role(&http, api_a).await, Some(("active".into(), 1)));
    // The standby tells the epoch as soon as it has read the lease.
    eventually(|| async { (role(&http, api_b).await == Some(("standby".into(), 1))).then_some(()) }).await;
    // An operator's token from the active node: the standby has no units on the air to
    // show (the running controller holds them).
    let token = login(&http, api_a).await;
    let r = http
        .get(format!("http://127.0.0.1:{api_b}/api/v1/units"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["code"], "not_active");
    let active_api = format!("127.0.0.1:{api_a}");
    assert!(e["message"].as_str().unwrap().contains(&active_api), "{e}");

    // The standby names the active node; a gateway listing the standby first finds it.
    assert_eq!(redirect_of(link_b).await, format!("127.0.0.1:{link_a}"));
    let list = vec![format!("127.0.0.1:{link_b}"), format!("127.0.0.1:{link_a}")];
    let mut gateways = ControllerList::new(list).unwrap();
    let mut g = gateways.link(site(1), &key(1)).await;
    let t = reg(&mut g, 1).await;
    // The unit on the air is written behind within a flush interval.
    written_behind(&store, 1, t).await;
    // A call in progress, journaled.
    let (_, grant) = group_call(&mut g, t, 11, CallScope::Local).await;
    let (call, _) = grant_of(&grant);
    eventually(|| async {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM open_calls WHERE call_id = $1")
            .bind(i64::from(call.get()))
            .fetch_one(pg(&store))
            .await
            .unwrap();
        (open == 1).then_some(())
    })
    .await;

    // kill -9 of the active node: the standby takes over, the gateway links to it.
    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;
    let (epoch, _) = eventually(|| async {
        role(&http, api_b)
            .await
            .filter(|(r, _)| r == "active")
            .map(|(_, e)| (e, ()))
    })
    .await;
    assert_eq!(epoch, 2);
    let closed = g.recv_service().await;
    assert!(closed.is_err(), "{closed:?}");
    gateways.lost();
    let mut g = tokio::time::timeout(PATIENCE, gateways.link(site(1), &key(1)))
        .await
        .expect("no controller took the gateway");
    // The call in progress ended with the takeover; the unit keeps its TMSI: it calls
    // again at once, without registering again.
    let cause: i64 = sqlx::query_scalar("SELECT end_cause FROM call_records WHERE call_id = $1")
        .bind(i64::from(call.get()))
        .fetch_one(pg(&store))
        .await
        .unwrap();
    assert_eq!(cause, i64::from(trunkd::protocol::Cause::Takeover.code()));
    let (_, grant) = group_call(&mut g, t, 11, CallScope::Local).await;
    grant_of(&grant);
    reg(&mut g, 2).await;
    b.read_until("this node is now active").await;
    // The token the killed node signed opens the new active node's API.
    let r = http
        .get(format!("http://127.0.0.1:{api_b}/api/v1/auth/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The takeover is an alarm, there for every operator until one acknowledges it.
    eventually(|| async {
        let open = store.unfinished_alarms().await.unwrap();
        open.iter()
            .any(|a| a.kind == "takeover" && a.subject == "controller" && a.detail.contains("epoch 2"))
            .then_some(())
    })
    .await;
    assert!(matches!(
        GatewayLink::connect(("127.0.0.1", link_a), site(1), &key(1)).await,
        Err(GatewayError::Io(_))
    ));
    b.terminate().await;
}

#[tokio::test]
async fn what_the_active_node_acknowledged_before_a_kill_is_there_after_the_takeover() {
    use reqwest::Method;
    use serde_json::json;
    use trunkd::protocol::{Message, MessageType, ShortData, Target};
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.open().await;
    add_alice(&store).await;
    let Pair {
        a: (mut a, _, link_a, api_a),
        b: (mut b, _, link_b, api_b),
        http,
    } = Pair::start(&db).await;
    let token = login(&http, api_a).await;
    let list = vec![format!("127.0.0.1:{link_a}"), format!("127.0.0.1:{link_b}")];
    let mut gateways = ControllerList::new(list).unwrap();
    let mut g = gateways.link(site(1), &key(1)).await;
    let t1 = reg(&mut g, 1).await;

    // Each acknowledged by the active node, one right after the other, then kill -9:
    // short data stored for a unit not on the air,
    let data = ShortData::new(b"meet at gate 4".to_vec()).unwrap();
    let txn = g
        .request(Message::ShortDataReq {
            tmsi: t1,
            target: Target::Unit(unit(2)),
            data: data.clone(),
        })
        .await
        .unwrap();
    let acked = Message::Ack {
        acked: MessageType::ShortDataReq,
    };
    assert_eq!(until(&mut g, |f| f.txn == txn).await.msg, acked);
    // an HLR change,
    let sub = format!("/api/v1/subscribers/{}", imsi(2));
    let patch = json!({"talkgroups": [12, 10]});
    let (status, answer) = send(&http, Method::PATCH, api_a, &sub, &token, patch).await;
    assert_eq!(status, 200, "{answer}");
    // a system parameter,
    let param = "/api/v1/parameters/trunking.hang_time_ms";
    let (status, answer) = send(&http, Method::PUT, api_a, param, &token, json!({"value": "700"})).await;
    assert_eq!(status, 200, "{answer}");
    // a slot taken out of service, and the alarm it raised acknowledged.
    let oos = "/api/v1/sites/1/slots/out-of-service";
    let slot = json!({"carrier": 1, "slot": 3});
    assert_eq!(send(&http, Method::POST, api_a, oos, &token, slot).await.0, 204);
    let alarm = eventually(|| async {
        let (_, list) = get(&http, api_a, "/api/v1/alarms", &token).await;
        list["alarms"]
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "slot_out_of_service")
            .map(|a| a["id"].clone())
    })
    .await;
    let ack = format!("/api/v1/alarms/{alarm}/acknowledge");
    let (status, answer) = send(&http, Method::POST, api_a, &ack, &token, json!({})).await;
    assert_eq!(status, 200, "{answer}");
    a.child.start_kill().unwrap();
    let _ = a.child.wait().await;

    eventually(|| async { (role(&http, api_b).await? == ("active".into(), 2)).then_some(()) }).await;
    let (_, answer) = get(&http, api_b, &sub, &token).await;
    assert_eq!(answer["talkgroups"], json!([12, 10]), "{answer}");
    let (_, answer) = get(&http, api_b, "/api/v1/parameters", &token).await;
    assert_eq!(answer["parameters"]["trunking.hang_time_ms"], "700", "{answer}");
    let (_, answer) = get(&http, api_b, "/api/v1/sites/1/slots", &token).await;
    let slots = answer["slots"].as_array().unwrap();
    assert!(
        slots
            .iter()
            .any(|s| s["carrier"] == 1 && s["slot"] == 3 && s["state"] == "out_of_service"),
        "{answer}"
    );
    let (_, answer) = get(&http, api_b, &format!("/api/v1/alarms/{alarm}"), &token).await;
    assert_eq!(answer["state"], "acknowledged", "{answer}");

    // The new active node's event stream tells its role, epoch and lease, and carries
    // the takeover alarm.
    let r = http
        .get(format!("http://127.0.0.1:{api_b}/api/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut events = EventStream::open(r);
    let snapshot = events.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    let alarms = snapshot.data["alarms"].as_array().unwrap();
    assert!(alarms.iter().any(|a| a["kind"] == "takeover"), "{alarms:?}");
    let ha = events.next().await.unwrap();
    assert_eq!((ha.event.as_str(), ha.id), ("ha", None));
    assert_eq!(
        (&ha.data["role"], &ha.data["epoch"]),
        (&json!("active"), &json!(2))
    );
    let age = ha.data["lease_age_ms"].as_i64().unwrap();
    assert!((0..1000).contains(&age), "{age}");

    // The unit the short data was stored for registers with the new active node, and
    // is given it.
    let closed = g.recv_service().await;
    assert!(closed.is_err(), "{closed:?}");
    gateways.lost();
    let mut g = tokio::time::timeout(PATIENCE, gateways.link(site(1), &key(1)))
        .await
        .expect("no controller took the gateway");
    let t2 = reg(&mut g, 2).await;
    assert_eq!(receive_short_data(&mut g).await, (t2, unit(1), data));
    // A node that stops ends its event streams, saying so.
    assert!(b.terminate().await.success());
    let (closed, _) = events.until(|e| e.event == "closed").await;
    assert_eq!(closed.data["code"], "controller_stopped");
    assert!(events.next().await.is_none());
}

/// The `host:port` of a database URL.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

#[tokio::test]
async fn an_active_node_cut_off_from_its_database_is_fenced_and_the_standby_takes_over() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let server = host_port(&db.url);
    let relay = trunkd::sim::relay::CutRelay::start("127.0.0.1:0", server)
        .await
        .unwrap();
    let url_a = db.url.replacen(server, &relay.local_addr().to_string(), 1);
    let Pair {
        a: (mut a, _, link_a, _),
        b: (mut b, _, link_b, api_b),
        http,
    } = Pair::start_on(&db, &url_a).await;
    let list = vec![format!("127.0.0.1:{link_a}"), format!("127.0.0.1:{link_b}")];
    let mut gateways = ControllerList::new(list).unwrap();
    let mut g = gateways.link(site(1), &key(1)).await;
    let t = reg(&mut g, 1).await;
    let store = db.open().await;
    written_behind(&store, 1, t).await;

    // The network to the database fails silently: a cannot renew, stops acting as
    // active before its lease runs out (closing its links), and exits; b takes over.
    relay.cut();
    a.read_until("no longer acting as active").await;
    let closed = tokio::time::timeout(PATIENCE, g.recv_service()).await.unwrap();
    assert!(closed.is_err(), "{closed:?}");
    let exit = tokio::time::timeout(PATIENCE, a.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!exit.success(), "a fenced node exits with an error");
    let epoch = eventually(|| async {
        role(&http, api_b)
            .await
            .filter(|(r, _)| r == "active")
            .map(|(_, e)| e)
    })
    .await;
    assert_eq!(epoch, 2);
    gateways.lost();
    let mut g = tokio::time::timeout(PATIENCE, gateways.link(site(1), &key(1)))
        .await
        .expect("no controller took the gateway");
    let (_, grant) = group_call(&mut g, t, 11, CallScope::Local).await;
    grant_of(&grant);
    b.terminate().await;
}

#[tokio::test]
async fn a_standby_logs_operators_in_serves_reads_and_sends_writes_to_the_active_node() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.open().await;
    add_alice(&store).await;
    let Pair {
        a: (mut a, _, _, api_a),
        b: (mut b, _, _, api_b),
        http,
    } = Pair::start(&db).await;
    eventually(|| async { (role(&http, api_b).await == Some(("standby".into(), 1))).then_some(()) }).await;

    // Logged in on the standby, an operator reads what the database holds.
    let from_b = login(&http, api_b).await;
    let path = format!("/api/v1/subscribers/{}", imsi(1));
    let (status, sub) = get(&http, api_b, &path, &from_b).await;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(sub["imsi"], imsi(1).to_string());
    let (status, sites) = get(&http, api_b, "/api/v1/sites", &from_b).await;
    assert_eq!(status, 200, "{sites}");
    let ids: Vec<u64> = sites["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_u64())
        .collect();
    assert_eq!(ids, [1, 2]);
    for path in [
        "/api/v1/history/audit",
        "/api/v1/history/calls",
        "/api/v1/alarms",
        "/api/v1/fleets",
    ] {
        let (status, answer) = get(&http, api_b, path, &from_b).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }

    // What needs the running controller is refused, naming the active node's API: a
    // write, and the live state.
    let active_api = format!("127.0.0.1:{api_a}");
    let r = http
        .post(format!("http://127.0.0.1:{api_b}/api/v1/fleets"))
        .bearer_auth(&from_b)
        .json(&serde_json::json!({"id": 77, "name": "Standby"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["code"], "not_active");
    assert!(e["message"].as_str().unwrap().contains(&active_api), "{e}");
    let (status, e) = get(&http, api_b, "/api/v1/calls", &from_b).await;
    assert_eq!((status, &e["code"]), (503, &serde_json::json!("not_active")));
    let ids: Vec<u16> = store.fleets().await.unwrap().iter().map(|f| f.id.get()).collect();
    assert!(!ids.contains(&77), "{ids:?}");

    // A token of either node opens the other's API.
    let from_a = login(&http, api_a).await;
    assert_eq!(get(&http, api_a, "/api/v1/auth/whoami", &from_b).await.0, 200);
    assert_eq!(get(&http, api_b, "/api/v1/auth/whoami", &from_a).await.0, 200);
    let r = http
        .post(format!("http://127.0.0.1:{api_a}/api/v1/fleets"))
        .bearer_auth(&from_b)
        .json(&serde_json::json!({"id": 77, "name": "Active"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // A session ended on the active node is refused on the standby once it has
    // followed the audit log.
    let r = http
        .post(format!("http://127.0.0.1:{api_a}/api/v1/auth/logout"))
        .bearer_auth(&from_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    eventually(|| async {
        let (status, _) = get(&http, api_b, "/api/v1/auth/whoami", &from_a).await;
        (status == 401).then_some(())
    })
    .await;
    // The standby reads the fleet the active node created.
    let (status, fleet) = get(&http, api_b, "/api/v1/fleets/77", &from_b).await;
    assert_eq!((status, &fleet["name"]), (200, &serde_json::json!("Active")));
    a.terminate().await;
    b.terminate().await;
}

async fn signal(child: &LoggingChild, sig: &str) {
    let pid = child.child.id().unwrap().to_string();
    let ok = tokio::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .await
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn a_paused_active_node_is_fenced_and_serves_no_gateway_when_it_wakes() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let Pair {
        a: (mut a, cfg_a, link_a, api_a),
        b: (mut b, _, link_b, api_b),
        http,
    } = Pair::start(&db).await;
    let mut on_a = GatewayLink::connect(("127.0.0.1", link_a), site(1), &key(1))
        .await
        .unwrap();
    reg(&mut on_a, 1).await;

    // SIGSTOP past the lease (1 s): the standby ends a's session and takes over.
    signal(&a, "-STOP").await;
    let epoch = eventually(|| async {
        role(&http, api_b)
            .await
            .filter(|(r, _)| r == "active")
            .map(|(_, e)| e)
    })
    .await;
    assert_eq!(epoch, 2);
    let mut on_b = GatewayLink::connect(("127.0.0.1", link_b), site(1), &key(1))
        .await
        .unwrap();
    let t = reg(&mut on_b, 2).await;

    // Woken, a serves nothing: its old link hears no answer and is closed, and it ends
    // ("fenced"), having written nothing (the database refuses its epoch).
    signal(&a, "-CONT").await;
    let answer = on_a
        .request(trunkd::protocol::Message::Deregister { tmsi: t })
        .await;
    if answer.is_ok() {
        let closed = tokio::time::timeout(PATIENCE, on_a.recv_service())
            .await
            .expect("a kept the link");
        assert!(closed.is_err(), "a deposed node answered: {closed:?}");
    }
    let status = tokio::time::timeout(PATIENCE, a.child.wait())
        .await
        .expect("a did not end")
        .unwrap();
    assert!(!status.success());
    a.read_until("fenced").await;
    assert_eq!(role(&http, api_b).await, Some(("active".into(), 2)));

    // Started again, the old active node stands by and sends gateways to b.
    let mut a = serve(&cfg_a);
    a.read_until("standing by").await;
    assert_eq!(redirect_of(link_a).await, format!("127.0.0.1:{link_b}"));
    eventually(|| async { (role(&http, api_a).await == Some(("standby".into(), 2))).then_some(()) }).await;
    // b still serves its gateway.
    let (_, f) = group_call(&mut on_b, t, 10, CallScope::Local).await;
    assert!(
        matches!(f.msg, trunkd::protocol::Message::ChannelGrant { .. }),
        "{f:?}"
    );
    b.terminate().await;
    a.terminate().await;
}

#[tokio::test]
async fn two_nodes_started_at_once_on_a_fresh_database_elect_exactly_one() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // Nothing provisioned, no schema: each node migrates it first.
    let (cfg_a, _, api_a) = node_config(db.dir.path(), &db.url, "a");
    let (cfg_b, _, api_b) = node_config(db.dir.path(), &db.url, "b");
    let (mut a, mut b) = (serve(&cfg_a), serve(&cfg_b));
    let http = reqwest::Client::new();
    let metrics = |api: u16| {
        let r = http.get(format!("http://127.0.0.1:{api}/metrics")).send();
        async move { r.await.unwrap().text().await.unwrap() }
    };
    let mut roles = eventually(|| async {
        let (ra, rb) = (role(&http, api_a).await?, role(&http, api_b).await?);
        (ra.1 == 1 && rb.1 == 1).then_some(vec![ra.0, rb.0])
    })
    .await;
    let is_active = |text: String| text.lines().any(|l| l == "trunkd_ha_active 1");
    let active = vec![is_active(metrics(api_a).await), is_active(metrics(api_b).await)];
    assert_eq!(active, [roles[0] == "active", roles[1] == "active"], "{roles:?}");
    let standby_api = if roles[0] == "active" { api_b } else { api_a };
    assert!(metrics(standby_api)
        .await
        .lines()
        .any(|l| l == "trunkd_ha_epoch 1"));
    roles.sort();
    assert_eq!(roles, ["active", "standby"]);
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test]
async fn a_standby_with_tls_redirects_tls_gateways_and_tells_plain_ones_tls_is_required() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    provision_units(&db, 1).await;
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key_file) = (db.dir.path().join("link.crt"), db.dir.path().join("link.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key_file, c.key_pair.serialize_pem()).unwrap();
    let tls_node = |node| {
        let (path, link, _) = node_config(db.dir.path(), &db.url, node);
        let text = std::fs::read_to_string(&path).unwrap().replacen(
            "[api]",
            &format!("tls_cert = {cert:?}\ntls_key = {key_file:?}\n[api]"),
            1,
        );
        std::fs::write(&path, text).unwrap();
        (path, link)
    };
    let ((cfg_a, link_a), (cfg_b, link_b)) = (tls_node("a"), tls_node("b"));
    let mut a = serve(&cfg_a);
    a.read_until("this node is now active").await;
    a.read_until("link server listening").await;
    let mut b = serve(&cfg_b);
    b.read_until("standing by").await;

    // The standby's port speaks TLS as the active node's does: it names the active node.
    let tls = trunkd::link::tls::GatewayTls::new(&cert, "localhost").unwrap();
    let to = eventually(|| async {
        match GatewayLink::connect_with(("127.0.0.1", link_b), site(1), &key(1), Some(&tls)).await {
            Err(GatewayError::Redirected(to)) => Some(to),
            _ => None,
        }
    })
    .await;
    assert_eq!(to.as_str(), format!("127.0.0.1:{link_a}"));
    let plain = GatewayLink::connect(("127.0.0.1", link_b), site(1), &key(1)).await;
    let err = plain.err().expect("a plain link on the standby's TLS port");
    assert!(
        matches!(err, GatewayError::Rejected(trunkd::protocol::Cause::TlsRequired)),
        "{err}"
    );
    let mut g = GatewayLink::connect_with(("127.0.0.1", link_a), site(1), &key(1), Some(&tls))
        .await
        .unwrap();
    reg(&mut g, 1).await;
    a.terminate().await;
    b.terminate().await;
}
