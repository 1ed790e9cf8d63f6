-- At most one row: the seal of the verification cache's snapshot that `keyward serve` wrote at
-- its last clean shutdown. The snapshot file carries the same seal; a file whose seal is not this
-- one (written for another database, for this one before a restore, or before a later shutdown)
-- is never loaded.
CREATE TABLE cache_seal (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seal BLOB    NOT NULL CHECK (length(seal) = 32)
) STRICT;
