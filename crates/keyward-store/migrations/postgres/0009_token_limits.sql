-- The limits a token carries (issue 14): where it may be used from, how many times, how fast.
-- All null for a token without limits, so existing tokens keep working as they did.
ALTER TABLE tokens ADD COLUMN allowed_ips   TEXT;   -- CIDR ranges, space-separated
ALTER TABLE tokens ADD COLUMN max_uses      BIGINT;
-- Uses not yet handed out: instances lease a share of them and spend it in memory, so a use
-- is counted once however many instances verify. Set back to refill_amount every refill_every
-- seconds; refilled_at is the start of the current period.
ALTER TABLE tokens ADD COLUMN remaining     BIGINT;
ALTER TABLE tokens ADD COLUMN refill_amount BIGINT;
ALTER TABLE tokens ADD COLUMN refill_every  BIGINT;
ALTER TABLE tokens ADD COLUMN refilled_at   BIGINT;
-- At most rate_requests successful verifications per window of rate_per seconds (windows
-- aligned to the unix epoch). rate_window is the start of the window rate_spent counts in:
-- what instances have leased of it.
ALTER TABLE tokens ADD COLUMN rate_requests BIGINT;
ALTER TABLE tokens ADD COLUMN rate_per      BIGINT;
ALTER TABLE tokens ADD COLUMN rate_window   BIGINT;
ALTER TABLE tokens ADD COLUMN rate_spent    BIGINT;
-- Bumped whenever the limits are set: leases of an older version are dropped, never returned.
ALTER TABLE tokens ADD COLUMN limits_version BIGINT NOT NULL DEFAULT 0;
