//! Calls: the call id counter every controller shares (`call_id_counter`), the journal
//! of calls in progress (`open_calls`, `journal_mark`) and the call detail records
//! (`call_records`).

use sqlx::Row;

use super::{batch_sql, corrupt, fixed_chunks, Arg, Filter, Store, StoreError};
use crate::protocol::{FleetId, SiteId, TalkgroupId, Unit};

/// A call detail record as stored (`call_records`): plain columns, times in Unix ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecordRow {
    /// The call id the gateways saw.
    pub call_id: i64,
    /// `group`, `private` or `emergency`.
    pub call_type: String,
    /// Caller's fleet.
    pub caller_fleet: i64,
    /// Caller's member id.
    pub caller_member: i64,
    /// `unit` or `talkgroup`.
    pub target_kind: String,
    /// Target's fleet.
    pub target_fleet: i64,
    /// Target member or talkgroup id.
    pub target_id: i64,
    /// Sites that held a slot, comma-separated.
    pub sites: String,
    /// When requested.
    pub requested_at: i64,
    /// When granted (`None`: never; the queue wait is `granted_at - requested_at`).
    pub granted_at: Option<i64>,
    /// When ended or refused.
    pub ended_at: i64,
    /// Cause code (`PROTOCOL.md §6`).
    pub end_cause: i64,
    /// Ended by an emergency's preemption.
    pub preempted: bool,
    /// An emergency call.
    pub emergency: bool,
}

/// A call record with its place in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallHistoryEntry {
    /// Its row id: the history is paged by it, newest first.
    pub id: i64,
    /// The record.
    pub record: CallRecordRow,
}

/// What [`Store::call_history`] looks for: every criterion given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallSearch {
    /// Requested at or after this Unix ms.
    pub from_ms: Option<i64>,
    /// Requested before this Unix ms.
    pub to_ms: Option<i64>,
    /// Made by or to this unit.
    pub unit: Option<Unit>,
    /// To this talkgroup (of its fleet).
    pub talkgroup: Option<(FleetId, TalkgroupId)>,
    /// That held a slot at this site.
    pub site: Option<SiteId>,
    /// Of this type: `group`, `private` or `emergency`.
    pub call_type: Option<String>,
    /// Made by or to one of these fleets (none matches an empty list).
    pub fleets: Option<Vec<FleetId>>,
    /// Only rows with an id below this one (the last of the previous page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// `q` with the columns a call record and a journal row of a call in progress both
/// start with bound in order: `call_id, call_type, caller_fleet, caller_member,
/// target_kind, target_fleet, target_id, sites, requested_at` (on either backend).
macro_rules! bind_call {
    ($q:expr, $r:expr) => {
        $q.bind($r.call_id)
            .bind(&$r.call_type)
            .bind($r.caller_fleet)
            .bind($r.caller_member)
            .bind(&$r.target_kind)
            .bind($r.target_fleet)
            .bind($r.target_id)
            .bind(&$r.sites)
            .bind($r.requested_at)
    };
}

