//! The call-load scenario: registered units at every site make group, private and
//! emergency calls with Poisson arrivals and exponential holding times at a chosen
//! offered load per site, press and release PTT within their calls, and some move to
//! another site between calls (location update there). Reports grants, queued, denied
//! by cause, preempted, request-to-grant latency percentiles and the measured
//! probability of waiting next to Erlang C.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use anyhow::bail;
use trunkd::core::auth::unit_response;
use trunkd::link::gateway::GatewayLink;
use trunkd::protocol::{
    CallId, CallScope, Cause, Frame, LocationReason, Message, MessageType, ShortData, TalkgroupId, Target,
    Tmsi,
};

use trunkd::sim::{erlang_c, radio_command_answer, SplitMix64 as Rng};

use crate::load::{load_fleet, register_all, FleetArgs, SimUnit};
use indicatif::ProgressBar;

use crate::html::{percentile_points, server_points, table, Page};
use crate::report::{bar, causes_json, in_cause_order, Latency, Output};
use crate::server_metrics::ServerSide;

/// The server's histogram series of its grants, at once and after queueing.
const GRANT_AT_ONCE: &str = "trunkd_call_request_to_grant_seconds{queued=\"false\"}";
const GRANT_AFTER_QUEUE: &str = "trunkd_call_request_to_grant_seconds{queued=\"true\"}";

/// The command-line arguments of the call load (`trunksim calls`, `trunksim soak`).
#[derive(clap::Args, Clone, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Offered load per site, in Erlang.
    #[arg(long, default_value_t = 8.0)]
    pub erlang: f64,
    /// Mean holding time, ms.
    #[arg(long, default_value_t = 2000)]
    pub hold_ms: u64,
    /// How long to offer load, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Share of private calls.
    #[arg(long, default_value_t = 0.6)]
    pub private_share: f64,
    /// Share of emergency calls.
    #[arg(long, default_value_t = 0.01)]
    pub emergency_share: f64,
    /// Share of arrivals that are a status message to another unit of the site.
    #[arg(long, default_value_t = 0.02)]
    pub status_share: f64,
    /// Share of arrivals that are a short data message to another unit of the site.
    #[arg(long, default_value_t = 0.02)]
    pub data_share: f64,
    /// Share of finished calls after which the caller moves to the next site.
    #[arg(long, default_value_t = 0.05)]
    pub move_share: f64,
    /// Traffic slots per site for the Erlang C comparison (carriers x slots - 1).
    #[arg(long, default_value_t = 11)]
    pub slots: u32,
    /// Seed of the random streams.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub out: Output,
}

/// Runs the call load `args` asks for.
pub async fn run_args(args: &CallArgs) -> anyhow::Result<Report> {
    let load = CallLoad {
        erlang_per_site: args.erlang,
        hold: Duration::from_millis(args.hold_ms.max(1)),
        duration: Duration::from_secs_f64(args.duration.max(0.1)),
        private_share: args.private_share,
        emergency_share: args.emergency_share,
        status_share: args.status_share,
        data_share: args.data_share,
        move_share: args.move_share,
        slots_per_site: args.slots,
        seed: args.seed,
    };
    run(&args.fleet, load, &args.out).await
}

/// Scenario settings.
pub struct CallLoad {
    /// Offered load per site, Erlang.
    pub erlang_per_site: f64,
    /// Mean holding time.
    pub hold: Duration,
    /// How long to offer load.
    pub duration: Duration,
    /// Share of private calls (the rest: group, less emergencies).
    pub private_share: f64,
    /// Share of emergency calls.
    pub emergency_share: f64,
    /// Share of status messages (taken after the emergency and private shares).
    pub status_share: f64,
    /// Share of short data messages (after the status share).
    pub data_share: f64,
    /// Share of finished calls after which the caller moves to the next site.
    pub move_share: f64,
    /// Traffic slots per site (carriers × slots − 1), for the Erlang C comparison.
    pub slots_per_site: u32,
    /// Seed of the random streams.
    pub seed: u64,
}

/// Totals over all gateways.
#[derive(Default)]
pub struct Report {
    requests: u64,
    granted: u64,
    queued: u64,
    preempted: u64,
    moves: u64,
    no_idle_unit: u64,
    denied: HashMap<Cause, u64>,
    /// Status and short data messages.
    messages: Messages,
    /// Each call preempted by an emergency, once.
    preempted_calls: HashSet<CallId>,
    /// Each call that ended, once, with its cause. A call that spans sites ends at each
    /// of their gateways (a group call that units at two sites joined): keyed by call,
    /// the merge counts it once.
    ended: HashMap<CallId, Cause>,
    /// Request to grant of the calls granted at once: the server's setup path.
    at_once: Latency,
    /// Request to grant of the calls that waited in a busy queue first.
    waited: Latency,
    /// Request to grant of the emergency calls (also in one of the two above).
    emergencies: Latency,
    /// Per site: calls in progress (started by its units) and requests waiting in its
    /// busy queue, sampled every [`sample_step`].
    timelines: Vec<(u16, Vec<(u32, u32)>)>,
}

