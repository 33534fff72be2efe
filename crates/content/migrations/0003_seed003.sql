-- What seed 003's clients (`/ugc_fastapi`) need beside the viewers' content: the film
-- records the cinema registers (a title and a description), an id for each rating (theirs
-- are addressed by id), and a review's optional title. The same text on SQLite and
-- PostgreSQL.

CREATE TABLE films (
    film_id     TEXT   PRIMARY KEY,
    title       TEXT   NOT NULL,
    description TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX films_by_time ON films (created_at, film_id);

-- A UUIDv5 of (user, film), set by every insert; rows older than this migration get
-- theirs at start (see `migrate`).
ALTER TABLE ratings ADD COLUMN rating_id TEXT;
CREATE UNIQUE INDEX ratings_by_id ON ratings (rating_id);
CREATE INDEX ratings_by_film ON ratings (film_id, updated_at, user_id);

ALTER TABLE reviews ADD COLUMN title TEXT;
CREATE INDEX reviews_by_time ON reviews (created_at, review_id);
