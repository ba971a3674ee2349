//! The HLR: the durable subscriber database on sqlx, with two backends behind one
//! interface. SQLite is the embedded default (a file in the data directory, WAL mode,
//! foreign keys on); PostgreSQL is used when the configured URL is `postgres://…`.
//!
//! Every query is written once and runs on both backends (see [`dispatch!`]); the store
//! test suite runs it against SQLite always and PostgreSQL when `TEST_DATABASE_URL` is set.
//!
//! Secrets (K, OPc, site keys) are stored as raw bytes in their columns. They are
//! protected by the database's access control: the SQLite file and its directory are
//! created readable by trunkd's user only (0600 / 0700), and a PostgreSQL deployment
//! must restrict the role that owns the schema. They never appear in logs, errors or
//! any read output of trunkd.

pub mod csv;
pub mod health;
pub mod model;
pub mod rules;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgPool, QueryBuilder, Row, SqlitePool};

pub use model::*;

use crate::clock::Clock;

use crate::protocol::{
    FleetId, Imei, Imsi, IndividualId, MemberId, SiteId, SiteKey, TalkgroupId, Tmsi, Unit,
};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused the statement.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Opening the database failed.
    #[error("{0}")]
    Open(String),
    /// A uniqueness or reference rule would be broken.
    #[error("{0}")]
    Conflict(String),
    /// No such record.
    #[error("{0}")]
    NotFound(String),
    /// The value cannot be right (an empty name, a slot the site does not have, ...).
    #[error("{0}")]
    Invalid(String),
}

/// A bulk import was refused; nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A row is invalid; `line` is its line number in the file (header = line 1).
    #[error("line {line}: {reason}")]
    Row {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the file failed.
    #[error("reading the file: {0}")]
    Read(std::io::Error),
}

/// The HLR database, and the clock that stamps what is written to it.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    clock: Clock,
}

/// The connection pool of a [`Store`], by backend.
#[derive(Clone, Debug)]
pub enum Pool {
    /// Embedded SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Runs the same code on whichever pool the store holds: `$pool` is bound to the
/// backend's pool, so one query text (with `$1, $2, …` placeholders in order) serves
/// both backends.
macro_rules! dispatch {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// A bound value of a query built at run time (text or integer column).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Arg {
    Int(i64),
    Text(String),
}

/// Binds `args` in order to a query of either backend.
macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }};
}

mod admin;
mod import;
mod params;

/// Largest rows per multi-row INSERT (keeps within both backends' parameter limits).
const CHUNK: usize = 400;

