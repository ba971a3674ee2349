//! Alarms (`alarms`) and the counter their ids come from (`alarm_id_counter`).
//!
//! A running controller keeps the alarms that still need attention in memory and
//! writes each change behind, as the alarm's whole row by id ([`Store::save_alarms`]);
//! the ids come from blocks it reserves ([`Store::reserve_alarm_ids`]), so it numbers
//! alarms while the database is away and no two controllers share an id. At most one
//! alarm per kind and subject is open (not cleared): the `alarms_open` index holds it.
//! An operator's acknowledgement is written at once, with its audit entry
//! (`alarm.acknowledge`, `alarm:<id>`), in one transaction
//! ([`Store::acknowledge_alarm`]); once written it is never undone by a later write of
//! the row.

use sqlx::Row;

use super::audit::audit_in;
use super::{corrupt, Arg, Store, StoreError};

/// An alarm as stored: plain columns, times in Unix ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmRow {
    /// From `alarm_id_counter`.
    pub id: i64,
    /// What, e.g. `site_link_lost`.
    pub kind: String,
    /// Of what, e.g. `site:7`, `slot:7/0/2`, `unit:001010000000001`.
    pub subject: String,
    /// The fleet of a unit's alarm; `None`: infrastructure.
    pub fleet: Option<i64>,
    /// For people; never secrets.
    pub detail: String,
    /// When first raised.
    pub raised_at: i64,
    /// When last raised (reopened while cleared and unacknowledged).
    pub last_raised_at: i64,
    /// How many times raised.
    pub occurrences: i64,
    /// When acknowledged.
    pub acknowledged_at: Option<i64>,
    /// By whom (`api:<operator>@<address>`).
    pub acknowledged_by: Option<String>,
    /// When its condition was gone.
    pub cleared_at: Option<i64>,
}

/// Which alarms [`Store::alarms_page`] reads: newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmPage {
    /// Only ids below this one (the last of the previous page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
    /// Only infrastructure alarms and those of these fleets; `None`: every one.
    pub fleets: Option<Vec<i64>>,
    /// Finished ones too (acknowledged and cleared); else only those that need
    /// attention.
    pub finished: bool,
}

const COLUMNS: &str = "id, kind, subject, fleet, detail, raised_at, last_raised_at, occurrences, \
                       acknowledged_at, acknowledged_by, cleared_at";

/// Inserts a row, or (`ON CONFLICT`) is completed by what to do with an existing one.
const INSERT: &str = "INSERT INTO alarms (id, kind, subject, fleet, detail, raised_at, last_raised_at, \
                      occurrences, acknowledged_at, acknowledged_by, cleared_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// `INSERT` binding every column of `r` in order, on either backend.
macro_rules! bind_row {
    ($sql:expr, $r:expr) => {
        sqlx::query($sql)
            .bind($r.id)
            .bind(&$r.kind)
            .bind(&$r.subject)
            .bind($r.fleet)
            .bind(&$r.detail)
            .bind($r.raised_at)
            .bind($r.last_raised_at)
            .bind($r.occurrences)
            .bind($r.acknowledged_at)
            .bind(&$r.acknowledged_by)
            .bind($r.cleared_at)
    };
}

impl Store {
    /// Reserves `n` alarm ids of the counter shared by every controller on this
    /// database; never hands out an id twice.
    pub async fn reserve_alarm_ids(&self, n: u64) -> Result<std::ops::Range<u64>, StoreError> {
        let n = i64::try_from(n).map_err(|_| corrupt("alarm id block size"))?;
        let end: i64 = dispatch!(self, p => {
            sqlx::query_scalar("UPDATE alarm_id_counter SET next_id = next_id + $1 WHERE id = 1 RETURNING next_id")
                .bind(n)
                .fetch_one(p)
                .await?
        });
        let end = u64::try_from(end).map_err(|_| corrupt("alarm counter"))?;
        Ok(end.saturating_sub(n as u64)..end)
    }

