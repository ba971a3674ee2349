//! `trunksim api`: load on trunkd's operator API, for `BENCHMARKS.md` ("Operator API").
//!
//! - `login`: operators logging in as fast as the API lets them (argon2id dominates);
//! - `read`: authenticated GETs of one path over keep-alive connections;
//! - `events`: many listeners on `GET /api/v1/events`, counting what each receives and
//!   checking the sequence numbers for loss;
//! - `echo-server`: a no-logic HTTP server answering every request with a constant small
//!   JSON body (a login with a token pair), so that `login` and `read` can be pointed at
//!   it as the baseline of the same client on the same machine.
//!
//! Every figure is client-side: requests answered per second over the run, and the time
//! from sending a request to having read its whole answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Client;
use serde_json::{json, Value};

use crate::report::Latency;

/// `trunksim api MODE`.
#[derive(Subcommand)]
pub enum Mode {
    /// Log in again and again with `CONCURRENCY` clients; logins/s and latency.
    Login {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        run: Run,
    },
    /// Log in once, then GET `PATH` with the access token again and again with
    /// `CONCURRENCY` clients; reads/s and latency.
    Read {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        run: Run,
        /// The path to read.
        #[arg(long, default_value = "/api/v1/parameters")]
        path: String,
    },
    /// Log in once, open `SUBSCRIBERS` event streams with the access token, wait for
    /// every snapshot and `WARMUP` seconds more, then count the events they receive for `DURATION` seconds: the
    /// rate summed over them, loss (gaps in the ids, `lagged`), and the delay from an
    /// event's `at_ms` to its arrival (1 ms resolution). Something else must make events
    /// meanwhile (e.g. `trunksim calls`).
    Events {
        #[command(flatten)]
        target: Target,
        /// Event streams to open.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Seconds to wait once every stream has its snapshot, before counting: the
        /// streams catch up with what was published while the snapshots were sent.
        #[arg(long, default_value_t = 5.0)]
        warmup: f64,
        /// Seconds to count.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// A no-logic HTTP server: every request is answered 200 with a constant small JSON
    /// body (`POST .../auth/login` with a token pair), for the baseline of `login` and
    /// `read`.
    EchoServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7390")]
        listen: SocketAddr,
    },
}

/// An operator for the scenarios that read or change the controller through its API
/// (`soak`, `emergency`).
#[derive(Args, Clone, Debug)]
pub struct Login {
    /// The operator to log in as.
    #[arg(long)]
    pub user: String,
    /// A file whose first line is the operator's password.
    #[arg(long)]
    pub password_file: PathBuf,
}

impl Login {
    /// Logs in at the API at `api` (`host:port`): its base URL and the access token.
    pub async fn log_in(&self, http: &Client, api: &str) -> anyhow::Result<(String, String)> {
        let target = Target {
            url: format!("http://{api}"),
            user: self.user.clone(),
            password_file: self.password_file.clone(),
        };
        let token = log_in(http, &target).await?;
        Ok((target.url, token))
    }
}

/// Where to send requests, and as whom.
#[derive(Args)]
pub struct Target {
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7380")]
    url: String,
    /// The operator to log in as.
    #[arg(long)]
    user: String,
    /// A file whose first line is the operator's password.
    #[arg(long)]
    password_file: PathBuf,
}

/// How hard and how long.
#[derive(Args)]
pub struct Run {
    /// Clients sending at once, each waiting for its answer before the next request
    /// (one keep-alive connection each).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

/// Runs one mode.
pub async fn run(mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::EchoServer { listen } => echo_server(listen).await,
        Mode::Login { target, run } => {
            let body = json!({"username": target.user, "password": password(&target)?});
            let login = Request::Login {
                url: format!("{}/api/v1/auth/login", target.url),
                body: Arc::new(body),
            };
            drive(&run, login, "logins").await
        }
        Mode::Read { target, run, path } => {
            let token = log_in(&client(1)?, &target).await?;
            let read = Request::Read {
                url: format!("{}{path}", target.url),
                bearer: Arc::from(token),
            };
            drive(&run, read, "reads").await
        }
        Mode::Events {
            target,
            subscribers,
            warmup,
            duration,
        } => {
            let warmup = Duration::from_secs_f64(warmup.max(0.0));
            let duration = Duration::from_secs_f64(duration.max(0.1));
            events(&target, subscribers.max(1), warmup, duration).await
        }
    }
}

fn password(target: &Target) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&target.password_file)
        .with_context(|| format!("reading {}", target.password_file.display()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

fn client(connections: usize) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .build()?)
}

