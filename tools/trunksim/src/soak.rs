//! The soak scenario: the call load for a duration, then an account kept against the
//! operator API, which must balance for the run to pass:
//! - every call trunksim saw granted and ended has its call record, and no record of a
//!   granted call from the run is one trunksim never saw;
//! - no call is left in progress, no request left in a busy queue, and no slot of a
//!   site the run used is left busy;
//! - every short data message the controller acknowledged as stored was delivered to
//!   its recipient's gateway (every recipient is a registered unit of the run).
//!
//! Call records are written behind the answers: the account waits for them (up to
//! [`SETTLE`]) before it calls one missing.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use reqwest::Client;
use serde_json::Value;
use trunkd::protocol::CallId;

use crate::api::Login;
use crate::calls::{self, CallArgs};

/// How long the account waits for the controller to settle (records written, slots
/// freed) before it reports what does not balance.
const SETTLE: Duration = Duration::from_secs(10);

/// What the account found.
#[derive(Debug, Default, PartialEq)]
pub struct Account {
    /// Calls trunksim saw granted and ended.
    pub seen: usize,
    /// Records of calls granted during the run.
    pub records: usize,
    /// Calls trunksim saw end that have no record.
    pub missing: Vec<u32>,
    /// Records of granted calls trunksim never saw.
    pub unknown: Vec<i64>,
    /// Calls still in progress.
    pub in_progress: usize,
    /// Requests still queued.
    pub queued: usize,
    /// Slots still busy, as `site/carrier/slot`.
    pub busy_slots: Vec<String>,
    /// Short data messages the controller acknowledged as stored, and delivered to a
    /// gateway (each to a registered unit: all must be delivered).
    pub data_stored: u64,
    pub data_delivered: u64,
}

impl Account {
    /// Whether everything is accounted for.
    pub fn balances(&self) -> bool {
        self.missing.is_empty()
            && self.unknown.is_empty()
            && self.in_progress == 0
            && self.queued == 0
            && self.busy_slots.is_empty()
            && self.data_stored == self.data_delivered
    }

    fn print(&self) {
        println!("soak account:");
        println!(
            "  calls granted and ended: {} seen by trunksim, {} call records",
            self.seen, self.records
        );
        println!(
            "  seen without a record:   {} {:?}",
            self.missing.len(),
            first(&self.missing)
        );
        println!(
            "  records never seen:      {} {:?}",
            self.unknown.len(),
            first(&self.unknown)
        );
        println!("  calls still in progress: {}", self.in_progress);
        println!("  requests still queued:   {}", self.queued);
        println!(
            "  slots still busy:        {} {:?}",
            self.busy_slots.len(),
            first(&self.busy_slots)
        );
        println!(
            "  verdict:                 {}",
            if self.balances() {
                "balanced"
            } else {
                "NOT BALANCED"
            }
        );
    }
}

fn first<T: Clone>(v: &[T]) -> Vec<T> {
    v.iter().take(10).cloned().collect()
}

