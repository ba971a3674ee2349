//! The operator API over real HTTP against a running controller.

mod common;

use common::*;
use trunkd::config::TrunkingSection;
use trunkd::core::trunking::{EmergencyPolicy, TrunkingMode};
use trunkd::protocol::{CallScope, CallType, Cause, Identity, Message, MessageType, QueuePosition};

/// A controller with its API on an ephemeral port: the controller and the API's base URL.
async fn api(db: &TestDb) -> (trunkd::controller::Running, String) {
    api_with(db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await
}

/// [`api`] with these trunking settings.
async fn api_with(db: &TestDb, t: TrunkingSection) -> (trunkd::controller::Running, String) {
    let c = call_controller(db, t).await;
    let listener = trunkd::api::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(trunkd::api::serve(listener, c.handle(), std::future::pending()));
    (c, base)
}

#[tokio::test]
async fn healthz_answers_without_a_token_and_says_the_database_answers() {
    let db = TestDb::sqlite();
    let (c, base) = api(&db).await;
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok", "database": "up"}));
    c.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors_with_a_stable_code() {
    let db = TestDb::sqlite();
    let (c, base) = api(&db).await;
    let r = reqwest::get(format!("{base}/api/v1/nothing-here")).await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert!(body["message"].is_string());
    let r = reqwest::Client::new()
        .post(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    c.stop().await;
}

/// `GET /metrics`: its text, after checking it is the Prometheus text format.
async fn scrape(base: &str) -> String {
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let ty = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ty.starts_with("text/plain; version=0.0.4"), "{ty}");
    r.text().await.unwrap()
}

/// Scrapes until `done` holds of the text (answers are timed just after they are written,
/// so a test may read its answer before the session has recorded it).
async fn scrape_until(base: &str, done: impl Fn(&str) -> bool) -> String {
    let mut text = scrape(base).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done(&text) {
        assert!(tokio::time::Instant::now() < deadline, "never so:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = scrape(base).await;
    }
    text
}

/// The value of `series` (name and labels as written) in a scrape; 0 if it is absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_count_registrations_grants_denies_and_preemptions_and_time_the_answers() {
    let db = TestDb::sqlite();
    let t = trunking(TrunkingMode::Transmission, EmergencyPolicy::Preempt);
    let (c, base) = api_with(&db, t).await;
    let before = scrape(&base).await;
    assert_eq!(value(&before, "trunkd_connected_sites"), 0.0);
    assert_eq!(
        value(&before, "trunkd_registrations_total{outcome=\"accepted\"}"),
        0.0
    );

    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 3).await;
    let t5 = reg(&mut g, 5).await;
    // Subscriber 4 answers the challenge with the wrong key.
    let f = trunkd::sim::register(&mut g, Identity::Imsi(imsi(4)), &radio_keys(99))
        .await
        .unwrap();
    assert_eq!(
        f.msg,
        Message::RegReject {
            cause: Cause::AuthFailed
        }
    );
    // Two traffic slots: units 1 and 2 take them, unit 3 waits and is served when unit
    // 1's call ends.
    let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await;
    let (first, _) = grant_of(&f);
    let (_, f) = group_call(&mut g, t[1], 11, CallScope::Local).await;
    grant_of(&f);
    let (r3, f) = group_call(&mut g, t[2], 12, CallScope::Local).await;
    let position = QueuePosition::new(1).unwrap();
    assert_eq!(f.msg, Message::Queued { position });
    g.request(Message::PttRelease {
        call: first,
        tmsi: t[0],
    })
    .await
    .unwrap();
    grant_of(&until(&mut g, |f| f.txn == r3).await);
    // An emergency preempts unit 2's call (the lowest priority).
    let txn = g
        .request(Message::EmergencyCallReq {
            tmsi: t5,
            talkgroup: tg(10),
        })
        .await
        .unwrap();
    let f = until(&mut g, |f| f.txn == txn).await;
    assert!(
        matches!(
            f.msg,
            Message::ChannelGrant {
                call_type: CallType::Emergency,
                ..
            }
        ),
        "{f:?}"
    );
    // A talkgroup the unit may not use is denied.
    let (_, f) = group_call(&mut g, t[0], 13, CallScope::Local).await;
    assert_eq!(
        f.msg,
        deny(MessageType::GroupCallReq, Cause::TalkgroupNotPermitted)
    );

    let text = scrape_until(&base, |m| {
        value(m, "trunkd_denies_total{cause=\"talkgroup_not_permitted\"}") == 1.0
            && value(m, "trunkd_call_request_to_grant_seconds_count{queued=\"false\"}") == 3.0
    })
    .await;
    for (series, expected) in [
        ("trunkd_connected_sites", 1.0),
        ("trunkd_registered_units", 4.0),
        ("trunkd_active_calls", 2.0),
        ("trunkd_queue_depth{site=\"1\"}", 0.0),
        ("trunkd_queue_depth{site=\"2\"}", 0.0),
        ("trunkd_registrations_total{outcome=\"accepted\"}", 4.0),
        (
            "trunkd_registrations_total{outcome=\"rejected\",cause=\"authentication_failed\"}",
            1.0,
        ),
        ("trunkd_grants_total{type=\"group\"}", 3.0),
        ("trunkd_grants_total{type=\"emergency\"}", 1.0),
        ("trunkd_preemptions_total", 1.0),
        (
            "trunkd_registration_round_trip_seconds_count{answer=\"challenge\"}",
            5.0,
        ),
        (
            "trunkd_registration_round_trip_seconds_count{answer=\"accepted\"}",
            4.0,
        ),
        (
            "trunkd_registration_round_trip_seconds_count{answer=\"rejected\"}",
            1.0,
        ),
        ("trunkd_call_request_to_grant_seconds_count{queued=\"true\"}", 1.0),
        (
            "trunkd_call_request_to_grant_seconds_bucket{queued=\"true\",le=\"+Inf\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), expected, "{series} in\n{text}");
    }
    // The answers took some time.
    assert!(
        value(
            &text,
            "trunkd_registration_round_trip_seconds_sum{answer=\"accepted\"}"
        ) > 0.0
    );
    assert!(text.contains("# HELP trunkd_call_request_to_grant_seconds "));
    c.stop().await;
}

#[tokio::test]
async fn metrics_need_no_token_and_only_get() {
    let db = TestDb::sqlite();
    let (c, base) = api(&db).await;
    let text = scrape(&base).await;
    assert!(text.contains("# TYPE trunkd_registered_units gauge"), "{text}");
    let r = reqwest::Client::new()
        .post(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    c.stop().await;
}
