-- The limits a token carries (issue 14): where it may be used from, how many times, how fast.
-- A table of their own, one row per token that ever had limits, not columns added to `tokens`:
-- the previous release, still serving from this database during a rolling upgrade, reads
-- `tokens` with `SELECT *` in prepared statements, and PostgreSQL refuses those ("cached plan
-- must not change result type") once the table's columns change. A token without a row here
-- has no limits, so existing tokens keep working as they did.
CREATE TABLE token_limits (
    token_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES tokens (id),
    allowed_ips   TEXT,    -- CIDR ranges, space-separated
    max_uses      BIGINT,
    -- Uses not yet handed out: instances lease a share of them and spend it in memory, so a
    -- use is counted once however many instances verify. Set back to refill_amount every
    -- refill_every seconds; refilled_at is the start of the current period.
    remaining     BIGINT,
    refill_amount BIGINT,
    refill_every  BIGINT,
    refilled_at   BIGINT,
    -- At most rate_requests successful verifications per window of rate_per seconds (windows
    -- aligned to the unix epoch). rate_window is the start of the window rate_spent counts
    -- in: what instances have leased of it.
    rate_requests BIGINT,
    rate_per      BIGINT,
    rate_window   BIGINT,
    rate_spent    BIGINT,
    -- Bumped whenever the limits are set: leases of an older version are dropped, never
    -- returned.
    version       BIGINT NOT NULL DEFAULT 0
);
