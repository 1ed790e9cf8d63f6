-- People who sign in through an OpenID provider. The provider's (issuer, subject) pair names a
-- person for good (their name or email address there may change), and is linked to one user.
CREATE TABLE user_identities (
    issuer     TEXT COLLATE "C" NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);

CREATE INDEX user_identities_user ON user_identities (user_id);

-- How a session was signed in: NULL for a password, else the issuer of the OpenID provider.
ALTER TABLE sessions ADD COLUMN signed_in_with TEXT;
