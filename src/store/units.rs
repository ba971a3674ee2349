//! The units on the air (`units_on_air`): the VLR, written behind by the controller in
//! short batches and loaded by the next one that starts on this database (a restart, or
//! the node that takes over), so that a unit keeps its registration and its TMSI.

use sqlx::Row;

use super::{batch_sql, corrupt, fixed_chunks, fleet_id, site_id, talkgroup_id, Store, StoreError};
use crate::protocol::{Imsi, TalkgroupId, Tmsi};
use crate::vlr::{Affiliation, VlrUnit};

impl Store {
    /// Writes a batch of the VLR: `on_air` as the units are now (inserted or replaced),
    /// `gone` removed. One transaction: the table never holds half a batch.
    pub async fn write_units(&self, on_air: &[(Imsi, VlrUnit)], gone: &[Imsi]) -> Result<(), StoreError> {
        if on_air.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            if let Some(pragma) = self.writer_cache() {
                sqlx::query(pragma).execute(&mut *tx).await?;
            }
            for chunk in fixed_chunks(gone) {
                let sql = batch_sql(self.numbered(), "DELETE FROM units_on_air WHERE imsi IN (", 0, chunk.len(), ")");
                let mut q = sqlx::query(sql);
                for imsi in chunk {
                    q = q.bind(imsi.to_string());
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in fixed_chunks(on_air) {
                let sql = batch_sql(
                    self.numbered(),
                    "INSERT INTO units_on_air (imsi, tmsi, site_id, fleet_id, talkgroups, ck, ik, written_at)",
                    8,
                    chunk.len(),
                    "ON CONFLICT (imsi) DO UPDATE SET tmsi = excluded.tmsi, site_id = excluded.site_id, \
                     fleet_id = excluded.fleet_id, talkgroups = excluded.talkgroups, ck = excluded.ck, \
                     ik = excluded.ik, written_at = excluded.written_at",
                );
                let mut q = sqlx::query(sql);
                for (imsi, u) in chunk {
                    q = q
                        .bind(imsi.to_string())
                        .bind(i64::from(u.tmsi.get()))
                        .bind(i64::from(u.site.get()))
                        .bind(i64::from(u.fleet.get()))
                        .bind(talkgroup_text(&u.affiliation))
                        .bind(u.ck.to_vec())
                        .bind(u.ik.to_vec())
                        .bind(now);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every unit the table holds, with `last_activity_ms` set to `heard_ms` (the time a
    /// unit was last heard from is not kept: the loader counts from its own start).
    pub async fn units_on_air(&self, heard_ms: i64) -> Result<Vec<(Imsi, VlrUnit)>, StoreError> {
        let rows = dispatch!(self, p => {
            sqlx::query("SELECT imsi, tmsi, site_id, fleet_id, talkgroups, ck, ik FROM units_on_air")
                .fetch_all(p)
                .await?
                .into_iter()
                .map(|r| -> Result<_, StoreError> {
                    Ok((
                        r.try_get::<String, _>("imsi")?,
                        r.try_get::<i64, _>("tmsi")?,
                        r.try_get::<i64, _>("site_id")?,
                        r.try_get::<i64, _>("fleet_id")?,
                        r.try_get::<String, _>("talkgroups")?,
                        r.try_get::<Vec<u8>, _>("ck")?,
                        r.try_get::<Vec<u8>, _>("ik")?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        rows.into_iter()
            .map(|(imsi, tmsi, site, fleet, talkgroups, ck, ik)| {
                let imsi = Imsi::parse(&imsi).map_err(|_| corrupt("IMSI of a unit on the air"))?;
                let tmsi = u32::try_from(tmsi)
                    .ok()
                    .and_then(Tmsi::new)
                    .ok_or_else(|| corrupt("TMSI of a unit on the air"))?;
                let unit = VlrUnit {
                    tmsi,
                    site: site_id(site)?,
                    fleet: fleet_id(fleet)?,
                    affiliation: affiliation(&talkgroups)?,
                    last_activity_ms: heard_ms,
                    ck: ck.try_into().map_err(|_| corrupt("session key"))?,
                    ik: ik.try_into().map_err(|_| corrupt("session key"))?,
                };
                Ok((imsi, unit))
            })
            .collect()
    }
}

fn talkgroup_text(a: &Affiliation) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(24);
    for (i, t) in a.all().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        // Writing to a String cannot fail.
        let _ = write!(text, "{sep}{}", t.get());
    }
    text
}

fn affiliation(text: &str) -> Result<Affiliation, StoreError> {
    let ids = text
        .split(',')
        .map(|t| talkgroup_id(t.parse().map_err(|_| corrupt("talkgroup list"))?))
        .collect::<Result<Vec<TalkgroupId>, _>>()?;
    match ids.split_first() {
        Some((primary, secondary)) if secondary.len() <= 3 => {
            Ok(Affiliation::from_slice(*primary, secondary))
        }
        _ => Err(corrupt("talkgroup list")),
    }
}
