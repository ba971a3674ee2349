//! The fleets, talkgroups and sites tables, and the slots operators took out of service
//! (`slot_faults`). A removal is refused while something depends on what it removes, and
//! writes its audit entry in the same transaction, with the object a running
//! controller's HLR cache follows (`site:<id>`), so a removed site leaves its cache too.

use sqlx::Row;

use super::audit::audit_in;
use super::{
    conflict, corrupt, depended_on, fleet_id, found, rules, site_id, talkgroup_id, Arg, Store, StoreError,
};
use crate::hlr::{Fleet, Site, Talkgroup};
use crate::protocol::{FleetId, Imsi, SiteId, SiteKey, TalkgroupId};

impl Store {
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

    /// Every fleet, by id.
    pub async fn fleets(&self) -> Result<Vec<Fleet>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query("SELECT id, name FROM fleets ORDER BY id").fetch_all(p).await?;
            rows.iter().map(|r| -> Result<Fleet, StoreError> {
                Ok(Fleet { id: fleet_id(r.try_get("id")?)?, name: r.try_get("name")? })
            }).collect()
        })
    }

    /// The talkgroups of `fleet` (of every fleet with `None`), by fleet and id.
    pub async fn talkgroups_of(&self, fleet: Option<FleetId>) -> Result<Vec<Talkgroup>, StoreError> {
        let filter = if fleet.is_some() {
            " WHERE fleet_id = $1"
        } else {
            ""
        };
        let sql = format!("SELECT fleet_id, id, name FROM talkgroups{filter} ORDER BY fleet_id, id");
        let args: Vec<Arg> = fleet.map(|f| Arg::Int(f.get().into())).into_iter().collect();
        dispatch!(self, p => {
            let rows = bind_args!(sqlx::query(&sql), &args).fetch_all(p).await?;
            rows.iter().map(|r| -> Result<Talkgroup, StoreError> {
                Ok(Talkgroup {
                    fleet: fleet_id(r.try_get("fleet_id")?)?,
                    id: talkgroup_id(r.try_get("id")?)?,
                    name: r.try_get("name")?,
                })
            }).collect()
        })
    }

    /// Removes a fleet; refused while it has talkgroups or subscribers.
    pub async fn remove_fleet(&self, actor: &str, id: FleetId) -> Result<(), StoreError> {
        let args = [Arg::Int(id.get().into())];
        let sql = "DELETE FROM fleets WHERE id = $1 RETURNING name";
        match self
            .change_one(actor, sql, &args, "fleet.remove", &format!("fleet:{id}"))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::NotFound(format!("fleet {id} does not exist"))),
            Err(e) if depended_on(&e) => {
                let tgs = self
                    .count("SELECT COUNT(*) FROM talkgroups WHERE fleet_id = $1", &args)
                    .await?;
                let subs = self
                    .count("SELECT COUNT(*) FROM subscribers WHERE fleet_id = $1", &args)
                    .await?;
                Err(StoreError::Conflict(format!(
                    "fleet {id} still has {tgs} talkgroups and {subs} subscribers; remove them first"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a talkgroup; refused while a subscriber is permitted on it.
    pub async fn remove_talkgroup(
        &self,
        actor: &str,
        fleet: FleetId,
        id: TalkgroupId,
    ) -> Result<(), StoreError> {
        let args = [Arg::Int(fleet.get().into()), Arg::Int(id.get().into())];
        let sql = "DELETE FROM talkgroups WHERE fleet_id = $1 AND id = $2 RETURNING name";
        let object = format!("talkgroup:{fleet}/{id}");
        match self
            .change_one(actor, sql, &args, "talkgroup.remove", &object)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::NotFound(format!(
                "talkgroup {id} does not exist in fleet {fleet}"
            ))),
            Err(e) if depended_on(&e) => {
                let n = self
                    .count(
                        "SELECT COUNT(*) FROM subscriber_talkgroups WHERE fleet_id = $1 AND talkgroup_id = $2",
                        &args,
                    )
                    .await?;
                Err(StoreError::Conflict(format!(
                    "talkgroup {id} of fleet {fleet} is permitted to {n} subscribers; remove them first"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a site and the slots operators took out of service on it. A running
    /// controller stops accepting its gateway's link.
    pub async fn remove_site(&self, actor: &str, id: SiteId) -> Result<(), StoreError> {
        let sql = "DELETE FROM sites WHERE id = $1 RETURNING name";
        let args = [Arg::Int(id.get().into())];
        match self
            .change_one(actor, sql, &args, "site.remove", &format!("site:{id}"))
            .await?
        {
            true => Ok(()),
            false => Err(StoreError::NotFound(format!("site {id} does not exist"))),
        }
    }

    /// Renames a fleet.
    pub async fn rename_fleet(&self, actor: &str, id: FleetId, name: &str) -> Result<(), StoreError> {
        rules::name("fleet", name)?;
        let sql = "UPDATE fleets SET name = $1 WHERE id = $2 RETURNING name";
        let args = [Arg::Text(name.into()), Arg::Int(id.get().into())];
        let object = format!("fleet:{id}");
        found(
            self.change_one(actor, sql, &args, "fleet.rename", &object)
                .await?,
            || format!("fleet {id} does not exist"),
        )
    }

    /// Renames a talkgroup.
    pub async fn rename_talkgroup(
        &self,
        actor: &str,
        fleet: FleetId,
        id: TalkgroupId,
        name: &str,
    ) -> Result<(), StoreError> {
        rules::name("talkgroup", name)?;
        let sql = "UPDATE talkgroups SET name = $1 WHERE fleet_id = $2 AND id = $3 RETURNING name";
        let args = [
            Arg::Text(name.into()),
            Arg::Int(fleet.get().into()),
            Arg::Int(id.get().into()),
        ];
        let object = format!("talkgroup:{fleet}/{id}");
        found(
            self.change_one(actor, sql, &args, "talkgroup.rename", &object)
                .await?,
            || format!("talkgroup {id} does not exist in fleet {fleet}"),
        )
    }

    /// Renames a site.
    pub async fn rename_site(&self, actor: &str, id: SiteId, name: &str) -> Result<(), StoreError> {
        rules::name("site", name)?;
        let sql = "UPDATE sites SET name = $1, updated_at = $2 WHERE id = $3 RETURNING name";
        let args = [
            Arg::Text(name.into()),
            Arg::Int(self.now_ms()),
            Arg::Int(id.get().into()),
        ];
        let object = format!("site:{id}");
        found(
            self.change_one(actor, sql, &args, "site.rename", &object).await?,
            || format!("site {id} does not exist"),
        )
    }

    /// Gives a site a new link key: its gateway's next handshake needs it (a link up
    /// now stays up).
    pub async fn set_site_key(&self, actor: &str, id: SiteId, key: &SiteKey) -> Result<(), StoreError> {
        let now = self.now_ms();
        let r = dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let name: Option<String> =
                sqlx::query_scalar("UPDATE sites SET link_key = $1, updated_at = $2 WHERE id = $3 RETURNING name")
                    .bind(key.expose().to_vec())
                    .bind(now)
                    .bind(i64::from(id.get()))
                    .fetch_optional(&mut *tx)
                    .await?;
            if name.is_some() {
                audit_in(&mut tx, now, actor, "site.rekey", &format!("site:{id}"), "new link key").await?;
                tx.commit().await?;
            }
            name.is_some()
        });
        found(r, || format!("site {id} does not exist"))
    }

    /// One page of the subscribers permitted on a talkgroup, by IMSI: at most `limit`,
    /// those after `after`.
    pub async fn talkgroup_members(
        &self,
        fleet: FleetId,
        id: TalkgroupId,
        after: Option<Imsi>,
        limit: u32,
    ) -> Result<Vec<Imsi>, StoreError> {
        let rows: Vec<String> = dispatch!(self, p => sqlx::query_scalar(
            "SELECT imsi FROM subscriber_talkgroups WHERE fleet_id = $1 AND talkgroup_id = $2 AND imsi > $3 \
             ORDER BY imsi LIMIT $4",
        )
        .bind(i64::from(fleet.get()))
        .bind(i64::from(id.get()))
        .bind(after.map(|a| a.to_string()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?);
        rows.iter()
            .map(|i| Imsi::parse(i).map_err(|_| corrupt("imsi")))
            .collect()
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
}