/// Runs the call load of `args`, then the account as `login`. Fails when the account
/// does not balance.
pub async fn run(args: CallArgs, login: &Login) -> anyhow::Result<Account> {
    let http = Client::new();
    let (url, token) = login.log_in(&http, &args.out.api).await?;
    let from_ms = unix_ms() - 1;
    let report = calls::run_args(&args).await?;
    let seen: BTreeSet<u32> = report.ended_calls().map(CallId::get).collect();
    let sites = report.sites();
    let (data_stored, data_delivered) = report.short_data();
    let api = Api { http, url, token };
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let mut account = api.account(from_ms, &seen, &sites).await?;
        (account.data_stored, account.data_delivered) = (data_stored, data_delivered);
        if account.balances() || tokio::time::Instant::now() >= deadline {
            account.print();
            if !account.balances() {
                bail!("the soak's account does not balance");
            }
            return Ok(account);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The operator API, logged in.
struct Api {
    http: Client,
    url: String,
    token: String,
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("GET {path}: reading the answer"))?;
        if !status.is_success() {
            bail!("GET {path}: HTTP {status}: {body}");
        }
        Ok(body)
    }

    async fn account(&self, from_ms: i64, seen: &BTreeSet<u32>, sites: &[u16]) -> anyhow::Result<Account> {
        let mut granted = BTreeSet::new();
        let mut before: Option<i64> = None;
        loop {
            let page = match before {
                Some(b) => format!("/api/v1/history/calls?from_ms={from_ms}&limit=1000&before={b}"),
                None => format!("/api/v1/history/calls?from_ms={from_ms}&limit=1000"),
            };
            let page = self.get(&page).await?;
            for r in page["calls"].as_array().into_iter().flatten() {
                if r["granted_at_ms"].is_i64() {
                    granted.insert(r["call"].as_i64().unwrap_or(0));
                }
            }
            match page["next_before"].as_i64() {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        let in_progress = self.get("/api/v1/calls").await?["calls"]
            .as_array()
            .map_or(0, Vec::len);
        let queues = self.get("/api/v1/queues").await?;
        let queued = queues["queues"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| q["requests"].as_array().map_or(0, Vec::len))
            .sum();
        let mut busy_slots = Vec::new();
        for site in sites {
            let slots = self.get(&format!("/api/v1/sites/{site}/slots")).await?;
            for s in slots["slots"].as_array().into_iter().flatten() {
                if s["state"] == "busy" {
                    busy_slots.push(format!("{site}/{}/{}", s["carrier"], s["slot"]));
                }
            }
        }
        Ok(Account {
            seen: seen.len(),
            records: granted.len(),
            missing: seen
                .iter()
                .copied()
                .filter(|c| !granted.contains(&i64::from(*c)))
                .collect(),
            unknown: granted
                .iter()
                .copied()
                .filter(|c| u32::try_from(*c).map_or(true, |c| !seen.contains(&c)))
                .collect(),
            in_progress,
            queued,
            busy_slots,
            // Filled in by the caller, from what the gateways saw.
            data_stored: 0,
            data_delivered: 0,
        })
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_soak_balances_and_an_account_missing_a_record_does_not() {
        let (dir, sim, c, api) = crate::load::test_fleet("soak", 40, 4).await;
        let login = crate::load::test_operator(&c, &dir, trunkd::auth::Role::Viewer).await;
        let mut args = crate::load::test_call_args(&sim, &c, &api);
        (args.erlang, args.hold_ms, args.duration, args.seed) = (0.5, 100, 1.5, 5);
        (args.private_share, args.status_share, args.data_share) = (0.6, 0.2, 0.2);
        let from_ms = unix_ms() - 1;
        let account = run(args, &login).await.unwrap();
        assert!(account.balances(), "{account:?}");
        // 4 sites × 5 arrivals/s × 1.5 s: about 18 calls, each with its record, and 6
        // short data messages, each stored and delivered.
        assert!(account.seen > 5 && account.data_stored > 0, "{account:?}");
        assert_eq!(account.records, account.seen);

        // The same history against a call trunksim says it saw but the controller never
        // granted: reported missing, and the account does not balance.
        let http = Client::new();
        let (url, token) = login.log_in(&http, &api).await.unwrap();
        let api = Api { http, url, token };
        let never: u32 = 0x00FF_FFFF;
        let recorded = api
            .account(from_ms, &BTreeSet::new(), &[1])
            .await
            .unwrap()
            .unknown;
        let mut seen: BTreeSet<u32> = recorded.iter().map(|c| *c as u32).collect();
        seen.insert(never);
        let wrong = api.account(from_ms, &seen, &[1, 2, 3, 4]).await.unwrap();
        assert_eq!((wrong.missing, wrong.unknown.len()), (vec![never], 0));
        c.stop().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