    /// Writes each row as it now is (inserted, or updated by id), in id order, each on
    /// its own. An acknowledgement already written stays. A row that would open a
    /// second alarm of the same kind and subject (another controller on this database
    /// raised it) is not written: its id is returned.
    pub async fn save_alarms(&self, rows: &[AlarmRow]) -> Result<Vec<i64>, StoreError> {
        let sql = format!(
            "{INSERT} ON CONFLICT (id) DO UPDATE SET detail = excluded.detail, \
             last_raised_at = excluded.last_raised_at, occurrences = excluded.occurrences, \
             cleared_at = excluded.cleared_at, \
             acknowledged_at = COALESCE(alarms.acknowledged_at, excluded.acknowledged_at), \
             acknowledged_by = COALESCE(alarms.acknowledged_by, excluded.acknowledged_by)"
        );
        let mut sorted: Vec<&AlarmRow> = rows.iter().collect();
        sorted.sort_by_key(|r| r.id);
        let mut refused = Vec::new();
        for r in sorted {
            let written = dispatch!(self, p => bind_row!(&sql, r).execute(p).await.map(|_| ()));
            match written {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => refused.push(r.id),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(refused)
    }

    /// Acknowledges alarm `row.id` for `actor` at `at`, with its audit entry, in one
    /// transaction; the row is written first as given if the database does not hold
    /// it yet. [`StoreError::Conflict`] naming who if it was already acknowledged.
    pub async fn acknowledge_alarm(&self, actor: &str, row: &AlarmRow, at: i64) -> Result<(), StoreError> {
        let insert = format!("{INSERT} ON CONFLICT DO NOTHING");
        let detail = format!("{} {}", row.kind, row.subject);
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            bind_row!(&insert, row).execute(&mut *tx).await?;
            let done = sqlx::query(
                "UPDATE alarms SET acknowledged_at = $1, acknowledged_by = $2 WHERE id = $3 AND acknowledged_at IS NULL",
            )
            .bind(at)
            .bind(actor)
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                let by: Option<Option<String>> = sqlx::query_scalar("SELECT acknowledged_by FROM alarms WHERE id = $1")
                    .bind(row.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Err(match by {
                    Some(by) => StoreError::Conflict(format!(
                        "alarm {} was already acknowledged by {}",
                        row.id,
                        by.unwrap_or_default()
                    )),
                    None => StoreError::NotFound(format!("alarm {} does not exist", row.id)),
                });
            }
            audit_in(&mut tx, at, actor, "alarm.acknowledge", &format!("alarm:{}", row.id), &detail).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// One alarm.
    pub async fn alarm(&self, id: i64) -> Result<Option<AlarmRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM alarms WHERE id = $1");
        dispatch!(self, p => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(p).await?;
            row.as_ref().map(alarm_of).transpose()
        })
    }

    /// Every alarm that still needs attention (not cleared, or not acknowledged), by id.
    pub async fn unfinished_alarms(&self) -> Result<Vec<AlarmRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM alarms WHERE cleared_at IS NULL OR acknowledged_at IS NULL ORDER BY id"
        );
        dispatch!(self, p => {
            let rows = sqlx::query(&sql).fetch_all(p).await?;
            rows.iter().map(alarm_of).collect()
        })
    }

    /// A page of alarms, newest (highest id) first.
    pub async fn alarms_page(&self, page: &AlarmPage) -> Result<Vec<AlarmRow>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM alarms WHERE TRUE");
        let mut args = Vec::new();
        let mut arg = |a: Arg| {
            args.push(a);
            format!("${}", args.len())
        };
        if let Some(before) = page.before {
            let n = arg(Arg::Int(before));
            sql.push_str(&format!(" AND id < {n}"));
        }
        if let Some(fleets) = &page.fleets {
            let list: Vec<String> = fleets.iter().map(|f| arg(Arg::Int(*f))).collect();
            if list.is_empty() {
                sql.push_str(" AND fleet IS NULL");
            } else {
                sql.push_str(&format!(" AND (fleet IS NULL OR fleet IN ({}))", list.join(", ")));
            }
        }
        if !page.finished {
            sql.push_str(" AND (cleared_at IS NULL OR acknowledged_at IS NULL)");
        }
        let n = arg(Arg::Int(page.limit));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {n}"));
        dispatch!(self, p => {
            let rows = bind_args!(sqlx::query(&sql), &args).fetch_all(p).await?;
            rows.iter().map(alarm_of).collect()
        })
    }
}

fn alarm_of<R: Row>(r: &R) -> Result<AlarmRow, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AlarmRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        subject: r.try_get("subject")?,
        fleet: r.try_get("fleet")?,
        detail: r.try_get("detail")?,
        raised_at: r.try_get("raised_at")?,
        last_raised_at: r.try_get("last_raised_at")?,
        occurrences: r.try_get("occurrences")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        cleared_at: r.try_get("cleared_at")?,
    })
}
