//! Provisioning subscribers: one (`subscriber add`) or a whole file (`subscriber
//! import`), all or nothing. The checks look up only the identities the rows name, and
//! the highest IMSI and individual id in use, each through an index (a test checks the
//! plans), so adding one subscriber costs the same
//! whatever the HLR holds. The unique constraints of the schema stay the last word: a
//! write that loses a race with another writer is planned again.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;

use sqlx::{QueryBuilder, Row};

use super::audit::audit_in;
use super::{rules, valid_imsi_prefix, Arg, ImportError, Store, StoreError, CHUNK};
use crate::hlr::{NewSubscriber, Subscriber};
use crate::protocol::{FleetId, Imei, Imsi, IndividualId, TalkgroupId};

/// What provisioning stored for one subscriber: its identities, given or assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// Line of the row in the imported file (0 for `subscriber add`).
    pub line: u64,
    /// Equipment identity.
    pub imei: Imei,
    /// Subscriber identity.
    pub imsi: Imsi,
    /// Dispatch identity.
    pub individual: IndividualId,
    /// The IMSI was assigned (the row gave none).
    pub imsi_assigned: bool,
    /// The individual id was assigned (the row gave none).
    pub individual_assigned: bool,
}

/// How many times a batch is planned and written before giving up, when another writer
/// took one of its identities (or removed a talkgroup) between the checks and the write.
const ATTEMPTS: usize = 3;

/// Which of some keys a table holds in some columns.
struct Lookup {
    table: &'static str,
    columns: &'static [&'static str],
}

const IMSI: Lookup = Lookup::new("subscribers", &["imsi"]);
const IMEI: Lookup = Lookup::new("subscribers", &["imei"]);
const MSISDN: Lookup = Lookup::new("subscribers", &["msisdn"]);
const INDIVIDUAL: Lookup = Lookup::new("subscribers", &["individual_id"]);
const UNIT: Lookup = Lookup::new("subscribers", &["fleet_id", "member_id"]);
const FLEET: Lookup = Lookup::new("fleets", &["id"]);
const TALKGROUP: Lookup = Lookup::new("talkgroups", &["fleet_id", "id"]);

/// Every lookup provisioning makes (the tests check that each searches an index).
#[cfg(test)]
const LOOKUPS: [&Lookup; 7] = [&IMSI, &IMEI, &MSISDN, &INDIVIDUAL, &UNIT, &FLEET, &TALKGROUP];

/// The highest IMSI between two bounds (the range of a prefix).
const HIGHEST_IMSI: &str =
    "SELECT imsi FROM subscribers WHERE imsi >= $1 AND imsi <= $2 ORDER BY imsi DESC LIMIT 1";
/// The highest individual id in use.
const HIGHEST_INDIVIDUAL: &str = "SELECT individual_id FROM subscribers ORDER BY individual_id DESC LIMIT 1";

impl Lookup {
    const fn new(table: &'static str, columns: &'static [&'static str]) -> Lookup {
        Lookup { table, columns }
    }

    /// `SELECT cols FROM table WHERE (cols) IN (VALUES ($1, …), …)` for `keys` keys.
    fn sql(&self, keys: usize) -> String {
        let cols = self.columns.join(", ");
        let n = self.columns.len();
        let tuples: Vec<String> = (0..keys)
            .map(|k| {
                let marks: Vec<String> = (1..=n).map(|c| format!("${}", k * n + c)).collect();
                format!("({})", marks.join(", "))
            })
            .collect();
        format!(
            "SELECT {cols} FROM {} WHERE ({cols}) IN (VALUES {})",
            self.table,
            tuples.join(", ")
        )
    }
}

fn text(v: impl Display) -> Arg {
    Arg::Text(v.to_string())
}

fn int(v: impl Into<i64>) -> Arg {
    Arg::Int(v.into())
}

/// What the database already holds of the identities a batch names.
struct Taken {
    imsi: HashSet<Vec<Arg>>,
    imei: HashSet<Vec<Arg>>,
    msisdn: HashSet<Vec<Arg>>,
    individual: HashSet<Vec<Arg>>,
    unit: HashSet<Vec<Arg>>,
    fleets: HashSet<Vec<Arg>>,
    talkgroups: HashSet<Vec<Arg>>,
    /// The highest MSIN in use under the prefix.
    highest_msin: Option<u64>,
    /// The highest individual id in use (0: none).
    highest_individual: u32,
}

/// A row checked and given its identities.
struct Planned<'a> {
    line: u64,
    imsi: Imsi,
    individual: IndividualId,
    new: &'a NewSubscriber,
}

