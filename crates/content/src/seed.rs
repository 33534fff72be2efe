//! Bulk seeding of a fresh content database for the benchmark suite: millions of
//! ratings, reviews and bookmarks written straight through the database (multi-row
//! `INSERT`s in large transactions on SQLite, `COPY` on PostgreSQL) instead of one
//! transaction per change, with the aggregate rows (`film_ratings`) computed from the very
//! rows written, so summaries read afterwards agree with the data. No events are
//! recorded: seeded rows are history, not changes. Not used by the product.
//!
//! The data is a pure function of [`Scale`]: ids come from indexes, so a load generator
//! can name a user's rating or bookmark without reading the database.

use std::time::Instant;

use sqlx::{Connection, Executor, QueryBuilder};
use ugc_model::{FilmId, ReviewId, UserId};

use crate::{ContentError, ContentStore, ContentUrl, postgres, sqlite};

/// How much to seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub films: u64,
    pub users: u64,
    /// Spread evenly over users (each rates distinct films).
    pub ratings: u64,
    /// At most one per rating; user `j % users` reviews a film they rated.
    pub reviews: u64,
    pub bookmarks: u64,
}

/// Films a user's k-th rating or bookmark steps by: a prime, so the films of one user
/// are distinct whenever the catalogue is not a multiple of it.
const STEP: u64 = 7919;
/// 2026-01-01T00:00:00Z in milliseconds: seeded rows are from the year before it.
const T0: i64 = 1_767_225_600_000;
const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: indexes in, well-spread bits out.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A version-4-shaped UUID whose hex sorts like `i`, tagged by `kind`.
fn indexed_uuid(kind: u8, i: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(
        (u128::from(kind) << 120) | (0x4000u128 << 64) | (0x8000u128 << 48) | u128::from(i),
    )
}

impl Scale {
    /// The figure: 10,000,000 ratings over 100,000 films and 1,000,000 users,
    /// 1,000,000 reviews, 1,000,000 bookmarks.
    pub const FULL: Scale = Scale {
        films: 100_000,
        users: 1_000_000,
        ratings: 10_000_000,
        reviews: 1_000_000,
        bookmarks: 1_000_000,
    };

    /// Every count divided by `d` (at least 20 films and users).
    pub fn divided(self, d: u64) -> Scale {
        let d = d.max(1);
        let films = (self.films / d).max(20);
        Scale {
            films: if films.is_multiple_of(STEP) {
                films + 1
            } else {
                films
            },
            users: (self.users / d).max(20),
            ratings: self.ratings / d,
            reviews: self.reviews / d,
            bookmarks: self.bookmarks / d,
        }
    }

    fn check(&self) -> Result<(), ContentError> {
        let per_user = self.ratings.div_ceil(self.users.max(1));
        let bookmarks_per_user = self.bookmarks.div_ceil(self.users.max(1));
        let bad = |why: &str| {
            Err(ContentError::Internal(format!(
                "seed scale {self:?}: {why}"
            )))
        };
        if self.films == 0 || self.users == 0 {
            return bad("needs films and users");
        }
        if self.films.is_multiple_of(STEP) {
            return bad("the number of films must not be a multiple of 7919");
        }
        if per_user > self.films || bookmarks_per_user > self.films {
            return bad("more ratings or bookmarks per user than films");
        }
        if self.reviews > self.users * (self.ratings / self.users) {
            return bad("a review needs a rating of its own");
        }
        Ok(())
    }

    pub fn film(&self, i: u64) -> FilmId {
        FilmId::from(indexed_uuid(0xf1, i))
    }

    pub fn user(&self, i: u64) -> UserId {
        UserId::parse(indexed_uuid(0xa0, i).to_string()).expect("a UUID is a valid user id")
    }

    pub fn review(&self, j: u64) -> ReviewId {
        ReviewId::from(indexed_uuid(0x7e, j))
    }

    /// How many ratings user `u` has.
    pub fn ratings_of(&self, u: u64) -> u64 {
        self.ratings / self.users + u64::from(u < self.ratings % self.users)
    }

