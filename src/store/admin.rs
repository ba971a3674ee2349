//! Listing and removing fleets, talkgroups, sites and subscribers. A removal is refused
//! while something depends on what it removes, and writes its audit entry in the same
//! transaction, with the object a running controller's HLR cache follows
//! (`site:<id>`, `subscriber:<imsi>`), so the removed site or subscriber leaves its
//! cache too.

use sqlx::Row;

use super::{
    audit_in, fleet_id, rules, talkgroup_id, Arg, Fleet, Permissions, Store, StoreError, Subscriber,
    Talkgroup,
};
use crate::protocol::{FleetId, Imsi, SiteId, TalkgroupId};

impl Store {
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

    /// One page of subscribers in IMSI order: at most `limit`, those after `after`, of
    /// `fleet` only when given. The next page starts after the last IMSI of this one.
    pub async fn subscribers_page(
        &self,
        fleet: Option<FleetId>,
        after: Option<Imsi>,
        limit: u32,
    ) -> Result<Vec<Subscriber>, StoreError> {
        let mut conds = Vec::new();
        if let Some(f) = fleet {
            conds.push(("fleet_id =", Arg::Int(f.get().into())));
        }
        if let Some(a) = after {
            conds.push(("imsi >", Arg::Text(a.to_string())));
        }
        self.select_subscribers(&conds, Some(limit.into())).await
    }

    /// Changes what a subscriber is authorised for: its priority level (0..=15) and its
    /// permissions, each only when given; with an audit entry naming the change.
    pub async fn set_authorization(
        &self,
        actor: &str,
        imsi: Imsi,
        priority: Option<u8>,
        permissions: Option<Permissions>,
    ) -> Result<(), StoreError> {
        if let Some(p) = priority {
            if !rules::PRIORITIES.contains(&p) {
                return Err(StoreError::Invalid(format!("priority {p} is outside 0..=15")));
            }
        }
        let now = self.now_ms();
        let mut detail = Vec::new();
        if let Some(p) = priority {
            detail.push(format!("priority={p}"));
        }
        if let Some(p) = permissions {
            detail.push(format!("permissions={p}"));
        }
        let detail = detail.join(" ");
        // One statement that reads nothing first: on SQLite a transaction that reads and
        // then writes can fail at once if another connection wrote in between.
        let p = permissions;
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            let r = sqlx::query(
                "UPDATE subscribers SET priority = COALESCE($1, priority), \
                 perm_group = COALESCE($2, perm_group), perm_private = COALESCE($3, perm_private), \
                 perm_emergency = COALESCE($4, perm_emergency), perm_short_data = COALESCE($5, perm_short_data), \
                 perm_interconnect = COALESCE($6, perm_interconnect), updated_at = $7 WHERE imsi = $8",
            )
            .bind(priority.map(i64::from))
            .bind(p.map(|p| p.group_call))
            .bind(p.map(|p| p.private_call))
            .bind(p.map(|p| p.emergency))
            .bind(p.map(|p| p.short_data))
            .bind(p.map(|p| p.interconnect))
            .bind(now)
            .bind(imsi.to_string())
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("subscriber {imsi} does not exist")));
            }
            audit_in(&mut tx, now, actor, "subscriber.authorize", &format!("subscriber:{imsi}"), &detail).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes a fleet; refused while it has talkgroups or subscribers.
    pub async fn remove_fleet(&self, actor: &str, id: FleetId) -> Result<(), StoreError> {
        let args = [Arg::Int(id.get().into())];
        let sql = "DELETE FROM fleets WHERE id = $1 RETURNING name";
        match self
            .remove(actor, sql, &args, "fleet.remove", &format!("fleet:{id}"))
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
        match self.remove(actor, sql, &args, "talkgroup.remove", &object).await {
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
            .remove(actor, sql, &args, "site.remove", &format!("site:{id}"))
            .await?
        {
            true => Ok(()),
            false => Err(StoreError::NotFound(format!("site {id} does not exist"))),
        }
    }

    /// Removes a subscriber with its talkgroups, last known location and stored short
    /// data. A running controller forgets it.
    pub async fn remove_subscriber(&self, actor: &str, imsi: Imsi) -> Result<(), StoreError> {
        let sql = "DELETE FROM subscribers WHERE imsi = $1 RETURNING imei";
        let args = [Arg::Text(imsi.to_string())];
        match self
            .remove(
                actor,
                sql,
                &args,
                "subscriber.remove",
                &format!("subscriber:{imsi}"),
            )
            .await?
        {
            true => Ok(()),
            false => Err(StoreError::NotFound(format!("subscriber {imsi} does not exist"))),
        }
    }

    /// Runs `delete` (a `DELETE … RETURNING` one text column, the audit entry's detail)
    /// and writes the audit entry in the same transaction; `false` when it deleted nothing.
    async fn remove(
        &self,
        actor: &str,
        delete: &str,
        args: &[Arg],
        action: &str,
        object: &str,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let detail: Option<String> = bind_args!(sqlx::query_scalar(delete), args).fetch_optional(&mut *tx).await?;
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

/// Whether a delete failed because other rows still refer to the deleted one.
fn depended_on(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.is_foreign_key_violation())
}