impl Store {
    /// Provisions one subscriber and returns it as stored.
    pub async fn add_subscriber(
        &self,
        actor: &str,
        new: NewSubscriber,
        imsi_prefix: &str,
    ) -> Result<Subscriber, StoreError> {
        let done = self
            .provision(actor, &[(0, new)], imsi_prefix)
            .await
            .map_err(|(_, e)| e)?;
        let imsi = done[0].imsi;
        self.subscriber(imsi)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("subscriber {imsi} vanished")))
    }

    /// Imports subscribers all-or-nothing: every row is checked (identities, uniqueness
    /// within the batch and against the database, fleets and talkgroups) before anything
    /// is written, and the whole batch is written in one transaction. Returns what was
    /// stored, in row order.
    pub async fn import_subscribers(
        &self,
        actor: &str,
        rows: Vec<(u64, NewSubscriber)>,
        imsi_prefix: &str,
    ) -> Result<Vec<Provisioned>, ImportError> {
        self.provision(actor, &rows, imsi_prefix)
            .await
            .map_err(|(line, e)| match line {
                Some(line) => ImportError::Row {
                    line,
                    reason: e.to_string(),
                },
                None => ImportError::Store(e),
            })
    }

    /// Checks and writes `rows`; a refused row comes back with its line.
    async fn provision(
        &self,
        actor: &str,
        rows: &[(u64, NewSubscriber)],
        prefix: &str,
    ) -> Result<Vec<Provisioned>, (Option<u64>, StoreError)> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        for _ in 0..ATTEMPTS {
            let taken = self.taken(rows, prefix).await.map_err(|e| (None, e))?;
            let planned = plan(rows, &taken, prefix).map_err(|(line, e)| (Some(line), e))?;
            match self.insert(actor, &planned).await {
                Ok(()) => return Ok(planned.iter().map(Planned::provisioned).collect()),
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err((None, e)),
            }
        }
        Err((
            None,
            StoreError::Conflict(
                "other writers kept changing the subscribers meanwhile; nothing was written, try again"
                    .into(),
            ),
        ))
    }

    /// Looks up what the database holds of the identities `rows` name.
    async fn taken(&self, rows: &[(u64, NewSubscriber)], prefix: &str) -> Result<Taken, StoreError> {
        let keys = |f: &dyn Fn(&NewSubscriber) -> Vec<Vec<Arg>>| -> Vec<Vec<Arg>> {
            let set: HashSet<Vec<Arg>> = rows.iter().flat_map(|(_, s)| f(s)).collect();
            set.into_iter().collect()
        };
        let fleet = |s: &NewSubscriber| int(s.unit.fleet.get());
        let mut taken = Taken {
            imsi: self
                .present(
                    &IMSI,
                    &keys(&|s| s.imsi.map(|i| vec![text(i)]).into_iter().collect()),
                )
                .await?,
            imei: self.present(&IMEI, &keys(&|s| vec![vec![text(s.imei)]])).await?,
            msisdn: self
                .present(
                    &MSISDN,
                    &keys(&|s| s.msisdn.iter().map(|m| vec![text(m)]).collect()),
                )
                .await?,
            individual: self
                .present(
                    &INDIVIDUAL,
                    &keys(&|s| s.individual.map(|i| vec![int(i.get())]).into_iter().collect()),
                )
                .await?,
            unit: self
                .present(&UNIT, &keys(&|s| vec![vec![fleet(s), int(s.unit.member.get())]]))
                .await?,
            fleets: self.present(&FLEET, &keys(&|s| vec![vec![fleet(s)]])).await?,
            talkgroups: self
                .present(
                    &TALKGROUP,
                    &keys(&|s| {
                        s.talkgroups
                            .iter()
                            .map(|t| vec![fleet(s), int(t.get())])
                            .collect()
                    }),
                )
                .await?,
            highest_msin: None,
            highest_individual: 0,
        };
        if rows.iter().any(|(_, s)| s.imsi.is_none()) && valid_imsi_prefix(prefix) {
            let width = 15 - prefix.len();
            let (low, high) = (
                format!("{prefix}{}", "0".repeat(width)),
                format!("{prefix}{}", "9".repeat(width)),
            );
            let top: Option<String> = dispatch!(self, p => sqlx::query_scalar(HIGHEST_IMSI)
                .bind(low)
                .bind(high)
                .fetch_optional(p)
                .await?);
            taken.highest_msin = top.and_then(|i| i[prefix.len()..].parse().ok());
        }
        if rows.iter().any(|(_, s)| s.individual.is_none()) {
            let top: Option<i64> =
                dispatch!(self, p => sqlx::query_scalar(HIGHEST_INDIVIDUAL).fetch_optional(p).await?);
            taken.highest_individual = top.and_then(|i| u32::try_from(i).ok()).unwrap_or(0);
        }
        Ok(taken)
    }

    /// The keys among `keys` that `lookup`'s table holds (one indexed query per chunk).
    async fn present(&self, lookup: &Lookup, keys: &[Vec<Arg>]) -> Result<HashSet<Vec<Arg>>, StoreError> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(CHUNK) {
            let sql = lookup.sql(chunk.len());
            let args: Vec<Arg> = chunk.iter().flatten().cloned().collect();
            let rows = dispatch!(self, p => {
                let rows = bind_args!(sqlx::query(&sql), &args).fetch_all(p).await?;
                rows.iter()
                    .map(|r| {
                        chunk[0]
                            .iter()
                            .enumerate()
                            .map(|(i, a)| {
                                Ok(match a {
                                    Arg::Int(_) => Arg::Int(r.try_get(i)?),
                                    Arg::Text(_) => Arg::Text(r.try_get(i)?),
                                })
                            })
                            .collect::<Result<Vec<Arg>, sqlx::Error>>()
                    })
                    .collect::<Result<Vec<Vec<Arg>>, sqlx::Error>>()?
            });
            found.extend(rows);
        }
        Ok(found)
    }

    /// Writes planned rows, their talkgroups and one audit entry in one transaction.
    async fn insert(&self, actor: &str, planned: &[Planned<'_>]) -> Result<(), StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in planned.chunks(CHUNK) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO subscribers (imsi, imei, msisdn, fleet_id, member_id, individual_id, k, opc, \
                     priority, perm_group, perm_private, perm_emergency, perm_short_data, perm_interconnect, \
                     inhibited, created_at, updated_at, alias) ",
                );
                qb.push_values(chunk, |mut b, row| {
                    let s = row.new;
                    b.push_bind(row.imsi.to_string())
                        .push_bind(s.imei.to_string())
                        .push_bind(s.msisdn.clone())
                        .push_bind(i64::from(s.unit.fleet.get()))
                        .push_bind(i64::from(s.unit.member.get()))
                        .push_bind(i64::from(row.individual.get()))
                        .push_bind(s.k.expose().to_vec())
                        .push_bind(s.opc.expose().to_vec())
                        .push_bind(i64::from(s.priority))
                        .push_bind(s.permissions.group_call)
                        .push_bind(s.permissions.private_call)
                        .push_bind(s.permissions.emergency)
                        .push_bind(s.permissions.short_data)
                        .push_bind(s.permissions.interconnect)
                        .push_bind(false)
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(s.alias.clone());
                });
                qb.build().execute(&mut *tx).await?;
            }
            let tg_rows: Vec<(Imsi, FleetId, TalkgroupId, i64)> = planned
                .iter()
                .flat_map(|row| {
                    let (imsi, fleet) = (row.imsi, row.new.unit.fleet);
                    row.new.talkgroups.iter().enumerate().map(move |(i, tg)| (imsi, fleet, *tg, i as i64))
                })
                .collect();
            for chunk in tg_rows.chunks(CHUNK) {
                let mut qb =
                    QueryBuilder::new("INSERT INTO subscriber_talkgroups (imsi, fleet_id, talkgroup_id, position) ");
                qb.push_values(chunk, |mut b, (imsi, fleet, tg, pos)| {
                    b.push_bind(imsi.to_string())
                        .push_bind(i64::from(fleet.get()))
                        .push_bind(i64::from(tg.get()))
                        .push_bind(*pos);
                });
                qb.build().execute(&mut *tx).await?;
            }
            let count = planned.len();
            let (action, object) = if count == 1 {
                ("subscriber.add", format!("subscriber:{}", planned[0].imsi))
            } else {
                ("subscriber.import", "subscribers".to_string())
            };
            audit_in(&mut tx, now, actor, action, &object, &format!("{count} subscribers")).await?;
            tx.commit().await?;
        });
        Ok(())
    }
}

