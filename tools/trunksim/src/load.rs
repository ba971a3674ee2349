//! Provisioning a simulated fleet and registering it through simulated gateways.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use trunkd::core::auth::unit_response;
use trunkd::hlr::{Fleet, Secret128, Site, Talkgroup};
use trunkd::link::gateway::{ControllerList, GatewayLink};
use trunkd::link::tls::GatewayTls;
use trunkd::protocol::{
    Cause, FleetId, Frame, Identity, Imei, Message, SiteId, SiteKey, TalkgroupId, Tmsi, Unit,
};
use trunkd::store::Store;

use indicatif::ProgressBar;

use crate::api::Login;
use crate::html::{percentile_points, server_points, table, Page};
use crate::report::{bar, causes_json, in_cause_order, Latency, Output};
use crate::server_metrics::ServerSide;

/// Members per simulated fleet.
const FLEET_SIZE: usize = 1000;
/// What `trunksim provision` creates.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub units: usize,
    /// Sites 1..=N.
    pub sites: u16,
    /// Fleets the units are shared among, in contiguous blocks (`None`: one per
    /// [`FLEET_SIZE`] units).
    pub fleets: Option<u16>,
    /// Talkgroups 1..=T in each fleet (every unit is affiliated to 1 and 2).
    pub talkgroups: u16,
}

/// A valid IMEI for unit `i`.
pub fn unit_imei(i: usize) -> String {
    Imei::with_check_digit(&format!("35{i:012}"))
        .expect("14 digits")
        .to_string()
}

/// Writes fleets, talkgroups and sites into the HLR, and `units.csv` (for
/// `trunkd subscriber import`) and `sites.csv` (the gateways' keys) into `out`. All or
/// nothing: the HLR rows go in one transaction, and the files are written only once it
/// committed, so a refused run (an HLR that already holds one of the ids) leaves no
/// trace and the next run can succeed.
pub async fn provision(store: &Store, shape: &Shape, out: &Path) -> anyhow::Result<()> {
    let plan = Plan::of(shape)?;
    let mut site_rows = Vec::new();
    for (id, name) in &plan.sites {
        site_rows.push(Site {
            id: *id,
            name: name.clone(),
            carriers: 2,
            slots_per_carrier: 6,
            key: SiteKey::generate()?,
        });
    }
    store
        .add_all("trunksim", &plan.fleets, &plan.talkgroups, &site_rows)
        .await
        .context(
            "nothing provisioned; trunksim provision needs an HLR without those fleets and \
             sites: give the simulation a data directory of its own (database.data_dir), or \
             remove it to start over",
        )?;
    let keys: Vec<(SiteId, SiteKey)> = site_rows.into_iter().map(|s| (s.id, s.key)).collect();
    plan.write(shape, &keys, out)
}

