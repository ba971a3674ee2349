//! The operator API over real HTTP against a running controller: health, errors, and
//! operators' logins and tokens (on SQLite, and PostgreSQL when `TEST_DATABASE_URL` is
//! set).

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use trunkd::auth::{password, Fleets, Role};
use trunkd::config::{ApiConfig, Config, JwtAlgorithm, Secret, TrunkingSection};
use trunkd::controller::Running;
use trunkd::core::trunking::{EmergencyPolicy, TrunkingMode};
use trunkd::protocol::{CallScope, CallType, Cause, Identity, Message, MessageType, QueuePosition};
use trunkd::store::OperatorChange;

const PW: &str = "correct horse battery";

/// A controller with its API on an ephemeral port.
struct Api {
    c: Running,
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start(db: &TestDb) -> Api {
        Api::with(db, |_| {}).await
    }

    /// With the configuration changed by `f`.
    async fn with(db: &TestDb, f: impl FnOnce(&mut Config)) -> Api {
        provision_calls(db).await;
        let mut cfg = call_config(db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt));
        f(&mut cfg);
        Api::serve(trunkd::controller::start(cfg.clone()).await.unwrap(), &cfg.api).await
    }

    async fn serve(c: Running, cfg: &ApiConfig) -> Api {
        let cfg = ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..cfg.clone()
        };
        let listener = trunkd::api::bind(&cfg).await.unwrap();
        let scheme = if listener.is_tls() { "https" } else { "http" };
        let base = format!("{scheme}://localhost:{}", listener.local_addr().unwrap().port());
        tokio::spawn(trunkd::api::serve(
            listener,
            c.handle(),
            cfg.clone(),
            std::future::pending(),
        ));
        // Over TLS, the client trusts the (self-signed) certificate the API serves.
        let mut http = reqwest::Client::builder();
        if let Some(cert) = &cfg.tls_cert {
            let pem = std::fs::read(cert).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        Api {
            c,
            base,
            http: http.build().unwrap(),
        }
    }

    async fn add_operator(&self, name: &str, role: Role, fleets: &str) {
        let phc = password::hash(PW).unwrap();
        let fleets = Fleets::parse_list(fleets).unwrap();
        self.c
            .store
            .add_operator("test", name, &phc, role, &fleets)
            .await
            .unwrap();
        // The running controller hears of it by following the audit log: a login reads
        // the database, but a token is checked against what the controller holds.
        let token = std::sync::Mutex::new(String::new());
        self.until(|| async {
            let r = self.login(name, PW).await;
            if r.status() != 200 {
                return false;
            }
            let t: Value = r.json().await.unwrap();
            *token.lock().unwrap() = t["access_token"].as_str().unwrap().to_string();
            true
        })
        .await;
        let token = token.into_inner().unwrap();
        self.until(|| async { self.whoami(&token).await.0 == 200 }).await;
    }

    async fn login(&self, name: &str, pw: &str) -> reqwest::Response {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"username": name, "password": pw}),
        )
        .await
    }

    /// Logs in and returns (access token, refresh token).
    async fn tokens(&self, name: &str) -> (String, String) {
        let r = self.login(name, PW).await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["token_type"], "Bearer");
        (
            t["access_token"].as_str().unwrap().into(),
            t["refresh_token"].as_str().unwrap().into(),
        )
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut r = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    /// `method` on `path`, with a JSON body when given.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    /// The JSON of a `GET` that must answer 200.
    async fn read(&self, path: &str, token: &str) -> Value {
        let r = self.get(path, Some(token)).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    async fn whoami(&self, token: &str) -> (StatusCode, Value) {
        let r = self.get("/api/v1/auth/whoami", Some(token)).await;
        (r.status(), r.json().await.unwrap())
    }

    /// A radio command's state, as `GET /commands/{id}` tells `token`.
    async fn command_state(&self, id: &str, token: &str) -> String {
        let r = self.get(&format!("/api/v1/commands/{id}"), Some(token)).await;
        let c: Value = r.json().await.unwrap();
        c["state"].as_str().unwrap_or_default().to_string()
    }

    /// Waits (within [`PATIENCE`]) until `f` holds: for what the controller hears by
    /// following the database.
    async fn until<F: std::future::Future<Output = bool>>(&self, f: impl Fn() -> F) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !f().await {
            assert!(tokio::time::Instant::now() < deadline, "waited in vain");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    (r.status(), r.json().await.unwrap())
}

/// A controller with these trunking settings and its API: the controller and the API's
/// base URL.
async fn api_with(db: &TestDb, t: TrunkingSection) -> (Running, String) {
    let api = Api::serve(call_controller(db, t).await, &ApiConfig::default()).await;
    (api.c, api.base)
}

#[tokio::test]
async fn healthz_answers_without_a_token_and_says_the_database_answers() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    let r = api.get("/healthz", None).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "ok", "database": "up", "role": "standalone", "epoch": null, "lease_age_ms": null})
    );
    api.c.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors_with_a_stable_code() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    let (status, body) = error_of(api.get("/api/v1/nothing-here", None).await).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    assert!(body["message"].is_string());
    let (status, body) = error_of(api.post("/healthz", None, json!({})).await).await;
    assert_eq!(status, 405);
    assert_eq!(body["code"], "method_not_allowed");
    api.c.stop().await;
}

#[tokio::test]
async fn a_login_gives_tokens_that_open_the_api_and_nothing_opens_it_without_one() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        api.add_operator("alice", Role::Dispatcher, "100").await;
        let (access, refresh) = api.tokens("alice").await;
        assert_ne!(access, refresh);
        assert_eq!(
            api.whoami(&access).await,
            (
                StatusCode::OK,
                json!({"name": "alice", "role": "dispatcher", "fleets": [100]})
            )
        );

        let r = api.get("/api/v1/auth/whoami", None).await;
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"trunkd\"");
        assert_eq!(error_of(r).await.1["code"], "missing_token");
        for header in ["Basic YWxpY2U6cHc=", "Bearer", "Bearer not.a.token", "bearer x"] {
            let r = api
                .http
                .get(format!("{}/api/v1/auth/whoami", api.base))
                .header("authorization", header)
                .send()
                .await
                .unwrap();
            let (status, body) = error_of(r).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("invalid_token")),
                "{header}"
            );
        }
        api.c.stop().await;
    }
}

#[tokio::test]
async fn wrong_password_unknown_and_disabled_operators_get_one_answer() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    api.add_operator("alice", Role::Admin, "").await;
    api.add_operator("bob", Role::Viewer, "").await;
    api.c
        .store
        .change_operator("test", "bob", OperatorChange::Disabled(true))
        .await
        .unwrap();
    api.until(|| async { api.login("bob", PW).await.status() == 401 })
        .await;
    let mut answers = Vec::new();
    for (name, pw) in [
        ("alice", "wrong password!"),
        ("nobody", PW),
        ("bob", PW),
        ("Not A Name", PW),
    ] {
        answers.push(error_of(api.login(name, pw).await).await);
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 401);
    assert_eq!(answers[0].1["code"], "invalid_credentials");
    api.c.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_a_4xx_naming_the_field() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    let login = format!("{}/api/v1/auth/login", api.base);
    let send = |body: &'static str, ct: &'static str| {
        api.http.post(&login).header("content-type", ct).body(body).send()
    };
    let (status, body) = error_of(send(r#"{"username":"a"}"#, "application/json").await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str(), body["field"].as_str()),
        (400, Some("invalid_body"), Some("password"))
    );
    let (status, body) = error_of(
        send(r#"{"username":1,"password":"x"}"#, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status.as_u16(), body["field"].as_str()), (400, Some("username")));
    let (status, body) = error_of(
        send(r#"{"username":"a","password":"b","extra":1}"#, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = error_of(send("{not json", "application/json").await.unwrap()).await;
    assert_eq!(status, 400);
    let (status, body) = error_of(
        send(r#"{"username":"a","password":"b"}"#, "text/plain")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let big = format!(r#"{{"username":"a","password":"{}"}}"#, "x".repeat(2 << 20));
    let r = api
        .http
        .post(&login)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(r).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (413, Some("body_too_large"))
    );
    api.c.stop().await;
}

#[tokio::test]
async fn logins_are_rate_limited_with_retry_after() {
    let db = TestDb::sqlite();
    let api = Api::with(&db, |c| c.api.login_attempts_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(api.login("mallory", "guess guess guess").await.status(), 401);
    }
    let r = api.login("mallory", "guess guess guess").await;
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let (status, body) = error_of(r).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (429, Some("rate_limited"))
    );
    // The address is limited too: another name from the same client.
    assert_eq!(api.login("trudy", "guess guess guess").await.status(), 429);
    api.c.stop().await;
}

/// A token with this header and these claims, signed by nobody: `header.claims.sig`.
fn forge(header: Value, claims: &Value, sig: &str) -> String {
    use base64::Engine;
    let b = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{sig}", b(&header), b(claims))
}

fn parts(token: &str) -> (Value, Value, String) {
    use base64::Engine;
    let p: Vec<&str> = token.split('.').collect();
    let d = |s: &str| {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap(),
        )
        .unwrap()
    };
    (d(p[0]), d(p[1]), p[2].to_string())
}

#[tokio::test]
async fn tampered_foreign_alg_none_and_unknown_kid_tokens_are_refused() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    api.add_operator("alice", Role::Viewer, "").await;
    let (access, _) = api.tokens("alice").await;
    let (header, claims, sig) = parts(&access);
    assert_eq!(
        (header["alg"].as_str(), header["typ"].as_str()),
        (Some("EdDSA"), Some("at+jwt"))
    );
    for c in [
        "sub",
        "role",
        "fleets",
        "generation",
        "sid",
        "jti",
        "iss",
        "aud",
        "exp",
        "nbf",
        "iat",
    ] {
        assert!(claims.get(c).is_some(), "claim {c}");
    }

    let mut admin = claims.clone();
    admin["role"] = json!("admin");
    let other_key = trunkd::auth::tokens::KeyRing::ed25519(&[trunkd::auth::tokens::new_key(0).unwrap()]);
    let foreign_claims: trunkd::auth::tokens::Claims = serde_json::from_value(claims.clone()).unwrap();
    let mut unknown_kid = header.clone();
    unknown_kid["kid"] = json!("0000000000000000");
    let refused = [
        ("tampered payload", forge(header.clone(), &admin, &sig)),
        (
            "signed with another key",
            other_key.sign(&foreign_claims).unwrap(),
        ),
        (
            "alg none",
            forge(
                json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}),
                &claims,
                "",
            ),
        ),
        (
            "alg None",
            forge(json!({"alg": "None", "typ": "at+jwt"}), &claims, ""),
        ),
        (
            "alg HS256",
            forge(
                json!({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}),
                &claims,
                &sig,
            ),
        ),
        ("unknown kid", forge(unknown_kid, &claims, &sig)),
        (
            "no typ",
            forge(json!({"alg": "EdDSA", "kid": header["kid"]}), &claims, &sig),
        ),
    ];
    for (what, token) in refused {
        let (status, body) = api.whoami(&token).await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (401, Some("invalid_token")),
            "{what}: {body}"
        );
    }
    assert_eq!(api.whoami(&access).await.0, 200);

    // The published keys are public halves only.
    let jwks: Value = api
        .get("/api/v1/auth/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0]["kid"].clone(), keys[0]["crv"].as_str()),
        (header["kid"].clone(), Some("Ed25519"))
    );
    assert!(keys[0].get("d").is_none(), "no private key in {jwks}");
    api.c.stop().await;
}

#[tokio::test]
async fn an_access_token_expires_after_its_lifetime() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    api.add_operator("alice", Role::Viewer, "").await;
    let (access, refresh) = api.tokens("alice").await;
    skip(Duration::from_secs(14 * 60)).await;
    assert_eq!(api.whoami(&access).await.0, 200);
    skip(Duration::from_secs(2 * 60)).await;
    let (status, body) = api.whoami(&access).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (401, Some("token_expired"))
    );
    // The refresh token still gets a new one.
    let r = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    let t: Value = r.json().await.unwrap();
    assert_eq!(api.whoami(t["access_token"].as_str().unwrap()).await.0, 200);
    api.c.stop().await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_its_family() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        api.add_operator("alice", Role::Viewer, "").await;
        let (_, rt1) = api.tokens("alice").await;
        let refresh = |rt: String| api.post("/api/v1/auth/refresh", None, json!({"refresh_token": rt}));
        let r = refresh(rt1.clone()).await;
        assert_eq!(r.status(), 200);
        let t2: Value = r.json().await.unwrap();
        let rt2 = t2["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(rt1, rt2);
        // A client whose answer was lost retries within the grace window.
        let r = refresh(rt1.clone()).await;
        assert_eq!(r.status(), 200);
        let t3: Value = r.json().await.unwrap();
        let (access3, rt3) = (
            t3["access_token"].as_str().unwrap().to_string(),
            t3["refresh_token"].as_str().unwrap().to_string(),
        );
        assert_eq!(api.whoami(&access3).await.0, 200);
        // Past it, a reuse is theft: the whole family goes.
        skip(Duration::from_secs(11)).await;
        let (status, body) = error_of(refresh(rt2).await).await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (401, Some("refresh_token_reused"))
        );
        let (status, body) = error_of(refresh(rt3).await).await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (401, Some("invalid_token"))
        );
        assert_eq!(
            api.whoami(&access3).await.0,
            401,
            "the session's access tokens go too"
        );
        assert_eq!(error_of(refresh("rt_0000".into()).await).await.0, 401);
        // Another session of the same operator is untouched.
        let (access, _) = api.tokens("alice").await;
        assert_eq!(api.whoami(&access).await.0, 200);
        api.c.stop().await;
    }
}