/// Whether a write failed because another writer changed what its checks saw.
fn lost_race(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d))
        if d.is_unique_violation() || d.is_foreign_key_violation())
}

impl Planned<'_> {
    fn provisioned(&self) -> Provisioned {
        Provisioned {
            line: self.line,
            imei: self.new.imei,
            imsi: self.imsi,
            individual: self.individual,
            imsi_assigned: self.new.imsi.is_none(),
            individual_assigned: self.new.individual.is_none(),
        }
    }
}

/// An identity that must be unique: refused when the database has it or an earlier
/// row of the batch named it.
struct Unique<'t> {
    taken: &'t HashSet<Vec<Arg>>,
    seen: HashMap<Vec<Arg>, u64>,
}

impl<'t> Unique<'t> {
    fn new(taken: &'t HashSet<Vec<Arg>>) -> Self {
        Unique {
            taken,
            seen: HashMap::new(),
        }
    }

    fn claim(&mut self, key: Vec<Arg>, line: u64, shown: impl Display) -> Result<(), StoreError> {
        if self.taken.contains(&key) {
            return Err(StoreError::Conflict(format!("{shown} is already provisioned")));
        }
        match self.seen.entry(key) {
            Entry::Occupied(first) => Err(StoreError::Conflict(format!(
                "{shown} duplicates line {}",
                first.get()
            ))),
            Entry::Vacant(v) => {
                v.insert(line);
                Ok(())
            }
        }
    }
}

