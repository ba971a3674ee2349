//! Persistence: the database that holds the HLR (its model is [`crate::hlr`]), on sqlx,
//! with two backends behind one interface. SQLite is the embedded default (a file in the
//! data directory, WAL mode, foreign keys on); PostgreSQL is used when the configured
//! URL is `postgres://…`.
//!
//! Every query is written once and runs on both backends (see the `dispatch!` macro); the store
//! test suite runs it against SQLite always and PostgreSQL when `TEST_DATABASE_URL` is set.
//!
//! Secrets (K, OPc, site keys) are stored as raw bytes in their columns. They are
//! protected by the database's access control: the SQLite file and its directory are
//! created readable by trunkd's user only (0600 / 0700), and a PostgreSQL deployment
//! must restrict the role that owns the schema. They never appear in logs, errors or
//! any read output of trunkd.
//!
//! One file per group of tables, each adding its methods to [`Store`]: `subscribers.rs`,
//! `network.rs` (fleets, talkgroups, sites, slot faults), `locations.rs`, `calls.rs`,
//! `short_data.rs`, `audit.rs`, `params.rs` (system parameters), `operators.rs` (the
//! operator API's accounts), `alarms.rs` (alarms and their ids) and `import.rs`
//! (provisioning subscribers). [`rules`] is what a write must meet, [`csv`] reads the
//! provisioning files, [`health`] tells whether the database answers.

pub mod csv;
pub mod health;
pub mod rules;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgPool, SqlitePool};

use crate::clock::Clock;
use crate::protocol::{FleetId, SiteId, TalkgroupId};

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

/// The `WHERE … ORDER BY … LIMIT …` tail of a query built at run time, with the values
/// it binds in order.
#[derive(Clone, Debug, Default)]
struct Filter {
    sql: String,
    args: Vec<Arg>,
}

impl Filter {
    /// Adds a condition, with a `$` where each of `values` goes (`fleet_id IN ($, $)`).
    fn and(&mut self, cond: &str, values: impl IntoIterator<Item = Arg>) -> &mut Self {
        self.sql += if self.sql.is_empty() { " WHERE " } else { " AND " };
        let mut values = values.into_iter();
        for (i, part) in cond.split('$').enumerate() {
            if i > 0 {
                self.args.extend(values.next());
                self.sql += &format!("${}", self.args.len());
            }
            self.sql += part;
        }
        self
    }

    /// `$, $, …`: the marks of an `IN (…)` list of `n` values.
    fn marks(n: usize) -> String {
        vec!["$"; n].join(", ")
    }

    /// Ends it with `ORDER BY order` and, when given, `LIMIT`.
    fn order(&mut self, order: &str, limit: Option<i64>) -> &mut Self {
        self.sql += &format!(" ORDER BY {order}");
        if let Some(l) = limit {
            self.args.push(Arg::Int(l));
            self.sql += &format!(" LIMIT ${}", self.args.len());
        }
        self
    }
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

mod alarms;
mod audit;
mod calls;
mod import;
mod locations;
mod network;
mod operators;
mod params;
mod short_data;
mod subscribers;
mod units;

pub use alarms::{AlarmPage, AlarmRow};
pub use audit::{AuditEntry, AuditSearch};
pub use calls::{CallHistoryEntry, CallRecordRow, CallSearch};
pub use import::Provisioned;
pub use operators::{OperatorChange, RefreshRow};
pub use subscribers::{SubscriberSearch, SubscriberUpdate};

use audit::audit_in;

/// The HA node a store writes for while it is active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveEpoch {
    /// The node's name (`ha.node_id`).
    pub node_id: String,
    /// The lease's epoch it won.
    pub epoch: i64,
    /// How long the server lets one of its transactions sit idle, ms.
    pub idle_transaction_timeout_ms: u64,
}

impl ActiveEpoch {
    /// Prefix of the `application_name` of every active node's writing connection.
    pub const APPLICATION_PREFIX: &'static str = "trunkd-active:";

    /// This node's writing connections' `application_name`.
    pub fn application_name(&self) -> String {
        format!("{}{}:{}", Self::APPLICATION_PREFIX, self.node_id, self.epoch)
    }
}