impl Report {
    fn merge(&mut self, o: Report) {
        self.requests += o.requests;
        self.granted += o.granted;
        self.queued += o.queued;
        self.preempted += o.preempted;
        self.moves += o.moves;
        self.no_idle_unit += o.no_idle_unit;
        for (c, n) in o.denied {
            *self.denied.entry(c).or_default() += n;
        }
        self.ended.extend(o.ended);
        self.preempted_calls.extend(o.preempted_calls);
        self.messages.merge(o.messages);
        self.at_once.merge(&o.at_once);
        self.waited.merge(&o.waited);
        self.emergencies.merge(&o.emergencies);
        self.timelines.extend(o.timelines);
    }

    /// Calls ended, by cause.
    fn ends(&self) -> HashMap<Cause, u64> {
        let mut by_cause: HashMap<Cause, u64> = HashMap::new();
        for cause in self.ended.values() {
            *by_cause.entry(*cause).or_default() += 1;
        }
        by_cause
    }
}

/// A unit that moves hands its keys to the next site's gateway through this board.
type Movers = Arc<Mutex<HashMap<usize, Vec<(SimUnit, Tmsi)>>>>;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Arrival,
    Release(CallId),
    Press(CallId),
    End(CallId),
}

/// After firing, the clock naps at least this long, so that at high load it wakes for
/// a handful of events at a time; an event fires at most this late.
const CLOCK_NAP: Duration = Duration::from_micros(100);

/// Fires the scenario's timed events (arrivals, PTT, call ends) at their own instants,
/// on a thread of its own. tokio's timer wheel has a 1 ms granularity: it would bunch
/// every event due within a millisecond, at every gateway at once, into one burst,
/// which real radios, not sharing a clock, never produce.
#[derive(Clone)]
struct Clock {
    shared: Arc<(Mutex<ClockState>, std::sync::Condvar)>,
    gateway: usize,
}

#[derive(Default)]
struct ClockState {
    due: BinaryHeap<std::cmp::Reverse<(Instant, usize, Timer)>>,
    stopped: bool,
}