/// Provisions through the operator API at `api` (`host:port`) as `login`, an admin:
/// fleets, talkgroups and sites one request each (the sites' link keys from the
/// answers), then the units as one `POST /api/v1/subscribers/import` of `units.csv`.
/// A request refused stops it, saying which; what went before it stays.
pub async fn provision_via_api(login: &Login, api: &str, shape: &Shape, out: &Path) -> anyhow::Result<()> {
    let plan = Plan::of(shape)?;
    let http = reqwest::Client::new();
    let (url, token) = login.log_in(&http, api).await?;
    let post = |path: String, body: serde_json::Value| {
        let req = http.post(format!("{url}{path}")).bearer_auth(&token).json(&body);
        async move {
            let resp = req.send().await.with_context(|| format!("POST {path}"))?;
            let status = resp.status();
            let answer: serde_json::Value = resp.json().await.unwrap_or_default();
            if !status.is_success() {
                bail!("POST {path}: HTTP {status}: {answer}");
            }
            Ok::<_, anyhow::Error>(answer)
        }
    };
    for f in &plan.fleets {
        post(
            "/api/v1/fleets".into(),
            serde_json::json!({"id": f.id.get(), "name": f.name}),
        )
        .await?;
    }
    for t in &plan.talkgroups {
        let path = format!("/api/v1/fleets/{}/talkgroups", t.fleet);
        post(path, serde_json::json!({"id": t.id.get(), "name": t.name})).await?;
    }
    let mut keys = Vec::new();
    for (id, name) in &plan.sites {
        let body = serde_json::json!({"id": id.get(), "name": name, "carriers": 2, "slots_per_carrier": 6});
        let answer = post("/api/v1/sites".into(), body).await?;
        let key = answer["link_key"]
            .as_str()
            .context("POST /api/v1/sites: no link_key in the answer")?;
        keys.push((*id, SiteKey::from_hex(key)?));
    }
    plan.write(shape, &keys, out)?;
    let csv = std::fs::read(out.join("units.csv"))?;
    let resp = http
        .post(format!("{url}/api/v1/subscribers/import"))
        .bearer_auth(&token)
        .header(reqwest::header::CONTENT_TYPE, "text/csv")
        .body(csv)
        .send()
        .await
        .context("POST /api/v1/subscribers/import")?;
    let status = resp.status();
    if !status.is_success() {
        let answer = resp.text().await.unwrap_or_default();
        bail!("POST /api/v1/subscribers/import: HTTP {status}: {answer}");
    }
    Ok(())
}

/// What a provision creates: fleets, talkgroups, sites (ids and names), and how many
/// units go to each fleet.
struct Plan {
    fleets: Vec<Fleet>,
    talkgroups: Vec<Talkgroup>,
    sites: Vec<(SiteId, String)>,
    per_fleet: usize,
}

impl Plan {
    fn of(shape: &Shape) -> anyhow::Result<Plan> {
        let Shape {
            units,
            sites,
            fleets,
            talkgroups,
        } = *shape;
        if units == 0 || sites == 0 {
            bail!("need at least one unit and one site");
        }
        if talkgroups < 2 {
            bail!("need at least 2 talkgroups per fleet: the call load calls talkgroups 1 and 2");
        }
        // Units in contiguous blocks, one block per fleet.
        let per_fleet = match fleets {
            Some(0) => bail!("need at least one fleet"),
            Some(f) => units.div_ceil(usize::from(f)),
            None => FLEET_SIZE,
        };
        if per_fleet > usize::from(u16::MAX) {
            bail!("at most {} units per fleet: give more fleets", u16::MAX);
        }
        let fleets = units.div_ceil(per_fleet);
        if fleets > usize::from(u16::MAX) {
            bail!("at most {} fleets", u16::MAX);
        }
        let fleet_rows: Vec<Fleet> = (1..=fleets as u16)
            .map(|f| Fleet {
                id: FleetId::new(f).expect("1.."),
                name: format!("sim fleet {f}"),
            })
            .collect();
        let talkgroup_rows = fleet_rows
            .iter()
            .flat_map(|f| {
                (1..=talkgroups).map(|t| Talkgroup {
                    fleet: f.id,
                    id: TalkgroupId::new(t).expect("1.."),
                    name: format!("sim tg {t}"),
                })
            })
            .collect();
        let mut site_ids = Vec::new();
        for s in 1..=sites {
            let id = SiteId::new(s).context("site ids must be within 1..=4095")?;
            site_ids.push((id, format!("sim site {s}")));
        }
        Ok(Plan {
            fleets: fleet_rows,
            talkgroups: talkgroup_rows,
            sites: site_ids,
            per_fleet,
        })
    }