/// Logs in as `target`: the access token.
async fn log_in(client: &Client, target: &Target) -> anyhow::Result<String> {
    let url = format!("{}/api/v1/auth/login", target.url);
    let body = json!({"username": target.user, "password": password(target)?});
    let resp = client.post(&url).json(&body).send().await.context("logging in")?;
    let status = resp.status();
    let answer: Value = resp.json().await.context("reading the login's answer")?;
    if !status.is_success() {
        bail!("logging in: HTTP {status}: {answer}");
    }
    answer["access_token"]
        .as_str()
        .map(str::to_string)
        .context("the login's answer has no access_token")
}

/// One request the load repeats.
#[derive(Clone)]
enum Request {
    Login { url: String, body: Arc<Value> },
    Read { url: String, bearer: Arc<str> },
}

impl Request {
    /// Sends it and reads the whole answer: `Err` names an HTTP status or a failure.
    async fn send(&self, client: &Client) -> Result<(), String> {
        let sent = match self {
            Request::Login { url, body } => client.post(url).json(&**body).send().await,
            Request::Read { url, bearer } => client.get(url).bearer_auth(bearer).send().await,
        };
        let resp = sent.map_err(|e| format!("{e}"))?;
        let status = resp.status();
        resp.bytes().await.map_err(|e| format!("{e}"))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    latency: Latency,
    errors: BTreeMap<String, u64>,
}

/// Sends `request` from `run.concurrency` clients, each one after the other, for
/// `run.duration`, and prints the rate of successful answers and their latency.
async fn drive(run: &Run, request: Request, what: &str) -> anyhow::Result<()> {
    let concurrency = run.concurrency.max(1);
    let client = client(concurrency)?;
    // Every client's connection is open before the clock starts.
    request
        .send(&client)
        .await
        .map_err(|e| anyhow::anyhow!("first request: {e}"))?;
    let duration = Duration::from_secs_f64(run.duration.max(0.1));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, request) = (client.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                match request.send(&client).await {
                    Ok(()) => t.latency.record(sent.elapsed()),
                    Err(e) => *t.errors.entry(e).or_default() += 1,
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        all.latency.merge(&t.latency);
        for (e, n) in t.errors {
            *all.errors.entry(e).or_default() += n;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = all.latency.len();
    println!("clients:      {concurrency}");
    println!("{:<14}{ok} answered 2xx", format!("{what}:"));
    for (e, n) in &all.errors {
        println!("failed:       {n} ({e})");
    }
    println!("elapsed:      {elapsed:.3} s");
    println!("rate:         {:.0} {what}/s", ok as f64 / elapsed);
    println!("{}", all.latency.line("latency:"));
    Ok(())
}

// ---- The event stream ----

/// One Server-Sent Event: its fields as sent (the HTML standard's event stream format,
/// §9.2.6), `data` lines joined with `\n`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:`; empty when not given (a `message`).
    pub event: String,
    /// `id:`, if given.
    pub id: Option<String>,
    /// `data:`.
    pub data: String,
}

/// Splits a byte stream into Server-Sent Events: whole events are returned as a blank
/// line ends them, whatever the chunks. Lines end in LF, CRLF or CR; comment lines
/// (`:`) are skipped; a field's value loses one leading space.
#[derive(Default)]
pub struct SseSplitter {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The event being read.
    event: SseEvent,
    /// Whether the event being read has a field yet.
    started: bool,
    /// Whether it has a `data` line yet (the next one is joined with `\n`).
    has_data: bool,
    /// The last byte was a CR: an LF right after it ends nothing more.
    after_cr: bool,
}

impl SseSplitter {
    /// Feeds `bytes`; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' && self.after_cr {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                self.line_ended(&line, &mut out);
            } else {
                self.line.push(b);
            }
        }
        out
    }

    fn line_ended(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.has_data = false;
            if std::mem::take(&mut self.started) {
                out.push(std::mem::take(&mut self.event));
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*text, ""),
        };
        self.started = true;
        match field {
            "event" => self.event.event = value.to_string(),
            "id" => self.event.id = Some(value.to_string()),
            "data" => {
                if std::mem::replace(&mut self.has_data, true) {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
            }
            _ => {}
        }
    }
}

/// What one listener counted while the clock ran.
#[derive(Default, Clone)]
struct Listener {
    /// Whether its first snapshot came.
    subscribed: bool,
    /// The last id seen, and whether the clock runs.
    last_id: Option<u64>,
    counting: bool,
    /// Events with data received while counting (snapshots not included).
    events: u64,
    /// Ids skipped (sent neither as an event nor an id), or replaced by a snapshot.
    lost: u64,
    /// Ids received twice or out of order.
    out_of_order: u64,
    /// `lagged` events.
    lagged: u64,
    /// A `closed` event: the stream ended.
    closed: Option<String>,
    /// First and last id received while counting.
    first_counted: Option<u64>,
    last_counted: Option<u64>,
    /// From each event's `at_ms` to its arrival, µs (the clock is ms).
    delays: Latency,
}

