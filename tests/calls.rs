//! Calls over the real link against a real HLR: group (local, wide area), private,
//! emergency under both policies, the busy queue, the three trunking modes, every end
//! cause, a faulty slot, and the call records.

mod common;

use std::time::Duration;

use common::*;
use trunkd::config::TrunkingSection;
use trunkd::core::trunking::{EmergencyPolicy, TrunkingMode};
use trunkd::protocol::{
    CallScope, CallType, Carrier, Cause, Frame, Message, MessageType, ResourceState, Slot, SlotSelector, Tmsi,
};
use trunkd::sim::accepted_tmsi;

#[tokio::test]
async fn a_local_group_call_is_granted_and_ends_at_ptt_release_in_transmission_trunking() {
    let db = TestDb::sqlite();
    let c = call_controller(
        &db,
        trunking(TrunkingMode::Transmission, EmergencyPolicy::Preempt),
    )
    .await;
    let mut g = gw(&c, 1).await;
    let t1 = reg(&mut g, 1).await;
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (call, sites) = grant_of(&f);
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0].0, 1);
    assert_ne!((sites[0].1, sites[0].2), (0, 0), "the control slot was granted");
    let Message::ChannelGrant {
        call_type, caller, ..
    } = f.msg
    else {
        unreachable!()
    };
    assert_eq!((call_type, caller), (CallType::Group, unit(1)));
    let txn = g.request(Message::PttRelease { call, tmsi: t1 }).await.unwrap();
    assert_eq!(
        next(&mut g).await,
        Frame::new(
            txn,
            Message::Ack {
                acked: MessageType::PttRelease
            }
        )
    );
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call,
            cause: Cause::Normal
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn requests_are_checked_against_registration_permission_and_affiliation() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t1 = reg(&mut g, 1).await;
    // Talkgroup 13 exists but unit 1 may not use it.
    let (_, f) = group_call(&mut g, t1, 13, CallScope::Local).await;
    assert_eq!(
        f.msg,
        deny(MessageType::GroupCallReq, Cause::TalkgroupNotPermitted)
    );
    // Permitted (12) but not affiliated (the default affiliation is 10 + 11, 12 secondary... ).
    let list = trunkd::protocol::TalkgroupList::new(tg(10), vec![]).unwrap();
    let txn = g
        .request(Message::Affiliate {
            tmsi: t1,
            talkgroups: list,
        })
        .await
        .unwrap();
    until(&mut g, |f| f.txn == txn).await;
    let (_, f) = group_call(&mut g, t1, 12, CallScope::Local).await;
    assert_eq!(f.msg, deny(MessageType::GroupCallReq, Cause::NotAffiliated));
    // Not registered.
    let (_, f) = group_call(&mut g, Tmsi::new(77).unwrap(), 10, CallScope::Local).await;
    assert_eq!(f.msg, deny(MessageType::GroupCallReq, Cause::NotRegistered));
    // Private call to a unit that is not on the air.
    let (_, f) = private_call(&mut g, t1, 5).await;
    assert_eq!(f.msg, deny(MessageType::PrivateCallReq, Cause::TargetUnreachable));
    // Private call to a member that does not exist.
    let (_, f) = private_call(&mut g, t1, 99).await;
    assert_eq!(f.msg, deny(MessageType::PrivateCallReq, Cause::InvalidTarget));
    c.stop().await;
}

#[tokio::test]
async fn a_wide_area_call_reaches_every_site_with_an_affiliated_member() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    reg(&mut g2, 2).await; // affiliated to 10 by default, at site 2
    let (_, f) = group_call(&mut g1, t1, 10, CallScope::WideArea).await;
    let (call, sites) = grant_of(&f);
    assert_eq!(sites.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
    let f2 = until(&mut g2, |f| matches!(f.msg, Message::ChannelGrant { .. })).await;
    assert_eq!(grant_of(&f2).0, call);
    assert!(
        f2.txn >= 0x8000_0000,
        "grant to another site starts a controller transaction"
    );
    // Talkgroup 14 has no member on the air anywhere else: local only.
    c.stop().await;
}

