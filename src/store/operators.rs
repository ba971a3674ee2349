//! The `operators` table: who may use the operator API, with their argon2id password
//! hashes (never read back out of the library but to check a login), roles and fleets.
//! Every change bumps the operator's `generation` (which refuses the tokens issued
//! before it) and writes its audit entry (`operator:<name>`, never a secret), in one
//! transaction; a change that disables or re-keys an operator also revokes its refresh
//! tokens.

use sqlx::Row;

use super::audit::audit_in;
use super::{conflict, corrupt, Arg, Store, StoreError};
use crate::auth::tokens::{new_key, KeyRow};
use crate::auth::{check_name, Fleets, Operator, Role};

/// What changes about an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorChange {
    /// A new password (its PHC string).
    Password(String),
    /// A new role and/or fleets.
    Access {
        /// The new role, when given.
        role: Option<Role>,
        /// The new fleets, when given.
        fleets: Option<Fleets>,
    },
    /// Disabled (`true`) or enabled again.
    Disabled(bool),
}

const COLUMNS: &str = "name, role, fleets, disabled, generation, created_at, updated_at";

impl Store {
    /// Adds an operator with the hash of its password. Its fleets must exist.
    pub async fn add_operator(
        &self,
        actor: &str,
        name: &str,
        password_hash: &str,
        role: Role,
        fleets: &Fleets,
    ) -> Result<(), StoreError> {
        check_name(name).map_err(StoreError::Invalid)?;
        self.check_fleets(fleets).await?;
        let now = self.now_ms();
        let detail = format!("role={role} fleets={}", fleets_detail(fleets));
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let r = sqlx::query(
                "INSERT INTO operators (name, password_hash, role, fleets, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(name)
            .bind(password_hash)
            .bind(role.as_str())
            .bind(fleets.to_list())
            .bind(now)
            .execute(&mut *tx)
            .await;
            conflict(r, || format!("operator {name} already exists"))?;
            audit_in(&mut tx, now, actor, "operator.add", &format!("operator:{name}"), &detail).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every operator, by name (without password hashes).
    pub async fn operators(&self) -> Result<Vec<Operator>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM operators ORDER BY name"))
                .fetch_all(p)
                .await?;
            rows.iter().map(operator_of).collect()
        })
    }

    /// One operator and its password hash, for checking a login.
    pub async fn operator_credentials(&self, name: &str) -> Result<Option<(Operator, String)>, StoreError> {
        dispatch!(self, p => {
            let row = sqlx::query(&format!("SELECT {COLUMNS}, password_hash FROM operators WHERE name = $1"))
                .bind(name)
                .fetch_optional(p)
                .await?;
            row.map(|r| Ok((operator_of(&r)?, r.try_get("password_hash")?))).transpose()
        })
    }

    /// Changes an operator: its tokens issued before, access and refresh, are refused
    /// from now on.
    pub async fn change_operator(
        &self,
        actor: &str,
        name: &str,
        change: OperatorChange,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let (mut password, mut role, mut fleets, mut disabled) = (None, None, None, None);
        let (action, detail) = match change {
            OperatorChange::Password(phc) => {
                password = Some(phc);
                ("operator.passwd", String::new())
            }
            OperatorChange::Disabled(d) => {
                disabled = Some(d);
                (
                    if d { "operator.disable" } else { "operator.enable" },
                    String::new(),
                )
            }
            OperatorChange::Access {
                role: None,
                fleets: None,
            } => return Err(StoreError::Invalid("give a role, fleets or both".into())),
            OperatorChange::Access { role: r, fleets: f } => {
                let mut detail = Vec::new();
                if let Some(r) = r {
                    detail.push(format!("role={r}"));
                    role = Some(r.as_str());
                }
                if let Some(f) = f {
                    self.check_fleets(&f).await?;
                    detail.push(format!("fleets={}", fleets_detail(&f)));
                    fleets = Some(f.to_list());
                }
                ("operator.update", detail.join(" "))
            }
        };
        // One statement that reads nothing first; COALESCE keeps what is not given.
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            let r = sqlx::query(
                "UPDATE operators SET password_hash = COALESCE($1, password_hash), role = COALESCE($2, role), \
                 fleets = COALESCE($3, fleets), disabled = COALESCE($4, disabled), \
                 generation = generation + 1, updated_at = $5 WHERE name = $6",
            )
            .bind(password.as_deref())
            .bind(role)
            .bind(fleets.as_deref())
            .bind(disabled)
            .bind(now)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Err(no_operator(name));
            }
            sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE operator = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            audit_in(&mut tx, now, actor, action, &format!("operator:{name}"), &detail).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes an operator with its refresh tokens.
    pub async fn remove_operator(&self, actor: &str, name: &str) -> Result<(), StoreError> {
        let sql = "DELETE FROM operators WHERE name = $1 RETURNING role";
        let args = [Arg::Text(name.to_string())];
        match self
            .change_one(actor, sql, &args, "operator.remove", &format!("operator:{name}"))
            .await?
        {
            true => Ok(()),
            false => Err(no_operator(name)),
        }
    }

    /// Refuses fleets that do not exist.
    async fn check_fleets(&self, fleets: &Fleets) -> Result<(), StoreError> {
        let known = self.fleets().await?;
        for f in fleets.ids() {
            if !known.iter().any(|k| k.id == *f) {
                return Err(StoreError::NotFound(format!("fleet {f} does not exist")));
            }
        }
        Ok(())
    }
}

fn no_operator(name: &str) -> StoreError {
    StoreError::NotFound(format!("operator {name} does not exist"))
}