    /// Writes `out/sites.csv` (the sites' link keys) and `out/units.csv` (the units,
    /// with fresh Milenage keys), readable by their owner only.
    fn write(&self, shape: &Shape, keys: &[(SiteId, SiteKey)], out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out)?;
        let mut site_file = private_file(&out.join("sites.csv"))?;
        writeln!(site_file, "id,key")?;
        for (id, key) in keys {
            writeln!(site_file, "{id},{}", key.to_hex())?;
        }
        let mut csv = std::io::BufWriter::new(private_file(&out.join("units.csv"))?);
        writeln!(
            csv,
            "imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups"
        )?;
        for i in 0..shape.units {
            let (k, opc) = (Secret128::generate()?, Secret128::generate()?);
            let fleet = i / self.per_fleet + 1;
            let member = i % self.per_fleet + 1;
            let priority = i % 8;
            writeln!(
                csv,
                "{},,,{fleet},{member},,{},{},{priority},group;private;emergency;data,1;2",
                unit_imei(i),
                k.to_hex(),
                opc.to_hex()
            )?;
        }
        csv.flush()?;
        Ok(())
    }
}

fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// A simulated radio: its identity and keys.
pub struct SimUnit {
    /// Equipment identity.
    pub imei: Imei,
    /// Dispatch address.
    pub unit: Unit,
    /// K.
    pub k: Secret128,
    /// OPc.
    pub opc: Secret128,
}

/// What the gateways measured while registering.
#[derive(Default)]
pub struct GatewayReport {
    /// Units accepted.
    pub accepted: usize,
    rejected: HashMap<Cause, usize>,
    latency: Latency,
}

/// Which provisioned fleet a scenario drives, and through which controllers.
#[derive(clap::Args, Clone, Debug)]
pub struct FleetArgs {
    /// Directory written by `trunksim provision`.
    #[arg(long, default_value = "sim")]
    pub dir: std::path::PathBuf,
    /// The controllers' link addresses (`host:port`), comma-separated or repeated:
    /// searched for the active one as PROTOCOL.md §3.3 says.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7300")]
    pub server: Vec<String>,
    /// TLS to the controllers (their `link.tls_cert`): the CA certificate(s) to trust,
    /// PEM.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the controllers' certificate must carry, with `--tls-ca`.
    #[arg(long, default_value = "localhost")]
    pub tls_name: String,
    /// Use only the first N units.
    #[arg(long)]
    pub limit: Option<usize>,
}

impl FleetArgs {
    /// The controllers to link to, over TLS with `--tls-ca`.
    pub fn controllers(&self) -> anyhow::Result<Controllers> {
        let tls = match &self.tls_ca {
            Some(ca) => Some(GatewayTls::new(ca, &self.tls_name)?),
            None => None,
        };
        Ok(Controllers {
            addrs: self.server.clone(),
            tls,
        })
    }
}

/// The controllers a gateway links to (searched for the active one as PROTOCOL.md §3.3
/// says), and how.
#[derive(Clone, Debug)]
pub struct Controllers {
    /// Their link addresses (`host:port`).
    pub addrs: Vec<String>,
    /// TLS to every one, or plain TCP.
    pub tls: Option<GatewayTls>,
}

/// Registers every unit of `dir/units.csv` through one gateway per site of
/// `dir/sites.csv`, with at most `window` registrations in flight per gateway.
pub async fn register(fleet: &FleetArgs, window: usize, out: &Output) -> anyhow::Result<()> {
    let (sites, per_site) = load_fleet(&fleet.dir, fleet.limit)?;
    let servers = &fleet.controllers()?;
    let total: usize = per_site.iter().map(Vec::len).sum();
    println!(
        "{} gateways; registering {total} units, window {window} per gateway",
        sites.len()
    );
    let server_side = ServerSide::start(&out.api).await;
    let started = Instant::now();
    let (_, report) = register_all(servers, &sites, per_site, window).await?;
    let elapsed = started.elapsed();
    print_report(&report, total, elapsed);
    let mut json_report = report.json(total, elapsed);
    println!("server's own time per answer, from its /metrics:");
    let series = [
        (REG_CHALLENGE, "  challenge:", "challenge"),
        (REG_ACCEPTED, "  accept:", "accept"),
    ];
    server_side.report(&series, &mut json_report).await;
    out.write(&json_report, || {
        let mut page = Page::new(&format!("trunksim register: {total} units"));
        table(&mut page, &json_report);
        let server = &json_report["server"];
        page.percentiles(
            "REG_REQUEST to REG_ACCEPT (end to end, two round trips), and the server's time per answer",
            &[
                ("end to end", percentile_points(&report.latency)),
                ("server: challenge", server_points(&server["challenge"])),
                ("server: accept", server_points(&server["accept"])),
            ],
        );
        page.render()
    })
}

