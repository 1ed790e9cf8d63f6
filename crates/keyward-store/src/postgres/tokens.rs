//! Tokens and their secrets on PostgreSQL.

use async_trait::async_trait;
use keyward_core::{
    AuditEvent, KeyId, Limits, TokenHash, TokenId, TokenName, TokenRecord, TokenState, UserId,
};
use sqlx::postgres::PgConnection;
use time::OffsetDateTime;

use super::audit::insert_audit;
use super::feed::{log_removed_hash, log_token_hashes};
use super::rows::{self, db_error, insert_error, unix};
use super::{PgStore, bounded};
use crate::decode::LimitColumns;
use crate::{
    HashRecord, Lease, LeaseSize, Lookup, MAX_TOKENS_REACHED, Page, RETIRED_SECRETS_KEPT,
    RecentUseCursor, Regeneration, Revocation, StoreError, StoreOrderCursor, StoreOrderPage,
    StoreResult, StoredHash, TokenFilter, TokenStore, Usage, audit_for, lease_from_uses,
    lease_from_window,
};

/// What [`TokenStore::lookup`] reads of a secret, its token and its owner (decoded by
/// `rows::lookup`): the columns and the joins, for a `WHERE` to follow.
macro_rules! lookup_from {
    () => {
        concat!(
            token_columns!(),
            ", u.name AS owner_name, u.external_id AS owner_external_id, \
             u.is_admin AS owner_admin, u.disabled_at AS owner_disabled_at, \
             h.valid_until AS secret_valid_until, h.created_at AS secret_created_at \
             FROM token_hashes h JOIN tokens t ON t.id = h.token_id JOIN users u ON u.id = t.owner \
             LEFT JOIN token_limits l ON l.token_id = t.id "
        )
    };
}

/// The statements of `TokenStore::secrets_by_recent_use`: the working secrets ($1 is now) of
/// tokens neither revoked nor expired, after [`lookup_from!`]. Used tokens (latest use first),
/// then never used ones (newest first), each read backwards from `tokens_recent_use` (whose
/// condition is `revoked_at IS NULL`), from the first or after a cursor.
macro_rules! recent_use {
    ($($part:literal),+) => {
        concat!(
            "SELECT h.hash, ",
            lookup_from!(),
            "WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $1) \
             AND (h.valid_until IS NULL OR h.valid_until > $1) ",
            $($part),+
        )
    };
}

/// Used tokens, from the first; $2 is the limit.
const USED_FIRST: &str = recent_use!(
    "AND t.last_used_at IS NOT NULL ",
    "ORDER BY t.last_used_at DESC, t.created_at DESC, t.id DESC, h.hash DESC LIMIT $2"
);

/// Used tokens, after a used token's secret: its last use, creation, token id and hash, then
/// the limit.
const USED_AFTER: &str = recent_use!(
    "AND t.last_used_at IS NOT NULL \
     AND (t.last_used_at, t.created_at, t.id) <= ($2, $3, $4) \
     AND ((t.last_used_at, t.created_at, t.id) < ($2, $3, $4) OR h.hash < $5) ",
    "ORDER BY t.last_used_at DESC, t.created_at DESC, t.id DESC, h.hash DESC LIMIT $6"
);

/// Never used tokens, from the first; $2 is the limit.
const NEVER_USED_FIRST: &str = recent_use!(
    "AND t.last_used_at IS NULL ",
    "ORDER BY t.created_at DESC, t.id DESC, h.hash DESC LIMIT $2"
);

/// Never used tokens, after a never used token's secret: its creation, token id and hash, then
/// the limit.
const NEVER_USED_AFTER: &str = recent_use!(
    "AND t.last_used_at IS NULL AND (t.created_at, t.id) <= ($2, $3) \
     AND ((t.created_at, t.id) < ($2, $3) OR h.hash < $4) ",
    "ORDER BY t.created_at DESC, t.id DESC, h.hash DESC LIMIT $5"
);

