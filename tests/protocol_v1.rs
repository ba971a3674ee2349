//! The decisions of PROTOCOL.md that a gateway author relies on, each shown over the real
//! link against a real HLR: permissions (§5.6), floor control, CALL_CANCEL, transaction
//! ids, talkgroup status and short data, the EMERGENCY flag, QUEUE_UPDATE, expired
//! challenges, REG_ACCEPT's talkgroups, call ids across restarts, talkgroups that do not
//! exist, shutdown, and inhibit / enable over the air (§5.4).

mod common;

use std::time::Duration;

use common::*;
use trunkd::config::{Config, TrunkingSection};
use trunkd::controller::{start, Running};
use trunkd::core::trunking::{EmergencyPolicy, TrunkingMode};
use trunkd::hlr::Permissions;
use trunkd::link::gateway::{GatewayError, GatewayLink};
use trunkd::protocol::{
    CallScope, Cause, FleetId, Frame, Identity, Message, MessageType, ShortData, TalkgroupList, Target, Tmsi,
    CONTROLLER_TXN_BASE,
};

const NONE: Permissions = Permissions {
    group_call: false,
    private_call: false,
    emergency: false,
    short_data: false,
    interconnect: false,
};

/// Provisions subscriber `n` on a running controller and waits until it knows it.
async fn add_unit(c: &Running, n: u8, permissions: Permissions, talkgroups: &[u16]) {
    let mut s = new_subscriber(n);
    s.permissions = permissions;
    s.talkgroups = talkgroups.iter().map(|t| tg(*t)).collect();
    c.store.add_subscriber("test", s, "00101").await.unwrap();
    eventually(|| c.hlr.subscriber(&imsi(n.into())).is_some()).await;
}

/// Waits (generously) until `cond` holds.
async fn eventually(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition never became true");
}

/// Sends `msg` and returns the frame answering it, acknowledging deliveries meanwhile
/// as a gateway does.
async fn ask(g: &mut GatewayLink, msg: Message) -> Frame {
    let txn = g.request(msg).await.unwrap();
    loop {
        let f = next_service(g).await.unwrap();
        if f.txn == txn {
            return f;
        }
        let answer = match f.msg {
            Message::CallAlert { .. } => Message::Ack {
                acked: MessageType::CallAlert,
            },
            Message::StatusDelivery { .. } => Message::Ack {
                acked: MessageType::StatusDelivery,
            },
            Message::ShortDataDelivery { id, .. } => Message::ShortDataAck { id },
            _ => continue,
        };
        g.send(Frame::new(f.txn, answer)).await.unwrap();
    }
}

/// A unit without the permission `field` selects is refused "service not permitted"; a
/// unit with only that permission is not refused.
async fn needs_permission(field: fn(&mut Permissions) -> &mut bool, request: fn(Tmsi) -> Message) {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let (mut without, mut only) = (Permissions::ALL, NONE);
    *field(&mut without) = false;
    *field(&mut only) = true;
    add_unit(&c, 9, without, &[10, 11, 12]).await;
    add_unit(&c, 10, only, &[10, 11, 12]).await;
    let mut g = gw(&c, 1).await;
    reg(&mut g, 1).await; // the target of unit-addressed requests
    let (t9, t10) = (reg(&mut g, 9).await, reg(&mut g, 10).await);
    let ty = request(t9).message_type();
    assert_eq!(
        ask(&mut g, request(t9)).await.msg,
        deny(ty, Cause::ServiceNotPermitted)
    );
    let allowed = ask(&mut g, request(t10)).await;
    assert!(
        !matches!(allowed.msg, Message::Deny { .. }),
        "{ty} with only its permission: {allowed:?}"
    );
    c.stop().await;
}

fn talkgroup_10() -> Target {
    Target::Talkgroup {
        fleet: FleetId::new(100).unwrap(),
        talkgroup: tg(10),
    }
}

