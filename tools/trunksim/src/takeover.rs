//! The takeover scenario (issue 13): every unit registered through one gateway per
//! site, each gateway holding the list of controller addresses; a steady call load;
//! then a command that takes the active node away (`kill -9` of it, or cutting it off
//! from its database). Measured from that moment: when a node is active again (its
//! `/healthz`), when each site is linked to it, each site's first grant after the
//! fault, and every request refused or left unanswered on the way.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::watch;
use trunkd::core::auth::unit_response;
use trunkd::link::gateway::{ControllerList, GatewayLink};
use trunkd::protocol::{CallId, CallScope, Cause, Frame, Identity, Message, MessageType, TalkgroupId, Tmsi};
use trunkd::sim::{radio_command_answer, SplitMix64 as Rng};

use crate::load::{load_fleet, register_all, Controllers, SimUnit};
use crate::report::Latency;

/// Scenario settings.
pub struct Takeover {
    /// Call requests per second at each site.
    pub calls_per_site: f64,
    /// How long a granted call is held before the caller ends it.
    pub hold: Duration,
    /// Steady load before the fault.
    pub before: Duration,
    /// Load after the fault.
    pub after: Duration,
    /// Run by `sh -c` at the fault instant.
    pub fault: String,
    /// The nodes' API addresses (`host:port`), polled for the new active node.
    pub apis: Vec<String>,
    /// A request unanswered this long is counted as timed out.
    pub request_timeout: Duration,
    /// Seed of the random streams.
    pub seed: u64,
}

/// What one gateway saw.
#[derive(Default)]
struct SiteReport {
    /// When its link went down after the fault.
    lost: Option<Duration>,
    /// When it was linked again after the fault.
    relinked: Option<Duration>,
    /// Its first grant to a request sent after the fault, on the link made after it
    /// when the fault took the link down.
    first_grant: Option<Duration>,
    requests_before: u64,
    granted_before: u64,
    /// After the fault: requests sent, granted, refused (by cause), unanswered (timed
    /// out, or in flight when the link went down).
    requests_after: u64,
    granted_after: u64,
    refused_after: HashMap<Cause, u64>,
    unanswered_after: u64,
    /// Units that registered again (told "not registered" after the takeover).
    registered_again: u64,
    /// Request to grant of calls granted at once after the site's first grant.
    grants: Latency,
}

/// Registers the fleet of `dir`, offers the load, brings the fault, and prints what the
/// gateways saw.
pub async fn run(dir: &Path, servers: &[String], limit: Option<usize>, t: Takeover) -> anyhow::Result<()> {
    let (sites, per_site) = load_fleet(dir, limit)?;
    let total: usize = per_site.iter().map(Vec::len).sum();
    println!("registering {total} units at {} sites", sites.len());
    let controllers = Controllers {
        addrs: servers.to_vec(),
        tls: None,
    };
    let (gateways, reg) = register_all(&controllers, &sites, per_site, 32).await?;
    if reg.accepted == 0 {
        bail!("no unit registered");
    }
    let epoch_before = active_epoch(&reqwest::Client::new(), &t.apis)
        .await
        .map(|(_, e)| e);
    println!(
        "{} registered; {:.1} call requests/s per site, {:?} before the fault (epoch {})",
        reg.accepted,
        t.calls_per_site,
        t.before,
        epoch_before.map_or("unknown".into(), |e| e.to_string())
    );
    let t = Arc::new(t);
    let (fault_tx, fault_rx) = watch::channel(None::<Instant>);
    let mut tasks = Vec::new();
    for (i, (link, list, units, tmsis)) in gateways.into_iter().enumerate() {
        let key = sites[i].1.clone();
        let units: Vec<(SimUnit, Tmsi)> = units
            .into_iter()
            .zip(tmsis)
            .filter_map(|(u, t)| t.map(|t| (u, t)))
            .collect();
        tasks.push(tokio::spawn(gateway(
            link,
            list,
            key,
            units,
            t.clone(),
            Rng(t.seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)),
            fault_rx.clone(),
        )));
    }
    tokio::time::sleep(t.before).await;
    let fault_at = Instant::now();
    fault_tx.send_replace(Some(fault_at));
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&t.fault)
        .status()
        .await
        .context("running the fault command")?;
    if !status.success() {
        eprintln!("the fault command failed: {status}");
    }
    let active = watch_active(&t.apis, epoch_before, fault_at, t.after).await;
    let mut sites_seen = Vec::new();
    for task in tasks {
        sites_seen.push(task.await??);
    }
    print_report(&sites_seen, active, &t);
    Ok(())
}

/// The epoch of the node among `apis` whose `/healthz` says it is active.
async fn active_epoch(http: &reqwest::Client, apis: &[String]) -> Option<(String, i64)> {
    for api in apis {
        let Ok(r) = http
            .get(format!("http://{api}/healthz"))
            .timeout(Duration::from_millis(200))
            .send()
            .await
        else {
            continue;
        };
        let Ok(v) = r.json::<serde_json::Value>().await else {
            continue;
        };
        if v["role"] == "active" {
            return Some((api.clone(), v["epoch"].as_i64()?));
        }
    }
    None
}

