//! Tokens and their secrets on SQLite.

use async_trait::async_trait;
use keyward_core::{
    AuditEvent, KeyId, Limits, TokenHash, TokenId, TokenName, TokenRecord, TokenState, UserId,
};
use sqlx::sqlite::SqliteConnection;
use std::sync::Arc;
use time::OffsetDateTime;

use super::audit::insert_audit;
use super::feed::{log_removed_hash, log_token_hashes};
use super::rows::{self, db_error, insert_error, unix};
use super::{SqliteStore, direct};
use crate::decode::LimitColumns;
use crate::{
    HashRecord, Lease, LeaseSize, Lookup, MAX_TOKENS_REACHED, Page, RETIRED_SECRETS_KEPT,
    RecentUseCursor, Regeneration, Revocation, StoreError, StoreOrderCursor, StoreOrderPage,
    StoreResult, StoredHash, TokenFilter, TokenStore, Usage, audit_for, lease_from_uses,
    lease_from_window,
};

/// What `TokenStore::lookup` reads of a secret, its token and its owner (decoded by
/// `rows::lookup`): the columns and the joins, for a `WHERE` to follow.
macro_rules! lookup_from {
    () => {
        "t.*, u.name AS owner_name, u.external_id AS owner_external_id, \
         u.is_admin AS owner_admin, u.disabled_at AS owner_disabled_at, \
         h.valid_until AS secret_valid_until, h.created_at AS secret_created_at \
         FROM token_hashes h JOIN tokens t ON t.id = h.token_id JOIN users u ON u.id = t.owner "
    };
}

/// A secret's token, its owner and the secret's own validity, for
/// `TokenStore::lookup`; decoded by `rows::lookup`. Read through `direct::Readers` (rusqlite), or
/// through sqlx where the store has no file.
pub(super) const LOOKUP: &str = concat!("SELECT ", lookup_from!(), "WHERE h.hash = ?1");

/// The statements of `TokenStore::secrets_by_recent_use`: the working secrets (?1 is now) of
/// tokens neither revoked nor expired, after [`lookup_from!`]. Used tokens (latest use first),
/// then never used ones (newest first), each read backwards from `tokens_recent_use` (whose
/// condition is `revoked_at IS NULL`), from the first or after a cursor.
macro_rules! recent_use {
    ($($part:literal),+) => {
        concat!(
            "SELECT h.hash AS hash, ",
            lookup_from!(),
            "WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?1) \
             AND (h.valid_until IS NULL OR h.valid_until > ?1) ",
            $($part),+
        )
    };
}

/// Used tokens, from the first; ?2 is the limit.
const USED_FIRST: &str = recent_use!(
    "AND t.last_used_at IS NOT NULL ",
    "ORDER BY t.last_used_at DESC, t.created_at DESC, t.id DESC, h.hash DESC LIMIT ?2"
);

/// Used tokens, after a used token's secret: its last use, creation, token id and hash, then
/// the limit.
const USED_AFTER: &str = recent_use!(
    "AND t.last_used_at IS NOT NULL \
     AND (t.last_used_at, t.created_at, t.id) <= (?2, ?3, ?4) \
     AND ((t.last_used_at, t.created_at, t.id) < (?2, ?3, ?4) OR h.hash < ?5) ",
    "ORDER BY t.last_used_at DESC, t.created_at DESC, t.id DESC, h.hash DESC LIMIT ?6"
);

/// Never used tokens, from the first; ?2 is the limit.
const NEVER_USED_FIRST: &str = recent_use!(
    "AND t.last_used_at IS NULL ",
    "ORDER BY t.created_at DESC, t.id DESC, h.hash DESC LIMIT ?2"
);

/// Never used tokens, after a never used token's secret: its creation, token id and hash, then
/// the limit.
const NEVER_USED_AFTER: &str = recent_use!(
    "AND t.last_used_at IS NULL AND (t.created_at, t.id) <= (?2, ?3) \
     AND ((t.created_at, t.id) < (?2, ?3) OR h.hash < ?4) ",
    "ORDER BY t.created_at DESC, t.id DESC, h.hash DESC LIMIT ?5"
);

