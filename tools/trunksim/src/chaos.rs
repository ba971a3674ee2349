//! The chaos scenario: every site offers steady group calls (each ended as soon as it is
//! granted) while its gateway drops its link at random moments (Poisson, `--drop-every`
//! seconds apart on average at each site), reconnects through its controller list,
//! registers its units again and carries on. For each drop it measures, from the
//! moment the link closed: the link up again, every unit registered again, and the
//! site's first grant after it; and it counts the requests the drop took with it.
//! With two controllers in `--server`, a fault run by hand (or by `trunksim takeover`)
//! is recovered from the same way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use trunkd::link::gateway::{ControllerList, GatewayLink};
use trunkd::protocol::{CallScope, Cause, Message, SiteKey, TalkgroupId, Tmsi};
use trunkd::sim::SplitMix64 as Rng;

use crate::load::{load_fleet, register_all, register_units, FleetArgs, SimUnit};
use indicatif::ProgressBar;

use crate::report::{bar, causes_json, in_cause_order, Latency, Output};

/// Scenario settings.
#[derive(Clone, Copy, Debug)]
pub struct Chaos {
    /// Call requests per second at each site.
    pub rate: f64,
    /// Mean time between two drops of one site's link.
    pub drop_every: Duration,
    /// How long to offer load and drop links.
    pub duration: Duration,
    pub seed: u64,
}

/// What the gateways measured.
#[derive(Default)]
pub struct ChaosReport {
    pub requests: u64,
    pub granted: u64,
    denied: HashMap<Cause, u64>,
    /// Requests in flight when their link dropped.
    pub lost_in_drops: u64,
    pub drops: u64,
    /// From a drop to: the link up again; every unit registered again; the first grant.
    relinked: Latency,
    reregistered: Latency,
    first_grant: Latency,
    /// Units a controller refused when they registered again.
    pub refused_again: u64,
}

impl ChaosReport {
    fn merge(&mut self, o: ChaosReport) {
        self.requests += o.requests;
        self.granted += o.granted;
        for (c, n) in o.denied {
            *self.denied.entry(c).or_default() += n;
        }
        self.lost_in_drops += o.lost_in_drops;
        self.drops += o.drops;
        self.relinked.merge(&o.relinked);
        self.reregistered.merge(&o.reregistered);
        self.first_grant.merge(&o.first_grant);
        self.refused_again += o.refused_again;
    }

    /// Drops after which the site was granted a call again.
    pub fn recovered(&self) -> u64 {
        self.first_grant.len()
    }

    fn json(&self, elapsed: Duration) -> serde_json::Value {
        serde_json::json!({
            "scenario": "chaos",
            "elapsed_s": elapsed.as_secs_f64(),
            "requests": self.requests,
            "granted": self.granted,
            "denied": causes_json(&self.denied),
            "drops": self.drops,
            "recovered": self.recovered(),
            "lost_in_drops": self.lost_in_drops,
            "refused_again": self.refused_again,
            "relinked": self.relinked.json(),
            "reregistered": self.reregistered.json(),
            "first_grant": self.first_grant.json(),
        })
    }

    fn print(&self, elapsed: Duration) {
        println!("elapsed:            {:.1} s", elapsed.as_secs_f64());
        println!("requests:           {}", self.requests);
        println!("granted:            {}", self.granted);
        for (c, n) in in_cause_order(&self.denied) {
            println!("denied:             {n} ({c})");
        }
        println!(
            "link drops:         {} ({} recovered: a call granted after)",
            self.drops,
            self.recovered()
        );
        println!("lost in drops:      {} requests in flight", self.lost_in_drops);
        println!("refused again:      {} units", self.refused_again);
        println!("from a drop to:");
        println!("{}", self.relinked.line("  link up again:"));
        println!("{}", self.reregistered.line("  all re-registered:"));
        println!("{}", self.first_grant.line("  first grant:"));
    }
}