/// The sites and their keys, and the units of `dir/units.csv` shared out among them in
/// contiguous blocks.
pub fn load_fleet(dir: &Path, limit: Option<usize>) -> anyhow::Result<(Sites, Vec<Vec<SimUnit>>)> {
    let sites = read_sites(&dir.join("sites.csv"))?;
    if sites.is_empty() {
        bail!("sites.csv lists no site");
    }
    let file = std::fs::File::open(dir.join("units.csv")).context("units.csv")?;
    let rows = trunkd::store::csv::parse_subscribers(std::io::BufReader::new(file))?;
    let mut units: Vec<SimUnit> = rows
        .into_iter()
        .map(|(_, s)| SimUnit {
            imei: s.imei,
            unit: s.unit,
            k: s.k,
            opc: s.opc,
        })
        .collect();
    if let Some(l) = limit {
        units.truncate(l);
    }
    // Contiguous blocks: a fleet's units (consecutive in the file) share a site or two,
    // as an organisation's radios share a region.
    let mut per_site: Vec<Vec<SimUnit>> = (0..sites.len()).map(|_| Vec::new()).collect();
    let n = units.len().max(1);
    for (i, u) in units.into_iter().enumerate() {
        per_site[i * sites.len() / n].push(u);
    }
    Ok((sites, per_site))
}

/// Site ids with their link keys.
pub type Sites = Vec<(SiteId, SiteKey)>;

/// A gateway with its controller list, its registered units (and their TMSIs, `None`
/// if refused).
pub type Registered = (GatewayLink, ControllerList, Vec<SimUnit>, Vec<Option<Tmsi>>);

/// How long a gateway waits for a controller that is still starting (`trunkd serve &`
/// right before trunksim: loading a large HLR takes a few seconds).
const STARTUP_PATIENCE: Duration = Duration::from_secs(60);

/// Links site `site` to the active controller of `servers` (searched as PROTOCOL.md
/// §3.3 says), waiting while none accepts yet.
pub async fn connect(
    servers: &Controllers,
    site: SiteId,
    key: &SiteKey,
) -> anyhow::Result<(GatewayLink, ControllerList)> {
    let mut list = ControllerList::new(servers.addrs.clone())
        .context("no controller address")?
        .with_tls(servers.tls.clone());
    match tokio::time::timeout(STARTUP_PATIENCE, list.link(site, key)).await {
        Ok(link) => Ok((link, list)),
        Err(_) => bail!(
            "no controller of {} accepted site {site} within {STARTUP_PATIENCE:?} (last: {})",
            servers.addrs.join(","),
            list.last_error().unwrap_or("no attempt ended")
        ),
    }
}

/// Connects one gateway per site and registers its units.
pub async fn register_all(
    servers: &Controllers,
    sites: &[(SiteId, SiteKey)],
    per_site: Vec<Vec<SimUnit>>,
    window: usize,
) -> anyhow::Result<(Vec<Registered>, GatewayReport)> {
    let mut links = Vec::new();
    for (site, key) in sites {
        links.push(connect(servers, *site, key).await?);
    }
    let total = per_site.iter().map(Vec::len).sum::<usize>() as u64;
    let progress = bar(
        Some(total),
        "registering [{bar:30}] {pos}/{len} units  {rate}  {elapsed}",
    );
    let mut lists = Vec::new();
    let mut tasks = Vec::new();
    for ((link, list), units) in links.into_iter().zip(per_site) {
        lists.push(list);
        tasks.push(tokio::spawn(register_units(
            link,
            units,
            window,
            progress.clone(),
        )));
    }
    let mut report = GatewayReport::default();
    let mut out = Vec::new();
    for (t, list) in tasks.into_iter().zip(lists) {
        let (link, units, tmsis, r) = t.await??;
        report.accepted += r.accepted;
        for (c, n) in r.rejected {
            *report.rejected.entry(c).or_default() += n;
        }
        report.latency.merge(&r.latency);
        out.push((link, list, units, tmsis));
    }
    progress.finish_and_clear();
    Ok((out, report))
}

