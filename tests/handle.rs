//! The controller handle over a running controller: every command acts at once and is
//! audited with its actor, every query answers from the running state, and the event
//! stream tells what happened, resumes after a reconnect and tells a slow listener it
//! lagged.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use trunkd::controller::{
    Alarm, AlarmKind, AlarmState, Answer, Command, CommandError, ControllerHandle, Outcome, Query,
    QueryError, Subject, UnitFilter,
};
use trunkd::core::registration::{LeaveReason, UnitEvent};
use trunkd::core::trunking::{CallEvent, EmergencyPolicy, SlotUse, TrunkingMode};
use trunkd::events::{Event, EventKind, MessageKind, RadioCommand, RadioOutcome, Subscription};
use trunkd::hlr::Permissions;
use trunkd::protocol::{
    CallScope, Cause, FleetId, Frame, Identity, LocationReason, Message, MessageType, ShortData,
    TalkgroupList, Target,
};
use trunkd::shell::messaging::Reply;

/// The next event that `pred` accepts (others are skipped); fails after 10 s.
async fn event_where(sub: &mut Subscription, pred: impl Fn(&EventKind) -> bool) -> Arc<Event> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = sub.next().await.expect("controller stopped").expect("lagged");
            if pred(&e.kind) {
                return e;
            }
        }
    })
    .await
    .expect("no such event within 10 s")
}

/// Whether `alarms` holds an open alarm of `kind` on `subject`.
fn open(alarms: &[Alarm], kind: AlarmKind, subject: Subject) -> bool {
    alarms
        .iter()
        .any(|a| a.kind == kind && a.subject == subject && a.is_open())
}

fn units(h: &ControllerHandle, filter: UnitFilter) -> Vec<u64> {
    match h.query(Query::Units(filter)).unwrap() {
        Answer::Units(u) => u.iter().map(|u| u.imsi.to_string().parse().unwrap()).collect(),
        other => panic!("{other:?}"),
    }
}

fn limit(n: usize) -> UnitFilter {
    UnitFilter {
        limit: n,
        ..UnitFilter::default()
    }
}

#[tokio::test]
async fn an_operator_ends_a_call_and_every_site_hears_cause_0x5f() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
    let h = c.handle();
    let (_, mut sub) = h.events();
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t1 = reg_all(&mut g1, 1).await;
    // Unit 2 at site 2 is affiliated to talkgroup 10 too: the call reaches both sites.
    let _t2 = reg(&mut g2, 2).await;
    let (_, f) = group_call(&mut g1, t1[0], 10, CallScope::WideArea).await;
    let (call, _) = grant_of(&f);
    let granted = event_where(&mut sub, |k| {
        matches!(k, EventKind::Call(CallEvent::Granted { .. }))
    })
    .await;
    let EventKind::Call(CallEvent::Granted { slots, .. }) = &granted.kind else {
        unreachable!()
    };
    let sites: Vec<_> = slots.iter().map(|(s, ..)| *s).collect();
    assert_eq!(sites, vec![site(1), site(2)]);
    let Answer::Calls(calls) = h.query(Query::Calls).unwrap() else {
        panic!()
    };
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].view.call, call);
    assert_eq!(calls[0].view.caller, unit(1));
    assert_eq!(calls[0].view.slots.len(), 2);
    assert!(calls[0].granted_at_ms >= calls[0].requested_at_ms);

    assert_eq!(
        h.command("alice", Command::EndCall { call }).await.unwrap(),
        Outcome::Done
    );
    let end = Message::CallEnd {
        call,
        cause: Cause::OperatorEnded,
    };
    assert_eq!(
        until(&mut g1, |f| matches!(f.msg, Message::CallEnd { .. }))
            .await
            .msg,
        end
    );
    assert_eq!(
        until(&mut g2, |f| matches!(f.msg, Message::CallEnd { .. }))
            .await
            .msg,
        end
    );
    let ended = event_where(&mut sub, |k| matches!(k, EventKind::Call(CallEvent::Ended(_)))).await;
    let EventKind::Call(CallEvent::Ended(r)) = &ended.kind else {
        unreachable!()
    };
    assert_eq!((r.call, r.end_cause), (Some(call), Cause::OperatorEnded));
    let Answer::Calls(calls) = h.query(Query::Calls).unwrap() else {
        panic!()
    };
    assert!(calls.is_empty());
    // A call that is not running is an error, not a silent success.
    assert!(matches!(
        h.command("alice", Command::EndCall { call }).await,
        Err(CommandError::NotFound(_))
    ));
    c.stop().await;
}

