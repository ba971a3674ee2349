//! Registration and authentication over the real link, against a real HLR (SQLite, and
//! PostgreSQL when `TEST_DATABASE_URL` is set): by IMEI, IMSI and TMSI; every refusal
//! with its cause; TMSI renewal; moves; clone detection; deregistration; affiliation;
//! periodic expiry; restarts.

mod common;

use std::time::Duration;

use common::*;
use trunkd::config::{Config, RegistrationConfig};
use trunkd::controller::{start, Running};
use trunkd::protocol::{Cause, Frame, Identity, LocationReason, Message, MessageType, TalkgroupList, Tmsi};
use trunkd::sim::{accepted_tmsi, authenticate, register};

fn config(db: &TestDb) -> Config {
    Config {
        link: fast_config(),
        database: db.database_config(),
        registration: RegistrationConfig {
            challenge_timeout_ms: 2000,
            clone_window_ms: 300,
            location_flush_ms: 50,
            hlr_refresh_ms: 50,
            ..RegistrationConfig::default()
        },
        ..Config::default()
    }
}

/// A controller over a database provisioned with fleet 100, sites 1-2 and subscribers 1-3.
async fn controller(db: &TestDb, cfg: Config) -> Running {
    let store = db.open().await;
    provision_basics(&store).await;
    for n in 1..=3 {
        store
            .add_subscriber("test", new_subscriber(n), "00101")
            .await
            .unwrap();
    }
    store.close().await;
    start(cfg).await.unwrap()
}

fn reject(cause: Cause) -> Message {
    Message::RegReject { cause }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition never became true");
}

