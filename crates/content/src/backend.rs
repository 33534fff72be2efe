// One implementation of the content store, compiled once per sqlx driver (see lib.rs):
// `Db` is the driver, `FOR_UPDATE` the row-lock clause where the database has one. The
// SQL is the same text on both (numbered `$N` parameters work on SQLite too).

use async_trait::async_trait;
use sqlx::{Pool, Row, Transaction};
use ugc_model::{Envelope, Event, FilmId, Score, Timestamp, UserId};

use crate::{Bookmark, ContentError, ContentStore, Cursor, Limit, Page, Rating, RatingSummary};

/// The content database. `writer` and `reader` are one pool on PostgreSQL.
#[derive(Clone)]
pub struct Store {
    writer: Pool<Db>,
    reader: Pool<Db>,
}

type Tx = Transaction<'static, Db>;

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
    tx: &mut Tx,
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
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves a film's aggregate row by increments: `count` and `total` by the deltas, one
/// more rating of `added`, one fewer of `removed`. Increments, not values read earlier,
/// so concurrent writers cannot overwrite each other.
async fn bump(
    tx: &mut Tx,
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
        .execute(&mut **tx)
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
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    async fn begin(&self) -> Result<Tx, ContentError> {
        Ok(self.writer.begin().await?)
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
        })
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
        let key = film_key(film);
        let mut tx = self.begin().await?;
        let old = loop {
            let inserted = sqlx::query(
                "INSERT INTO ratings (user_id, film_id, score, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, film_id) DO NOTHING",
            )
            .bind(user.as_str())
            .bind(&key)
            .bind(i64::from(score.value()))
            .bind(now.millis())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                break None;
            }
            let sql = format!(
                "SELECT score FROM ratings WHERE user_id = $1 AND film_id = $2{FOR_UPDATE}"
            );
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
        bump(
            &mut tx,
            &key,
            i64::from(old.is_none()),
            total,
            Some(score),
            old,
        )
        .await?;
        record(
            &mut tx,
            user,
            Event::RatingSet {
                film_id: film,
                score,
            },
            now,
        )
        .await?;
        tx.commit().await?;
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
        let mut tx = self.begin().await?;
        let row =
            sqlx::query("DELETE FROM ratings WHERE user_id = $1 AND film_id = $2 RETURNING score")
                .bind(user.as_str())
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let old = score_of(row.try_get(0)?)?;
        bump(&mut tx, &key, -1, -i64::from(old.value()), None, Some(old)).await?;
        record(&mut tx, user, Event::RatingRemoved { film_id: film }, now).await?;
        tx.commit().await?;
        Ok(true)
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
        let mut tx = self.begin().await?;
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
            record(&mut tx, user, Event::BookmarkAdded { film_id: film }, now).await?;
            tx.commit().await?;
            return Ok((
                Bookmark {
                    film_id: film,
                    created_at: now,
                },
                true,
            ));
        }
        let row =
            sqlx::query("SELECT created_at FROM bookmarks WHERE user_id = $1 AND film_id = $2")
                .bind(user.as_str())
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        // Gone again already (a concurrent delete): it was there when this call looked.
        let created_at = match row {
            Some(row) => time_of(row.try_get(0)?)?,
            None => now,
        };
        Ok((
            Bookmark {
                film_id: film,
                created_at,
            },
            false,
        ))
    }

    async fn remove_bookmark(
        &self,
        user: &UserId,
        film: FilmId,
        now: Timestamp,
    ) -> Result<bool, ContentError> {
        let mut tx = self.begin().await?;
        let removed = sqlx::query("DELETE FROM bookmarks WHERE user_id = $1 AND film_id = $2")
            .bind(user.as_str())
            .bind(film_key(film))
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if removed {
            record(&mut tx, user, Event::BookmarkRemoved { film_id: film }, now).await?;
            tx.commit().await?;
        }
        Ok(removed)
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
            time: b.created_at.millis(),
            id: film_key(b.film_id),
        }))
    }

    async fn outbox(&self, max: i64) -> Result<Vec<Envelope>, ContentError> {
        let rows = sqlx::query("SELECT payload FROM outbox ORDER BY event_id LIMIT $1")
            .bind(max)
            .fetch_all(&self.writer)
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
        let mut tx = self.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM outbox WHERE event_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