fn fleets_detail(f: &Fleets) -> String {
    match f {
        Fleets::All => "all".into(),
        Fleets::Only(_) => f.to_list(),
    }
}

fn operator_of<R: Row>(r: &R) -> Result<Operator, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let role: String = r.try_get("role")?;
    let fleets: String = r.try_get("fleets")?;
    Ok(Operator {
        name: r.try_get("name")?,
        role: role.parse().map_err(|_| corrupt("operator role"))?,
        fleets: Fleets::parse_list(&fleets).map_err(|_| corrupt("operator fleet list"))?,
        disabled: r.try_get("disabled")?,
        generation: r.try_get("generation")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A refresh token as the database holds it (by the SHA-256 of the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRow {
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// The session: one login's chain of rotations.
    pub family: String,
    /// Whose.
    pub operator: String,
    /// The operator's generation when issued.
    pub generation: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// When it was exchanged for a newer one (Unix ms).
    pub rotated_at: Option<i64>,
    /// Its family was revoked.
    pub revoked: bool,
}

impl Store {
    /// The signing keys, oldest first (their private halves: for the key ring only).
    pub async fn signing_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        dispatch!(self, p => {
            let rows = sqlx::query(
                "SELECT kid, private_key, public_key, created_at, retire_at FROM signing_keys ORDER BY created_at, kid",
            )
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| -> Result<KeyRow, StoreError> {
                Ok(KeyRow {
                    kid: r.try_get("kid")?,
                    private_key: r.try_get("private_key")?,
                    public_key: r.try_get("public_key")?,
                    created_at: r.try_get("created_at")?,
                    retire_at: r.try_get("retire_at")?,
                })
            }).collect()
        })
    }

    /// Makes a fresh Ed25519 signing key. With `retire_others_after_ms`, it becomes the
    /// one signing key and every current key retires that long from now
    /// (`auth.rotate-key`); without, it is added only if there is no current key (a first
    /// start: controllers starting together agree on one as they all read the keys back).
    /// Returns the new key's kid (whether or not a first start added it).
    pub async fn add_signing_key(
        &self,
        actor: &str,
        retire_others_after_ms: Option<i64>,
    ) -> Result<String, StoreError> {
        let now = self.now_ms();
        let key =
            new_key(now).map_err(|e| StoreError::Invalid(format!("the OS random generator failed: {e}")))?;
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            if let Some(after) = retire_others_after_ms {
                sqlx::query("UPDATE signing_keys SET retire_at = $1 WHERE retire_at IS NULL")
                    .bind(now + after)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO signing_keys (kid, private_key, public_key, created_at) \
                 SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retire_at IS NULL)",
            )
            .bind(&key.kid)
            .bind(&key.private_key)
            .bind(&key.public_key)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
            let action = if retire_others_after_ms.is_some() { "auth.rotate-key" } else { "auth.first-key" };
            audit_in(&mut tx, now, actor, action, "signing-keys", &format!("kid={}", key.kid)).await?;
            tx.commit().await?;
        });
        Ok(key.kid)
    }

    /// Stores a new refresh token; `rotating`: it replaces the family's live tokens, which
    /// are marked rotated in the same transaction.
    pub async fn put_refresh_token(&self, row: &RefreshRow, rotating: bool) -> Result<(), StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            if rotating {
                sqlx::query("UPDATE refresh_tokens SET rotated_at = $1 WHERE family = $2 AND rotated_at IS NULL")
                    .bind(now)
                    .bind(&row.family)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, family, operator, generation, issued_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&row.hash)
            .bind(&row.family)
            .bind(&row.operator)
            .bind(row.generation)
            .bind(now)
            .bind(row.expires_at)
            .execute(&mut *tx)
            .await?;
            // Expired tokens are of no use to anyone: forget them as new ones come.
            sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The refresh token whose SHA-256 is `hash`.
    pub async fn refresh_token(&self, hash: &[u8]) -> Result<Option<RefreshRow>, StoreError> {
        dispatch!(self, p => {
            let row = sqlx::query(
                "SELECT hash, family, operator, generation, expires_at, rotated_at, revoked \
                 FROM refresh_tokens WHERE hash = $1",
            )
            .bind(hash)
            .fetch_optional(p)
            .await?;
            row.map(|r| -> Result<RefreshRow, StoreError> {
                Ok(RefreshRow {
                    hash: r.try_get("hash")?,
                    family: r.try_get("family")?,
                    operator: r.try_get("operator")?,
                    generation: r.try_get("generation")?,
                    expires_at: r.try_get("expires_at")?,
                    rotated_at: r.try_get("rotated_at")?,
                    revoked: r.try_get("revoked")?,
                })
            })
            .transpose()
        })
    }

    /// The sessions revoked whose refresh tokens have not expired yet.
    pub async fn revoked_sessions(&self) -> Result<Vec<String>, StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => Ok(sqlx::query_scalar(
            "SELECT DISTINCT family FROM refresh_tokens WHERE revoked AND expires_at > $1",
        )
        .bind(now)
        .fetch_all(p)
        .await?))
    }

    /// Revokes a session (refresh-token family): its refresh tokens are refused, and the
    /// audit entry (`session.revoke`, `session:<family>`) tells every controller to
    /// refuse its access tokens too.
    pub async fn revoke_session(&self, actor: &str, family: &str, why: &str) -> Result<(), StoreError> {
        let now = self.now_ms();
        dispatch!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1")
                .bind(family)
                .execute(&mut *tx)
                .await?;
            audit_in(&mut tx, now, actor, "session.revoke", &format!("session:{family}"), why).await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
