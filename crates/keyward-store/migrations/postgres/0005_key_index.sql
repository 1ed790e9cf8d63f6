-- Which server key hashed each secret, indexed: a server that does not hold the key of an
-- active token must know at once (it refuses to start, and /readyz fails), and the check reads
-- only the hashes under other keys (two range scans around the server's own key id).

CREATE INDEX token_hashes_key ON token_hashes (key_id);
