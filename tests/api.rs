//! The operator API over real HTTP against a running controller.

mod common;

use common::*;
use trunkd::core::trunking::{EmergencyPolicy, TrunkingMode};

/// A controller with its API on an ephemeral port: the controller and the API's base URL.
async fn api(db: &TestDb) -> (trunkd::controller::Running, String) {
    let c = call_controller(db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
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
