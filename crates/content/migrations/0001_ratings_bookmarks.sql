-- Ratings, their per-film aggregates, bookmarks, and the outbox of events.
-- One text for SQLite and PostgreSQL: ids are text, times are Unix milliseconds (BIGINT).

CREATE TABLE ratings (
    user_id    TEXT   NOT NULL,
    film_id    TEXT   NOT NULL,
    score      BIGINT NOT NULL CHECK (score BETWEEN 0 AND 10),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, film_id)
);
-- "My ratings, latest first", keyset-paginated.
CREATE INDEX ratings_by_user_time ON ratings (user_id, updated_at, film_id);

-- Kept in the transaction of every rating change, so a film's summary never scans.
-- s0..s10: how many viewers gave each score.
CREATE TABLE film_ratings (
    film_id TEXT PRIMARY KEY,
    count   BIGINT NOT NULL DEFAULT 0,
    total   BIGINT NOT NULL DEFAULT 0,
    s0 BIGINT NOT NULL DEFAULT 0, s1 BIGINT NOT NULL DEFAULT 0, s2 BIGINT NOT NULL DEFAULT 0,
    s3 BIGINT NOT NULL DEFAULT 0, s4 BIGINT NOT NULL DEFAULT 0, s5 BIGINT NOT NULL DEFAULT 0,
    s6 BIGINT NOT NULL DEFAULT 0, s7 BIGINT NOT NULL DEFAULT 0, s8 BIGINT NOT NULL DEFAULT 0,
    s9 BIGINT NOT NULL DEFAULT 0, s10 BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE bookmarks (
    user_id    TEXT   NOT NULL,
    film_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, film_id)
);
CREATE INDEX bookmarks_by_user_time ON bookmarks (user_id, created_at, film_id);

-- Events committed with their change, relayed to the log afterwards. The event id is
-- fixed here, so a relay that appends and then crashes before deleting re-sends the same
-- id, which the loader drops as a repeat.
CREATE TABLE outbox (
    event_id TEXT PRIMARY KEY,
    user_id  TEXT NOT NULL,
    payload  TEXT NOT NULL
);
