//! echo-limit: the most this machine's loopback path can carry with trunkd's frame
//! pattern, measured by a server and a client that do no work beyond framing.
//!
//! The server answers every request the way trunkd does, frame for frame and of the same
//! size, without looking anything up: the link handshake (any MAC is accepted), keepalives,
//! registration (REG_REQUEST → AUTH_CHALLENGE, AUTH_RESPONSE → REG_ACCEPT), location
//! updates, calls (a call request → CHANNEL_GRANT, PTT_PRESS → PTT_GRANT, PTT_RELEASE →
//! ACK, CALL_END → CALL_END). trunksim's scenarios run against it unchanged, so the same
//! load generator can be pointed at trunkd and at the echo in turn (A/B/A/B).
//!
//! The client offers one of two patterns over S links, open loop (Poisson arrivals at a
//! total rate) or closed loop (a window of procedures in flight per link, for the
//! maximum), queueing its frames and writing once per batch as trunksim does:
//! - `calls`: group call request → grant, PTT_RELEASE → ACK, CALL_END → CALL_END;
//! - `register`: REG_REQUEST → AUTH_CHALLENGE, AUTH_RESPONSE → REG_ACCEPT.
//!
//! It prints the procedures completed per second and the latency of the first answer
//! (grant, or REG_ACCEPT from the REG_REQUEST) as percentiles.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trunkd::protocol::{
    decode, CallId, CallScope, CallType, Carrier, Cause, Decoded, FleetId, Frame, Identity, Imei, Imsi,
    IndividualId, MemberId, Message, MessageType, SiteGrant, SiteId, Slot, TalkgroupId, TalkgroupList,
    Target, Tmsi, Unit, MAX_PAYLOAD,
};
use trunkd::sim::SplitMix64;

#[derive(Parser)]
#[command(
    name = "echo-limit",
    version,
    about = "No-logic echo server and client with trunkd's frame pattern"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer links as trunkd would, with no logic behind the answers.
    Server {
        /// Where to listen (`host:port`).
        #[arg(long, default_value = "127.0.0.1:7390")]
        listen: SocketAddr,
    },
    /// Offer a pattern to an echo server and report the rate and latency.
    Client {
        /// The echo server (`host:port`).
        #[arg(long, default_value = "127.0.0.1:7390")]
        server: SocketAddr,
        /// Which procedure to repeat.
        #[arg(long, value_enum, default_value = "calls")]
        pattern: Pattern,
        /// Links (simulated sites).
        #[arg(long, default_value_t = 100)]
        links: u16,
        /// Procedures started per second over all links, Poisson arrivals (open loop);
        /// 0 for closed loop (`--window` in flight per link).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Closed loop: procedures in flight per link.
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Seconds to offer load.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seed of the arrival streams.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the figures to FILE as JSON: `{"pattern", "completed", "rate_per_s",
        /// "latency": {"count", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"}}`.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
    },
}

/// The procedure a client repeats.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pattern {
    /// Group call request → grant, PTT_RELEASE → ACK, CALL_END → CALL_END.
    Calls,
    /// REG_REQUEST → AUTH_CHALLENGE, AUTH_RESPONSE → REG_ACCEPT.
    Register,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Server { listen } => rt.block_on(server(listen)),
        Command::Client {
            server,
            pattern,
            links,
            rate,
            window,
            duration,
            seed,
            json,
        } => {
            let offer = Offer {
                pattern,
                rate_per_link: rate / f64::from(links.max(1)),
                window: window.max(1),
                duration: Duration::from_secs_f64(duration),
            };
            let report = rt.block_on(client(server, links, offer, seed))?;
            report.print(pattern, duration);
            if let Some(path) = json {
                std::fs::write(&path, report.json(pattern, duration))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}

async fn server(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("echo server on {}", listener.local_addr()?);
    serve(listener).await
}

async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = echo(stream).await;
        });
    }
}

