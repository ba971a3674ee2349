//! Events per second through the trunking state machine alone (target: at least
//! 1,000,000). Run: `cargo bench --bench trunking_core`. One event is one input
//! (a call request or a call end) at a 100-site system with two 6-slot carriers per
//! site, at about 80 % load so that grants, queueing and serving all happen.

use trunkd::core::trunking::{
    Action, CallRequest, EmergencyPolicy, Input, Party, RequestKind, SlotPolicy, Trunking, TrunkingConfig,
    TrunkingMode,
};
use trunkd::protocol::{CallId, FleetId, MemberId, Message, SiteId, TalkgroupId, Tmsi, Unit};

const SITES: u16 = 100;
const EVENTS: usize = 200_000;

fn main() {
    divan::main();
}

fn machine() -> Trunking {
    let mut m = Trunking::new(TrunkingConfig {
        slot_policy: SlotPolicy::LeastLoaded,
        emergency: EmergencyPolicy::Preempt,
        mode: TrunkingMode::Transmission,
        hang_time_ms: 10_000,
        quasi_hang_time_ms: 3_000,
        max_call_ms: 300_000,
        queue_depth: 64,
        queue_timeout_ms: Some(30_000),
    });
    for s in 1..=SITES {
        m.add_site(SiteId::new(s).unwrap(), 2, 6);
    }
    m.add_call_ids(1..u64::MAX);
    m
}

/// Drives `EVENTS` inputs: each step either requests a call at a site or ends the
/// oldest running call there, keeping about 9 of 11 slots busy per site.
#[divan::bench(sample_count = 10)]
fn requests_and_ends(bencher: divan::Bencher) {
    bencher
        .counter(divan::counter::ItemsCount::new(EVENTS))
        .with_inputs(machine)
        .bench_local_values(|mut m| {
            let fleet = FleetId::new(1).unwrap();
            let mut running: Vec<std::collections::VecDeque<CallId>> =
                vec![Default::default(); SITES as usize];
            let mut now = 0i64;
            for i in 0..EVENTS {
                now += 1;
                let s = (i % SITES as usize) as u16 + 1;
                let site = SiteId::new(s).unwrap();
                let q = &mut running[s as usize - 1];
                let actions = if q.len() >= 9 {
                    let call = q.pop_front().unwrap();
                    m.handle(Input::End { site, call }, now)
                } else {
                    let n = (i % 60_000) as u32 + 1;
                    m.handle(
                        Input::Request(CallRequest {
                            txn: n,
                            caller: Party {
                                tmsi: Tmsi::new(n).unwrap(),
                                unit: Unit {
                                    fleet,
                                    member: MemberId::new((n % 65_535) as u16 + 1).unwrap(),
                                },
                                site,
                            },
                            priority: (i % 16) as u8,
                            kind: RequestKind::Group {
                                fleet,
                                talkgroup: TalkgroupId::new((n % 65_535) as u16 + 1).unwrap(),
                                sites: vec![],
                                emergency: false,
                            },
                        }),
                        now,
                    )
                };
                for a in &actions {
                    if let Action::Send(_, f) = a {
                        if let Message::ChannelGrant { call, .. } = f.msg {
                            running[s as usize - 1].push_back(call);
                        }
                    }
                }
                divan::black_box(actions);
            }
            m
        });
}