/// A token by id in an open transaction, limited to `owner`'s when given; `lock` reads it
/// `FOR UPDATE`, so the state checked is the state the transaction then changes.
pub(super) async fn token_in(
    conn: &mut PgConnection,
    id: &TokenId,
    owner: Option<&UserId>,
    lock: bool,
) -> StoreResult<Option<TokenRecord>> {
    let sql = if lock {
        concat!(
            "SELECT ",
            token_columns!(),
            token_from!(),
            "WHERE t.id = $1 AND ($2::text IS NULL OR t.owner = $2) FOR UPDATE OF t"
        )
    } else {
        concat!(
            "SELECT ",
            token_columns!(),
            token_from!(),
            "WHERE t.id = $1 AND ($2::text IS NULL OR t.owner = $2)"
        )
    };
    let row = sqlx::query(sql)
        .bind(id.as_str())
        .bind(owner.map(UserId::as_str))
        .fetch_optional(conn)
        .await
        .map_err(db_error)?;
    row.as_ref().map(rows::token).transpose()
}

pub(super) async fn insert_token_row(
    conn: &mut PgConnection,
    token: &TokenRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tokens (id, owner, name, scopes, hint, created_at, expires_at, regenerated_at, \
         last_used_at, last_used_ip, revoked_at, revoked_by, revoke_reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
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
    .execute(&mut *conn)
    .await
    .map_err(|e| insert_error(e, || format!("token {}", token.id)))?;
    // `remaining` and `refilled_at` exist only with the limits they count for.
    if !token.limits.is_empty() {
        write_limits(conn, &token.id, &LimitColumns::of(token), 0).await?;
    }
    Ok(())
}

/// Sets `id`'s limits to `limits`, with the next version and the rate window restarted: a
/// first row (at `first_version`) for a token that had none.
async fn write_limits(
    conn: &mut PgConnection,
    id: &TokenId,
    limits: &LimitColumns,
    first_version: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO token_limits (token_id, allowed_ips, max_uses, remaining, refill_amount, \
         refill_every, refilled_at, rate_requests, rate_per, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (token_id) DO UPDATE SET allowed_ips = $2, max_uses = $3, remaining = $4, \
         refill_amount = $5, refill_every = $6, refilled_at = $7, rate_requests = $8, \
         rate_per = $9, rate_window = NULL, rate_spent = NULL, \
         version = token_limits.version + 1",
    )
    .bind(id.as_str())
    .bind(limits.allowed_ips.as_deref())
    .bind(limits.max_uses)
    .bind(limits.remaining)
    .bind(limits.refill_amount)
    .bind(limits.refill_every)
    .bind(limits.refilled_at)
    .bind(limits.rate_requests)
    .bind(limits.rate_per)
    .bind(first_version)
    .execute(conn)
    .await
    .map_err(|e| insert_error(e, || format!("limits of token {id}")))?;
    Ok(())
}

pub(super) async fn insert_hash_row(conn: &mut PgConnection, hash: &HashRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO token_hashes (hash, token_id, key_id, created_at, valid_until) \
         VALUES ($1, $2, $3, $4, $5)",
    )
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

/// Active tokens with a working secret, per key id of the secret, at `$1`.
const ACTIVE_BY_KEY: &str = "SELECT k.key_id, count(DISTINCT t.id) FROM token_hashes k \
     JOIN tokens t ON t.id = k.token_id \
     WHERE t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $1) \
     AND (k.valid_until IS NULL OR k.valid_until > $1) \
     GROUP BY k.key_id ORDER BY k.key_id";

/// For each token (of `$1` when not null) not revoked, the end of its latest previous secret
/// still working at `$2` (a current secret's `valid_until` is null, so never matches).
const OLD_SECRETS_UNTIL: &str = "SELECT h.token_id, max(h.valid_until) AS until FROM token_hashes h \
     JOIN tokens t ON t.id = h.token_id \
     WHERE ($1::text IS NULL OR t.owner = $1) AND t.revoked_at IS NULL AND h.valid_until > $2 \
     GROUP BY h.token_id ORDER BY h.token_id";

/// The conditions of a [`TokenFilter`] on `tokens`, as `$1` to `$8` (see [`bind_filter`]); a
/// condition whose parameter is null holds for every row.
macro_rules! matches_filter {
    () => {
        "revoked_at IS NULL \
     AND ($1::text IS NULL OR owner = $1) \
     AND ($2::bigint IS NULL OR created_at < $2) \
     AND ($3::bigint IS NULL OR created_at > $3) \
     AND ($4::bigint IS NULL OR last_used_at IS NULL OR last_used_at < $4) \
     AND ($5::text IS NULL OR strpos(' ' || scopes || ' ', $5) > 0 \
          OR strpos(' ' || scopes || ' ', $6::text) > 0 \
          OR strpos(' ' || scopes || ' ', $7::text) > 0 \
          OR strpos(' ' || scopes || ' ', $8::text) > 0)"
    };
}

/// Binds `filter` as `$1` to `$8` of [`matches_filter`].
fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    filter: &'q TokenFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
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
/// Drops the secrets of token `$1` whose grace period ended by `$2`, except the newest
/// `$3` replaced secrets (`RETIRED_SECRETS_KEPT`); returns the dropped hashes.
const DROP_RETIRED: &str = "DELETE FROM token_hashes \
     WHERE token_id = $1 AND valid_until IS NOT NULL AND valid_until <= $2 \
     AND hash NOT IN (SELECT hash FROM token_hashes WHERE token_id = $1 \
         AND valid_until IS NOT NULL ORDER BY created_at DESC, hash DESC LIMIT $3) \
     RETURNING hash";

#[async_trait]
impl TokenStore for PgStore {
    async fn insert_token(
        &self,
        token: &TokenRecord,
        hash: &StoredHash,
        audit: &AuditEvent,
        max_per_user: Option<u32>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        if let Some(cap) = max_per_user {
            // The owner's row lock makes creations for one user take turns, on every instance:
            // two cannot both count one below the cap.
            sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
                .bind(token.owner.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let live: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tokens WHERE owner = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
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
        let seq = log_token_hashes(&mut tx, &token.id, token.created_at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await
    }

    async fn token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
    ) -> StoreResult<Option<TokenRecord>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        token_in(&mut conn, id, owner, false).await
    }

    async fn list_tokens(
        &self,
        owner: Option<&UserId>,
        page: &Page,
    ) -> StoreResult<Vec<TokenRecord>> {
        // One static statement per shape, so each uses its index instead of a catch-all plan.
        let query = match (owner, &page.after) {
            (Some(owner), Some(after)) => sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                token_from!(),
                "WHERE t.owner = $1 AND t.id < $2 ORDER BY t.id DESC LIMIT $3"
            ))
            .bind(owner.as_str())
            .bind(after.as_str()),
            (Some(owner), None) => sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                token_from!(),
                "WHERE t.owner = $1 ORDER BY t.id DESC LIMIT $2"
            ))
            .bind(owner.as_str()),
            (None, Some(after)) => sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                token_from!(),
                "WHERE t.id < $1 ORDER BY t.id DESC LIMIT $2"
            ))
            .bind(after.as_str()),
            (None, None) => sqlx::query(concat!(
                "SELECT ",
                token_columns!(),
                token_from!(),
                "ORDER BY t.id DESC LIMIT $1"
            )),
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
        let mut tx = self.begin().await?;
        let row = sqlx::query(returning_token!(
            "UPDATE tokens SET name = $3 WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"
        ))
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
        let mut tx = self.begin().await?;
        let mut token = token_in(&mut tx, id, owner, true)
            .await?
            .ok_or(StoreError::NotFound)?;
        if token.revoked_at.is_some() {
            return Err(StoreError::InvalidState("the token is revoked"));
        }
        token.limits = limits.clone();
        token.remaining = limits.max_uses;
        token.refilled_at = limits.refill.map(|_| at);
        // A token without limits so far had version 0: its first are version 1.
        write_limits(&mut tx, id, &LimitColumns::of(&token), 1).await?;
        // Every cache holding one of its secrets must judge by the new limits.
        let seq = log_token_hashes(&mut tx, id, at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await?;
        Ok(token)
    }

    async fn lease_uses(
        &self,
        id: &TokenId,
        now: i64,
        size: LeaseSize,
    ) -> StoreResult<Option<Lease>> {
        let mut tx = self.begin().await?;
        // The row lock makes leases of one token take turns across instances.
        let row: Option<(Option<i64>, Option<i64>, Option<i64>, Option<i64>, i64)> =
            sqlx::query_as(
                "SELECT remaining, refill_amount, refill_every, refilled_at, version \
                 FROM token_limits WHERE token_id = $1 FOR UPDATE",
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
        sqlx::query("UPDATE token_limits SET remaining = $2, refilled_at = $3 WHERE token_id = $1")
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
        sqlx::query(
            "UPDATE token_limits SET remaining = remaining + $4 WHERE token_id = $1 \
             AND remaining IS NOT NULL AND version = $2 AND coalesce(refilled_at, 0) = $3",
        )
        .bind(id.as_str())
        .bind(version)
        .bind(period_start)
        .bind(i64::try_from(uses).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn lease_rate(
        &self,
        id: &TokenId,
        now: i64,
        size: LeaseSize,
    ) -> StoreResult<Option<Lease>> {
        let mut tx = self.begin().await?;
        let row: Option<(Option<i64>, Option<i64>, Option<i64>, Option<i64>, i64)> =
            sqlx::query_as(
                "SELECT rate_requests, rate_per, rate_window, rate_spent, version \
                 FROM token_limits WHERE token_id = $1 FOR UPDATE",
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
        sqlx::query(
            "UPDATE token_limits SET rate_window = $2, rate_spent = $3 WHERE token_id = $1",
        )
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
        let mut tx = self.begin().await?;
        // The row stays locked until commit, so this check and the writes below see one state.
        let current = token_in(&mut tx, id, owner, true)
            .await?
            .ok_or(StoreError::NotFound)?;
        match current.state(regen.at) {
            TokenState::Active => {}
            TokenState::Revoked => return Err(StoreError::InvalidState("token is revoked")),
            TokenState::Expired => return Err(StoreError::InvalidState("token has expired")),
        }
        sqlx::query(
            "UPDATE token_hashes SET valid_until = least(coalesce(valid_until, $2), $2) WHERE token_id = $1",
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
        let row = sqlx::query(returning_token!(
            "UPDATE tokens SET hint = $2, expires_at = $3, regenerated_at = $4 WHERE id = $1"
        ))
        .bind(id.as_str())
        .bind(regen.new_hint.as_str())
        .bind(regen.new_expires_at.map(unix))
        .bind(unix(regen.at))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let token = rows::token(&row)?;
        let seq = log_token_hashes(&mut tx, id, regen.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await?;
        Ok(token)
    }

    async fn revoke_token(
        &self,
        id: &TokenId,
        owner: Option<&UserId>,
        revocation: &Revocation,
        audit: &AuditEvent,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.begin().await?;
        // A concurrent revocation holds the row until it commits; this statement then re-checks
        // `revoked_at` on the committed row and updates nothing.
        let row = sqlx::query(returning_token!(
            "UPDATE tokens SET revoked_at = $3, revoked_by = $4, revoke_reason = $5 \
             WHERE id = $1 AND ($2::text IS NULL OR owner = $2) AND revoked_at IS NULL"
        ))
        .bind(id.as_str())
        .bind(owner.map(UserId::as_str))
        .bind(unix(revocation.at))
        .bind(revocation.by.as_str())
        .bind(revocation.reason.as_deref())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            // Not updated: either not the caller's (or no such token), or already revoked, and
            // a revocation is final, so the answer cannot change before we give it.
            let existing = token_in(&mut tx, id, owner, false).await?;
            return existing.ok_or(StoreError::NotFound);
        };
        let token = rows::token(&row)?;
        let seq = log_token_hashes(&mut tx, id, revocation.at).await?;
        insert_audit(&mut tx, audit).await?;
        self.commit_and_announce(tx, seq).await?;
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
            " AND ($9::text IS NULL OR id > $9) ORDER BY id LIMIT $10"
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
        let sql = returning_token!(concat!(
            "UPDATE tokens SET revoked_at = $10, revoked_by = $11, revoke_reason = $12 ",
            "WHERE id = $9 AND ",
            matches_filter!()
        ));
        let mut tx = self.begin().await?;
        let mut revoked = Vec::new();
        let mut last_seq = None;
        for id in ids {
            // A concurrent revocation holds the row until it commits; the statement then
            // re-checks the conditions on the committed row and updates nothing.
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
            last_seq = Some(log_token_hashes(&mut tx, id, revocation.at).await?);
            for event in audit_for(audit, &token) {
                insert_audit(&mut tx, &event).await?;
            }
            revoked.push(token);
        }
        match last_seq {
            Some(seq) => self.commit_and_announce(tx, seq).await?,
            None => tx.commit().await.map_err(db_error)?,
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
        let found = sqlx::query(concat!("SELECT ", lookup_from!(), "WHERE h.hash = $1"))
            .bind(hash.0.to_vec())
            .fetch_optional(&self.pool);
        let row = bounded(async { found.await.map_err(db_error) }).await?;
        row.as_ref().map(rows::lookup).transpose()
    }

    async fn stored_hashes(
        &self,
        after: Option<&TokenHash>,
        limit: u32,
    ) -> StoreResult<Vec<TokenHash>> {
        let limit = i64::from(limit);
        let query = match after {
            Some(after) => {
                sqlx::query("SELECT hash FROM token_hashes WHERE hash > $1 ORDER BY hash LIMIT $2")
                    .bind(after.0.to_vec())
                    .bind(limit)
            }
            None => sqlx::query("SELECT hash FROM token_hashes ORDER BY hash LIMIT $1").bind(limit),
        };
        let rows = query.fetch_all(&self.pool);
        let rows = bounded(async { rows.await.map_err(db_error) }).await?;
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
            None => Some(
                sqlx::query(USED_FIRST)
                    .bind(unix(now))
                    .bind(i64::from(limit)),
            ),
            Some(after) => after.last_used.map(|last_used| {
                sqlx::query(USED_AFTER)
                    .bind(unix(now))
                    .bind(last_used)
                    .bind(after.created)
                    .bind(after.token.as_str())
                    .bind(after.hash.0.to_vec())
                    .bind(i64::from(limit))
            }),
        };
        if let Some(used) = used {
            page = decode_secrets(&used.fetch_all(&self.pool).await.map_err(db_error)?)?;
        }
        let left = limit.saturating_sub(u32::try_from(page.len()).unwrap_or(u32::MAX));
        if left > 0 {
            let never_used = match after {
                Some(after) if after.last_used.is_none() => sqlx::query(NEVER_USED_AFTER)
                    .bind(unix(now))
                    .bind(after.created)
                    .bind(after.token.as_str())
                    .bind(after.hash.0.to_vec())
                    .bind(i64::from(left)),
                _ => sqlx::query(NEVER_USED_FIRST)
                    .bind(unix(now))
                    .bind(i64::from(left)),
            };
            let found = never_used.fetch_all(&self.pool).await.map_err(db_error)?;
            page.extend(decode_secrets(&found)?);
        }
        Ok(page)
    }

    /// None: PostgreSQL keeps no order of its tokens that it reads cheaper than
    /// [`Self::secrets_by_recent_use`]'s index (the heap has no stable position to page by, and
    /// an order by id visits the heap as randomly), so its warm-up reads by recent use only.
    async fn secrets_in_store_order(
        &self,
        _now: OffsetDateTime,
        _after: Option<&StoreOrderCursor>,
        _limit: u32,
        _at_most: u64,
    ) -> StoreResult<Option<StoreOrderPage>> {
        Ok(None)
    }

    async fn record_usage(&self, batch: &[Usage]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = batch.iter().map(|u| u.token_id.as_str()).collect();
        let ats: Vec<i64> = batch.iter().map(|u| unix(u.at)).collect();
        let ips: Vec<Option<String>> = batch
            .iter()
            .map(|u| u.ip.map(|ip| ip.to_string()))
            .collect();
        let mut tx = self.begin().await?;
        // Lock the rows in id order first: instances flushing overlapping batches then wait for
        // each other instead of deadlocking.
        sqlx::query("SELECT 1 FROM tokens WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        // One row per token: its latest use in the batch (the later entry on a tie, as if the
        // batch were applied in order). Another instance may hold a later use; a use only moves
        // forward.
        sqlx::query(
            "WITH batch AS ( \
                 SELECT DISTINCT ON (id) id, at, ip \
                 FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY AS u (id, at, ip, ord) \
                 ORDER BY id, at DESC, ord DESC) \
             UPDATE tokens t SET last_used_at = b.at, last_used_ip = b.ip FROM batch b \
             WHERE t.id = b.id AND (t.last_used_at IS NULL OR t.last_used_at <= b.at)",
        )
        .bind(&ids)
        .bind(&ats)
        .bind(&ips)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }
    async fn rekey_secret(
        &self,
        old: &TokenHash,
        new: &StoredHash,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let moved: Option<String> = sqlx::query_scalar(
            "UPDATE token_hashes SET hash = $2, key_id = $3 WHERE hash = $1 RETURNING token_id",
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
        let seq = log_token_hashes(&mut tx, &token, at).await?;
        self.commit_and_announce(tx, seq).await?;
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
fn decode_secrets(found: &[sqlx::postgres::PgRow]) -> StoreResult<Vec<(TokenHash, Lookup)>> {
    found
        .iter()
        .map(|row| Ok((rows::hash(row, "hash")?, rows::lookup(row)?)))
        .collect()
}
