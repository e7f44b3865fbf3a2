-- Same change as the SQLite backend's 0002: payloads move from the queue, whose rows are updated on
-- every attempt, to the `Queued` entries of the delivery log, which are written once. Retention keeps
-- the `Queued` entry of every pending delivery.
ALTER TABLE delivery_log ADD COLUMN payload BYTEA;

INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at, payload)
SELECT 1, d.id, d.subscription_id, d.event_type, 1, d.created_at, d.payload
FROM deliveries AS d
WHERE d.status = 1
  AND NOT EXISTS (SELECT 1 FROM delivery_log AS l WHERE l.delivery_id = d.id AND l.kind = 1)
ORDER BY d.id;

UPDATE delivery_log AS l
SET payload = d.payload
FROM deliveries AS d
WHERE d.id = l.delivery_id AND l.kind = 1 AND l.payload IS NULL;

ALTER TABLE deliveries DROP COLUMN payload;
