-- A subscription's attempts, for ListDeliveryAttempts, are indexed behind the log instead of by every
-- commit. As an index on the log, (subscription_id, cursor) took each attempt's entry at its own
-- subscription's place, so with many subscriptions every attempt of a commit dirtied a page of its
-- own (measured: 10,000 subscriptions cost the store 60% more time per webhook than one). The store
-- now copies the new attempts here in sorted bulk, a bounded step at a time, and remembers how far
-- it got; a listing reads the entries after that point from the log itself, by cursor.
DROP INDEX delivery_log_attempts_by_subscription;

CREATE TABLE subscription_attempts (
    subscription_id TEXT NOT NULL,
    cursor          INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, cursor)
) WITHOUT ROWID;

-- One row: every attempt entry with a cursor up to indexed_through is in subscription_attempts.
CREATE TABLE subscription_attempts_progress (
    singleton       INTEGER PRIMARY KEY CHECK (singleton = 1),
    indexed_through INTEGER NOT NULL
);

INSERT INTO subscription_attempts (subscription_id, cursor)
SELECT subscription_id, cursor FROM delivery_log WHERE kind = 2 ORDER BY subscription_id, cursor;
INSERT INTO subscription_attempts_progress (singleton, indexed_through)
VALUES (1, coalesce((SELECT max(cursor) FROM delivery_log), 0));