impl Clock {
    /// Starts the clock thread; `gateways[i]` receives gateway `i`'s events.
    fn start(gateways: Vec<mpsc::UnboundedSender<Timer>>) -> Clock {
        let shared: Arc<(Mutex<ClockState>, std::sync::Condvar)> = Arc::default();
        let clock = Clock {
            shared: shared.clone(),
            gateway: 0,
        };
        std::thread::spawn(move || {
            let (state, wake) = &*shared;
            let mut fired = Vec::new();
            let Ok(mut st) = state.lock() else { return };
            while !st.stopped {
                let now = Instant::now();
                while let Some(&std::cmp::Reverse((at, gateway, timer))) = st.due.peek() {
                    if at > now {
                        break;
                    }
                    st.due.pop();
                    fired.push((gateway, timer));
                }
                drop(st);
                for (gateway, timer) in fired.drain(..) {
                    // A gateway that has finished no longer listens.
                    let _ = gateways[gateway].send(timer);
                }
                let Ok(guard) = state.lock() else { return };
                let nap = guard.due.peek().map_or(Duration::from_secs(1), |e| {
                    e.0 .0.saturating_duration_since(Instant::now()).max(CLOCK_NAP)
                });
                st = match wake.wait_timeout(guard, nap) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
        });
        clock
    }

    /// This clock, for gateway `gateway`.
    fn of(&self, gateway: usize) -> Clock {
        Clock {
            shared: self.shared.clone(),
            gateway,
        }
    }

    /// Fires `timer` at `at`; wakes the clock only if that is before everything else.
    fn at(&self, at: Instant, timer: Timer) {
        let (state, wake) = &*self.shared;
        if let Ok(mut st) = state.lock() {
            let earliest = st.due.peek().is_none_or(|e| at < e.0 .0);
            st.due.push(std::cmp::Reverse((at, self.gateway, timer)));
            if earliest {
                wake.notify_one();
            }
        }
    }

    /// Ends the clock thread.
    fn stop(&self) {
        let (state, wake) = &*self.shared;
        if let Ok(mut st) = state.lock() {
            st.stopped = true;
        }
        wake.notify_one();
    }
}

/// Registers the fleet of `dir`, then offers the call load and prints the report.
pub async fn run(fleet: &FleetArgs, load: CallLoad, out: &Output) -> anyhow::Result<Report> {
    let (sites, per_site) = load_fleet(&fleet.dir, fleet.limit)?;
    let servers = &fleet.controllers()?;
    let total: usize = per_site.iter().map(Vec::len).sum();
    println!("registering {total} units at {} sites", sites.len());
    let (gateways, reg) = register_all(servers, &sites, per_site, 32).await?;
    if reg.accepted == 0 {
        bail!("no unit registered");
    }
    println!(
        "{} registered; offering {:.1} Erlang per site for {:?}",
        reg.accepted, load.erlang_per_site, load.duration
    );
    let load = Arc::new(load);
    let server_side = ServerSide::start(&out.api).await;
    let movers: Movers = Arc::default();
    let n_sites = gateways.len();
    let (fire, events): (Vec<_>, Vec<_>) = (0..n_sites).map(|_| mpsc::unbounded_channel()).unzip();
    let clock = Clock::start(fire);
    let progress = bar(
        None,
        &format!(
            "{{spinner}} calls {{elapsed}} of {:?}  {{pos}} granted  {{rate}}",
            load.duration
        ),
    );
    let mut tasks = Vec::new();
    for ((i, (link, _, units, tmsis)), events) in gateways.into_iter().enumerate().zip(events) {
        let next_site = (i + 1) % n_sites;
        let units: Vec<(SimUnit, Tmsi)> = units
            .into_iter()
            .zip(tmsis)
            .filter_map(|(u, t)| t.map(|t| (u, t)))
            .collect();
        tasks.push(tokio::spawn(gateway(
            link,
            units,
            i,
            next_site,
            load.clone(),
            movers.clone(),
            (clock.of(i), events, progress.clone()),
        )));
    }
    let started = Instant::now();
    let mut report = Report::default();
    for t in tasks {
        report.merge(t.await??);
    }
    clock.stop();
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    print_report(&report, &load, n_sites, elapsed);
    let mut json_report = report.json(&load, n_sites, elapsed);
    println!("server's own time from request to grant, from its /metrics:");
    let series = [
        (GRANT_AT_ONCE, "  granted at once:", "granted_at_once"),
        (GRANT_AFTER_QUEUE, "  after queueing:", "after_queueing"),
    ];
    server_side.report(&series, &mut json_report).await;
    out.write(&json_report, || report.page(&json_report, &load))?;
    Ok(report)
}

struct Pending {
    unit: usize,
    target: Option<usize>,
    sent: Instant,
    queued: bool,
    /// How long the call is held once granted (drawn with its arrival).
    hold: Duration,
    emergency: bool,
}

struct Active {
    caller: usize,
    target: Option<usize>,
}

/// One site: arrivals, PTT and ends for the units registered there.
async fn gateway(
    mut link: GatewayLink,
    mut units: Vec<(SimUnit, Tmsi)>,
    me: usize,
    next_site: usize,
    load: Arc<CallLoad>,
    movers: Movers,
    (clock, mut events, progress): (Clock, mpsc::UnboundedReceiver<Timer>, ProgressBar),
) -> anyhow::Result<Report> {
    let mut rng = Rng(load.seed ^ (me as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut report = Report::default();
    let mut idle: Vec<usize> = (0..units.len()).collect();
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut active: HashMap<CallId, Active> = HashMap::new();
    let mut arriving: HashMap<u32, (SimUnit, Tmsi)> = HashMap::new();
    let mut messages: HashMap<u32, (Kind, Instant)> = HashMap::new();
    let mut offered = Offered::new(&load, me);
    let mut upcoming = offered.draw();
    let start = Instant::now();
    let stop_at = start + load.duration;
    let mut next_arrival = start + upcoming.after;
    clock.at(next_arrival, Timer::Arrival);
    let mut keepalive = tokio::time::interval(link.keepalive_interval());
    let mut check_movers = tokio::time::interval(Duration::from_millis(100));
    let mut sample = tokio::time::interval(sample_step(load.duration));
    let mut timeline = Vec::new();
    loop {
        let now = Instant::now();
        // Short data is delivered after its sender's ACK: a little longer for deliveries
        // still to come to this site's units (those to units that moved go elsewhere).
        let undelivered = report.messages.data_stored.len() > report.messages.data_delivered.len() as u64;
        let settled = !undelivered || now > stop_at + Duration::from_secs(2);
        if now >= stop_at && pending.is_empty() && active.is_empty() && messages.is_empty() && settled {
            break;
        }
        if now > stop_at + load.hold * 10 {
            break; // calls still open long after the end: give up on them
        }
        tokio::select! {
            Some(first) = events.recv() => {
                // This event and every other already due, then one write for all.
                let mut timer = Some(first);
                while let Some(t) = timer {
                    let now = Instant::now();
                    match t {
                        Timer::Arrival => {
                            if now < stop_at {
                                let this = upcoming;
                                upcoming = offered.draw();
                                next_arrival += upcoming.after;
                                clock.at(next_arrival, Timer::Arrival);
                                if matches!(this.kind, Kind::Status | Kind::ShortData) {
                                    message(&mut link, &mut rng, this.kind, &units, &mut messages, &mut report).await?;
                                } else {
                                    arrive(&mut link, &mut rng, this, &units, &mut idle, &mut pending, &mut report).await?;
                                }
                            }
                        }
                        Timer::Release(call) => {
                            if let Some(a) = active.get(&call) {
                                let tmsi = units[a.caller].1;
                                link.queue_request(Message::PttRelease { call, tmsi }).await?;
                                clock.at(now + Duration::from_millis(50), Timer::Press(call));
                            }
                        }
                        Timer::Press(call) => {
                            if let Some(a) = active.get(&call) {
                                let tmsi = units[a.caller].1;
                                link.queue_request(Message::PttPress { call, tmsi }).await?;
                            }
                        }
                        Timer::End(call) => {
                            if active.contains_key(&call) {
                                link.queue_request(Message::CallEnd { call, cause: Cause::Normal }).await?;
                            }
                        }
                    }
                    timer = events.try_recv().ok();
                }
                link.flush().await?;
            }
            _ = keepalive.tick() => link.keepalive().await?,
            _ = sample.tick() => {
                let queued = pending.values().filter(|p| p.queued).count();
                timeline.push((active.len() as u32, queued as u32));
            }
            _ = check_movers.tick() => {
                let incoming = movers.lock().map(|mut m| m.remove(&me).unwrap_or_default()).unwrap_or_default();
                for (unit, tmsi) in incoming {
                    let txn = link.queue_request(Message::LocationUpdate { tmsi, reason: LocationReason::SiteChange }).await?;
                    arriving.insert(txn, (unit, tmsi));
                }
                link.flush().await?;
            }
            f = link.recv_service() => {
                // This frame and every other already read; the answers they need, in one write.
                let mut frame = Some(f?);
                while let Some(f) = frame {
                    if let Some((unit, _)) = arriving.get(&f.txn) {
                        match f.msg {
                            Message::AuthChallenge { rand } => {
                                let res = unit_response(&unit.k, &unit.opc, &rand);
                                link.feed(Frame::new(f.txn, Message::AuthResponse { res })).await?;
                            }
                            Message::LocationAccept { tmsi } => {
                                let (unit, _) = arriving.remove(&f.txn).expect("present");
                                units.push((unit, tmsi));
                                idle.push(units.len() - 1);
                                report.moves += 1;
                            }
                            _ => { arriving.remove(&f.txn); }
                        }
                    } else if let Some(ack) = radio_command_answer(&f, |t| units.iter().any(|(_, u)| *u == t)) {
                        link.feed(ack).await?;
                    } else if let Some(answer) = report.messages.on_frame(&f, &mut messages) {
                        if let Some(answer) = answer {
                            link.feed(answer).await?;
                        }
                    } else {
                        let granted = report.granted;
                        on_frame(f, &mut rng, &load, &units, &mut idle, &mut pending, &mut active, &clock, &mut report, |caller| {
                            // Some callers move to the next site once their call is over.
                            if load.move_share > 0.0 && next_site != me {
                                Some(caller)
                            } else {
                                None
                            }
                        }, &movers, next_site)?;
                        progress.inc(report.granted - granted);
                    }
                    frame = link.buffered().await?;
                }
                link.flush().await?;
            }
        }
    }
    report.timelines.push((link.site().get(), timeline));
    Ok(report)
}

async fn arrive(
    link: &mut GatewayLink,
    rng: &mut Rng,
    call: Arrival,
    units: &[(SimUnit, Tmsi)],
    idle: &mut Vec<usize>,
    pending: &mut HashMap<u32, Pending>,
    report: &mut Report,
) -> anyhow::Result<()> {
    if idle.is_empty() {
        report.no_idle_unit += 1;
        return Ok(());
    }
    let caller = idle.swap_remove(rng.below(idle.len()));
    let tmsi = units[caller].1;
    let talkgroup = |tg: u16| TalkgroupId::new(tg).expect("talkgroups 1 and 2");
    let (msg, target) = match call.kind {
        Kind::Emergency => (
            Message::EmergencyCallReq {
                tmsi,
                talkgroup: talkgroup(1),
            },
            None,
        ),
        Kind::Private if !idle.is_empty() => {
            let target = idle.swap_remove(rng.below(idle.len()));
            (
                Message::PrivateCallReq {
                    tmsi,
                    target: units[target].0.unit,
                },
                Some(target),
            )
        }
        // A private call with nobody idle to call becomes a call on talkgroup 1 (messages
        // do not come here: `message` sends them).
        Kind::Private | Kind::Group(_) | Kind::Status | Kind::ShortData => (
            Message::GroupCallReq {
                tmsi,
                talkgroup: talkgroup(if let Kind::Group(tg) = call.kind { tg } else { 1 }),
                scope: CallScope::Local,
            },
            None,
        ),
    };
    let txn = link.queue_request(msg).await?;
    report.requests += 1;
    pending.insert(
        txn,
        Pending {
            unit: caller,
            target,
            sent: Instant::now(),
            queued: false,
            hold: call.hold,
            emergency: call.kind == Kind::Emergency,
        },
    );
    Ok(())
}

/// Sends a status or a short data message from a unit of the site to another.
async fn message(
    link: &mut GatewayLink,
    rng: &mut Rng,
    kind: Kind,
    units: &[(SimUnit, Tmsi)],
    messages: &mut HashMap<u32, (Kind, Instant)>,
    report: &mut Report,
) -> anyhow::Result<()> {
    if units.len() < 2 {
        report.no_idle_unit += 1;
        return Ok(());
    }
    let from = rng.below(units.len());
    let to = (from + 1 + rng.below(units.len() - 1)) % units.len();
    let (tmsi, target) = (units[from].1, Target::Unit(units[to].0.unit));
    let msg = if kind == Kind::Status {
        report.messages.status_sent += 1;
        Message::StatusReq {
            tmsi,
            target,
            code: 7,
        }
    } else {
        report.messages.data_sent += 1;
        let data = ShortData::new(b"trunksim: position report".to_vec()).expect("short enough");
        Message::ShortDataReq { tmsi, target, data }
    };
    let txn = link.queue_request(msg).await?;
    messages.insert(txn, (kind, Instant::now()));
    Ok(())
}

/// What became of the status and short data messages, sent and received.
#[derive(Default)]
struct Messages {
    status_sent: u64,
    /// From STATUS_REQ to its ACK (the recipient's gateway acknowledged it).
    status_acked: Latency,
    /// STATUS_DELIVERY frames received (and acknowledged).
    status_delivered: u64,
    data_sent: u64,
    /// From SHORT_DATA_REQ to its ACK (stored).
    data_stored: Latency,
    /// SHORT_DATA_DELIVERY message ids received (and acknowledged), once each.
    data_delivered: HashSet<u64>,
    denied: HashMap<Cause, u64>,
}

impl Messages {
    fn merge(&mut self, o: Messages) {
        self.status_sent += o.status_sent;
        self.status_acked.merge(&o.status_acked);
        self.status_delivered += o.status_delivered;
        self.data_sent += o.data_sent;
        self.data_stored.merge(&o.data_stored);
        self.data_delivered.extend(o.data_delivered);
        for (c, n) in o.denied {
            *self.denied.entry(c).or_default() += n;
        }
    }

    /// Takes `f` if it is about messages: the answer to one of ours (`Some(None)`), or
    /// a delivery (`Some(Some(its acknowledgement))`); `None` for any other frame.
    fn on_frame(&mut self, f: &Frame, open: &mut HashMap<u32, (Kind, Instant)>) -> Option<Option<Frame>> {
        match &f.msg {
            Message::StatusDelivery { .. } => {
                self.status_delivered += 1;
                let ack = Message::Ack {
                    acked: MessageType::StatusDelivery,
                };
                Some(Some(Frame::new(f.txn, ack)))
            }
            Message::ShortDataDelivery { id, .. } => {
                self.data_delivered.insert(id.get());
                Some(Some(Frame::new(f.txn, Message::ShortDataAck { id: *id })))
            }
            Message::Ack { .. } | Message::Deny { .. } => {
                let (kind, sent) = open.remove(&f.txn)?;
                match (&f.msg, kind) {
                    (Message::Deny { cause, .. }, _) => *self.denied.entry(*cause).or_default() += 1,
                    (_, Kind::Status) => self.status_acked.record(sent.elapsed()),
                    _ => self.data_stored.record(sent.elapsed()),
                }
                Some(None)
            }
            _ => None,
        }
    }
}

/// The kind of a call offered.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Emergency,
    Private,
    /// On talkgroup 1 or 2.
    Group(u16),
    /// A status message to another unit of the site.
    Status,
    /// A short data message to another unit of the site.
    ShortData,
}

/// A call offered to a site: how long after the one before it arrives, its kind, and
/// how long it is held once granted.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Arrival {
    after: Duration,
    kind: Kind,
    hold: Duration,
}

/// The calls offered to one site, drawn from a stream of their own (seeded by the run's
/// seed and the site): a seed gives the same offer, arrival by arrival, whatever the
/// server answers and whenever. Poisson arrivals at `erlang / hold` per second,
/// exponential holding times of mean `hold`, kinds by their shares.
struct Offered {
    rng: Rng,
    /// Mean time between arrivals, s.
    gap_s: f64,
    hold_s: f64,
    emergency_share: f64,
    private_share: f64,
    status_share: f64,
    data_share: f64,
}

impl Offered {
    fn new(load: &CallLoad, site_index: usize) -> Offered {
        let hold_s = load.hold.as_secs_f64();
        Offered {
            rng: Rng(load.seed
                ^ 0x6F66_6665_7265_6400
                ^ (site_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            gap_s: hold_s / load.erlang_per_site.max(1e-9),
            hold_s,
            emergency_share: load.emergency_share,
            private_share: load.private_share,
            status_share: load.status_share,
            data_share: load.data_share,
        }
    }

    fn draw(&mut self) -> Arrival {
        let after = Duration::from_secs_f64(self.rng.exp(self.gap_s).min(1e9));
        let pick = self.rng.unit();
        let kind = if pick < self.emergency_share {
            Kind::Emergency
        } else if pick < self.emergency_share + self.private_share {
            Kind::Private
        } else if pick < self.emergency_share + self.private_share + self.status_share {
            Kind::Status
        } else if pick < self.emergency_share + self.private_share + self.status_share + self.data_share {
            Kind::ShortData
        } else {
            Kind::Group(1 + (self.rng.next_u64() % 2) as u16)
        };
        let hold = Duration::from_secs_f64(self.rng.exp(self.hold_s).min(1e9));
        Arrival { after, kind, hold }
    }
}

#[allow(clippy::too_many_arguments)]
fn on_frame(
    f: Frame,
    rng: &mut Rng,
    load: &CallLoad,
    units: &[(SimUnit, Tmsi)],
    idle: &mut Vec<usize>,
    pending: &mut HashMap<u32, Pending>,
    active: &mut HashMap<CallId, Active>,
    clock: &Clock,
    report: &mut Report,
    mover: impl Fn(usize) -> Option<usize>,
    movers: &Movers,
    next_site: usize,
) -> anyhow::Result<()> {
    let release = |idle: &mut Vec<usize>, a: Active, rng: &mut Rng| {
        let moving = rng.unit() < load.move_share;
        match (moving, mover(a.caller)) {
            (true, Some(c)) => {
                if let Ok(mut m) = movers.lock() {
                    m.entry(next_site)
                        .or_default()
                        .push((clone_unit(&units[c].0), units[c].1));
                }
            }
            _ => idle.push(a.caller),
        }
        if let Some(t) = a.target {
            idle.push(t);
        }
    };
    match f.msg {
        Message::Queued { .. } => {
            if let Some(p) = pending.get_mut(&f.txn) {
                p.queued = true;
            }
        }
        Message::ChannelGrant { call, .. } => {
            let Some(p) = pending.remove(&f.txn) else {
                return Ok(());
            };
            report.granted += 1;
            if p.queued {
                report.queued += 1;
                report.waited.record(p.sent.elapsed());
            } else {
                report.at_once.record(p.sent.elapsed());
            }
            if p.emergency {
                report.emergencies.record(p.sent.elapsed());
            }
            if active.contains_key(&call) {
                // Joined a call already running on the talkgroup: this unit just listens.
                idle.push(p.unit);
                return Ok(());
            }
            active.insert(
                call,
                Active {
                    caller: p.unit,
                    target: p.target,
                },
            );
            let now = Instant::now();
            clock.at(now + p.hold / 2, Timer::Release(call));
            clock.at(now + p.hold, Timer::End(call));
        }
        Message::Deny { request, cause } => {
            if matches!(
                request,
                MessageType::GroupCallReq | MessageType::PrivateCallReq | MessageType::EmergencyCallReq
            ) {
                if let Some(p) = pending.remove(&f.txn) {
                    *report.denied.entry(cause).or_default() += 1;
                    idle.push(p.unit);
                    if let Some(t) = p.target {
                        idle.push(t);
                    }
                }
            }
        }
        Message::CallEnd { call, cause } => {
            if let Some(a) = active.remove(&call) {
                report.ended.insert(call, cause);
                release(idle, a, rng);
            }
        }
        Message::Preempted { call, .. } => {
            if let Some(a) = active.remove(&call) {
                report.preempted += 1;
                report.preempted_calls.insert(call);
                release(idle, a, rng);
            }
        }
        _ => {}
    }
    Ok(())
}

fn clone_unit(u: &SimUnit) -> SimUnit {
    SimUnit {
        imei: u.imei,
        unit: u.unit,
        k: u.k.clone(),
        opc: u.opc.clone(),
    }
}

/// How often each gateway samples its calls in progress and its queued requests: four
/// times a second, or 400 samples over a longer run.
fn sample_step(duration: Duration) -> Duration {
    (duration / 400).max(Duration::from_millis(250))
}

impl Report {
    /// Every call seen granted that ended or was preempted, once.
    pub fn ended_calls(&self) -> impl Iterator<Item = CallId> + '_ {
        self.ended.keys().copied().chain(
            self.preempted_calls
                .iter()
                .copied()
                .filter(|c| !self.ended.contains_key(c)),
        )
    }

    /// Short data messages stored, and delivered to a gateway (distinct message ids).
    pub fn short_data(&self) -> (u64, u64) {
        (
            self.messages.data_stored.len(),
            self.messages.data_delivered.len() as u64,
        )
    }

    /// Emergency calls granted, with their request-to-grant latency, and calls preempted.
    pub fn emergencies(&self) -> (&Latency, u64) {
        (&self.emergencies, self.preempted)
    }

    /// The sites the run drove.
    pub fn sites(&self) -> Vec<u16> {
        self.timelines.iter().map(|(site, _)| *site).collect()
    }

    /// The `--html` page: the figures, request to grant by percentile (end to end and the
    /// server's own), calls in progress and requests queued per site over time, and
    /// P(wait) beside Erlang C.
    fn page(&self, json: &serde_json::Value, load: &CallLoad) -> String {
        let mut page = Page::new(&format!(
            "trunksim calls: {} sites, {:.1} Erlang per site",
            self.timelines.len(),
            load.erlang_per_site
        ));
        table(&mut page, json);
        page.percentiles(
            "Request to grant by percentile: end to end, and the server's own (from its /metrics)",
            &[
                ("end to end, granted at once", percentile_points(&self.at_once)),
                ("end to end, after queueing", percentile_points(&self.waited)),
                (
                    "server, granted at once",
                    server_points(&json["server"]["granted_at_once"]),
                ),
            ],
        );
        let step = sample_step(load.duration).as_secs_f64();
        let mut sites = self.timelines.clone();
        sites.sort_by_key(|(site, _)| *site);
        let series = |pick: fn(&(u32, u32)) -> u32| -> Vec<(u16, Vec<u32>)> {
            sites
                .iter()
                .map(|(site, t)| (*site, t.iter().map(pick).collect()))
                .collect()
        };
        page.heat_map(
            "Calls in progress per site (started by its units)",
            "calls",
            &series(|s| s.0),
            step,
        );
        page.heat_map(
            "Requests waiting in each site's busy queue",
            "queued",
            &series(|s| s.1),
            step,
        );
        page.bars(
            &format!(
                "P(wait): measured, and Erlang C for {:.2} Erlang on {} slots",
                load.erlang_per_site, load.slots_per_site
            ),
            &[
                ("measured", self.p_wait()),
                ("Erlang C", erlang_c(load.slots_per_site, load.erlang_per_site)),
            ],
        );
        page.render()
    }

    /// Request to grant of every grant.
    fn all_grants(&self) -> Latency {
        let mut all = self.at_once.clone();
        all.merge(&self.waited);
        all
    }

    /// The share of grants that waited in a busy queue first.
    fn p_wait(&self) -> f64 {
        if self.granted > 0 {
            self.queued as f64 / self.granted as f64
        } else {
            0.0
        }
    }

    /// The `--json` report of `trunksim calls` (README, "A simulated fleet").
    fn json(&self, load: &CallLoad, sites: usize, elapsed: Duration) -> serde_json::Value {
        serde_json::json!({
            "scenario": "calls",
            "sites": sites,
            "elapsed_s": elapsed.as_secs_f64(),
            "offered_erlang_per_site": load.erlang_per_site,
            "requests": self.requests,
            "granted": self.granted,
            "granted_per_s": self.granted as f64 / elapsed.as_secs_f64(),
            "queued": self.queued,
            "preempted": self.preempted,
            "moves": self.moves,
            "no_idle_unit": self.no_idle_unit,
            "denied": causes_json(&self.denied),
            "ended": causes_json(&self.ends()),
            "status": {
                "sent": self.messages.status_sent,
                "acknowledged": self.messages.status_acked.len(),
                "delivered": self.messages.status_delivered,
                "acknowledged_after": self.messages.status_acked.json(),
            },
            "short_data": {
                "sent": self.messages.data_sent,
                "stored": self.messages.data_stored.len(),
                "delivered": self.messages.data_delivered.len(),
                "stored_after": self.messages.data_stored.json(),
            },
            "messages_denied": causes_json(&self.messages.denied),
            "request_to_grant": self.all_grants().json(),
            "emergency_request_to_grant": self.emergencies.json(),
            "granted_at_once": self.at_once.json(),
            "after_queueing": self.waited.json(),
            "p_wait": { "measured": self.p_wait(), "erlang_c": erlang_c(load.slots_per_site, load.erlang_per_site), "slots_per_site": load.slots_per_site },
        })
    }
}

fn print_report(r: &Report, load: &CallLoad, sites: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    println!("sites:              {sites}");
    println!("elapsed:            {secs:.1} s");
    println!("requests:           {}", r.requests);
    println!(
        "granted:            {} ({:.0} call setups/s)",
        r.granted,
        r.granted as f64 / secs
    );
    println!("queued first:       {}", r.queued);
    println!("preempted:          {}", r.preempted);
    println!("moved to next site: {}", r.moves);
    println!("no idle unit:       {} arrivals skipped", r.no_idle_unit);
    for (c, n) in in_cause_order(&r.denied) {
        println!("denied:             {n} ({c})");
    }
    for (c, n) in in_cause_order(&r.ends()) {
        println!("ended:              {n} ({c})");
    }
    // Request to grant, all grants, then split: granted at once (the server's own
    // latency) and after a wait in a busy queue (queueing, as Erlang C predicts).
    println!("{}", r.all_grants().line("request to grant:"));
    println!("{}", r.at_once.line("  granted at once:"));
    println!("{}", r.waited.line("  after queueing:"));
    println!("{}", r.emergencies.line("  emergencies:"));
    let m = &r.messages;
    println!(
        "status:             {} sent, {} acknowledged, {} delivered to gateways",
        m.status_sent,
        m.status_acked.len(),
        m.status_delivered
    );
    println!(
        "short data:         {} sent, {} stored, {} delivered to gateways",
        m.data_sent,
        m.data_stored.len(),
        m.data_delivered.len()
    );
    for (c, n) in in_cause_order(&m.denied) {
        println!("message denied:     {n} ({c})");
    }
    println!("{}", m.status_acked.line("  status to ACK:"));
    println!("{}", m.data_stored.line("  data to ACK:"));
    println!(
        "P(wait):            measured {:.4}, Erlang C {:.4} (c = {}, A = {:.2} Erlang per site)",
        r.p_wait(),
        erlang_c(load.slots_per_site, load.erlang_per_site),
        load.slots_per_site,
        load.erlang_per_site
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(seed: u64) -> CallLoad {
        CallLoad {
            erlang_per_site: 4.0,
            hold: Duration::from_millis(2000),
            duration: Duration::from_secs(10),
            private_share: 0.6,
            emergency_share: 0.05,
            status_share: 0.1,
            data_share: 0.1,
            move_share: 0.0,
            slots_per_site: 11,
            seed,
        }
    }

    #[test]
    fn the_offer_has_the_means_and_shares_asked_for() {
        let n = 200_000;
        let calls: Vec<Arrival> = {
            let mut o = Offered::new(&load(1), 0);
            (0..n).map(|_| o.draw()).collect()
        };
        let mean = |f: fn(&Arrival) -> f64| calls.iter().map(f).sum::<f64>() / n as f64;
        let share = |k: fn(&Kind) -> bool| calls.iter().filter(|c| k(&c.kind)).count() as f64 / n as f64;
        // 4 Erlang of 2 s calls: one arrival every 0.5 s. The standard error of a mean of
        // 200,000 exponential draws is 0.22 % of it: 1 % is over four of them.
        let gap = mean(|c| c.after.as_secs_f64());
        assert!((gap - 0.5).abs() < 0.005, "mean gap {gap} s");
        let hold = mean(|c| c.hold.as_secs_f64());
        assert!((hold - 2.0).abs() < 0.02, "mean hold {hold} s");
        let private = share(|k| *k == Kind::Private);
        let emergency = share(|k| *k == Kind::Emergency);
        assert!(
            (private - 0.6).abs() < 0.005 && (emergency - 0.05).abs() < 0.003,
            "{private} {emergency}"
        );
        let status = share(|k| *k == Kind::Status);
        let data = share(|k| *k == Kind::ShortData);
        assert!(
            (status - 0.1).abs() < 0.004 && (data - 0.1).abs() < 0.004,
            "{status} {data}"
        );
        let tg2 = share(|k| *k == Kind::Group(2));
        assert!(
            (tg2 - 0.075).abs() < 0.004,
            "half the group calls on talkgroup 2: {tg2}"
        );
    }

    #[test]
    fn a_seed_gives_the_same_offer_and_sites_and_seeds_differ() {
        let draw = |seed, site| {
            let mut o = Offered::new(&load(seed), site);
            (0..1000).map(|_| o.draw()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 3), draw(7, 3));
        assert_ne!(draw(7, 3), draw(8, 3));
        assert_ne!(draw(7, 3), draw(7, 4));
    }

    #[test]
    fn a_call_that_ends_at_two_gateways_is_counted_once() {
        let call = |n| CallId::new(n).unwrap();
        let (mut total, mut b) = (Report::default(), Report::default());
        total.ended.insert(call(1), Cause::Normal);
        b.ended.insert(call(1), Cause::Normal);
        b.ended.insert(call(2), Cause::HangTimeExpired);
        total.merge(Report::default());
        total.merge(b);
        assert_eq!(
            in_cause_order(&total.ends()),
            vec![(Cause::Normal, 1), (Cause::HangTimeExpired, 1)]
        );
    }
}
