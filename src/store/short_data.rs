//! Short data stored until it is delivered or expires (`short_data`), one row per
//! recipient.

use sqlx::Row;

use super::{corrupt, fleet_id, Store, StoreError};
use crate::protocol::{Imsi, MemberId, Unit};

impl Store {
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
}
