-- The outbox: one row per event (a change a platform reacts to), written in the same
-- transaction as the change and its audit entry. AUTOINCREMENT so a sequence number is never
-- reused: readers page by it.
CREATE TABLE events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT    NOT NULL UNIQUE,
    type     TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    token_id TEXT,
    user_id  TEXT,
    data     TEXT    NOT NULL
) STRICT;

-- How far each webhook (by URL) has turned events into deliveries.
CREATE TABLE webhook_cursors (
    webhook TEXT    NOT NULL PRIMARY KEY,
    seq     INTEGER NOT NULL
) STRICT;

-- One row per event a webhook subscribes to: pending until delivered, or failed once its
-- retries ran out. A pending row is leased by the instance sending it (`lease_owner` until
-- `lease_until`); an expired lease is taken over.
CREATE TABLE webhook_deliveries (
    webhook         TEXT    NOT NULL,
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    ordering_key    TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    finished_at     INTEGER,
    PRIMARY KEY (webhook, event_seq)
) STRICT;

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook, ordering_key, event_seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_seq ON webhook_deliveries (event_seq);