#[tokio::test]
async fn logout_ends_the_session_by_refresh_token_or_by_access_token() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    api.add_operator("alice", Role::Viewer, "").await;
    let (access, refresh) = api.tokens("alice").await;
    let r = api
        .post("/api/v1/auth/logout", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(api.whoami(&access).await.0, 401);
    let r = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status(), 401);

    let (access, refresh) = api.tokens("alice").await;
    let r = api
        .http
        .post(format!("{}/api/v1/auth/logout", api.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(api.whoami(&access).await.0, 401);
    let r = api
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status(), 401);
    // A body of `null` is no body, as the OpenAPI document says.
    let (access, _) = api.tokens("alice").await;
    let r = api.post("/api/v1/auth/logout", Some(&access), Value::Null).await;
    assert_eq!(r.status(), 204);
    assert_eq!(api.whoami(&access).await.0, 401);
    // Without either: 401.
    let r = api
        .http
        .post(format!("{}/api/v1/auth/logout", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    api.c.stop().await;
}

#[tokio::test]
async fn a_password_role_or_state_change_revokes_the_operators_tokens() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    api.add_operator("alice", Role::Dispatcher, "").await;
    let changes = [
        OperatorChange::Password(password::hash("another passphrase").unwrap()),
        OperatorChange::Access {
            role: Some(Role::Viewer),
            fleets: None,
        },
        OperatorChange::Disabled(true),
    ];
    for change in changes {
        api.c
            .store
            .change_operator("test", "alice", OperatorChange::Disabled(false))
            .await
            .unwrap();
        api.c
            .store
            .change_operator(
                "test",
                "alice",
                OperatorChange::Password(password::hash(PW).unwrap()),
            )
            .await
            .unwrap();
        api.until(|| async { api.login("alice", PW).await.status() == 200 })
            .await;
        let (access, refresh) = api.tokens("alice").await;
        assert_eq!(api.whoami(&access).await.0, 200);
        api.c
            .store
            .change_operator("test", "alice", change.clone())
            .await
            .unwrap();
        api.until(|| async { api.whoami(&access).await.0 == 401 }).await;
        let r = api
            .post("/api/v1/auth/refresh", None, json!({"refresh_token": refresh}))
            .await;
        assert_eq!(r.status(), 401, "{change:?}");
    }
    api.c.stop().await;
}

#[tokio::test]
async fn a_rotated_key_signs_new_tokens_and_the_old_one_checks_until_it_retires() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    api.add_operator("alice", Role::Viewer, "").await;
    let (old, _) = api.tokens("alice").await;
    let old_kid = parts(&old).0["kid"].clone();
    let kid = api
        .c
        .store
        .add_signing_key("test", Some(15 * 60 * 1000))
        .await
        .unwrap();
    api.until(|| async {
        let jwks: Value = api
            .get("/api/v1/auth/jwks.json", None)
            .await
            .json()
            .await
            .unwrap();
        jwks["keys"].as_array().unwrap().len() == 2
    })
    .await;
    let (new, _) = api.tokens("alice").await;
    assert_eq!(parts(&new).0["kid"], json!(kid));
    assert_ne!(json!(kid), old_kid);
    assert_eq!(api.whoami(&old).await.0, 200);
    assert_eq!(api.whoami(&new).await.0, 200);
    skip(Duration::from_secs(15 * 60)).await;
    let (status, body) = api.whoami(&old).await;
    assert_eq!(
        (status.as_u16(), body["message"].as_str()),
        (401, Some("token signed with an unknown key"))
    );
    let jwks: Value = api
        .get("/api/v1/auth/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    api.c.stop().await;
}

#[tokio::test]
async fn hs256_with_a_secret_from_the_configuration() {
    let db = TestDb::sqlite();
    let secret = "ab".repeat(32);
    let api = Api::with(&db, |c| {
        c.api.jwt_algorithm = JwtAlgorithm::HS256;
        c.api.jwt_secret = Secret(secret.clone());
    })
    .await;
    api.add_operator("alice", Role::Viewer, "").await;
    let (access, _) = api.tokens("alice").await;
    assert_eq!(parts(&access).0["alg"], "HS256");
    assert_eq!(api.whoami(&access).await.0, 200);
    let jwks: Value = api
        .get("/api/v1/auth/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"], json!([]), "the secret is never published");
    api.c.stop().await;

    let mut short = Config::default();
    short.api.jwt_algorithm = JwtAlgorithm::HS256;
    short.api.jwt_secret = Secret("ab".repeat(31));
    assert!(short.validate().unwrap_err().to_string().contains("32"));
    assert!(
        !format!("{:?}", short.api).contains("abab"),
        "the secret is not in Debug output"
    );
}

