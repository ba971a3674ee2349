//! The cost scenario: a fixed workload, one procedure at a time, for counting what the
//! server spends on each (`tools/cost.sh` runs trunkd under callgrind and this against
//! it). Nothing here runs concurrently, so the server handles every frame on its own
//! wake-up and the count per procedure is the same from run to run:
//!
//! 1. `register`: every unit registers by IMEI (the first registration: `REG_REQUEST`,
//!    `AUTH_CHALLENGE`, `AUTH_RESPONSE`, `REG_ACCEPT`), the gateways taking turns.
//!    Like the next, the phase ends 2.5 s after its last procedure, once the server has
//!    written behind what it did.
//! 2. `calls`: `--calls` group calls, one after the other, the gateways and their units
//!    taking turns: `GROUP_CALL_REQ` (local) and its `CHANNEL_GRANT`, `PTT_RELEASE` and
//!    its `ACK`, the caller's `CALL_END` and the controller's.
//!
//! 3. `idle`: 5 s with every unit on the air and nothing asked (the gateways' keepalives
//!    only): what the server's timers cost per second, for the phases above to be read
//!    less it.
//!
//! With `--callgrind PID` (the server's), callgrind's counters are zeroed before each
//! phase and dumped after it (`callgrind_control`), so each dump holds one phase; each
//! phase's length is printed (`register_s`, `calls_s`, `idle_s`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use trunkd::link::gateway::GatewayLink;
use trunkd::protocol::{CallScope, Cause, Frame, Identity, Message, MessageType, TalkgroupId, Tmsi};
use trunkd::sim::{accepted_tmsi, authenticate, RadioKeys};

use crate::load::{connect, load_fleet, Controllers, SimUnit};

/// How long one answer may take (the server may run under valgrind, 50 times slower).
const ANSWER_PATIENCE: Duration = Duration::from_secs(30);

/// One gateway and its units' TMSIs (`None` until registered).
struct Gateway {
    link: GatewayLink,
    units: Vec<SimUnit>,
    tmsis: Vec<Option<Tmsi>>,
    keepalive_at: Instant,
}

impl Gateway {
    /// Sends its own keepalive when one is due: the gateways wait their turns, and the
    /// controller must keep hearing from each.
    async fn keep_alive(&mut self) -> anyhow::Result<()> {
        if Instant::now() >= self.keepalive_at {
            self.link.keepalive().await?;
            self.keepalive_at = Instant::now() + self.link.keepalive_interval();
        }
        Ok(())
    }

    /// The next frame on transaction `txn` (the controller's keepalives are answered on
    /// the way, other frames skipped).
    async fn answer(&mut self, txn: u32) -> anyhow::Result<Frame> {
        loop {
            let f = tokio::time::timeout(ANSWER_PATIENCE, self.link.recv_service())
                .await
                .context("no answer in time")??;
            if f.txn == txn {
                return Ok(f);
            }
        }
    }
}

/// Runs the workload against the controller of `servers`; `units` limits the fleet of
/// `dir`, and `callgrind` is the server's pid for phase dumps.
pub async fn run(
    dir: &Path,
    servers: &Controllers,
    units: Option<usize>,
    calls: usize,
    callgrind: Option<u32>,
) -> anyhow::Result<()> {
    phases(dir, servers, units, calls, callgrind, SETTLE, IDLE)
        .await
        .map(drop)
}

/// [`run`], each phase settling for `settle` and the idle phase lasting `idle_for`:
/// the units registered and the calls granted.
async fn phases(
    dir: &Path,
    servers: &Controllers,
    units: Option<usize>,
    calls: usize,
    callgrind: Option<u32>,
    settle: Duration,
    idle_for: Duration,
) -> anyhow::Result<(usize, usize)> {
    let (sites, per_site) = load_fleet(dir, units)?;
    let mut gateways = Vec::new();
    for ((site, key), units) in sites.iter().zip(per_site) {
        let (link, _) = connect(servers, *site, key).await?;
        gateways.push(Gateway {
            keepalive_at: Instant::now() + link.keepalive_interval(),
            link,
            tmsis: vec![None; units.len()],
            units,
        });
    }

    let started = mark(callgrind, Mark::Start)?;
    let registered = register(&mut gateways).await?;
    idle(&mut gateways, settle).await?;
    let took = mark(callgrind, Mark::End("register"))? - started;
    println!("registrations: {registered}");
    println!("register_s: {:.3}", took.as_secs_f64());

    let started = mark(callgrind, Mark::Start)?;
    let (granted, denied) = group_calls(&mut gateways, calls).await?;
    idle(&mut gateways, settle).await?;
    let took = mark(callgrind, Mark::End("calls"))? - started;
    println!("calls: {granted}");
    println!("calls_s: {:.3}", took.as_secs_f64());
    if denied > 0 {
        println!("calls denied: {denied}");
    }

    // What the server does with every unit on the air and nothing asked of it (its
    // timers), for a figure per second.
    let started = mark(callgrind, Mark::Start)?;
    idle(&mut gateways, idle_for).await?;
    let took = mark(callgrind, Mark::End("idle"))? - started;
    println!("idle_s: {:.3}", took.as_secs_f64());
    Ok((registered, granted))
}

