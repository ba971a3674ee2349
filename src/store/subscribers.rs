//! The subscribers table with their permitted talkgroups (`subscriber_talkgroups`):
//! reading, inhibiting, authorising and removing, each change with its audit entry
//! (`subscriber:<imsi>`, which a running controller's HLR cache follows). Adding
//! subscribers is `import.rs`.

use sqlx::Row;

use super::audit::audit_in;
use super::{conflict, corrupt, fleet_id, rules, talkgroup_id, Arg, Filter, Store, StoreError};
use crate::hlr::{Permissions, Secret128, Subscriber};
use crate::protocol::{FleetId, Imei, Imsi, IndividualId, MemberId, TalkgroupId, Unit};

/// What [`Store::search_subscribers`] looks for: every criterion given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriberSearch {
    /// This IMSI.
    pub imsi: Option<Imsi>,
    /// This IMEI.
    pub imei: Option<Imei>,
    /// This MSISDN.
    pub msisdn: Option<String>,
    /// An alias that starts with this, whatever the case.
    pub alias: Option<String>,
    /// Of one of these fleets (none matches an empty list).
    pub fleets: Option<Vec<FleetId>>,
    /// This member id (within the fleets).
    pub member: Option<MemberId>,
    /// Only IMSIs above this one (the last of the previous page).
    pub after: Option<Imsi>,
    /// At most this many.
    pub limit: u32,
}

/// A change to a subscriber's identities or talkgroups: each field only when given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriberUpdate {
    /// A new IMEI (the radio was replaced).
    pub imei: Option<Imei>,
    /// A new MSISDN, or `Some(None)` to remove it.
    pub msisdn: Option<Option<String>>,
    /// A new alias, or `Some(None)` to remove it.
    pub alias: Option<Option<String>>,
    /// The permitted talkgroups, the primary first, replacing the list.
    pub talkgroups: Option<Vec<TalkgroupId>>,
}

/// The [`Subscriber`] of a row of [`SUBSCRIBER_COLUMNS`] (either backend's), whose
/// `imsi` column is `$imsi` (read already), with its `$talkgroups`.
macro_rules! subscriber_of_row {
    ($r:expr, $imsi:expr, $talkgroups:expr) => {
        (|| -> Result<Subscriber, StoreError> {
            let r = $r;
            let k: Vec<u8> = r.try_get(6)?;
            let opc: Vec<u8> = r.try_get(7)?;
            Ok(Subscriber {
                imsi: Imsi::parse(&$imsi).map_err(|_| corrupt("imsi"))?,
                imei: Imei::parse(&r.try_get::<String, _>(1)?).map_err(|_| corrupt("imei"))?,
                msisdn: r.try_get(2)?,
                alias: r.try_get(17)?,
                unit: Unit {
                    fleet: fleet_id(r.try_get(3)?)?,
                    member: MemberId::new(r.try_get::<i64, _>(4)? as u16).ok_or_else(|| corrupt("member"))?,
                },
                individual: IndividualId::new(r.try_get::<i64, _>(5)? as u32)
                    .ok_or_else(|| corrupt("individual_id"))?,
                k: Secret128::from_bytes(k.try_into().map_err(|_| corrupt("k"))?),
                opc: Secret128::from_bytes(opc.try_into().map_err(|_| corrupt("opc"))?),
                priority: r.try_get::<i64, _>(8)? as u8,
                permissions: Permissions {
                    group_call: r.try_get(9)?,
                    private_call: r.try_get(10)?,
                    emergency: r.try_get(11)?,
                    short_data: r.try_get(12)?,
                    interconnect: r.try_get(13)?,
                },
                inhibited: r.try_get(14)?,
                talkgroups: $talkgroups,
                created_at: r.try_get(15)?,
                updated_at: r.try_get(16)?,
            })
        })()
    };
}

/// Subscribers read at a time by [`Store::each_subscriber`].
const LOAD_PAGE: usize = 20_000;

/// The columns a [`Subscriber`] is read from (`subscriber_of_row!`).
const SUBSCRIBER_COLUMNS: &str = "imsi, imei, msisdn, fleet_id, member_id, individual_id, k, opc, priority, \
     perm_group, perm_private, perm_emergency, perm_short_data, perm_interconnect, inhibited, created_at, \
     updated_at, alias";

impl Store {
    /// One subscriber, or `None`.
    pub async fn subscriber(&self, imsi: Imsi) -> Result<Option<Subscriber>, StoreError> {
        let mut v = self.load_subscribers(Some(imsi)).await?;
        Ok(v.pop())
    }

    /// Every subscriber (with `only`, just that one), with their talkgroups.
    pub async fn load_subscribers(&self, only: Option<Imsi>) -> Result<Vec<Subscriber>, StoreError> {
        let mut f = Filter::default();
        if let Some(i) = only {
            f.and("imsi = $", [Arg::Text(i.to_string())]);
        }
        f.order("imsi", None);
        self.select_subscribers(&f).await
    }

