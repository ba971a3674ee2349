//! Property tests of the trunking state machine: random sequences of requests, ends,
//! PTT, faults, link losses and timer ticks, checking after every step that no slot is
//! granted twice, every granted slot is freed exactly once, queues are ordered (no
//! emergency behind a non-emergency) and no slot stays free while a request waits.
//! `TRACE_OPS=1` prints every input and the actions it produced.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use trunkd::core::trunking::{
    Action, CallEvent, CallRequest, EmergencyPolicy, Input, Party, RequestKind, SlotPolicy, Trunking,
    TrunkingConfig, TrunkingMode,
};
use trunkd::protocol::{
    CallId, Carrier, FleetId, MemberId, Message, ResourceState, SiteId, Slot, SlotSelector, TalkgroupId,
    Tmsi, Unit,
};

#[derive(Clone, Debug)]
enum Op {
    Group {
        caller: u8,
        tg: u8,
        sites: Vec<u8>,
        emergency: bool,
        priority: u8,
    },
    Private {
        caller: u8,
        target: u8,
        priority: u8,
    },
    End {
        call_pick: u8,
    },
    Press {
        call_pick: u8,
        unit: u8,
    },
    Release {
        call_pick: u8,
    },
    Fault {
        site: u8,
        carrier: u8,
        slot: u8,
        faulty: bool,
    },
    Cancel {
        caller: u8,
        txn_pick: u8,
    },
    Gone {
        unit: u8,
    },
    /// The unit's TMSI changes (a location update), then it leaves under the new one.
    Renumber {
        unit: u8,
    },
    LinkDown {
        site: u8,
    },
    Advance {
        ms: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..24u8, 1..6u8, proptest::collection::vec(1..4u8, 0..3), proptest::bool::weighted(0.15), 0..16u8)
            .prop_map(|(caller, tg, sites, emergency, priority)| Op::Group { caller, tg, sites, emergency, priority }),
        2 => (0..24u8, 0..24u8, 0..16u8).prop_map(|(caller, target, priority)| Op::Private { caller, target, priority }),
        3 => any::<u8>().prop_map(|call_pick| Op::End { call_pick }),
        1 => (any::<u8>(), 0..24u8).prop_map(|(call_pick, unit)| Op::Press { call_pick, unit }),
        1 => any::<u8>().prop_map(|call_pick| Op::Release { call_pick }),
        1 => (1..4u8, 0..2u8, 0..6u8, any::<bool>()).prop_map(|(site, carrier, slot, faulty)| Op::Fault { site, carrier, slot, faulty }),
        1 => (0..24u8, any::<u8>()).prop_map(|(caller, txn_pick)| Op::Cancel { caller, txn_pick }),
        1 => (0..24u8).prop_map(|unit| Op::Gone { unit }),
        1 => (0..24u8).prop_map(|unit| Op::Renumber { unit }),
        1 => (1..4u8).prop_map(|site| Op::LinkDown { site }),
        2 => (0..20_000u16).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn config(emergency: EmergencyPolicy, mode: TrunkingMode) -> TrunkingConfig {
    TrunkingConfig {
        slot_policy: SlotPolicy::LeastLoaded,
        emergency,
        mode,
        hang_time_ms: 10_000,
        quasi_hang_time_ms: 3_000,
        max_call_ms: 60_000,
        queue_depth: 6,
        queue_timeout_ms: Some(30_000),
    }
}

fn party(n: u8) -> Party {
    let site = SiteId::new(u16::from(n % 3) + 1).unwrap();
    Party {
        tmsi: Tmsi::new(u32::from(n) + 1).unwrap(),
        unit: Unit {
            fleet: FleetId::new(1).unwrap(),
            member: MemberId::new(u16::from(n) + 1).unwrap(),
        },
        site,
    }
}

/// Who holds which slot, according to the actions alone.
#[derive(Default)]
struct Model {
    held: HashMap<(SiteId, u8, u8), CallId>,
    live: HashMap<CallId, Vec<(SiteId, u8, u8)>>,
    ended: std::collections::HashSet<CallId>,
}

impl Model {
    fn apply(&mut self, actions: &[Action]) -> Result<(), String> {
        for a in actions {
            let Action::Send(_, f) = a else { continue };
            match &f.msg {
                Message::ChannelGrant { call, sites, .. } => {
                    if self.ended.contains(call) {
                        return Err(format!("grant for ended call {call}"));
                    }
                    for g in sites {
                        let key = (g.site, g.carrier.get(), g.slot.get());
                        if let Some(other) = self.held.get(&key) {
                            if other != call {
                                return Err(format!("slot {key:?} granted to {call} while {other} holds it"));
                            }
                        }
                    }
                    // The grant lists every slot the call holds now.
                    if let Some(old) = self.live.remove(call) {
                        for k in old {
                            self.held.remove(&k);
                        }
                    }
                    let keys: Vec<_> = sites
                        .iter()
                        .map(|g| (g.site, g.carrier.get(), g.slot.get()))
                        .collect();
                    for k in &keys {
                        self.held.insert(*k, *call);
                    }
                    self.live.insert(*call, keys);
                }
                Message::CallEnd { call, .. } | Message::Preempted { call, .. } => {
                    if let Some(keys) = self.live.remove(call) {
                        for k in keys {
                            self.held.remove(&k);
                        }
                        self.ended.insert(*call);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>, emergency: EmergencyPolicy, mode: TrunkingMode) -> Result<(), TestCaseError> {
    let mut m = Trunking::new(config(emergency, mode));
    m.add_call_ids(1..u64::MAX);
    for s in 1..=3 {
        m.add_site(SiteId::new(s).unwrap(), if s == 1 { 1 } else { 2 }, 6);
    }
    let mut now = 0i64;
    let mut txn = 0u32;
    let mut txns: Vec<(u8, u32)> = Vec::new();
    let mut calls: Vec<CallId> = Vec::new();
    let mut model = Model::default();
    let mut records: HashMap<CallId, usize> = HashMap::new();
    let mut events = Events::default();
    let fleet = FleetId::new(1).unwrap();
    for op in ops {
        txn += 1;
        let input = match op {
            Op::Group {
                caller,
                tg,
                sites,
                emergency,
                priority,
            } => {
                txns.push((caller, txn));
                Input::Request(CallRequest {
                    txn,
                    caller: party(caller),
                    priority,
                    kind: RequestKind::Group {
                        fleet,
                        talkgroup: TalkgroupId::new(u16::from(tg)).unwrap(),
                        sites: sites
                            .into_iter()
                            .map(|s| SiteId::new(u16::from(s)).unwrap())
                            .collect(),
                        emergency,
                    },
                })
            }
            Op::Private {
                caller,
                target,
                priority,
            } if caller != target => {
                txns.push((caller, txn));
                Input::Request(CallRequest {
                    txn,
                    caller: party(caller),
                    priority,
                    kind: RequestKind::Private {
                        target: party(target),
                    },
                })
            }
            Op::Private { .. } => continue,
            Op::End { call_pick } if !calls.is_empty() => {
                let call = calls[usize::from(call_pick) % calls.len()];
                Input::End {
                    site: SiteId::new(u16::from(call_pick % 3) + 1).unwrap(),
                    call,
                }
            }
            Op::Press { call_pick, unit } if !calls.is_empty() => {
                let call = calls[usize::from(call_pick) % calls.len()];
                Input::PttPress {
                    site: party(unit).site,
                    txn,
                    call,
                    party: party(unit),
                }
            }
            Op::Release { call_pick } if !calls.is_empty() => {
                let call = calls[usize::from(call_pick) % calls.len()];
                let tmsi = Tmsi::new(u32::from(call_pick % 24) + 1).unwrap();
                Input::PttRelease {
                    site: SiteId::new(1).unwrap(),
                    txn,
                    call,
                    tmsi,
                }
            }
            Op::End { .. } | Op::Press { .. } | Op::Release { .. } => continue,
            Op::Fault {
                site,
                carrier,
                slot,
                faulty,
            } => Input::SlotStatus {
                site: SiteId::new(u16::from(site)).unwrap(),
                carrier: Carrier::new(carrier).unwrap(),
                slot: SlotSelector::Slot(Slot::new(slot).unwrap()),
                state: if faulty {
                    ResourceState::Faulty
                } else {
                    ResourceState::InService
                },
            },
            Op::Cancel { caller, txn_pick } if !txns.is_empty() => {
                let (_, request_txn) = txns[usize::from(txn_pick) % txns.len()];
                Input::Cancel {
                    site: party(caller).site,
                    txn,
                    tmsi: party(caller).tmsi,
                    request_txn,
                }
            }
            Op::Cancel { .. } => continue,
            Op::Gone { unit } => Input::UnitGone(party(unit).tmsi),
            Op::Renumber { unit } => {
                let new = Tmsi::new(1000 + u32::from(unit)).unwrap();
                let actions = m.handle(
                    Input::TmsiChanged {
                        old: party(unit).tmsi,
                        new,
                    },
                    now,
                );
                model.apply(&actions).map_err(TestCaseError::fail)?;
                collect(&actions, &mut calls, &mut records, &mut events)?;
                m.check_invariants().map_err(TestCaseError::fail)?;
                Input::UnitGone(new)
            }
            Op::LinkDown { site } => {
                // The site cannot be told: its slots are released silently.
                let site = SiteId::new(u16::from(site)).unwrap();
                model.held.retain(|k, _| k.0 != site);
                for keys in model.live.values_mut() {
                    keys.retain(|k| k.0 != site);
                }
                Input::LinkDown(site)
            }
            Op::Advance { ms } => {
                now += i64::from(ms);
                let actions = m.tick(now);
                model.apply(&actions).map_err(TestCaseError::fail)?;
                collect(&actions, &mut calls, &mut records, &mut events)?;
                m.check_invariants().map_err(TestCaseError::fail)?;
                continue;
            }
        };
        if std::env::var("TRACE_OPS").is_ok() {
            eprintln!("OP {input:?}");
        }
        let actions = m.handle(input, now);
        if std::env::var("TRACE_OPS").is_ok() {
            for a in &actions {
                eprintln!("   {a:?}");
            }
        }
        model.apply(&actions).map_err(TestCaseError::fail)?;
        collect(&actions, &mut calls, &mut records, &mut events)?;
        m.check_invariants().map_err(TestCaseError::fail)?;
        for s in 1..=3 {
            let classes = m.queue_classes(SiteId::new(s).unwrap());
            prop_assert!(
                classes.windows(2).all(|w| w[0] >= w[1]),
                "queue out of order: {classes:?}"
            );
        }
        // The machine never asks to be woken in the past.
        if let Some(w) = m.next_wakeup() {
            prop_assert!(
                w > now,
                "wakeup at {w} is not after now ({now}): a timer was missed"
            );
        }
    }
    Ok(())
}

/// What the machine's events said so far.
#[derive(Default)]
struct Events {
    /// Requests waiting, by (site, txn), per `Queued` and `QueueLeft`.
    waiting: HashSet<(SiteId, u32)>,
    /// Calls with a `Granted` event.
    granted: HashSet<CallId>,
}

fn collect(
    actions: &[Action],
    calls: &mut Vec<CallId>,
    records: &mut HashMap<CallId, usize>,
    events: &mut Events,
) -> Result<(), TestCaseError> {
    for a in actions {
        match a {
            Action::Send(_, f) => {
                if let Message::ChannelGrant { call, .. } = f.msg {
                    if !calls.contains(&call) {
                        calls.push(call);
                    }
                }
            }
            Action::Event(CallEvent::Ended(r)) => {
                // A request never granted had no call (and no id).
                prop_assert_eq!(r.call.is_some(), r.granted_ms.is_some());
                if let Some(call) = r.call {
                    let n = records.entry(call).or_default();
                    *n += 1;
                    prop_assert_eq!(*n, 1, "call {} recorded twice", call);
                }
            }
            Action::Event(CallEvent::Queued { site, txn, .. }) => {
                prop_assert!(events.waiting.insert((*site, *txn)), "request queued twice");
            }
            Action::Event(CallEvent::QueueLeft { site, txn, .. }) => {
                prop_assert!(
                    events.waiting.remove(&(*site, *txn)),
                    "a request left a queue it was not in"
                );
            }
            Action::Event(CallEvent::Granted { call, .. }) => {
                prop_assert!(events.granted.insert(*call), "call {} granted twice", call);
            }
            Action::Event(_) => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
    ))]

    #[test]
    fn invariants_hold_with_preemption_and_message_trunking(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops, EmergencyPolicy::Preempt, TrunkingMode::Message)?;
    }

    #[test]
    fn invariants_hold_with_queue_head_and_transmission_trunking(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops, EmergencyPolicy::QueueHead, TrunkingMode::Transmission)?;
    }

    #[test]
    fn invariants_hold_with_quasi_transmission_trunking(ops in proptest::collection::vec(op(), 1..300)) {
        run(ops, EmergencyPolicy::Preempt, TrunkingMode::QuasiTransmission)?;
    }
}