/// Checks the rows of a batch in order and gives each its identities.
struct Planner<'t> {
    taken: &'t Taken,
    prefix: &'t str,
    /// IMSIs and individual ids some row gives: never assigned to another.
    given_imsi: HashSet<Imsi>,
    given_individual: HashSet<IndividualId>,
    next_msin: u64,
    next_individual: u32,
    imsi: Unique<'t>,
    imei: Unique<'t>,
    msisdn: Unique<'t>,
    unit: Unique<'t>,
    individual: Unique<'t>,
}

/// Checks every row and assigns missing IMSIs and individual ids; the first problem
/// comes back with its line.
fn plan<'a>(
    rows: &'a [(u64, NewSubscriber)],
    taken: &Taken,
    prefix: &str,
) -> Result<Vec<Planned<'a>>, (u64, StoreError)> {
    let mut planner = Planner {
        taken,
        prefix,
        given_imsi: rows.iter().filter_map(|(_, s)| s.imsi).collect(),
        given_individual: rows.iter().filter_map(|(_, s)| s.individual).collect(),
        next_msin: taken.highest_msin.map_or(1, |m| m + 1),
        next_individual: taken.highest_individual + 1,
        imsi: Unique::new(&taken.imsi),
        imei: Unique::new(&taken.imei),
        msisdn: Unique::new(&taken.msisdn),
        unit: Unique::new(&taken.unit),
        individual: Unique::new(&taken.individual),
    };
    rows.iter()
        .map(|(line, new)| {
            let (imsi, individual) = planner.row(*line, new).map_err(|e| (*line, e))?;
            Ok(Planned {
                line: *line,
                imsi,
                individual,
                new,
            })
        })
        .collect()
}

