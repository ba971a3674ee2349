//! The emergency scenario: the sites saturated with ordinary calls, emergencies fired
//! among them, once under each emergency policy of the controller (set through the
//! operator API, `PUT /api/v1/parameters/trunking.emergency`, as an admin): how long an
//! emergency waits for its grant and how many calls emergencies preempt, policy by
//! policy. The policy in force before the run is put back after it. `--json` and
//! `--html` get each policy's call report, in files named after it (`r.json` →
//! `r.queue_head.json`, `r.preempt.json`).

use anyhow::{bail, Context};
use reqwest::Client;
use serde_json::{json, Value};

use crate::api::Login;
use crate::calls::{self, CallArgs};

/// The controller's emergency policies (`trunking.emergency`).
const POLICIES: [&str; 2] = ["queue_head", "preempt"];

/// What one policy gave.
#[derive(Debug)]
pub struct PolicyRun {
    pub policy: &'static str,
    /// Emergency calls granted.
    pub granted: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Calls preempted by emergencies.
    pub preempted: u64,
}

/// Runs the load of `args` (its `--emergency-share` the emergencies among the
/// saturating calls) once per policy, as `login` (an admin).
pub async fn run(args: CallArgs, login: &Login) -> anyhow::Result<Vec<PolicyRun>> {
    let http = Client::new();
    let (url, token) = login.log_in(&http, &args.out.api).await?;
    let param = format!("{url}/api/v1/parameters/trunking.emergency");
    let before = current(&http, &url, &token).await?;
    let mut runs = Vec::new();
    for policy in POLICIES {
        set(&http, &param, &token, policy).await?;
        println!("== trunking.emergency = {policy}");
        // Each policy's call report in files of its own: report.json → report.preempt.json.
        let mut run_args = args.clone();
        let per_policy = |p: &std::path::Path| {
            p.with_extension(format!(
                "{policy}.{}",
                p.extension().and_then(|e| e.to_str()).unwrap_or("out")
            ))
        };
        run_args.out.json = args.out.json.as_deref().map(per_policy);
        run_args.out.html = args.out.html.as_deref().map(per_policy);
        let report = calls::run_args(&run_args).await;
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                set(&http, &param, &token, &before).await?;
                return Err(e);
            }
        };
        let (latency, preempted) = report.emergencies();
        runs.push(PolicyRun {
            policy,
            granted: latency.len(),
            p50_ms: latency.ms(0.5),
            p99_ms: latency.ms(0.99),
            max_ms: latency.max_ms(),
            preempted,
        });
    }
    set(&http, &param, &token, &before).await?;
    println!("emergencies by policy:");
    println!(
        "  {:<12}{:>10}{:>12}{:>12}{:>12}{:>12}",
        "policy", "granted", "p50 ms", "p99 ms", "max ms", "preempted"
    );
    for r in &runs {
        println!(
            "  {:<12}{:>10}{:>12.3}{:>12.3}{:>12.3}{:>12}",
            r.policy, r.granted, r.p50_ms, r.p99_ms, r.max_ms, r.preempted
        );
    }
    Ok(runs)
}

/// The policy in force.
async fn current(http: &Client, url: &str, token: &str) -> anyhow::Result<String> {
    let resp = http
        .get(format!("{url}/api/v1/parameters"))
        .bearer_auth(token)
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.context("reading the parameters")?;
    if !status.is_success() {
        bail!("GET /api/v1/parameters: HTTP {status}: {body}");
    }
    body["parameters"]["trunking.emergency"]
        .as_str()
        .map(str::to_string)
        .context("no trunking.emergency among the parameters")
}

async fn set(http: &Client, param: &str, token: &str, value: &str) -> anyhow::Result<()> {
    let resp = http
        .put(param)
        .bearer_auth(token)
        .json(&json!({ "value": value }))
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!("setting trunking.emergency to {value}: HTTP {status}: {body}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn emergencies_on_saturated_sites_preempt_under_preempt_and_wait_under_queue_head() {
        let (dir, sim, c, api) = crate::load::test_fleet("emergency", 60, 2).await;
        let login = crate::load::test_operator(&c, &dir, trunkd::auth::Role::Admin).await;
        let mut args = crate::load::test_call_args(&sim, &c, &api);
        args.out.json = Some(dir.join("report.json"));
        // Far more than a site's slots: every slot busy, a queue behind them.
        (
            args.erlang,
            args.hold_ms,
            args.duration,
            args.emergency_share,
            args.seed,
        ) = (30.0, 200, 1.5, 0.1, 9);
        let runs = run(args, &login).await.unwrap();
        let by = |p: &str| runs.iter().find(|r| r.policy == p).unwrap();
        let (queue_head, preempt) = (by("queue_head"), by("preempt"));
        assert!(queue_head.granted > 0 && preempt.granted > 0, "{runs:?}");
        assert_eq!(queue_head.preempted, 0, "queue_head never preempts: {runs:?}");
        assert!(
            preempt.preempted > 0,
            "saturated sites: emergencies preempt: {runs:?}"
        );
        c.stop().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
