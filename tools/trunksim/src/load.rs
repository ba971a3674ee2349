//! Provisioning a simulated fleet and registering it through simulated gateways.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use trunkd::core::auth::unit_response;
use trunkd::hlr::{Fleet, Secret128, Site, Talkgroup};
use trunkd::link::gateway::{ControllerList, GatewayLink};
use trunkd::protocol::{
    Cause, FleetId, Frame, Identity, Imei, Message, SiteId, SiteKey, TalkgroupId, Tmsi, Unit,
};
use trunkd::store::Store;

/// Members per simulated fleet.
const FLEET_SIZE: usize = 1000;
/// Talkgroups per simulated fleet.
const TALKGROUPS: u16 = 4;

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
pub async fn provision(store: &Store, units: usize, sites: u16, out: &Path) -> anyhow::Result<()> {
    if units == 0 || sites == 0 {
        bail!("need at least one unit and one site");
    }
    let fleets = units.div_ceil(FLEET_SIZE);
    if fleets > usize::from(u16::MAX) {
        bail!("at most {} units", usize::from(u16::MAX) * FLEET_SIZE);
    }
    let fleet_rows: Vec<Fleet> = (1..=fleets as u16)
        .map(|f| Fleet {
            id: FleetId::new(f).expect("1.."),
            name: format!("sim fleet {f}"),
        })
        .collect();
    let talkgroups: Vec<Talkgroup> = fleet_rows
        .iter()
        .flat_map(|f| {
            (1..=TALKGROUPS).map(|t| Talkgroup {
                fleet: f.id,
                id: TalkgroupId::new(t).expect("1.."),
                name: format!("sim tg {t}"),
            })
        })
        .collect();
    let mut site_rows = Vec::new();
    for s in 1..=sites {
        site_rows.push(Site {
            id: SiteId::new(s).context("site ids must be within 1..=4095")?,
            name: format!("sim site {s}"),
            carriers: 2,
            slots_per_carrier: 6,
            key: SiteKey::generate()?,
        });
    }
    store
        .add_all("trunksim", &fleet_rows, &talkgroups, &site_rows)
        .await
        .context(
            "nothing provisioned; trunksim provision needs an HLR without those fleets and \
             sites: give the simulation a data directory of its own (database.data_dir), or \
             remove it to start over",
        )?;
    std::fs::create_dir_all(out)?;
    let mut site_file = private_file(&out.join("sites.csv"))?;
    writeln!(site_file, "id,key")?;
    for site in &site_rows {
        writeln!(site_file, "{},{}", site.id, site.key.to_hex())?;
    }
    let mut csv = std::io::BufWriter::new(private_file(&out.join("units.csv"))?);
    writeln!(
        csv,
        "imei,imsi,msisdn,fleet,member,individual_id,k,opc,priority,permissions,talkgroups"
    )?;
    for i in 0..units {
        let (k, opc) = (Secret128::generate()?, Secret128::generate()?);
        let fleet = i / FLEET_SIZE + 1;
        let member = i % FLEET_SIZE + 1;
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
    latencies_us: Vec<u32>,
}

/// Registers every unit of `dir/units.csv` through one gateway per site of
/// `dir/sites.csv`, with at most `window` registrations in flight per gateway.
pub async fn register(
    dir: &Path,
    servers: &[String],
    window: usize,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let (sites, per_site) = load_fleet(dir, limit)?;
    let total: usize = per_site.iter().map(Vec::len).sum();
    println!(
        "{} gateways; registering {total} units, window {window} per gateway",
        sites.len()
    );
    let started = Instant::now();
    let (_, report) = register_all(servers, &sites, per_site, window).await?;
    print_report(&report, total, started.elapsed());
    Ok(())
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
    servers: &[String],
    site: SiteId,
    key: &SiteKey,
) -> anyhow::Result<(GatewayLink, ControllerList)> {
    let mut list = ControllerList::new(servers.to_vec()).context("no controller address")?;
    match tokio::time::timeout(STARTUP_PATIENCE, list.link(site, key)).await {
        Ok(link) => Ok((link, list)),
        Err(_) => bail!(
            "no controller of {} accepted site {site} within {STARTUP_PATIENCE:?}",
            servers.join(",")
        ),
    }
}

/// Connects one gateway per site and registers its units.
pub async fn register_all(
    servers: &[String],
    sites: &[(SiteId, SiteKey)],
    per_site: Vec<Vec<SimUnit>>,
    window: usize,
) -> anyhow::Result<(Vec<Registered>, GatewayReport)> {
    let mut links = Vec::new();
    for (site, key) in sites {
        links.push(connect(servers, *site, key).await?);
    }
    let mut lists = Vec::new();
    let mut tasks = Vec::new();
    for ((link, list), units) in links.into_iter().zip(per_site) {
        lists.push(list);
        tasks.push(tokio::spawn(run_gateway(link, units, window)));
    }
    let mut report = GatewayReport::default();
    let mut out = Vec::new();
    for (t, list) in tasks.into_iter().zip(lists) {
        let (link, units, tmsis, r) = t.await??;
        report.accepted += r.accepted;
        for (c, n) in r.rejected {
            *report.rejected.entry(c).or_default() += n;
        }
        report.latencies_us.extend(r.latencies_us);
        out.push((link, list, units, tmsis));
    }
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
async fn run_gateway(
    mut link: GatewayLink,
    units: Vec<SimUnit>,
    window: usize,
) -> anyhow::Result<(GatewayLink, Vec<SimUnit>, Vec<Option<Tmsi>>, GatewayReport)> {
    let mut report = GatewayReport::default();
    let mut tmsis = vec![None; units.len()];
    let mut in_flight: HashMap<u32, (usize, Instant)> = HashMap::new();
    let mut next = 0;
    let mut done = 0;
    let mut keepalive = tokio::time::interval(link.keepalive_interval());
    keepalive.tick().await;
    while done < units.len() {
        while in_flight.len() < window && next < units.len() {
            let txn = link
                .request(Message::RegRequest {
                    identity: Identity::Imei(units[next].imei),
                })
                .await?;
            in_flight.insert(txn, (next, Instant::now()));
            next += 1;
        }
        let frame: Frame = tokio::select! {
            f = link.recv_service() => f?,
            _ = keepalive.tick() => { link.keepalive().await?; continue; }
        };
        let Some(&(i, sent)) = in_flight.get(&frame.txn) else {
            continue;
        };
        match frame.msg {
            Message::AuthChallenge { rand } => {
                let res = unit_response(&units[i].k, &units[i].opc, &rand);
                link.send(Frame::new(frame.txn, Message::AuthResponse { res }))
                    .await?;
            }
            Message::RegAccept { tmsi, .. } => {
                in_flight.remove(&frame.txn);
                tmsis[i] = Some(tmsi);
                report.accepted += 1;
                report
                    .latencies_us
                    .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                done += 1;
            }
            Message::RegReject { cause } | Message::Deny { cause, .. } => {
                in_flight.remove(&frame.txn);
                *report.rejected.entry(cause).or_default() += 1;
                done += 1;
            }
            other => bail!("unexpected answer {other:?}"),
        }
    }
    Ok((link, units, tmsis, report))
}

fn print_report(r: &GatewayReport, total: usize, elapsed: Duration) {
    println!("units:        {total}");
    println!("accepted:     {}", r.accepted);
    let mut rejected: Vec<_> = r.rejected.iter().collect();
    rejected.sort_by_key(|(c, _)| c.code());
    for (c, n) in rejected {
        println!("rejected:     {n} ({c})");
    }
    println!("elapsed:      {:.3} s", elapsed.as_secs_f64());
    println!(
        "rate:         {:.0} registrations/s",
        total as f64 / elapsed.as_secs_f64()
    );
    latency_line("latency:", &r.latencies_us);
}

/// Prints one line of latency percentiles (p50, p99, p99.9, max) in ms.
pub fn latency_line(label: &str, us: &[u32]) {
    let mut lat = us.to_vec();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            f64::from(lat[((p / 100.0) * (lat.len() - 1) as f64).round() as usize]) / 1000.0
        }
    };
    println!(
        "{label:<20}p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} samples)",
        pct(50.0),
        pct(99.0),
        pct(99.9),
        pct(100.0),
        lat.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = provision(&store, 1500, 3, &out).await.unwrap_err();
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
        provision(&store, 1500, 3, &out).await.unwrap();
        assert_eq!(
            store.talkgroups().await.unwrap().len(),
            2 * usize::from(TALKGROUPS)
        );
        let units = std::fs::read_to_string(out.join("units.csv")).unwrap();
        assert_eq!(units.lines().count(), 1 + 1500);
        assert!(provision(&store, 1500, 3, &out).await.is_err());
        assert_eq!(std::fs::read_to_string(out.join("units.csv")).unwrap(), units);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
