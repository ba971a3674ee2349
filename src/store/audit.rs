//! The audit log (`audit_log`): every change to the HLR appends its entry in the same
//! transaction, and a running controller's HLR cache follows the log by id.

use sqlx::Row;

use super::{Arg, Filter, Store, StoreError};

/// One audit-log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Monotonic id.
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// Who made the change (`cli:<user>`, `controller`, ...).
    pub actor: String,
    /// What, e.g. `subscriber.add`, `clone.suspected`.
    pub action: String,
    /// The object, e.g. `subscriber:001010000000001`.
    pub object: String,
    /// Free text; never secrets.
    pub detail: String,
}

/// What [`Store::search_audit`] looks for: every criterion given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditSearch {
    /// At or after this Unix ms.
    pub from_ms: Option<i64>,
    /// Before this Unix ms.
    pub to_ms: Option<i64>,
    /// By this actor.
    pub actor: Option<String>,
    /// This action (`subscriber.inhibit`, …).
    pub action: Option<String>,
    /// On this object (`subscriber:001010000000001`, …).
    pub object: Option<String>,
    /// Only entries with an id below this one (the last of the previous page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

impl Store {
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
        let mut f = Filter::default();
        f.and("id > $", [Arg::Int(after)]).order("id", Some(limit));
        self.select_audit(&f).await
    }

    /// One page of the audit entries that match every criterion `search` gives, newest
    /// first. The next page is those before the last one's `id`.
    pub async fn search_audit(&self, search: &AuditSearch) -> Result<Vec<AuditEntry>, StoreError> {
        let mut f = Filter::default();
        if let Some(t) = search.from_ms {
            f.and("at >= $", [Arg::Int(t)]);
        }
        if let Some(t) = search.to_ms {
            f.and("at < $", [Arg::Int(t)]);
        }
        if let Some(a) = &search.actor {
            f.and("actor = $", [Arg::Text(a.clone())]);
        }
        if let Some(a) = &search.action {
            f.and("action = $", [Arg::Text(a.clone())]);
        }
        if let Some(o) = &search.object {
            f.and("object = $", [Arg::Text(o.clone())]);
        }
        if let Some(b) = search.before {
            f.and("id < $", [Arg::Int(b)]);
        }
        f.order("id DESC", Some(search.limit.into()));
        self.select_audit(&f).await
    }

    async fn select_audit(&self, f: &Filter) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = format!(
            "SELECT id, at, actor, action, object, detail FROM audit_log{}",
            f.sql
        );
        dispatch!(self, p => {
            let rows = bind_args!(sqlx::query(&sql), &f.args).fetch_all(p).await?;
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
pub(super) async fn audit_in<'c, DB>(
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