#[tokio::test]
async fn a_wide_area_call_starts_without_a_full_site_and_adds_it_when_a_slot_frees() {
    let db = TestDb::sqlite();
    let c = call_controller(
        &db,
        trunking(TrunkingMode::Transmission, EmergencyPolicy::QueueHead),
    )
    .await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    let (t2, t3) = (reg(&mut g2, 2).await, reg(&mut g2, 3).await);
    reg(&mut g2, 4).await;
    // Fill site 2's two traffic slots with a private call 3 -> 4 ... and a local call by 2 on 11.
    let (_, f) = private_call(&mut g2, t3, 4).await;
    let (blocker, _) = grant_of(&f);
    let (_, f) = group_call(&mut g2, t2, 11, CallScope::Local).await;
    grant_of(&f);
    // Wide-area call on 10 from site 1: starts at site 1 only.
    let (_, f) = group_call(&mut g1, t1, 10, CallScope::WideArea).await;
    let (call, sites) = grant_of(&f);
    assert_eq!(sites.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1]);
    // A slot frees at site 2: the call is added there.
    g2.send(Frame::new(
        5000,
        Message::CallEnd {
            call: blocker,
            cause: Cause::Normal,
        },
    ))
    .await
    .unwrap();
    let f = until(
        &mut g2,
        |f| matches!(&f.msg, Message::ChannelGrant { call: c, .. } if *c == call),
    )
    .await;
    assert_eq!(grant_of(&f).1.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
    c.stop().await;
}

#[tokio::test]
async fn private_calls_and_a_busy_target() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    let t3 = reg(&mut g1, 3).await;
    reg(&mut g2, 2).await;
    let (_, f) = private_call(&mut g1, t1, 2).await;
    let (call, sites) = grant_of(&f);
    assert_eq!(sites.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
    let f2 = until(&mut g2, |f| matches!(f.msg, Message::ChannelGrant { .. })).await;
    assert_eq!(grant_of(&f2).0, call);
    let Message::ChannelGrant {
        call_type, target, ..
    } = f2.msg
    else {
        unreachable!()
    };
    assert_eq!(call_type, CallType::Private);
    assert_eq!(target, trunkd::protocol::Target::Unit(unit(2)));
    let (_, f) = private_call(&mut g1, t3, 2).await;
    assert_eq!(f.msg, deny(MessageType::PrivateCallReq, Cause::TargetBusy));
    c.stop().await;
}

