-- A token's secrets with their validity, by token: the start-up warm-up reads each token's
-- working secrets beside the token (in the order the table keeps its tokens) from this index
-- alone, never visiting token_hashes' rows, which are kept in hash order, one random page read
-- per secret. It serves every lookup by token the index it replaces served.
CREATE INDEX token_hashes_token_validity ON token_hashes (token_id, valid_until, created_at);
DROP INDEX token_hashes_token;