#[tokio::test]
async fn inhibit_enable_and_authorize_take_effect_at_once_and_name_the_actor() {
    for db in TestDb::all().await {
        let mut cfg = call_config(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt));
        // Slower than the test: only the handle can make the change reach the controller.
        cfg.registration.hlr_refresh_ms = 3_600_000;
        provision_calls(&db).await;
        let c = trunkd::controller::start(cfg).await.unwrap();
        let h = c.handle();
        let (_, mut sub) = h.events();
        let mut g = gw(&c, 1).await;
        let t = reg_all(&mut g, 3).await;

        h.command("alice", Command::Inhibit { imsi: imsi(2) })
            .await
            .unwrap();
        let stun = until(&mut g, |f| matches!(f.msg, Message::Inhibit { .. })).await;
        assert_eq!(stun.msg, Message::Inhibit { tmsi: t[1] });
        g.send(Frame::new(stun.txn, Message::InhibitAck { tmsi: t[1] }))
            .await
            .unwrap();
        let done = event_where(&mut sub, |k| matches!(k, EventKind::RadioCommand { .. })).await;
        assert_eq!(
            done.kind,
            EventKind::RadioCommand {
                imsi: imsi(2),
                command: RadioCommand::Inhibit,
                outcome: RadioOutcome::Acknowledged
            },
            "{}",
            db.name
        );

        // ENABLE goes to the last known site and TMSI, written behind.
        while c.store.last_tmsi(imsi(2)).await.unwrap() != Some(t[1]) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h.command("bob", Command::Enable { imsi: imsi(2) }).await.unwrap();
        let revive = until(&mut g, |f| matches!(f.msg, Message::Enable { .. })).await;
        g.send(Frame::new(revive.txn, Message::EnableAck { tmsi: t[1] }))
            .await
            .unwrap();
        event_where(&mut sub, |k| {
            matches!(
                k,
                EventKind::RadioCommand {
                    command: RadioCommand::Enable,
                    outcome: RadioOutcome::Acknowledged,
                    ..
                }
            )
        })
        .await;

        // Unit 3 loses its group permission: its next group call is refused.
        let only_private = Permissions::parse("private").unwrap();
        h.command(
            "carol",
            Command::Authorize {
                imsi: imsi(3),
                priority: Some(9),
                permissions: Some(only_private),
            },
        )
        .await
        .unwrap();
        let (_, f) = group_call(&mut g, t[2], 10, CallScope::Local).await;
        assert_eq!(
            f.msg,
            deny(MessageType::GroupCallReq, Cause::ServiceNotPermitted),
            "{}",
            db.name
        );
        let sub3 = c.store.subscriber(imsi(3)).await.unwrap().unwrap();
        assert_eq!((sub3.priority, sub3.permissions), (9, only_private));

        let log = c.store.audit_since(0, 10_000).await.unwrap();
        let by = |action: &str| log.iter().find(|e| e.action == action).map(|e| e.actor.clone());
        assert_eq!(by("subscriber.inhibit").as_deref(), Some("alice"));
        assert_eq!(by("subscriber.enable").as_deref(), Some("bob"));
        assert_eq!(by("subscriber.authorize").as_deref(), Some("carol"));

        // Refusals change nothing.
        let unknown = h.command("alice", Command::Inhibit { imsi: imsi(99) }).await;
        assert!(matches!(unknown, Err(CommandError::NotFound(_))), "{unknown:?}");
        let nothing = Command::Authorize {
            imsi: imsi(3),
            priority: None,
            permissions: None,
        };
        assert!(matches!(
            h.command("alice", nothing).await,
            Err(CommandError::Invalid(_))
        ));
        let too_high = Command::Authorize {
            imsi: imsi(3),
            priority: Some(16),
            permissions: None,
        };
        assert!(matches!(
            h.command("alice", too_high).await,
            Err(CommandError::Invalid(_))
        ));
        let anonymous = h.command(" ", Command::Enable { imsi: imsi(2) }).await;
        assert!(matches!(anonymous, Err(CommandError::Invalid(_))));
        c.stop().await;
    }
}

