-- The attempts index is keyed by a small number per subscription instead of its 36-character id:
-- about three and a half times as many entries fit on a page, so an index step with attempts for
-- many subscriptions writes that many fewer pages. The number is an explicit INTEGER PRIMARY KEY,
-- which VACUUM keeps (an implicit rowid it may change). A key is never reused: rows stay after their
-- subscription is deleted, as the old index kept the id, so a recreated id finds its key again.
CREATE TABLE subscription_keys (
    key             INTEGER PRIMARY KEY,
    subscription_id TEXT NOT NULL UNIQUE
);

INSERT INTO subscription_keys (subscription_id)
SELECT DISTINCT subscription_id FROM subscription_attempts ORDER BY subscription_id;

CREATE TABLE subscription_attempts_by_key (
    subscription_key INTEGER NOT NULL,
    cursor           INTEGER NOT NULL,
    PRIMARY KEY (subscription_key, cursor)
) WITHOUT ROWID;

INSERT INTO subscription_attempts_by_key (subscription_key, cursor)
SELECT k.key, a.cursor FROM subscription_attempts AS a JOIN subscription_keys AS k USING (subscription_id)
ORDER BY k.key, a.cursor;

DROP TABLE subscription_attempts;
ALTER TABLE subscription_attempts_by_key RENAME TO subscription_attempts;
