-- Same schema as the SQLite backend; see its migration for the reasoning behind each index.
-- Times are milliseconds since the Unix epoch on the database's clock.
CREATE TABLE subscriptions (
    id                    TEXT PRIMARY KEY,
    target_url            TEXT NOT NULL,
    secret                TEXT,
    previous_secret       TEXT,
    previous_secret_until BIGINT,
    event_types           TEXT NOT NULL,
    description           TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX subscriptions_by_creation ON subscriptions (created_at, id);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    event_type      TEXT,
    payload         BYTEA NOT NULL,
    status          BIGINT NOT NULL,
    attempt_count   BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner     TEXT,
    lease_token     BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 1;

-- cursor values are assigned under a transaction-level advisory lock held until commit, so that they
-- become visible in cursor order on every node (see the store's commit).
CREATE TABLE delivery_log (
    cursor          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            BIGINT NOT NULL,
    delivery_id     TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    event_type      TEXT,
    status          BIGINT NOT NULL,
    logged_at       BIGINT NOT NULL,
    attempt_number  BIGINT,
    outcome         BIGINT,
    target_url      TEXT,
    http_status     BIGINT,
    error           TEXT,
    duration_us     BIGINT,
    node_id         TEXT,
    next_attempt_at BIGINT
);
CREATE INDEX delivery_log_by_delivery ON delivery_log (delivery_id, cursor);
CREATE INDEX delivery_log_attempts_by_subscription ON delivery_log (subscription_id, cursor) WHERE kind = 2;
