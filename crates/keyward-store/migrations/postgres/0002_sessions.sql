-- Web sign-in sessions. Only a keyed hash of each session id is kept, so a copy of the
-- database cannot be used to take over a session.
CREATE TABLE sessions (
    id_hash      BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);

-- One-time form nonces: a form that creates or regenerates a token acts once, however often
-- the browser re-sends it (a reload of the page that shows the new secret).
CREATE TABLE form_nonces (
    session_hash BYTEA  NOT NULL REFERENCES sessions (id_hash) ON DELETE CASCADE,
    nonce        TEXT   NOT NULL,
    used_at      BIGINT NOT NULL,
    PRIMARY KEY (session_hash, nonce)
);