/// Reads what has arrived, answers each frame, writes the answers at once.
async fn echo(mut stream: TcpStream) -> anyhow::Result<()> {
    let (mut inbuf, mut out) = (
        BytesMut::with_capacity(16 * 1024),
        BytesMut::with_capacity(16 * 1024),
    );
    let mut state = Echo::default();
    loop {
        if stream.read_buf(&mut inbuf).await? == 0 {
            return Ok(());
        }
        while let Some(frame) = next_frame(&mut inbuf)? {
            if let Some(answer) = state.answer(frame) {
                answer.encode(&mut out);
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

/// The next whole frame in `buf`, taken out of it; malformed frames are skipped.
fn next_frame(buf: &mut BytesMut) -> anyhow::Result<Option<Frame>> {
    loop {
        match decode(buf, MAX_PAYLOAD)? {
            Decoded::Incomplete => return Ok(None),
            Decoded::Frame { len, result } => {
                buf.advance(len);
                if let Ok(frame) = result {
                    return Ok(Some(frame));
                }
            }
        }
    }
}

/// What a link's echo counts: ids it hands out.
#[derive(Default)]
struct Echo {
    next: u32,
}

impl Echo {
    fn next(&mut self) -> u32 {
        self.next = self.next % 0xFF_FFFE + 1;
        self.next
    }

    /// trunkd's answer to `f`, of the same shape and size, or none.
    fn answer(&mut self, f: Frame) -> Option<Frame> {
        let unit = Unit {
            fleet: FleetId::new(1)?,
            member: MemberId::new(1)?,
        };
        let site = SiteGrant {
            site: SiteId::new(1)?,
            carrier: Carrier::new(0)?,
            slot: Slot::new(1)?,
        };
        let msg = match f.msg {
            Message::LinkHello { .. } => Message::LinkChallenge { nonce: [0; 32] },
            Message::LinkResponse { .. } => Message::LinkAccept {
                keepalive_interval_ms: 5000,
                misses: 3,
            },
            Message::Keepalive => Message::KeepaliveAck,
            Message::RegRequest { .. } => Message::AuthChallenge { rand: [0; 16] },
            Message::AuthResponse { .. } => Message::RegAccept {
                imsi: Imsi::parse("001010000000001").ok()?,
                individual: IndividualId::new(self.next())?,
                tmsi: Tmsi::new(self.next())?,
                unit,
                talkgroups: TalkgroupList::new(TalkgroupId::new(1)?, Vec::new())?,
            },
            Message::LocationUpdate { tmsi, .. } => Message::LocationAccept { tmsi },
            Message::GroupCallReq { talkgroup, .. } | Message::EmergencyCallReq { talkgroup, .. } => {
                let call_type = match f.msg {
                    Message::GroupCallReq { .. } => CallType::Group,
                    _ => CallType::Emergency,
                };
                Message::ChannelGrant {
                    call: CallId::new(self.next())?,
                    call_type,
                    caller: unit,
                    target: Target::Talkgroup {
                        fleet: unit.fleet,
                        talkgroup,
                    },
                    sites: vec![site],
                }
            }
            Message::PrivateCallReq { target, .. } => Message::ChannelGrant {
                call: CallId::new(self.next())?,
                call_type: CallType::Private,
                caller: unit,
                target: Target::Unit(target),
                sites: vec![site],
            },
            Message::PttPress { call, .. } => Message::PttGrant { call, talker: unit },
            Message::PttRelease { .. } => Message::Ack {
                acked: MessageType::PttRelease,
            },
            Message::CallEnd { call, cause } => Message::CallEnd { call, cause },
            _ => return None,
        };
        Some(Frame::new(f.txn, msg))
    }
}

/// What a client offers on each link.
#[derive(Clone, Copy)]
struct Offer {
    pattern: Pattern,
    /// Arrivals per second on one link; 0: closed loop.
    rate_per_link: f64,
    window: usize,
    duration: Duration,
}

/// What the client measured, over all links.
struct Report {
    completed: u64,
    /// First answer of each procedure (grant; REG_ACCEPT), µs.
    latency: Histogram<u64>,
    elapsed: Duration,
}

impl Report {
    fn new() -> Report {
        Report {
            completed: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, o: Report) {
        self.completed += o.completed;
        // Both histograms have the same bounds: adding cannot fail.
        let _ = self.latency.add(&o.latency);
        self.elapsed = self.elapsed.max(o.elapsed);
    }

    fn json(&self, pattern: Pattern, duration: f64) -> String {
        let h = &self.latency;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let v = serde_json::json!({
            "pattern": match pattern {
                Pattern::Calls => "calls",
                Pattern::Register => "register",
            },
            "completed": self.completed,
            "rate_per_s": self.completed as f64 / duration.max(1e-9),
            "latency": {
                "count": h.len(),
                "p50_ms": ms(0.5),
                "p90_ms": ms(0.9),
                "p99_ms": ms(0.99),
                "p99_9_ms": ms(0.999),
                "max_ms": h.max() as f64 / 1000.0,
            },
        });
        format!("{v}\n")
    }

    fn print(&self, pattern: Pattern, duration: f64) {
        let what = match pattern {
            Pattern::Calls => "calls",
            Pattern::Register => "registrations",
        };
        println!("{what}: {}", self.completed);
        println!("rate: {:.0}/s", self.completed as f64 / duration.max(1e-9));
        let h = &self.latency;
        println!(
            "latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}

async fn client(server: SocketAddr, links: u16, offer: Offer, seed: u64) -> anyhow::Result<Report> {
    let mut tasks = Vec::new();
    for i in 0..links {
        let rng = SplitMix64(seed ^ u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to {server}"))?;
        stream.set_nodelay(true)?;
        tasks.push(tokio::spawn(offer_on(stream, i + 1, offer, rng)));
    }
    let mut report = Report::new();
    for t in tasks {
        report.merge(t.await??);
    }
    Ok(report)
}

/// One procedure in flight: when it started and how far it is.
struct InFlight {
    started: Instant,
    /// Answers received.
    step: u8,
    /// The call granted (calls).
    call: Option<CallId>,
}

/// One link: the handshake, then the offer, then the procedures still open finish.
async fn offer_on(
    mut stream: TcpStream,
    site: u16,
    offer: Offer,
    mut rng: SplitMix64,
) -> anyhow::Result<Report> {
    let (mut inbuf, mut out) = (
        BytesMut::with_capacity(16 * 1024),
        BytesMut::with_capacity(16 * 1024),
    );
    let site = SiteId::new(site).context("site id")?;
    Frame::new(1, Message::LinkHello { site }).encode(&mut out);
    stream.write_all(&out).await?;
    out.clear();
    expect(&mut stream, &mut inbuf, |m| {
        matches!(m, Message::LinkChallenge { .. })
    })
    .await?;
    Frame::new(1, Message::LinkResponse { mac: [0; 32] }).encode(&mut out);
    stream.write_all(&out).await?;
    out.clear();
    expect(&mut stream, &mut inbuf, |m| {
        matches!(m, Message::LinkAccept { .. })
    })
    .await?;

    let mut report = Report::new();
    let mut open: std::collections::HashMap<u32, InFlight> = std::collections::HashMap::new();
    let mut txn: u32 = 1;
    let start = Instant::now();
    let stop_at = start + offer.duration;
    let mut next_arrival = start;
    if offer.rate_per_link > 0.0 {
        next_arrival += Duration::from_secs_f64(rng.exp(1.0 / offer.rate_per_link));
    }
    loop {
        let now = Instant::now();
        if now < stop_at {
            // Open loop: the arrivals due; closed loop: the window refilled. Each is timed
            // from when it is written, as trunksim times its requests, so that the two
            // clients' latencies compare (tokio's timer wakes this loop up to a
            // millisecond after an arrival's instant).
            let due = if offer.rate_per_link > 0.0 {
                let mut n = 0;
                while next_arrival <= now {
                    n += 1;
                    next_arrival += Duration::from_secs_f64(rng.exp(1.0 / offer.rate_per_link));
                }
                n
            } else {
                offer.window.saturating_sub(open.len())
            };
            for _ in 0..due {
                txn = txn.wrapping_add(1).max(2);
                first_step(offer.pattern, txn).encode(&mut out);
                let fresh = InFlight {
                    started: now,
                    step: 0,
                    call: None,
                };
                open.insert(txn, fresh);
            }
        } else if open.is_empty() {
            break;
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let wake = if now < stop_at && offer.rate_per_link > 0.0 {
            next_arrival.min(stop_at)
        } else {
            stop_at.max(now) + Duration::from_secs(5)
        };
        tokio::select! {
            read = stream.read_buf(&mut inbuf) => {
                if read? == 0 {
                    bail!("the server closed the link");
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() >= stop_at + Duration::from_secs(5) {
                    bail!("{} procedures unanswered 5 s after the end", open.len());
                }
                continue;
            }
        }
        while let Some(f) = next_frame(&mut inbuf)? {
            let Some(p) = open.get_mut(&f.txn) else {
                continue;
            };
            if p.step == 0 {
                let us = p.started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                report.latency.saturating_record(us.max(1));
            }
            match next_step(offer.pattern, p, &f.msg) {
                Some(msg) => Frame::new(f.txn, msg).encode(&mut out),
                None => {
                    open.remove(&f.txn);
                    report.completed += 1;
                }
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Reads until a frame arrives; fails unless `want` holds for it.
async fn expect(
    stream: &mut TcpStream,
    inbuf: &mut BytesMut,
    want: fn(&Message) -> bool,
) -> anyhow::Result<()> {
    loop {
        if let Some(f) = next_frame(inbuf)? {
            if want(&f.msg) {
                return Ok(());
            }
            bail!("unexpected {:?} during the handshake", f.msg);
        }
        if stream.read_buf(inbuf).await? == 0 {
            bail!("the server closed the link during the handshake");
        }
    }
}

fn tmsi() -> Tmsi {
    Tmsi::new(0x0100_0001).expect("a valid TMSI")
}

/// The request opening a procedure.
fn first_step(pattern: Pattern, txn: u32) -> Frame {
    let msg = match pattern {
        Pattern::Calls => Message::GroupCallReq {
            tmsi: tmsi(),
            talkgroup: TalkgroupId::new(1).expect("a valid talkgroup"),
            scope: CallScope::Local,
        },
        Pattern::Register => Message::RegRequest {
            identity: Identity::Imei(Imei::parse("490154203237518").expect("a valid IMEI")),
        },
    };
    Frame::new(txn, msg)
}

/// The request after `p`'s next answer, or none when the procedure is done.
fn next_step(pattern: Pattern, p: &mut InFlight, answer: &Message) -> Option<Message> {
    p.step += 1;
    match (pattern, p.step, answer) {
        (Pattern::Calls, 1, Message::ChannelGrant { call, .. }) => {
            p.call = Some(*call);
            Some(Message::PttRelease {
                call: *call,
                tmsi: tmsi(),
            })
        }
        (Pattern::Calls, 2, _) => Some(Message::CallEnd {
            call: p.call?,
            cause: Cause::Normal,
        }),
        (Pattern::Register, 1, _) => Some(Message::AuthResponse { res: [0; 8] }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        addr
    }

    #[test]
    fn every_request_of_the_pattern_gets_the_answer_trunkd_gives_under_its_transaction() {
        let mut echo = Echo::default();
        let answer = |echo: &mut Echo, msg| echo.answer(Frame::new(77, msg)).map(|f| (f.txn, f.msg));
        let Some((77, Message::ChannelGrant { call, sites, .. })) =
            answer(&mut echo, first_step(Pattern::Calls, 77).msg)
        else {
            panic!("no grant for a group call request");
        };
        assert_eq!(sites.len(), 1);
        assert_eq!(
            answer(&mut echo, Message::PttRelease { call, tmsi: tmsi() }),
            Some((
                77,
                Message::Ack {
                    acked: MessageType::PttRelease
                }
            ))
        );
        let end = Message::CallEnd {
            call,
            cause: Cause::Normal,
        };
        assert_eq!(answer(&mut echo, end.clone()), Some((77, end)));
        assert!(matches!(
            answer(&mut echo, first_step(Pattern::Register, 77).msg),
            Some((77, Message::AuthChallenge { .. }))
        ));
        assert!(matches!(
            answer(&mut echo, Message::AuthResponse { res: [1; 8] }),
            Some((77, Message::RegAccept { .. }))
        ));
        assert_eq!(answer(&mut echo, Message::KeepaliveAck), None);
    }

    #[tokio::test]
    async fn a_closed_loop_completes_whole_procedures_and_times_their_first_answers() {
        let addr = echo_server().await;
        for pattern in [Pattern::Calls, Pattern::Register] {
            let offer = Offer {
                pattern,
                rate_per_link: 0.0,
                window: 4,
                duration: Duration::from_millis(200),
            };
            let r = client(addr, 3, offer, 1).await.unwrap();
            assert!(r.completed >= 12, "{} procedures completed", r.completed);
            assert_eq!(
                r.latency.len(),
                r.completed,
                "one first answer timed per procedure"
            );
        }
    }

    #[tokio::test]
    async fn an_open_loop_offers_about_its_rate() {
        let addr = echo_server().await;
        let offer = Offer {
            pattern: Pattern::Calls,
            rate_per_link: 500.0,
            window: 1,
            duration: Duration::from_secs(1),
        };
        let r = client(addr, 2, offer, 7).await.unwrap();
        // 1,000 arrivals expected; a Poisson count is within ±15 % of that far beyond
        // any chance (sd ≈ 32).
        assert!((850..=1150).contains(&r.completed), "{} calls", r.completed);
    }
}