#[tokio::test]
async fn the_busy_queue_orders_by_priority_tells_positions_and_serves_when_a_slot_frees() {
    let db = TestDb::sqlite();
    let c = call_controller(
        &db,
        trunking(TrunkingMode::Transmission, EmergencyPolicy::QueueHead),
    )
    .await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 6).await;
    // Two traffic slots: units 1 and 2 take them (local calls on 10 and 11).
    let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await;
    let (first, _) = grant_of(&f);
    let (_, f) = group_call(&mut g, t[1], 11, CallScope::Local).await;
    grant_of(&f);
    // Unit 3 (priority 3) waits first, then unit 5 (priority 5) overtakes it.
    let (r3, f) = private_call(&mut g, t[2], 4).await;
    assert_eq!(
        f.msg,
        Message::Queued {
            position: trunkd::protocol::QueuePosition::new(1).unwrap()
        }
    );
    let (r5, f) = private_call(&mut g, t[4], 6).await;
    assert_eq!(
        f.msg,
        Message::Queued {
            position: trunkd::protocol::QueuePosition::new(1).unwrap()
        }
    );
    let f = until(&mut g, |f| f.txn == r3).await;
    assert_eq!(
        f.msg,
        Message::QueueUpdate {
            position: trunkd::protocol::QueuePosition::new(2).unwrap()
        }
    );
    // A slot frees: the higher priority is served first, the other moves up.
    g.request(Message::PttRelease {
        call: first,
        tmsi: t[0],
    })
    .await
    .unwrap();
    let f = until(&mut g, |f| f.txn == r5).await;
    assert!(matches!(f.msg, Message::ChannelGrant { .. }), "{f:?}");
    let f = until(&mut g, |f| f.txn == r3).await;
    assert_eq!(
        f.msg,
        Message::QueueUpdate {
            position: trunkd::protocol::QueuePosition::new(1).unwrap()
        }
    );
    // Unit 3 withdraws its request.
    let cancel = g
        .request(Message::CallCancel {
            tmsi: t[2],
            request_txn: r3,
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(until(&mut g, |f| f.txn == cancel || f.txn == r3).await);
    }
    assert!(
        got.contains(&Frame::new(
            cancel,
            Message::Ack {
                acked: MessageType::CallCancel
            }
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&Frame::new(
            r3,
            deny(MessageType::PrivateCallReq, Cause::Cancelled)
        )),
        "{got:?}"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_request_waiting_too_long_is_denied_busy_and_a_full_queue_refuses() {
    let db = TestDb::sqlite();
    let t = TrunkingSection {
        queue_timeout_ms: 300,
        queue_depth: 1,
        ..trunking(TrunkingMode::Transmission, EmergencyPolicy::QueueHead)
    };
    let c = call_controller(&db, t).await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 6).await;
    group_call(&mut g, t[0], 10, CallScope::Local).await;
    group_call(&mut g, t[1], 11, CallScope::Local).await;
    let (r, f) = private_call(&mut g, t[2], 4).await;
    assert!(matches!(f.msg, Message::Queued { .. }));
    let (_, f) = private_call(&mut g, t[4], 6).await;
    assert_eq!(f.msg, deny(MessageType::PrivateCallReq, Cause::QueueFull));
    let f = until(&mut g, |f| f.txn == r).await;
    assert_eq!(f.msg, deny(MessageType::PrivateCallReq, Cause::Busy));
    c.stop().await;
}

#[tokio::test]
async fn an_emergency_preempts_the_lowest_priority_call() {
    let db = TestDb::sqlite();
    let c = call_controller(
        &db,
        trunking(TrunkingMode::Transmission, EmergencyPolicy::Preempt),
    )
    .await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 3).await;
    let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await; // priority 1
    let (low, _) = grant_of(&f);
    let (_, f) = group_call(&mut g, t[1], 11, CallScope::Local).await; // priority 2
    grant_of(&f); // priority 2: kept
    let txn = g
        .request(Message::EmergencyCallReq {
            tmsi: t[2],
            talkgroup: tg(12),
        })
        .await
        .unwrap();
    let pre = until(&mut g, |f| matches!(f.msg, Message::Preempted { .. })).await;
    assert_eq!(
        pre.msg,
        Message::Preempted {
            call: low,
            cause: Cause::Preempted
        }
    );
    let f = until(&mut g, |f| f.txn == txn).await;
    assert!(f.emergency, "emergency grants carry the EMERGENCY flag");
    let Message::ChannelGrant { call_type, .. } = f.msg else {
        panic!("{f:?}")
    };
    assert_eq!(call_type, CallType::Emergency);

    c.stop().await;
}

#[tokio::test]
async fn with_queue_head_an_emergency_waits_first_in_line() {
    let db = TestDb::sqlite();
    let c = call_controller(
        &db,
        trunking(TrunkingMode::Transmission, EmergencyPolicy::QueueHead),
    )
    .await;
    let mut g = gw(&c, 1).await;
    let t = reg_all(&mut g, 5).await;
    group_call(&mut g, t[0], 10, CallScope::Local).await;
    group_call(&mut g, t[1], 11, CallScope::Local).await;
    let (r, f) = private_call(&mut g, t[3], 5).await; // priority 4 waits
    assert!(matches!(f.msg, Message::Queued { .. }));
    let txn = g
        .request(Message::EmergencyCallReq {
            tmsi: t[2],
            talkgroup: tg(12),
        })
        .await
        .unwrap();
    let f = until(&mut g, |f| f.txn == txn).await;
    assert_eq!(
        f.msg,
        Message::Queued {
            position: trunkd::protocol::QueuePosition::new(1).unwrap()
        }
    );
    let f = until(&mut g, |f| f.txn == r).await;
    assert_eq!(
        f.msg,
        Message::QueueUpdate {
            position: trunkd::protocol::QueuePosition::new(2).unwrap()
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn an_emergency_takes_over_its_talkgroups_call() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let (t1, t2) = (reg(&mut g, 1).await, reg(&mut g, 2).await);
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (old, old_sites) = grant_of(&f);
    let txn = g
        .request(Message::EmergencyCallReq {
            tmsi: t2,
            talkgroup: tg(10),
        })
        .await
        .unwrap();
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call: old,
            cause: Cause::EmergencyTakeover
        }
    );
    let f = until(&mut g, |f| f.txn == txn).await;
    let (new, sites) = grant_of(&f);
    assert_ne!(new, old);
    assert_eq!(sites, old_sites, "the emergency keeps the talkgroup's slot");
    c.stop().await;
}

#[tokio::test]
async fn message_trunking_holds_the_slot_for_a_reply_then_ends_on_hang_time() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
    let mut g = gw(&c, 1).await;
    let (t1, t2) = (reg(&mut g, 1).await, reg(&mut g, 2).await);
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    g.request(Message::PttRelease { call, tmsi: t1 }).await.unwrap();
    // A reply within the hang time reuses the call.
    let press = g.request(Message::PttPress { call, tmsi: t2 }).await.unwrap();
    let f = until(&mut g, |f| f.txn == press).await;
    assert_eq!(
        f.msg,
        Message::PttGrant {
            call,
            talker: unit(2)
        }
    );
    // Someone else pressing while unit 2 talks is refused: the floor is taken.
    let busy = g.request(Message::PttPress { call, tmsi: t1 }).await.unwrap();
    assert_eq!(
        until(&mut g, |f| f.txn == busy).await.msg,
        deny(MessageType::PttPress, Cause::FloorTaken)
    );
    g.request(Message::PttRelease { call, tmsi: t2 }).await.unwrap();
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call,
            cause: Cause::HangTimeExpired
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn quasi_transmission_trunking_ends_after_its_short_hang_time() {
    let db = TestDb::sqlite();
    let c = call_controller(
        &db,
        trunking(TrunkingMode::QuasiTransmission, EmergencyPolicy::Preempt),
    )
    .await;
    let mut g = gw(&c, 1).await;
    let t1 = reg(&mut g, 1).await;
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    let released = std::time::Instant::now();
    g.request(Message::PttRelease { call, tmsi: t1 }).await.unwrap();
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call,
            cause: Cause::HangTimeExpired
        }
    );
    // Not before the (200 ms) hang time: a lower bound, which noise cannot break.
    assert!(released.elapsed() >= Duration::from_millis(190));
    c.stop().await;
}