/// Largest rows per multi-row INSERT (keeps within both backends' parameter limits).
const CHUNK: usize = 400;

/// Largest rows per statement of a write-behind batch ([`fixed_chunks`]).
const BATCH_CHUNK: usize = 32;

/// The text of a statement writing `rows` rows of `cols` values: `head`, then
/// `VALUES ($1, …), (…)` numbered in order for PostgreSQL (`numbered`), `(?, …)` for
/// SQLite, which binds those in order where it would look each `$n` up by name (`cols`
/// 0: a list, `$1, $2, …`, for an `IN (…)`), then `tail`. Built once per shape and kept for the life of the process
/// (a few dozen texts: [`fixed_chunks`] gives few shapes); binding values to it formats
/// nothing, where building the text for every batch (sqlx's `QueryBuilder`) cost about
/// 500 instructions per value.
fn batch_sql(
    numbered: bool,
    head: &'static str,
    cols: usize,
    rows: usize,
    tail: &'static str,
) -> &'static str {
    type Key = (bool, &'static str, usize, usize, &'static str);
    static TEXTS: std::sync::OnceLock<std::sync::Mutex<HashMap<Key, &'static str>>> =
        std::sync::OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    texts
        .entry((numbered, head, cols, rows, tail))
        .or_insert_with(|| {
            use std::fmt::Write;
            let mut sql = String::from(head);
            sql += if cols == 0 { " " } else { " VALUES " };
            let mut n = 0;
            for row in 0..rows {
                if row > 0 {
                    sql += ", ";
                }
                let mut value = |sql: &mut String| {
                    n += 1;
                    let _ = if numbered {
                        write!(sql, "${n}")
                    } else {
                        write!(sql, "?")
                    };
                };
                if cols == 0 {
                    value(&mut sql);
                    continue;
                }
                sql += "(";
                for col in 0..cols {
                    if col > 0 {
                        sql += ", ";
                    }
                    value(&mut sql);
                }
                sql += ")";
            }
            sql += " ";
            sql += tail;
            // Kept for good: a bounded number of texts, each used again at every batch.
            Box::leak(sql.into_boxed_str())
        })
}

/// `items` in chunks of fixed sizes, for the statements of a write-behind batch: as many
/// of [`BATCH_CHUNK`] as fit, then the rest in powers of two, largest first. A
/// multi-row statement's text depends on its number of rows; with these sizes there are
/// at most six texts per statement, each prepared once per connection (small ones: a
/// statement of 256 rows cost a million instructions to prepare) and then found
/// in the statement cache, where a batch of any size used to be parsed again.
fn fixed_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = rest.len().min(BATCH_CHUNK);
        let (head, tail) = rest.split_at(1 << n.ilog2());
        rest = tail;
        Some(head)
    })
}