impl Store {
    /// Opens the database named by `url`, or the SQLite file `trunkd.db` in `data_dir`
    /// when `url` is empty, creating it on first use, then applies pending migrations.
    pub async fn open(url: &str, data_dir: &Path) -> Result<Store, StoreError> {
        let pool = if url_backend(url).map_err(StoreError::Open)? == "postgres" {
            let opts = PgConnectOptions::from_str(url)?;
            // sqlx's error does not say where it tried; the URL may hold a password.
            let place = format!("PostgreSQL at {}:{}", opts.get_host(), opts.get_port());
            let unreachable = |e: sqlx::Error| StoreError::Open(format!("cannot connect to {place}: {e}"));
            // One direct connection first: the pool would retry a refused connection
            // until its timeout and then report only that it timed out.
            let probe = opts.connect().await.map_err(unreachable)?;
            probe.close().await.map_err(unreachable)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await
                .map_err(unreachable)?;
            Pool::Postgres(pool)
        } else {
            let opts = if url.is_empty() {
                create_private_dir(data_dir)?;
                SqliteConnectOptions::new().filename(data_dir.join("trunkd.db"))
            } else {
                SqliteConnectOptions::from_str(url)?
            };
            let opts = opts
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            let file = opts.get_filename().to_path_buf();
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await?;
            restrict_file(&file);
            Pool::Sqlite(pool)
        };
        let store = Store {
            pool,
            clock: Clock::start(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (`migrations/<backend>/`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => sqlx::migrate!("migrations/sqlite").run(p).await?,
            Pool::Postgres(p) => sqlx::migrate!("migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// The same database, its writes stamped by `clock` (the controller's).
    pub fn with_clock(self, clock: Clock) -> Store {
        Store { clock, ..self }
    }

    /// The connection pool, for what the store's methods do not cover (tests).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The Unix time now (ms), on the store's clock.
    fn now_ms(&self) -> i64 {
        self.clock.unix_ms()
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        dispatch!(self, p => p.close().await)
    }

    /// Adds a fleet.
    pub async fn add_fleet(&self, actor: &str, fleet: &Fleet) -> Result<(), StoreError> {
        self.add_all(actor, std::slice::from_ref(fleet), &[], &[]).await
    }

    /// Adds a talkgroup to an existing fleet.
    pub async fn add_talkgroup(&self, actor: &str, tg: &Talkgroup) -> Result<(), StoreError> {
        if !self.fleet_exists(tg.fleet).await? {
            return Err(StoreError::NotFound(format!("fleet {} does not exist", tg.fleet)));
        }
        self.add_all(actor, &[], std::slice::from_ref(tg), &[]).await
    }

    async fn fleet_exists(&self, fleet: FleetId) -> Result<bool, StoreError> {
        let n: i64 = dispatch!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM fleets WHERE id = $1")
            .bind(i64::from(fleet.get()))
            .fetch_one(p)
            .await?);
        Ok(n > 0)
    }

    /// Adds a site with its link key.
    pub async fn add_site(&self, actor: &str, site: &Site) -> Result<(), StoreError> {
        self.add_all(actor, &[], &[], std::slice::from_ref(site)).await
    }

    /// Adds fleets, then talkgroups (of those fleets or existing ones), then sites, all or
    /// nothing: in one transaction, each with its audit entry. Each is checked against
    /// [`rules`] first; the first conflict (an id that exists) rejects the whole batch,
    /// naming it.
    pub async fn add_all(
        &self,
        actor: &str,
        fleets: &[Fleet],
        talkgroups: &[Talkgroup],
        sites: &[Site],
    ) -> Result<(), StoreError> {
        for fleet in fleets {
            rules::name("fleet", &fleet.name)?;
        }
        for tg in talkgroups {
            rules::name("talkgroup", &tg.name)?;
        }
        for site in sites {
            rules::site(site)?;
        }
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            for fleet in fleets {
                let r = sqlx::query("INSERT INTO fleets (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(i64::from(fleet.id.get()))
                    .bind(&fleet.name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await;
                conflict(r, || format!("fleet {} already exists", fleet.id))?;
                audit_in(&mut tx, now, actor, "fleet.add", &format!("fleet:{}", fleet.id), &fleet.name).await?;
            }
            for tg in talkgroups {
                let r = sqlx::query("INSERT INTO talkgroups (fleet_id, id, name, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(i64::from(tg.fleet.get()))
                    .bind(i64::from(tg.id.get()))
                    .bind(&tg.name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await;
                conflict(r, || format!("talkgroup {} already exists in fleet {}", tg.id, tg.fleet))?;
                let object = format!("talkgroup:{}/{}", tg.fleet, tg.id);
                audit_in(&mut tx, now, actor, "talkgroup.add", &object, &tg.name).await?;
            }
            for site in sites {
                let r = sqlx::query(
                    "INSERT INTO sites (id, name, carriers, slots_per_carrier, link_key, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(i64::from(site.id.get()))
                .bind(&site.name)
                .bind(i64::from(site.carriers))
                .bind(i64::from(site.slots_per_carrier))
                .bind(site.key.expose().to_vec())
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await;
                conflict(r, || format!("site {} already exists", site.id))?;
                let detail = format!("name={} carriers={} slots={}", site.name, site.carriers, site.slots_per_carrier);
                audit_in(&mut tx, now, actor, "site.add", &format!("site:{}", site.id), &detail).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every site.
    pub async fn sites(&self) -> Result<Vec<Site>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query("SELECT id, name, carriers, slots_per_carrier, link_key FROM sites ORDER BY id")
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| -> Result<Site, StoreError> {
                let key: Vec<u8> = r.try_get("link_key")?;
                Ok(Site {
                    id: site_id(r.try_get("id")?)?,
                    name: r.try_get("name")?,
                    carriers: r.try_get::<i64, _>("carriers")? as u8,
                    slots_per_carrier: r.try_get::<i64, _>("slots_per_carrier")? as u8,
                    key: SiteKey::from_bytes(key.try_into().map_err(|_| corrupt("site key length"))?),
                })
            }).collect()
        })
    }

    /// Every talkgroup.
    pub async fn talkgroups(&self) -> Result<Vec<Talkgroup>, StoreError> {
        self.talkgroups_of(None).await
    }

    /// One subscriber, or `None`.
    pub async fn subscriber(&self, imsi: Imsi) -> Result<Option<Subscriber>, StoreError> {
        let mut v = self.load_subscribers(Some(imsi)).await?;
        Ok(v.pop())
    }

    /// Every subscriber (with `only`, just that one), with their talkgroups.
    pub async fn load_subscribers(&self, only: Option<Imsi>) -> Result<Vec<Subscriber>, StoreError> {
        let only: Vec<(&str, Arg)> = only
            .map(|i| ("imsi =", Arg::Text(i.to_string())))
            .into_iter()
            .collect();
        self.select_subscribers(&only, None).await
    }

    /// The subscribers that meet every condition (an SQL comparison such as `fleet_id =`
    /// and its value), in IMSI order, at most `limit`, with their talkgroups.
    async fn select_subscribers(
        &self,
        conds: &[(&str, Arg)],
        limit: Option<i64>,
    ) -> Result<Vec<Subscriber>, StoreError> {
        let mut clause = String::new();
        for (i, (cond, _)) in conds.iter().enumerate() {
            clause += &format!("{} {cond} ${}", if i == 0 { " WHERE" } else { " AND" }, i + 1);
        }
        clause += " ORDER BY imsi";
        if limit.is_some() {
            clause += &format!(" LIMIT ${}", conds.len() + 1);
        }
        let args: Vec<Arg> = conds
            .iter()
            .map(|(_, a)| a.clone())
            .chain(limit.map(Arg::Int))
            .collect();
        let sql_sub = format!(
            "SELECT imsi, imei, msisdn, fleet_id, member_id, individual_id, k, opc, priority, perm_group, \
             perm_private, perm_emergency, perm_short_data, perm_interconnect, inhibited, created_at, updated_at \
             FROM subscribers{clause}"
        );
        let tg_filter = if args.is_empty() {
            String::new()
        } else {
            format!(" WHERE imsi IN (SELECT imsi FROM subscribers{clause})")
        };
        let sql_tg = format!(
            "SELECT imsi, talkgroup_id FROM subscriber_talkgroups{tg_filter} ORDER BY imsi, position"
        );
        dispatch!(self, p => {
            let rows = bind_args!(sqlx::query(&sql_sub), &args).fetch_all(p).await?;
            let tg_rows = bind_args!(sqlx::query(&sql_tg), &args).fetch_all(p).await?;
            let mut tgs: std::collections::HashMap<String, Vec<TalkgroupId>> = Default::default();
            for r in &tg_rows {
                tgs.entry(r.try_get("imsi")?).or_default().push(talkgroup_id(r.try_get("talkgroup_id")?)?);
            }
            rows.iter().map(|r| -> Result<Subscriber, StoreError> {
                let imsi_s: String = r.try_get("imsi")?;
                let k: Vec<u8> = r.try_get("k")?;
                let opc: Vec<u8> = r.try_get("opc")?;
                Ok(Subscriber {
                    imsi: Imsi::parse(&imsi_s).map_err(|_| corrupt("imsi"))?,
                    imei: Imei::parse(&r.try_get::<String, _>("imei")?).map_err(|_| corrupt("imei"))?,
                    msisdn: r.try_get("msisdn")?,
                    unit: Unit {
                        fleet: fleet_id(r.try_get("fleet_id")?)?,
                        member: MemberId::new(r.try_get::<i64, _>("member_id")? as u16).ok_or_else(|| corrupt("member"))?,
                    },
                    individual: IndividualId::new(r.try_get::<i64, _>("individual_id")? as u32)
                        .ok_or_else(|| corrupt("individual_id"))?,
                    k: Secret128::from_bytes(k.try_into().map_err(|_| corrupt("k"))?),
                    opc: Secret128::from_bytes(opc.try_into().map_err(|_| corrupt("opc"))?),
                    priority: r.try_get::<i64, _>("priority")? as u8,
                    permissions: Permissions {
                        group_call: r.try_get("perm_group")?,
                        private_call: r.try_get("perm_private")?,
                        emergency: r.try_get("perm_emergency")?,
                        short_data: r.try_get("perm_short_data")?,
                        interconnect: r.try_get("perm_interconnect")?,
                    },
                    inhibited: r.try_get("inhibited")?,
                    talkgroups: tgs.remove(&imsi_s).unwrap_or_default(),
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }).collect()
        })
    }

    /// Inhibits (`true`) or re-enables (`false`) a subscriber.
    pub async fn set_inhibited(&self, actor: &str, imsi: Imsi, inhibited: bool) -> Result<(), StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let r = sqlx::query("UPDATE subscribers SET inhibited = $1, updated_at = $2 WHERE imsi = $3")
                .bind(inhibited)
                .bind(now)
                .bind(imsi.to_string())
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("subscriber {imsi} does not exist")));
            }
            let action = if inhibited { "subscriber.inhibit" } else { "subscriber.enable" };
            audit_in(&mut tx, now, actor, action, &format!("subscriber:{imsi}"), "").await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records where units were last seen (write-behind batches from the controller).
    /// Each entry: the unit, the site, the TMSI it had there, and when (Unix ms).
    pub async fn write_locations(&self, batch: &[(Imsi, SiteId, Tmsi, i64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in batch.chunks(CHUNK) {
                let mut qb = QueryBuilder::new("INSERT INTO last_location (imsi, site_id, tmsi, seen_at) ");
                qb.push_values(chunk, |mut b, (imsi, site, tmsi, at)| {
                    b.push_bind(imsi.to_string())
                        .push_bind(i64::from(site.get()))
                        .push_bind(i64::from(tmsi.get()))
                        .push_bind(*at);
                });
                qb.push(
                    " ON CONFLICT (imsi) DO UPDATE SET site_id = excluded.site_id, tmsi = excluded.tmsi, \
                     seen_at = excluded.seen_at \
                     WHERE excluded.seen_at >= last_location.seen_at",
                );
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Where a unit was last seen: site and Unix ms.
    pub async fn last_location(&self, imsi: Imsi) -> Result<Option<(SiteId, i64)>, StoreError> {
        dispatch!(self, p => {
            let row = sqlx::query("SELECT site_id, seen_at FROM last_location WHERE imsi = $1")
                .bind(imsi.to_string())
                .fetch_optional(p)
                .await?;
            match row {
                None => Ok(None),
                Some(r) => Ok(Some((site_id(r.try_get("site_id")?)?, r.try_get("seen_at")?))),
            }
        })
    }

    /// The TMSI a unit had where it was last seen (`None`: never seen, or seen before
    /// TMSIs were kept).
    pub async fn last_tmsi(&self, imsi: Imsi) -> Result<Option<Tmsi>, StoreError> {
        let tmsi: Option<Option<i64>> = dispatch!(self, p => {
            sqlx::query_scalar("SELECT tmsi FROM last_location WHERE imsi = $1")
                .bind(imsi.to_string())
                .fetch_optional(p)
                .await?
        });
        Ok(tmsi
            .flatten()
            .and_then(|t| u32::try_from(t).ok())
            .and_then(Tmsi::new))
    }

    /// Reserves `n` numbers of the call counter shared by every controller on this
    /// database (`call_id_counter`); returns them as a range. Never hands out a number
    /// twice, across restarts and controllers.
    pub async fn reserve_call_ids(&self, n: u64) -> Result<std::ops::Range<u64>, StoreError> {
        let n = i64::try_from(n).map_err(|_| corrupt("call id block size"))?;
        let end: i64 = dispatch!(self, p => {
            sqlx::query_scalar("UPDATE call_id_counter SET next_id = next_id + $1 WHERE id = 1 RETURNING next_id")
                .bind(n)
                .fetch_one(p)
                .await?
        });
        let end = u64::try_from(end).map_err(|_| corrupt("call counter"))?;
        Ok(end.saturating_sub(n as u64)..end)
    }

    /// One write of the call record writer, in one transaction: the records of `ended`
    /// calls and requests; the journal rows of calls `opened` since the last write (in
    /// progress: their `ended_at` and `end_cause` are ignored); the journal rows of
    /// `closed` calls removed (their records are in `ended`, now or before); and, with
    /// `mark`, the time at which every call left in the journal was still in progress.
    pub async fn write_call_journal(
        &self,
        ended: &[CallRecordRow],
        opened: &[CallRecordRow],
        closed: &[i64],
        mark: Option<i64>,
    ) -> Result<(), StoreError> {
        if ended.is_empty() && opened.is_empty() && closed.is_empty() && mark.is_none() {
            return Ok(());
        }
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in ended.chunks(CHUNK) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO call_records (call_id, call_type, caller_fleet, caller_member, target_kind, \
                     target_fleet, target_id, sites, requested_at, granted_at, ended_at, end_cause, preempted, \
                     emergency) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.call_id)
                        .push_bind(r.call_type.clone())
                        .push_bind(r.caller_fleet)
                        .push_bind(r.caller_member)
                        .push_bind(r.target_kind.clone())
                        .push_bind(r.target_fleet)
                        .push_bind(r.target_id)
                        .push_bind(r.sites.clone())
                        .push_bind(r.requested_at)
                        .push_bind(r.granted_at)
                        .push_bind(r.ended_at)
                        .push_bind(r.end_cause)
                        .push_bind(r.preempted)
                        .push_bind(r.emergency);
                });
                qb.build().execute(&mut *tx).await?;
            }
            for chunk in closed.chunks(CHUNK) {
                let mut qb = QueryBuilder::new("DELETE FROM open_calls WHERE call_id IN (");
                let mut ids = qb.separated(", ");
                for id in chunk {
                    ids.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
            }
            for chunk in opened.chunks(CHUNK) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO open_calls (call_id, call_type, caller_fleet, caller_member, target_kind, \
                     target_fleet, target_id, sites, requested_at, granted_at, emergency) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    b.push_bind(r.call_id)
                        .push_bind(r.call_type.clone())
                        .push_bind(r.caller_fleet)
                        .push_bind(r.caller_member)
                        .push_bind(r.target_kind.clone())
                        .push_bind(r.target_fleet)
                        .push_bind(r.target_id)
                        .push_bind(r.sites.clone())
                        .push_bind(r.requested_at)
                        .push_bind(r.granted_at.unwrap_or(r.requested_at))
                        .push_bind(r.emergency);
                });
                // A call id seen again after the 32-bit space wrapped replaces its stale row.
                qb.push(
                    " ON CONFLICT (call_id) DO UPDATE SET call_type = excluded.call_type, \
                     caller_fleet = excluded.caller_fleet, caller_member = excluded.caller_member, \
                     target_kind = excluded.target_kind, target_fleet = excluded.target_fleet, \
                     target_id = excluded.target_id, sites = excluded.sites, \
                     requested_at = excluded.requested_at, granted_at = excluded.granted_at, \
                     emergency = excluded.emergency",
                );
                qb.build().execute(&mut *tx).await?;
            }
            if let Some(at) = mark {
                sqlx::query("UPDATE journal_mark SET at = $1 WHERE id = 1")
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// After a crash: every call the journal still holds gets its record, ended at the
    /// last time it was known to be in progress (never before its grant), with `cause`;
    /// the journal is emptied. Returns how many records were written.
    pub async fn recover_open_calls(&self, cause: i64) -> Result<u64, StoreError> {
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "INSERT INTO call_records (call_id, call_type, caller_fleet, caller_member, target_kind, \
                 target_fleet, target_id, sites, requested_at, granted_at, ended_at, end_cause, preempted, \
                 emergency) \
                 SELECT o.call_id, o.call_type, o.caller_fleet, o.caller_member, o.target_kind, o.target_fleet, \
                 o.target_id, o.sites, o.requested_at, o.granted_at, \
                 CASE WHEN m.at > o.granted_at THEN m.at ELSE o.granted_at END, $1, FALSE, o.emergency \
                 FROM open_calls o CROSS JOIN journal_mark m WHERE m.id = 1",
            )
            .bind(cause)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM open_calls").execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    /// The newest `limit` call records, newest first.
    pub async fn call_records(&self, limit: i64) -> Result<Vec<CallRecordRow>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query(
                "SELECT call_id, call_type, caller_fleet, caller_member, target_kind, target_fleet, target_id, \
                 sites, requested_at, granted_at, ended_at, end_cause, preempted, emergency \
                 FROM call_records ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| -> Result<CallRecordRow, StoreError> {
                Ok(CallRecordRow {
                    call_id: r.try_get("call_id")?,
                    call_type: r.try_get("call_type")?,
                    caller_fleet: r.try_get("caller_fleet")?,
                    caller_member: r.try_get("caller_member")?,
                    target_kind: r.try_get("target_kind")?,
                    target_fleet: r.try_get("target_fleet")?,
                    target_id: r.try_get("target_id")?,
                    sites: r.try_get("sites")?,
                    requested_at: r.try_get("requested_at")?,
                    granted_at: r.try_get("granted_at")?,
                    ended_at: r.try_get("ended_at")?,
                    end_cause: r.try_get("end_cause")?,
                    preempted: r.try_get("preempted")?,
                    emergency: r.try_get("emergency")?,
                })
            }).collect()
        })
    }

    /// Stores a short-data message for each recipient in one transaction; returns the
    /// message ids in recipient order. Nothing is stored if any insert fails.
    pub async fn store_short_data(
        &self,
        recipients: &[Imsi],
        source: Unit,
        payload: &[u8],
        expires_at: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let now = self.now_ms();
        let mut ids = Vec::with_capacity(recipients.len());
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            for imsi in recipients {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO short_data (recipient_imsi, source_fleet, source_member, payload, created_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(imsi.to_string())
                .bind(i64::from(source.fleet.get()))
                .bind(i64::from(source.member.get()))
                .bind(payload.to_vec())
                .bind(now)
                .bind(expires_at)
                .fetch_one(&mut *tx)
                .await?;
                ids.push(id);
            }
            tx.commit().await?;
        });
        Ok(ids)
    }

    /// The recipients that have short data stored.
    pub async fn short_data_recipients(&self) -> Result<Vec<Imsi>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query("SELECT DISTINCT recipient_imsi FROM short_data")
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Imsi::parse(&r.try_get::<String, _>("recipient_imsi")?).map_err(|_| corrupt("imsi")))
                .collect()
        })
    }

    /// Short data waiting for `imsi`, oldest first: (id, source, payload).
    pub async fn pending_short_data(&self, imsi: Imsi) -> Result<Vec<(i64, Unit, Vec<u8>)>, StoreError> {
        self.pending_short_data_page(imsi, 0, i64::MAX).await
    }

    /// At most `limit` of the messages [`Store::pending_short_data`] gives, those with
    /// an id above `after`.
    pub async fn pending_short_data_page(
        &self,
        imsi: Imsi,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Unit, Vec<u8>)>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query(
                "SELECT id, source_fleet, source_member, payload FROM short_data \
                 WHERE recipient_imsi = $1 AND expires_at > $2 AND id > $3 ORDER BY id LIMIT $4",
            )
            .bind(imsi.to_string())
            .bind(self.now_ms())
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| -> Result<(i64, Unit, Vec<u8>), StoreError> {
                let member = r.try_get::<i64, _>("source_member")?;
                let unit = Unit {
                    fleet: fleet_id(r.try_get("source_fleet")?)?,
                    member: u16::try_from(member).ok().and_then(MemberId::new).ok_or_else(|| corrupt("member"))?,
                };
                Ok((r.try_get("id")?, unit, r.try_get("payload")?))
            }).collect()
        })
    }

    /// Removes a delivered message; `false` if it was not there (already removed).
    pub async fn remove_short_data(&self, id: i64) -> Result<bool, StoreError> {
        let n = dispatch!(self, p => sqlx::query("DELETE FROM short_data WHERE id = $1").bind(id).execute(p).await?.rows_affected());
        Ok(n > 0)
    }

    /// Removes messages whose expiry has passed; returns how many.
    pub async fn expire_short_data(&self, now: i64) -> Result<u64, StoreError> {
        let n = dispatch!(self, p => sqlx::query("DELETE FROM short_data WHERE expires_at <= $1").bind(now).execute(p).await?.rows_affected());
        Ok(n)
    }

    /// Takes a slot (`slot` 0..=5) or a whole carrier (`slot` 255) out of service
    /// (`faulty`), or puts it back. The site must have the carrier and slot, and the
    /// control channel (carrier 0 slot 0) is refused (`rules::slot_target`).
    pub async fn set_slot_fault(
        &self,
        actor: &str,
        site: SiteId,
        carrier: u8,
        slot: u8,
        faulty: bool,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        // Checked before the transaction: on SQLite a transaction that reads and then
        // writes can fail at once if another connection wrote in between.
        let shape: Option<(i64, i64)> = dispatch!(self, p => sqlx::query_as("SELECT carriers, slots_per_carrier FROM sites WHERE id = $1")
            .bind(i64::from(site.get()))
            .fetch_optional(p)
            .await?);
        let Some((carriers, slots)) = shape else {
            return Err(StoreError::NotFound(format!("site {site} does not exist")));
        };
        rules::slot_target(site, (carriers, slots), carrier, slot)?;
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            if faulty {
                sqlx::query(
                    "INSERT INTO slot_faults (site_id, carrier, slot, since) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (site_id, carrier, slot) DO NOTHING",
                )
                .bind(i64::from(site.get()))
                .bind(i64::from(carrier))
                .bind(i64::from(slot))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query("DELETE FROM slot_faults WHERE site_id = $1 AND carrier = $2 AND slot = $3")
                    .bind(i64::from(site.get()))
                    .bind(i64::from(carrier))
                    .bind(i64::from(slot))
                    .execute(&mut *tx)
                    .await?;
            }
            let action = if faulty { "site.slot_faulty" } else { "site.slot_restored" };
            let detail = format!("carrier {carrier} slot {}", if slot == 255 { "all".to_string() } else { slot.to_string() });
            audit_in(&mut tx, now, actor, action, &format!("site:{site}"), &detail).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every slot an operator took out of service: (site, carrier, slot or 255).
    pub async fn slot_faults(&self) -> Result<Vec<(SiteId, u8, u8)>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query("SELECT site_id, carrier, slot FROM slot_faults ORDER BY site_id, carrier, slot")
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| -> Result<(SiteId, u8, u8), StoreError> {
                Ok((
                    site_id(r.try_get("site_id")?)?,
                    r.try_get::<i64, _>("carrier")? as u8,
                    r.try_get::<i64, _>("slot")? as u8,
                ))
            }).collect()
        })
    }

    /// Appends one audit entry.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        object: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            audit_in(&mut tx, self.now_ms(), actor, action, object, detail).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Audit entries with id above `after`, oldest first, at most `limit`.
    pub async fn audit_since(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query(
                "SELECT id, at, actor, action, object, detail FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| -> Result<AuditEntry, StoreError> {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    object: r.try_get("object")?,
                    detail: r.try_get("detail")?,
                })
            }).collect()
        })
    }

    /// The id of the newest audit entry (0 when empty).
    pub async fn audit_high_water(&self) -> Result<i64, StoreError> {
        let v: Option<i64> =
            dispatch!(self, p => sqlx::query_scalar("SELECT MAX(id) FROM audit_log").fetch_one(p).await?);
        Ok(v.unwrap_or(0))
    }
}

