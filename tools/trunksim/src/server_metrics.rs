//! The server's own latency for a run, read from trunkd's `/metrics` before and after it:
//! the histograms' bucket counts grow by what the run caused, and the quantiles of that
//! growth are interpolated within their buckets as Prometheus's `histogram_quantile`
//! does. Set beside the end-to-end latency, it shows how much of a tail is the server and
//! how much the load generator sharing its cores.

use std::collections::HashMap;

use serde_json::{json, Value};

/// The cumulative bucket counts of every histogram series in one scrape, keyed by the
/// series' name and labels (without `le`): `(upper bound in seconds, count)`, in order.
#[derive(Default, Debug)]
pub struct Scrape(HashMap<String, Vec<(f64, u64)>>);

impl Scrape {
    /// Reads the `_bucket` lines of the Prometheus text `text`.
    pub fn parse(text: &str) -> Scrape {
        let mut series: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, rest)) = line.split_once("_bucket{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let mut le = None;
            let mut others = Vec::new();
            for label in labels.split(',') {
                match label.strip_prefix("le=") {
                    Some(v) => le = Some(v.trim_matches('"')),
                    None => others.push(label),
                }
            }
            let bound = match le {
                Some("+Inf") => f64::INFINITY,
                Some(v) => match v.parse() {
                    Ok(b) => b,
                    Err(_) => continue,
                },
                None => continue,
            };
            let Ok(count) = value.trim().parse::<f64>() else {
                continue;
            };
            let key = format!("{name}{{{}}}", others.join(","));
            series.entry(key).or_default().push((bound, count as u64));
        }
        for buckets in series.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Scrape(series)
    }

    /// Reads `http://{api}/metrics`.
    pub async fn read(api: &str) -> anyhow::Result<Scrape> {
        let url = format!("http://{api}/metrics");
        let resp = reqwest::get(&url).await?.error_for_status()?;
        Ok(Scrape::parse(&resp.text().await?))
    }
}

/// What one histogram series grew by between two scrapes.
#[derive(Debug, PartialEq)]
pub struct Grown {
    /// Upper bounds (seconds) and the counts that fell at or under each, cumulative.
    buckets: Vec<(f64, u64)>,
}

impl Grown {
    /// The growth of `series` (`name{labels}`, as [`Scrape`] keys it) from `before` to
    /// `after`; `None` if `after` does not have it.
    pub fn between(before: &Scrape, after: &Scrape, series: &str) -> Option<Grown> {
        let now = after.0.get(series)?;
        let then = before.0.get(series);
        let buckets = now
            .iter()
            .map(|&(le, n)| {
                let old = then
                    .and_then(|t| t.iter().find(|(b, _)| *b == le))
                    .map_or(0, |(_, c)| *c);
                (le, n.saturating_sub(old))
            })
            .collect();
        Some(Grown { buckets })
    }

    /// Observations in the growth.
    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |(_, n)| *n)
    }

    /// The quantile `q` in seconds, interpolated linearly within its bucket (the first
    /// bucket from 0); the largest finite bound when it falls in `+Inf`; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = q * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(le, n) in &self.buckets {
            if n as f64 >= rank {
                if le.is_infinite() {
                    return lower;
                }
                let inside = (n - below) as f64;
                let frac = if inside > 0.0 {
                    (rank - below as f64) / inside
                } else {
                    1.0
                };
                return lower + (le - lower) * frac;
            }
            (lower, below) = (le, n);
        }
        lower
    }

    /// One line: `label  p50 … p90 … p99 … p99.9 … (n answers)`, in ms.
    pub fn line(&self, label: &str) -> String {
        let ms = |q| self.quantile(q) * 1000.0;
        format!(
            "{label:<20}p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  ({} answers; from /metrics buckets)",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            self.count()
        )
    }

    /// `{"count", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms"}`.
    pub fn json(&self) -> Value {
        let ms = |q| self.quantile(q) * 1000.0;
        json!({
            "count": self.count(),
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "p99_9_ms": ms(0.999),
        })
    }
}