#[tokio::test]
async fn a_call_reaching_the_maximum_duration_ends() {
    let db = TestDb::sqlite();
    let t = TrunkingSection {
        max_call_ms: 200,
        ..TrunkingSection::default()
    };
    let c = call_controller(&db, t).await;
    let mut g = gw(&c, 1).await;
    let t1 = reg(&mut g, 1).await;
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call,
            cause: Cause::MaxDuration
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn a_partys_lost_link_or_power_off_ends_the_call() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    reg(&mut g1, 3).await;
    let (t2, _t4) = (reg(&mut g2, 2).await, reg(&mut g2, 4).await);
    // 1 -> 2 across sites; site 1's gateway goes away.
    let (_, f) = private_call(&mut g1, t1, 2).await;
    let (call, _) = grant_of(&f);
    until(&mut g2, |f| matches!(f.msg, Message::ChannelGrant { .. })).await;
    drop(g1);
    let end = until(&mut g2, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call,
            cause: Cause::PartyLinkLost
        }
    );
    // 2 -> 4 at site 2; unit 4 powers off.
    let (_, f) = private_call(&mut g2, t2, 4).await;
    let (call, _) = grant_of(&f);
    let t4 = c.vlr.get(&imsi(4)).unwrap().tmsi;
    let dereg = g2.request(Message::Deregister { tmsi: t4 }).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(
            until(&mut g2, |f| {
                f.txn == dereg || matches!(f.msg, Message::CallEnd { .. })
            })
            .await
            .msg,
        );
    }
    assert!(
        got.contains(&Message::CallEnd {
            call,
            cause: Cause::PartyDeregistered
        }),
        "{got:?}"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_faulty_slot_moves_its_call_or_ends_it() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let (t1, t2) = (reg(&mut g, 1).await, reg(&mut g, 2).await);
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (call, sites) = grant_of(&f);
    let (_, car, sl) = sites[0];
    let fault = |slot: u8| Message::SiteStatus {
        carrier: Carrier::new(car).unwrap(),
        slot: SlotSelector::Slot(Slot::new(slot).unwrap()),
        state: ResourceState::Faulty,
    };
    let txn = g.request(fault(sl)).await.unwrap();
    assert_eq!(
        until(&mut g, |f| f.txn == txn).await.msg,
        Message::Ack {
            acked: MessageType::SiteStatus
        }
    );
    let moved = until(&mut g, |f| matches!(f.msg, Message::ChannelGrant { .. })).await;
    let (same, new_sites) = grant_of(&moved);
    assert_eq!(same, call);
    assert_ne!(new_sites[0], sites[0], "the call must leave the faulty slot");
    // The only other traffic slot fails too: nowhere to go.
    g.request(fault(new_sites[0].2)).await.unwrap();
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call,
            cause: Cause::SlotFaulty
        }
    );
    // With both traffic slots faulty nothing can be granted: the request waits.
    let (_, f) = group_call(&mut g, t2, 11, CallScope::Local).await;
    assert!(matches!(f.msg, Message::Queued { .. }), "{f:?}");
    c.stop().await;
}