#[tokio::test]
async fn two_controllers_on_one_database_accept_each_others_tokens() {
    for db in TestDb::all().await {
        let a = Api::start(&db).await;
        let b = Api::serve(
            trunkd::controller::start(call_config(
                &db,
                trunking(TrunkingMode::Message, EmergencyPolicy::Preempt),
            ))
            .await
            .unwrap(),
            &ApiConfig::default(),
        )
        .await;
        a.add_operator("alice", Role::Viewer, "").await;
        b.until(|| async { b.login("alice", PW).await.status() == 200 })
            .await;
        let (from_a, _) = a.tokens("alice").await;
        let (from_b, rt_b) = b.tokens("alice").await;
        assert_eq!(b.whoami(&from_a).await.0, 200);
        assert_eq!(a.whoami(&from_b).await.0, 200);
        // A logout on one is heard by the other.
        let r = a
            .post("/api/v1/auth/logout", None, json!({"refresh_token": rt_b}))
            .await;
        assert_eq!(r.status(), 204);
        b.until(|| async { b.whoami(&from_b).await.0 == 401 }).await;
        b.c.stop().await;
        a.c.stop().await;
    }
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
    let (c, base) = api_with(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
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

#[tokio::test]
async fn the_live_system_by_role_and_fleet() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        api.c
            .store
            .add_fleet(
                "test",
                &trunkd::hlr::Fleet {
                    id: trunkd::protocol::FleetId::new(200).unwrap(),
                    name: "Fire".into(),
                },
            )
            .await
            .unwrap();
        api.add_operator("ada", Role::Admin, "").await;
        api.add_operator("vic", Role::Viewer, "100").await;
        api.add_operator("fay", Role::Viewer, "200").await;
        let (ada, _) = api.tokens("ada").await;
        let (vic, _) = api.tokens("vic").await;
        let (fay, _) = api.tokens("fay").await;

        let mut g = gw(&api.c, 1).await;
        let tmsis = reg_all(&mut g, 3).await;
        let (_, grant) = group_call(&mut g, tmsis[0], 10, CallScope::Local).await;
        let (call, _) = grant_of(&grant);

        let body = |r: reqwest::Response| async move {
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        };
        // Units: all of them for the admin and fleet 100's viewer, none for fleet 200's.
        let all = body(api.get("/api/v1/units", Some(&ada)).await).await;
        assert_eq!(all["units"].as_array().unwrap().len(), 3, "{all}");
        assert_eq!(all["units"][0]["unit"], json!({"fleet": 100, "member": 1}));
        assert_eq!(all["units"][0]["site"], 1);
        assert_eq!(
            body(api.get("/api/v1/units", Some(&vic)).await).await["units"],
            all["units"]
        );
        assert_eq!(
            body(api.get("/api/v1/units", Some(&fay)).await).await["units"],
            json!([])
        );
        let (status, e) = error_of(api.get("/api/v1/units?fleet=100", Some(&fay)).await).await;
        assert_eq!((status.as_u16(), e["code"].as_str()), (403, Some("forbidden")));
        // Paging.
        let page = body(api.get("/api/v1/units?limit=2", Some(&ada)).await).await;
        assert_eq!(page["units"].as_array().unwrap().len(), 2);
        let after = page["next_after"].as_str().unwrap();
        let rest = body(
            api.get(&format!("/api/v1/units?limit=2&after={after}"), Some(&ada))
                .await,
        )
        .await;
        assert_eq!(rest["units"].as_array().unwrap().len(), 1);
        assert!(rest.get("next_after").is_none());
        for (q, field) in [
            ("limit=0", "limit"),
            ("site=0", "site"),
            ("fleet=x", "fleet"),
            ("after=12", "after"),
            ("nope=1", "nope"),
        ] {
            let (status, e) = error_of(api.get(&format!("/api/v1/units?{q}"), Some(&ada)).await).await;
            assert_eq!(
                (status.as_u16(), e["field"].as_str()),
                (400, Some(field)),
                "{q}: {e}"
            );
        }

        // Calls and the slots they hold.
        let calls = body(api.get("/api/v1/calls", Some(&vic)).await).await;
        assert_eq!(calls["calls"][0]["call"], call.get());
        assert_eq!(calls["calls"][0]["type"], "group");
        assert_eq!(
            calls["calls"][0]["target"],
            json!({"kind": "talkgroup", "fleet": 100, "talkgroup": 10})
        );
        assert_eq!(
            body(api.get("/api/v1/calls", Some(&fay)).await).await["calls"],
            json!([])
        );
        let slots = body(api.get("/api/v1/sites/1/slots", Some(&vic)).await).await;
        let busy: Vec<&Value> = slots["slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "busy")
            .collect();
        assert_eq!(
            (busy.len(), busy[0]["call"].as_u64()),
            (1, Some(call.get() as u64))
        );
        assert_eq!(slots["slots"][0]["state"], "control");
        let slots = body(api.get("/api/v1/sites/1/slots", Some(&fay)).await).await;
        let busy: Vec<&Value> = slots["slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "busy")
            .collect();
        assert!(
            busy[0].get("call").is_none(),
            "another fleet's call is busy without its id"
        );
        assert_eq!(
            error_of(api.get("/api/v1/sites/999/slots", Some(&ada)).await)
                .await
                .0,
            404
        );
        assert_eq!(
            error_of(api.get("/api/v1/sites/x/slots", Some(&ada)).await)
                .await
                .1["field"],
            "site"
        );

        // Infrastructure for everyone; parameters for admins only.
        let links = body(api.get("/api/v1/links", Some(&fay)).await).await;
        assert_eq!(
            (
                links["links"][0]["site"].as_u64(),
                links["links"][0]["connected"].as_bool()
            ),
            (Some(1), Some(true))
        );
        assert_eq!(
            body(api.get("/api/v1/queues", Some(&fay)).await).await["queues"]
                .as_array()
                .map(|q| q.iter().all(|q| q["requests"] == json!([]))),
            Some(true)
        );
        assert!(body(api.get("/api/v1/alarms", Some(&vic)).await).await["alarms"].is_array());
        let params = body(api.get("/api/v1/parameters", Some(&ada)).await).await;
        assert!(
            params["parameters"]["trunking.hang_time_ms"].is_string(),
            "{params}"
        );
        let (status, e) = error_of(api.get("/api/v1/parameters", Some(&vic)).await).await;
        assert_eq!((status.as_u16(), e["code"].as_str()), (403, Some("forbidden")));
        for path in [
            "/api/v1/units",
            "/api/v1/calls",
            "/api/v1/links",
            "/api/v1/alarms",
            "/api/v1/queues",
            "/api/v1/sites/1/slots",
        ] {
            assert_eq!(api.get(path, None).await.status(), 401, "{path}");
        }
        api.c.stop().await;
    }
}

#[tokio::test]
async fn an_inhibit_through_the_api_reaches_the_radio_and_refuses_its_next_request() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        api.add_operator("dora", Role::Dispatcher, "100").await;
        api.add_operator("vic", Role::Viewer, "").await;
        api.add_operator("ada", Role::Admin, "").await;
        let (dora, _) = api.tokens("dora").await;
        let (vic, _) = api.tokens("vic").await;
        let (ada, _) = api.tokens("ada").await;
        let mut g = gw(&api.c, 1).await;
        let t = reg_all(&mut g, 3).await;
        let two = imsi(2).to_string();

        // A viewer may not; a dispatcher may.
        let r = api
            .post(
                &format!("/api/v1/subscribers/{two}/inhibit"),
                Some(&vic),
                json!({}),
            )
            .await;
        assert_eq!(error_of(r).await.0, 403);
        let r = api
            .post(
                &format!("/api/v1/subscribers/{two}/inhibit"),
                Some(&dora),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), 202);
        let cmd: Value = r.json().await.unwrap();
        assert_eq!(
            (cmd["kind"].as_str(), cmd["state"].as_str()),
            (Some("inhibit"), Some("pending"))
        );
        let id = cmd["id"].as_str().unwrap().to_string();
        // The HLR is written first: the unit is refused at once, whatever its radio says.
        let (_, f) = group_call(&mut g, t[1], 10, CallScope::Local).await;
        assert!(
            matches!(
                f.msg,
                Message::Deny {
                    cause: Cause::UnitInhibited,
                    ..
                }
            ),
            "{f:?}"
        );
        let stun = until(&mut g, |f| matches!(f.msg, Message::Inhibit { .. })).await;
        assert_eq!(stun.msg, Message::Inhibit { tmsi: t[1] });
        g.send(trunkd::protocol::Frame::new(
            stun.txn,
            Message::InhibitAck { tmsi: t[1] },
        ))
        .await
        .unwrap();
        api.until(|| async { api.command_state(&id, &vic).await == "acknowledged" })
            .await;
        let log = api.c.store.audit_since(0, 10_000).await.unwrap();
        let entry = log.iter().find(|e| e.action == "subscriber.inhibit").unwrap();
        assert_eq!(entry.actor, "api:dora@127.0.0.1");

        // Enable brings it back.
        while api.c.store.last_tmsi(imsi(2)).await.unwrap() != Some(t[1]) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = api
            .post(
                &format!("/api/v1/subscribers/{two}/enable"),
                Some(&dora),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), 202);
        let revive = until(&mut g, |f| matches!(f.msg, Message::Enable { .. })).await;
        g.send(trunkd::protocol::Frame::new(
            revive.txn,
            Message::EnableAck { tmsi: t[1] },
        ))
        .await
        .unwrap();
        let t2 = reg(&mut g, 2).await;
        let (_, f) = group_call(&mut g, t2, 10, CallScope::Local).await;
        assert!(matches!(f.msg, Message::ChannelGrant { .. }), "{f:?}");
        let (call, _) = grant_of(&f);

        // A dispatcher releases a call; an admin authorises and sets parameters.
        let r = api
            .post(
                &format!("/api/v1/calls/{}/release", call.get()),
                Some(&dora),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), 204);
        until(&mut g, |f| {
            matches!(
                f.msg,
                Message::CallEnd {
                    cause: Cause::OperatorEnded,
                    ..
                }
            )
        })
        .await;
        let r = api
            .post(
                &format!("/api/v1/calls/{}/release", call.get()),
                Some(&dora),
                json!({}),
            )
            .await;
        assert_eq!(error_of(r).await.0, 404);
        let three = imsi(3).to_string();
        let r = api
            .post(
                &format!("/api/v1/subscribers/{three}/authorize"),
                Some(&dora),
                json!({"priority": 9}),
            )
            .await;
        assert_eq!(error_of(r).await.0, 403);
        let r = api
            .post(
                &format!("/api/v1/subscribers/{three}/authorize"),
                Some(&ada),
                json!({"priority": 16}),
            )
            .await;
        assert_eq!(error_of(r).await.1["field"], "priority");
        let r = api
            .post(
                &format!("/api/v1/subscribers/{three}/authorize"),
                Some(&ada),
                json!({"permissions": "private"}),
            )
            .await;
        assert_eq!(r.status(), 204);
        let (_, f) = group_call(&mut g, t[2], 10, CallScope::Local).await;
        assert!(
            matches!(
                f.msg,
                Message::Deny {
                    cause: Cause::ServiceNotPermitted,
                    ..
                }
            ),
            "{f:?}"
        );
        let r = api
            .http
            .put(format!("{}/api/v1/parameters/trunking.hang_time_ms", api.base))
            .bearer_auth(&ada)
            .json(&json!({"value": "0500"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"name": "trunking.hang_time_ms", "value": "500"})
        );
        let r = api
            .http
            .put(format!("{}/api/v1/parameters/trunking.hang_time_ms", api.base))
            .bearer_auth(&ada)
            .json(&json!({"value": "soon"}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await.1["field"], "value");
        let r = api
            .http
            .put(format!("{}/api/v1/parameters/trunking.nothing", api.base))
            .bearer_auth(&ada)
            .json(&json!({"value": "1"}))
            .send()
            .await
            .unwrap();
        let (status, e) = error_of(r).await;
        assert_eq!(
            (status, &e["code"], &e["field"]),
            (StatusCode::NOT_FOUND, &json!("not_found"), &json!("name"))
        );
        let r = api
            .post(
                "/api/v1/sites/1/slots/out-of-service",
                Some(&ada),
                json!({"carrier": 0, "slot": 2}),
            )
            .await;
        assert_eq!(r.status(), 204);
        let slots: Value = api
            .get("/api/v1/sites/1/slots", Some(&ada))
            .await
            .json()
            .await
            .unwrap();
        assert!(slots["slots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["carrier"] == 0 && s["slot"] == 2 && s["state"] == "out_of_service"));
        let r = api
            .post(
                "/api/v1/sites/1/slots/out-of-service",
                Some(&ada),
                json!({"carrier": 9}),
            )
            .await;
        assert_eq!(error_of(r).await.0, 400);

        // Unknown subscribers, bad ids and commands.
        let r = api
            .post(
                "/api/v1/subscribers/001019999999999/inhibit",
                Some(&dora),
                json!({}),
            )
            .await;
        assert_eq!(error_of(r).await.0, 404);
        let r = api
            .post("/api/v1/subscribers/12/inhibit", Some(&dora), json!({}))
            .await;
        assert_eq!(error_of(r).await.1["field"], "imsi");
        assert_eq!(
            error_of(api.get("/api/v1/commands/nope", Some(&vic)).await)
                .await
                .0,
            404
        );
        api.c.stop().await;
    }
}

#[tokio::test]
async fn a_call_alert_to_a_radio_that_never_answers_times_out() {
    let db = TestDb::sqlite();
    let api = Api::with(&db, |c| c.messaging.delivery_timeout_ms = 2_000).await;
    api.add_operator("dora", Role::Dispatcher, "").await;
    let (dora, _) = api.tokens("dora").await;
    let mut g = gw(&api.c, 1).await;
    reg_all(&mut g, 2).await;
    let body = json!({"from": {"fleet": 100, "member": 1}});
    let r = api
        .post(
            &format!("/api/v1/subscribers/{}/alert", imsi(2)),
            Some(&dora),
            body,
        )
        .await;
    assert_eq!(r.status(), 202);
    let cmd: Value = r.json().await.unwrap();
    let id = cmd["id"].as_str().unwrap().to_string();
    // The gateway hears the alert and never acknowledges it.
    until(&mut g, |f| matches!(f.msg, Message::CallAlert { .. })).await;
    skip(Duration::from_secs(3)).await;
    api.until(|| async { api.command_state(&id, &dora).await == "timed_out" })
        .await;
    let r = api
        .post(
            &format!("/api/v1/subscribers/{}/alert", imsi(2)),
            Some(&dora),
            json!({"from": {"fleet": 0, "member": 1}}),
        )
        .await;
    assert_eq!(error_of(r).await.1["field"], "from.fleet");
    api.c.stop().await;
}

#[tokio::test]
async fn a_radio_check_is_acknowledged_when_the_radio_answers_and_times_out_when_it_does_not() {
    let db = TestDb::sqlite();
    let api = Api::with(&db, |c| {
        c.messaging.radio_command_timeout_ms = 300;
        c.messaging.radio_command_attempts = 2;
    })
    .await;
    api.add_operator("dora", Role::Dispatcher, "100").await;
    api.add_operator("vic", Role::Viewer, "").await;
    let (dora, _) = api.tokens("dora").await;
    let (vic, _) = api.tokens("vic").await;
    let mut g = gw(&api.c, 1).await;
    let t = reg_all(&mut g, 2).await;
    let check = |n: u64| format!("/api/v1/subscribers/{}/check", imsi(n));

    // A viewer may not check a radio; nor may anyone an unknown IMSI.
    assert_eq!(
        error_of(api.post(&check(1), Some(&vic), json!({})).await).await.0,
        403
    );
    assert_eq!(
        error_of(api.post(&check(99), Some(&dora), json!({})).await)
            .await
            .0,
        404
    );

    // The radio answers: acknowledged, and written to the audit log.
    let r = api.post(&check(1), Some(&dora), json!({})).await;
    assert_eq!(r.status(), 202);
    let cmd: Value = r.json().await.unwrap();
    assert_eq!(
        (cmd["kind"].as_str(), cmd["state"].as_str()),
        (Some("check"), Some("pending"))
    );
    let id = cmd["id"].as_str().unwrap().to_string();
    let page = until(&mut g, |f| matches!(f.msg, Message::RadioCheck { .. })).await;
    assert_eq!(page.msg, Message::RadioCheck { tmsi: t[0] });
    assert!(page.txn >= 0x8000_0000, "a controller transaction: {page:?}");
    g.send(trunkd::protocol::Frame::new(
        page.txn,
        Message::RadioCheckAck { tmsi: t[0] },
    ))
    .await
    .unwrap();
    api.until(|| async { api.command_state(&id, &dora).await == "acknowledged" })
        .await;
    api.until(|| async {
        let log = api.c.store.audit_since(0, 10_000).await.unwrap();
        log.iter().any(|e| e.action == "subscriber.check.acknowledged")
    })
    .await;

    // The radio never answers: sent again on the same transaction, then timed out; the
    // unit stays on the air.
    let r = api.post(&check(2), Some(&dora), json!({})).await;
    let id: String = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().into();
    let first = until(&mut g, |f| matches!(f.msg, Message::RadioCheck { .. })).await;
    assert_eq!(first.msg, Message::RadioCheck { tmsi: t[1] });
    let again = until(&mut g, |f| matches!(f.msg, Message::RadioCheck { .. })).await;
    assert_eq!((again.txn, again.msg.clone()), (first.txn, first.msg.clone()));
    api.until(|| async { api.command_state(&id, &dora).await == "timed_out" })
        .await;
    let units: Value = api.get("/api/v1/units", Some(&dora)).await.json().await.unwrap();
    assert!(units.to_string().contains(&imsi(2).to_string()), "{units}");
    // A late answer changes nothing.
    g.send(trunkd::protocol::Frame::new(
        first.txn,
        Message::RadioCheckAck { tmsi: t[1] },
    ))
    .await
    .unwrap();
    assert_eq!(api.command_state(&id, &dora).await, "timed_out");

    // A unit that is not registered: failed at once, nothing sent.
    let r = api.post(&check(3), Some(&dora), json!({})).await;
    assert_eq!(r.status(), 202);
    let cmd: Value = r.json().await.unwrap();
    assert_eq!(cmd["state"], "failed", "{cmd}");
    assert!(
        cmd["reason"].as_str().unwrap().contains("not registered"),
        "{cmd}"
    );
    api.c.stop().await;
}

/// Who may call a route: the least role, and whether an admin limited to some fleets is
/// refused (a route that touches every fleet).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Needs {
    Viewer,
    Dispatcher,
    Admin,
    AdminOfEveryFleet,
}