/// The server's side of a run: a scrape taken before it, compared with one after.
pub struct ServerSide {
    api: String,
    before: anyhow::Result<Scrape>,
}

impl ServerSide {
    /// Scrapes `api` now; a failure is kept and reported at the end instead of figures.
    pub async fn start(api: &str) -> ServerSide {
        ServerSide {
            api: api.to_string(),
            before: Scrape::read(api).await,
        }
    }

    /// Scrapes again and, for each `(series, label, key)`, prints the growth of
    /// `series` under `label` and puts it in `json["server"][key]`; or prints why there
    /// are no figures and sets `json["server"]` to null.
    pub async fn report(self, series: &[(&str, &str, &str)], json: &mut Value) {
        let scrapes = match &self.before {
            Ok(before) => Scrape::read(&self.api).await.map(|after| (before, after)),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        let (before, after) = match scrapes {
            Ok(both) => both,
            Err(e) => {
                println!("  not read (GET http://{}/metrics: {e})", self.api);
                json["server"] = Value::Null;
                return;
            }
        };
        json["server"] = json!({});
        for (name, label, key) in series {
            if let Some(g) = Grown::between(before, &after, name) {
                println!("{}", g.line(label));
                json["server"][*key] = g.json();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE trunkd_call_request_to_grant_seconds histogram
trunkd_call_request_to_grant_seconds_bucket{queued=\"false\",le=\"0.0001\"} 10
trunkd_call_request_to_grant_seconds_bucket{queued=\"false\",le=\"0.001\"} 10
trunkd_call_request_to_grant_seconds_bucket{queued=\"false\",le=\"+Inf\"} 10
trunkd_call_request_to_grant_seconds_sum{queued=\"false\"} 0.0005
trunkd_call_request_to_grant_seconds_count{queued=\"false\"} 10
";
    const AFTER: &str = "\
trunkd_call_request_to_grant_seconds_bucket{queued=\"false\",le=\"0.0001\"} 60
trunkd_call_request_to_grant_seconds_bucket{queued=\"false\",le=\"0.001\"} 108
trunkd_call_request_to_grant_seconds_bucket{queued=\"false\",le=\"+Inf\"} 110
trunkd_call_request_to_grant_seconds_bucket{queued=\"true\",le=\"+Inf\"} 3
";
    const AT_ONCE: &str = "trunkd_call_request_to_grant_seconds{queued=\"false\"}";

    #[test]
    fn the_growth_between_scrapes_is_what_the_run_caused() {
        let g = Grown::between(&Scrape::parse(BEFORE), &Scrape::parse(AFTER), AT_ONCE).unwrap();
        // 100 new answers: 50 under 0.1 ms, 48 in (0.1, 1] ms, 2 over 1 ms.
        assert_eq!(g.count(), 100);
        // The median is the 50th: the top of the first bucket.
        assert!((g.quantile(0.5) - 0.0001).abs() < 1e-12, "{}", g.quantile(0.5));
        // p90 is the 90th: 40 of the second bucket's 48, interpolated.
        let want = 0.0001 + 0.0009 * 40.0 / 48.0;
        assert!((g.quantile(0.9) - want).abs() < 1e-12, "{}", g.quantile(0.9));
        // p99 falls in +Inf: the largest finite bound is all a histogram can say.
        assert_eq!(g.quantile(0.99), 0.001);
        assert_eq!(g.json()["count"], 100);
    }

    #[test]
    fn a_series_the_first_scrape_lacked_counts_from_zero_and_a_missing_one_is_none() {
        let (before, after) = (Scrape::parse(BEFORE), Scrape::parse(AFTER));
        let queued = Grown::between(
            &before,
            &after,
            "trunkd_call_request_to_grant_seconds{queued=\"true\"}",
        );
        assert_eq!(queued.map(|g| g.count()), Some(3));
        assert_eq!(Grown::between(&before, &after, "trunkd_nothing{}"), None);
        let empty = Grown::between(&after, &after, AT_ONCE).unwrap();
        assert_eq!((empty.count(), empty.quantile(0.99)), (0, 0.0));
    }
}