fn read_sites(path: &Path) -> anyhow::Result<Vec<(SiteId, SiteKey)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (id, key) = l.split_once(',').context("sites.csv: id,key")?;
            let id = id
                .trim()
                .parse()
                .ok()
                .and_then(SiteId::new)
                .context("sites.csv: bad site id")?;
            Ok((id, SiteKey::from_hex(key)?))
        })
        .collect()
}

/// One gateway: keeps `window` registrations in flight (REG_REQUEST by IMEI, answer the
/// challenge, wait for the verdict), measuring each from request to verdict.
pub async fn register_units(
    mut link: GatewayLink,
    units: Vec<SimUnit>,
    window: usize,
    progress: ProgressBar,
) -> anyhow::Result<(GatewayLink, Vec<SimUnit>, Vec<Option<Tmsi>>, GatewayReport)> {
    let mut report = GatewayReport::default();
    let mut tmsis = vec![None; units.len()];
    let mut in_flight: HashMap<u32, (usize, Instant)> = HashMap::new();
    let mut next = 0;
    let mut done = 0;
    let mut keepalive = tokio::time::interval(link.keepalive_interval());
    keepalive.tick().await;
    while done < units.len() {
        // The window refilled and every answer queued since the last write, in one write.
        while in_flight.len() < window && next < units.len() {
            let txn = link
                .queue_request(Message::RegRequest {
                    identity: Identity::Imei(units[next].imei),
                })
                .await?;
            in_flight.insert(txn, (next, Instant::now()));
            next += 1;
        }
        link.flush().await?;
        let first: Frame = tokio::select! {
            f = link.recv_service() => f?,
            _ = keepalive.tick() => { link.keepalive().await?; continue; }
        };
        // This frame and every other already read.
        let mut frame = Some(first);
        while let Some(f) = frame {
            if let Some(&(i, sent)) = in_flight.get(&f.txn) {
                match f.msg {
                    Message::AuthChallenge { rand } => {
                        let res = unit_response(&units[i].k, &units[i].opc, &rand);
                        link.feed(Frame::new(f.txn, Message::AuthResponse { res }))
                            .await?;
                    }
                    Message::RegAccept { tmsi, .. } => {
                        in_flight.remove(&f.txn);
                        tmsis[i] = Some(tmsi);
                        report.accepted += 1;
                        report.latency.record(sent.elapsed());
                        done += 1;
                        progress.inc(1);
                    }
                    Message::RegReject { cause } | Message::Deny { cause, .. } => {
                        in_flight.remove(&f.txn);
                        *report.rejected.entry(cause).or_default() += 1;
                        done += 1;
                        progress.inc(1);
                    }
                    other => bail!("unexpected answer {other:?}"),
                }
            }
            frame = link.buffered().await?;
        }
    }
    Ok((link, units, tmsis, report))
}

fn print_report(r: &GatewayReport, total: usize, elapsed: Duration) {
    println!("units:        {total}");
    println!("accepted:     {}", r.accepted);
    for (c, n) in in_cause_order(&r.rejected) {
        println!("rejected:     {n} ({c})");
    }
    println!("elapsed:      {:.3} s", elapsed.as_secs_f64());
    println!(
        "rate:         {:.0} registrations/s",
        total as f64 / elapsed.as_secs_f64()
    );
    println!("{}", r.latency.line("latency:"));
}

/// The server's histogram series of its answers to REG_REQUEST (a challenge) and to
/// AUTH_RESPONSE (an accept).
const REG_CHALLENGE: &str = "trunkd_registration_round_trip_seconds{answer=\"challenge\"}";
const REG_ACCEPTED: &str = "trunkd_registration_round_trip_seconds{answer=\"accepted\"}";

