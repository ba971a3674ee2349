//! The leadership lease, held in PostgreSQL: a session advisory lock on a connection of
//! its own (no pool shares it) and the `ha_lease` row, whose epoch grows by one at every
//! takeover and whose expiry is computed from the database server's clock.
//!
//! - A node whose lease connection holds the lock, and whose epoch is the row's, is
//!   active; it renews the expiry several times per lease period ([`Lease::renew`]).
//! - A standby tries for the lock ([`Lease::try_acquire`]). It gets it at once when the
//!   active node's session ended (a crash ends it); when the session lingers but the
//!   lease ran out (a node paused or cut off), it ends that session first. Before taking
//!   the epoch it ends every session the old epoch writes through, and the database
//!   refuses any later write of theirs (`migrations/postgres/0014_ha_lease.sql`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

use crate::store::{ActiveEpoch, StoreError};

/// The advisory lock's key ("trunkd" in ASCII).
const LOCK_KEY: i64 = 0x7472_756E_6B64;

/// Who holds the lease, as the row tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The epoch (0: nobody ever held it).
    pub epoch: i64,
    /// The holder's node id.
    pub node_id: Option<String>,
    /// Its link address for gateways.
    pub link_address: Option<String>,
    /// Its operator API address.
    pub api_address: Option<String>,
    /// Milliseconds until the lease runs out (negative: ran out that long ago).
    pub expires_in_ms: Option<i64>,
}

impl Holder {
    /// Whether the lease is held and has not run out.
    pub fn live(&self) -> bool {
        self.node_id.is_some() && self.expires_in_ms.is_some_and(|ms| ms > 0)
    }
}

/// This node's side of the lease.
pub struct Lease {
    conn: PgConnection,
    node_id: String,
    lease_ms: u64,
    /// The epoch won, while active.
    epoch: Option<i64>,
}

impl Lease {
    /// Opens the lease connection to `url` for `node_id`.
    pub async fn connect(url: &str, node_id: &str, lease_ms: u64) -> Result<Lease, StoreError> {
        let opts = PgConnectOptions::from_str(url)?.application_name(&format!("trunkd-lease:{node_id}"));
        // A statement that hangs (a server that stopped answering) must not outlive the
        // lease: the renewal is given up well before.
        let timeout = format!("{}ms", (lease_ms / 2).max(100));
        let opts = opts.options([("statement_timeout", timeout.as_str())]);
        let conn = opts.connect().await?;
        Ok(Lease {
            conn,
            node_id: node_id.to_string(),
            lease_ms,
            epoch: None,
        })
    }

    /// The epoch this node won, while it holds the lease.
    pub fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    /// What the store of the active node of `epoch` carries (see [`ActiveEpoch`]).
    pub fn active_epoch(&self, epoch: i64) -> ActiveEpoch {
        ActiveEpoch {
            node_id: self.node_id.clone(),
            epoch,
            idle_transaction_timeout_ms: self.lease_ms,
        }
    }

    /// Who holds the lease.
    pub async fn holder(&mut self) -> Result<Holder, StoreError> {
        let row = sqlx::query(
            "SELECT epoch, node_id, link_address, api_address, \
             (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::BIGINT AS expires_in_ms \
             FROM ha_lease WHERE id = 1",
        )
        .fetch_one(&mut self.conn)
        .await?;
        Ok(Holder {
            epoch: row.try_get("epoch")?,
            node_id: row.try_get("node_id")?,
            link_address: row.try_get("link_address")?,
            api_address: row.try_get("api_address")?,
            expires_in_ms: row.try_get("expires_in_ms")?,
        })
    }

    async fn try_lock(&mut self) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut self.conn)
            .await?)
    }

    /// Tries to become the active node, advertising `link_address` and `api_address`:
    /// the new epoch when this node now holds the lease, `None` when another node does.
    pub async fn try_acquire(
        &mut self,
        link_address: &str,
        api_address: &str,
    ) -> Result<Option<i64>, StoreError> {
        if let Some(e) = self.epoch {
            return Ok(Some(e));
        }
        if !self.try_lock().await? {
            // The holder's session is still there. If its lease ran out, the node behind
            // it stopped renewing (paused, cut off): end that session.
            let stale: Option<i32> = sqlx::query_scalar(
                "SELECT backend_pid FROM ha_lease WHERE id = 1 AND expires_at < now() \
                 AND backend_pid IS NOT NULL AND backend_pid <> pg_backend_pid()",
            )
            .fetch_optional(&mut self.conn)
            .await?
            .flatten();
            let Some(pid) = stale else {
                return Ok(None);
            };
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&mut self.conn)
                .await?;
            // The lock is released once that backend has gone, soon after.
            let mut locked = false;
            for _ in 0..25 {
                if self.try_lock().await? {
                    locked = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !locked {
                return Ok(None);
            }
        }
        // The old epoch's writing sessions end; a write of theirs already under way
        // (it holds the lease row FOR KEY SHARE, in the fence) finishes before the epoch
        // changes (FOR UPDATE here waits for it), and any later one is refused. Renewing
        // (an UPDATE of expires_at, FOR NO KEY UPDATE) never waits for those writes.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND starts_with(application_name, $1)",
        )
        .bind(ActiveEpoch::APPLICATION_PREFIX)
        .execute(&mut self.conn)
        .await?;
        let mut tx = self.conn.begin().await?;
        sqlx::query("SELECT 1 FROM ha_lease WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await?;
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE ha_lease SET epoch = epoch + 1, node_id = $1, backend_pid = pg_backend_pid(), \
             expires_at = now() + $2 * INTERVAL '1 millisecond', link_address = $3, api_address = $4 \
             WHERE id = 1 RETURNING epoch",
        )
        .bind(&self.node_id)
        .bind(self.lease_ms as f64)
        .bind(link_address)
        .bind(api_address)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.epoch = Some(epoch);
        Ok(Some(epoch))
    }

    /// Extends the lease by a period from now (the server's clock): `false` when this
    /// node no longer holds it.
    pub async fn renew(&mut self) -> Result<bool, StoreError> {
        let Some(epoch) = self.epoch else {
            return Ok(false);
        };
        let renewed = sqlx::query(
            "UPDATE ha_lease SET expires_at = now() + $1 * INTERVAL '1 millisecond' \
             WHERE id = 1 AND epoch = $2 AND backend_pid = pg_backend_pid()",
        )
        .bind(self.lease_ms as f64)
        .bind(epoch)
        .execute(&mut self.conn)
        .await?
        .rows_affected()
            == 1;
        if !renewed {
            self.epoch = None;
        }
        Ok(renewed)
    }

    /// Gives the lease up at once (a clean stop): a standby takes over without waiting.
    pub async fn release(mut self) {
        if let Some(epoch) = self.epoch.take() {
            let _ = sqlx::query("UPDATE ha_lease SET expires_at = now() WHERE id = 1 AND epoch = $1")
                .bind(epoch)
                .execute(&mut self.conn)
                .await;
        }
        let _ = self.conn.close().await;
    }
}