#[tokio::test]
async fn a_group_call_needs_the_group_permission() {
    needs_permission(
        |p| &mut p.group_call,
        |tmsi| Message::GroupCallReq {
            tmsi,
            talkgroup: tg(10),
            scope: CallScope::Local,
        },
    )
    .await;
}

#[tokio::test]
async fn affiliation_needs_the_group_permission() {
    needs_permission(
        |p| &mut p.group_call,
        |tmsi| Message::Affiliate {
            tmsi,
            talkgroups: TalkgroupList::new(tg(11), vec![tg(10)]).unwrap(),
        },
    )
    .await;
}

#[tokio::test]
async fn a_private_call_needs_the_private_permission() {
    needs_permission(
        |p| &mut p.private_call,
        |tmsi| Message::PrivateCallReq {
            tmsi,
            target: unit(1),
        },
    )
    .await;
}

#[tokio::test]
async fn a_call_alert_needs_the_private_permission() {
    needs_permission(
        |p| &mut p.private_call,
        |tmsi| Message::CallAlertReq {
            tmsi,
            target: unit(1),
        },
    )
    .await;
}

#[tokio::test]
async fn an_emergency_call_needs_the_emergency_permission() {
    needs_permission(
        |p| &mut p.emergency,
        |tmsi| Message::EmergencyCallReq {
            tmsi,
            talkgroup: tg(10),
        },
    )
    .await;
}

#[tokio::test]
async fn a_status_needs_the_data_permission() {
    needs_permission(
        |p| &mut p.short_data,
        |tmsi| Message::StatusReq {
            tmsi,
            target: Target::Unit(unit(1)),
            code: 7,
        },
    )
    .await;
}

#[tokio::test]
async fn short_data_needs_the_data_permission() {
    needs_permission(
        |p| &mut p.short_data,
        |tmsi| Message::ShortDataReq {
            tmsi,
            target: Target::Unit(unit(1)),
            data: ShortData::new(b"hi".to_vec()).unwrap(),
        },
    )
    .await;
}

#[tokio::test]
async fn a_talkgroup_that_does_not_exist_is_an_invalid_target() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t = reg(&mut g, 1).await;
    let call = |talkgroup| Message::GroupCallReq {
        tmsi: t,
        talkgroup: tg(talkgroup),
        scope: CallScope::Local,
    };
    let ty = MessageType::GroupCallReq;
    assert_eq!(ask(&mut g, call(99)).await.msg, deny(ty, Cause::InvalidTarget));
    // Talkgroup 13 exists, but unit 1 is not permitted on it.
    assert_eq!(
        ask(&mut g, call(13)).await.msg,
        deny(ty, Cause::TalkgroupNotPermitted)
    );
    let affiliate = Message::Affiliate {
        tmsi: t,
        talkgroups: TalkgroupList::new(tg(99), vec![]).unwrap(),
    };
    assert_eq!(
        ask(&mut g, affiliate).await.msg,
        deny(MessageType::Affiliate, Cause::InvalidTarget)
    );
    c.stop().await;
}

#[tokio::test]
async fn the_caller_holds_the_floor_from_the_grant_and_a_press_meanwhile_is_floor_taken() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 2).await;
    let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    let press = |tmsi| Message::PttPress { call, tmsi };
    assert_eq!(
        ask(&mut g, press(t[1])).await.msg,
        deny(MessageType::PttPress, Cause::FloorTaken)
    );
    // The holder pressing again is harmless.
    let again = ask(&mut g, press(t[0])).await;
    assert_eq!(
        again.msg,
        Message::PttGrant {
            call,
            talker: unit(1)
        }
    );
    // A release by someone who does not hold the floor is acknowledged and changes nothing.
    let release = |tmsi| Message::PttRelease { call, tmsi };
    let ack = Message::Ack {
        acked: MessageType::PttRelease,
    };
    assert_eq!(ask(&mut g, release(t[1])).await.msg, ack);
    assert_eq!(
        ask(&mut g, press(t[1])).await.msg,
        deny(MessageType::PttPress, Cause::FloorTaken)
    );
    assert_eq!(ask(&mut g, release(t[0])).await.msg, ack);
    assert_eq!(
        ask(&mut g, press(t[1])).await.msg,
        Message::PttGrant {
            call,
            talker: unit(2)
        }
    );
    // No such call.
    let none = Message::PttPress {
        call: trunkd::protocol::CallId::new(call.get().wrapping_add(1000)).unwrap(),
        tmsi: t[1],
    };
    assert_eq!(
        ask(&mut g, none).await.msg,
        deny(MessageType::PttPress, Cause::InvalidTarget)
    );
    c.stop().await;
}