impl Planner<'_> {
    fn row(&mut self, line: u64, s: &NewSubscriber) -> Result<(Imsi, IndividualId), StoreError> {
        rules::new_subscriber(s)?;
        let fleet = s.unit.fleet;
        if !self.taken.fleets.contains(&vec![int(fleet.get())]) {
            return Err(StoreError::NotFound(format!("fleet {fleet} does not exist")));
        }
        for tg in &s.talkgroups {
            if !self
                .taken
                .talkgroups
                .contains(&vec![int(fleet.get()), int(tg.get())])
            {
                return Err(StoreError::NotFound(format!(
                    "talkgroup {tg} does not exist in fleet {fleet}"
                )));
            }
        }
        self.imei
            .claim(vec![text(s.imei)], line, format_args!("IMEI {}", s.imei))?;
        if let Some(m) = &s.msisdn {
            self.msisdn
                .claim(vec![text(m)], line, format_args!("MSISDN {m}"))?;
        }
        let unit = vec![int(fleet.get()), int(s.unit.member.get())];
        self.unit.claim(
            unit,
            line,
            format_args!("member {} of fleet {fleet}", s.unit.member),
        )?;
        let imsi = match s.imsi {
            Some(i) => i,
            None => self.assign_imsi()?,
        };
        self.imsi
            .claim(vec![text(imsi)], line, format_args!("IMSI {imsi}"))?;
        let individual = match s.individual {
            Some(i) => i,
            None => self.assign_individual()?,
        };
        let shown = format_args!("individual id {individual}");
        self.individual.claim(vec![int(individual.get())], line, shown)?;
        Ok((imsi, individual))
    }

    /// The next IMSI under the prefix above every one in use and given in the batch.
    fn assign_imsi(&mut self) -> Result<Imsi, StoreError> {
        let prefix = self.prefix;
        if !valid_imsi_prefix(prefix) {
            return Err(StoreError::Invalid(format!(
                "IMSI prefix `{prefix}` must be 5 or 6 digits"
            )));
        }
        let width = 15 - prefix.len();
        while self.next_msin < 10u64.pow(width as u32) {
            let n = self.next_msin;
            self.next_msin += 1;
            let imsi = Imsi::parse(&format!("{prefix}{n:0width$}"))
                .map_err(|e| StoreError::Invalid(format!("IMSI under prefix `{prefix}`: {e}")))?;
            if !self.given_imsi.contains(&imsi) {
                return Ok(imsi);
            }
        }
        Err(StoreError::Conflict(format!(
            "no free IMSI left under the prefix {prefix}"
        )))
    }

    /// The next individual id above every one in use and given in the batch.
    fn assign_individual(&mut self) -> Result<IndividualId, StoreError> {
        while let Some(id) = IndividualId::new(self.next_individual) {
            self.next_individual += 1;
            if !self.given_individual.contains(&id) {
                return Ok(id);
            }
        }
        Err(StoreError::Conflict("no free individual id left".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Pool;

    /// What SQLite does for `sql`, one step a line.
    async fn plan_of(store: &Store, sql: &str) -> String {
        let Pool::Sqlite(p) = store.pool() else {
            unreachable!("opened on SQLite")
        };
        let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
            .fetch_all(p)
            .await
            .unwrap();
        let steps: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        steps.join("\n")
    }

    /// Adding a subscriber must not cost more as the HLR grows: every lookup it makes is
    /// answered from an index, never by reading a table or index through.
    #[tokio::test]
    async fn every_provisioning_lookup_searches_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("", dir.path()).await.unwrap();
        let mut queries: Vec<(String, &str)> = LOOKUPS.iter().map(|l| (l.sql(2), l.table)).collect();
        queries.push((HIGHEST_IMSI.into(), "subscribers"));
        queries.push((HIGHEST_INDIVIDUAL.into(), "subscribers"));
        for (sql, table) in queries {
            let plan = plan_of(&store, &sql).await;
            let uses_index = plan.lines().any(|step| {
                // A search finds the keys; a walk of an index from one end stops at
                // its first row when the query wants one.
                step.starts_with(&format!("SEARCH {table} USING"))
                    || step.starts_with(&format!("SCAN {table} USING COVERING INDEX"))
                        && sql.ends_with("LIMIT 1")
            });
            assert!(uses_index, "{sql}:\n{plan}");
        }
        store.close().await;
    }
}