/// `TokenStore::secrets_in_store_order`: the working secrets of live tokens (?1 is now) whose
/// rowid is in (?2, ?3], in rowid order: a range of the table read in place, each token's
/// secrets from the covering index `token_hashes_token_validity`, no sort.
const IN_STORE_ORDER: &str = concat!(
    "SELECT h.hash AS hash, ",
    lookup_from!(),
    "WHERE t.rowid > ?2 AND t.rowid <= ?3 AND t.revoked_at IS NULL \
     AND (t.expires_at IS NULL OR t.expires_at > ?1) \
     AND (h.valid_until IS NULL OR h.valid_until > ?1) ORDER BY t.rowid"
);

/// A token row. Like every row write here, shared with the bulk restore (`direct::bulk`), which
/// binds the same parameters in the same order.
pub(super) const INSERT_TOKEN: &str = "INSERT INTO tokens (id, owner, name, scopes, hint, created_at, \
     expires_at, regenerated_at, last_used_at, last_used_ip, revoked_at, revoked_by, \
     revoke_reason, allowed_ips, max_uses, remaining, refill_amount, refill_every, refilled_at, \
     rate_requests, rate_per) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
     ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)";

/// Tokens of owner `?1` neither revoked nor expired at `?2` (`max_tokens_per_user`).
pub(super) const LIVE_TOKENS_OF: &str = "SELECT count(*) FROM tokens WHERE owner = ?1 AND revoked_at IS NULL \
     AND (expires_at IS NULL OR expires_at > ?2)";

/// A secret hash row (shared with `direct::bulk`).
pub(super) const INSERT_HASH: &str = "INSERT INTO token_hashes (hash, token_id, key_id, created_at, \
     valid_until) VALUES (?1, ?2, ?3, ?4, ?5)";

/// A token by id in an open transaction, limited to `owner`'s when given.
pub(super) async fn token_in(
    conn: &mut SqliteConnection,
    id: &TokenId,
    owner: Option<&UserId>,
) -> StoreResult<Option<TokenRecord>> {
    let row = sqlx::query("SELECT * FROM tokens WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)")
        .bind(id.as_str())
        .bind(owner.map(UserId::as_str))
        .fetch_optional(conn)
        .await
        .map_err(db_error)?;
    row.as_ref().map(rows::token).transpose()
}

pub(super) async fn insert_token_row(
    conn: &mut SqliteConnection,
    token: &TokenRecord,
) -> StoreResult<()> {
    let limits = LimitColumns::of(token);
    sqlx::query(INSERT_TOKEN)
        .bind(token.id.as_str())
        .bind(token.owner.as_str())
        .bind(token.name.as_str())
        .bind(token.scopes.to_string())
        .bind(token.hint.as_str())
        .bind(unix(token.created_at))
        .bind(token.expires_at.map(unix))
        .bind(token.regenerated_at.map(unix))
        .bind(token.last_used_at.map(unix))
        .bind(token.last_used_ip.map(|ip| ip.to_string()))
        .bind(token.revoked_at.map(unix))
        .bind(token.revoked_by.as_deref())
        .bind(token.revoke_reason.as_deref())
        .bind(limits.allowed_ips)
        .bind(limits.max_uses)
        .bind(limits.remaining)
        .bind(limits.refill_amount)
        .bind(limits.refill_every)
        .bind(limits.refilled_at)
        .bind(limits.rate_requests)
        .bind(limits.rate_per)
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || format!("token {}", token.id)))?;
    Ok(())
}

pub(super) async fn insert_hash_row(
    conn: &mut SqliteConnection,
    hash: &HashRecord,
) -> StoreResult<()> {
    sqlx::query(INSERT_HASH)
        .bind(hash.hash.hash.0.to_vec())
        .bind(hash.token_id.as_str())
        .bind(hash.hash.key_id.as_str())
        .bind(unix(hash.created_at))
        .bind(hash.valid_until.map(unix))
        .execute(conn)
        .await
        .map_err(|e| insert_error(e, || "token hash".to_owned()))?;
    Ok(())
}

/// The conditions of a [`TokenFilter`] on `tokens`, as `?1` to `?8` (see [`bind_filter`]); a
/// condition whose parameter is null holds for every row.
macro_rules! matches_filter {
    () => {
        "revoked_at IS NULL \
     AND (?1 IS NULL OR owner = ?1) \
     AND (?2 IS NULL OR created_at < ?2) \
     AND (?3 IS NULL OR created_at > ?3) \
     AND (?4 IS NULL OR last_used_at IS NULL OR last_used_at < ?4) \
     AND (?5 IS NULL OR instr(' ' || scopes || ' ', ?5) > 0 OR instr(' ' || scopes || ' ', ?6) > 0 \
          OR instr(' ' || scopes || ' ', ?7) > 0 OR instr(' ' || scopes || ' ', ?8) > 0)"
    };
}