impl Listener {
    /// Takes in one event.
    fn heard(&mut self, e: &SseEvent) {
        match e.event.as_str() {
            "lagged" => {
                self.lagged += u64::from(self.counting);
                return;
            }
            "closed" => {
                self.closed = Some(e.data.clone());
                return;
            }
            _ => {}
        }
        let Some(id) = e.id.as_deref().and_then(|i| i.parse::<u64>().ok()) else {
            return;
        };
        let snapshot = e.event == "snapshot";
        if let Some(last) = self.last_id {
            if id <= last && !snapshot {
                self.out_of_order += u64::from(self.counting);
                return;
            }
            // A snapshot's id is the last event it reflects; an event's is the next.
            let skipped = id.saturating_sub(last + u64::from(!snapshot));
            if self.counting {
                self.lost += skipped;
            }
        }
        self.last_id = Some(id);
        if snapshot {
            self.subscribed = true;
            return;
        }
        if self.counting && !e.data.is_empty() {
            self.events += 1;
            self.first_counted.get_or_insert(id);
            self.last_counted = Some(id);
            if let Some(at_ms) = at_ms(&e.data) {
                let now_us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros());
                let delay = now_us.saturating_sub(u128::from(at_ms) * 1000);
                self.delays
                    .record(Duration::from_micros(u64::try_from(delay).unwrap_or(u64::MAX)));
            }
        }
    }
}

/// The id of the newest event published: the `snapshot` a resume beyond every id gets
/// (`resume_unavailable`) carries it.
async fn newest_id(client: &Client, url: &str, token: &str) -> anyhow::Result<u64> {
    let mut resp = client
        .get(format!("{url}?last_event_id={}", u64::MAX))
        .bearer_auth(token)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("GET /api/v1/events: HTTP {}", resp.status());
    }
    let mut splitter = SseSplitter::default();
    while let Some(chunk) = resp.chunk().await? {
        if let Some(e) = splitter.push(&chunk).into_iter().find(|e| e.event == "snapshot") {
            return e
                .id
                .and_then(|i| i.parse().ok())
                .context("a snapshot without an id");
        }
    }
    bail!("the event stream ended before its snapshot")
}