#[tokio::test]
async fn controller_originated_frames_start_their_own_transactions() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let (mut g1, mut g2) = (gw(&c, 1).await, gw(&c, 2).await);
    let t1 = reg(&mut g1, 1).await;
    reg(&mut g2, 2).await;
    // Unit 2 at site 2 is affiliated to talkgroup 10: a wide-area call reaches it.
    let (req, f) = group_call(&mut g1, t1, 10, CallScope::WideArea).await;
    assert_eq!(f.txn, req, "the caller's grant answers the request");
    let (call, _) = grant_of(&f);
    let other = until(&mut g2, |f| matches!(f.msg, Message::ChannelGrant { .. })).await;
    assert!(other.txn >= CONTROLLER_TXN_BASE, "{other:?}");
    g1.request(Message::CallEnd {
        call,
        cause: Cause::Normal,
    })
    .await
    .unwrap();
    for g in [&mut g1, &mut g2] {
        let end = until(g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
        assert!(end.txn >= CONTROLLER_TXN_BASE && end.txn != req, "{end:?}");
    }
    c.stop().await;
}

#[tokio::test]
async fn a_private_call_within_one_site_is_one_grant_naming_the_target() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 2).await;
    let (txn, f) = private_call(&mut g, t[0], 2).await;
    assert_eq!(f.txn, txn);
    let (_, sites) = grant_of(&f);
    assert_eq!(sites.len(), 1, "{f:?}");
    assert!(
        matches!(f.msg, Message::ChannelGrant { target: Target::Unit(u), .. } if u == unit(2)),
        "{f:?}"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_talkgroup_status_skips_its_sender_and_is_acknowledged_after_the_deliveries() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 3).await;
    let txn = g
        .request(Message::StatusReq {
            tmsi: t[0],
            target: talkgroup_10(),
            code: 42,
        })
        .await
        .unwrap();
    let mut heard = Vec::new();
    loop {
        let f = next_service(&mut g).await.unwrap();
        match f.msg {
            Message::StatusDelivery { tmsi, .. } => heard.push(tmsi),
            Message::Ack { .. } if f.txn == txn => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    heard.sort();
    let mut others = vec![t[1], t[2]];
    others.sort();
    assert_eq!(
        heard, others,
        "every affiliated unit but the sender, before the ACK"
    );
    c.stop().await;
}

#[tokio::test]
async fn talkgroup_short_data_is_not_stored_for_its_sender() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t = reg(&mut g, 1).await;
    let sent = Message::ShortDataReq {
        tmsi: t,
        target: talkgroup_10(),
        data: ShortData::new(b"all units".to_vec()).unwrap(),
    };
    assert_eq!(
        ask(&mut g, sent).await.msg,
        Message::Ack {
            acked: MessageType::ShortDataReq
        }
    );
    assert!(c.store.pending_short_data(imsi(1)).await.unwrap().is_empty());
    assert_eq!(c.store.pending_short_data(imsi(2)).await.unwrap().len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn every_frame_of_an_emergency_carries_the_flag_even_when_the_request_lacked_it() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, trunking(TrunkingMode::Message, EmergencyPolicy::QueueHead)).await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 4).await;
    // Fill site 1's two traffic slots.
    let mut calls = Vec::new();
    for (i, talkgroup) in [(0, 10), (1, 11)] {
        let (_, f) = group_call(&mut g, t[i], talkgroup, CallScope::Local).await;
        calls.push(grant_of(&f).0);
        assert!(!f.emergency);
    }
    // An emergency sent without the flag is still an emergency; it waits at the head.
    let emergency = g
        .request(Message::EmergencyCallReq {
            tmsi: t[2],
            talkgroup: tg(12),
        })
        .await
        .unwrap();
    let queued = until(&mut g, |f| f.txn == emergency).await;
    assert!(
        matches!(queued.msg, Message::Queued { .. }) && queued.emergency,
        "{queued:?}"
    );
    // The first call's end is not an emergency frame; the grant that follows is.
    g.request(Message::CallEnd {
        call: calls[0],
        cause: Cause::Normal,
    })
    .await
    .unwrap();
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert!(!end.emergency, "{end:?}");
    let grant = until(&mut g, |f| f.txn == emergency).await;
    grant_of(&grant);
    assert!(grant.emergency, "{grant:?}");
    c.stop().await;
}