#[tokio::test]
async fn slots_go_out_of_service_and_back_with_an_alarm_meanwhile() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
    let h = c.handle();
    let (snapshot, mut sub) = h.events();
    // The gateways have `alarms.link_grace_ms` to link after a start.
    assert_eq!(snapshot.alarms, Vec::new());
    let _g = gw(&c, 1).await;
    event_where(&mut sub, |k| *k == EventKind::LinkUp { site: site(1) }).await;

    let out = Command::SlotOutOfService {
        site: site(1),
        carrier: 0,
        slot: Some(2),
    };
    h.command("alice", out).await.unwrap();
    let e = event_where(&mut sub, |k| {
        matches!(k, EventKind::Call(CallEvent::SlotChanged { .. }))
    })
    .await;
    assert!(matches!(
        e.kind,
        EventKind::Call(CallEvent::SlotChanged {
            in_service: false,
            ..
        })
    ));
    let Answer::Slots(slots) = h.query(Query::Slots { site: site(1) }).unwrap() else {
        panic!()
    };
    let states: Vec<SlotUse> = slots.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        vec![SlotUse::Control, SlotUse::Free, SlotUse::OutOfService]
    );
    let Answer::Alarms(alarms) = h.query(Query::Alarms).unwrap() else {
        panic!()
    };
    let slot = Subject::Slot {
        site: site(1),
        carrier: 0,
        slot: 2,
    };
    assert!(open(&alarms, AlarmKind::SlotOutOfService, slot));
    assert!(!open(&alarms, AlarmKind::SiteLinkLost, Subject::Site(site(1))));

    let back = Command::SlotInService {
        site: site(1),
        carrier: 0,
        slot: Some(2),
    };
    h.command("alice", back).await.unwrap();
    event_where(&mut sub, |k| {
        matches!(
            k,
            EventKind::Call(CallEvent::SlotChanged { in_service: true, .. })
        )
    })
    .await;
    let Answer::Slots(slots) = h.query(Query::Slots { site: site(1) }).unwrap() else {
        panic!()
    };
    assert_eq!(slots[2].state, SlotUse::Free);
    // Its alarm is cleared, and stays until someone acknowledges it.
    let Answer::Alarms(alarms) = h.query(Query::Alarms).unwrap() else {
        panic!()
    };
    let a = alarms.iter().find(|a| a.subject == slot).unwrap();
    assert_eq!(a.state(), AlarmState::Cleared);

    // The control channel and slots a site does not have are refused.
    for (carrier, slot) in [(0, Some(0)), (1, None), (0, Some(5))] {
        let bad = Command::SlotOutOfService {
            site: site(1),
            carrier,
            slot,
        };
        assert!(matches!(
            h.command("alice", bad).await,
            Err(CommandError::Invalid(_))
        ));
    }
    assert!(matches!(
        h.query(Query::Slots { site: site(9) }),
        Err(QueryError::NotFound(_))
    ));
    c.stop().await;
}

#[tokio::test]
async fn queries_list_units_queues_links_and_parameters() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
    let h = c.handle();
    let mut g1 = gw(&c, 1).await;
    let mut g2 = gw(&c, 2).await;
    let t = reg_all(&mut g1, 5).await;
    reg(&mut g2, 6).await;

    // Units, paged in IMSI order, and filtered.
    assert_eq!(
        units(&h, limit(4)),
        vec![1, 2, 3, 4]
            .into_iter()
            .map(|n| imsi(n).to_string().parse().unwrap())
            .collect::<Vec<u64>>()
    );
    let page1 = units(&h, limit(4));
    let rest = units(
        &h,
        UnitFilter {
            after: Some(imsi(4)),
            limit: 4,
            ..UnitFilter::default()
        },
    );
    assert_eq!(page1.len() + rest.len(), 6);
    let at2 = units(
        &h,
        UnitFilter {
            site: Some(site(2)),
            limit: 100,
            ..UnitFilter::default()
        },
    );
    assert_eq!(at2, vec![imsi(6).to_string().parse::<u64>().unwrap()]);
    assert_eq!(
        units(
            &h,
            UnitFilter {
                fleet: Some(unit(1).fleet),
                talkgroup: Some(tg(10)),
                limit: 100,
                ..UnitFilter::default()
            }
        )
        .len(),
        6
    );
    assert!(matches!(
        h.query(Query::Units(limit(0))),
        Err(QueryError::Invalid(_))
    ));

    // Site 1 has two traffic slots: two calls take them, the next two wait in order.
    let (_, mut sub) = h.events();
    for (i, talkgroup) in [(0, 10), (1, 11)] {
        let (_, f) = group_call(&mut g1, t[i], talkgroup, CallScope::Local).await;
        grant_of(&f);
    }
    let (_, f) = group_call(&mut g1, t[2], 12, CallScope::Local).await;
    assert!(matches!(f.msg, Message::Queued { .. }));
    // Unit 5 (priority 5) goes ahead of unit 3 (priority 3): unit 3 moves to 2.
    let (_, f) = private_call(&mut g1, t[4], 4).await;
    assert!(matches!(f.msg, Message::Queued { .. }));
    event_where(&mut sub, |k| {
        matches!(k, EventKind::Call(CallEvent::QueueMoved { position: 2, .. }))
    })
    .await;
    let Answer::Queues(queues) = h.query(Query::Queues { site: Some(site(1)) }).unwrap() else {
        panic!()
    };
    let waiting: Vec<(usize, u16)> = queues[0]
        .1
        .iter()
        .map(|q| (q.entry.position, q.entry.caller.member.get()))
        .collect();
    assert_eq!(waiting, vec![(1, 5), (2, 3)]);

    let Answer::Links(links) = h.query(Query::Links).unwrap() else {
        panic!()
    };
    assert!(links.iter().all(|l| l.connected));
    assert_eq!(links.len(), 2);
    let Answer::Parameters(p) = h.query(Query::Parameters).unwrap() else {
        panic!()
    };
    assert!(p.contains(&("trunking.hang_time_ms".to_string(), "400".to_string())));
    c.stop().await;
}