impl GatewayReport {
    /// The `--json` report of `trunksim register` (README, "A simulated fleet").
    fn json(&self, total: usize, elapsed: Duration) -> serde_json::Value {
        serde_json::json!({
            "scenario": "register",
            "units": total,
            "accepted": self.accepted,
            "rejected": causes_json(&self.rejected),
            "elapsed_s": elapsed.as_secs_f64(),
            "rate_per_s": total as f64 / elapsed.as_secs_f64(),
            "latency": self.latency.json(),
        })
    }
}

/// A test fleet of `units` units on `sites` sites in a fresh SQLite HLR under a
/// temporary folder, and a controller started on it with its operator API: the folder
/// (removed by the caller), the `trunksim provision` output in it, the controller and
/// the API's address.
#[cfg(test)]
pub async fn test_fleet(
    name: &str,
    units: usize,
    sites: u16,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    trunkd::controller::Running,
    String,
) {
    let dir = std::env::temp_dir().join(format!("trunksim-{name}-{}", std::process::id()));
    let (data, sim) = (dir.join("data"), dir.join("sim"));
    let store = Store::open("", &data).await.unwrap();
    let shape = Shape {
        units,
        sites,
        fleets: None,
        talkgroups: 4,
    };
    // No units: an empty HLR, for a test that provisions through the API.
    if units > 0 {
        provision(&store, &shape, &sim).await.unwrap();
        let csv = std::fs::File::open(sim.join("units.csv")).unwrap();
        let rows = trunkd::store::csv::parse_subscribers(std::io::BufReader::new(csv)).unwrap();
        store.import_subscribers("test", rows, "00101").await.unwrap();
    }
    store.close().await;
    let mut cfg = trunkd::config::Config::default();
    cfg.database.data_dir = data;
    cfg.link.listen = "127.0.0.1:0".parse().unwrap();
    cfg.api.listen = "127.0.0.1:0".parse().unwrap();
    let c = trunkd::controller::start(cfg.clone()).await.unwrap();
    let listener = trunkd::api::bind(&cfg.api).await.unwrap();
    let api = listener.local_addr().unwrap().to_string();
    tokio::spawn(trunkd::api::serve(
        listener,
        c.handle(),
        cfg.api,
        std::future::pending(),
    ));
    (dir, sim, c, api)
}

/// An operator of `role` in the test fleet's HLR, with its password in a file under
/// `dir`.
#[cfg(test)]
pub async fn test_operator(
    c: &trunkd::controller::Running,
    dir: &Path,
    role: trunkd::auth::Role,
) -> crate::api::Login {
    let hash = trunkd::auth::password::hash("a test passphrase").unwrap();
    c.store
        .add_operator("test", "tester", &hash, role, &trunkd::auth::Fleets::All)
        .await
        .unwrap();
    let password_file = dir.join("password");
    std::fs::write(&password_file, "a test passphrase\n").unwrap();
    crate::api::Login {
        user: "tester".into(),
        password_file,
    }
}

/// The test fleet as a scenario's `--dir` and `--server`.
#[cfg(test)]
pub fn test_fleet_args(sim: &Path, c: &trunkd::controller::Running) -> FleetArgs {
    FleetArgs {
        dir: sim.to_path_buf(),
        server: vec![c.link_addr.to_string()],
        tls_ca: None,
        tls_name: "localhost".into(),
        limit: None,
    }
}

