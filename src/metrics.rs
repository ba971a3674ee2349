//! What trunkd counts and measures of itself, and its exposition in the Prometheus text
//! format (version 0.0.4) for `GET /metrics` (README "Operator API" lists every metric).
//!
//! Two kinds of figures:
//! - counted where they happen, on the frame path, into [`Metrics`]: plain atomics, no
//!   lock and no allocation per event (grants, preemptions, denies by cause,
//!   registrations by outcome, and the latency histograms);
//! - read at scrape time from the controller's memory by
//!   [`ControllerHandle::metrics`](crate::controller::ControllerHandle::metrics) (connected
//!   sites, registered units, active calls, queue depth per site, the write-behind
//!   backlog), so they cost nothing between scrapes.
//!
//! [`Scrape`] holds both and encodes them with `prometheus-client`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::protocol::{CallType, Cause, SiteId};

/// The `Content-Type` of [`Scrape::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency histograms' buckets, in nanoseconds: 50 µs to 30 s (a
/// request waits in the busy queue up to `trunking.queue_timeout_ms`, 30 s by default);
/// anything slower lands in `+Inf`.
const BOUNDS_NS: [u64; 18] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// A latency histogram with fixed buckets from 50 µs to 30 s: one atomic per bucket
/// and one for the sum, so recording takes no lock.
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    /// Sum of every observation, ns.
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.iter().position(|b| ns <= *b).unwrap_or(BOUNDS_NS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// What it holds now. The count is the sum of the buckets read, so the two always
    /// agree; an observation recorded during the read may be in the sum only.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = BOUNDS_NS
            .iter()
            .map(|ns| *ns as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_seconds: self.sum_ns.load(Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

/// A histogram as read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations.
    pub count: u64,
    /// Their sum, seconds.
    pub sum_seconds: f64,
    /// (upper bound in seconds, observations in that bucket, not cumulative).
    pub buckets: Vec<(f64, u64)>,
}

/// A counter per cause code (`PROTOCOL.md §6`).
#[derive(Debug)]
struct ByCause([AtomicU64; 256]);

impl Default for ByCause {
    fn default() -> Self {
        ByCause(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl ByCause {
    fn add(&self, cause: Cause) {
        self.0[usize::from(cause.code())].fetch_add(1, Relaxed);
    }

    /// The causes counted at least once, in code order.
    fn snapshot(&self) -> Vec<(Cause, u64)> {
        Cause::ALL
            .iter()
            .map(|c| (*c, self.0[usize::from(c.code())].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// How a registration's request was answered (`PROTOCOL.md §5.2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegAnswer {
    /// `REG_REQUEST` answered `AUTH_CHALLENGE`.
    Challenge,
    /// `AUTH_RESPONSE` answered `REG_ACCEPT`.
    Accepted,
    /// `REG_REQUEST` or `AUTH_RESPONSE` answered `REG_REJECT` or `DENY`.
    Rejected(Cause),
}

impl RegAnswer {
    fn index(self) -> usize {
        match self {
            RegAnswer::Challenge => 0,
            RegAnswer::Accepted => 1,
            RegAnswer::Rejected(_) => 2,
        }
    }
}

/// The label values of the registration round-trip histogram, by [`RegAnswer::index`].
const REG_ANSWERS: [&str; 3] = ["challenge", "accepted", "rejected"];

/// What the controller counts and measures on the frame path; shared by the link
/// sessions and the call service, read by [`ControllerHandle::metrics`].
///
/// [`ControllerHandle::metrics`]: crate::controller::ControllerHandle::metrics
#[derive(Debug, Default)]
pub struct Metrics {
    /// Calls granted, by [`CallType`] (group, private, emergency).
    grants: [AtomicU64; 3],
    preemptions: AtomicU64,
    denies: ByCause,
    registrations_accepted: AtomicU64,
    registrations_rejected: ByCause,
    /// Registration round trips, by [`RegAnswer::index`].
    registration: [Histogram; 3],
    /// Request to grant: granted at once, granted after waiting in the busy queue.
    grant_at_once: Histogram,
    grant_after_queue: Histogram,
}

impl Metrics {
    /// A call was granted.
    pub fn granted(&self, call_type: CallType) {
        let i = match call_type {
            CallType::Group => 0,
            CallType::Private => 1,
            CallType::Emergency => 2,
        };
        self.grants[i].fetch_add(1, Relaxed);
    }

    /// A call was ended to free a slot for an emergency.
    pub fn preempted(&self) {
        self.preemptions.fetch_add(1, Relaxed);
    }

    /// A `DENY` with `cause` is written to a gateway.
    pub fn denied(&self, cause: Cause) {
        self.denies.add(cause);
    }

    /// A registration's request was answered `answer`, `latency` after it was read.
    /// Accepts and rejects are also counted as registration outcomes.
    pub fn registration_answered(&self, answer: RegAnswer, latency: Duration) {
        match answer {
            RegAnswer::Challenge => {}
            RegAnswer::Accepted => {
                self.registrations_accepted.fetch_add(1, Relaxed);
            }
            RegAnswer::Rejected(cause) => self.registrations_rejected.add(cause),
        }
        self.registration[answer.index()].observe(latency);
    }

    /// A call request was answered `CHANNEL_GRANT`, `latency` after it was read; `queued`:
    /// it waited in the busy queue first.
    pub fn grant_written(&self, queued: bool, latency: Duration) {
        if queued {
            self.grant_after_queue.observe(latency)
        } else {
            self.grant_at_once.observe(latency)
        }
    }

    /// The counters and histograms now.
    pub fn snapshot(&self) -> Counted {
        let [group, private, emergency] = [0, 1, 2].map(|i| self.grants[i].load(Relaxed));
        Counted {
            grants: vec![("group", group), ("private", private), ("emergency", emergency)],
            preemptions: self.preemptions.load(Relaxed),
            denies: self.denies.snapshot(),
            registrations_accepted: self.registrations_accepted.load(Relaxed),
            registrations_rejected: self.registrations_rejected.snapshot(),
            registration: REG_ANSWERS
                .iter()
                .zip(&self.registration)
                .map(|(a, h)| (*a, h.snapshot()))
                .collect(),
            grant_at_once: self.grant_at_once.snapshot(),
            grant_after_queue: self.grant_after_queue.snapshot(),
        }
    }
}

/// [`Metrics`] as read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counted {
    /// Calls granted, by call type (`group`, `private`, `emergency`).
    pub grants: Vec<(&'static str, u64)>,
    /// Calls ended to free a slot for an emergency.
    pub preemptions: u64,
    /// `DENY`s written to gateways, by cause (only causes counted at least once).
    pub denies: Vec<(Cause, u64)>,
    /// Registrations answered `REG_ACCEPT`.
    pub registrations_accepted: u64,
    /// Registrations answered `REG_REJECT` or `DENY`, by cause.
    pub registrations_rejected: Vec<(Cause, u64)>,
    /// Registration round trips, by answer (`challenge`, `accepted`, `rejected`).
    pub registration: Vec<(&'static str, HistogramSnapshot)>,
    /// Call request to `CHANNEL_GRANT`, granted at once.
    pub grant_at_once: HistogramSnapshot,
    /// Call request to `CHANNEL_GRANT`, granted after waiting in the busy queue.
    pub grant_after_queue: HistogramSnapshot,
}

/// Records waiting to be written behind the answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Call records not written yet.
    pub call_records: usize,
    /// Units whose last location is not written yet.
    pub locations: usize,
    /// Audit entries not written yet.
    pub audit_entries: usize,
}

/// Everything `GET /metrics` shows, read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// Provisioned sites whose gateway's link is up.
    pub connected_sites: usize,
    /// Units on the air (in the VLR).
    pub registered_units: usize,
    /// Calls in progress.
    pub active_calls: usize,
    /// Requests waiting in each provisioned site's busy queue.
    pub queue_depth: Vec<(SiteId, usize)>,
    /// The write-behind backlog.
    pub backlog: Backlog,
    /// The counters and histograms.
    pub counted: Counted,
    /// This node's place in an HA group; `None` without HA.
    pub ha: Option<HaGauges>,
}

/// An HA node's role, as `GET /metrics` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaGauges {
    /// Whether this node is the active one.
    pub active: bool,
    /// The lease's epoch.
    pub epoch: i64,
    /// Active: ms since the last renewal of the lease.
    pub lease_age_ms: Option<i64>,
}

impl Scrape {
    /// The Prometheus text format (version 0.0.4, [`CONTENT_TYPE`]) of it.
    pub fn encode(self) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// A label value as Prometheus writes them: `queue full` → `queue_full`.
fn label(cause: Cause) -> String {
    cause.text().replace([' ', '-'], "_")
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: usize) -> fmt::Result {
    ConstGauge::new(v as i64).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn histograms(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &'static str,
    series: &[(&str, &HistogramSnapshot)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (value, h) in series {
        m.encode_family(&[(key, *value)])?
            .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let e = &mut e;
        if let Some(ha) = self.ha {
            let help = "Whether this node is the active node of its HA group (1) or a standby (0).";
            gauge(e, "trunkd_ha_active", help, usize::from(ha.active))?;
            let epoch = e.encode_descriptor(
                "trunkd_ha_epoch",
                "The HA lease's epoch.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(ha.epoch).encode(epoch)?;
            if let Some(ms) = ha.lease_age_ms {
                let help = "Seconds since the active node last renewed its HA lease.";
                let age =
                    e.encode_descriptor("trunkd_ha_lease_age_seconds", help, None, MetricType::Gauge)?;
                ConstGauge::new(ms as f64 / 1000.0).encode(age)?;
            }
        }
        gauge(
            e,
            "trunkd_connected_sites",
            "Provisioned sites whose gateway link is up.",
            self.connected_sites,
        )?;
        gauge(
            e,
            "trunkd_registered_units",
            "Units on the air (in the VLR).",
            self.registered_units,
        )?;
        gauge(e, "trunkd_active_calls", "Calls in progress.", self.active_calls)?;
        {
            let help = "Requests waiting in the site's busy queue.";
            let mut m = e.encode_descriptor("trunkd_queue_depth", help, None, MetricType::Gauge)?;
            for (site, depth) in &self.queue_depth {
                let labels = [("site", site.get().to_string())];
                ConstGauge::new(*depth as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let help = "Records waiting to be written to the database behind the answers, by kind.";
            let b = self.backlog;
            let mut m = e.encode_descriptor("trunkd_write_behind_backlog", help, None, MetricType::Gauge)?;
            for (kind, n) in [
                ("call_records", b.call_records),
                ("locations", b.locations),
                ("audit_entries", b.audit_entries),
            ] {
                ConstGauge::new(n as i64).encode(m.encode_family(&[("kind", kind)])?)?;
            }
        }
        let c = &self.counted;
        {
            let help = "Calls granted, by call type.";
            let mut m = e.encode_descriptor("trunkd_grants", help, None, MetricType::Counter)?;
            for (ty, n) in &c.grants {
                ConstCounter::new(*n).encode(m.encode_family(&[("type", *ty)])?)?;
            }
        }
        counter(
            e,
            "trunkd_preemptions",
            "Calls ended to free a slot for an emergency.",
            c.preemptions,
        )?;
        {
            let help = "DENY answers written to gateways, by cause (PROTOCOL.md section 6).";
            let mut m = e.encode_descriptor("trunkd_denies", help, None, MetricType::Counter)?;
            for (cause, n) in &c.denies {
                ConstCounter::new(*n).encode(m.encode_family(&[("cause", label(*cause))])?)?;
            }
        }
        {
            let help = "Registrations answered, by outcome (accepted, or rejected with its cause).";
            let mut m = e.encode_descriptor("trunkd_registrations", help, None, MetricType::Counter)?;
            let accepted = [("outcome", "accepted".to_string())];
            ConstCounter::new(c.registrations_accepted).encode(m.encode_family(&accepted)?)?;
            for (cause, n) in &c.registrations_rejected {
                let labels = [("outcome", "rejected".to_string()), ("cause", label(*cause))];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        let reg: Vec<(&str, &HistogramSnapshot)> = c.registration.iter().map(|(a, h)| (*a, h)).collect();
        histograms(
            e,
            "trunkd_registration_round_trip_seconds",
            "From a REG_REQUEST or AUTH_RESPONSE read to its answer written, by answer.",
            "answer",
            &reg,
        )?;
        histograms(
            e,
            "trunkd_call_request_to_grant_seconds",
            "From a call request read to its CHANNEL_GRANT written; queued: it waited in the busy queue.",
            "queued",
            &[("false", &c.grant_at_once), ("true", &c.grant_after_queue)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // on the bound: in it
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(60)); // past the last bound: +Inf
        h.observe(Duration::MAX);
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), BOUNDS_NS.len() + 1);
        assert_eq!(s.buckets[0], (50e-6, 1));
        assert_eq!(s.buckets[1], (100e-6, 1));
        assert_eq!(s.buckets[BOUNDS_NS.len()], (f64::INFINITY, 2));
    }

    /// Every family with something in it, HA included: what a scrape can hold.
    fn full_scrape() -> String {
        let m = Metrics::default();
        m.granted(CallType::Group);
        m.denied(Cause::QueueFull);
        m.denied(Cause::QueueFull);
        m.registration_answered(RegAnswer::Accepted, Duration::from_micros(300));
        m.registration_answered(RegAnswer::Rejected(Cause::AuthFailed), Duration::from_millis(2));
        m.grant_written(true, Duration::from_secs(1));
        let scrape = Scrape {
            connected_sites: 2,
            registered_units: 5,
            active_calls: 1,
            queue_depth: vec![(SiteId::new(7).unwrap(), 3)],
            backlog: Backlog {
                call_records: 4,
                ..Backlog::default()
            },
            counted: m.snapshot(),
            ha: Some(HaGauges {
                active: true,
                epoch: 3,
                lease_age_ms: Some(250),
            }),
        };
        scrape.encode().unwrap()
    }

    #[test]
    fn the_text_has_every_metric_with_help_type_and_labels() {
        let text = full_scrape();
        for line in [
            "# TYPE trunkd_connected_sites gauge",
            "trunkd_connected_sites 2",
            "trunkd_ha_active 1",
            "trunkd_ha_epoch 3",
            "trunkd_ha_lease_age_seconds 0.25",
            "trunkd_registered_units 5",
            "trunkd_active_calls 1",
            "trunkd_queue_depth{site=\"7\"} 3",
            "trunkd_write_behind_backlog{kind=\"call_records\"} 4",
            "# TYPE trunkd_grants_total counter",
            "trunkd_grants_total{type=\"group\"} 1",
            "trunkd_grants_total{type=\"emergency\"} 0",
            "trunkd_preemptions_total 0",
            "trunkd_denies_total{cause=\"queue_full\"} 2",
            "trunkd_registrations_total{outcome=\"accepted\"} 1",
            "trunkd_registrations_total{outcome=\"rejected\",cause=\"authentication_failed\"} 1",
            "# TYPE trunkd_registration_round_trip_seconds histogram",
            "trunkd_registration_round_trip_seconds_bucket{answer=\"accepted\",le=\"0.0005\"} 1",
            "trunkd_registration_round_trip_seconds_count{answer=\"rejected\"} 1",
            "trunkd_call_request_to_grant_seconds_bucket{queued=\"true\",le=\"+Inf\"} 1",
            "trunkd_call_request_to_grant_seconds_count{queued=\"false\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let helps = text.lines().filter(|l| l.starts_with("# HELP trunkd_")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE trunkd_")).count();
        assert_eq!((helps, types), (14, 14), "{text}");
    }

    /// The Grafana dashboard (`tools/grafana/trunkd-dashboard.json`) asks only for
    /// metrics trunkd exports, grouped by labels they have, and shows each family.
    #[test]
    fn every_query_of_the_grafana_dashboard_names_an_exported_metric_and_its_labels() {
        let text = full_scrape();
        // Sample name → the label names its samples carry.
        let mut exported: std::collections::HashMap<&str, std::collections::HashSet<&str>> =
            Default::default();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let name = line.split(['{', ' ']).next().unwrap();
            let labels = exported.entry(name).or_default();
            if let Some((_, rest)) = line.split_once('{') {
                let inside = rest.split_once('}').unwrap().0;
                labels.extend(
                    inside
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, _)| k),
                );
            }
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../tools/grafana/trunkd-dashboard.json")).unwrap();
        let mut queried = std::collections::HashSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap();
                let names: Vec<&str> = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("trunkd_"))
                    .collect();
                assert!(!names.is_empty(), "{expr}: names no trunkd metric");
                for name in names {
                    let labels = exported
                        .get(name)
                        .unwrap_or_else(|| panic!("{expr}: trunkd exports no {name}"));
                    // `by (…)` and selector labels must be ones the metric has (`le`
                    // on buckets; `instance` is the scraper's).
                    let grouped = expr
                        .split("by (")
                        .skip(1)
                        .flat_map(|g| g.split(')').next().unwrap().split(','))
                        .map(str::trim);
                    for label in grouped.filter(|l| *l != "instance") {
                        assert!(labels.contains(label), "{expr}: {name} has no label {label}");
                    }
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(name);
                    queried.insert(family.to_string());
                }
            }
        }
        let families: std::collections::HashSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .map(|f| {
                if exported.contains_key(format!("{f}_total").as_str()) {
                    format!("{f}_total")
                } else {
                    f
                }
            })
            .collect();
        let mut missing: Vec<_> = families.difference(&queried).collect();
        missing.sort();
        assert!(missing.is_empty(), "the dashboard shows nothing of {missing:?}");
    }
}