#[tokio::test]
async fn system_parameters_are_in_force_for_the_next_request_and_survive_a_restart() {
    for db in TestDb::all().await {
        provision_calls(&db).await;
        let cfg = call_config(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt));
        let c = trunkd::controller::start(cfg.clone()).await.unwrap();
        let h = c.handle();
        let (_, mut sub) = h.events();
        let set = Command::SetParameter {
            name: "trunking.mode".into(),
            value: "transmission".into(),
        };
        assert_eq!(
            h.command("alice", set).await.unwrap(),
            Outcome::Parameter {
                name: "trunking.mode".into(),
                value: "transmission".into()
            }
        );
        event_where(&mut sub, |k| matches!(k, EventKind::ParameterChanged { .. })).await;
        // Transmission trunking: the call ends when the talker releases PTT.
        let mut g = gw(&c, 1).await;
        let t = reg_all(&mut g, 1).await;
        let (_, f) = group_call(&mut g, t[0], 10, CallScope::Local).await;
        let (call, _) = grant_of(&f);
        g.request(Message::PttRelease { call, tmsi: t[0] }).await.unwrap();
        let end = until(&mut g, |f| matches!(f.msg, Message::CallEnd { .. })).await;
        assert_eq!(
            end.msg,
            Message::CallEnd {
                call,
                cause: Cause::Normal
            },
            "{}",
            db.name
        );

        for (name, value) in [
            ("trunking.queue_depth", "0"),
            ("trunking.mode", "sometimes"),
            ("link.listen", "0.0.0.0:1"),
            ("trunking.hang_time_ms", "-1"),
        ] {
            let bad = Command::SetParameter {
                name: name.into(),
                value: value.into(),
            };
            assert!(
                matches!(h.command("alice", bad).await, Err(CommandError::Invalid(_))),
                "{name}"
            );
        }
        c.stop().await;

        // The database wins over the config file after a restart.
        let c = trunkd::controller::start(cfg).await.unwrap();
        let Answer::Parameters(p) = c.handle().query(Query::Parameters).unwrap() else {
            panic!()
        };
        assert!(
            p.contains(&("trunking.mode".to_string(), "transmission".to_string())),
            "{}",
            db.name
        );
        let log = c.store.audit_since(0, 10_000).await.unwrap();
        assert!(log.iter().any(|e| e.action == "parameter.set"
            && e.actor == "alice"
            && e.object == "parameter:trunking.mode"));
        c.stop().await;
    }
}

#[tokio::test]
async fn a_listener_resumes_after_a_reconnect_without_missing_an_event() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
    let h = c.handle();
    let (_, mut first) = h.events();
    let g1 = gw(&c, 1).await;
    let seen = event_where(&mut first, |k| matches!(k, EventKind::LinkUp { .. })).await;
    drop(first); // the console goes away
    drop(g1);
    let g2 = gw(&c, 2).await;
    // It comes back with the last number it saw.
    let mut again = h.resume(seen.seq).unwrap();
    let next = again.next().await.unwrap().unwrap();
    assert_eq!(next.seq, seen.seq + 1);
    let mut kinds = vec![next.kind.clone()];
    // (The lost link's alarm comes in between.)
    let (down, up) = (
        EventKind::LinkDown { site: site(1) },
        EventKind::LinkUp { site: site(2) },
    );
    while !(kinds.contains(&down) && kinds.contains(&up)) {
        let e = again.next().await.unwrap().unwrap();
        assert!(
            matches!(e.kind, EventKind::Alarm { .. }) || e.kind == down || e.kind == up,
            "{e:?}"
        );
        kinds.push(e.kind.clone());
    }
    drop(g2);
    // A number never handed out cannot be resumed from.
    assert!(h.resume(seen.seq + 1_000_000).is_err());
    c.stop().await;
}

