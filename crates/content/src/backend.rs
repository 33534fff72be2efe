// One implementation of the content store, compiled once per sqlx driver (see lib.rs):
// `Db` is the driver, `FOR_UPDATE` the row-lock clause where the database has one. The
// SQL is the same text on both (numbered `$N` parameters work on SQLite too).

use async_trait::async_trait;
use sqlx::{Pool, Row};
use ugc_model::{Envelope, Event, FilmId, ReviewId, ReviewText, Score, Timestamp, UserId, Vote};

use crate::{
    Bookmark, ContentError, ContentStore, Cursor, Film, Limit, Page, Rating, RatingSummary,
    Review, ReviewSort, ReviewsOf, UserRating, VoteSummary,
};

/// The content database. `writer` and `reader` are one pool on PostgreSQL. With
/// `group`, changes are queued to the one writer task and committed in groups.
#[derive(Clone)]
pub struct Store {
    writer: Pool<Db>,
    reader: Pool<Db>,
    group: Option<tokio::sync::mpsc::Sender<crate::group::Job<Conn>>>,
}

type Conn = <Db as sqlx::Database>::Connection;

fn film_key(f: FilmId) -> String {
    f.as_uuid().to_string()
}

fn film_of(s: &str) -> Result<FilmId, ContentError> {
    uuid::Uuid::parse_str(s)
        .map(FilmId::from)
        .map_err(|e| ContentError::Internal(format!("stored film id {s:?}: {e}")))
}

fn time_of(ms: i64) -> Result<Timestamp, ContentError> {
    Timestamp::from_millis(ms).map_err(|e| ContentError::Internal(format!("stored time {ms}: {e}")))
}

fn score_of(v: i64) -> Result<Score, ContentError> {
    Score::try_from(v).map_err(ContentError::Internal)
}

/// The sort key strictly before which the next page starts; no cursor: from the newest.
fn before(after: Option<Cursor>) -> (i64, String) {
    after.map_or((i64::MAX, String::new()), |c| (c.time, c.id))
}

/// Keeps `limit` items and makes the cursor of the last one when more were found.
fn paginate<T>(mut items: Vec<T>, limit: Limit, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let limit = limit.get() as usize;
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = more
        .then(|| items.last().map(|last| key(last).encode()))
        .flatten();
    Page { items, next_cursor }
}