#[tokio::test]
async fn first_registration_by_imei_returns_imsi_individual_id_tmsi_and_talkgroups() {
    for db in TestDb::all().await {
        let c = controller(&db, config(&db)).await;
        let mut g = gw(&c, 1).await;
        let sub = new_subscriber(1);
        let f = register(&mut g, Identity::Imei(sub.imei), &radio_keys(1))
            .await
            .unwrap();
        let Message::RegAccept {
            imsi: got,
            individual,
            tmsi,
            unit,
            talkgroups,
        } = f.msg
        else {
            panic!("{}: {f:?}", db.name)
        };
        assert_eq!(got, imsi(1));
        assert_eq!(individual.get(), 1);
        assert_eq!(unit, sub.unit);
        assert_eq!(
            talkgroups,
            TalkgroupList::new(tg(10), vec![tg(11), tg(12)]).unwrap()
        );
        let v = c.vlr.get(&imsi(1)).unwrap();
        assert_eq!((v.tmsi, v.site), (tmsi, site(1)));
        assert_eq!(c.vlr.imsi_of(tmsi), Some(imsi(1)));
        // Later registrations by IMSI and by TMSI.
        let f = register(&mut g, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap();
        let t2 = accepted_tmsi(&f).expect("accept by IMSI");
        let f = register(&mut g, Identity::Tmsi(t2), &radio_keys(1))
            .await
            .unwrap();
        let t3 = accepted_tmsi(&f).expect("accept by TMSI");
        assert!(tmsi != t2 && t2 != t3, "TMSI must change at every registration");
        assert_eq!(c.vlr.len(), 1);
        c.stop().await;
    }
}

#[tokio::test]
async fn the_old_tmsi_stops_working_at_once() {
    let db = TestDb::sqlite();
    let c = controller(&db, config(&db)).await;
    let mut g = gw(&c, 1).await;
    let old = accepted_tmsi(
        &register(&mut g, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap(),
    )
    .unwrap();
    let new = accepted_tmsi(
        &register(&mut g, Identity::Tmsi(old), &radio_keys(1))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_ne!(old, new);
    let f = register(&mut g, Identity::Tmsi(old), &radio_keys(1))
        .await
        .unwrap();
    assert_eq!(f.msg, reject(Cause::UnknownSubscriber));
    let lu = Message::LocationUpdate {
        tmsi: old,
        reason: LocationReason::Periodic,
    };
    assert_eq!(
        authenticate(&mut g, lu, &radio_keys(1)).await.unwrap().1.msg,
        reject(Cause::NotRegistered)
    );
    c.stop().await;
}

#[tokio::test]
async fn refusals_carry_their_own_cause_and_leave_the_vlr_alone() {
    for db in TestDb::all().await {
        let c = controller(&db, config(&db)).await;
        let mut g = gw(&c, 1).await;
        // Wrong key: the radio's K is not the provisioned one.
        let f = register(&mut g, Identity::Imsi(imsi(1)), &radio_keys(9))
            .await
            .unwrap();
        assert_eq!(f.msg, reject(Cause::AuthFailed), "{}", db.name);
        // Unknown IMSI and IMEI.
        let f = register(&mut g, Identity::Imsi(imsi(77)), &radio_keys(1))
            .await
            .unwrap();
        assert_eq!(f.msg, reject(Cause::UnknownSubscriber));
        let f = register(&mut g, Identity::Imei(imei(12_345)), &radio_keys(1))
            .await
            .unwrap();
        assert_eq!(f.msg, reject(Cause::UnknownSubscriber));
        // Unknown TMSI.
        let f = register(&mut g, Identity::Tmsi(Tmsi::new(4242).unwrap()), &radio_keys(1))
            .await
            .unwrap();
        assert_eq!(f.msg, reject(Cause::UnknownSubscriber));
        // Bad IMEI check digit.
        let good = new_subscriber(2).imei.to_string();
        let bad = format!("{}{}", &good[..14], (good.as_bytes()[14] - b'0' + 1) % 10);
        let f = register(
            &mut g,
            Identity::Imei(trunkd::protocol::Imei::parse(&bad).unwrap()),
            &radio_keys(2),
        )
        .await
        .unwrap();
        assert_eq!(f.msg, reject(Cause::BadImeiCheckDigit));
        // Inhibited: refused before any challenge.
        c.store.set_inhibited("test", imsi(3), true).await.unwrap();
        wait_until(|| c.hlr.subscriber(&imsi(3)).is_some_and(|s| s.inhibited)).await;
        let txn = g
            .request(Message::RegRequest {
                identity: Identity::Imsi(imsi(3)),
            })
            .await
            .unwrap();
        assert_eq!(
            next_service(&mut g).await.unwrap(),
            Frame::new(txn, reject(Cause::UnitInhibited))
        );
        assert!(c.vlr.is_empty(), "{}: a refusal changed the VLR", db.name);
        c.stop().await;
    }
}

#[tokio::test]
async fn a_challenge_answers_once() {
    let db = TestDb::sqlite();
    let c = controller(&db, config(&db)).await;
    let mut g = gw(&c, 1).await;
    let txn = g
        .request(Message::RegRequest {
            identity: Identity::Imsi(imsi(1)),
        })
        .await
        .unwrap();
    let Message::AuthChallenge { rand } = next_service(&mut g).await.unwrap().msg else {
        panic!()
    };
    let res = trunkd::core::auth::unit_response(&radio_keys(1).k, &radio_keys(1).opc, &rand);
    g.send(Frame::new(txn, Message::AuthResponse { res }))
        .await
        .unwrap();
    assert!(matches!(
        next_service(&mut g).await.unwrap().msg,
        Message::RegAccept { .. }
    ));
    let before = c.vlr.get(&imsi(1)).unwrap();
    // The same response again: replayed.
    g.send(Frame::new(txn, Message::AuthResponse { res }))
        .await
        .unwrap();
    assert_eq!(
        next_service(&mut g).await.unwrap(),
        Frame::new(txn, reject(Cause::NoChallengePending))
    );
    assert_eq!(c.vlr.get(&imsi(1)).unwrap(), before, "a replay changed the VLR");
    // A response on a transaction that never had a challenge.
    g.send(Frame::new(999, Message::AuthResponse { res }))
        .await
        .unwrap();
    assert_eq!(
        next_service(&mut g).await.unwrap(),
        Frame::new(999, reject(Cause::NoChallengePending))
    );
    c.stop().await;
}

#[tokio::test]
async fn a_late_response_is_refused_as_expired() {
    let db = TestDb::sqlite();
    let mut cfg = config(&db);
    cfg.registration.challenge_timeout_ms = 100;
    let c = controller(&db, cfg).await;
    let mut g = gw(&c, 1).await;
    let txn = g
        .request(Message::RegRequest {
            identity: Identity::Imsi(imsi(1)),
        })
        .await
        .unwrap();
    let Message::AuthChallenge { rand } = next_service(&mut g).await.unwrap().msg else {
        panic!()
    };
    skip(Duration::from_millis(250)).await;
    let res = trunkd::core::auth::unit_response(&radio_keys(1).k, &radio_keys(1).opc, &rand);
    g.send(Frame::new(txn, Message::AuthResponse { res }))
        .await
        .unwrap();
    assert_eq!(
        next_service(&mut g).await.unwrap(),
        Frame::new(txn, reject(Cause::ChallengeExpired))
    );
    assert!(c.vlr.is_empty());
    c.stop().await;
}

#[tokio::test]
async fn a_unit_moves_between_sites_and_its_last_location_is_kept() {
    for db in TestDb::all().await {
        let c = controller(&db, config(&db)).await;
        let mut g1 = gw(&c, 1).await;
        let mut g2 = gw(&c, 2).await;
        let t1 = accepted_tmsi(
            &register(&mut g1, Identity::Imsi(imsi(1)), &radio_keys(1))
                .await
                .unwrap(),
        )
        .unwrap();
        // Beyond the clone window, the unit turns up at site 2.
        skip(Duration::from_millis(400)).await;
        let lu = Message::LocationUpdate {
            tmsi: t1,
            reason: LocationReason::SiteChange,
        };
        let (_, f) = authenticate(&mut g2, lu, &radio_keys(1)).await.unwrap();
        let t2 = accepted_tmsi(&f).unwrap_or_else(|| panic!("{}: {f:?}", db.name));
        assert!(matches!(f.msg, Message::LocationAccept { .. }));
        assert_ne!(t1, t2);
        assert_eq!(c.vlr.get(&imsi(1)).unwrap().site, site(2));
        let store = c.store.clone();
        let mut found = None;
        for _ in 0..100 {
            found = store.last_location(imsi(1)).await.unwrap();
            if found.is_some_and(|(s, _)| s == site(2)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            found.map(|(s, _)| s),
            Some(site(2)),
            "{}: last location not written",
            db.name
        );
        c.stop().await;
    }
}

#[tokio::test]
async fn the_same_imsi_at_two_sites_at_once_is_a_suspected_clone() {
    for db in TestDb::all().await {
        let c = controller(&db, config(&db)).await;
        let mut g1 = gw(&c, 1).await;
        let mut g2 = gw(&c, 2).await;
        register(&mut g1, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap();
        let f = register(&mut g2, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap();
        assert_eq!(f.msg, reject(Cause::CloneSuspected), "{}", db.name);
        assert_eq!(
            c.vlr.get(&imsi(1)).unwrap().site,
            site(1),
            "the clone must not take over"
        );
        let store = c.store.clone();
        let mut audited = false;
        for _ in 0..100 {
            let log = store.audit_since(0, 1000).await.unwrap();
            if log
                .iter()
                .any(|e| e.action == "clone.suspected" && e.object == format!("subscriber:{}", imsi(1)))
            {
                audited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(audited, "{}: clone not in the audit log", db.name);
        c.stop().await;
    }
}

#[tokio::test]
async fn a_suspected_clone_may_be_allowed_by_config() {
    let db = TestDb::sqlite();
    let mut cfg = config(&db);
    cfg.registration.refuse_clones = false;
    let c = controller(&db, cfg).await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    register(&mut g1, Identity::Imsi(imsi(1)), &radio_keys(1))
        .await
        .unwrap();
    let f = register(&mut g2, Identity::Imsi(imsi(1)), &radio_keys(1))
        .await
        .unwrap();
    assert!(matches!(f.msg, Message::RegAccept { .. }), "{f:?}");
    assert_eq!(c.vlr.get(&imsi(1)).unwrap().site, site(2));
    c.stop().await;
}

#[tokio::test]
async fn deregistration_removes_the_unit() {
    let db = TestDb::sqlite();
    let c = controller(&db, config(&db)).await;
    let mut g = gw(&c, 1).await;
    let t = accepted_tmsi(
        &register(&mut g, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap(),
    )
    .unwrap();
    let txn = g.request(Message::Deregister { tmsi: t }).await.unwrap();
    assert_eq!(
        next_service(&mut g).await.unwrap(),
        Frame::new(
            txn,
            Message::Ack {
                acked: MessageType::Deregister
            }
        )
    );
    assert!(c.vlr.is_empty());
    assert_eq!(c.vlr.imsi_of(t), None);
    let txn = g.request(Message::Deregister { tmsi: t }).await.unwrap();
    let denied = deny(MessageType::Deregister, Cause::NotRegistered);
    assert_eq!(next_service(&mut g).await.unwrap(), Frame::new(txn, denied));
    c.stop().await;
}

#[tokio::test]
async fn affiliation_only_to_permitted_talkgroups() {
    let db = TestDb::sqlite();
    let c = controller(&db, config(&db)).await;
    let mut g = gw(&c, 1).await;
    let t = accepted_tmsi(
        &register(&mut g, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap(),
    )
    .unwrap();
    let ok = TalkgroupList::new(tg(12), vec![tg(10)]).unwrap();
    let txn = g
        .request(Message::Affiliate {
            tmsi: t,
            talkgroups: ok.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        next_service(&mut g).await.unwrap(),
        Frame::new(
            txn,
            Message::AffiliateAccept {
                talkgroups: ok.clone()
            }
        )
    );
    assert_eq!(c.vlr.get(&imsi(1)).unwrap().affiliation.to_list(), ok);
    // Talkgroup 13 exists in the fleet but this unit may not use it.
    let no = TalkgroupList::new(tg(10), vec![tg(13)]).unwrap();
    let txn = g
        .request(Message::Affiliate {
            tmsi: t,
            talkgroups: no,
        })
        .await
        .unwrap();
    let denied = deny(MessageType::Affiliate, Cause::TalkgroupNotPermitted);
    assert_eq!(next_service(&mut g).await.unwrap(), Frame::new(txn, denied));
    assert_eq!(
        c.vlr.get(&imsi(1)).unwrap().affiliation.to_list(),
        ok,
        "a refused affiliation changed the VLR"
    );
    // An unregistered TMSI.
    let txn = g
        .request(Message::Affiliate {
            tmsi: Tmsi::new(5).unwrap(),
            talkgroups: ok,
        })
        .await
        .unwrap();
    let denied = deny(MessageType::Affiliate, Cause::NotRegistered);
    assert_eq!(next_service(&mut g).await.unwrap(), Frame::new(txn, denied));
    c.stop().await;
}

#[tokio::test]
async fn silent_units_expire_and_their_last_location_stays() {
    let db = TestDb::sqlite();
    let mut cfg = config(&db);
    cfg.registration.periodic_registration_ms = 300;
    let c = controller(&db, cfg).await;
    let mut g = gw(&c, 2).await;
    register(&mut g, Identity::Imsi(imsi(1)), &radio_keys(1))
        .await
        .unwrap();
    assert_eq!(c.vlr.len(), 1);
    wait_until(|| c.vlr.is_empty()).await;
    let store = c.store.clone();
    c.stop().await;
    let store2 = db.open().await;
    assert_eq!(
        store2.last_location(imsi(1)).await.unwrap().map(|(s, _)| s),
        Some(site(2))
    );
    drop(store);
}

#[tokio::test]
async fn a_restart_keeps_everything_provisioned_and_flushes_locations() {
    for db in TestDb::all().await {
        let mut cfg = config(&db);
        cfg.registration.location_flush_ms = 60_000; // only the shutdown flush writes
        let c = controller(&db, cfg.clone()).await;
        let mut g = gw(&c, 2).await;
        register(&mut g, Identity::Imsi(imsi(2)), &radio_keys(2))
            .await
            .unwrap();
        c.stop().await;
        let c = start(cfg).await.unwrap();
        assert_eq!(c.hlr.subscriber_count(), 3, "{}", db.name);
        assert_eq!(
            c.store.last_location(imsi(2)).await.unwrap().map(|(s, _)| s),
            Some(site(2)),
            "{}",
            db.name
        );
        let mut g = gw(&c, 1).await;
        let f = register(&mut g, Identity::Imei(new_subscriber(3).imei), &radio_keys(3))
            .await
            .unwrap();
        assert!(matches!(f.msg, Message::RegAccept { .. }), "{}: {f:?}", db.name);
        c.stop().await;
    }
}

#[tokio::test]
async fn a_restart_keeps_the_units_on_the_air_under_their_tmsis() {
    for db in TestDb::all().await {
        let cfg = config(&db);
        let c = controller(&db, cfg.clone()).await;
        let mut g1 = gw(&c, 1).await;
        let t1 = reg(&mut g1, 1).await;
        let t3 = reg(&mut g1, 3).await;
        let mut g2 = gw(&c, 2).await;
        reg(&mut g2, 2).await;
        let list = TalkgroupList::new(tg(12), vec![tg(10)]).unwrap();
        let txn = g1
            .request(Message::Affiliate {
                tmsi: t1,
                talkgroups: list.clone(),
            })
            .await
            .unwrap();
        let accepted = next_service(&mut g1).await.unwrap();
        assert_eq!(accepted.txn, txn);
        assert!(matches!(accepted.msg, Message::AffiliateAccept { .. }));
        let txn3 = g1.request(Message::Deregister { tmsi: t3 }).await.unwrap();
        assert_eq!(next_service(&mut g1).await.unwrap().txn, txn3);
        let before = c.vlr.get(&imsi(1)).unwrap();
        c.stop().await;
        // Removed from the HLR while no controller runs: it must register again.
        let other = db.open().await;
        assert_eq!(other.units_on_air(0).await.unwrap().len(), 2, "{}", db.name);
        other.remove_subscriber("test", imsi(2)).await.unwrap();
        other.close().await;

        let c = start(cfg.clone()).await.unwrap();
        assert_eq!(c.vlr.len(), 1, "{}", db.name);
        let after = c.vlr.get(&imsi(1)).unwrap();
        assert_eq!(
            (
                after.tmsi,
                after.site,
                after.fleet,
                after.affiliation,
                after.ck,
                after.ik
            ),
            (
                before.tmsi,
                before.site,
                before.fleet,
                before.affiliation,
                before.ck,
                before.ik
            ),
            "{}",
            db.name
        );
        assert_eq!(
            c.vlr.imsi_of(t3),
            None,
            "{}: a deregistered unit came back",
            db.name
        );
        // The unit is served under its TMSI without registering again.
        let mut g1 = gw(&c, 1).await;
        let again = g1
            .request(Message::Affiliate {
                tmsi: t1,
                talkgroups: list.clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            next_service(&mut g1).await.unwrap(),
            Frame::new(again, Message::AffiliateAccept { talkgroups: list }),
            "{}",
            db.name
        );
        c.stop().await;
        // The unit removed from the HLR is gone from the table too.
        let store = db.open().await;
        assert_eq!(store.units_on_air(0).await.unwrap().len(), 1, "{}", db.name);
        store.close().await;
    }
}

#[tokio::test]
async fn subscribers_added_while_running_can_register() {
    let db = TestDb::sqlite();
    let c = controller(&db, config(&db)).await;
    // Another process (the CLI) writes to the same database.
    let other = db.open().await;
    let added = other
        .add_subscriber("cli:test", new_subscriber(9), "00101")
        .await
        .unwrap();
    wait_until(|| c.hlr.subscriber(&added.imsi).is_some()).await;
    let mut g = gw(&c, 1).await;
    let f = register(&mut g, Identity::Imei(added.imei), &radio_keys(9))
        .await
        .unwrap();
    assert!(matches!(f.msg, Message::RegAccept { .. }), "{f:?}");
    other.close().await;
    c.stop().await;
}

#[tokio::test]
async fn two_simultaneous_registrations_of_one_imsi_cannot_both_pass() {
    for db in TestDb::all().await {
        let c = controller(&db, config(&db)).await;
        let mut g1 = gw(&c, 1).await;
        let mut g2 = gw(&c, 2).await;
        let keys = radio_keys(1);
        let (a, b) = tokio::join!(
            register(&mut g1, Identity::Imsi(imsi(1)), &keys),
            register(&mut g2, Identity::Imsi(imsi(1)), &keys)
        );
        let answers = [a.unwrap().msg, b.unwrap().msg];
        let accepted = answers
            .iter()
            .filter(|m| matches!(m, Message::RegAccept { .. }))
            .count();
        let clones = answers
            .iter()
            .filter(|m| **m == reject(Cause::CloneSuspected))
            .count();
        assert_eq!((accepted, clones), (1, 1), "{}: {answers:?}", db.name);
        c.stop().await;
    }
}

#[tokio::test]
async fn a_location_update_is_a_move_not_a_clone() {
    let db = TestDb::sqlite();
    let mut cfg = config(&db);
    cfg.registration.clone_window_ms = 60_000;
    let c = controller(&db, cfg).await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t = accepted_tmsi(
        &register(&mut g1, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap(),
    )
    .unwrap();
    let lu = Message::LocationUpdate {
        tmsi: t,
        reason: LocationReason::SiteChange,
    };
    let (_, f) = authenticate(&mut g2, lu, &radio_keys(1)).await.unwrap();
    assert!(matches!(f.msg, Message::LocationAccept { .. }), "{f:?}");
    assert_eq!(c.vlr.get(&imsi(1)).unwrap().site, site(2));
    c.stop().await;
}

#[tokio::test]
async fn an_inhibited_unit_already_on_the_air_is_refused_service() {
    let db = TestDb::sqlite();
    let c = controller(&db, config(&db)).await;
    let mut g = gw(&c, 1).await;
    let t = accepted_tmsi(
        &register(&mut g, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap(),
    )
    .unwrap();
    c.store.set_inhibited("test", imsi(1), true).await.unwrap();
    wait_until(|| c.hlr.subscriber(&imsi(1)).is_some_and(|s| s.inhibited)).await;
    let lu = Message::LocationUpdate {
        tmsi: t,
        reason: LocationReason::Periodic,
    };
    assert_eq!(
        authenticate(&mut g, lu, &radio_keys(1)).await.unwrap().1.msg,
        reject(Cause::UnitInhibited)
    );
    let list = TalkgroupList::new(tg(10), vec![]).unwrap();
    let txn = g
        .request(Message::Affiliate {
            tmsi: t,
            talkgroups: list,
        })
        .await
        .unwrap();
    let denied = deny(MessageType::Affiliate, Cause::UnitInhibited);
    assert_eq!(next_service(&mut g).await.unwrap(), Frame::new(txn, denied));
    c.stop().await;
}

#[tokio::test]
async fn only_the_units_own_site_can_deregister_it() {
    let db = TestDb::sqlite();
    let c = controller(&db, config(&db)).await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t = accepted_tmsi(
        &register(&mut g1, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap(),
    )
    .unwrap();
    let txn = g2.request(Message::Deregister { tmsi: t }).await.unwrap();
    let denied = deny(MessageType::Deregister, Cause::NotRegistered);
    assert_eq!(next_service(&mut g2).await.unwrap(), Frame::new(txn, denied));
    assert_eq!(c.vlr.len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn answers_from_a_gateway_are_not_denied() {
    let db = TestDb::sqlite();
    let c = controller(&db, config(&db)).await;
    let mut g = gw(&c, 1).await;
    g.send(Frame::new(
        0x8000_0009,
        Message::Ack {
            acked: MessageType::CallAlert,
        },
    ))
    .await
    .unwrap();
    // The next thing the gateway hears is the answer to its own keepalive, not a DENY.
    let txn = g.request(Message::Keepalive).await.unwrap();
    loop {
        let f = tokio::time::timeout(PATIENCE, g.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        match f.msg {
            Message::KeepaliveAck if f.txn == txn => break,
            Message::Keepalive | Message::KeepaliveAck => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    c.stop().await;
}

#[tokio::test]
async fn a_site_at_its_share_of_challenges_does_not_hold_up_another_sites_registrations() {
    let db = TestDb::sqlite();
    let mut cfg = config(&db);
    cfg.registration.max_pending_challenges_per_site = 2;
    let c = controller(&db, cfg).await;
    let mut noisy = gw(&c, 1).await;
    // Site 1 asks for three registrations and answers no challenge.
    let mut answers = Vec::new();
    for n in 1..=3 {
        let identity = Identity::Imsi(imsi(n));
        let txn = noisy.request(Message::RegRequest { identity }).await.unwrap();
        let f = next_service(&mut noisy).await.unwrap();
        assert_eq!(f.txn, txn);
        answers.push(f.msg);
    }
    assert!(matches!(answers[0], Message::AuthChallenge { .. }));
    assert!(matches!(answers[1], Message::AuthChallenge { .. }));
    assert_eq!(answers[2], reject(Cause::Busy));
    // Site 2 registers as usual meanwhile.
    let mut quiet = gw(&c, 2).await;
    reg(&mut quiet, 3).await;
    c.stop().await;
}
