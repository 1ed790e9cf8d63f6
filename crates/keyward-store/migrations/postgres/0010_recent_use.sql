-- Warming a verification cache at start-up reads the working secrets of live tokens, most
-- recently used first, then those never used (newest first), page by page. Read backwards, this
-- index gives both orders, each page a range after the previous page's last token, so every page
-- costs the same. Only tokens not revoked, as the reader asks. An index, no column: `tokens` is
-- read with `SELECT *` by the previous release (see the README's "Upgrading").
CREATE INDEX tokens_recent_use ON tokens (last_used_at, created_at, id) WHERE revoked_at IS NULL;