/// The `at_ms` of an event's JSON data, found without parsing the rest.
fn at_ms(data: &str) -> Option<u64> {
    let rest = &data[data.find("\"at_ms\":")? + 8..];
    let digits = rest.trim_start();
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn events(
    target: &Target,
    subscribers: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<()> {
    let client = Client::builder()
        .pool_max_idle_per_host(subscribers)
        .tcp_nodelay(true)
        .build()?;
    let token: Arc<str> = Arc::from(log_in(&client, target).await?);
    let url = format!("{}/api/v1/events", target.url);
    let listeners: Vec<Arc<Mutex<Listener>>> = (0..subscribers).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for l in &listeners {
        let (client, url, token, l) = (client.clone(), url.clone(), token.clone(), l.clone());
        tasks.push(tokio::spawn(async move {
            let mut resp = client.get(&url).bearer_auth(&token).send().await?;
            if !resp.status().is_success() {
                bail!("GET /api/v1/events: HTTP {}", resp.status());
            }
            let mut splitter = SseSplitter::default();
            while let Some(chunk) = resp.chunk().await? {
                let events = splitter.push(&chunk);
                let mut l = l.lock().unwrap_or_else(PoisonError::into_inner);
                for e in &events {
                    l.heard(e);
                }
            }
            Ok(())
        }));
    }
    let lock = |l: &Arc<Mutex<Listener>>| l.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let opened = Instant::now();
    loop {
        if let Some(t) = tasks.iter_mut().find(|t| t.is_finished()) {
            t.await??;
            bail!("an event stream ended before the count");
        }
        if listeners.iter().all(|l| lock(l).subscribed) {
            break;
        }
        if opened.elapsed() > Duration::from_secs(60) {
            bail!("not every stream had its snapshot within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "subscribed:   {subscribers} streams in {:.3} s",
        opened.elapsed().as_secs_f64()
    );
    let set = |counting: bool| {
        for l in &listeners {
            l.lock().unwrap_or_else(PoisonError::into_inner).counting = counting;
        }
    };
    tokio::time::sleep(warmup).await;
    let seq_start = newest_id(&client, &url, &token).await?;
    let start = Instant::now();
    set(true);
    tokio::time::sleep(duration).await;
    set(false);
    let elapsed = start.elapsed().as_secs_f64();
    let seq_end = newest_id(&client, &url, &token).await?;
    for t in &tasks {
        t.abort();
    }
    let seen: Vec<Listener> = listeners.iter().map(lock).collect();
    let total: u64 = seen.iter().map(|l| l.events).sum();
    let per: Vec<u64> = seen.iter().map(|l| l.events).collect();
    let sum = |f: fn(&Listener) -> u64| seen.iter().map(f).sum::<u64>();
    let published = seq_end.saturating_sub(seq_start);
    let behind = seen
        .iter()
        .map(|l| seq_end.saturating_sub(l.last_id.unwrap_or(0)))
        .max()
        .unwrap_or(0);
    println!("elapsed:      {elapsed:.3} s");
    println!(
        "published:    {published} events ({:.0} /s; ids {seq_start} to {seq_end}), x {subscribers} streams = {:.0} /s to deliver",
        published as f64 / elapsed,
        (published * subscribers as u64) as f64 / elapsed
    );
    println!(
        "received:     {total} events over {subscribers} streams ({:.0} /s); per stream min {} max {}",
        total as f64 / elapsed,
        per.iter().min().unwrap_or(&0),
        per.iter().max().unwrap_or(&0)
    );
    println!("behind:       the furthest stream was {behind} events behind at the end");
    println!(
        "lost:         {} ids skipped or replaced by a snapshot, {} lagged, {} out of order",
        sum(|l| l.lost),
        sum(|l| l.lagged),
        sum(|l| l.out_of_order)
    );
    for (i, l) in seen.iter().enumerate() {
        if let Some(c) = &l.closed {
            println!("closed:       stream {i}: {c}");
        }
    }
    let mut delays = Latency::default();
    for l in &seen {
        delays.merge(&l.delays);
    }
    println!("{}", delays.line("at_ms to arrival:"));
    Ok(())
}

// ---- The echo baseline ----

/// What the echo server answers a login with: a token pair's shape.
const ECHO_LOGIN: &str =
    r#"{"access_token":"echo","refresh_token":"echo","token_type":"Bearer","expires_in":900}"#;
/// What it answers anything else with.
const ECHO_BODY: &str = r#"{"echo":true}"#;

async fn echo_server(listen: SocketAddr) -> anyhow::Result<()> {
    use axum::http::{header, Method, Uri};
    let app = axum::Router::new().fallback(|method: Method, uri: Uri| async move {
        let body = if method == Method::POST && uri.path().ends_with("/auth/login") {
            ECHO_LOGIN
        } else {
            ECHO_BODY
        };
        ([(header::CONTENT_TYPE, "application/json")], body)
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    println!("echo server on {listen}");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, id: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            id: id.map(Into::into),
            data: data.into(),
        }
    }

    #[test]
    fn events_are_split_on_blank_lines_whatever_the_chunks() {
        let stream = b": keep-alive\n\nevent: snapshot\nid: 41\ndata: {\"seq\":41}\n\n\
            event: call\r\nid:42\r\ndata: a\r\ndata\r\ndata: b\r\n\r\nevent: lagged\rdata: {}\r\r";
        let want = vec![
            ev("snapshot", Some("41"), "{\"seq\":41}"),
            ev("call", Some("42"), "a\n\nb"),
            ev("lagged", None, "{}"),
        ];
        // Whole, and cut at every byte (a CR at the end of one chunk, its LF in the next).
        assert_eq!(SseSplitter::default().push(stream), want);
        let mut s = SseSplitter::default();
        let bytewise: Vec<_> = stream.iter().flat_map(|b| s.push(&[*b])).collect();
        assert_eq!(bytewise, want);
        // An event not yet ended by a blank line is not returned.
        assert_eq!(SseSplitter::default().push(b"id: 1\ndata: x\n"), vec![]);
    }

    #[test]
    fn gaps_in_ids_count_as_lost() {
        let mut l = Listener::default();
        l.heard(&ev("snapshot", Some("10"), "{}"));
        l.counting = true;
        for id in ["11", "12", "15", "16"] {
            l.heard(&ev("call", Some(id), r#"{"seq":0,"at_ms":1}"#));
        }
        // An id without data (an event this operator may not see) is no loss.
        l.heard(&ev("", Some("17"), ""));
        l.heard(&ev("lagged", None, r#"{"last_seen":17}"#));
        // The snapshot after `lagged` reflects 18..=30 without sending them.
        l.heard(&ev("snapshot", Some("30"), "{}"));
        l.heard(&ev("call", Some("31"), "{}"));
        l.heard(&ev("call", Some("31"), "{}"));
        assert_eq!(l.events, 5);
        assert_eq!(l.lost, 2 + 13);
        assert_eq!(l.lagged, 1);
        assert_eq!(l.out_of_order, 1);
        assert_eq!((l.first_counted, l.last_counted), (Some(11), Some(31)));
        assert_eq!(l.delays.len(), 4);
    }

    #[test]
    fn at_ms_is_read_from_the_data() {
        assert_eq!(
            at_ms(r#"{"seq":42,"at_ms":1767225600123,"kind":"granted"}"#),
            Some(1_767_225_600_123)
        );
        assert_eq!(at_ms(r#"{"seq":42}"#), None);
    }
}