/// Polls `apis` every 5 ms from the fault until a node is active at an epoch above
/// `before`: when, which node, which epoch.
async fn watch_active(
    apis: &[String],
    before: Option<i64>,
    fault_at: Instant,
    within: Duration,
) -> Option<(Duration, String, i64)> {
    let http = reqwest::Client::new();
    while fault_at.elapsed() < within {
        if let Some((api, epoch)) = active_epoch(&http, apis).await {
            if before.is_none_or(|b| epoch > b) {
                return Some((fault_at.elapsed(), api, epoch));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// A request in flight.
struct Pending {
    unit: usize,
    sent: Instant,
    after_fault: bool,
}

/// One site's gateway: steady call requests from its idle units, each call ended by its
/// caller after the holding time; after a lost link, the search of §3.3, a request at
/// once on the new link (a radio keying up again), and on as before.
async fn gateway(
    mut link: GatewayLink,
    mut list: ControllerList,
    key: trunkd::protocol::SiteKey,
    mut units: Vec<(SimUnit, Tmsi)>,
    t: Arc<Takeover>,
    mut rng: Rng,
    fault: watch::Receiver<Option<Instant>>,
) -> anyhow::Result<SiteReport> {
    let mut r = SiteReport::default();
    let mut idle: Vec<usize> = (0..units.len()).collect();
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut registering: HashMap<u32, usize> = HashMap::new();
    let mut calls: Vec<(Instant, CallId, usize)> = Vec::new();
    let start = Instant::now();
    let stop_at = start + t.before + t.after;
    let mut next_request = start + Duration::from_secs_f64(rng.exp(1.0 / t.calls_per_site));
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut keepalive = tokio::time::interval(link.keepalive_interval());
    let fault_at = || *fault.borrow();
    let mut down = false;
    while Instant::now() < stop_at {
        if down {
            let relinked = relink(
                &mut link,
                &mut list,
                &key,
                &mut r,
                &mut pending,
                &mut calls,
                &mut idle,
                fault_at(),
                stop_at,
            );
            if !relinked.await {
                break;
            }
            down = false;
            // A radio whose call ended with the link keys up again at once.
            next_request = Instant::now();
        }
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                while next_request <= now {
                    next_request += Duration::from_secs_f64(rng.exp(1.0 / t.calls_per_site));
                    if idle.is_empty() {
                        continue;
                    }
                    let unit = idle.swap_remove(rng.below(idle.len()));
                    let talkgroup = TalkgroupId::new(1 + (rng.next_u64() % 2) as u16).expect("1..=2");
                    let tmsi = units[unit].1;
                    let txn = link
                        .queue_request(Message::GroupCallReq { tmsi, talkgroup, scope: CallScope::Local })
                        .await;
                    let after_fault = fault_at().is_some();
                    if after_fault { r.requests_after += 1 } else { r.requests_before += 1 }
                    if let Ok(txn) = txn {
                        pending.insert(txn, Pending { unit, sent: now, after_fault });
                    }
                }
                let ending: Vec<_> = calls.iter().filter(|c| c.0 <= now).map(|c| (c.1, c.2)).collect();
                calls.retain(|c| c.0 > now);
                for (call, unit) in ending {
                    let _ = link.queue_request(Message::CallEnd { call, cause: Cause::Normal }).await;
                    idle.push(unit);
                }
                let late: Vec<u32> = pending
                    .iter()
                    .filter(|(_, p)| now.duration_since(p.sent) > t.request_timeout)
                    .map(|(txn, _)| *txn)
                    .collect();
                for txn in late {
                    let p = pending.remove(&txn).expect("listed");
                    if p.after_fault { r.unanswered_after += 1 }
                    idle.push(p.unit);
                }
                down = link.flush().await.is_err();
            }
            _ = keepalive.tick() => {
                down = link.keepalive().await.is_err();
            }
            f = link.recv_service() => {
                let f = match f {
                    Ok(f) => f,
                    Err(_) => {
                        down = true;
                        continue;
                    }
                };
                if let Some(ack) = radio_command_answer(&f, |tm| units.iter().any(|(_, u)| *u == tm)) {
                    let _ = link.send(ack).await;
                    continue;
                }
                if let Some(&unit) = registering.get(&f.txn) {
                    match f.msg {
                        Message::AuthChallenge { rand } => {
                            let res = unit_response(&units[unit].0.k, &units[unit].0.opc, &rand);
                            let _ = link.send(Frame::new(f.txn, Message::AuthResponse { res })).await;
                        }
                        Message::RegAccept { tmsi, .. } => {
                            registering.remove(&f.txn);
                            units[unit].1 = tmsi;
                            r.registered_again += 1;
                            idle.push(unit);
                        }
                        _ => {
                            registering.remove(&f.txn);
                            idle.push(unit);
                        }
                    }
                    continue;
                }
                match f.msg {
                    Message::ChannelGrant { call, .. } => {
                        let Some(p) = pending.remove(&f.txn) else { continue };
                        if p.after_fault {
                            r.granted_after += 1;
                            let at = fault_at().map(|f| f.elapsed());
                            if r.first_grant.is_none() {
                                r.first_grant = at;
                            } else {
                                r.grants.record(p.sent.elapsed());
                            }
                        } else {
                            r.granted_before += 1;
                        }
                        if calls.iter().any(|c| c.1 == call) {
                            idle.push(p.unit); // joined a call already running: listens
                        } else {
                            calls.push((Instant::now() + t.hold, call, p.unit));
                        }
                    }
                    Message::Deny { request: MessageType::GroupCallReq, cause } => {
                        let Some(p) = pending.remove(&f.txn) else { continue };
                        if p.after_fault {
                            *r.refused_after.entry(cause).or_default() += 1;
                        }
                        if cause == Cause::NotRegistered {
                            // Not known to the new active node: the radio registers again.
                            let identity = Identity::Imei(units[p.unit].0.imei);
                            if let Ok(txn) = link.request(Message::RegRequest { identity }).await {
                                registering.insert(txn, p.unit);
                            }
                        } else {
                            idle.push(p.unit);
                        }
                    }
                    Message::CallEnd { call, .. } | Message::Preempted { call, .. } => {
                        if let Some(i) = calls.iter().position(|c| c.1 == call) {
                            idle.push(calls.swap_remove(i).2);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(r)
}

/// The link went down: what was in flight is lost with it, the calls of the site ended
/// (PROTOCOL.md §3.3), and the gateway searches its list for the active controller
/// until `give_up`; `false` if none took it by then.
#[allow(clippy::too_many_arguments)]
async fn relink(
    link: &mut GatewayLink,
    list: &mut ControllerList,
    key: &trunkd::protocol::SiteKey,
    r: &mut SiteReport,
    pending: &mut HashMap<u32, Pending>,
    calls: &mut Vec<(Instant, CallId, usize)>,
    idle: &mut Vec<usize>,
    fault_at: Option<Instant>,
    give_up: Instant,
) -> bool {
    if let Some(f) = fault_at {
        r.lost.get_or_insert(f.elapsed());
    }
    for (_, p) in pending.drain() {
        if p.after_fault {
            r.unanswered_after += 1;
        }
        idle.push(p.unit);
    }
    idle.extend(calls.drain(..).map(|c| c.2));
    list.lost();
    let within = give_up.saturating_duration_since(Instant::now());
    match tokio::time::timeout(within, list.link(link.site(), key)).await {
        Ok(new) => *link = new,
        Err(_) => return false,
    }
    if let Some(f) = fault_at {
        r.relinked.get_or_insert(f.elapsed());
        // Service is back when the new link grants, not when the old one did.
        r.first_grant = None;
    }
    true
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and max of `v` in ms, and how many.
fn spread(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort();
    format!(
        "p50 {:.0} ms  max {:.0} ms  ({} sites)",
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn print_report(sites: &[SiteReport], active: Option<(Duration, String, i64)>, t: &Takeover) {
    let n = sites.len();
    println!("sites:                      {n}");
    match &active {
        Some((at, api, epoch)) => println!(
            "active again:               {:.0} ms after the fault ({api}, epoch {epoch})",
            ms(*at)
        ),
        None => println!("active again:               not within {:?}", t.after),
    }
    let lost: Vec<_> = sites.iter().filter_map(|s| s.lost).collect();
    let relinked: Vec<_> = sites.iter().filter_map(|s| s.relinked).collect();
    let first: Vec<_> = sites.iter().filter_map(|s| s.first_grant).collect();
    println!("link lost:                  {}", spread(lost));
    println!("linked to the active node:  {}", spread(relinked));
    println!("first grant after fault:    {}", spread(first.clone()));
    let served = (first.len() == n).then(|| first.iter().max().copied()).flatten();
    match served {
        Some(d) => println!("every site served again:    {:.0} ms after the fault", ms(d)),
        None => println!(
            "every site served again:    NO ({} of {n} sites had a grant after the fault)",
            first.len()
        ),
    }
    let sum = |f: fn(&SiteReport) -> u64| sites.iter().map(f).sum::<u64>();
    println!(
        "before the fault:           {} requests, {} granted",
        sum(|s| s.requests_before),
        sum(|s| s.granted_before)
    );
    println!(
        "after the fault:            {} requests, {} granted, {} unanswered (timed out after {:?} or lost with a link)",
        sum(|s| s.requests_after),
        sum(|s| s.granted_after),
        sum(|s| s.unanswered_after),
        t.request_timeout
    );
    let mut refused: HashMap<Cause, u64> = HashMap::new();
    for s in sites {
        for (c, k) in &s.refused_after {
            *refused.entry(*c).or_default() += k;
        }
    }
    for (c, k) in crate::report::in_cause_order(&refused) {
        println!("refused after the fault:    {k} ({c})");
    }
    println!("registered again:           {}", sum(|s| s.registered_again));
    let mut grants = Latency::default();
    for s in sites {
        grants.merge(&s.grants);
    }
    println!("{}", grants.line("grants after recovery:"));
}