#[tokio::test]
async fn a_listener_too_slow_is_told_it_lagged_and_the_controller_goes_on() {
    let db = TestDb::sqlite();
    provision_calls(&db).await;
    let mut cfg = call_config(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt));
    cfg.events.backlog = 16;
    let c = trunkd::controller::start(cfg).await.unwrap();
    let h = c.handle();
    let (_, mut slow) = h.events();
    // Twenty slot changes: more events than the backlog holds, none read meanwhile.
    for i in 0..20 {
        let (site, carrier, slot) = (site(1), 0, Some(1 + i % 2));
        let cmd = if i % 4 < 2 {
            Command::SlotOutOfService { site, carrier, slot }
        } else {
            Command::SlotInService { site, carrier, slot }
        };
        h.command("alice", cmd).await.unwrap();
    }
    let lagged = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.next().await {
                Some(Err(l)) => return l,
                Some(Ok(_)) => continue,
                None => panic!("stream ended"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(lagged.last_seen, 0);
    // It cannot resume from where it was either: a new snapshot it is.
    assert!(h.resume(0).is_err());
    let (snapshot, mut fresh) = h.events();
    assert!(snapshot.seq >= 20);
    h.command(
        "alice",
        Command::SlotInService {
            site: site(1),
            carrier: 0,
            slot: Some(1),
        },
    )
    .await
    .unwrap();
    // The controller still serves: a gateway links and a new listener hears it.
    let _g = gw(&c, 1).await;
    let up = event_where(&mut fresh, |k| matches!(k, EventKind::LinkUp { .. })).await;
    assert!(up.seq > snapshot.seq);
    c.stop().await;
}

#[tokio::test]
async fn unit_events_tell_registration_moves_affiliation_clones_and_departures() {
    let db = TestDb::sqlite();
    let c = call_controller(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt)).await;
    let h = c.handle();
    let (snapshot, mut sub) = h.events();
    assert!(snapshot.units.is_empty());
    let (mut g1, mut g2) = (gw(&c, 1).await, gw(&c, 2).await);
    let t1 = reg(&mut g1, 1).await;
    let e = event_where(&mut sub, |k| matches!(k, EventKind::Unit(_))).await;
    assert_eq!(
        e.kind,
        EventKind::Unit(UnitEvent::Registered {
            imsi: imsi(1),
            tmsi: t1,
            site: site(1)
        })
    );
    // A move to site 2.
    let moved = Message::LocationUpdate {
        tmsi: t1,
        reason: LocationReason::SiteChange,
    };
    let (_, f) = trunkd::sim::authenticate(&mut g2, moved, &radio_keys(1))
        .await
        .unwrap();
    let t1 = trunkd::sim::accepted_tmsi(&f).unwrap();
    let e = event_where(&mut sub, |k| matches!(k, EventKind::Unit(_))).await;
    assert_eq!(
        e.kind,
        EventKind::Unit(UnitEvent::LocationChanged {
            imsi: imsi(1),
            from: site(1),
            to: site(2),
            tmsi: t1
        })
    );
    // An affiliation.
    let list = TalkgroupList::new(tg(11), vec![tg(10)]).unwrap();
    g2.request(Message::Affiliate {
        tmsi: t1,
        talkgroups: list,
    })
    .await
    .unwrap();
    let e = event_where(&mut sub, |k| matches!(k, EventKind::Unit(_))).await;
    assert_eq!(
        e.kind,
        EventKind::Unit(UnitEvent::Affiliated {
            imsi: imsi(1),
            site: site(2),
            talkgroups: vec![tg(11), tg(10)]
        })
    );
    // The snapshot of a new listener has the unit where it is now.
    let (now, _) = h.events();
    assert_eq!(now.units.len(), 1);
    assert_eq!(
        (now.units[0].site, now.units[0].talkgroups.clone()),
        (site(2), vec![tg(11), tg(10)])
    );
    // A power-on at site 1 within the clone window: a suspected clone.
    let f = trunkd::sim::register(&mut g1, Identity::Imsi(imsi(1)), &radio_keys(1))
        .await
        .unwrap();
    assert_eq!(
        f.msg,
        Message::RegReject {
            cause: Cause::CloneSuspected
        }
    );
    let e = event_where(&mut sub, |k| !matches!(k, EventKind::LinkUp { .. })).await;
    assert!(
        matches!(e.kind, EventKind::CloneSuspected { imsi: i, .. } if i == imsi(1)),
        "{e:?}"
    );
    // It powers off.
    g2.request(Message::Deregister { tmsi: t1 }).await.unwrap();
    let e = event_where(&mut sub, |k| matches!(k, EventKind::Unit(_))).await;
    assert_eq!(
        e.kind,
        EventKind::Unit(UnitEvent::Left {
            imsi: imsi(1),
            site: site(2),
            reason: LeaveReason::Detached
        })
    );
    // Numbered without gaps, in time order.
    let mut resumed = h.resume(snapshot.seq).unwrap();
    let mut last = (snapshot.seq, 0);
    while let Some(Ok(e)) = resumed.try_next() {
        assert_eq!(e.seq, last.0 + 1);
        assert!(e.at_ms >= last.1);
        last = (e.seq, e.at_ms);
    }
    assert!(last.0 >= snapshot.seq + 6);
    c.stop().await;
}

