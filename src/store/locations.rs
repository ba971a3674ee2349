//! Where units were last seen (`last_location`): site, TMSI and time, written behind by
//! the controller in batches.

use sqlx::Row;

use super::{batch_sql, fixed_chunks, site_id, Store, StoreError};
use crate::protocol::{Imsi, SiteId, Tmsi};

impl Store {
    /// Records where units were last seen (write-behind batches from the controller).
    /// Each entry: the unit, the site, the TMSI it had there, and when (Unix ms).
    pub async fn write_locations(&self, batch: &[(Imsi, SiteId, Tmsi, i64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            if let Some(pragma) = self.writer_cache() {
                sqlx::query(pragma).execute(&mut *tx).await?;
            }
            for chunk in fixed_chunks(batch) {
                let sql = batch_sql(
                    self.numbered(),
                    "INSERT INTO last_location (imsi, site_id, tmsi, seen_at)",
                    4,
                    chunk.len(),
                    "ON CONFLICT (imsi) DO UPDATE SET site_id = excluded.site_id, tmsi = excluded.tmsi, \
                     seen_at = excluded.seen_at \
                     WHERE excluded.seen_at >= last_location.seen_at",
                );
                let mut q = sqlx::query(sql);
                for (imsi, site, tmsi, at) in chunk {
                    q = q
                        .bind(imsi.to_string())
                        .bind(i64::from(site.get()))
                        .bind(i64::from(tmsi.get()))
                        .bind(*at);
                }
                q.execute(&mut *tx).await?;
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
}