#[tokio::test]
async fn an_emergency_grant_and_its_end_carry_the_flag() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t = reg(&mut g, 1).await;
    let txn = g
        .request(Message::EmergencyCallReq {
            tmsi: t,
            talkgroup: tg(10),
        })
        .await
        .unwrap();
    let grant = until(&mut g, |f| f.txn == txn).await;
    let (call, _) = grant_of(&grant);
    assert!(grant.emergency, "{grant:?}");
    let release = ask(&mut g, Message::PttRelease { call, tmsi: t }).await;
    assert!(
        release.emergency,
        "the ACK of a release on an emergency call: {release:?}"
    );
    g.request(Message::CallEnd {
        call,
        cause: Cause::Normal,
    })
    .await
    .unwrap();
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert!(end.emergency, "{end:?}");
    c.stop().await;
}

#[tokio::test]
async fn queue_updates_tell_every_change_of_position_up_and_down() {
    let db = TestDb::sqlite();
    let c = call_controller(
        &db,
        trunking(TrunkingMode::Transmission, EmergencyPolicy::Preempt),
    )
    .await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 7).await; // priority = member number
    let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await;
    let (first_call, _) = grant_of(&f);
    let (_, f) = group_call(&mut g, t[1], 11, CallScope::Local).await;
    grant_of(&f);
    // Unit 3 (priority 3) waits first.
    let (r3, f) = group_call(&mut g, t[2], 12, CallScope::Local).await;
    assert_eq!(f.msg, Message::Queued { position: qpos(1) });
    // Unit 4 (priority 4) queues ahead: it hears QUEUED 1, unit 3 moves down to 2.
    let r4 = g
        .request(Message::PrivateCallReq {
            tmsi: t[3],
            target: unit(5),
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(until(&mut g, |f| f.txn == r3 || f.txn == r4).await);
    }
    got.sort_by_key(|f| f.txn);
    assert_eq!(
        got,
        vec![
            Frame::new(r3, Message::QueueUpdate { position: qpos(2) }),
            Frame::new(r4, Message::Queued { position: qpos(1) }),
        ]
    );
    // A slot frees: unit 4 is served, unit 3 moves up to 1.
    g.request(Message::PttRelease {
        call: first_call,
        tmsi: t[0],
    })
    .await
    .unwrap();
    let served = until(&mut g, |f| f.txn == r4).await;
    grant_of(&served);
    assert_eq!(
        until(&mut g, |f| f.txn == r3).await.msg,
        Message::QueueUpdate { position: qpos(1) }
    );
    c.stop().await;
}

fn qpos(p: u16) -> trunkd::protocol::QueuePosition {
    trunkd::protocol::QueuePosition::new(p).unwrap()
}

