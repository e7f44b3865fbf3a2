-- Payloads move from the queue to the `Queued` entries of the delivery log (kind 1), which are written
-- once and never changed. A delivery's row is updated on every attempt; with its payload beside it,
-- each update rewrote the payload's page as well, and the write-ahead log carried every payload twice.
-- (The queue stays a rowid table with its key index: stored clustered by id instead, SQLite spent a
-- tenth of its commit time scanning its page cache at the end of each transaction.)
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

ALTER TABLE deliveries DROP COLUMN payload;