#[tokio::test]
async fn each_role_against_each_route_allowed_and_forbidden() {
    use reqwest::Method;
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    let operators = [
        ("vic", Role::Viewer, "", Needs::Viewer),
        ("dora", Role::Dispatcher, "", Needs::Dispatcher),
        ("lim", Role::Admin, "100", Needs::Admin),
        ("ada", Role::Admin, "", Needs::AdminOfEveryFleet),
    ];
    let mut tokens = Vec::new();
    for (name, role, fleets, may) in operators {
        api.add_operator(name, role, fleets).await;
        tokens.push((name, api.tokens(name).await.0, may));
    }
    let three = imsi(3).to_string();
    let from = json!({"fleet": 100, "member": 1});
    let to = json!({"kind": "unit", "fleet": 100, "member": 2});
    let keys = format!("{},{},1,all", "0a".repeat(16), "0b".repeat(16));
    let csv = format!(
        "imei,fleet,member,talkgroups,k,opc,priority,permissions\n{},100,60,10,{keys}\n",
        luhn_imei(49_015_420_500_001)
    );
    let (get, post, put, patch, delete) = (
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    );
    // Every route of ROUTES that needs a token, with a request its role may make; the
    // destructive ones last.
    let routes: Vec<(Method, String, Option<Value>, Needs)> = vec![
        (get.clone(), "/api/v1/units".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/sites/1/slots".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/calls".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/queues".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/links".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/alarms".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/alarms/1".into(), None, Needs::Viewer),
        (
            post.clone(),
            "/api/v1/alarms/1/acknowledge".into(),
            None,
            Needs::Dispatcher,
        ),
        (get.clone(), "/api/v1/parameters".into(), None, Needs::Admin),
        (
            put.clone(),
            "/api/v1/parameters/trunking.hang_time_ms".into(),
            Some(json!({"value": "3000"})),
            Needs::Admin,
        ),
        (
            post.clone(),
            format!("/api/v1/subscribers/{three}/check"),
            None,
            Needs::Dispatcher,
        ),
        (
            post.clone(),
            format!("/api/v1/subscribers/{three}/inhibit"),
            None,
            Needs::Dispatcher,
        ),
        (
            post.clone(),
            format!("/api/v1/subscribers/{three}/enable"),
            None,
            Needs::Dispatcher,
        ),
        (
            post.clone(),
            format!("/api/v1/subscribers/{three}/alert"),
            Some(json!({"from": from})),
            Needs::Dispatcher,
        ),
        (
            post.clone(),
            format!("/api/v1/subscribers/{three}/authorize"),
            Some(json!({"priority": 5})),
            Needs::Admin,
        ),
        (
            get.clone(),
            "/api/v1/commands/0123456789abcdef0123456789abcdef".into(),
            None,
            Needs::Viewer,
        ),
        (
            post.clone(),
            "/api/v1/calls/999/release".into(),
            None,
            Needs::Dispatcher,
        ),
        (
            post.clone(),
            "/api/v1/sites/1/slots/out-of-service".into(),
            Some(json!({"carrier": 0, "slot": 5})),
            Needs::Admin,
        ),
        (
            post.clone(),
            "/api/v1/sites/1/slots/in-service".into(),
            Some(json!({"carrier": 0, "slot": 5})),
            Needs::Admin,
        ),
        (get.clone(), "/api/v1/events".into(), None, Needs::Viewer),
        (post.clone(), "/api/v1/events/ticket".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/subscribers".into(), None, Needs::Viewer),
        (
            get.clone(),
            format!("/api/v1/subscribers/{three}"),
            None,
            Needs::Viewer,
        ),
        (
            patch.clone(),
            format!("/api/v1/subscribers/{three}"),
            Some(json!({"msisdn": null})),
            Needs::Admin,
        ),
        (
            post.clone(),
            "/api/v1/subscribers".into(),
            Some(
                json!({"imei": luhn_imei(49_015_420_500_002), "fleet": 100, "member": 61, "talkgroups": [10]}),
            ),
            Needs::Admin,
        ),
        (get.clone(), "/api/v1/fleets".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/fleets/100".into(), None, Needs::Viewer),
        (
            patch.clone(),
            "/api/v1/fleets/100".into(),
            Some(json!({"name": "Police"})),
            Needs::Admin,
        ),
        (
            post.clone(),
            "/api/v1/fleets".into(),
            Some(json!({"id": 300, "name": "Spare"})),
            Needs::AdminOfEveryFleet,
        ),
        (
            get.clone(),
            "/api/v1/fleets/100/talkgroups".into(),
            None,
            Needs::Viewer,
        ),
        (
            get.clone(),
            "/api/v1/fleets/100/talkgroups/10".into(),
            None,
            Needs::Viewer,
        ),
        (
            get.clone(),
            "/api/v1/fleets/100/talkgroups/10/members".into(),
            None,
            Needs::Viewer,
        ),
        (
            post.clone(),
            "/api/v1/fleets/100/talkgroups".into(),
            Some(json!({"id": 77, "name": "Spare"})),
            Needs::Admin,
        ),
        (
            patch.clone(),
            "/api/v1/fleets/100/talkgroups/77".into(),
            Some(json!({"name": "Spare 2"})),
            Needs::Admin,
        ),
        (get.clone(), "/api/v1/sites".into(), None, Needs::Viewer),
        (get.clone(), "/api/v1/sites/1".into(), None, Needs::Viewer),
        (
            post.clone(),
            "/api/v1/sites".into(),
            Some(json!({"id": 9, "name": "Spare", "carriers": 1, "slots_per_carrier": 6})),
            Needs::AdminOfEveryFleet,
        ),
        (
            patch.clone(),
            "/api/v1/sites/9".into(),
            Some(json!({"name": "Spare 2"})),
            Needs::AdminOfEveryFleet,
        ),
        (
            post.clone(),
            "/api/v1/sites/9/key".into(),
            None,
            Needs::AdminOfEveryFleet,
        ),
        (get.clone(), "/api/v1/history/calls".into(), None, Needs::Viewer),
        (
            get.clone(),
            "/api/v1/history/audit".into(),
            None,
            Needs::AdminOfEveryFleet,
        ),
        (
            post.clone(),
            "/api/v1/messages/status".into(),
            Some(json!({"from": from, "to": to, "code": 1})),
            Needs::Dispatcher,
        ),
        (
            post.clone(),
            "/api/v1/messages/short-data".into(),
            Some(json!({"from": from, "to": to, "data": "aGk="})),
            Needs::Dispatcher,
        ),
        (
            delete.clone(),
            "/api/v1/sites/9".into(),
            None,
            Needs::AdminOfEveryFleet,
        ),
        (
            delete.clone(),
            "/api/v1/fleets/100/talkgroups/77".into(),
            None,
            Needs::Admin,
        ),
        (
            delete.clone(),
            "/api/v1/fleets/300".into(),
            None,
            Needs::AdminOfEveryFleet,
        ),
        (
            delete.clone(),
            format!("/api/v1/subscribers/{three}"),
            None,
            Needs::Admin,
        ),
    ];
    for (method, path, body, needs) in &routes {
        // Those below the route's need first: refused, and so nothing is written.
        for (name, token, may) in tokens
            .iter()
            .filter(|t| t.2 < *needs)
            .chain(tokens.iter().filter(|t| t.2 >= *needs))
        {
            let r = api.send(method.clone(), path, token, body.clone()).await;
            let status = r.status();
            if may < needs {
                assert_eq!(status, 403, "{name} {method} {path}: {:?}", r.text().await);
            } else {
                assert!(
                    ![401, 403].contains(&status.as_u16()),
                    "{name} {method} {path}: {status} {:?}",
                    r.text().await
                );
            }
        }
    }
    // The bulk import (a CSV body).
    for (name, token, may) in &tokens {
        let status = import(&api, token, &csv).await.status();
        if *may < Needs::Admin {
            assert_eq!(status, 403, "{name} import");
        } else {
            assert!(![401, 403].contains(&status.as_u16()), "{name} import: {status}");
        }
    }
    // Every route of ROUTES is here but those open to all and the sessions' own
    // (tested above: login, refresh, logout, whoami, jwks).
    let tested = routes.len() + 1;
    let open = ["/healthz", "/metrics", "/api/v1/openapi.json", "/api/v1/auth/"];
    let needing_token = ROUTES
        .iter()
        .filter(|(_, p)| !open.iter().any(|o| p.starts_with(o)))
        .count();
    assert_eq!(
        tested, needing_token,
        "a route that needs a token is missing here"
    );
    api.c.stop().await;
}

// ---- The event stream: GET /api/v1/events ----

fn is(e: &Sse, event: &str, kind: &str) -> bool {
    e.event == event && e.data["kind"] == kind
}

impl Api {
    /// `GET /api/v1/events` + `query`, with a token and a `Last-Event-ID` when given.
    async fn events(
        &self,
        token: Option<&str>,
        last_event_id: Option<u64>,
        query: &str,
    ) -> reqwest::Response {
        let mut r = self.http.get(format!("{}/api/v1/events{query}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id.to_string());
        }
        r.send().await.unwrap()
    }

    async fn stream(&self, token: Option<&str>, last_event_id: Option<u64>, query: &str) -> EventStream {
        EventStream::open(self.events(token, last_event_id, query).await)
    }

    async fn ticket(&self, token: &str) -> String {
        let r = self.post("/api/v1/events/ticket", Some(token), json!({})).await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["expires_in"], 30);
        t["ticket"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn the_event_stream_starts_with_a_snapshot_carries_a_grant_and_resumes_without_a_gap() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        api.add_operator("alice", Role::Viewer, "").await;
        let (token, _) = api.tokens("alice").await;
        let mut s = api.stream(Some(&token), None, "").await;
        let snap = s.next().await.unwrap();
        assert_eq!(
            (snap.event.as_str(), snap.data["reason"].as_str()),
            ("snapshot", Some("start"))
        );
        assert_eq!(snap.id, snap.data["seq"].as_u64());
        assert_eq!(
            (snap.data["units"].clone(), snap.data["calls"].clone()),
            (json!([]), json!([]))
        );
        assert_eq!(
            snap.data["links"],
            json!([
                {"site": 1, "name": "Site 1", "connected": false},
                {"site": 2, "name": "Site 2", "connected": false},
            ])
        );

        // A real grant over the real link.
        let mut g = gw(&api.c, 1).await;
        let t1 = reg(&mut g, 1).await;
        let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
        let (call, _) = grant_of(&f);
        let (grant, before) = s.until(|e| is(e, "call", "granted")).await;
        // Every event, numbered on from the snapshot without a gap (this operator sees
        // every fleet), its number as the SSE id.
        let mut seq = snap.id.unwrap();
        for e in before.iter().chain([&grant]) {
            seq += 1;
            assert_eq!((e.id, e.data["seq"].as_u64()), (Some(seq), Some(seq)), "{e:?}");
            assert!(e.data["at_ms"].as_i64().unwrap() > 1_600_000_000_000);
        }
        assert!(before
            .iter()
            .any(|e| e.event == "link" && e.data["site"] == 1 && e.data["up"] == true));
        let registered = before.iter().find(|e| is(e, "unit", "registered")).unwrap();
        assert_eq!(registered.data["imsi"], imsi(1).to_string());
        assert_eq!(registered.data["unit"], json!({"fleet": 100, "member": 1}));
        assert_eq!(registered.data["site"], 1);
        assert_eq!(grant.data["call"], call.get());
        assert_eq!(grant.data["type"], "group");
        assert_eq!(grant.data["caller"], json!({"fleet": 100, "member": 1}));
        assert_eq!(
            grant.data["target"],
            json!({"kind": "talkgroup", "fleet": 100, "talkgroup": 10})
        );
        assert_eq!(grant.data["sites"], json!([1]));
        drop(s);

        // Something happens while the console is away; it comes back after the grant.
        reg(&mut g, 2).await;
        let mut s = api.stream(Some(&token), grant.id, "").await;
        let first = s.next().await.unwrap();
        assert_eq!(
            first.id,
            Some(grant.id.unwrap() + 1),
            "a gap, a repeat or a snapshot: {first:?}"
        );
        let two = |e: &Sse| is(e, "unit", "registered") && e.data["imsi"] == imsi(2).to_string();
        let two_id = match two(&first) {
            true => first.id,
            false => s.until(two).await.0.id,
        };
        drop(s);

        // The same, for a new EventSource: the id in the query.
        let query = format!("?last_event_id={}", grant.id.unwrap());
        let mut s = api.stream(Some(&token), None, &query).await;
        assert_eq!(s.next().await.unwrap().id, first.id);
        drop(s);

        // An id the controller does not hold: a snapshot instead of a gap.
        let mut s = api.stream(Some(&token), Some(1_000_000), "").await;
        let snap = s.next().await.unwrap();
        assert_eq!(
            (snap.event.as_str(), snap.data["reason"].as_str()),
            ("snapshot", Some("resume_unavailable"))
        );
        assert!(snap.id >= two_id);
        assert_eq!(snap.data["calls"][0]["call"], call.get());
        assert_eq!(snap.data["units"].as_array().unwrap().len(), 2);
        let busy: Vec<&Value> = snap.data["slots"][0]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "busy")
            .collect();
        assert_eq!(busy.len(), 1);
        assert_eq!(busy[0]["call"], call.get());

        // A malformed id is refused, naming it.
        let r = api
            .http
            .get(format!("{}/api/v1/events", api.base))
            .bearer_auth(&token)
            .header("last-event-id", "soon")
            .send()
            .await
            .unwrap();
        let (status, body) = error_of(r).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("Last-Event-ID"))
        );
        api.c.stop().await;
    }
}