#[tokio::test]
async fn queue_full_preemption_and_emergency_are_told() {
    let db = TestDb::sqlite();
    let mut t = trunking(TrunkingMode::Message, EmergencyPolicy::Preempt);
    t.queue_depth = 1;
    let c = call_controller(&db, t).await;
    let h = c.handle();
    let mut g = gw(&c, 1).await;
    let u = reg_all(&mut g, 5).await;
    let (_, mut sub) = h.events();
    // Two calls take site 1's two traffic slots; one request waits, the next finds the
    // queue full.
    let (_, f) = group_call(&mut g, u[0], 10, CallScope::Local).await;
    let (low, _) = grant_of(&f);
    let (_, f) = group_call(&mut g, u[1], 11, CallScope::Local).await;
    grant_of(&f);
    let (txn, f) = group_call(&mut g, u[2], 12, CallScope::Local).await;
    assert!(matches!(f.msg, Message::Queued { .. }));
    let e = event_where(&mut sub, |k| {
        matches!(k, EventKind::Call(CallEvent::Queued { .. }))
    })
    .await;
    assert_eq!(
        e.kind,
        EventKind::Call(CallEvent::Queued {
            site: site(1),
            caller: unit(3),
            txn,
            position: 1,
            emergency: false
        })
    );
    let (_, f) = private_call(&mut g, u[3], 5).await;
    assert_eq!(f.msg, deny(MessageType::PrivateCallReq, Cause::QueueFull));
    event_where(&mut sub, |k| {
        *k == EventKind::Call(CallEvent::QueueFull { site: site(1) })
    })
    .await;
    let Answer::Alarms(alarms) = h.query(Query::Alarms).unwrap() else {
        panic!()
    };
    assert!(open(&alarms, AlarmKind::QueueFull, Subject::Site(site(1))));
    // An emergency on talkgroup 12 preempts the lowest-priority call (unit 1's).
    let etxn = g
        .request(Message::EmergencyCallReq {
            tmsi: u[4],
            talkgroup: tg(12),
        })
        .await
        .unwrap();
    until(&mut g, |f| f.txn == etxn).await;
    let e = event_where(&mut sub, |k| {
        matches!(k, EventKind::Call(CallEvent::Emergency { .. }))
    })
    .await;
    assert!(matches!(e.kind, EventKind::Call(CallEvent::Emergency { caller, .. }) if caller == unit(5)));
    let e = event_where(&mut sub, |k| {
        matches!(k, EventKind::Call(CallEvent::Preempted { .. }))
    })
    .await;
    assert_eq!(
        e.kind,
        EventKind::Call(CallEvent::Preempted {
            call: low,
            site: site(1)
        })
    );
    // Unit 3 withdraws its waiting request: it leaves the queue.
    g.request(Message::CallCancel {
        tmsi: u[2],
        request_txn: txn,
    })
    .await
    .unwrap();
    let e = event_where(&mut sub, |k| {
        matches!(k, EventKind::Call(CallEvent::QueueLeft { .. }))
    })
    .await;
    assert_eq!(
        e.kind,
        EventKind::Call(CallEvent::QueueLeft {
            site: site(1),
            caller: unit(3),
            txn
        })
    );
    c.stop().await;
}

/// A controller over what [`provision_calls`] provisions, with a delivery timeout short
/// enough for a test to wait out (300 ms); its handle, and a listener from now.
async fn console_controller(db: &TestDb) -> (trunkd::controller::Running, ControllerHandle, Subscription) {
    provision_calls(db).await;
    let mut cfg = call_config(db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt));
    cfg.messaging.delivery_timeout_ms = 300;
    let c = trunkd::controller::start(cfg).await.unwrap();
    let h = c.handle();
    let (_, sub) = h.events();
    (c, h, sub)
}

/// Sends `command` as operator "dispatch" in a task of its own: it returns only once the
/// message is answered.
fn from_console(
    h: &ControllerHandle,
    command: Command,
) -> tokio::task::JoinHandle<Result<Outcome, CommandError>> {
    let h = h.clone();
    tokio::spawn(async move { h.command("dispatch", command).await })
}

/// Talkgroup `n` of fleet 100.
fn talkgroup(n: u16) -> Target {
    Target::Talkgroup {
        fleet: unit(1).fleet,
        talkgroup: tg(n),
    }
}

/// Asserts that the next console message event tells a message of `kind` from the
/// dispatcher (unit 1, operator "dispatch") to `to`, ended with `outcome`.
async fn assert_told(sub: &mut Subscription, kind: MessageKind, to: Target, outcome: Reply) {
    let e = event_where(sub, |k| matches!(k, EventKind::Message { .. })).await;
    let want = EventKind::Message {
        kind,
        from: unit(1),
        to,
        actor: "dispatch".into(),
        outcome,
    };
    assert_eq!(e.kind, want);
}