    /// The film of user `u`'s `k`-th rating (`k < ratings_of(u)`), and its score.
    pub fn rating(&self, u: u64, k: u64) -> (u64, i64) {
        let film = (mix(u) % self.films + k * STEP) % self.films;
        (film, (mix(u ^ (k << 40) ^ 0x5c0e) % 11) as i64)
    }

    /// The user and film of the `j`-th review: the user's `j / users`-th rated film.
    pub fn reviewed(&self, j: u64) -> (u64, u64) {
        let u = j % self.users;
        (u, self.rating(u, j / self.users).0)
    }

    /// The user and film of the `j`-th bookmark.
    pub fn bookmark(&self, j: u64) -> (u64, u64) {
        let u = j % self.users;
        let film = (mix(u ^ 0xb00c) % self.films + (j / self.users) * STEP) % self.films;
        (u, film)
    }
}

/// Rows written per table, and how long each took.
#[derive(Clone, Debug)]
pub struct Seeded {
    pub tables: Vec<(&'static str, u64, f64)>,
    pub secs: f64,
}

/// Per-film aggregates of the ratings written: count, total, and each score's count.
struct Aggregates(Vec<[i64; 13]>);

impl Aggregates {
    fn add(&mut self, film: u64, score: i64) {
        let a = &mut self.0[film as usize];
        a[0] += 1;
        a[1] += score;
        a[2 + score as usize] += 1;
    }
}

fn review_text(j: u64) -> String {
    const OPENINGS: [&str; 4] = [
        "Slow to start, but the last act makes up for it",
        "The cast carries a thin script further than it deserves",
        "Beautifully shot; the story never quite arrives",
        "Watched it twice in a week and would again",
    ];
    format!(
        "{}. Review number {j}, kept short on purpose.",
        OPENINGS[(mix(j) % 4) as usize]
    )
}

/// Seeds a fresh database (migrating it first) at `url`; fails when it already holds
/// ratings. `progress(table, rows written so far)` is called now and then.
pub async fn seed(
    url: &ContentUrl,
    scale: &Scale,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<Seeded, ContentError> {
    scale.check()?;
    let t0 = Instant::now();
    let tables = match url {
        ContentUrl::Sqlite(path) => {
            let store = sqlite::Store::open(path).await?;
            store.migrate().await?;
            drop(store);
            seed_sqlite(path, scale, progress).await?
        }
        ContentUrl::Postgres(url) => {
            let store = postgres::Store::connect(url).await?;
            store.migrate().await?;
            drop(store);
            seed_postgres(url, scale, progress).await?
        }
    };
    Ok(Seeded {
        tables,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// The ratings of users `users` in order, each user's films sorted, so both of the
/// table's indexes (by user and film, by user and time) grow at their right edge.
fn ratings_rows(
    scale: &Scale,
    users: std::ops::Range<u64>,
    agg: &mut Aggregates,
    mut row: impl FnMut(u64, u64, i64, i64),
) {
    let spacing = (YEAR_MS / scale.ratings.max(1) as i64).max(1);
    // Ratings of the users before `users.start`: the time of this block's first one.
    let before =
        users.start * (scale.ratings / scale.users) + users.start.min(scale.ratings % scale.users);
    let mut n = before;
    let mut mine = Vec::new();
    for u in users {
        mine.clear();
        mine.extend((0..scale.ratings_of(u)).map(|k| scale.rating(u, k)));
        mine.sort_unstable();
        for &(film, score) in &mine {
            agg.add(film, score);
            row(u, film, score, T0 - YEAR_MS + n as i64 * spacing);
            n += 1;
        }
    }
}

/// Users whose ratings go into one transaction or `COPY` message.
fn user_blocks(scale: &Scale) -> impl Iterator<Item = std::ops::Range<u64>> {
    let per_user = (scale.ratings / scale.users).max(1);
    let block = (ROWS_PER_TRANSACTION / per_user).max(1);
    let users = scale.users;
    (0..users.div_ceil(block)).map(move |b| b * block..((b + 1) * block).min(users))
}

const SQLITE_ROWS_PER_STATEMENT: usize = 500;
const ROWS_PER_TRANSACTION: u64 = 200_000;

async fn seed_sqlite(
    path: &std::path::Path,
    scale: &Scale,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<Vec<(&'static str, u64, f64)>, ContentError> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    // Durability of a seed is moot (a crash means seeding again); the product's own
    // connections open with synchronous=FULL as always.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off)
        .pragma("cache_size", "-262144");
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let any: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM ratings LIMIT 1)")
        .fetch_one(&mut conn)
        .await?;
    if any > 0 {
        return Err(ContentError::Internal(
            "the content database already holds ratings".into(),
        ));
    }
    let mut tables = vec![];

    // Ratings, with the aggregates of what was written.
    let t = Instant::now();
    let mut agg = Aggregates(vec![[0; 13]; scale.films as usize]);
    let mut done = 0u64;
    for users in user_blocks(scale) {
        let mut rows: Vec<(String, String, i64, i64, String)> = vec![];
        ratings_rows(scale, users, &mut agg, |u, f, score, at| {
            let (user, film) = (scale.user(u), scale.film(f));
            rows.push((
                user.as_str().to_owned(),
                film.as_uuid().to_string(),
                score,
                at,
                crate::rating_id(&user, film).to_string(),
            ))
        });
        insert_sqlite(
            &mut conn,
            "INSERT INTO ratings (user_id, film_id, score, updated_at, rating_id) ",
            &rows,
            |b, r| {
                b.push_bind(r.0.as_str())
                    .push_bind(r.1.as_str())
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(r.4.as_str());
            },
            |_| {},
        )
        .await?;
        done += rows.len() as u64;
        progress("ratings", done);
    }
    tables.push(("ratings", done, t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let films: Vec<(String, [i64; 13])> = agg
        .0
        .iter()
        .enumerate()
        .filter(|(_, a)| a[0] > 0)
        .map(|(f, a)| (scale.film(f as u64).as_uuid().to_string(), *a))
        .collect();
    insert_sqlite(
        &mut conn,
        "INSERT INTO film_ratings (film_id, count, total, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10) ",
        &films,
        |b, r| {
            b.push_bind(r.0.as_str());
            for v in r.1 {
                b.push_bind(v);
            }
        },
        |n| progress("film_ratings", n),
    )
    .await?;
    tables.push((
        "film_ratings",
        films.len() as u64,
        t.elapsed().as_secs_f64(),
    ));

    let t = Instant::now();
    let spacing = (YEAR_MS / scale.reviews.max(1) as i64).max(1);
    let reviews: Vec<(String, String, String, String, i64)> = (0..scale.reviews)
        .map(|j| {
            let (u, f) = scale.reviewed(j);
            (
                scale.review(j).to_string(),
                scale.film(f).as_uuid().to_string(),
                scale.user(u).as_str().to_owned(),
                review_text(j),
                T0 - YEAR_MS + j as i64 * spacing,
            )
        })
        .collect();
    insert_sqlite(
        &mut conn,
        "INSERT INTO reviews (review_id, film_id, user_id, text, created_at, updated_at) ",
        &reviews,
        |b, r| {
            b.push_bind(r.0.as_str())
                .push_bind(r.1.as_str())
                .push_bind(r.2.as_str())
                .push_bind(r.3.as_str())
                .push_bind(r.4)
                .push_bind(r.4);
        },
        |n| progress("reviews", n),
    )
    .await?;
    tables.push(("reviews", reviews.len() as u64, t.elapsed().as_secs_f64()));
    drop(reviews);

    let t = Instant::now();
    let spacing = (YEAR_MS / scale.bookmarks.max(1) as i64).max(1);
    let bookmarks: Vec<(String, String, i64)> = (0..scale.bookmarks)
        .map(|j| {
            let (u, f) = scale.bookmark(j);
            (
                scale.user(u).as_str().to_owned(),
                scale.film(f).as_uuid().to_string(),
                T0 - YEAR_MS + j as i64 * spacing,
            )
        })
        .collect();
    insert_sqlite(
        &mut conn,
        "INSERT INTO bookmarks (user_id, film_id, created_at) ",
        &bookmarks,
        |b, r| {
            b.push_bind(r.0.as_str())
                .push_bind(r.1.as_str())
                .push_bind(r.2);
        },
        |n| progress("bookmarks", n),
    )
    .await?;
    tables.push((
        "bookmarks",
        bookmarks.len() as u64,
        t.elapsed().as_secs_f64(),
    ));

    // Folds the WAL into the database file, so the run starts from a small WAL.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    conn.close().await?;
    Ok(tables)
}

/// Multi-row `INSERT`s of `rows`, many to a transaction.
async fn insert_sqlite<'a, T>(
    conn: &mut sqlx::SqliteConnection,
    head: &str,
    rows: &'a [T],
    bind: impl Fn(&mut sqlx::query_builder::Separated<'_, 'a, sqlx::Sqlite, &'static str>, &'a T),
    progress: impl Fn(u64),
) -> Result<(), ContentError> {
    let per_tx = (ROWS_PER_TRANSACTION as usize).div_ceil(SQLITE_ROWS_PER_STATEMENT);
    let mut done = 0u64;
    for tx_rows in rows.chunks(per_tx * SQLITE_ROWS_PER_STATEMENT) {
        let mut tx = conn.begin().await?;
        for chunk in tx_rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
            let mut b: QueryBuilder<'a, sqlx::Sqlite> = QueryBuilder::new(head);
            b.push_values(chunk, |mut sep, r| bind(&mut sep, r));
            b.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        done += tx_rows.len() as u64;
        progress(done);
    }
    Ok(())
}

/// Bytes sent per `COPY` message.
const COPY_CHUNK: usize = 1 << 20;

async fn seed_postgres(
    url: &str,
    scale: &Scale,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<Vec<(&'static str, u64, f64)>, ContentError> {
    use std::fmt::Write as _;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let any: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM ratings LIMIT 1) s")
        .fetch_one(&mut conn)
        .await?;
    if any > 0 {
        return Err(ContentError::Internal(
            "the content database already holds ratings".into(),
        ));
    }
    // A seed that crashes is seeded again; no need to wait for each commit's flush.
    conn.execute("SET synchronous_commit = off").await?;
    let mut tables = vec![];

    let t = Instant::now();
    let mut agg = Aggregates(vec![[0; 13]; scale.films as usize]);
    let mut n = 0u64;
    let mut copy = conn
        .copy_in_raw("COPY ratings (user_id, film_id, score, updated_at, rating_id) FROM STDIN")
        .await?;
    for users in user_blocks(scale) {
        let mut text = String::with_capacity(COPY_CHUNK);
        ratings_rows(scale, users, &mut agg, |u, f, score, at| {
            let (user, film) = (scale.user(u), scale.film(f));
            let _ = writeln!(
                text,
                "{}\t{}\t{score}\t{at}\t{}",
                user.as_str(),
                film.as_uuid(),
                crate::rating_id(&user, film)
            );
            n += 1;
        });
        copy.send(text.into_bytes()).await?;
        progress("ratings", n);
    }
    let copied = copy.finish().await?;
    if copied != n {
        return Err(ContentError::Internal(format!(
            "COPY wrote {copied} ratings of {n}"
        )));
    }
    tables.push(("ratings", n, t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let mut text = String::new();
    let mut films = 0u64;
    for (f, a) in agg.0.iter().enumerate().filter(|(_, a)| a[0] > 0) {
        let _ = write!(text, "{}", scale.film(f as u64).as_uuid());
        for v in a {
            let _ = write!(text, "\t{v}");
        }
        text.push('\n');
        films += 1;
    }
    copy_postgres(
        &mut conn,
        "COPY film_ratings (film_id, count, total, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10) FROM STDIN",
        vec![text],
        films,
        |k| progress("film_ratings", k),
    )
    .await?;
    tables.push(("film_ratings", films, t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let spacing = (YEAR_MS / scale.reviews.max(1) as i64).max(1);
    let mut chunks = vec![];
    let mut text = String::new();
    for j in 0..scale.reviews {
        let (u, f) = scale.reviewed(j);
        let at = T0 - YEAR_MS + j as i64 * spacing;
        // The text has no tab, newline or backslash: nothing to escape.
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{at}\t{at}",
            scale.review(j),
            scale.film(f).as_uuid(),
            scale.user(u).as_str(),
            review_text(j)
        );
        if text.len() >= COPY_CHUNK {
            chunks.push(std::mem::take(&mut text));
        }
    }
    chunks.push(text);
    copy_postgres(
        &mut conn,
        "COPY reviews (review_id, film_id, user_id, text, created_at, updated_at) FROM STDIN",
        chunks,
        scale.reviews,
        |k| progress("reviews", k),
    )
    .await?;
    tables.push(("reviews", scale.reviews, t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let spacing = (YEAR_MS / scale.bookmarks.max(1) as i64).max(1);
    let mut chunks = vec![];
    let mut text = String::new();
    for j in 0..scale.bookmarks {
        let (u, f) = scale.bookmark(j);
        let _ = writeln!(
            text,
            "{}\t{}\t{}",
            scale.user(u).as_str(),
            scale.film(f).as_uuid(),
            T0 - YEAR_MS + j as i64 * spacing
        );
        if text.len() >= COPY_CHUNK {
            chunks.push(std::mem::take(&mut text));
        }
    }
    chunks.push(text);
    copy_postgres(
        &mut conn,
        "COPY bookmarks (user_id, film_id, created_at) FROM STDIN",
        chunks,
        scale.bookmarks,
        |k| progress("bookmarks", k),
    )
    .await?;
    tables.push(("bookmarks", scale.bookmarks, t.elapsed().as_secs_f64()));

    // Fresh statistics, so the planner knows the tables' sizes from the first query.
    let t = Instant::now();
    conn.execute("ANALYZE").await?;
    tables.push(("ANALYZE", 0, t.elapsed().as_secs_f64()));
    conn.close().await?;
    Ok(tables)
}

/// One `COPY … FROM STDIN` of text-format rows, sent in chunks.
async fn copy_postgres(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    chunks: Vec<String>,
    rows: u64,
    progress: impl Fn(u64),
) -> Result<(), ContentError> {
    let total: usize = chunks.iter().map(String::len).sum::<usize>().max(1);
    let mut sent = 0usize;
    let mut copy = conn.copy_in_raw(sql).await?;
    for chunk in chunks {
        sent += chunk.len();
        copy.send(chunk.into_bytes()).await?;
        progress((rows as f64 * sent as f64 / total as f64) as u64);
    }
    let copied = copy.finish().await?;
    if copied != rows {
        return Err(ContentError::Internal(format!(
            "COPY wrote {copied} rows of {rows}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded ratings carry their ids, so a server opening the database has nothing to
    /// backfill and seed 003's `GET /ratings/{rating_id}` finds them.
    #[tokio::test]
    async fn seeded_ratings_are_found_by_their_id() {
        let path = std::env::temp_dir().join(format!("ugc-seed-{}.db", uuid::Uuid::now_v7()));
        let url = ContentUrl::Sqlite(path.clone());
        let scale = Scale::FULL.divided(100_000);
        seed(&url, &scale, &|_, _| {}).await.unwrap();
        let store = sqlite::Store::open(&path).await.unwrap();
        let (film, score) = scale.rating(0, 0);
        let (user, film) = (scale.user(0), scale.film(film));
        let found = store
            .rating_by_id(crate::rating_id(&user, film))
            .await
            .unwrap()
            .expect("the seeded rating by its id");
        assert_eq!(
            (found.film_id, i64::from(found.score.value())),
            (film, score)
        );
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn a_users_films_are_distinct_and_reviews_are_of_rated_films() {
        let s = Scale::FULL.divided(1000);
        for u in 0..s.users {
            let mut films: Vec<u64> = (0..s.ratings_of(u)).map(|k| s.rating(u, k).0).collect();
            films.sort_unstable();
            films.dedup();
            assert_eq!(films.len() as u64, s.ratings_of(u));
        }
        for j in 0..s.reviews {
            let (u, f) = s.reviewed(j);
            assert!((0..s.ratings_of(u)).any(|k| s.rating(u, k).0 == f));
        }
        assert_eq!(
            (0..s.users).map(|u| s.ratings_of(u)).sum::<u64>(),
            s.ratings
        );
    }
}