#[tokio::test]
async fn nothing_is_sent_when_a_challenge_expires_only_the_late_answer_is_refused() {
    let db = TestDb::sqlite();
    provision_calls(&db).await;
    let mut cfg = call_config(&db, TrunkingSection::default());
    cfg.registration.challenge_timeout_ms = 100;
    let c = start(cfg).await.unwrap();
    let mut g = gw(&c, 1).await;
    let txn = g
        .request(Message::RegRequest {
            identity: Identity::Imsi(imsi(1)),
        })
        .await
        .unwrap();
    let rand = match until(&mut g, |f| f.txn == txn).await.msg {
        Message::AuthChallenge { rand } => rand,
        other => panic!("{other:?}"),
    };
    // Well past expiry: nothing but keepalives arrives.
    let silence = tokio::time::timeout(Duration::from_millis(400), next_service(&mut g)).await;
    assert!(silence.is_err(), "the controller sent {silence:?} at expiry");
    let keys = radio_keys(1);
    let res = trunkd::core::auth::unit_response(&keys.k, &keys.opc, &rand);
    g.send(Frame::new(txn, Message::AuthResponse { res }))
        .await
        .unwrap();
    assert_eq!(
        until(&mut g, |f| f.txn == txn).await.msg,
        Message::RegReject {
            cause: Cause::ChallengeExpired
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn reg_accept_lists_the_first_four_permitted_talkgroups_and_any_may_be_affiliated() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    add_unit(&c, 9, Permissions::ALL, &[14, 10, 11, 12, 13]).await;
    let mut g = gw(&c, 1).await;
    let f = trunkd::sim::register(&mut g, Identity::Imsi(imsi(9)), &radio_keys(9))
        .await
        .unwrap();
    let Message::RegAccept { tmsi, talkgroups, .. } = f.msg else {
        panic!("{f:?}")
    };
    assert_eq!(
        talkgroups,
        TalkgroupList::new(tg(14), vec![tg(10), tg(11), tg(12)]).unwrap()
    );
    let fifth = TalkgroupList::new(tg(13), vec![tg(14)]).unwrap();
    assert_eq!(
        ask(
            &mut g,
            Message::Affiliate {
                tmsi,
                talkgroups: fifth.clone()
            }
        )
        .await
        .msg,
        Message::AffiliateAccept { talkgroups: fifth }
    );
    c.stop().await;
}

#[tokio::test]
async fn call_ids_are_not_reused_after_a_restart() {
    for db in TestDb::all().await {
        provision_calls(&db).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let c = start(call_config(&db, TrunkingSection::default())).await.unwrap();
            let mut g = gw(&c, 1).await;
            let t = reg(&mut g, 1).await;
            let (_, f) = group_call(&mut g, t, 10, CallScope::Local).await;
            ids.push(grant_of(&f).0);
            c.stop().await;
        }
        assert_ne!(ids[0], ids[1], "{}", db.name);
        let store = db.open().await;
        let mut recorded: Vec<i64> = store
            .call_records(10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.call_id)
            .collect();
        recorded.sort();
        recorded.dedup();
        assert_eq!(recorded.len(), 2, "{}: {recorded:?}", db.name);
        store.close().await;
    }
}

#[tokio::test]
async fn at_shutdown_every_call_and_waiting_request_ends_before_link_close() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 3).await;
    let mut calls = Vec::new();
    for (i, talkgroup) in [(0, 10), (1, 11)] {
        let (_, f) = group_call(&mut g, t[i], talkgroup, CallScope::Local).await;
        calls.push(grant_of(&f).0);
    }
    let (waiting, f) = group_call(&mut g, t[2], 12, CallScope::Local).await;
    assert!(matches!(f.msg, Message::Queued { .. }));
    let stopping = tokio::spawn(c.stop());
    let mut ended = Vec::new();
    let mut refused = false;
    let close = loop {
        match next_service(&mut g).await {
            Ok(f) => match f.msg {
                Message::CallEnd { call, cause } => {
                    assert_eq!(cause, Cause::ShuttingDown);
                    ended.push(call);
                }
                Message::Deny { cause, .. } if f.txn == waiting => {
                    assert_eq!(cause, Cause::ShuttingDown);
                    refused = true;
                }
                other => panic!("unexpected {other:?}"),
            },
            Err(e) => break e,
        }
    };
    assert!(
        matches!(close, GatewayError::Closed(Cause::ShuttingDown)),
        "{close:?}"
    );
    ended.sort();
    calls.sort();
    assert_eq!(ended, calls, "every running call ended before LINK_CLOSE");
    assert!(refused, "the waiting request was refused before LINK_CLOSE");
    stopping.await.unwrap();
}