/// Registers the fleet of `dir`, then runs the chaos and prints the report.
pub async fn run(fleet: &FleetArgs, chaos: Chaos, out: &Output) -> anyhow::Result<ChaosReport> {
    let (sites, per_site) = load_fleet(&fleet.dir, fleet.limit)?;
    let (gateways, reg) = register_all(&fleet.controllers()?, &sites, per_site, 32).await?;
    println!(
        "{} registered at {} sites; {:.1} calls/s per site, a drop every {:?} per site, for {:?}",
        reg.accepted,
        sites.len(),
        chaos.rate,
        chaos.drop_every,
        chaos.duration
    );
    let started = Instant::now();
    let progress = bar(
        None,
        &format!(
            "{{spinner}} chaos {{elapsed}} of {:?}  {{pos}} granted  {{rate}}  {{msg}}",
            chaos.duration
        ),
    );
    let mut tasks = Vec::new();
    for (i, ((link, list, units, tmsis), (_, key))) in gateways.into_iter().zip(sites).enumerate() {
        let rng = Rng(chaos.seed ^ 0x6368_616F_7300_0000 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.push(tokio::spawn(site(
            link,
            list,
            key,
            units,
            tmsis,
            (chaos, rng, progress.clone()),
        )));
    }
    let mut report = ChaosReport::default();
    for t in tasks {
        report.merge(t.await??);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    report.print(elapsed);
    let json = report.json(elapsed);
    out.write(&json, || {
        let mut page = crate::html::Page::new("trunksim chaos");
        crate::html::table(&mut page, &json);
        page.percentiles(
            "From a link drop to: the link up again, every unit registered again, the first grant",
            &[
                ("link up again", crate::html::percentile_points(&report.relinked)),
                (
                    "all re-registered",
                    crate::html::percentile_points(&report.reregistered),
                ),
                ("first grant", crate::html::percentile_points(&report.first_grant)),
            ],
        );
        page.render()
    })?;
    Ok(report)
}

/// One site: calls at `chaos.rate`, its link dropped now and then.
async fn site(
    mut link: GatewayLink,
    mut list: ControllerList,
    key: SiteKey,
    mut units: Vec<SimUnit>,
    tmsis: Vec<Option<Tmsi>>,
    (chaos, mut rng, progress): (Chaos, Rng, ProgressBar),
) -> anyhow::Result<ChaosReport> {
    let mut report = ChaosReport::default();
    let site = link.site();
    let mut on_air: Vec<Tmsi> = tmsis.into_iter().flatten().collect();
    let start = Instant::now();
    let stop_at = start + chaos.duration;
    let gap = || Duration::from_secs_f64(1.0 / chaos.rate.max(1e-6));
    let mut next_call = start + gap().mul_f64(rng.unit());
    let mut next_drop = start + Duration::from_secs_f64(rng.exp(chaos.drop_every.as_secs_f64()));
    let mut pending: HashMap<u32, Instant> = HashMap::new();
    let mut dropped_at: Option<Instant> = None;
    let mut caller = 0usize;
    let mut keepalive = tokio::time::interval(link.keepalive_interval());
    let talkgroup = TalkgroupId::new(1).expect("talkgroup 1");
    while Instant::now() < stop_at || !pending.is_empty() {
        if Instant::now() > stop_at + Duration::from_secs(5) {
            break; // answers that will not come
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_call.into()), if next_call < stop_at && !on_air.is_empty() => {
                // Every request due, in one write.
                let now = Instant::now();
                while next_call <= now {
                    next_call += Duration::from_secs_f64(rng.exp(gap().as_secs_f64()));
                    caller = (caller + 1) % on_air.len();
                    let req = Message::GroupCallReq { tmsi: on_air[caller], talkgroup, scope: CallScope::Local };
                    let txn = link.queue_request(req).await?;
                    pending.insert(txn, now);
                    report.requests += 1;
                }
                link.flush().await?;
            }
            _ = tokio::time::sleep_until(next_drop.into()), if next_drop < stop_at => {
                next_drop += Duration::from_secs_f64(rng.exp(chaos.drop_every.as_secs_f64()));
                report.drops += 1;
                progress.set_message(format!("{} drops", report.drops));
                report.lost_in_drops += pending.len() as u64;
                pending.clear();
                let t0 = Instant::now();
                drop(link);
                list.lost();
                link = list.link(site, &key).await;
                report.relinked.record(t0.elapsed());
                let (l, u, tmsis, r) = register_units(link, units, 32, indicatif::ProgressBar::hidden()).await?;
                report.refused_again += (u.len() - r.accepted) as u64;
                (link, units) = (l, u);
                on_air = tmsis.into_iter().flatten().collect();
                report.reregistered.record(t0.elapsed());
                dropped_at = Some(t0);
                keepalive = tokio::time::interval(link.keepalive_interval());
            }
            _ = keepalive.tick() => link.keepalive().await?,
            // The end, or the end of waiting for the last answers.
            _ = tokio::time::sleep_until(stop_at.into()), if pending.is_empty() => {}
            _ = tokio::time::sleep_until((stop_at + Duration::from_secs(5)).into()) => {}
            f = link.recv_service() => {
                let f = f?;
                let Some(sent) = pending.remove(&f.txn) else { continue };
                match f.msg {
                    Message::ChannelGrant { call, .. } => {
                        report.granted += 1;
                        progress.inc(1);
                        if let Some(t0) = dropped_at.take() {
                            report.first_grant.record(t0.elapsed());
                        }
                        link.request(Message::CallEnd { call, cause: Cause::Normal }).await?;
                    }
                    Message::Queued { .. } => {
                        pending.insert(f.txn, sent);
                    }
                    Message::Deny { cause, .. } => {
                        *report.denied.entry(cause).or_default() += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_dropped_link_comes_back_with_its_units_and_its_calls() {
        let (dir, sim, c, api) = crate::load::test_fleet("chaos", 30, 3).await;
        let chaos = Chaos {
            rate: 20.0,
            drop_every: Duration::from_millis(400),
            duration: Duration::from_secs(2),
            seed: 4,
        };
        let out = crate::load::test_call_args(&sim, &c, &api).out;
        let r = run(&crate::load::test_fleet_args(&sim, &c), chaos, &out)
            .await
            .unwrap();
        // 3 sites × 2 s / 0.4 s: about 15 drops; a Poisson count far above 3.
        assert!(r.drops >= 3, "{} drops", r.drops);
        assert_eq!(r.refused_again, 0, "every unit registers again");
        assert_eq!(
            r.reregistered.len(),
            r.drops,
            "every drop: every unit registered again"
        );
        // A drop in the last moments may see no call before the end; all others do.
        assert!(
            r.recovered() + 3 >= r.drops,
            "{} of {} drops recovered",
            r.recovered(),
            r.drops
        );
        assert!(r.granted > 20, "{} granted", r.granted);
        assert_eq!(c.vlr.len(), 30, "every unit on the air at the end");
        c.stop().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