impl Store {
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
            for chunk in fixed_chunks(ended) {
                let sql = batch_sql(
                    self.numbered(),
                    "INSERT INTO call_records (call_id, call_type, caller_fleet, caller_member, target_kind, \
                     target_fleet, target_id, sites, requested_at, granted_at, ended_at, end_cause, preempted, \
                     emergency)",
                    14,
                    chunk.len(),
                    "",
                );
                let mut q = sqlx::query(sql);
                for r in chunk {
                    q = bind_call!(q, r)
                        .bind(r.granted_at)
                        .bind(r.ended_at)
                        .bind(r.end_cause)
                        .bind(r.preempted)
                        .bind(r.emergency);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in fixed_chunks(closed) {
                let sql = batch_sql(self.numbered(), "DELETE FROM open_calls WHERE call_id IN (", 0, chunk.len(), ")");
                let mut q = sqlx::query(sql);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in fixed_chunks(opened) {
                // A call id seen again after the 32-bit space wrapped replaces its stale row.
                let sql = batch_sql(
                    self.numbered(),
                    "INSERT INTO open_calls (call_id, call_type, caller_fleet, caller_member, target_kind, \
                     target_fleet, target_id, sites, requested_at, granted_at, emergency)",
                    11,
                    chunk.len(),
                    "ON CONFLICT (call_id) DO UPDATE SET call_type = excluded.call_type, \
                     caller_fleet = excluded.caller_fleet, caller_member = excluded.caller_member, \
                     target_kind = excluded.target_kind, target_fleet = excluded.target_fleet, \
                     target_id = excluded.target_id, sites = excluded.sites, \
                     requested_at = excluded.requested_at, granted_at = excluded.granted_at, \
                     emergency = excluded.emergency",
                );
                let mut q = sqlx::query(sql);
                for r in chunk {
                    q = bind_call!(q, r)
                        .bind(r.granted_at.unwrap_or(r.requested_at))
                        .bind(r.emergency);
                }
                q.execute(&mut *tx).await?;
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
        let search = CallSearch {
            limit: limit.clamp(0, u32::MAX.into()) as u32,
            ..CallSearch::default()
        };
        Ok(self
            .call_history(&search)
            .await?
            .into_iter()
            .map(|e| e.record)
            .collect())
    }

    /// One page of the call records that match every criterion `search` gives, newest
    /// first. The next page is those before the last one's `id`.
    pub async fn call_history(&self, search: &CallSearch) -> Result<Vec<CallHistoryEntry>, StoreError> {
        let mut f = Filter::default();
        if let Some(t) = search.from_ms {
            f.and("requested_at >= $", [Arg::Int(t)]);
        }
        if let Some(t) = search.to_ms {
            f.and("requested_at < $", [Arg::Int(t)]);
        }
        if let Some(u) = search.unit {
            let (fleet, member) = (Arg::Int(u.fleet.get().into()), Arg::Int(u.member.get().into()));
            f.and(
                "((caller_fleet = $ AND caller_member = $) OR (target_kind = 'unit' AND target_fleet = $ AND target_id = $))",
                [fleet.clone(), member.clone(), fleet, member],
            );
        }
        if let Some((fleet, tg)) = search.talkgroup {
            f.and(
                "target_kind = 'talkgroup' AND target_fleet = $ AND target_id = $",
                [Arg::Int(fleet.get().into()), Arg::Int(tg.get().into())],
            );
        }
        if let Some(site) = search.site {
            // `sites` is a comma-separated list.
            f.and("(',' || sites || ',') LIKE $", [Arg::Text(format!("%,{site},%"))]);
        }
        if let Some(t) = &search.call_type {
            f.and("call_type = $", [Arg::Text(t.clone())]);
        }
        if let Some(fleets) = &search.fleets {
            if fleets.is_empty() {
                return Ok(Vec::new());
            }
            let marks = Filter::marks(fleets.len());
            let ids: Vec<Arg> = fleets.iter().map(|f| Arg::Int(f.get().into())).collect();
            let both = ids.iter().chain(&ids).cloned();
            f.and(
                &format!("(caller_fleet IN ({marks}) OR target_fleet IN ({marks}))"),
                both,
            );
        }
        if let Some(b) = search.before {
            f.and("id < $", [Arg::Int(b)]);
        }
        f.order("id DESC", Some(search.limit.into()));
        let sql = format!(
            "SELECT id, call_id, call_type, caller_fleet, caller_member, target_kind, target_fleet, target_id, \
             sites, requested_at, granted_at, ended_at, end_cause, preempted, emergency FROM call_records{}",
            f.sql
        );
        dispatch!(self, p => {
            let rows = bind_args!(sqlx::query(&sql), &f.args).fetch_all(p).await?;
            rows.iter().map(|r| -> Result<CallHistoryEntry, StoreError> {
                Ok(CallHistoryEntry {
                    id: r.try_get("id")?,
                    record: CallRecordRow {
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
                    },
                })
            }).collect()
        })
    }
}
