//! TLS on the site link (`link.tls_cert`, `PROTOCOL.md §1`) over real sockets: a
//! gateway that trusts the controller's certificate links and registers units inside
//! TLS; a gateway speaking the other thing is told so; an untrusted certificate links
//! nothing; a new certificate is served after a reload, to new connections only.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use trunkd::link::gateway::{GatewayError, GatewayLink};
use trunkd::link::tls::GatewayTls;
use trunkd::protocol::Cause;

/// A self-signed certificate for `localhost` and its key, written as `name`.crt/.key.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// A controller on `db` (units 1..=3 provisioned) whose link speaks TLS with `cert`.
async fn tls_controller(db: &TestDb, cert: &Path, key: &Path) -> trunkd::controller::Running {
    provision_units(db, 3).await;
    let mut cfg = call_config(
        db,
        trunking(
            trunkd::core::trunking::TrunkingMode::Message,
            trunkd::core::trunking::EmergencyPolicy::Preempt,
        ),
    );
    cfg.link.tls_cert = Some(cert.to_path_buf());
    cfg.link.tls_key = Some(key.to_path_buf());
    trunkd::controller::start(cfg).await.unwrap()
}

/// Site `n`'s gateway linking to `c` over TLS, trusting the certificate in `trust`.
async fn over_tls(
    c: &trunkd::controller::Running,
    trust: &Path,
    n: u16,
) -> Result<GatewayLink, GatewayError> {
    let tls = GatewayTls::new(trust, "localhost").unwrap();
    GatewayLink::connect_with(c.link_addr, site(n), &key(n as u8), Some(&tls)).await
}

#[tokio::test]
async fn a_gateway_links_and_registers_over_tls_and_a_plain_one_is_told_tls_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_file) = certificate(dir.path(), "link");
    let db = TestDb::sqlite();
    let c = tls_controller(&db, &cert, &key_file).await;

    let mut g = over_tls(&c, &cert, 1).await.unwrap();
    let tmsis = reg_all(&mut g, 2).await;
    assert_eq!(tmsis.len(), 2);

    let plain = GatewayLink::connect(c.link_addr, site(2), &key(2)).await;
    let err = plain.err().expect("a plain link on a TLS port");
    assert!(matches!(err, GatewayError::Rejected(Cause::TlsRequired)), "{err}");
    // A certificate the gateway does not trust links nothing.
    let (stranger, _) = certificate(dir.path(), "stranger");
    let err = over_tls(&c, &stranger, 2)
        .await
        .err()
        .expect("linked to an untrusted certificate");
    assert!(
        matches!(&err, GatewayError::Tls(m) if m.contains("certificate")),
        "{err}"
    );
    // The link made over TLS is still up and serving.
    reg(&mut g, 3).await;
    c.stop().await;
}

#[tokio::test]
async fn a_tls_gateway_on_a_plain_port_is_told_the_port_does_not_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate(dir.path(), "link");
    let db = TestDb::sqlite();
    let c = call_controller(
        &db,
        trunking(
            trunkd::core::trunking::TrunkingMode::Message,
            trunkd::core::trunking::EmergencyPolicy::Preempt,
        ),
    )
    .await;
    let err = over_tls(&c, &cert, 1)
        .await
        .err()
        .expect("a TLS link on a plain port");
    assert!(
        matches!(&err, GatewayError::Tls(m) if m.contains("does not speak TLS")),
        "{err}"
    );
    // Plain gateways still link.
    gw(&c, 1).await;
    c.stop().await;
}

#[tokio::test]
async fn a_reloaded_certificate_is_served_to_new_connections_and_links_up_stay() {
    let dir = tempfile::tempdir().unwrap();
    let (first, first_key) = certificate(dir.path(), "first");
    let db = TestDb::sqlite();
    let c = tls_controller(&db, &first, &first_key).await;
    let mut g = over_tls(&c, &first, 1).await.unwrap();
    reg(&mut g, 1).await;

    let (second, second_key) = certificate(dir.path(), "second");
    let tls = c.link_tls.clone().unwrap();
    // Files that cannot be read change nothing.
    assert!(tls.reload(&dir.path().join("missing.crt"), &second_key).is_err());
    assert!(over_tls(&c, &first, 2).await.is_ok());

    tls.reload(&second, &second_key).unwrap();
    let err = over_tls(&c, &first, 2)
        .await
        .err()
        .expect("the old certificate is still served");
    assert!(matches!(err, GatewayError::Tls(_)), "{err}");
    let mut g2 = over_tls(&c, &second, 2).await.unwrap();
    reg(&mut g2, 2).await;
    // The link made under the first certificate goes on.
    reg(&mut g, 3).await;
    c.stop().await;
}