#[tokio::test]
async fn a_stream_opens_with_a_token_or_a_ticket_good_once_within_its_lifetime() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    api.add_operator("alice", Role::Viewer, "").await;
    let (token, _) = api.tokens("alice").await;
    let (status, body) = error_of(api.events(None, None, "").await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );
    let (status, body) = error_of(api.events(Some("not.a.token"), None, "").await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let (status, body) = error_of(api.post("/api/v1/events/ticket", None, json!({})).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );

    // A ticket opens one stream, once.
    let ticket = api.ticket(&token).await;
    let query = format!("?ticket={ticket}");
    let mut s = api.stream(None, None, &query).await;
    assert_eq!(s.next().await.unwrap().event, "snapshot");
    let (status, body) = error_of(api.events(None, None, &query).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_ticket"))
    );
    for query in ["?ticket=", "?ticket=tk_0123"] {
        let (status, body) = error_of(api.events(None, None, query).await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_ticket"))
        );
    }
    // A token and a ticket together are refused, and the ticket is not spent.
    let ticket = api.ticket(&token).await;
    let query = format!("?ticket={ticket}");
    let (status, body) = error_of(api.events(Some(&token), None, &query).await).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ticket"))
    );
    api.stream(None, None, &query).await;

    // Not after its lifetime.
    let ticket = api.ticket(&token).await;
    skip(Duration::from_secs(31)).await;
    let (status, body) = error_of(api.events(None, None, &format!("?ticket={ticket}")).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_ticket"))
    );

    // Not for an operator disabled since it was issued; and the open stream ends.
    let ticket = api.ticket(&token).await;
    api.c
        .store
        .change_operator("test", "alice", OperatorChange::Disabled(true))
        .await
        .unwrap();
    api.until(|| async { api.whoami(&token).await.0 == 401 }).await;
    let (status, body) = error_of(api.events(None, None, &format!("?ticket={ticket}")).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    skip(trunkd::api::events::RECHECK).await;
    // (After the time skipped, the sites that never linked have their alarms.)
    let (closed, _) = s.until(|e| e.event != "alarm").await;
    assert_eq!((closed.event.as_str(), closed.id), ("closed", None));
    assert_eq!(closed.data["code"], "invalid_token");
    assert!(s.next().await.is_none(), "the stream goes on");
    api.c.stop().await;
}

#[tokio::test]
async fn an_operator_limited_to_a_fleet_sees_only_its_units_and_calls() {
    use trunkd::hlr::{Fleet, Talkgroup};
    use trunkd::protocol::{FleetId, MemberId, Unit};
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    // Fleet 200 and one unit of it, the ninth subscriber.
    let fleet = FleetId::new(200).unwrap();
    let store = &api.c.store;
    let f = Fleet {
        id: fleet,
        name: "Water".into(),
    };
    store.add_fleet("test", &f).await.unwrap();
    let t = Talkgroup {
        fleet,
        id: tg(10),
        name: "Water 10".into(),
    };
    store.add_talkgroup("test", &t).await.unwrap();
    let mut s9 = new_subscriber(9);
    s9.unit = Unit {
        fleet,
        member: MemberId::new(1).unwrap(),
    };
    s9.talkgroups = vec![tg(10)];
    store.add_subscriber("test", s9, "00101").await.unwrap();
    let handle = api.c.handle();
    api.until(|| async { handle.subscriber_unit(&imsi(9)).is_some() })
        .await;
    api.add_operator("all", Role::Viewer, "").await;
    api.add_operator("water", Role::Dispatcher, "200").await;
    let (all, _) = api.tokens("all").await;
    let (water, _) = api.tokens("water").await;
    let mut everything = api.stream(Some(&all), None, "").await;
    let mut limited = api.stream(Some(&water), None, "").await;
    everything.next().await.unwrap();
    limited.next().await.unwrap();

    let mut g = gw(&api.c, 1).await;
    let t1 = reg(&mut g, 1).await;
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    reg(&mut g, 9).await;
    reg(&mut g, 2).await;
    let registered =
        |n: u64| move |e: &Sse| is(e, "unit", "registered") && e.data["imsi"] == imsi(n).to_string();

    let (_, before) = everything.until(registered(9)).await;
    assert!(before
        .iter()
        .any(|e| is(e, "call", "granted") && e.data["call"] == call.get()));
    let (last, _) = everything.until(registered(2)).await;

    // The link is everyone's; fleet 100's unit and call are not fleet 200's.
    let (nine, before) = limited.until(registered(9)).await;
    assert_eq!(nine.data["unit"], json!({"fleet": 200, "member": 1}));
    assert!(before.iter().any(|e| e.event == "link" && e.data["site"] == 1));
    for e in &before {
        assert!(e.event == "link", "fleet 200's operator was sent {e:?}");
    }
    // Nothing is sent of unit 2's registration, but the stream's id moves past it, so a
    // resume does not go back over what was hidden.
    while limited.last_id < last.id {
        if let Some(e) = limited.block().await.expect("the stream ended") {
            assert!(
                e.data["unit"]["fleet"] == 200,
                "fleet 200's operator was sent {e:?}"
            );
        }
    }
    assert_eq!(limited.last_id, last.id);

    // Its snapshot: its own unit only, no call, and the call's slot busy without it.
    let mut late = api.stream(Some(&water), None, "").await;
    let snap = late.next().await.unwrap();
    let units: Vec<&Value> = snap.data["units"].as_array().unwrap().iter().collect();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0]["imsi"], imsi(9).to_string());
    assert_eq!(snap.data["calls"], json!([]));
    let slots = snap.data["slots"][0]["slots"].as_array().unwrap();
    let busy: Vec<&Value> = slots.iter().filter(|s| s["state"] == "busy").collect();
    assert_eq!(busy.len(), 1);
    assert!(busy[0].get("call").is_none(), "{busy:?}");
    api.c.stop().await;
}

// ---- Records: subscribers, fleets, talkgroups, sites, history. ----

use reqwest::Method;

/// Fleet 200 ("Fire"), with no talkgroup.
async fn add_fire_fleet(api: &Api) {
    let fire = trunkd::hlr::Fleet {
        id: trunkd::protocol::FleetId::new(200).unwrap(),
        name: "Fire".into(),
    };
    api.c.store.add_fleet("test", &fire).await.unwrap();
}