/// Binds `filter` as `?1` to `?8` of [`matches_filter`].
fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    filter: &'q TokenFilter,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    let [a, b, c, d] = filter.scope_needles();
    query
        .bind(filter.owner.as_ref().map(UserId::as_str))
        .bind(filter.created_before.map(unix))
        .bind(filter.created_after.map(unix))
        .bind(filter.unused_since.map(unix))
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
}

/// Records a use of token `?1` at `?2` from `?3`. Another process (or an older batch) may hold a
/// later use; a use only moves forward.
pub(super) const RECORD_USE: &str = "UPDATE tokens SET last_used_at = ?2, last_used_ip = ?3 \
     WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2)";

/// Active tokens with a working secret, per key id of the secret, at `?1`.
const ACTIVE_BY_KEY: &str = "SELECT k.key_id, count(DISTINCT t.id) FROM token_hashes k \
     JOIN tokens t ON t.id = k.token_id \
     WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?1) \
     AND (k.valid_until IS NULL OR k.valid_until > ?1) \
     GROUP BY k.key_id ORDER BY k.key_id";

/// For each token (of `?1` when not null) not revoked, the end of its latest previous secret
/// still working at `?2` (a current secret's `valid_until` is null, so never matches).
const OLD_SECRETS_UNTIL: &str = "SELECT h.token_id, max(h.valid_until) AS until FROM token_hashes h \
     JOIN tokens t ON t.id = h.token_id \
     WHERE (?1 IS NULL OR t.owner = ?1) AND t.revoked_at IS NULL AND h.valid_until > ?2 \
     GROUP BY h.token_id ORDER BY h.token_id";