    /// Calls `f` with every subscriber, in IMSI order, read a page of [`LOAD_PAGE`] at a
    /// time with its talkgroups: how many. The HLR cache's load, which never holds
    /// more than a page of rows (reading all million first peaked, and stayed, at
    /// several GB; a row-by-row stream took half as long again).
    pub async fn each_subscriber(&self, mut f: impl FnMut(Subscriber)) -> Result<u64, StoreError> {
        let page = format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE imsi > $1 ORDER BY imsi LIMIT {LOAD_PAGE}"
        );
        let tg_sql = "SELECT imsi, talkgroup_id FROM subscriber_talkgroups WHERE imsi > $1 AND imsi <= $2 \
                      ORDER BY imsi, position";
        // Every IMSI (15 digits) sorts after the empty text: the first page.
        let mut after = String::new();
        let mut n = 0;
        loop {
            let loaded = dispatch!(self, p => {
                let rows = sqlx::query(&page).bind(&after).fetch_all(p).await?;
                let Some(last) = rows.last() else { break };
                let last: String = last.try_get(0)?;
                let tg_rows = sqlx::query(tg_sql)
                    .bind(&after)
                    .bind(&last)
                    .fetch_all(p)
                    .await?;
                // Both in IMSI order: each subscriber takes the talkgroup rows of its IMSI.
                let mut tgs = tg_rows.iter().peekable();
                for r in &rows {
                    let imsi_s: String = r.try_get(0)?;
                    let mut talkgroups = Vec::new();
                    while let Some(t) = tgs.peek() {
                        let of: String = t.try_get(0)?;
                        if of > imsi_s {
                            break;
                        }
                        if of == imsi_s {
                            talkgroups.push(talkgroup_id(t.try_get(1)?)?);
                        }
                        tgs.next();
                    }
                    talkgroups.shrink_to_fit();
                    f(subscriber_of_row!(r, imsi_s, talkgroups)?);
                }
                (rows.len(), last)
            });
            n += loaded.0 as u64;
            after = loaded.1;
        }
        Ok(n)
    }

    /// One page of subscribers in IMSI order: at most `limit`, those after `after`, of
    /// `fleet` only when given. The next page starts after the last IMSI of this one.
    pub async fn subscribers_page(
        &self,
        fleet: Option<FleetId>,
        after: Option<Imsi>,
        limit: u32,
    ) -> Result<Vec<Subscriber>, StoreError> {
        let search = SubscriberSearch {
            fleets: fleet.map(|f| vec![f]),
            after,
            limit,
            ..SubscriberSearch::default()
        };
        self.search_subscribers(&search).await
    }

    /// One page of the subscribers that match every criterion `search` gives, in IMSI
    /// order, with their talkgroups. The next page starts after the last IMSI of this one.
    pub async fn search_subscribers(&self, search: &SubscriberSearch) -> Result<Vec<Subscriber>, StoreError> {
        let mut f = Filter::default();
        let text = |v: &dyn std::fmt::Display| [Arg::Text(v.to_string())];
        if let Some(i) = search.imsi {
            f.and("imsi = $", text(&i));
        }
        if let Some(i) = search.imei {
            f.and("imei = $", text(&i));
        }
        if let Some(m) = &search.msisdn {
            f.and("msisdn = $", text(m));
        }
        if let Some(a) = &search.alias {
            // Unindexed: a dispatcher's search, bounded by its fleets and the page.
            let pattern = a
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            f.and(
                "lower(alias) LIKE $ ESCAPE '\\'",
                [Arg::Text(format!("{pattern}%"))],
            );
        }
        if let Some(m) = search.member {
            f.and("member_id = $", [Arg::Int(m.get().into())]);
        }
        if let Some(fleets) = &search.fleets {
            if fleets.is_empty() {
                return Ok(Vec::new());
            }
            let marks = Filter::marks(fleets.len());
            let args = fleets.iter().map(|f| Arg::Int(f.get().into()));
            f.and(&format!("fleet_id IN ({marks})"), args);
        }
        if let Some(a) = search.after {
            f.and("imsi > $", text(&a));
        }
        f.order("imsi", Some(search.limit.into()));
        self.select_subscribers(&f).await
    }

    /// The subscribers `filter` selects, with their talkgroups.
    async fn select_subscribers(&self, filter: &Filter) -> Result<Vec<Subscriber>, StoreError> {
        let (clause, args) = (&filter.sql, &filter.args);
        let sql_sub = format!("SELECT {SUBSCRIBER_COLUMNS} FROM subscribers{clause}");
        let tg_filter = if args.is_empty() {
            String::new()
        } else {
            format!(" WHERE imsi IN (SELECT imsi FROM subscribers{clause})")
        };
        let sql_tg = format!(
            "SELECT imsi, talkgroup_id FROM subscriber_talkgroups{tg_filter} ORDER BY imsi, position"
        );
        dispatch!(self, p => {
            let rows = bind_args!(sqlx::query(&sql_sub), args).fetch_all(p).await?;
            let tg_rows = bind_args!(sqlx::query(&sql_tg), args).fetch_all(p).await?;
            let mut tgs: std::collections::HashMap<String, Vec<TalkgroupId>> = Default::default();
            for r in &tg_rows {
                tgs.entry(r.try_get("imsi")?).or_default().push(talkgroup_id(r.try_get("talkgroup_id")?)?);
            }
            rows.iter().map(|r| -> Result<Subscriber, StoreError> {
                let imsi_s: String = r.try_get("imsi")?;
                let talkgroups = tgs.remove(&imsi_s).unwrap_or_default();
                subscriber_of_row!(r, imsi_s, talkgroups)
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

    /// Changes a subscriber's IMEI, MSISDN or talkgroups (the talkgroups must exist in
    /// its fleet), with an audit entry naming what changed; all or nothing.
    pub async fn update_subscriber(
        &self,
        actor: &str,
        imsi: Imsi,
        change: &SubscriberUpdate,
    ) -> Result<(), StoreError> {
        if let Some(imei) = change.imei {
            if !imei.luhn_ok() {
                return Err(StoreError::Invalid(format!(
                    "IMEI {imei} fails its Luhn check digit"
                )));
            }
        }
        if let Some(Some(m)) = &change.msisdn {
            if !rules::valid_msisdn(m) {
                return Err(StoreError::Invalid(format!(
                    "MSISDN `{m}` must be 1 to 15 digits"
                )));
            }
        }
        if let Some(Some(a)) = &change.alias {
            rules::alias(a)?;
        }
        if let Some(tgs) = &change.talkgroups {
            rules::talkgroup_list(tgs)?;
        }
        let mut detail = Vec::new();
        if let Some(i) = change.imei {
            detail.push(format!("imei={i}"));
        }
        if let Some(m) = &change.msisdn {
            detail.push(format!("msisdn={}", m.as_deref().unwrap_or("none")));
        }
        if let Some(a) = &change.alias {
            detail.push(format!("alias={}", a.as_deref().unwrap_or("none")));
        }
        if let Some(t) = &change.talkgroups {
            let list: Vec<String> = t.iter().map(ToString::to_string).collect();
            detail.push(format!("talkgroups={}", list.join(",")));
        }
        if detail.is_empty() {
            return Err(StoreError::Invalid(
                "give an imei, msisdn, alias or talkgroups to change".into(),
            ));
        }
        let detail = detail.join(" ");
        // Read before the transaction: on SQLite a transaction that reads and then
        // writes can fail at once if another connection wrote in between.
        let fleet: Option<i64> = dispatch!(self, p => sqlx::query_scalar("SELECT fleet_id FROM subscribers WHERE imsi = $1")
            .bind(imsi.to_string())
            .fetch_optional(p)
            .await?);
        let Some(fleet) = fleet else {
            return Err(StoreError::NotFound(format!("subscriber {imsi} does not exist")));
        };
        let now = self.now_ms();
        let set = |v: &Option<Option<String>>| (v.is_some(), v.clone().flatten());
        let ((set_msisdn, msisdn), (set_alias, alias)) = (set(&change.msisdn), set(&change.alias));
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let r = sqlx::query(
                "UPDATE subscribers SET imei = COALESCE($1, imei), \
                 msisdn = CASE WHEN $2 THEN $3 ELSE msisdn END, alias = CASE WHEN $6 THEN $7 ELSE alias END, \
                 updated_at = $4 WHERE imsi = $5",
            )
            .bind(change.imei.map(|i| i.to_string()))
            .bind(set_msisdn)
            .bind(msisdn)
            .bind(now)
            .bind(imsi.to_string())
            .bind(set_alias)
            .bind(alias.clone())
            .execute(&mut *tx)
            .await;
            let r = conflict(r, || "that IMEI or MSISDN belongs to another subscriber".to_string())?;
            if r.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("subscriber {imsi} does not exist")));
            }
            if let Some(tgs) = &change.talkgroups {
                sqlx::query("DELETE FROM subscriber_talkgroups WHERE imsi = $1")
                    .bind(imsi.to_string())
                    .execute(&mut *tx)
                    .await?;
                for (pos, tg) in tgs.iter().enumerate() {
                    let r = sqlx::query(
                        "INSERT INTO subscriber_talkgroups (imsi, fleet_id, talkgroup_id, position) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(imsi.to_string())
                    .bind(fleet)
                    .bind(i64::from(tg.get()))
                    .bind(pos as i64)
                    .execute(&mut *tx)
                    .await;
                    if matches!(&r, Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation()) {
                        return Err(StoreError::NotFound(format!("talkgroup {tg} does not exist in fleet {fleet}")));
                    }
                    r?;
                }
            }
            audit_in(&mut tx, now, actor, "subscriber.update", &format!("subscriber:{imsi}"), &detail).await?;
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
            .change_one(
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
