//! The subscribers table with their permitted talkgroups (`subscriber_talkgroups`):
//! reading, inhibiting, authorising and removing, each change with its audit entry
//! (`subscriber:<imsi>`, which a running controller's HLR cache follows). Adding
//! subscribers is `import.rs`.

use sqlx::Row;

use super::audit::audit_in;
use super::{corrupt, fleet_id, rules, talkgroup_id, Arg, Store, StoreError};
use crate::hlr::{Permissions, Secret128, Subscriber};
use crate::protocol::{FleetId, Imei, Imsi, IndividualId, MemberId, TalkgroupId, Unit};

impl Store {
    /// One subscriber, or `None`.
    pub async fn subscriber(&self, imsi: Imsi) -> Result<Option<Subscriber>, StoreError> {
        let mut v = self.load_subscribers(Some(imsi)).await?;
        Ok(v.pop())
    }

    /// Every subscriber (with `only`, just that one), with their talkgroups.
    pub async fn load_subscribers(&self, only: Option<Imsi>) -> Result<Vec<Subscriber>, StoreError> {
        let only: Vec<(&str, Arg)> = only
            .map(|i| ("imsi =", Arg::Text(i.to_string())))
            .into_iter()
            .collect();
        self.select_subscribers(&only, None).await
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

    /// The subscribers that meet every condition (an SQL comparison such as `fleet_id =`
    /// and its value), in IMSI order, at most `limit`, with their talkgroups.
    async fn select_subscribers(
        &self,
        conds: &[(&str, Arg)],
        limit: Option<i64>,
    ) -> Result<Vec<Subscriber>, StoreError> {
        let mut clause = String::new();
        for (i, (cond, _)) in conds.iter().enumerate() {
            clause += &format!("{} {cond} ${}", if i == 0 { " WHERE" } else { " AND" }, i + 1);
        }
        clause += " ORDER BY imsi";
        if limit.is_some() {
            clause += &format!(" LIMIT ${}", conds.len() + 1);
        }
        let args: Vec<Arg> = conds
            .iter()
            .map(|(_, a)| a.clone())
            .chain(limit.map(Arg::Int))
            .collect();
        let sql_sub = format!(
            "SELECT imsi, imei, msisdn, fleet_id, member_id, individual_id, k, opc, priority, perm_group, \
             perm_private, perm_emergency, perm_short_data, perm_interconnect, inhibited, created_at, updated_at \
             FROM subscribers{clause}"
        );
        let tg_filter = if args.is_empty() {
            String::new()
        } else {
            format!(" WHERE imsi IN (SELECT imsi FROM subscribers{clause})")
        };
        let sql_tg = format!(
            "SELECT imsi, talkgroup_id FROM subscriber_talkgroups{tg_filter} ORDER BY imsi, position"
        );
        dispatch!(self, p => {
            let rows = bind_args!(sqlx::query(&sql_sub), &args).fetch_all(p).await?;
            let tg_rows = bind_args!(sqlx::query(&sql_tg), &args).fetch_all(p).await?;
            let mut tgs: std::collections::HashMap<String, Vec<TalkgroupId>> = Default::default();
            for r in &tg_rows {
                tgs.entry(r.try_get("imsi")?).or_default().push(talkgroup_id(r.try_get("talkgroup_id")?)?);
            }
            rows.iter().map(|r| -> Result<Subscriber, StoreError> {
                let imsi_s: String = r.try_get("imsi")?;
                let k: Vec<u8> = r.try_get("k")?;
                let opc: Vec<u8> = r.try_get("opc")?;
                Ok(Subscriber {
                    imsi: Imsi::parse(&imsi_s).map_err(|_| corrupt("imsi"))?,
                    imei: Imei::parse(&r.try_get::<String, _>("imei")?).map_err(|_| corrupt("imei"))?,
                    msisdn: r.try_get("msisdn")?,
                    unit: Unit {
                        fleet: fleet_id(r.try_get("fleet_id")?)?,
                        member: MemberId::new(r.try_get::<i64, _>("member_id")? as u16).ok_or_else(|| corrupt("member"))?,
                    },
                    individual: IndividualId::new(r.try_get::<i64, _>("individual_id")? as u32)
                        .ok_or_else(|| corrupt("individual_id"))?,
                    k: Secret128::from_bytes(k.try_into().map_err(|_| corrupt("k"))?),
                    opc: Secret128::from_bytes(opc.try_into().map_err(|_| corrupt("opc"))?),
                    priority: r.try_get::<i64, _>("priority")? as u8,
                    permissions: Permissions {
                        group_call: r.try_get("perm_group")?,
                        private_call: r.try_get("perm_private")?,
                        emergency: r.try_get("perm_emergency")?,
                        short_data: r.try_get("perm_short_data")?,
                        interconnect: r.try_get("perm_interconnect")?,
                    },
                    inhibited: r.try_get("inhibited")?,
                    talkgroups: tgs.remove(&imsi_s).unwrap_or_default(),
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }).collect()
        })
    }

    /// Inhibits (`true`) or re-enables (`false`) a subscriber.
    pub async fn set_inhibited(&self, actor: &str, imsi: Imsi, inhibited: bool) -> Result<(), StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let r = sqlx::query("UPDATE subscribers SET inhibited = $1, updated_at = $2 WHERE imsi = $3")
                .bind(inhibited)
                .bind(now)
                .bind(imsi.to_string())
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("subscriber {imsi} does not exist")));
            }
            let action = if inhibited { "subscriber.inhibit" } else { "subscriber.enable" };
            audit_in(&mut tx, now, actor, action, &format!("subscriber:{imsi}"), "").await?;
            tx.commit().await?;
        });
        Ok(())
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
}
