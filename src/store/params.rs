//! The `system_parameters` table (see `crate::params`): one row per parameter set in
//! this database. A change writes its audit entry (`parameter:<name>`) in the same
//! transaction, which is how other controllers on the database hear of it.

use sqlx::Row;

use super::audit::audit_in;
use super::{Store, StoreError};

impl Store {
    /// Every parameter this database holds: (name, value), by name.
    pub async fn parameters(&self) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query("SELECT name, value FROM system_parameters ORDER BY name")
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("name")?, r.try_get("value")?)))
                .collect()
        })
    }

    /// Writes the parameters this database does not hold yet (a fresh database takes
    /// the config file's values); those it holds are left as they are.
    pub async fn seed_parameters(&self, values: &[(&str, String)]) -> Result<(), StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            for (name, value) in values {
                sqlx::query(
                    "INSERT INTO system_parameters (name, value, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(*name)
                .bind(value)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sets one parameter (already validated), with its audit entry.
    pub async fn set_parameter(&self, actor: &str, name: &str, value: &str) -> Result<(), StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO system_parameters (name, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            audit_in(&mut tx, now, actor, "parameter.set", &format!("parameter:{name}"), value).await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
