-- The outbox: one row per event (a change a platform reacts to), written in the same
-- transaction as the change and its audit entry. A writer takes the change_log row lock before
-- it appends (as for `changes`), so sequence numbers become visible in order: a reader that
-- sees seq N has seen every event below it.
CREATE TABLE events (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id       TEXT COLLATE "C" NOT NULL UNIQUE,
    type     TEXT   NOT NULL,
    at       BIGINT NOT NULL,
    token_id TEXT COLLATE "C",
    user_id  TEXT COLLATE "C",
    data     TEXT   NOT NULL
);

-- How far each webhook (by URL) has turned events into deliveries.
CREATE TABLE webhook_cursors (
    webhook TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    seq     BIGINT NOT NULL
);

-- One row per event a webhook subscribes to: pending until delivered, or failed once its
-- retries ran out. A pending row is leased by the instance sending it (`lease_owner` until
-- `lease_until`); an expired lease is taken over.
CREATE TABLE webhook_deliveries (
    webhook         TEXT COLLATE "C" NOT NULL,
    event_seq       BIGINT  NOT NULL REFERENCES events (seq),
    ordering_key    TEXT COLLATE "C" NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    created_at      BIGINT  NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_attempt_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    finished_at     BIGINT,
    PRIMARY KEY (webhook, event_seq)
);

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook, ordering_key, event_seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_seq ON webhook_deliveries (event_seq);