/// A controller whose radio commands time out quickly.
async fn inhibit_controller(db: &TestDb) -> Running {
    provision_calls(db).await;
    let mut cfg: Config = call_config(db, TrunkingSection::default());
    cfg.messaging.radio_command_timeout_ms = 150;
    cfg.messaging.radio_command_attempts = 3;
    start(cfg).await.unwrap()
}

/// Waits for the audit entry `action` about subscriber `n`.
async fn audited(c: &Running, action: &str, n: u64) {
    let object = format!("subscriber:{}", imsi(n));
    tokio::time::timeout(PATIENCE, async {
        loop {
            let log = c.store.audit_since(0, 10_000).await.unwrap();
            if log.iter().any(|e| e.action == action && e.object == object) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no audit entry {action} for {object}"));
}

#[tokio::test]
async fn inhibiting_a_unit_ends_its_call_stuns_it_and_it_leaves_the_vlr_on_the_ack() {
    for db in TestDb::all().await {
        let c = inhibit_controller(&db).await;
        let mut g = gw(&c, 1).await;
        let t = reg_all(&mut g, 2).await;
        let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await;
        let (call, _) = grant_of(&f);
        c.store.set_inhibited("operator", imsi(1), true).await.unwrap();
        let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
        assert_eq!(
            end.msg,
            Message::CallEnd {
                call,
                cause: Cause::UnitInhibited
            }
        );
        let stun = until(&mut g, |f| matches!(f.msg, Message::Inhibit { .. })).await;
        assert_eq!(stun.msg, Message::Inhibit { tmsi: t[0] });
        assert!(stun.txn >= CONTROLLER_TXN_BASE);
        // Until it is stunned, the unit gets nothing.
        let refused = ask(
            &mut g,
            Message::GroupCallReq {
                tmsi: t[0],
                talkgroup: tg(10),
                scope: CallScope::Local,
            },
        )
        .await;
        assert_eq!(refused.msg, deny(MessageType::GroupCallReq, Cause::UnitInhibited));
        g.send(Frame::new(stun.txn, Message::InhibitAck { tmsi: t[0] }))
            .await
            .unwrap();
        eventually(|| c.vlr.get(&imsi(1)).is_none()).await;
        audited(&c, "subscriber.inhibit.acknowledged", 1).await;
        // The other unit is untouched; the inhibited one cannot register again.
        assert!(c.vlr.get(&imsi(2)).is_some(), "{}", db.name);
        let again = trunkd::sim::register(&mut g, Identity::Imsi(imsi(1)), &radio_keys(1))
            .await
            .unwrap();
        assert_eq!(
            again.msg,
            Message::RegReject {
                cause: Cause::UnitInhibited
            }
        );

        // Enable: ENABLE goes to its last site with the TMSI it had there.
        tokio::time::timeout(PATIENCE, async {
            while c.store.last_tmsi(imsi(1)).await.unwrap() != Some(t[0]) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("last TMSI written behind");
        c.store.set_inhibited("operator", imsi(1), false).await.unwrap();
        let revive = until(&mut g, |f| matches!(f.msg, Message::Enable { .. })).await;
        assert_eq!(revive.msg, Message::Enable { tmsi: t[0] });
        g.send(Frame::new(revive.txn, Message::EnableAck { tmsi: t[0] }))
            .await
            .unwrap();
        audited(&c, "subscriber.enable.acknowledged", 1).await;
        reg(&mut g, 1).await;
        c.stop().await;
    }
}

#[tokio::test]
async fn an_unanswered_inhibit_is_sent_again_on_its_transaction_then_the_unit_leaves_anyway() {
    let db = TestDb::sqlite();
    let c = inhibit_controller(&db).await;
    let mut g = gw(&c, 1).await;
    let t = reg(&mut g, 1).await;
    c.store.set_inhibited("operator", imsi(1), true).await.unwrap();
    let mut sends = Vec::new();
    for _ in 0..3 {
        sends.push(until(&mut g, |f| matches!(f.msg, Message::Inhibit { .. })).await);
    }
    assert!(sends
        .iter()
        .all(|f| f.txn == sends[0].txn && f.msg == Message::Inhibit { tmsi: t }));
    eventually(|| c.vlr.get(&imsi(1)).is_none()).await;
    audited(&c, "subscriber.inhibit.unacknowledged", 1).await;
    // No fourth send.
    let more = tokio::time::timeout(Duration::from_millis(400), next_service(&mut g)).await;
    assert!(more.is_err(), "{more:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_location_update_within_the_clone_window_is_a_move_not_a_clone() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await; // clone window 2 s
    let (mut g1, mut g2) = (gw(&c, 1).await, gw(&c, 2).await);
    let t1 = reg(&mut g1, 1).await;
    let moved = Message::LocationUpdate {
        tmsi: t1,
        reason: trunkd::protocol::LocationReason::SiteChange,
    };
    let (_, f) = trunkd::sim::authenticate(&mut g2, moved, &radio_keys(1))
        .await
        .unwrap();
    assert!(matches!(f.msg, Message::LocationAccept { .. }), "{f:?}");
    assert_eq!(c.vlr.get(&imsi(1)).unwrap().site, site(2));
    // A power-on registration at site 1 now, within the window, is a suspected clone.
    let f = trunkd::sim::register(&mut g1, Identity::Imsi(imsi(1)), &radio_keys(1))
        .await
        .unwrap();
    assert_eq!(
        f.msg,
        Message::RegReject {
            cause: Cause::CloneSuspected
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn a_removed_subscriber_leaves_the_air_and_its_call_ends() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t = reg(&mut g, 1).await;
    let (_, f) = group_call(&mut g, t, 10, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    c.store.remove_subscriber("operator", imsi(1)).await.unwrap();
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call,
            cause: Cause::PartyDeregistered
        }
    );
    eventually(|| c.vlr.get(&imsi(1)).is_none()).await;
    c.stop().await;
}

#[tokio::test]
async fn a_site_removed_while_linked_ends_its_calls_and_is_closed_unknown_site() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let (mut g1, mut g2) = (gw(&c, 1).await, gw(&c, 2).await);
    let t1 = reg(&mut g1, 1).await;
    reg(&mut g2, 2).await;
    let (_, f) = group_call(&mut g1, t1, 10, CallScope::WideArea).await;
    let (call, sites) = grant_of(&f);
    assert_eq!(sites.len(), 2, "{f:?}");
    c.store.remove_site("operator", site(2)).await.unwrap();
    let close = loop {
        match next_service(&mut g2).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(close, GatewayError::Closed(Cause::UnknownSite)),
        "{close:?}"
    );
    // The call goes on at site 1 without site 2, and the site cannot link again.
    let probe = ask(&mut g1, Message::PttPress { call, tmsi: t1 }).await;
    assert!(matches!(probe.msg, Message::PttGrant { .. }), "{probe:?}");
    assert!(GatewayLink::connect(c.link_addr, site(2), &key(2)).await.is_err());
    c.stop().await;
}
