-- Subscriptions. Listed in creation order, hence the (created_at, id) index for keyset paging.
CREATE TABLE subscriptions (
    id                    TEXT PRIMARY KEY NOT NULL,
    target_url            TEXT NOT NULL,
    secret                TEXT,
    previous_secret       TEXT,
    previous_secret_until INTEGER,
    event_types           TEXT NOT NULL,
    description           TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX subscriptions_by_creation ON subscriptions (created_at, id);

-- The queue: one row per accepted webhook. status: 1 pending, 2 delivered, 3 failed.
-- next_attempt_at is the due time of a pending row, or its lease expiry while a node holds it.
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    subscription_id TEXT NOT NULL,
    event_type      TEXT,
    payload         BLOB NOT NULL,
    status          INTEGER NOT NULL,
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_owner     TEXT,
    lease_token     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
-- Claiming: due pending rows, earliest first. Partial, so finished rows cost nothing here; it also
-- serves deleting a subscription (which ends its pending rows). No other index: every index is paid
-- for on each ingest and attempt. Retention needs none: delivery ids begin with their creation time
-- (UUIDv7), and log cursors grow with time, so both purge by primary-key range.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 1;

-- The delivery log: every queued webhook and every attempt. cursor orders events for watchers;
-- AUTOINCREMENT so that a cursor is never reused after a purge. kind: 1 queued, 2 attempt.
CREATE TABLE delivery_log (
    cursor          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            INTEGER NOT NULL,
    delivery_id     TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    event_type      TEXT,
    status          INTEGER NOT NULL,
    logged_at       INTEGER NOT NULL,
    attempt_number  INTEGER,
    outcome         INTEGER,
    target_url      TEXT,
    http_status     INTEGER,
    error           TEXT,
    duration_us     INTEGER,
    node_id         TEXT,
    next_attempt_at INTEGER
);
-- GetDelivery: a delivery's history in order.
CREATE INDEX delivery_log_by_delivery ON delivery_log (delivery_id, cursor);
-- ListDeliveryAttempts: a subscription's attempts, newest first.
CREATE INDEX delivery_log_attempts_by_subscription ON delivery_log (subscription_id, cursor) WHERE kind = 2;