/// Call-load arguments for the test fleet: private calls only, none moving, no file
/// written; the caller sets the load.
#[cfg(test)]
pub fn test_call_args(sim: &Path, c: &trunkd::controller::Running, api: &str) -> crate::calls::CallArgs {
    crate::calls::CallArgs {
        fleet: test_fleet_args(sim, c),
        erlang: 0.5,
        hold_ms: 100,
        duration: 1.0,
        private_share: 1.0,
        emergency_share: 0.0,
        status_share: 0.0,
        data_share: 0.0,
        move_share: 0.0,
        slots: 11,
        seed: 1,
        out: Output {
            api: api.to_string(),
            json: None,
            html: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        units: 1500,
        sites: 3,
        fleets: None,
        talkgroups: 4,
    };

    #[tokio::test]
    async fn a_fleet_provisioned_through_the_operator_api_registers() {
        let (dir, sim, c, api) = test_fleet("via-api", 0, 0).await;
        let login = test_operator(&c, &dir, trunkd::auth::Role::Admin).await;
        let shape = Shape {
            units: 50,
            sites: 2,
            fleets: Some(2),
            talkgroups: 3,
        };
        provision_via_api(&login, &api, &shape, &sim).await.unwrap();
        assert_eq!(c.store.fleets().await.unwrap().len(), 2);
        assert_eq!(c.store.talkgroups().await.unwrap().len(), 6);
        // The sites' keys from the API's answers open links, and every unit imported
        // through it registers.
        let fleet = test_fleet_args(&sim, &c);
        let (sites, per_site) = load_fleet(&fleet.dir, None).unwrap();
        let (_, r) = register_all(&fleet.controllers().unwrap(), &sites, per_site, 8)
            .await
            .unwrap();
        assert_eq!(r.accepted, 50);
        // Again: the fleets are there already, and the API says so.
        let e = provision_via_api(&login, &api, &shape, &dir.join("again"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("POST /api/v1/fleets: HTTP 409"), "{e}");
        c.stop().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn fleets_and_talkgroups_are_as_many_as_asked_with_the_units_shared_among_them() {
        let dir = std::env::temp_dir().join(format!("trunksim-shape-{}", std::process::id()));
        let store = Store::open("", &dir.join("data")).await.unwrap();
        let shape = Shape {
            units: 1000,
            sites: 2,
            fleets: Some(3),
            talkgroups: 5,
        };
        provision(&store, &shape, &dir.join("sim")).await.unwrap();
        let fleets = store.fleets().await.unwrap();
        assert_eq!(fleets.len(), 3);
        for f in &fleets {
            assert_eq!(
                store.talkgroups_of(Some(f.id)).await.unwrap().len(),
                5,
                "fleet {}",
                f.id
            );
        }
        let csv = std::fs::File::open(dir.join("sim/units.csv")).unwrap();
        let rows = trunkd::store::csv::parse_subscribers(std::io::BufReader::new(csv)).unwrap();
        let per_fleet = |f: u16| rows.iter().filter(|(_, s)| s.unit.fleet.get() == f).count();
        assert_eq!((per_fleet(1), per_fleet(2), per_fleet(3)), (334, 334, 332));
        let no_tg2 = Shape {
            talkgroups: 1,
            ..shape
        };
        let e = provision(&store, &no_tg2, &dir.join("other")).await.unwrap_err();
        assert!(e.to_string().contains("talkgroups 1 and 2"), "{e}");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn register_and_calls_write_their_figures_to_json() {
        let (dir, sim, c, api) = test_fleet("json", 40, 4).await;
        let json = dir.join("register.json");
        let out = |name: &str| Output {
            api: api.clone(),
            json: Some(dir.join(format!("{name}.json"))),
            html: Some(dir.join(format!("{name}.html"))),
        };
        register(&test_fleet_args(&sim, &c), 4, &out("register"))
            .await
            .unwrap();
        let page = std::fs::read_to_string(dir.join("register.html")).unwrap();
        assert_eq!(
            page.matches("<svg class=\"chart\"").count(),
            1,
            "the latency chart"
        );
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(
            (
                r["scenario"].as_str(),
                r["units"].as_u64(),
                r["accepted"].as_u64()
            ),
            (Some("register"), Some(40), Some(40))
        );
        assert_eq!(r["rejected"], serde_json::json!([]));
        assert_eq!(r["latency"]["count"], 40, "one latency per registration");
        let (p50, p99, max) = (
            r["latency"]["p50_ms"].as_f64().unwrap(),
            r["latency"]["p99_ms"].as_f64().unwrap(),
            r["latency"]["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{p50} {p99} {max}");
        // The server answered each registration twice (challenge, accept), timing both.
        assert_eq!(r["server"]["challenge"]["count"], 40);
        assert_eq!(r["server"]["accept"]["count"], 40);
        let server_p50 = r["server"]["accept"]["p50_ms"].as_f64().unwrap();
        assert!(
            server_p50 > 0.0 && server_p50 <= p99,
            "server p50 {server_p50} ms, end to end p99 {p99} ms"
        );

        let load = crate::calls::CallLoad {
            erlang_per_site: 0.5,
            hold: Duration::from_millis(100),
            duration: Duration::from_millis(1500),
            private_share: 1.0,
            emergency_share: 0.0,
            status_share: 0.0,
            data_share: 0.0,
            move_share: 0.0,
            slots_per_site: 11,
            seed: 3,
        };
        let json = dir.join("calls.json");
        crate::calls::run(&test_fleet_args(&sim, &c), load, &out("calls"))
            .await
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let (requests, granted) = (r["requests"].as_u64().unwrap(), r["granted"].as_u64().unwrap());
        // 4 sites × 5 calls/s × 1.5 s: about 30 requests.
        assert!(requests > 5, "{requests} requests");
        assert_eq!(r["request_to_grant"]["count"].as_u64(), Some(granted));
        let denied: u64 = r["denied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["count"].as_u64().unwrap())
            .sum();
        assert_eq!(granted + denied, requests, "every request answered");
        let ended: u64 = r["ended"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["count"].as_u64().unwrap())
            .sum();
        assert_eq!(
            ended, granted,
            "every granted call ended (private calls: one grant each)"
        );
        assert_eq!(r["p_wait"]["slots_per_site"], 11);
        let page = std::fs::read_to_string(dir.join("calls.html")).unwrap();
        // Latency, calls in progress, queued, P(wait); a row of cells per site.
        assert_eq!(page.matches("<svg class=\"chart\"").count(), 4);
        for site in 1..=4 {
            assert!(
                page.contains(&format!(">site {site}</text>")),
                "site {site} in the heat maps"
            );
        }
        // The server's own figures, read from its /metrics: every grant was timed there.
        let at_once = r["granted_at_once"]["count"].as_u64().unwrap();
        assert_eq!(r["server"]["granted_at_once"]["count"].as_u64(), Some(at_once));
        c.stop().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_refused_provision_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("trunksim-provision-{}", std::process::id()));
        let (data, out) = (dir.join("data"), dir.join("sim"));
        let store = Store::open("", &data).await.unwrap();
        // What the README's walkthrough leaves in its HLR: site 1.
        let walkthrough_site = Site {
            id: SiteId::new(1).unwrap(),
            name: "North".into(),
            carriers: 2,
            slots_per_carrier: 6,
            key: SiteKey::generate().unwrap(),
        };
        store.add_site("t", &walkthrough_site).await.unwrap();
        let e = provision(&store, &SHAPE, &out).await.unwrap_err();
        assert!(format!("{e:#}").contains("site 1 already exists"), "{e:#}");
        assert!(
            store.talkgroups().await.unwrap().is_empty(),
            "fleets half-created"
        );
        assert_eq!(store.sites().await.unwrap().len(), 1);
        assert!(!out.join("units.csv").exists());
        store.close().await;

        // A data directory of its own: provisioned, and a second run is refused whole.
        let store = Store::open("", &dir.join("sim-data")).await.unwrap();
        provision(&store, &SHAPE, &out).await.unwrap();
        assert_eq!(
            store.talkgroups().await.unwrap().len(),
            2 * usize::from(SHAPE.talkgroups)
        );
        let units = std::fs::read_to_string(out.join("units.csv")).unwrap();
        assert_eq!(units.lines().count(), 1 + 1500);
        assert!(provision(&store, &SHAPE, &out).await.is_err());
        assert_eq!(std::fs::read_to_string(out.join("units.csv")).unwrap(), units);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