/// How long the idle phase lasts.
const IDLE: Duration = Duration::from_secs(5);

/// How long a phase waits after its last procedure before it ends: longer than the
/// server's write-behind intervals (1 s by default), so that each phase holds the
/// writing of what it did.
const SETTLE: Duration = Duration::from_millis(2500);

/// Waits for `d`, the gateways keeping their links alive.
async fn idle(gateways: &mut [Gateway], d: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        for g in gateways.iter_mut() {
            g.keep_alive().await?;
            // The controller's keepalives are answered (nothing else comes).
            let _ = tokio::time::timeout(Duration::from_millis(10), g.link.recv_service()).await;
        }
    }
    Ok(())
}

/// Registers every unit, the gateways taking turns, one registration at a time: how
/// many were accepted.
async fn register(gateways: &mut [Gateway]) -> anyhow::Result<usize> {
    let most = gateways.iter().map(|g| g.units.len()).max().unwrap_or(0);
    let mut accepted = 0;
    for i in 0..most {
        for g in gateways.iter_mut() {
            let Some(u) = g.units.get(i) else { continue };
            let (unit, keys) = (
                u.unit,
                RadioKeys {
                    k: u.k.clone(),
                    opc: u.opc.clone(),
                },
            );
            let first = Message::RegRequest {
                identity: Identity::Imei(u.imei),
            };
            g.keep_alive().await?;
            let (_, f) = authenticate(&mut g.link, first, &keys).await?;
            match accepted_tmsi(&f) {
                Some(t) => {
                    g.tmsis[i] = Some(t);
                    accepted += 1;
                }
                None => bail!("unit {unit:?} not registered: {:?}", f.msg),
            }
        }
    }
    Ok(accepted)
}

/// `n` group calls, one at a time, the gateways and their units taking turns: how many
/// were granted, and denied.
async fn group_calls(gateways: &mut [Gateway], n: usize) -> anyhow::Result<(usize, usize)> {
    let talkgroup = TalkgroupId::new(1).expect("1");
    let (mut granted, mut denied) = (0, 0);
    let sites = gateways.len();
    for i in 0..n {
        let g = &mut gateways[i % sites];
        let Some(tmsi) = g.tmsis.get(i / sites % g.tmsis.len().max(1)).copied().flatten() else {
            bail!("a gateway has no registered unit to call with");
        };
        g.keep_alive().await?;
        let txn = g
            .link
            .request(Message::GroupCallReq {
                tmsi,
                talkgroup,
                scope: CallScope::Local,
            })
            .await?;
        let call = match g.answer(txn).await?.msg {
            Message::ChannelGrant { call, .. } => call,
            Message::Deny { .. } => {
                denied += 1;
                continue;
            }
            other => bail!("unexpected answer to a call request: {other:?}"),
        };
        granted += 1;
        let txn = g.link.request(Message::PttRelease { call, tmsi }).await?;
        match g.answer(txn).await?.msg {
            Message::Ack {
                acked: MessageType::PttRelease,
            } => {}
            other => bail!("unexpected answer to PTT_RELEASE: {other:?}"),
        }
        g.link
            .request(Message::CallEnd {
                call,
                cause: Cause::Normal,
            })
            .await?;
        loop {
            let f = tokio::time::timeout(ANSWER_PATIENCE, g.link.recv_service())
                .await
                .context("the call never ended")??;
            if matches!(f.msg, Message::CallEnd { call: c, .. } if c == call) {
                break;
            }
        }
    }
    Ok((granted, denied))
}

enum Mark {
    Start,
    End(&'static str),
}

/// Zeroes (at a phase's start) or dumps (at its end, named after it) the counters of
/// the server under callgrind, if there is one; when that was done.
fn mark(callgrind: Option<u32>, m: Mark) -> anyhow::Result<Instant> {
    let Some(pid) = callgrind else {
        return Ok(Instant::now());
    };
    let arg = match m {
        Mark::Start => "--zero".to_string(),
        Mark::End(phase) => format!("--dump={phase}"),
    };
    let out = std::process::Command::new("callgrind_control")
        .arg(&arg)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control (valgrind's)")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {arg} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_workload_registers_every_unit_and_makes_its_calls() {
        let (dir, sim, c, _) = crate::load::test_fleet("cost", 30, 3).await;
        let server = crate::load::test_fleet_args(&sim, &c).controllers().unwrap();
        let done = phases(&sim, &server, None, 12, None, Duration::ZERO, Duration::ZERO).await;
        assert_eq!(done.unwrap(), (30, 12));
        assert_eq!(c.vlr.len(), 30, "every unit on the air");
        c.stop().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