/// The IMSIs of a page of `GET /subscribers`.
fn imsis(page: &Value) -> Vec<String> {
    page["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["imsi"].as_str().unwrap().to_string())
        .collect()
}

/// An IMEI with a good Luhn digit, as text.
fn luhn_imei(body: u64) -> String {
    imei(body).to_string()
}

#[tokio::test]
async fn subscribers_are_created_searched_changed_and_removed_by_role_and_fleet() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        add_fire_fleet(&api).await;
        api.add_operator("ada", Role::Admin, "").await;
        api.add_operator("vic", Role::Viewer, "100").await;
        api.add_operator("fay", Role::Admin, "200").await;
        let (ada, _) = api.tokens("ada").await;
        let (vic, _) = api.tokens("vic").await;
        let (fay, _) = api.tokens("fay").await;

        // Created with generated keys: shown once, in the answer, and never read back.
        let imei = luhn_imei(49_015_420_323_751);
        let new = json!({"imei": imei, "msisdn": "4915100000009", "fleet": 100, "member": 9,
                         "alias": "Dog_unit 9%", "talkgroups": [10, 11]});
        let r = api.post("/api/v1/subscribers", Some(&vic), new.clone()).await;
        assert_eq!(error_of(r).await.0, 403, "a viewer creates nothing");
        let r = api.post("/api/v1/subscribers", Some(&fay), new.clone()).await;
        assert_eq!(
            error_of(r).await.0,
            403,
            "fleet 200's admin cannot create in fleet 100"
        );
        let r = api.post("/api/v1/subscribers", Some(&ada), new.clone()).await;
        assert_eq!(r.status(), 201);
        let created: Value = r.json().await.unwrap();
        let imsi = created["subscriber"]["imsi"].as_str().unwrap().to_string();
        assert_eq!(created["keys"]["k"].as_str().unwrap().len(), 32);
        assert_eq!(created["keys"]["opc"].as_str().unwrap().len(), 32);
        assert_eq!(
            created["subscriber"]["permissions"],
            "group;private;emergency;data"
        );
        // The running controller knows it at once.
        let parsed = trunkd::protocol::Imsi::parse(&imsi).unwrap();
        assert!(api.c.handle().subscriber_unit(&parsed).is_some());
        let one = api.read(&format!("/api/v1/subscribers/{imsi}"), &vic).await;
        assert_eq!(one["imei"], imei);
        assert_eq!(one["talkgroups"], json!([10, 11]));
        for secret in ["k", "opc", "keys"] {
            assert!(one.get(secret).is_none(), "{one}");
        }
        // The same IMEI twice: 409, nothing written.
        let again = json!({"imei": imei, "fleet": 100, "member": 10, "talkgroups": [10]});
        let (status, e) = error_of(api.post("/api/v1/subscribers", Some(&ada), again).await).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (StatusCode::CONFLICT, Some("conflict"))
        );
        // Malformed: the field at fault is named.
        let bad = json!({"imei": "123", "fleet": 100, "member": 10, "talkgroups": [10]});
        let (status, e) = error_of(api.post("/api/v1/subscribers", Some(&ada), bad).await).await;
        assert_eq!(
            (status, e["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("imei"))
        );
        let bad = json!({"imei": imei, "fleet": 100, "member": 10, "talkgroups": [10], "k": "00"});
        let (status, e) = error_of(api.post("/api/v1/subscribers", Some(&ada), bad).await).await;
        assert_eq!(
            (status, e["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("k"))
        );

        // Search: by IMEI, by MSISDN, by fleet and member; paged in IMSI order.
        let by = |q: &str| format!("/api/v1/subscribers?{q}");
        let found = api.read(&by(&format!("imei={imei}")), &ada).await;
        assert_eq!(imsis(&found), vec![imsi.clone()]);
        let found = api.read(&by("msisdn=4915100000009"), &ada).await;
        assert_eq!(imsis(&found), vec![imsi.clone()]);
        let found = api.read(&by("fleet=100&member=3"), &ada).await;
        assert_eq!(imsis(&found), vec![imsi_of_member(&api, &ada, 3).await]);
        // By alias: its start, whatever the case; `_` and `%` are only themselves.
        let found = api.read(&by("alias=dog_UNIT%209%25"), &ada).await;
        assert_eq!(imsis(&found), vec![imsi.clone()]);
        assert_eq!(found["subscribers"][0]["alias"], "Dog_unit 9%");
        assert_eq!(imsis(&api.read(&by("alias=dogXunit"), &ada).await).len(), 0);
        assert_eq!(imsis(&api.read(&by("alias=%25"), &ada).await).len(), 0);
        let found = api.read(&by("alias=car"), &ada).await;
        assert_eq!(imsis(&found).len(), 8, "the provisioned `Car n`");
        let mut seen = Vec::new();
        let mut next = by("limit=4");
        loop {
            let page = api.read(&next, &vic).await;
            seen.extend(imsis(&page));
            match page["next_after"].as_str() {
                Some(after) => next = by(&format!("limit=4&after={after}")),
                None => break,
            }
        }
        assert_eq!(seen.len(), 9, "8 provisioned and the new one");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
        // Fleet 200's admin sees none of fleet 100's, and may not ask for them.
        assert_eq!(imsis(&api.read(&by(""), &fay).await).len(), 0);
        assert_eq!(error_of(api.get(&by("fleet=100"), Some(&fay)).await).await.0, 403);
        let r = api.get(&format!("/api/v1/subscribers/{imsi}"), Some(&fay)).await;
        assert_eq!(error_of(r).await.0, 403);
        let (status, e) = error_of(api.get(&by("imsi=12"), Some(&ada)).await).await;
        assert_eq!(
            (status, e["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("imsi"))
        );

        // Change: MSISDN removed, talkgroups replaced; a talkgroup the fleet does not
        // have refuses the whole change.
        let path = format!("/api/v1/subscribers/{imsi}");
        let r = api
            .send(
                Method::PATCH,
                &path,
                &ada,
                Some(json!({"talkgroups": [11, 99], "msisdn": null})),
            )
            .await;
        assert_eq!(error_of(r).await.0, 404);
        let one = api.read(&path, &ada).await;
        assert_eq!(
            one["msisdn"], "4915100000009",
            "nothing of a refused change is written"
        );
        let r = api
            .send(
                Method::PATCH,
                &path,
                &ada,
                Some(json!({"talkgroups": [11, 10], "msisdn": null})),
            )
            .await;
        assert_eq!(r.status(), 200);
        let one: Value = r.json().await.unwrap();
        assert_eq!(
            (one["msisdn"].clone(), one["talkgroups"].clone()),
            (Value::Null, json!([11, 10]))
        );
        assert_eq!(one["alias"], "Dog_unit 9%", "what the change did not name stays");
        let r = api
            .send(Method::PATCH, &path, &ada, Some(json!({"alias": "K9 "})))
            .await;
        assert_eq!(error_of(r).await.0, 400, "a space at the end");
        let r = api
            .send(Method::PATCH, &path, &ada, Some(json!({"alias": "K9"})))
            .await;
        assert_eq!(r.json::<Value>().await.unwrap()["alias"], "K9");
        let r = api
            .send(Method::PATCH, &path, &ada, Some(json!({"alias": null})))
            .await;
        assert_eq!(r.json::<Value>().await.unwrap()["alias"], Value::Null);
        let r = api
            .send(Method::PATCH, &path, &vic, Some(json!({"msisdn": "1"})))
            .await;
        assert_eq!(error_of(r).await.0, 403);
        let r = api.send(Method::PATCH, &path, &ada, Some(json!({}))).await;
        assert_eq!(error_of(r).await.0, 400);

        // Removed: gone from the database and from the running controller.
        assert_eq!(api.send(Method::DELETE, &path, &vic, None).await.status(), 403);
        assert_eq!(api.send(Method::DELETE, &path, &ada, None).await.status(), 204);
        assert_eq!(api.get(&path, Some(&ada)).await.status(), 404);
        assert!(api.c.handle().subscriber_unit(&parsed).is_none());
        assert_eq!(api.send(Method::DELETE, &path, &ada, None).await.status(), 404);
        api.c.stop().await;
    }
}

async fn imsi_of_member(api: &Api, token: &str, member: u16) -> String {
    let all = api.read("/api/v1/subscribers?fleet=100&limit=100", token).await;
    let s = all["subscribers"].as_array().unwrap();
    let s = s.iter().find(|s| s["member"] == member).unwrap();
    s["imsi"].as_str().unwrap().to_string()
}

/// `POST /subscribers/import` with `csv` as the body.
async fn import(api: &Api, token: &str, csv: &str) -> reqwest::Response {
    api.http
        .post(format!("{}/api/v1/subscribers/import", api.base))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_bulk_import_is_all_or_nothing_with_the_line_at_fault() {
    for db in TestDb::all().await {
        let api = Api::with(&db, |c| c.api.import_body_limit = 4096).await;
        add_fire_fleet(&api).await;
        api.add_operator("ada", Role::Admin, "").await;
        api.add_operator("fay", Role::Admin, "200").await;
        let (ada, _) = api.tokens("ada").await;
        let (fay, _) = api.tokens("fay").await;
        let count = || async { imsis(&api.read("/api/v1/subscribers?limit=1000", &ada).await).len() };
        assert_eq!(count().await, 8);
        let header = "imei,fleet,member,talkgroups,k,opc,priority,permissions";
        let keys = format!("{},{},1,all", "0a".repeat(16), "0b".repeat(16));
        let row =
            |n: u64, member: u16| format!("{},100,{member},10;11,{keys}", luhn_imei(49_015_420_400_000 + n));

        // Line 3 names a talkgroup fleet 100 does not have: nothing is written.
        let csv = format!(
            "{header}\n{}\n{},100,21,99,{keys}\n{}\n",
            row(1, 20),
            luhn_imei(49_015_420_400_002),
            row(3, 22)
        );
        let (status, e) = error_of(import(&api, &ada, &csv).await).await;
        assert_eq!(status, 400);
        assert_eq!(
            (e["code"].as_str(), e["field"].as_str()),
            (Some("invalid_row"), Some("line 3"))
        );
        assert!(e["message"].as_str().unwrap().contains("talkgroup 99"), "{e}");
        // A row the CSV reader refuses: its line too.
        let csv = format!("{header}\n{}\nnot-an-imei,100,21,10,{keys}\n", row(1, 20));
        let (_, e) = error_of(import(&api, &ada, &csv).await).await;
        assert_eq!(e["field"], "line 3");
        assert_eq!(count().await, 8, "a refused import writes nothing");

        // Not CSV, or larger than api.import_body_limit: refused.
        let r = api
            .post("/api/v1/subscribers/import", Some(&ada), json!([]))
            .await;
        assert_eq!(error_of(r).await.0, 415);
        let big = format!("{header}\n{}", format!("{}\n", row(1, 20)).repeat(200));
        assert_eq!(error_of(import(&api, &ada, &big).await).await.0, 413);
        // An admin of fleet 200 imports no row of fleet 100.
        let csv = format!("{header}\n{}\n", row(1, 20));
        let (status, e) = error_of(import(&api, &fay, &csv).await).await;
        assert_eq!(
            (status, e["field"].as_str()),
            (StatusCode::FORBIDDEN, Some("line 2"))
        );

        // A good file: every row stored, with the identities it was given.
        let csv = format!("{header}\n{}\n{}\n", row(1, 20), row(2, 21));
        let r = import(&api, &ada, &csv).await;
        assert_eq!(r.status(), 201);
        let done: Value = r.json().await.unwrap();
        assert_eq!(done["imported"], 2);
        assert_eq!(done["subscribers"][1]["line"], 3);
        assert_eq!(done["subscribers"][1]["imsi_assigned"], true);
        assert_eq!(count().await, 10);
        api.c.stop().await;
    }
}

#[tokio::test]
async fn fleets_talkgroups_and_sites_are_kept_through_the_api() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        api.add_operator("ada", Role::Admin, "").await;
        api.add_operator("vic", Role::Viewer, "").await;
        api.add_operator("fay", Role::Admin, "100").await;
        let (ada, _) = api.tokens("ada").await;
        let (vic, _) = api.tokens("vic").await;
        let (fay, _) = api.tokens("fay").await;

        // Fleets: created and removed by an admin of every fleet only.
        let fire = json!({"id": 200, "name": "Fire"});
        assert_eq!(
            api.post("/api/v1/fleets", Some(&vic), fire.clone())
                .await
                .status(),
            403
        );
        assert_eq!(
            api.post("/api/v1/fleets", Some(&fay), fire.clone())
                .await
                .status(),
            403
        );
        assert_eq!(
            api.post("/api/v1/fleets", Some(&ada), fire.clone())
                .await
                .status(),
            201
        );
        assert_eq!(
            api.post("/api/v1/fleets", Some(&ada), fire.clone())
                .await
                .status(),
            409
        );
        let fleets = api.read("/api/v1/fleets", &vic).await;
        assert_eq!(fleets["fleets"].as_array().unwrap().len(), 2);
        let fleets = api.read("/api/v1/fleets", &fay).await;
        assert_eq!(fleets["fleets"], json!([{"id": 100, "name": "Police"}]));
        let r = api
            .send(
                Method::PATCH,
                "/api/v1/fleets/100",
                &fay,
                Some(json!({"name": "City police"})),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(api.read("/api/v1/fleets/100", &vic).await["name"], "City police");
        let r = api
            .send(
                Method::PATCH,
                "/api/v1/fleets/100",
                &ada,
                Some(json!({"name": " "})),
            )
            .await;
        assert_eq!(error_of(r).await.0, 400);
        assert_eq!(api.get("/api/v1/fleets/0", Some(&vic)).await.status(), 400);
        assert_eq!(api.get("/api/v1/fleets/300", Some(&vic)).await.status(), 404);

        // Talkgroups, with the subscribers permitted on each.
        let tgs = "/api/v1/fleets/200/talkgroups";
        let r = api.post(tgs, Some(&ada), json!({"id": 1, "name": "Ops"})).await;
        assert_eq!(r.status(), 201);
        let r = api.post(tgs, Some(&fay), json!({"id": 2, "name": "Other"})).await;
        assert_eq!(r.status(), 403);
        let r = api
            .send(
                Method::PATCH,
                "/api/v1/fleets/200/talkgroups/1",
                &ada,
                Some(json!({"name": "Fireground"})),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            api.read(tgs, &vic).await["talkgroups"],
            json!([{"fleet": 200, "id": 1, "name": "Fireground"}])
        );
        let members = api
            .read("/api/v1/fleets/100/talkgroups/10/members?limit=5", &vic)
            .await;
        assert_eq!(members["members"].as_array().unwrap().len(), 5);
        let rest = format!(
            "/api/v1/fleets/100/talkgroups/10/members?after={}",
            members["next_after"].as_str().unwrap()
        );
        assert_eq!(
            api.read(&rest, &vic).await["members"].as_array().unwrap().len(),
            3
        );
        // Refused while something depends on it, and then nothing is removed.
        let r = api
            .send(Method::DELETE, "/api/v1/fleets/100/talkgroups/10", &ada, None)
            .await;
        let (status, e) = error_of(r).await;
        assert_eq!(status, 409);
        assert!(e["message"].as_str().unwrap().contains("8 subscribers"), "{e}");
        let r = api.send(Method::DELETE, "/api/v1/fleets/200", &ada, None).await;
        assert_eq!(error_of(r).await.0, 409);
        let r = api
            .send(Method::DELETE, "/api/v1/fleets/200/talkgroups/1", &ada, None)
            .await;
        assert_eq!(r.status(), 204);
        assert_eq!(
            api.send(Method::DELETE, "/api/v1/fleets/200", &ada, None)
                .await
                .status(),
            204
        );

        // Sites: the link key is generated and shown once, never read back.
        let north = json!({"id": 3, "name": "North", "carriers": 2, "slots_per_carrier": 4});
        assert_eq!(
            api.post("/api/v1/sites", Some(&fay), north.clone())
                .await
                .status(),
            403
        );
        let r = api.post("/api/v1/sites", Some(&ada), north.clone()).await;
        assert_eq!(r.status(), 201);
        let created: Value = r.json().await.unwrap();
        let key = created["link_key"].as_str().unwrap().to_string();
        assert_eq!(key.len(), 64);
        let site = api.read("/api/v1/sites/3", &vic).await;
        assert_eq!(
            site,
            json!({"id": 3, "name": "North", "carriers": 2, "slots_per_carrier": 4})
        );
        let all = api.read("/api/v1/sites", &vic).await.to_string();
        assert!(!all.contains(&key) && !all.contains("key"), "{all}");
        // The gateway links with the key it was given, and after a new key only with that.
        let site3 = trunkd::protocol::SiteId::new(3).unwrap();
        let old = trunkd::protocol::SiteKey::from_hex(&key).unwrap();
        let addr = api.c.link_addr;
        trunkd::link::gateway::GatewayLink::connect(addr, site3, &old)
            .await
            .unwrap();
        let r = api.post("/api/v1/sites/3/key", Some(&ada), json!({})).await;
        assert_eq!(r.status(), 200);
        let new_key: Value = r.json().await.unwrap();
        let new = trunkd::protocol::SiteKey::from_hex(new_key["link_key"].as_str().unwrap()).unwrap();
        assert!(trunkd::link::gateway::GatewayLink::connect(addr, site3, &old)
            .await
            .is_err());
        trunkd::link::gateway::GatewayLink::connect(addr, site3, &new)
            .await
            .unwrap();
        let r = api
            .send(
                Method::PATCH,
                "/api/v1/sites/3",
                &ada,
                Some(json!({"name": "Hill"})),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            api.send(Method::DELETE, "/api/v1/sites/3", &ada, None)
                .await
                .status(),
            204
        );
        assert_eq!(api.get("/api/v1/sites/3", Some(&vic)).await.status(), 404);
        api.c.stop().await;
    }
}

#[tokio::test]
async fn call_history_and_the_audit_log_are_filtered_and_paged() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        add_fire_fleet(&api).await;
        api.add_operator("ada", Role::Admin, "").await;
        api.add_operator("vic", Role::Viewer, "100").await;
        api.add_operator("fay", Role::Viewer, "200").await;
        let (ada, _) = api.tokens("ada").await;
        let (vic, _) = api.tokens("vic").await;
        let (fay, _) = api.tokens("fay").await;

        // Two group calls on talkgroups 10 and 11, ended.
        let mut g = gw(&api.c, 1).await;
        let tmsis = reg_all(&mut g, 2).await;
        for (t, tgid) in [(tmsis[0], 10), (tmsis[1], 11)] {
            let (_, grant) = group_call(&mut g, t, tgid, CallScope::Local).await;
            let (call, _) = grant_of(&grant);
            g.request(Message::CallEnd {
                call,
                cause: Cause::Normal,
            })
            .await
            .unwrap();
            until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
        }
        let path = "/api/v1/history/calls?fleet=100";
        api.until(|| async { api.read(path, &vic).await["calls"].as_array().unwrap().len() == 2 })
            .await;
        let calls = api
            .read("/api/v1/history/calls?fleet=100&talkgroup=10", &vic)
            .await;
        let calls = calls["calls"].as_array().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["type"], "group");
        assert_eq!(
            calls[0]["target"],
            json!({"kind": "talkgroup", "fleet": 100, "talkgroup": 10})
        );
        assert_eq!(calls[0]["caller"], json!({"fleet": 100, "member": 1}));
        assert_eq!(calls[0]["sites"], json!([1]));
        assert_eq!(calls[0]["cause_text"], "normal");
        let by_unit = api.read("/api/v1/history/calls?fleet=100&member=2", &vic).await;
        assert_eq!(by_unit["calls"][0]["target"]["talkgroup"], 11);
        assert_eq!(
            api.read("/api/v1/history/calls?type=private", &vic).await["calls"],
            json!([])
        );
        assert_eq!(
            api.read("/api/v1/history/calls?site=2", &vic).await["calls"],
            json!([])
        );
        assert_eq!(
            api.read("/api/v1/history/calls?to_ms=1", &vic).await["calls"],
            json!([])
        );
        // Newest first, a page at a time.
        let first = api.read("/api/v1/history/calls?limit=1", &ada).await;
        let before = first["next_before"].as_i64().unwrap();
        assert_eq!(first["calls"][0]["target"]["talkgroup"], 11);
        let second = api
            .read(&format!("/api/v1/history/calls?limit=1&before={before}"), &ada)
            .await;
        assert_eq!(second["calls"][0]["target"]["talkgroup"], 10);
        assert!(second.get("next_before").is_none());
        // Fleet 200's viewer sees none of fleet 100's calls; bad filters are named.
        assert_eq!(api.read("/api/v1/history/calls", &fay).await["calls"], json!([]));
        let r = api.get("/api/v1/history/calls?member=1", Some(&ada)).await;
        assert_eq!(error_of(r).await.1["field"], "member");
        let r = api.get("/api/v1/history/calls?type=video", Some(&ada)).await;
        assert_eq!(error_of(r).await.1["field"], "type");

        // The audit log: an admin's, with who did what from where.
        let imsi = imsi(1).to_string();
        let r = api
            .post(
                &format!("/api/v1/subscribers/{imsi}/inhibit"),
                Some(&ada),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), 202);
        assert_eq!(api.get("/api/v1/history/audit", Some(&vic)).await.status(), 403);
        let object = format!("subscriber:{imsi}");
        let log = api
            .read(
                &format!("/api/v1/history/audit?object={object}&action=subscriber.inhibit"),
                &ada,
            )
            .await;
        let entries = log["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["actor"], "api:ada@127.0.0.1");
        let page = api.read("/api/v1/history/audit?limit=2", &ada).await;
        assert_eq!(page["entries"][0]["action"], "subscriber.inhibit", "newest first");
        let next = page["next_before"].as_i64().unwrap();
        let older = api
            .read(&format!("/api/v1/history/audit?limit=2&before={next}"), &ada)
            .await;
        assert!(older["entries"][0]["id"].as_i64().unwrap() < next);
        // Append-only: no route changes it.
        let r = api
            .send(Method::DELETE, "/api/v1/history/audit", &ada, None)
            .await;
        assert_eq!(r.status(), 405);
        api.c.stop().await;
    }
}

// ---- TLS ----

/// A self-signed certificate for `localhost` and its key, as PEM files in `dir`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("api.crt"), dir.join("api.key"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_pem()).unwrap();
    (c, k)
}

