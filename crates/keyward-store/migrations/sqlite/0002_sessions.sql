-- Web sign-in sessions. Only a keyed hash of each session id is kept, so a copy of the
-- database cannot be used to take over a session.
CREATE TABLE sessions (
    id_hash      BLOB    NOT NULL PRIMARY KEY CHECK (length(id_hash) = 32),
    user_id      TEXT    NOT NULL REFERENCES users (id),
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);

-- One-time form nonces: a form that creates or regenerates a token acts once, however often
-- the browser re-sends it (a reload of the page that shows the new secret).
CREATE TABLE form_nonces (
    session_hash BLOB    NOT NULL REFERENCES sessions (id_hash) ON DELETE CASCADE,
    nonce        TEXT    NOT NULL,
    used_at      INTEGER NOT NULL,
    PRIMARY KEY (session_hash, nonce)
) STRICT, WITHOUT ROWID;