impl Store {
    /// SQLite: the statement a write-behind transaction starts with, giving its
    /// connection 32 MiB of page cache (SQLite's default is 2 MiB). Its upserts land at
    /// random places in tables of a row per unit: with the default cache, a million
    /// units on the air cost 25 µs of server CPU per registration against 15 µs for
    /// 100,000 (BENCHMARKS.md, "Server CPU per registration as the HLR grows"). Only
    /// connections that write behind grow their cache, so the HLR load at start-up keeps
    /// the default. `None` on PostgreSQL, whose cache is the server's.
    fn writer_cache(&self) -> Option<&'static str> {
        (!self.numbered()).then_some("PRAGMA cache_size = -32768")
    }

    /// Whether statements number their values (`$1`: PostgreSQL) rather than take them
    /// in order (`?`: SQLite); see [`batch_sql`].
    fn numbered(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Opens the database named by `url`, or the SQLite file `trunkd.db` in `data_dir`
    /// when `url` is empty, creating it on first use, then applies pending migrations.
    pub async fn open(url: &str, data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(url, data_dir, None).await
    }

    /// [`Store::open`] for the active node of an HA group (PostgreSQL only): every
    /// connection carries the node's epoch, so the database refuses its writes once
    /// another node has taken over (`migrations/postgres/0014_ha_lease.sql`), and is
    /// named for the takeover to end it (`src/ha`).
    pub async fn open_active(url: &str, data_dir: &Path, active: &ActiveEpoch) -> Result<Store, StoreError> {
        if url_backend(url).map_err(StoreError::Open)? != "postgres" {
            return Err(StoreError::Open("HA needs PostgreSQL".into()));
        }
        Store::open_as(url, data_dir, Some(active)).await
    }

    async fn open_as(url: &str, data_dir: &Path, active: Option<&ActiveEpoch>) -> Result<Store, StoreError> {
        let pool = if url_backend(url).map_err(StoreError::Open)? == "postgres" {
            let mut opts = PgConnectOptions::from_str(url)?;
            if let Some(a) = active {
                let epoch = a.epoch.to_string();
                // A transaction left open by a node that stopped (SIGSTOP, a pause)
                // would hold up the takeover's epoch change: the server ends it.
                let idle = format!("{}ms", a.idle_transaction_timeout_ms);
                opts = opts.application_name(&a.application_name()).options([
                    ("trunkd.epoch", epoch.as_str()),
                    ("idle_in_transaction_session_timeout", &idle),
                ]);
            }
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

    /// Runs `change` (a `DELETE` or `UPDATE` of at most one row, `RETURNING` one text
    /// column, the audit entry's detail) and writes the audit entry in the same
    /// transaction; `false` when it changed nothing.
    async fn change_one(
        &self,
        actor: &str,
        change: &str,
        args: &[Arg],
        action: &str,
        object: &str,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let detail: Option<String> = bind_args!(sqlx::query_scalar(change), args).fetch_optional(&mut *tx).await?;
            let Some(detail) = detail else {
                return Ok(false);
            };
            audit_in(&mut tx, now, actor, action, object, &detail).await?;
            tx.commit().await?;
        });
        Ok(true)
    }

    async fn count(&self, sql: &str, args: &[Arg]) -> Result<i64, StoreError> {
        Ok(dispatch!(self, p => bind_args!(sqlx::query_scalar(sql), args).fetch_one(p).await?))
    }
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

/// `Ok` when a write `changed` its row, else [`StoreError::NotFound`] with `missing`.
fn found(changed: bool, missing: impl FnOnce() -> String) -> Result<(), StoreError> {
    if changed {
        Ok(())
    } else {
        Err(StoreError::NotFound(missing()))
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

/// Whether a delete failed because other rows still refer to the deleted one.
fn depended_on(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.is_foreign_key_violation())
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn batch_statements_number_their_values_in_order() {
        assert_eq!(
            batch_sql(true, "INSERT INTO t (a, b)", 2, 2, "ON CONFLICT DO NOTHING"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            batch_sql(false, "INSERT INTO t (a, b)", 2, 2, ""),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) "
        );
        assert_eq!(
            batch_sql(true, "DELETE FROM t WHERE a IN (", 0, 3, ")"),
            "DELETE FROM t WHERE a IN ( $1, $2, $3 )"
        );
        // Kept: the same text again.
        let once = batch_sql(true, "INSERT INTO t (a)", 1, 1, "");
        assert!(std::ptr::eq(once, batch_sql(true, "INSERT INTO t (a)", 1, 1, "")));
    }

    proptest::proptest! {
        #[test]
        fn fixed_chunks_cover_a_batch_in_order_with_few_sizes(n in 0usize..2000) {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = fixed_chunks(&items).collect();
            let joined: Vec<usize> = chunks.concat();
            proptest::prop_assert_eq!(&joined, &items);
            for c in &chunks {
                proptest::prop_assert!(c.len().is_power_of_two() && c.len() <= BATCH_CHUNK);
            }
            // Below a full chunk, each size at most once.
            let small: Vec<usize> = chunks.iter().map(|c| c.len()).filter(|&l| l < BATCH_CHUNK).collect();
            let mut distinct = small.clone();
            distinct.dedup();
            proptest::prop_assert_eq!(small, distinct);
        }
    }
}