#[tokio::test]
async fn the_api_speaks_tls_with_a_certificate_from_files() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let api = Api::with(&db, |c| {
        c.api.tls_cert = Some(cert.clone());
        c.api.tls_key = Some(key.clone());
    })
    .await;
    assert!(api.base.starts_with("https://"), "{}", api.base);
    api.add_operator("ada", Role::Admin, "").await;
    let (token, _) = api.tokens("ada").await;
    assert_eq!(api.whoami(&token).await.0, 200);
    // Plain HTTP to the TLS port gets no answer.
    let plain = api.base.replace("https://", "http://");
    let r = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    // A client that does not trust the certificate refuses it.
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", api.base))
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    api.c.stop().await;
}

#[tokio::test]
async fn a_missing_or_bad_certificate_refuses_to_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let with = |cert: &std::path::Path, key: &std::path::Path| ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: Some(cert.to_path_buf()),
        tls_key: Some(key.to_path_buf()),
        ..ApiConfig::default()
    };
    let missing = dir.path().join("nope.crt");
    let e = trunkd::api::bind(&with(&missing, &key)).await.err().unwrap();
    assert!(
        e.to_string().contains("api.tls_cert") && e.to_string().contains("nope.crt"),
        "{e}"
    );
    // The certificate where the key should be.
    let e = trunkd::api::bind(&with(&cert, &cert)).await.err().unwrap();
    assert!(e.to_string().contains("api.tls_key"), "{e}");
    // One without the other is refused by the configuration's check.
    let mut cfg = Config::default();
    cfg.api.tls_cert = Some(cert);
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("api.tls_cert and api.tls_key go together"), "{e}");
}

// ---- Messages from a console ----

#[tokio::test]
async fn a_console_sends_status_and_short_data_as_one_of_its_fleets_units() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    add_fire_fleet(&api).await;
    api.add_operator("dan", Role::Dispatcher, "").await;
    api.add_operator("vic", Role::Viewer, "").await;
    api.add_operator("fay", Role::Dispatcher, "200").await;
    let (dan, _) = api.tokens("dan").await;
    let (vic, _) = api.tokens("vic").await;
    let (fay, _) = api.tokens("fay").await;
    let mut g = gw(&api.c, 1).await;
    reg_all(&mut g, 2).await;

    let from = json!({"fleet": 100, "member": 8});
    let to_tg = json!({"kind": "talkgroup", "fleet": 100, "talkgroup": 10});
    let status = json!({"from": from, "to": to_tg, "code": 7});
    let r = api
        .post("/api/v1/messages/status", Some(&vic), status.clone())
        .await;
    assert_eq!(error_of(r).await.0, 403, "a viewer sends nothing");
    let r = api
        .post("/api/v1/messages/status", Some(&fay), status.clone())
        .await;
    let (code, e) = error_of(r).await;
    assert_eq!((code, e["field"].as_str()), (StatusCode::FORBIDDEN, Some("from")));
    let r = api.post("/api/v1/messages/status", Some(&dan), status).await;
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    assert_eq!(out["outcome"], "sent_to_talkgroup");
    assert!(out["recipients"].as_u64().unwrap() >= 1, "{out}");

    // Short data to a unit off the air is stored for it.
    let to_unit = json!({"kind": "unit", "fleet": 100, "member": 5});
    let data = json!({"from": from, "to": to_unit, "data": "aGVsbG8="});
    let r = api.post("/api/v1/messages/short-data", Some(&dan), data).await;
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    assert_eq!(out, json!({"outcome": "stored", "recipients": 1}));
    // Bad payloads and targets are named.
    for (body, field) in [
        (
            json!({"from": from, "to": to_unit, "data": "not base64!"}),
            "data",
        ),
        (json!({"from": from, "to": to_unit, "data": ""}), "data"),
        (
            json!({"from": from, "to": {"kind": "unit", "fleet": 100, "member": 0}, "data": "aA=="}),
            "to.member",
        ),
    ] {
        let r = api.post("/api/v1/messages/short-data", Some(&dan), body).await;
        let (code, e) = error_of(r).await;
        assert_eq!(
            (code, e["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{e}"
        );
    }
    // From a unit that is not provisioned: refused with the radio's cause.
    let stranger = json!({"from": {"fleet": 100, "member": 99}, "to": to_unit, "data": "aA=="});
    let r = api
        .post("/api/v1/messages/short-data", Some(&dan), stranger)
        .await;
    assert_eq!(error_of(r).await.0, 409);
    api.c.stop().await;
}

// ---- The OpenAPI document: GET /api/v1/openapi.json ----

/// Every route the API serves, as its method and its path in the document. A new route
/// goes here too (see `src/api/mod.rs`, "Adding a route").
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/auth/whoami"),
    ("get", "/api/v1/auth/jwks.json"),
    ("get", "/api/v1/units"),
    ("get", "/api/v1/sites/{site}/slots"),
    ("get", "/api/v1/calls"),
    ("get", "/api/v1/queues"),
    ("get", "/api/v1/links"),
    ("get", "/api/v1/alarms"),
    ("get", "/api/v1/alarms/{id}"),
    ("post", "/api/v1/alarms/{id}/acknowledge"),
    ("get", "/api/v1/parameters"),
    ("put", "/api/v1/parameters/{name}"),
    ("post", "/api/v1/subscribers/{imsi}/inhibit"),
    ("post", "/api/v1/subscribers/{imsi}/enable"),
    ("post", "/api/v1/subscribers/{imsi}/check"),
    ("post", "/api/v1/subscribers/{imsi}/alert"),
    ("post", "/api/v1/subscribers/{imsi}/authorize"),
    ("get", "/api/v1/commands/{id}"),
    ("post", "/api/v1/calls/{call}/release"),
    ("post", "/api/v1/sites/{site}/slots/out-of-service"),
    ("post", "/api/v1/sites/{site}/slots/in-service"),
    ("get", "/api/v1/events"),
    ("post", "/api/v1/events/ticket"),
    ("get", "/api/v1/subscribers"),
    ("post", "/api/v1/subscribers"),
    ("post", "/api/v1/subscribers/import"),
    ("get", "/api/v1/subscribers/{imsi}"),
    ("patch", "/api/v1/subscribers/{imsi}"),
    ("delete", "/api/v1/subscribers/{imsi}"),
    ("get", "/api/v1/fleets"),
    ("post", "/api/v1/fleets"),
    ("get", "/api/v1/fleets/{fleet}"),
    ("patch", "/api/v1/fleets/{fleet}"),
    ("delete", "/api/v1/fleets/{fleet}"),
    ("get", "/api/v1/fleets/{fleet}/talkgroups"),
    ("post", "/api/v1/fleets/{fleet}/talkgroups"),
    ("get", "/api/v1/fleets/{fleet}/talkgroups/{talkgroup}"),
    ("patch", "/api/v1/fleets/{fleet}/talkgroups/{talkgroup}"),
    ("delete", "/api/v1/fleets/{fleet}/talkgroups/{talkgroup}"),
    ("get", "/api/v1/fleets/{fleet}/talkgroups/{talkgroup}/members"),
    ("get", "/api/v1/sites"),
    ("post", "/api/v1/sites"),
    ("get", "/api/v1/sites/{site}"),
    ("patch", "/api/v1/sites/{site}"),
    ("delete", "/api/v1/sites/{site}"),
    ("post", "/api/v1/sites/{site}/key"),
    ("get", "/api/v1/history/calls"),
    ("get", "/api/v1/history/audit"),
    ("post", "/api/v1/messages/status"),
    ("post", "/api/v1/messages/short-data"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// `v`, or what its `$ref` points to in `doc`.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc.pointer(&r[1..]).unwrap_or(&Value::Null),
        None => v,
    }
}

/// The document is OpenAPI 3.1 as far as this API uses it: every `$ref` resolves, every
/// operation has a unique `operationId`, responses with descriptions (every error one
/// with the `ApiError` schema), its path parameters declared, and security schemes that
/// exist. It lists exactly [`ROUTES`], and each of them is served: none answers the
/// router's own 404 (`no such route`) or 405. The other way round needs no test: routes
/// reach the router only through `ApiRoutes::routes(routes!(handler))`, which takes the
/// handler's `#[utoipa::path]` into the document, so a route served and not documented
/// cannot be written. (The schemathesis run of `tools/schemathesis.sh` checks the
/// answers against the document.)
#[tokio::test]
async fn the_openapi_document_is_valid_and_lists_every_route() {
    let db = TestDb::sqlite();
    let api = Api::start(&db).await;
    let r = api.get("/api/v1/openapi.json", None).await;
    assert_eq!(r.status(), 200, "served without a token");
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc, serde_json::to_value(trunkd::api::document()).unwrap());
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        assert!(
            r.starts_with("#/") && doc.pointer(&r[1..]).is_some(),
            "{r} does not resolve"
        );
    }

    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let known_schemes = |requirements: &Value| {
        requirements
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_object().unwrap().keys())
            .all(|k| schemes.contains_key(k))
    };
    assert!(known_schemes(&doc["security"]));
    assert_eq!(doc["security"], json!([{"bearer": []}]), "a token by default");

    let mut listed = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let ops: Vec<(&str, &Value)> = METHODS
            .iter()
            .filter_map(|m| item.get(*m).map(|op| (*m, op)))
            .collect();
        assert!(!ops.is_empty(), "{path} has no operation");
        for (method, op) in ops {
            let what = format!("{method} {path}");
            listed.insert((method.to_string(), path.clone()));
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                !id.is_empty() && ids.insert(id.to_string()),
                "{what}: operationId {id:?}"
            );
            assert!(op["summary"].is_string(), "{what} has no summary");
            if let Some(s) = op.get("security") {
                assert!(known_schemes(s), "{what}: {s}");
            }
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path"))
                .into_iter()
                .flatten()
                .inspect(|p| assert_eq!(p["required"], true, "{what}: {p}"))
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{what}: path parameters");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what} has no success"
            );
            for (status, response) in responses {
                let response = deref(&doc, response);
                assert!(response["description"].is_string(), "{what} {status}");
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    assert_eq!(schema["$ref"], "#/components/schemas/ApiError", "{what} {status}");
                }
            }
        }
    }
    let expected: std::collections::BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, expected, "the document's routes (left) and the test's");

    // Each is served, whatever it then answers to a request without token or body.
    for (method, path) in ROUTES {
        let concrete: Vec<&str> = path
            .split('/')
            .map(|s| if s.starts_with('{') { "1" } else { s })
            .collect();
        let url = format!("{}{}", api.base, concrete.join("/"));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = api.http.request(method, &url).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED
                && !(status == StatusCode::NOT_FOUND && body.contains("no such route")),
            "{path}: {status} {body}"
        );
    }
    api.c.stop().await;
}

// ---- Alarms: GET /api/v1/alarms, POST /api/v1/alarms/{id}/acknowledge ----

