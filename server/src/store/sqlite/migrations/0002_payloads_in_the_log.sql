-- Payloads move from the queue to the `Queued` entries of the delivery log (kind 1), which are written
-- once and never changed. A delivery's row is updated on every attempt; with its payload beside it,
-- each update rewrote the payload's page as well, and the write-ahead log carried every payload twice.
-- Without it the queue's rows are small, so they are stored clustered by id (no separate rowid tree).
-- Retention keeps the `Queued` entry of every pending delivery, so a retry always finds its payload.
ALTER TABLE delivery_log ADD COLUMN payload BLOB;

-- A pending delivery whose `Queued` entry retention has already removed gets it back.
INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at, payload)
SELECT 1, d.id, d.subscription_id, d.event_type, 1, d.created_at, d.payload
FROM deliveries AS d
WHERE d.status = 1
  AND NOT EXISTS (SELECT 1 FROM delivery_log AS l WHERE l.delivery_id = d.id AND l.kind = 1)
ORDER BY d.id;

UPDATE delivery_log
SET payload = (SELECT d.payload FROM deliveries AS d WHERE d.id = delivery_log.delivery_id)
WHERE kind = 1 AND payload IS NULL;

CREATE TABLE deliveries_clustered (
    id              TEXT PRIMARY KEY NOT NULL,
    subscription_id TEXT NOT NULL,
    event_type      TEXT,
    status          INTEGER NOT NULL,
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_owner     TEXT,
    lease_token     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
) WITHOUT ROWID;
INSERT INTO deliveries_clustered
SELECT id, subscription_id, event_type, status, attempt_count, next_attempt_at, lease_owner, lease_token,
       created_at, finished_at
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_clustered RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 1;
