-- Users join the platform: a kind (person or service account), the platform's own id for
-- them, an email address, and deletion for good. A deleted user's row stays (their revoked
-- tokens and the audit trail still name the id); its name becomes the lowercased id, which no
-- new name may be, so the name is free again and the id is never reused.

ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'person'
    CHECK (kind IN ('person', 'service'));
ALTER TABLE users ADD COLUMN external_id TEXT COLLATE "C";
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN deleted_at BIGINT;

CREATE UNIQUE INDEX users_external_id ON users (external_id);