/// Drops the secrets of token `?1` whose grace period ended by `?2`, except the newest
/// `?3` replaced secrets (`RETIRED_SECRETS_KEPT`); returns the dropped hashes.
const DROP_RETIRED: &str = "DELETE FROM token_hashes \
     WHERE token_id = ?1 AND valid_until IS NOT NULL AND valid_until <= ?2 \
     AND hash NOT IN (SELECT hash FROM token_hashes WHERE token_id = ?1 \
         AND valid_until IS NOT NULL ORDER BY created_at DESC, hash DESC LIMIT ?3) \
     RETURNING hash";

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_token(
        &self,
        token: &TokenRecord,
        hash: &StoredHash,
        audit: &AuditEvent,
        max_per_user: Option<u32>,
    ) -> StoreResult<()> {
        if let Some(creations) = &self.creations {
            // Grouped with the creations arriving beside it: one durable commit for all.
            return creations
                .create(&self.epoch, token, hash, audit, max_per_user)
                .await;
        }
        let mut tx = self.begin_write().await?;
        // The write lock is held: no other creation can slip in between the count and the insert.
        if let Some(cap) = max_per_user {
            let live: i64 = sqlx::query_scalar(LIVE_TOKENS_OF)
                .bind(token.owner.as_str())
                .bind(unix(token.created_at))
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            if live >= i64::from(cap) {
                return Err(StoreError::InvalidState(MAX_TOKENS_REACHED));
            }
        }
        insert_token_row(&mut tx, token).await?;
        let first = HashRecord {
            token_id: token.id.clone(),
            hash: hash.clone(),
            created_at: token.created_at,
            valid_until: None,
        };
        insert_hash_row(&mut tx, &first).await?;
        // Logged like any change: every cache keeps the set of stored hashes (to answer unknown
        // tokens without a read) and must learn of this one before it is presented.
        log_token_hashes(&mut tx, &token.id, token.created_at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx).await
    }

    async fn token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
    ) -> StoreResult<Option<TokenRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        token_in(&mut conn, id, owner).await
    }

    async fn list_tokens(
        &self,
        owner: Option<&UserId>,
        page: &Page,
    ) -> StoreResult<Vec<TokenRecord>> {
        // One static statement per shape, so each uses its index instead of a catch-all plan.
        let query = match (owner, &page.after) {
            (Some(owner), Some(after)) => sqlx::query(
                "SELECT * FROM tokens WHERE owner = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
            )
            .bind(owner.as_str())
            .bind(after.as_str()),
            (Some(owner), None) => {
                sqlx::query("SELECT * FROM tokens WHERE owner = ?1 ORDER BY id DESC LIMIT ?2")
                    .bind(owner.as_str())
            }
            (None, Some(after)) => {
                sqlx::query("SELECT * FROM tokens WHERE id < ?1 ORDER BY id DESC LIMIT ?2")
                    .bind(after.as_str())
            }
            (None, None) => sqlx::query("SELECT * FROM tokens ORDER BY id DESC LIMIT ?1"),
        };
        let rows = query
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(rows::token).collect()
    }

    async fn rename_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        name: &TokenName,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE tokens SET name = ?3 WHERE id = ?1 AND (?2 IS NULL OR owner = ?2) RETURNING *",
        )
        .bind(id.as_str())
        .bind(owner.map(UserId::as_str))
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let token = row
            .as_ref()
            .map(rows::token)
            .transpose()?
            .ok_or(StoreError::NotFound)?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(token)
    }

    async fn set_limits(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        limits: &Limits,
        at: OffsetDateTime,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let mut token = token_in(&mut tx, id, owner)
            .await?
            .ok_or(StoreError::NotFound)?;
        if token.revoked_at.is_some() {
            return Err(StoreError::InvalidState("the token is revoked"));
        }
        token.limits = limits.clone();
        token.remaining = limits.max_uses;
        token.refilled_at = limits.refill.map(|_| at);
        let c = LimitColumns::of(&token);
        sqlx::query(
            "UPDATE tokens SET allowed_ips = ?2, max_uses = ?3, remaining = ?4, refill_amount = ?5, \
             refill_every = ?6, refilled_at = ?7, rate_requests = ?8, rate_per = ?9, \
             rate_window = NULL, rate_spent = NULL, limits_version = limits_version + 1 \
             WHERE id = ?1",
        )
        .bind(id.as_str())
        .bind(c.allowed_ips)
        .bind(c.max_uses)
        .bind(c.remaining)
        .bind(c.refill_amount)
        .bind(c.refill_every)
        .bind(c.refilled_at)
        .bind(c.rate_requests)
        .bind(c.rate_per)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Every cache holding one of its secrets must judge by the new limits.
        log_token_hashes(&mut tx, id, at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx).await?;
        Ok(token)
    }

    async fn lease_uses(
        &self,
        id: &TokenId,
        now: i64,
        size: LeaseSize,
    ) -> StoreResult<Option<Lease>> {
        let mut tx = self.begin_write().await?;
        let row: Option<(Option<i64>, Option<i64>, Option<i64>, Option<i64>, i64)> =
            sqlx::query_as(
                "SELECT remaining, refill_amount, refill_every, refilled_at, limits_version \
             FROM tokens WHERE id = ?1",
            )
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        let Some((Some(remaining), amount, every, refilled_at, version)) = row else {
            return Ok(None);
        };
        let refill = amount
            .zip(every)
            .map(|(a, e)| (a.max(0).cast_unsigned(), e));
        let (lease, remaining, refilled_at) = lease_from_uses(
            remaining.max(0).cast_unsigned(),
            refill,
            refilled_at,
            version,
            now,
            size,
        );
        sqlx::query("UPDATE tokens SET remaining = ?2, refilled_at = ?3 WHERE id = ?1")
            .bind(id.as_str())
            .bind(remaining.cast_signed())
            .bind(refilled_at)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(lease))
    }

    async fn return_uses(
        &self,
        id: &TokenId,
        version: i64,
        period_start: i64,
        uses: u64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE tokens SET remaining = remaining + ?4 WHERE id = ?1 AND remaining IS NOT NULL \
             AND limits_version = ?2 AND coalesce(refilled_at, 0) = ?3",
        )
        .bind(id.as_str())
        .bind(version)
        .bind(period_start)
        .bind(i64::try_from(uses).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn lease_rate(
        &self,
        id: &TokenId,
        now: i64,
        size: LeaseSize,
    ) -> StoreResult<Option<Lease>> {
        let mut tx = self.begin_write().await?;
        let row: Option<(Option<i64>, Option<i64>, Option<i64>, Option<i64>, i64)> =
            sqlx::query_as(
                "SELECT rate_requests, rate_per, rate_window, rate_spent, limits_version \
             FROM tokens WHERE id = ?1",
            )
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        let Some((Some(requests), Some(per), window, spent, version)) = row else {
            return Ok(None);
        };
        let (lease, window, spent) = lease_from_window(
            requests.max(0).cast_unsigned(),
            per,
            window,
            spent.map(|s| s.max(0).cast_unsigned()),
            version,
            now,
            size,
        );
        sqlx::query("UPDATE tokens SET rate_window = ?2, rate_spent = ?3 WHERE id = ?1")
            .bind(id.as_str())
            .bind(window)
            .bind(spent.cast_signed())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(lease))
    }

    async fn regenerate_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        regen: &Regeneration,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        // The write lock is already held, so this check and the writes below see one state.
        let current = token_in(&mut tx, id, owner)
            .await?
            .ok_or(StoreError::NotFound)?;
        match current.state(regen.at) {
            TokenState::Active => {}
            TokenState::Revoked => return Err(StoreError::InvalidState("token is revoked")),
            TokenState::Expired => return Err(StoreError::InvalidState("token has expired")),
        }
        sqlx::query(
            "UPDATE token_hashes SET valid_until = min(coalesce(valid_until, ?2), ?2) WHERE token_id = ?1",
        )
        .bind(id.as_str())
        .bind(unix(regen.old_valid_until))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let new_hash = HashRecord {
            token_id: id.clone(),
            hash: regen.new_hash.clone(),
            created_at: regen.at,
            valid_until: None,
        };
        insert_hash_row(&mut tx, &new_hash).await?;
        // Bounded: only the last few replaced secrets stay recognisable (reuse detection). A
        // dropped hash goes to the change log so no cache keeps answering for it.
        let dropped = sqlx::query(DROP_RETIRED)
            .bind(id.as_str())
            .bind(unix(regen.at))
            .bind(RETIRED_SECRETS_KEPT)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        for row in &dropped {
            log_removed_hash(&mut tx, &rows::hash(row, "hash")?, regen.at).await?;
        }
        let row = sqlx::query(
            "UPDATE tokens SET hint = ?2, expires_at = ?3, regenerated_at = ?4 WHERE id = ?1 RETURNING *",
        )
        .bind(id.as_str())
        .bind(regen.new_hint.as_str())
        .bind(regen.new_expires_at.map(unix))
        .bind(unix(regen.at))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let token = rows::token(&row)?;
        log_token_hashes(&mut tx, id, regen.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx).await?;
        Ok(token)
    }

    async fn revoke_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE tokens SET revoked_at = ?3, revoked_by = ?4, revoke_reason = ?5 \
             WHERE id = ?1 AND (?2 IS NULL OR owner = ?2) AND revoked_at IS NULL RETURNING *",
        )
        .bind(id.as_str())
        .bind(owner.map(UserId::as_str))
        .bind(unix(revocation.at))
        .bind(revocation.by.as_str())
        .bind(revocation.reason.as_deref())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            // Not updated: either not the caller's (or no such token), or already revoked. Still
            // under the write lock, so the answer cannot change before we give it.
            let existing = token_in(&mut tx, id, owner).await?;
            return existing.ok_or(StoreError::NotFound);
        };
        let token = rows::token(&row)?;
        log_token_hashes(&mut tx, id, revocation.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx).await?;
        Ok(token)
    }

    async fn matching_tokens(
        &self,
        filter: &TokenFilter,
        after: Option<&TokenId>,
        limit: u32,
    ) -> StoreResult<Vec<TokenId>> {
        let sql = concat!(
            "SELECT id FROM tokens WHERE ",
            matches_filter!(),
            " AND (?9 IS NULL OR id > ?9) ORDER BY id LIMIT ?10"
        );
        let ids: Vec<String> = bind_filter(sqlx::query(sql), filter)
            .bind(after.map(TokenId::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| sqlx::Row::try_get(row, "id"))
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        ids.iter()
            .map(|id| {
                TokenId::parse(id).map_err(|e| StoreError::corrupt(format!("tokens.id: {e}")))
            })
            .collect()
    }

    async fn revoke_tokens(
        &self,
        ids: &[TokenId],
        filter: &TokenFilter,
        revocation: &Revocation,
        audit: &[AuditEvent],
    ) -> StoreResult<Vec<TokenRecord>> {
        let sql = concat!(
            "UPDATE tokens SET revoked_at = ?10, revoked_by = ?11, revoke_reason = ?12 ",
            "WHERE id = ?9 AND ",
            matches_filter!(),
            " RETURNING *"
        );
        let mut tx = self.begin_write().await?;
        let mut revoked = Vec::new();
        for id in ids {
            let row = bind_filter(sqlx::query(sql), filter)
                .bind(id.as_str())
                .bind(unix(revocation.at))
                .bind(revocation.by.as_str())
                .bind(revocation.reason.as_deref())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
            let Some(row) = row else { continue };
            let token = rows::token(&row)?;
            log_token_hashes(&mut tx, id, revocation.at).await?;
            for event in audit_for(audit, &token) {
                insert_audit(&mut tx, &event).await?;
            }
            revoked.push(token);
        }
        if revoked.is_empty() {
            tx.commit().await.map_err(db_error)?;
        } else {
            self.commit_and_announce(tx).await?;
        }
        Ok(revoked)
    }

    async fn old_secrets_until(
        &self,
        owner: Option<&UserId>,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(TokenId, OffsetDateTime)>> {
        let found = sqlx::query(OLD_SECRETS_UNTIL)
            .bind(owner.map(UserId::as_str))
            .bind(unix(now))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        found.iter().map(rows::old_secret).collect()
    }

    async fn lookup(&self, hash: &TokenHash) -> StoreResult<Option<Lookup>> {
        if let Some(readers) = &self.readers {
            // On this task: see `direct::reader` for why a few µs of blocking beat a thread hop. When
            // the file stays locked, the wait moves to sqlx's thread below.
            if let direct::Read::Done(found) = readers.lookup(hash)? {
                return Ok(found);
            }
        }
        let row = sqlx::query(LOOKUP)
            .bind(hash.0.to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(rows::lookup).transpose()
    }

    async fn stored_hashes(
        &self,
        after: Option<&TokenHash>,
        limit: u32,
    ) -> StoreResult<Vec<TokenHash>> {
        // The primary key's order (a WITHOUT ROWID table is stored in it): one range scan. Two
        // statements, because `?1 IS NULL OR hash > ?1` would not use the range.
        let limit = i64::from(limit);
        let query = match after {
            Some(after) => {
                sqlx::query("SELECT hash FROM token_hashes WHERE hash > ?1 ORDER BY hash LIMIT ?2")
                    .bind(after.0.to_vec())
                    .bind(limit)
            }
            None => sqlx::query("SELECT hash FROM token_hashes ORDER BY hash LIMIT ?1").bind(limit),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(|row| rows::hash(row, "hash")).collect()
    }

    async fn secrets_by_recent_use(
        &self,
        now: OffsetDateTime,
        after: Option<&RecentUseCursor>,
        limit: u32,
    ) -> StoreResult<Vec<(TokenHash, Lookup)>> {
        let mut page = Vec::new();
        // Used tokens first, unless the previous page ended among the never used.
        let used = match after {
            None => Some((USED_FIRST, vec![unix(now).into(), i64::from(limit).into()])),
            Some(after) => after.last_used.map(|last_used| {
                (
                    USED_AFTER,
                    vec![
                        unix(now).into(),
                        last_used.into(),
                        after.created.into(),
                        after.token.as_str().to_owned().into(),
                        after.hash.0.to_vec().into(),
                        i64::from(limit).into(),
                    ],
                )
            }),
        };
        if let Some((sql, params)) = used {
            page = self.read_secrets(sql, params).await?;
        }
        let left = limit.saturating_sub(u32::try_from(page.len()).unwrap_or(u32::MAX));
        if left > 0 {
            let never_used = match after {
                Some(after) if after.last_used.is_none() => (
                    NEVER_USED_AFTER,
                    vec![
                        unix(now).into(),
                        after.created.into(),
                        after.token.as_str().to_owned().into(),
                        after.hash.0.to_vec().into(),
                        i64::from(left).into(),
                    ],
                ),
                _ => (
                    NEVER_USED_FIRST,
                    vec![unix(now).into(), i64::from(left).into()],
                ),
            };
            page.extend(self.read_secrets(never_used.0, never_used.1).await?);
        }
        Ok(page)
    }

    async fn secrets_in_store_order(
        &self,
        now: OffsetDateTime,
        after: Option<&StoreOrderCursor>,
        limit: u32,
        at_most: u64,
    ) -> StoreResult<Option<StoreOrderPage>> {
        let (after, end) = match after {
            Some(cursor) => (cursor.after, cursor.end),
            None => {
                let (stored, end): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM token_hashes), \
                     (SELECT coalesce(max(rowid), 0) FROM tokens)",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
                if u64::try_from(stored).unwrap_or(u64::MAX) > at_most {
                    return Ok(None);
                }
                (0, end)
            }
        };
        let last = StoreOrderCursor::page_last(after, end, limit);
        let secrets = self
            .read_secrets(
                IN_STORE_ORDER,
                vec![unix(now).into(), after.into(), last.into()],
            )
            .await?;
        Ok(Some(StoreOrderPage {
            secrets,
            next: (last < end).then_some(StoreOrderCursor::new(last, end)),
        }))
    }

    async fn record_usage(&self, batch: &[Usage]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(creations) = &self.creations {
            // On the file's own writer connection, without a thread hop per use (`direct`).
            let writer = creations.writer();
            let batch = batch.to_vec();
            return tokio::task::spawn_blocking(move || writer.record_usage(&batch))
                .await
                .map_err(|_| {
                    StoreError::unavailable("the usage writer stopped before answering")
                })?;
        }
        let mut tx = self.begin_write().await?;
        for usage in batch {
            sqlx::query(RECORD_USE)
                .bind(usage.token_id.as_str())
                .bind(unix(usage.at))
                .bind(usage.ip.map(|ip| ip.to_string()))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }
    async fn rekey_secret(
        &self,
        old: &TokenHash,
        new: &StoredHash,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let moved: Option<String> = sqlx::query_scalar(
            "UPDATE token_hashes SET hash = ?2, key_id = ?3 WHERE hash = ?1 RETURNING token_id",
        )
        .bind(old.0.to_vec())
        .bind(new.hash.0.to_vec())
        .bind(new.key_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| insert_error(e, || "token hash".to_owned()))?;
        let Some(token) = moved else {
            return Ok(false);
        };
        let token = TokenId::parse(&token)
            .map_err(|e| StoreError::corrupt(format!("token_hashes.token_id: {e}")))?;
        log_removed_hash(&mut tx, old, at).await?;
        log_token_hashes(&mut tx, &token, at).await?;
        self.commit_and_announce(tx).await?;
        Ok(true)
    }

    async fn active_tokens_by_key(&self, now: OffsetDateTime) -> StoreResult<Vec<(KeyId, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(ACTIVE_BY_KEY)
            .bind(unix(now))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(key, n)| (KeyId::from_stored(key), u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}

/// The rows of [`USED_FIRST`] and its siblings: each secret's hash and its lookup.
impl SqliteStore {
    /// Runs one of the `secrets_by_recent_use` statements. A page is thousands of rows: on a
    /// database file it is read by a direct reader (rusqlite) on a blocking thread, which costs
    /// a fraction of sqlx's per-row hand-over and keeps the executor's workers free; through sqlx
    /// otherwise, and when the file stays locked.
    async fn read_secrets(
        &self,
        sql: &'static str,
        params: Vec<rusqlite::types::Value>,
    ) -> StoreResult<Vec<(TokenHash, Lookup)>> {
        if let Some(readers) = &self.readers {
            let readers = Arc::clone(readers);
            let direct_params = params.clone();
            let read = tokio::task::spawn_blocking(move || readers.secrets(sql, &direct_params))
                .await
                .map_err(|e| StoreError::unavailable(format!("the page read stopped: {e}")))??;
            if let direct::Read::Done(page) = read {
                return Ok(page);
            }
        }
        let mut query = sqlx::query(sql);
        for param in params {
            query = match param {
                rusqlite::types::Value::Integer(n) => query.bind(n),
                rusqlite::types::Value::Text(text) => query.bind(text),
                rusqlite::types::Value::Blob(bytes) => query.bind(bytes),
                rusqlite::types::Value::Real(x) => query.bind(x),
                rusqlite::types::Value::Null => query.bind(None::<i64>),
            };
        }
        let found = query.fetch_all(&self.pool).await.map_err(db_error)?;
        found
            .iter()
            .map(|row| Ok((rows::hash(row, "hash")?, rows::lookup(row)?)))
            .collect()
    }
}