#[tokio::test]
async fn a_console_pages_a_radio_and_hears_delivered_once_its_gateway_acknowledges() {
    let db = TestDb::sqlite();
    let (c, h, mut sub) = console_controller(&db).await;
    let mut g2 = gw(&c, 2).await;
    let t2 = reg(&mut g2, 2).await;
    // Unit 1 is the dispatcher: provisioned, never on the air.
    let page = Command::CallAlert {
        from: unit(1),
        to: unit(2),
    };
    let sent = from_console(&h, page.clone());
    let alert = until(&mut g2, |f| matches!(f.msg, Message::CallAlert { .. })).await;
    assert_eq!(
        alert.msg,
        Message::CallAlert {
            tmsi: t2,
            caller: unit(1)
        }
    );
    acknowledge(&mut g2, &alert).await;
    assert_eq!(sent.await.unwrap().unwrap(), Outcome::Delivered);
    assert_told(
        &mut sub,
        MessageKind::CallAlert,
        Target::Unit(unit(2)),
        Reply::Delivered,
    )
    .await;
    // Not acknowledged within the delivery timeout: refused as a radio would be.
    let sent = from_console(&h, page);
    until(&mut g2, |f| matches!(f.msg, Message::CallAlert { .. })).await;
    let refused = sent.await.unwrap().unwrap_err();
    assert!(
        matches!(refused, CommandError::Refused(Cause::TargetUnreachable)),
        "{refused:?}"
    );
    assert_eq!(refused.to_string(), "refused: target unreachable (0x53)");
    assert_told(
        &mut sub,
        MessageKind::CallAlert,
        Target::Unit(unit(2)),
        Reply::Refused(Cause::TargetUnreachable),
    )
    .await;
    // Messages change no HLR state: nothing audited in the dispatcher's name.
    let log = c.store.audit_since(0, 10_000).await.unwrap();
    assert!(log.iter().all(|e| e.actor != "dispatch"));
    c.stop().await;
}

#[tokio::test]
async fn a_console_status_to_a_talkgroup_reaches_every_affiliated_unit_on_the_air() {
    let db = TestDb::sqlite();
    let (c, h, mut sub) = console_controller(&db).await;
    let (mut g1, mut g2) = (gw(&c, 1).await, gw(&c, 2).await);
    // Units 2 and 3 at site 1, 4 at site 2, all affiliated to talkgroup 10.
    let (t2, t3) = (reg(&mut g1, 2).await, reg(&mut g1, 3).await);
    let t4 = reg(&mut g2, 4).await;
    let status = Command::Status {
        from: unit(1),
        target: talkgroup(10),
        code: 7,
    };
    assert_eq!(
        h.command("dispatch", status).await.unwrap(),
        Outcome::SentToTalkgroup { recipients: 3 }
    );
    let heard = |f: Frame| match f.msg {
        Message::StatusDelivery { tmsi, source, code } => (tmsi, source, code),
        other => panic!("{other:?}"),
    };
    let is_status = |f: &Frame| matches!(f.msg, Message::StatusDelivery { .. });
    let mut at1 = vec![
        heard(until(&mut g1, is_status).await),
        heard(until(&mut g1, is_status).await),
    ];
    at1.sort();
    let mut want = vec![(t2, unit(1), 7), (t3, unit(1), 7)];
    want.sort();
    assert_eq!(at1, want);
    assert_eq!(heard(until(&mut g2, is_status).await), (t4, unit(1), 7));
    assert_told(
        &mut sub,
        MessageKind::Status { code: 7 },
        talkgroup(10),
        Reply::SentToTalkgroup { recipients: 3 },
    )
    .await;
    c.stop().await;
}

#[tokio::test]
async fn console_short_data_to_a_unit_off_the_air_is_stored_then_delivered_when_it_registers() {
    for db in TestDb::all().await {
        let (c, h, mut sub) = console_controller(&db).await;
        let data = ShortData::new(b"return to base".to_vec()).unwrap();
        let send = Command::ShortData {
            from: unit(1),
            target: Target::Unit(unit(5)),
            data: data.clone(),
        };
        assert_eq!(
            h.command("dispatch", send).await.unwrap(),
            Outcome::Stored { recipients: 1 },
            "{}",
            db.name
        );
        assert_eq!(c.store.pending_short_data(imsi(5)).await.unwrap().len(), 1);
        assert_told(
            &mut sub,
            MessageKind::ShortData,
            Target::Unit(unit(5)),
            Reply::Stored { recipients: 1 },
        )
        .await;
        // Unit 5 powers on: the message is delivered with the dispatcher as its source.
        let mut g2 = gw(&c, 2).await;
        let t5 = reg(&mut g2, 5).await;
        assert_eq!(
            receive_short_data(&mut g2).await,
            (t5, unit(1), data),
            "{}",
            db.name
        );
        c.stop().await;
    }
}