#[tokio::test]
async fn every_call_leaves_a_record() {
    for db in TestDb::all().await {
        let c = call_controller(
            &db,
            trunking(TrunkingMode::Transmission, EmergencyPolicy::Preempt),
        )
        .await;
        let mut g = gw(&c, 1).await;
        let t = reg_all(&mut g, 3).await;
        let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await;
        let (call, _) = grant_of(&f);
        g.request(Message::PttRelease { call, tmsi: t[0] }).await.unwrap();
        until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
        let (_, f) = group_call(&mut g, t[1], 13, CallScope::Local).await; // not permitted: no record
        assert!(matches!(f.msg, Message::Deny { .. }));
        let (_, f) = group_call(&mut g, t[1], 11, CallScope::Local).await;
        grant_of(&f);
        let store = c.store.clone();
        c.stop().await; // shutdown ends the still-open call and writes its record
        let store = {
            drop(store);
            db.open().await
        };
        let records = store.call_records(10).await.unwrap();
        assert_eq!(records.len(), 2, "{}: {records:?}", db.name);
        let ended = records
            .iter()
            .find(|r| r.call_id == i64::from(call.get()))
            .unwrap();
        assert_eq!((ended.call_type.as_str(), ended.end_cause), ("group", 0));
        assert_eq!(
            (ended.caller_fleet, ended.caller_member, ended.target_id),
            (100, 1, 10)
        );
        assert!(
            ended.granted_at.unwrap() >= ended.requested_at && ended.ended_at >= ended.granted_at.unwrap()
        );
        let cut = records
            .iter()
            .find(|r| r.call_id != i64::from(call.get()))
            .unwrap();
        assert_eq!(
            cut.end_cause,
            i64::from(Cause::ShuttingDown.code()),
            "{}: {cut:?}",
            db.name
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_selected_area_call_reaches_the_configured_sites() {
    let db = TestDb::sqlite();
    let t = TrunkingSection {
        selected_area: vec![2],
        ..TrunkingSection::default()
    };
    let c = call_controller(&db, t).await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    let (_, f) = group_call(&mut g1, t1, 11, CallScope::SelectedArea).await;
    let (call, sites) = grant_of(&f);
    assert_eq!(sites.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
    let f2 = until(&mut g2, |f| matches!(f.msg, Message::ChannelGrant { .. })).await;
    assert_eq!(grant_of(&f2).0, call);
    c.stop().await;
}

#[tokio::test]
async fn re_registering_ends_the_calls_of_the_old_tmsi() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t1 = reg(&mut g, 1).await;
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    // The radio restarts and registers again: its old TMSI and its call are gone.
    reg(&mut g, 1).await;
    let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
    assert_eq!(
        end.msg,
        Message::CallEnd {
            call,
            cause: Cause::PartyDeregistered
        }
    );
    c.stop().await;
}

#[tokio::test]
async fn an_operator_can_take_a_slot_out_of_service_and_back() {
    for db in TestDb::all().await {
        let c = call_controller(&db, TrunkingSection::default()).await;
        let mut g = gw(&c, 1).await;
        let (t1, t2) = (reg(&mut g, 1).await, reg(&mut g, 2).await);
        let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
        let (call, sites) = grant_of(&f);
        let (_, car, sl) = sites[0];
        // The operator (another process: the CLI) marks the call's slot faulty.
        let other = db.open().await;
        other
            .set_slot_fault("cli:op", site(1), car, sl, true)
            .await
            .unwrap();
        let moved = until(&mut g, |f| matches!(f.msg, Message::ChannelGrant { .. })).await;
        let (same, new_sites) = grant_of(&moved);
        assert_eq!(same, call, "{}", db.name);
        assert_ne!(new_sites[0], sites[0]);
        // With the other traffic slot busy and this one out of service, a request waits...
        let (r, f) = group_call(&mut g, t2, 11, CallScope::Local).await;
        assert!(matches!(f.msg, Message::Queued { .. }), "{}: {f:?}", db.name);
        // ... until the operator puts the slot back.
        other
            .set_slot_fault("cli:op", site(1), car, sl, false)
            .await
            .unwrap();
        let granted = until(&mut g, |f| f.txn == r).await;
        assert!(
            matches!(granted.msg, Message::ChannelGrant { .. }),
            "{}: {granted:?}",
            db.name
        );
        other.close().await;
        c.stop().await;
    }
}

#[tokio::test]
async fn a_location_update_mid_call_keeps_the_call() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g = gw(&c, 1).await;
    let t1 = reg(&mut g, 1).await;
    let (_, f) = group_call(&mut g, t1, 10, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    // A periodic location update renews the TMSI; the call goes on under the new one.
    let lu = Message::LocationUpdate {
        tmsi: t1,
        reason: trunkd::protocol::LocationReason::Periodic,
    };
    let (_, f) = trunkd::sim::authenticate(&mut g, lu, &radio_keys(1))
        .await
        .unwrap();
    let t1_new = accepted_tmsi(&f).unwrap();
    let press = g
        .request(Message::PttRelease { call, tmsi: t1_new })
        .await
        .unwrap();
    let f = until(&mut g, |f| {
        f.txn == press || matches!(f.msg, Message::CallEnd { .. })
    })
    .await;
    assert_eq!(
        f.msg,
        Message::Ack {
            acked: MessageType::PttRelease
        },
        "the call ended on the location update"
    );
    c.stop().await;
}

#[tokio::test]
async fn only_a_unit_at_a_site_of_the_call_may_take_the_floor() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, TrunkingSection::default()).await;
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg(&mut g1, 1).await;
    let t2 = reg(&mut g2, 2).await;
    let (_, f) = group_call(&mut g1, t1, 11, CallScope::Local).await;
    let (call, _) = grant_of(&f);
    let press = g2.request(Message::PttPress { call, tmsi: t2 }).await.unwrap();
    let f = until(&mut g2, |f| f.txn == press).await;
    assert_eq!(f.msg, deny(MessageType::PttPress, Cause::InvalidTarget));
    c.stop().await;
}