impl Api {
    /// `GET /api/v1/alarms` + `query` as `token`: the answer's body.
    async fn alarms(&self, token: &str, query: &str) -> Value {
        let r = self.get(&format!("/api/v1/alarms{query}"), Some(token)).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Waits until `GET /api/v1/alarms` + `query` lists an alarm that `pred` accepts:
    /// it.
    async fn alarm_until(&self, token: &str, query: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let body = self.alarms(token, query).await;
            if let Some(a) = body["alarms"].as_array().unwrap().iter().find(|a| pred(a)) {
                return a.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "never listed: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new operator's access token and its event stream, past the snapshot.
    async fn listening(&self, name: &str, role: Role, fleets: &str) -> (String, EventStream) {
        self.add_operator(name, role, fleets).await;
        let (token, _) = self.tokens(name).await;
        let mut s = self.stream(Some(&token), None, "").await;
        assert_eq!(s.next().await.unwrap().event, "snapshot");
        (token, s)
    }

    async fn acknowledge(&self, token: &str, id: &Value) -> reqwest::Response {
        self.post(
            &format!("/api/v1/alarms/{id}/acknowledge"),
            Some(token),
            json!({}),
        )
        .await
    }
}

/// An alarm of `kind` on `subject` (any state).
fn alarm_of(kind: &'static str, subject: &'static str) -> impl Fn(&Value) -> bool {
    move |a| a["kind"] == kind && a["subject"] == subject
}

/// An `alarm` event of `change` for alarm `id`.
fn alarm_event(change: &'static str, id: Value) -> impl Fn(&Sse) -> bool {
    move |e| e.event == "alarm" && e.data["change"] == change && e.data["alarm"]["id"] == id
}

#[tokio::test]
async fn a_lost_site_link_raises_an_alarm_a_dispatcher_acknowledges_and_the_link_clears() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        api.add_operator("dora", Role::Dispatcher, "").await;
        api.add_operator("vic", Role::Viewer, "").await;
        let (dora, _) = api.tokens("dora").await;
        let (vic, _) = api.tokens("vic").await;
        let mut s = api.stream(Some(&vic), None, "").await;
        let snap = s.next().await.unwrap();
        // The gateways have `alarms.link_grace_ms` to link after a start.
        assert_eq!(snap.data["alarms"], json!([]), "{}", db.name);

        // Site 1's gateway links, then its link is lost.
        let g = gw(&api.c, 1).await;
        s.until(|e| e.event == "link" && e.data["up"] == true).await;
        drop(g);
        let a = api
            .alarm_until(&vic, "", alarm_of("site_link_lost", "site:1"))
            .await;
        assert_eq!(
            (a["site"].as_u64(), a["state"].as_str(), a["occurrences"].as_u64()),
            (Some(1), Some("raised"), Some(1)),
            "{a}"
        );
        assert!(a["raised_at_ms"].as_i64().unwrap() > 1_600_000_000_000);
        for absent in [
            "acknowledged_by",
            "acknowledged_at_ms",
            "cleared_at_ms",
            "imsi",
            "unit",
        ] {
            assert!(a.get(absent).is_none(), "{absent} in {a}");
        }
        let id = a["id"].clone();
        let (raised, _) = s.until(alarm_event("raised", id.clone())).await;
        assert_eq!(raised.data["alarm"], a);
        assert_eq!(
            api.get(&format!("/api/v1/alarms/{id}"), Some(&vic))
                .await
                .json::<Value>()
                .await
                .unwrap(),
            a
        );

        // A viewer may not acknowledge; a dispatcher may, once.
        let (status, e) = error_of(api.acknowledge(&vic, &id).await).await;
        assert_eq!((status.as_u16(), e["code"].as_str()), (403, Some("forbidden")));
        let r = api.acknowledge(&dora, &id).await;
        assert_eq!(r.status(), 200);
        let acked: Value = r.json().await.unwrap();
        assert_eq!(
            (acked["state"].as_str(), acked["acknowledged_by"].as_str()),
            (Some("acknowledged"), Some("api:dora@127.0.0.1"))
        );
        let (status, e) = error_of(api.acknowledge(&dora, &id).await).await;
        assert_eq!(
            (status.as_u16(), e["code"].as_str()),
            (409, Some("already_acknowledged"))
        );
        assert!(
            e["message"].as_str().unwrap().contains("api:dora@127.0.0.1"),
            "{e}"
        );
        s.until(alarm_event("acknowledged", id.clone())).await;
        let log = api.c.store.audit_since(0, 10_000).await.unwrap();
        let entry = log.iter().find(|e| e.action == "alarm.acknowledge").unwrap();
        assert_eq!(
            (entry.actor.as_str(), entry.object.clone()),
            ("api:dora@127.0.0.1", format!("alarm:{id}"))
        );
        for (path, status, field) in [
            ("/api/v1/alarms/999999/acknowledge", 404, None),
            ("/api/v1/alarms/x/acknowledge", 400, Some("id")),
        ] {
            let (got, e) = error_of(api.post(path, Some(&dora), json!({})).await).await;
            assert_eq!(
                (got.as_u16(), e["field"].as_str()),
                (status, field),
                "{path}: {e}"
            );
        }

        // The gateway links again: the condition is gone, the alarm is finished and
        // leaves the list of those that need attention, for the history.
        let _g = gw(&api.c, 1).await;
        let (cleared, _) = s.until(alarm_event("cleared", id.clone())).await;
        assert_eq!(cleared.data["alarm"]["state"], "finished");
        let listed = api.alarms(&vic, "").await;
        assert!(
            !listed["alarms"].as_array().unwrap().iter().any(|a| a["id"] == id),
            "{listed}"
        );
        let done = api.alarm_until(&vic, "?finished=true", |a| a["id"] == id).await;
        assert_eq!(done["state"], "finished");
        assert!(done["cleared_at_ms"].as_i64().unwrap() >= done["acknowledged_at_ms"].as_i64().unwrap());
        api.c.stop().await;
    }
}

#[tokio::test]
async fn alarms_survive_a_restart_on_the_same_database() {
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        api.add_operator("ada", Role::Admin, "").await;
        let (ada, _) = api.tokens("ada").await;
        let h = api.c.handle();
        // Site 1 loses its link; site 2 keeps its link until the controller stops.
        let g1 = gw(&api.c, 1).await;
        let _g2 = gw(&api.c, 2).await;
        drop(g1);
        let lost = api
            .alarm_until(&ada, "", alarm_of("site_link_lost", "site:1"))
            .await;
        // A slot goes out of service and back: cleared, not acknowledged.
        for c in [
            trunkd::controller::Command::SlotOutOfService {
                site: site(2),
                carrier: 0,
                slot: Some(2),
            },
            trunkd::controller::Command::SlotInService {
                site: site(2),
                carrier: 0,
                slot: Some(2),
            },
        ] {
            h.command("test", c).await.unwrap();
        }
        let slot = api
            .alarm_until(&ada, "", |a| {
                alarm_of("slot_out_of_service", "slot:2/0/2")(a) && a["state"] == "cleared"
            })
            .await;
        api.c.stop().await;

        // Written behind before the controller stopped; its links closing raised nothing.
        let store = db.open().await;
        let kept = store.unfinished_alarms().await.unwrap();
        let kept: Vec<(i64, &str)> = kept.iter().map(|a| (a.id, a.subject.as_str())).collect();
        assert_eq!(
            kept,
            vec![
                (lost["id"].as_i64().unwrap(), "site:1"),
                (slot["id"].as_i64().unwrap(), "slot:2/0/2"),
            ],
            "{}",
            db.name
        );
        store.close().await;

        let cfg = call_config(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt));
        let api = Api::serve(trunkd::controller::start(cfg.clone()).await.unwrap(), &cfg.api).await;
        let (ada, _) = api.tokens("ada").await;
        let listed = api.alarms(&ada, "").await;
        let listed: Vec<(Value, Value)> = listed["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["id"].clone(), a["state"].clone()))
            .collect();
        // Newest first; site 1 has still not linked, and site 2 has the grace to.
        assert_eq!(
            listed,
            vec![
                (slot["id"].clone(), json!("cleared")),
                (lost["id"].clone(), json!("raised")),
            ]
        );
        // Its gateway links: cleared; acknowledged: finished.
        let _g1 = gw(&api.c, 1).await;
        api.alarm_until(&ada, "", |a| a["id"] == lost["id"] && a["state"] == "cleared")
            .await;
        assert_eq!(api.acknowledge(&ada, &lost["id"]).await.status(), 200);
        // Past the grace, site 2, which has not linked since the restart, is alarmed.
        drop(_g1);
        skip(Duration::from_millis(cfg.alarms.link_grace_ms)).await;
        let two = api
            .alarm_until(&ada, "", alarm_of("site_link_lost", "site:2"))
            .await;
        assert!(two["id"].as_u64() > slot["id"].as_u64());

        // Every alarm in the history, a page at a time.
        let page = api.alarms(&ada, "?finished=true&limit=2").await;
        let mut ids: Vec<u64> = page["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_u64().unwrap())
            .collect();
        let mut before = page["next_before"].as_u64();
        while let Some(b) = before {
            let page = api
                .alarms(&ada, &format!("?finished=true&limit=2&before={b}"))
                .await;
            ids.extend(
                page["alarms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["id"].as_u64().unwrap()),
            );
            before = page["next_before"].as_u64();
        }
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        for id in [&lost["id"], &slot["id"], &two["id"]] {
            assert!(ids.contains(&id.as_u64().unwrap()), "{id} not in {ids:?}");
        }
        let (status, e) = error_of(api.get("/api/v1/alarms?limit=0", Some(&ada)).await).await;
        assert_eq!((status.as_u16(), e["field"].as_str()), (400, Some("limit")));
        api.c.stop().await;
    }
}

#[tokio::test]
async fn an_emergency_raises_an_alarm_that_only_the_units_fleet_sees() {
    use trunkd::hlr::Fleet;
    use trunkd::protocol::FleetId;
    for db in TestDb::all().await {
        let api = Api::start(&db).await;
        let fleet = Fleet {
            id: FleetId::new(200).unwrap(),
            name: "Water".into(),
        };
        api.c.store.add_fleet("test", &fleet).await.unwrap();
        let (pat, mut police) = api.listening("pat", Role::Dispatcher, "100").await;
        let (wes, mut water) = api.listening("wes", Role::Dispatcher, "200").await;

        let mut g = gw(&api.c, 1).await;
        let t5 = reg(&mut g, 5).await;
        let txn = g
            .request(Message::EmergencyCallReq {
                tmsi: t5,
                talkgroup: tg(10),
            })
            .await
            .unwrap();
        let (call, _) = grant_of(&until(&mut g, |f| f.txn == txn).await);
        let five = format!("unit:{}", imsi(5));
        let a = api
            .alarm_until(&pat, "", |a| a["kind"] == "emergency" && a["subject"] == five)
            .await;
        assert_eq!(
            (a["imsi"].clone(), a["unit"].clone(), a["state"].clone()),
            (
                json!(imsi(5).to_string()),
                json!({"fleet": 100, "member": 5}),
                json!("raised")
            )
        );
        assert!(a["detail"].as_str().unwrap().contains("100/5"), "{a}");
        let id = a["id"].clone();
        police.until(alarm_event("raised", id.clone())).await;

        // Another fleet's dispatcher does not see it, nor may acknowledge it; but sees
        // the infrastructure's alarms.
        let out = trunkd::controller::Command::SlotOutOfService {
            site: site(2),
            carrier: 0,
            slot: Some(1),
        };
        api.c.handle().command("test", out).await.unwrap();
        let (_, before) = water
            .until(|e| e.event == "alarm" && e.data["alarm"]["kind"] == "slot_out_of_service")
            .await;
        assert!(
            !before
                .iter()
                .any(|e| e.event == "alarm" && e.data["alarm"]["id"] == id),
            "{before:?}"
        );
        let theirs = api.alarms(&wes, "").await;
        let kinds: Vec<&Value> = theirs["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["kind"])
            .collect();
        assert_eq!(kinds, vec!["slot_out_of_service"], "{theirs}");
        let (status, e) = error_of(api.acknowledge(&wes, &id).await).await;
        assert_eq!((status.as_u16(), e["code"].as_str()), (404, Some("not_found")));
        let r = api.get(&format!("/api/v1/alarms/{id}"), Some(&wes)).await;
        assert_eq!(r.status(), 404);
        let late = api.stream(Some(&wes), None, "").await.next().await.unwrap();
        assert_eq!(
            late.data["alarms"].as_array().unwrap().len(),
            1,
            "{:?}",
            late.data
        );

        // The call ends: the emergency's condition is gone; it still needs attention
        // until its fleet's dispatcher acknowledges it.
        let r = api
            .post(
                &format!("/api/v1/calls/{}/release", call.get()),
                Some(&pat),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), 204);
        police.until(alarm_event("cleared", id.clone())).await;
        let a = api.alarm_until(&pat, "", |a| a["id"] == id).await;
        assert_eq!(a["state"], "cleared");
        assert_eq!(api.acknowledge(&pat, &id).await.status(), 200);
        let history = api.alarms(&wes, "?finished=true").await;
        assert!(
            !history["alarms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["id"] == id),
            "{history}"
        );
        let history = api.alarms(&pat, "?finished=true").await;
        let a = history["alarms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap();
        assert_eq!(a["state"], "finished");
        api.c.stop().await;
    }
}