#[tokio::test]
async fn a_console_message_is_refused_with_the_cause_a_radio_would_hear() {
    let db = TestDb::sqlite();
    let (c, h, mut sub) = console_controller(&db).await;
    let refusal = |r: Result<Outcome, CommandError>| match r {
        Err(CommandError::Refused(cause)) => cause,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let alert = |from, to| Command::CallAlert {
        from: unit(from),
        to: unit(to),
    };
    // No such unit: "invalid target", told to listeners too.
    let unknown = h.command("dispatch", alert(1, 99)).await.unwrap_err();
    assert_eq!(unknown.to_string(), "refused: invalid target (0x5D)");
    assert!(matches!(unknown, CommandError::Refused(Cause::InvalidTarget)));
    assert_told(
        &mut sub,
        MessageKind::CallAlert,
        Target::Unit(unit(99)),
        Reply::Refused(Cause::InvalidTarget),
    )
    .await;
    // Provisioned but off the air.
    assert_eq!(
        refusal(h.command("dispatch", alert(1, 2)).await),
        Cause::TargetUnreachable
    );
    // A talkgroup of a fleet that does not exist.
    let elsewhere = Command::Status {
        from: unit(1),
        target: Target::Talkgroup {
            fleet: FleetId::new(200).unwrap(),
            talkgroup: tg(10),
        },
        code: 1,
    };
    assert_eq!(
        refusal(h.command("dispatch", elsewhere).await),
        Cause::InvalidTarget
    );
    // The dispatcher's address is checked as a radio is, registration aside.
    assert_eq!(
        refusal(h.command("dispatch", alert(99, 2)).await),
        Cause::UnknownSubscriber
    );
    h.command(
        "alice",
        Command::Authorize {
            imsi: imsi(3),
            priority: None,
            permissions: Some(Permissions::parse("data").unwrap()),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        refusal(h.command("dispatch", alert(3, 2)).await),
        Cause::ServiceNotPermitted
    );
    h.command("alice", Command::Inhibit { imsi: imsi(1) })
        .await
        .unwrap();
    assert_eq!(
        refusal(h.command("dispatch", alert(1, 2)).await),
        Cause::UnitInhibited
    );
    c.stop().await;
    // A stopped controller refuses at once rather than leaving the console waiting.
    assert_eq!(
        refusal(h.command("dispatch", alert(2, 3)).await),
        Cause::ShuttingDown
    );
}

#[tokio::test]
async fn a_radio_command_nobody_can_hear_or_nobody_acknowledges_is_told_so() {
    let db = TestDb::sqlite();
    let mut cfg = call_config(&db, trunking(TrunkingMode::Message, EmergencyPolicy::Preempt));
    cfg.messaging.radio_command_timeout_ms = 5_000;
    cfg.messaging.radio_command_attempts = 2;
    // Only the handle applies the change (not the periodic follow, which could tell the
    // radio command's outcome before the handle tells the change); but the follow still
    // looks once, at some moment just after the start.
    cfg.registration.hlr_refresh_ms = 3_600_000;
    // Links that stay up through the skips below (15 s without a keepalive).
    cfg.link.keepalive_interval_ms = 5_000;
    provision_calls(&db).await;
    let c = trunkd::controller::start(cfg).await.unwrap();
    let h = c.handle();
    let (_, mut sub) = h.events();

    // Unit 4 is off the air: the subscriber changes, nothing is sent.
    h.command("alice", Command::Inhibit { imsi: imsi(4) })
        .await
        .unwrap();
    // (In either order: the periodic follow of the HLR, whose first look comes at some
    // moment after the start, may act on the change before the handle tells it.)
    let told = |k: &EventKind| {
        matches!(
            k,
            EventKind::SubscriberChanged { .. } | EventKind::RadioCommand { .. }
        )
    };
    let mut both = vec![event_where(&mut sub, told).await.kind.clone()];
    both.push(event_where(&mut sub, told).await.kind.clone());
    for expected in [
        EventKind::SubscriberChanged {
            imsi: imsi(4),
            unit: unit(4),
            actor: "alice".into(),
            change: "inhibited".into(),
        },
        EventKind::RadioCommand {
            imsi: imsi(4),
            command: RadioCommand::Inhibit,
            outcome: RadioOutcome::NotSent,
        },
    ] {
        assert!(both.contains(&expected), "{both:?}");
    }

    // Unit 1 is on the air but its gateway never acknowledges: sent twice, then given up.
    let mut g = gw(&c, 1).await;
    reg_all(&mut g, 1).await;
    h.command("bob", Command::Inhibit { imsi: imsi(1) })
        .await
        .unwrap();
    until(&mut g, |f| matches!(f.msg, Message::Inhibit { .. })).await;
    skip(Duration::from_secs(6)).await;
    until(&mut g, |f| matches!(f.msg, Message::Inhibit { .. })).await;
    skip(Duration::from_secs(6)).await;
    let given_up = event_where(
        &mut sub,
        |k| matches!(k, EventKind::RadioCommand { imsi: i, .. } if *i == imsi(1)),
    )
    .await;
    assert_eq!(
        given_up.kind,
        EventKind::RadioCommand {
            imsi: imsi(1),
            command: RadioCommand::Inhibit,
            outcome: RadioOutcome::Unacknowledged,
        }
    );
    c.stop().await;
}