/// Appends the change's event to the outbox, inside the change's transaction.
async fn record(
    tx: &mut Conn,
    user: &UserId,
    event: Event,
    now: Timestamp,
) -> Result<(), ContentError> {
    let env = crate::envelope(user, event, now);
    let payload =
        String::from_utf8(env.encode()).map_err(|e| ContentError::Internal(e.to_string()))?;
    sqlx::query("INSERT INTO outbox (event_id, user_id, payload) VALUES ($1, $2, $3)")
        .bind(env.event_id.to_string())
        .bind(user.as_str())
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Moves a film's aggregate row by increments: `count` and `total` by the deltas, one
/// more rating of `added`, one fewer of `removed`. Increments, not values read earlier,
/// so concurrent writers cannot overwrite each other.
async fn bump(
    tx: &mut Conn,
    film: &str,
    count: i64,
    total: i64,
    added: Option<Score>,
    removed: Option<Score>,
) -> Result<(), ContentError> {
    if count == 0 && added == removed {
        return Ok(());
    }
    sqlx::query("INSERT INTO film_ratings (film_id) VALUES ($1) ON CONFLICT (film_id) DO NOTHING")
        .bind(film)
        .execute(&mut *tx)
        .await?;
    // Column names come from validated scores (0..=10), never from a client's text.
    let mut set = String::from("count = count + $2, total = total + $3");
    if let Some(a) = added {
        set.push_str(&format!(", s{0} = s{0} + 1", a.value()));
    }
    if let Some(r) = removed {
        set.push_str(&format!(", s{0} = s{0} - 1", r.value()));
    }
    sqlx::query(&format!("UPDATE film_ratings SET {set} WHERE film_id = $1"))
        .bind(film)
        .bind(count)
        .bind(total)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Sets or replaces a rating inside `tx`: the row, the film's aggregate, the event.
async fn rate_in(
    tx: &mut Conn,
    user: &UserId,
    film: FilmId,
    score: Score,
    now: Timestamp,
) -> Result<(), ContentError> {
    let key = film_key(film);
    let old = loop {
        let inserted = sqlx::query(
            "INSERT INTO ratings (user_id, film_id, score, updated_at, rating_id) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, film_id) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(&key)
        .bind(i64::from(score.value()))
        .bind(now.millis())
        .bind(crate::rating_id(user, film).to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            break None;
        }
        let sql =
            format!("SELECT score FROM ratings WHERE user_id = $1 AND film_id = $2{FOR_UPDATE}");
        let row = sqlx::query(&sql)
            .bind(user.as_str())
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
        // None: the same user's concurrent delete won the row; insert again.
        if let Some(row) = row {
            let old = score_of(row.try_get(0)?)?;
            sqlx::query(
                    "UPDATE ratings SET score = $3, updated_at = $4 WHERE user_id = $1 AND film_id = $2",
                )
                .bind(user.as_str())
                .bind(&key)
                .bind(i64::from(score.value()))
                .bind(now.millis())
                .execute(&mut *tx)
                .await?;
            break Some(old);
        }
    };
    let total = i64::from(score.value()) - old.map_or(0, |o| i64::from(o.value()));
    bump(tx, &key, i64::from(old.is_none()), total, Some(score), old).await?;
    record(
        tx,
        user,
        Event::RatingSet {
            film_id: film,
            score,
        },
        now,
    )
    .await?;
    Ok(())
}

/// A review with its author's current rating of the film.
const REVIEW_SELECT: &str = "SELECT v.review_id, v.film_id, v.user_id, v.text, r.score, \
     v.likes, v.dislikes, v.created_at, v.updated_at, v.title \
     FROM reviews v LEFT JOIN ratings r ON r.user_id = v.user_id AND r.film_id = v.film_id";

fn review_id_of(s: String) -> Result<ReviewId, ContentError> {
    uuid::Uuid::parse_str(&s)
        .map(ReviewId::from)
        .map_err(|e| ContentError::Internal(format!("stored review id {s:?}: {e}")))
}

fn vote_of(v: i64) -> Result<Vote, ContentError> {
    Vote::try_from(v).map_err(ContentError::Internal)
}

fn review_of(r: &<Db as sqlx::Database>::Row) -> Result<Review, ContentError> {
    let score: Option<i64> = r.try_get(4)?;
    Ok(Review {
        review_id: review_id_of(r.try_get(0)?)?,
        film_id: film_of(&r.try_get::<String, _>(1)?)?,
        user_id: UserId::parse(r.try_get::<String, _>(2)?)
            .map_err(|e| ContentError::Internal(format!("stored user id: {e}")))?,
        text: r.try_get(3)?,
        score: score.map(score_of).transpose()?,
        likes: r.try_get(5)?,
        dislikes: r.try_get(6)?,
        created_at: time_of(r.try_get(7)?)?,
        updated_at: time_of(r.try_get(8)?)?,
        title: r.try_get(9)?,
    })
}

fn user_of(s: String) -> Result<UserId, ContentError> {
    UserId::parse(s).map_err(|e| ContentError::Internal(format!("stored user id: {e}")))
}

const FILM_SELECT: &str = "SELECT film_id, title, description, created_at FROM films";

fn film_row(r: &<Db as sqlx::Database>::Row) -> Result<Film, ContentError> {
    Ok(Film {
        film_id: film_of(&r.try_get::<String, _>(0)?)?,
        title: r.try_get(1)?,
        description: r.try_get(2)?,
        created_at: time_of(r.try_get(3)?)?,
    })
}

const RATING_SELECT: &str = "SELECT rating_id, user_id, film_id, score, updated_at FROM ratings";

fn rating_row(r: &<Db as sqlx::Database>::Row) -> Result<UserRating, ContentError> {
    let user = user_of(r.try_get(1)?)?;
    let film = film_of(&r.try_get::<String, _>(2)?)?;
    let id: Option<String> = r.try_get(0)?;
    let rating_id = match id.as_deref().map(uuid::Uuid::parse_str) {
        Some(Ok(id)) => id,
        _ => crate::rating_id(&user, film),
    };
    Ok(UserRating {
        rating_id,
        user_id: user,
        film_id: film,
        score: score_of(r.try_get(3)?)?,
        updated_at: time_of(r.try_get(4)?)?,
    })
}

async fn review_in(tx: &mut Conn, id: ReviewId) -> Result<Option<Review>, ContentError> {
    let row = sqlx::query(&format!("{REVIEW_SELECT} WHERE v.review_id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(review_of).transpose()
}

/// The review's author and film, locking the review row until the transaction ends.
async fn review_owner(tx: &mut Conn, id: ReviewId) -> Result<(UserId, FilmId), ContentError> {
    let sql = format!("SELECT user_id, film_id FROM reviews WHERE review_id = $1{FOR_UPDATE}");
    let row = sqlx::query(&sql)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ContentError::NotFound(format!("no review {id}")))?;
    let user = UserId::parse(row.try_get::<String, _>(0)?)
        .map_err(|e| ContentError::Internal(format!("stored user id: {e}")))?;
    Ok((user, film_of(&row.try_get::<String, _>(1)?)?))
}

/// How likes and dislikes move when a voter's vote goes from `old` to `new`.
fn vote_deltas(old: Option<Vote>, new: Option<Vote>) -> (i64, i64) {
    let count = |v: Option<Vote>| match v {
        Some(Vote::LIKE) => (1, 0),
        Some(_) => (0, 1),
        None => (0, 0),
    };
    let (ol, od) = count(old);
    let (nl, nd) = count(new);
    (nl - ol, nd - od)
}

async fn move_votes(
    tx: &mut Conn,
    id: ReviewId,
    likes: i64,
    dislikes: i64,
) -> Result<(), ContentError> {
    if likes == 0 && dislikes == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE reviews SET likes = likes + $2, dislikes = dislikes + $3 WHERE review_id = $1",
    )
    .bind(id.to_string())
    .bind(likes)
    .bind(dislikes)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn vote_summary(
    tx: &mut Conn,
    id: ReviewId,
    my_vote: Option<Vote>,
) -> Result<VoteSummary, ContentError> {
    let row = sqlx::query("SELECT likes, dislikes FROM reviews WHERE review_id = $1")
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await?;
    Ok(VoteSummary {
        review_id: id,
        likes: row.try_get(0)?,
        dislikes: row.try_get(1)?,
        my_vote,
    })
}

impl Store {
    /// Runs `change` in a transaction of its own (PostgreSQL), or in a savepoint of the
    /// writer's next group commit (SQLite); answers once it is committed.
    async fn write<R, F>(&self, change: F) -> Result<R, ContentError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> crate::group::BoxFuture<'c, Result<R, ContentError>>
            + Send
            + 'static,
    {
        if let Some(queue) = &self.group {
            return crate::group::submit(queue, change).await;
        }
        let mut tx = self.writer.begin().await?;
        let out = change(&mut tx).await?;
        tx.commit().await?;
        Ok(out)
    }
}

#[async_trait]
impl ContentStore for Store {
    async fn migrate(&self) -> Result<(), ContentError> {
        let migrator = crate::migrations::migrator()
            .await
            .map_err(|e| ContentError::Internal(e.to_string()))?;
        migrator.run(&self.writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            e => ContentError::Internal(format!("migration: {e}")),
        })?;
        // Ratings older than migration 3 get their id (a UUIDv5 the database cannot
        // compute), a thousand at a time; a no-op once done.
        loop {
            let rows = sqlx::query(
                "SELECT user_id, film_id FROM ratings WHERE rating_id IS NULL LIMIT 1000",
            )
            .fetch_all(&self.writer)
            .await?;
            if rows.is_empty() {
                return Ok(());
            }
            self.write(move |tx| {
                Box::pin(async move {
                    for r in &rows {
                        let user = user_of(r.try_get(0)?)?;
                        let film: String = r.try_get(1)?;
                        let id = crate::rating_id(&user, film_of(&film)?);
                        sqlx::query("UPDATE ratings SET rating_id = $3 WHERE user_id = $1 AND film_id = $2")
                            .bind(user.as_str())
                            .bind(&film)
                            .bind(id.to_string())
                            .execute(&mut *tx)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await?;
        }
    }

    async fn ping(&self) -> Result<(), ContentError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn set_rating(
        &self,
        user: &UserId,
        film: FilmId,
        score: Score,
        now: Timestamp,
    ) -> Result<Rating, ContentError> {
        let user = user.clone();
        self.write(move |tx| Box::pin(async move { rate_in(tx, &user, film, score, now).await }))
            .await?;
        Ok(Rating {
            film_id: film,
            score,
            updated_at: now,
        })
    }

    async fn remove_rating(
        &self,
        user: &UserId,
        film: FilmId,
        now: Timestamp,
    ) -> Result<bool, ContentError> {
        let key = film_key(film);
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let row = sqlx::query(
                    "DELETE FROM ratings WHERE user_id = $1 AND film_id = $2 RETURNING score",
                )
                .bind(user.as_str())
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(false);
                };
                let old = score_of(row.try_get(0)?)?;
                bump(tx, &key, -1, -i64::from(old.value()), None, Some(old)).await?;
                record(tx, &user, Event::RatingRemoved { film_id: film }, now).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn rating_summary(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<RatingSummary, ContentError> {
        let key = film_key(film);
        let row = sqlx::query(
            "SELECT count, total, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10 \
             FROM film_ratings WHERE film_id = $1",
        )
        .bind(&key)
        .fetch_optional(&self.reader)
        .await?;
        let (mut count, mut total, mut distribution) = (0, 0, [0i64; 11]);
        if let Some(row) = row {
            count = row.try_get(0)?;
            total = row.try_get(1)?;
            for (i, d) in distribution.iter_mut().enumerate() {
                *d = row.try_get(i + 2)?;
            }
        }
        let mine = sqlx::query("SELECT score FROM ratings WHERE user_id = $1 AND film_id = $2")
            .bind(user.as_str())
            .bind(&key)
            .fetch_optional(&self.reader)
            .await?;
        let my_score = match mine {
            Some(row) => Some(score_of(row.try_get(0)?)?),
            None => None,
        };
        Ok(RatingSummary {
            film_id: film,
            count,
            total,
            average: (count > 0).then(|| total as f64 / count as f64),
            likes: distribution[10],
            dislikes: distribution[0],
            distribution,
            my_score,
        })
    }

    async fn ratings_of(
        &self,
        user: &UserId,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page<Rating>, ContentError> {
        let (time, id) = before(after);
        let rows = sqlx::query(
            "SELECT film_id, score, updated_at FROM ratings \
             WHERE user_id = $1 AND (updated_at, film_id) < ($2, $3) \
             ORDER BY updated_at DESC, film_id DESC LIMIT $4",
        )
        .bind(user.as_str())
        .bind(time)
        .bind(id)
        .bind(i64::from(limit.get()) + 1)
        .fetch_all(&self.reader)
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(Rating {
                    film_id: film_of(r.try_get(0)?)?,
                    score: score_of(r.try_get(1)?)?,
                    updated_at: time_of(r.try_get(2)?)?,
                })
            })
            .collect::<Result<Vec<_>, ContentError>>()?;
        Ok(paginate(items, limit, |r| Cursor {
            rank: None,
            time: r.updated_at.millis(),
            id: film_key(r.film_id),
        }))
    }

    async fn add_bookmark(
        &self,
        user: &UserId,
        film: FilmId,
        now: Timestamp,
    ) -> Result<(Bookmark, bool), ContentError> {
        let key = film_key(film);
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let added = sqlx::query(
                    "INSERT INTO bookmarks (user_id, film_id, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, film_id) DO NOTHING",
                )
                .bind(user.as_str())
                .bind(&key)
                .bind(now.millis())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if added {
                    record(tx, &user, Event::BookmarkAdded { film_id: film }, now).await?;
                    let bookmark = Bookmark {
                        film_id: film,
                        created_at: now,
                    };
                    return Ok((bookmark, true));
                }
                let row = sqlx::query(
                    "SELECT created_at FROM bookmarks WHERE user_id = $1 AND film_id = $2",
                )
                .bind(user.as_str())
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
                // Gone again already (a concurrent delete): it was there when this call
                // looked.
                let created_at = match row {
                    Some(row) => time_of(row.try_get(0)?)?,
                    None => now,
                };
                let bookmark = Bookmark {
                    film_id: film,
                    created_at,
                };
                Ok((bookmark, false))
            })
        })
        .await
    }

    async fn remove_bookmark(
        &self,
        user: &UserId,
        film: FilmId,
        now: Timestamp,
    ) -> Result<bool, ContentError> {
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let removed =
                    sqlx::query("DELETE FROM bookmarks WHERE user_id = $1 AND film_id = $2")
                        .bind(user.as_str())
                        .bind(film_key(film))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1;
                if removed {
                    record(tx, &user, Event::BookmarkRemoved { film_id: film }, now).await?;
                }
                Ok(removed)
            })
        })
        .await
    }

    async fn bookmarks_of(
        &self,
        user: &UserId,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page<Bookmark>, ContentError> {
        let (time, id) = before(after);
        let rows = sqlx::query(
            "SELECT film_id, created_at FROM bookmarks \
             WHERE user_id = $1 AND (created_at, film_id) < ($2, $3) \
             ORDER BY created_at DESC, film_id DESC LIMIT $4",
        )
        .bind(user.as_str())
        .bind(time)
        .bind(id)
        .bind(i64::from(limit.get()) + 1)
        .fetch_all(&self.reader)
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(Bookmark {
                    film_id: film_of(r.try_get(0)?)?,
                    created_at: time_of(r.try_get(1)?)?,
                })
            })
            .collect::<Result<Vec<_>, ContentError>>()?;
        Ok(paginate(items, limit, |b| Cursor {
            rank: None,
            time: b.created_at.millis(),
            id: film_key(b.film_id),
        }))
    }

    async fn post_review(
        &self,
        user: &UserId,
        film: FilmId,
        title: Option<String>,
        text: ReviewText,
        score: Option<Score>,
        now: Timestamp,
    ) -> Result<Review, ContentError> {
        let key = film_key(film);
        let id = ReviewId::new_v7();
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let posted = sqlx::query(
                    "INSERT INTO reviews (review_id, film_id, user_id, text, created_at, updated_at, title) \
                     VALUES ($1, $2, $3, $4, $5, $5, $6) ON CONFLICT (user_id, film_id) DO NOTHING",
                )
                .bind(id.to_string())
                .bind(&key)
                .bind(user.as_str())
                .bind(text.as_str())
                .bind(now.millis())
                .bind(title)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !posted {
                    let row =
                        sqlx::query("SELECT review_id FROM reviews WHERE user_id = $1 AND film_id = $2")
                            .bind(user.as_str())
                            .bind(&key)
                            .fetch_one(&mut *tx)
                            .await?;
                    return Err(ContentError::ReviewExists(review_id_of(row.try_get(0)?)?));
                }
                if let Some(score) = score {
                    rate_in(tx, &user, film, score, now).await?;
                }
                let event = Event::ReviewPosted {
                    film_id: film,
                    review_id: id,
                    text,
                    score,
                };
                record(tx, &user, event, now).await?;
                let review = review_in(tx, id).await?;
                review.ok_or_else(|| ContentError::Internal("a posted review vanished".into()))
            })
        })
        .await
    }

    async fn review(&self, id: ReviewId) -> Result<Option<Review>, ContentError> {
        let row = sqlx::query(&format!("{REVIEW_SELECT} WHERE v.review_id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(review_of).transpose()
    }

    async fn edit_review(
        &self,
        user: &UserId,
        id: ReviewId,
        title: Option<Option<String>>,
        text: Option<ReviewText>,
        score: Option<Score>,
        now: Timestamp,
    ) -> Result<Review, ContentError> {
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let (author, film) = review_owner(tx, id).await?;
                if author != user {
                    return Err(ContentError::Forbidden(
                        "only the author may edit a review".into(),
                    ));
                }
                if let Some(title) = title {
                    sqlx::query("UPDATE reviews SET title = $2 WHERE review_id = $1")
                        .bind(id.to_string())
                        .bind(title)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(text) = &text {
                    sqlx::query("UPDATE reviews SET text = $2, updated_at = $3 WHERE review_id = $1")
                        .bind(id.to_string())
                        .bind(text.as_str())
                        .bind(now.millis())
                        .execute(&mut *tx)
                        .await?;
                } else {
                    sqlx::query("UPDATE reviews SET updated_at = $2 WHERE review_id = $1")
                        .bind(id.to_string())
                        .bind(now.millis())
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(score) = score {
                    rate_in(tx, &user, film, score, now).await?;
                }
                let event = Event::ReviewEdited {
                    film_id: film,
                    review_id: id,
                    text,
                    score,
                };
                record(tx, &user, event, now).await?;
                let review = review_in(tx, id).await?;
                review.ok_or_else(|| ContentError::Internal("an edited review vanished".into()))
            })
        })
        .await
    }

    async fn remove_review(
        &self,
        user: &UserId,
        admin: bool,
        id: ReviewId,
        now: Timestamp,
    ) -> Result<(), ContentError> {
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let (author, film) = review_owner(tx, id).await?;
                if author != user && !admin {
                    return Err(ContentError::Forbidden(
                        "only the author or an admin may remove a review".into(),
                    ));
                }
                sqlx::query("DELETE FROM review_votes WHERE review_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM reviews WHERE review_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                let event = Event::ReviewRemoved {
                    film_id: film,
                    review_id: id,
                };
                record(tx, &user, event, now).await?;
                Ok(())
            })
        })
        .await
    }

    async fn reviews_of_film(
        &self,
        film: FilmId,
        sort: ReviewSort,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page<Review>, ContentError> {
        let top = sort == ReviewSort::Top;
        let (filter, order) = match sort {
            ReviewSort::Newest => (
                "(v.created_at, v.review_id) < ($2, $3)",
                "v.created_at DESC, v.review_id DESC",
            ),
            ReviewSort::Oldest => (
                "(v.created_at, v.review_id) > ($2, $3)",
                "v.created_at ASC, v.review_id ASC",
            ),
            ReviewSort::Top => (
                "((v.likes - v.dislikes) < $2 OR ((v.likes - v.dislikes) = $2 \
                 AND (v.created_at, v.review_id) < ($3, $4)))",
                "(v.likes - v.dislikes) DESC, v.created_at DESC, v.review_id DESC",
            ),
        };
        let (rank, time, id) = match (after, sort) {
            (Some(c), _) => (c.rank.unwrap_or(i64::MAX), c.time, c.id),
            (None, ReviewSort::Oldest) => (i64::MAX, i64::MIN, String::new()),
            // Above any real key: every review comes after it.
            (None, _) => (i64::MAX, i64::MAX, String::new()),
        };
        let limit_param = if top { "$5" } else { "$4" };
        let sql = format!(
            "{REVIEW_SELECT} WHERE v.film_id = $1 AND {filter} ORDER BY {order} LIMIT {limit_param}"
        );
        let mut query = sqlx::query(&sql).bind(film_key(film));
        if top {
            query = query.bind(rank);
        }
        let rows = query
            .bind(time)
            .bind(id)
            .bind(i64::from(limit.get()) + 1)
            .fetch_all(&self.reader)
            .await?;
        let items = rows.iter().map(review_of).collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(items, limit, |r| Cursor {
            rank: (sort == ReviewSort::Top).then_some(r.likes - r.dislikes),
            time: r.created_at.millis(),
            id: r.review_id.to_string(),
        }))
    }

    async fn reviews_of_user(
        &self,
        user: &UserId,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page<Review>, ContentError> {
        let (time, id) = before(after);
        let sql = format!(
            "{REVIEW_SELECT} WHERE v.user_id = $1 AND (v.created_at, v.review_id) < ($2, $3) \
             ORDER BY v.created_at DESC, v.review_id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(user.as_str())
            .bind(time)
            .bind(id)
            .bind(i64::from(limit.get()) + 1)
            .fetch_all(&self.reader)
            .await?;
        let items = rows.iter().map(review_of).collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(items, limit, |r| Cursor {
            rank: None,
            time: r.created_at.millis(),
            id: r.review_id.to_string(),
        }))
    }

    async fn vote(
        &self,
        user: &UserId,
        id: ReviewId,
        value: Vote,
        now: Timestamp,
    ) -> Result<VoteSummary, ContentError> {
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                // Locks the review: its votes and counts change one voter at a time.
                let (author, film) = review_owner(tx, id).await?;
                if author == user {
                    return Err(ContentError::Forbidden(
                        "you cannot vote on your own review".into(),
                    ));
                }
                let inserted = sqlx::query(
                    "INSERT INTO review_votes (review_id, user_id, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (review_id, user_id) DO NOTHING",
                )
                .bind(id.to_string())
                .bind(user.as_str())
                .bind(i64::from(value.value()))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                let old = if inserted {
                    None
                } else {
                    // The review row is locked (or SQLite's one writer holds the database), so
                    // this vote cannot change between the read and the update.
                    let row =
                        sqlx::query("SELECT value FROM review_votes WHERE review_id = $1 AND user_id = $2")
                            .bind(id.to_string())
                            .bind(user.as_str())
                            .fetch_one(&mut *tx)
                            .await?;
                    let old = vote_of(row.try_get(0)?)?;
                    sqlx::query("UPDATE review_votes SET value = $3 WHERE review_id = $1 AND user_id = $2")
                        .bind(id.to_string())
                        .bind(user.as_str())
                        .bind(i64::from(value.value()))
                        .execute(&mut *tx)
                        .await?;
                    Some(old)
                };
                let (likes, dislikes) = vote_deltas(old, Some(value));
                move_votes(tx, id, likes, dislikes).await?;
                let event = Event::ReviewVoted {
                    film_id: film,
                    review_id: id,
                    value,
                };
                record(tx, &user, event, now).await?;
                let summary = vote_summary(tx, id, Some(value)).await?;
                Ok(summary)
            })
        })
        .await
    }

    async fn unvote(
        &self,
        user: &UserId,
        id: ReviewId,
        now: Timestamp,
    ) -> Result<bool, ContentError> {
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let (_, film) = review_owner(tx, id).await?;
                let row = sqlx::query(
                    "DELETE FROM review_votes WHERE review_id = $1 AND user_id = $2 RETURNING value",
                )
                .bind(id.to_string())
                .bind(user.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(false);
                };
                let old = vote_of(row.try_get(0)?)?;
                let (likes, dislikes) = vote_deltas(Some(old), None);
                move_votes(tx, id, likes, dislikes).await?;
                let event = Event::ReviewVoteRemoved {
                    film_id: film,
                    review_id: id,
                };
                record(tx, &user, event, now).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn create_film(
        &self,
        title: String,
        description: Option<String>,
        now: Timestamp,
    ) -> Result<Film, ContentError> {
        let film = Film {
            // Time-ordered: films registered in the same millisecond still list in order.
            film_id: FilmId::from(uuid::Uuid::now_v7()),
            title,
            description,
            created_at: now,
        };
        sqlx::query(
            "INSERT INTO films (film_id, title, description, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(film_key(film.film_id))
        .bind(&film.title)
        .bind(&film.description)
        .bind(now.millis())
        .execute(&self.writer)
        .await?;
        Ok(film)
    }

    async fn film(&self, id: FilmId) -> Result<Option<Film>, ContentError> {
        let row = sqlx::query(&format!("{FILM_SELECT} WHERE film_id = $1"))
            .bind(film_key(id))
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(film_row).transpose()
    }

    async fn films(&self, ascending: bool) -> Result<Vec<Film>, ContentError> {
        let order = if ascending { "ASC" } else { "DESC" };
        let rows = sqlx::query(&format!(
            "{FILM_SELECT} ORDER BY created_at {order}, film_id {order}"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(film_row).collect()
    }

    async fn update_film(
        &self,
        id: FilmId,
        title: Option<String>,
        description: Option<Option<String>>,
    ) -> Result<Option<Film>, ContentError> {
        self.write(move |tx| {
            Box::pin(async move {
                if let Some(title) = title {
                    sqlx::query("UPDATE films SET title = $2 WHERE film_id = $1")
                        .bind(film_key(id))
                        .bind(title)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(description) = description {
                    sqlx::query("UPDATE films SET description = $2 WHERE film_id = $1")
                        .bind(film_key(id))
                        .bind(description)
                        .execute(&mut *tx)
                        .await?;
                }
                let row = sqlx::query(&format!("{FILM_SELECT} WHERE film_id = $1"))
                    .bind(film_key(id))
                    .fetch_optional(&mut *tx)
                    .await?;
                row.as_ref().map(film_row).transpose()
            })
        })
        .await
    }

    async fn delete_film(&self, id: FilmId) -> Result<bool, ContentError> {
        let gone = sqlx::query("DELETE FROM films WHERE film_id = $1")
            .bind(film_key(id))
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(gone == 1)
    }

    async fn rating_by_id(&self, id: uuid::Uuid) -> Result<Option<UserRating>, ContentError> {
        let row = sqlx::query(&format!("{RATING_SELECT} WHERE rating_id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(rating_row).transpose()
    }

    async fn film_ratings(&self, film: FilmId) -> Result<Vec<UserRating>, ContentError> {
        let rows = sqlx::query(&format!(
            "{RATING_SELECT} WHERE film_id = $1 ORDER BY updated_at, user_id"
        ))
        .bind(film_key(film))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(rating_row).collect()
    }

    async fn user_ratings(
        &self,
        user: &UserId,
        ascending: bool,
    ) -> Result<Vec<UserRating>, ContentError> {
        let order = if ascending { "ASC" } else { "DESC" };
        let rows = sqlx::query(&format!(
            "{RATING_SELECT} WHERE user_id = $1 ORDER BY updated_at {order}, film_id {order}"
        ))
        .bind(user.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(rating_row).collect()
    }

    async fn reviews(&self, of: ReviewsOf, ascending: bool) -> Result<Vec<Review>, ContentError> {
        let order = if ascending { "ASC" } else { "DESC" };
        let (filter, key) = match &of {
            ReviewsOf::All => ("", None),
            ReviewsOf::Film(f) => (" WHERE v.film_id = $1", Some(film_key(*f))),
            ReviewsOf::User(u) => (" WHERE v.user_id = $1", Some(u.as_str().to_owned())),
        };
        let sql = format!(
            "{REVIEW_SELECT}{filter} ORDER BY v.created_at {order}, v.review_id {order}"
        );
        let mut query = sqlx::query(&sql);
        if let Some(key) = key {
            query = query.bind(key);
        }
        let rows = query.fetch_all(&self.reader).await?;
        rows.iter().map(review_of).collect()
    }

    async fn erase_user(&self, user: &UserId) -> Result<(), ContentError> {
        let user = user.clone();
        self.write(move |tx| {
            Box::pin(async move {
                // Locks in the order the other writers take them (the user's rows, then the
                // films' or reviews' rows, each set sorted), so erasure does not deadlock them.
                let sql = format!(
                    "SELECT film_id, score FROM ratings WHERE user_id = $1 ORDER BY film_id{FOR_UPDATE}"
                );
                let ratings = sqlx::query(&sql)
                    .bind(user.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                for row in &ratings {
                    let film: String = row.try_get(0)?;
                    let score = score_of(row.try_get(1)?)?;
                    bump(
                        tx,
                        &film,
                        -1,
                        -i64::from(score.value()),
                        None,
                        Some(score),
                    )
                    .await?;
                }
                sqlx::query("DELETE FROM ratings WHERE user_id = $1")
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await?;
                let votes =
                    sqlx::query("SELECT review_id FROM review_votes WHERE user_id = $1 ORDER BY review_id")
                        .bind(user.as_str())
                        .fetch_all(&mut *tx)
                        .await?;
                for row in &votes {
                    let id = review_id_of(row.try_get(0)?)?;
                    review_owner(tx, id).await?;
                    let old = sqlx::query(
                        "DELETE FROM review_votes WHERE review_id = $1 AND user_id = $2 RETURNING value",
                    )
                    .bind(id.to_string())
                    .bind(user.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(old) = old {
                        let (likes, dislikes) = vote_deltas(Some(vote_of(old.try_get(0)?)?), None);
                        move_votes(tx, id, likes, dislikes).await?;
                    }
                }
                for sql in [
                    "DELETE FROM review_votes WHERE review_id IN (SELECT review_id FROM reviews WHERE user_id = $1)",
                    "DELETE FROM reviews WHERE user_id = $1",
                    "DELETE FROM bookmarks WHERE user_id = $1",
                    "DELETE FROM outbox WHERE user_id = $1",
                ] {
                    sqlx::query(sql)
                        .bind(user.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn outbox(&self, max: i64) -> Result<Vec<Envelope>, ContentError> {
        let rows = sqlx::query("SELECT payload FROM outbox ORDER BY event_id LIMIT $1")
            .bind(max)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.try_get(0)?;
                Envelope::decode(payload.as_bytes())
                    .map_err(|e| ContentError::Internal(format!("outbox record: {e}")))
            })
            .collect()
    }

    async fn outbox_done(&self, ids: &[String]) -> Result<(), ContentError> {
        let ids = ids.to_vec();
        self.write(move |tx| {
            Box::pin(async move {
                for id in &ids {
                    sqlx::query("DELETE FROM outbox WHERE event_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                Ok(())
            })
        })
        .await
    }
}
