-- keyward's SQLite schema. Times are unix seconds (the service truncates to whole seconds), IP
-- addresses are text, scopes are space-separated text. STRICT tables refuse a value of the wrong
-- type, so a row that decodes badly was not written by keyward.

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    is_admin      INTEGER NOT NULL CHECK (is_admin IN (0, 1)),
    -- Argon2id PHC string; NULL for users who never sign in with a password.
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    disabled_at   INTEGER
) STRICT;

CREATE TABLE tokens (
    id             TEXT    NOT NULL PRIMARY KEY,
    owner          TEXT    NOT NULL REFERENCES users (id),
    name           TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    hint           TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    regenerated_at INTEGER,
    last_used_at   INTEGER,
    last_used_ip   TEXT,
    revoked_at     INTEGER,
    revoked_by     TEXT,
    revoke_reason  TEXT
) STRICT;

-- Token ids are ULIDs, so (owner, id) serves "this owner's tokens, newest first" from the index.
CREATE INDEX tokens_owner_id ON tokens (owner, id);

-- Only keyed hashes of secrets, never the secrets. A token has one current hash (valid_until NULL)
-- and, after regenerations, older ones that stop working at valid_until.
CREATE TABLE token_hashes (
    hash        BLOB    NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    token_id    TEXT    NOT NULL REFERENCES tokens (id),
    key_id      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    valid_until INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX token_hashes_token ON token_hashes (token_id);
-- A token never has two current secrets.
CREATE UNIQUE INDEX token_hashes_one_current ON token_hashes (token_id) WHERE valid_until IS NULL;

-- Append-only; no foreign keys, so the trail never depends on what else exists.
CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    actor_user   TEXT,
    actor_token  TEXT,
    actor_label  TEXT    NOT NULL,
    subject_user TEXT,
    token_id     TEXT,
    ip           TEXT,
    detail       TEXT
) STRICT;

CREATE INDEX audit_events_subject_seq ON audit_events (subject_user, seq);

-- Hashes whose verification answer changed, for other processes' caches. AUTOINCREMENT so a
-- sequence number is never reused after pruning.
CREATE TABLE changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB    NOT NULL,
    at   INTEGER NOT NULL
) STRICT;

CREATE INDEX changes_at ON changes (at);

-- One row: the highest sequence number pruned from `changes`. A cursor below it has missed
-- changes, and its cache must start over.
CREATE TABLE change_log (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
) STRICT;

INSERT INTO change_log (id, pruned_through) VALUES (1, 0);
