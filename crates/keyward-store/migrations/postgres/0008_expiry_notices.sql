-- Expiry reminders (`notify_before`) and the expiry notice itself, each recorded once per token
-- and expiry: the row is inserted in the same transaction as its audit event, and a second
-- instance's insert of the same row does nothing (ON CONFLICT DO NOTHING waits for the first to
-- commit), so no notice is sent twice. Keyed by the expiry too, so a regeneration that moves it
-- starts the reminders afresh. No foreign key, like the audit trail.
CREATE TABLE token_notices (
    token_id   TEXT COLLATE "C" NOT NULL,
    -- A threshold as configured ("7d", "1d"), or "expired".
    notice     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (token_id, notice, expires_at)
);

-- The reminder scan reads tokens by expiry, only those that can still be reminded.
CREATE INDEX tokens_expires_at ON tokens (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