/// Writes an audit entry inside a transaction, so it commits or rolls back with the change.
async fn audit_in<'c, DB>(
    tx: &mut sqlx::Transaction<'c, DB>,
    at: i64,
    actor: &str,
    action: &str,
    object: &str,
    detail: &str,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
{
    if DB::NAME == "PostgreSQL" {
        // Sequence values are handed out at INSERT but become visible at COMMIT, so two
        // writers could make id 101 visible before 100, and a reader following the log
        // by id would skip 100 for good. Serialising audit writers keeps ids visible in
        // order. (SQLite serialises all writers anyway.)
        sqlx::query("LOCK TABLE audit_log IN EXCLUSIVE MODE")
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("INSERT INTO audit_log (at, actor, action, object, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(at)
        .bind(actor.to_string())
        .bind(action.to_string())
        .bind(object.to_string())
        .bind(detail.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Maps a unique-violation into a readable conflict.
fn conflict<T>(r: Result<T, sqlx::Error>, msg: impl FnOnce() -> String) -> Result<T, StoreError> {
    match r {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(msg())),
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::Conflict(format!(
            "{}: refers to something that does not exist",
            msg()
        ))),
        other => Ok(other?),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Open(format!("database holds an invalid {what}"))
}
fn site_id(v: i64) -> Result<SiteId, StoreError> {
    u16::try_from(v)
        .ok()
        .and_then(SiteId::new)
        .ok_or_else(|| corrupt("site id"))
}
fn fleet_id(v: i64) -> Result<FleetId, StoreError> {
    u16::try_from(v)
        .ok()
        .and_then(FleetId::new)
        .ok_or_else(|| corrupt("fleet id"))
}
fn talkgroup_id(v: i64) -> Result<TalkgroupId, StoreError> {
    u16::try_from(v)
        .ok()
        .and_then(TalkgroupId::new)
        .ok_or_else(|| corrupt("talkgroup id"))
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Open(format!("creating data directory {}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn restrict_file(file: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
    }
    #[cfg(not(unix))]
    let _ = file;
}

/// The backend a database URL selects (`sqlite` or `postgres`): empty or `sqlite:` for
/// SQLite, `postgres:` or `postgresql:` for PostgreSQL. Anything else is refused naming
/// only its scheme, never the rest of the URL (which may hold a password).
pub fn url_backend(url: &str) -> Result<&'static str, String> {
    if url.is_empty() {
        return Ok("sqlite");
    }
    let scheme = url.split_once(':').map(|(s, _)| s).filter(|s| {
        !s.is_empty()
            && s.len() <= 20
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("sqlite") => Ok("sqlite"),
        Some("postgres" | "postgresql") => Ok("postgres"),
        Some(other) => Err(format!(
            "unsupported scheme `{other}:`; use sqlite:, postgres: or postgresql:, \
             or leave it empty for the embedded SQLite file in database.data_dir"
        )),
        None => Err("not a URL; use sqlite://FILE, postgres://USER@HOST/DB, \
             or leave it empty for the embedded SQLite file in database.data_dir"
            .into()),
    }
}

/// Checks an IMSI prefix (MCC + MNC): 5 or 6 digits.
pub fn valid_imsi_prefix(p: &str) -> bool {
    (5..=6).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
}
