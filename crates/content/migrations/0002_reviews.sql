-- Reviews (one per user and film) with their like and dislike counts, kept in the
-- transaction of every vote, and the votes themselves.

CREATE TABLE reviews (
    review_id  TEXT   PRIMARY KEY,
    film_id    TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    text       TEXT   NOT NULL,
    likes      BIGINT NOT NULL DEFAULT 0,
    dislikes   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (user_id, film_id)
);
CREATE INDEX reviews_by_film_time ON reviews (film_id, created_at, review_id);
CREATE INDEX reviews_by_user_time ON reviews (user_id, created_at, review_id);

CREATE TABLE review_votes (
    review_id TEXT   NOT NULL,
    user_id   TEXT   NOT NULL,
    value     BIGINT NOT NULL CHECK (value IN (-1, 1)),
    PRIMARY KEY (review_id, user_id)
);
