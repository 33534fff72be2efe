//! Ratings, reviews and bookmarks: what viewers say about films, on SQLite (embedded, a
//! file under the data directory) or PostgreSQL. Every change commits together with its
//! event in an outbox table; [`relay`] appends the outbox to the event log afterwards.
//!
//! The database seam is [`ContentStore`]; [`sqlite::Store`] and
//! [`postgres::Store`] are one implementation (`backend.rs`) compiled once per
//! sqlx driver, so the two behave alike by construction.

mod error;
mod group;
mod migrations;
pub mod relay;
pub mod seed;
mod service;
mod types;

pub use error::ContentError;
pub use service::{ContentService, ContentUrl};
pub use types::{
    Bookmark, Cursor, Film, Limit, Page, Rating, RatingSummary, Review, ReviewSort, ReviewsOf,
    UserRating, VoteSummary, rating_id,
};

use async_trait::async_trait;
use ugc_model::{Envelope, FilmId, ReviewId, ReviewText, Score, Timestamp, UserId, Vote};

/// The database seam. Every write takes the time of the change and the event to record;
/// the event goes into the outbox in the same transaction as the change.
#[async_trait]
pub trait ContentStore: Send + Sync {
    /// Creates or migrates the schema (versioned migrations).
    async fn migrate(&self) -> Result<(), ContentError>;
    async fn ping(&self) -> Result<(), ContentError>;

    async fn set_rating(
        &self,
        user: &UserId,
        film: FilmId,
        score: Score,
        now: Timestamp,
    ) -> Result<Rating, ContentError>;
    /// `false` when the user had no rating of the film.
    async fn remove_rating(
        &self,
        user: &UserId,
        film: FilmId,
        now: Timestamp,
    ) -> Result<bool, ContentError>;
    async fn rating_summary(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<RatingSummary, ContentError>;
    async fn ratings_of(
        &self,
        user: &UserId,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page<Rating>, ContentError>;

    /// The bookmark, and whether this call added it.
    async fn add_bookmark(
        &self,
        user: &UserId,
        film: FilmId,
        now: Timestamp,
    ) -> Result<(Bookmark, bool), ContentError>;
    async fn remove_bookmark(
        &self,
        user: &UserId,
        film: FilmId,
        now: Timestamp,
    ) -> Result<bool, ContentError>;
    async fn bookmarks_of(
        &self,
        user: &UserId,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page<Bookmark>, ContentError>;

    /// Posts the user's one review of a film (`ReviewExists` when there is one), setting
    /// their rating too when `score` is given, in one transaction. `title`: seed 003's.
    async fn post_review(
        &self,
        user: &UserId,
        film: FilmId,
        title: Option<String>,
        text: ReviewText,
        score: Option<Score>,
        now: Timestamp,
    ) -> Result<Review, ContentError>;
    async fn review(&self, id: ReviewId) -> Result<Option<Review>, ContentError>;
    /// The author's change of text and/or rating (and seed 003's title: `Some(None)`
    /// clears it).
    async fn edit_review(
        &self,
        user: &UserId,
        id: ReviewId,
        title: Option<Option<String>>,
        text: Option<ReviewText>,
        score: Option<Score>,
        now: Timestamp,
    ) -> Result<Review, ContentError>;
    /// By its author, or anyone when `admin`.
    async fn remove_review(
        &self,
        user: &UserId,
        admin: bool,
        id: ReviewId,
        now: Timestamp,
    ) -> Result<(), ContentError>;
    async fn reviews_of_film(
        &self,
        film: FilmId,
        sort: ReviewSort,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page<Review>, ContentError>;
    async fn reviews_of_user(
        &self,
        user: &UserId,
        limit: Limit,
        after: Option<Cursor>,
    ) -> Result<Page<Review>, ContentError>;
    /// Sets or replaces the user's vote on someone else's review.
    async fn vote(
        &self,
        user: &UserId,
        id: ReviewId,
        value: Vote,
        now: Timestamp,
    ) -> Result<VoteSummary, ContentError>;
    /// `false` when the user had not voted on it.
    async fn unvote(
        &self,
        user: &UserId,
        id: ReviewId,
        now: Timestamp,
    ) -> Result<bool, ContentError>;

    /// Registers a film record (seed 003's catalogue).
    async fn create_film(
        &self,
        title: String,
        description: Option<String>,
        now: Timestamp,
    ) -> Result<Film, ContentError>;
    async fn film(&self, id: FilmId) -> Result<Option<Film>, ContentError>;
    /// Every film record by creation time.
    async fn films(&self, ascending: bool) -> Result<Vec<Film>, ContentError>;
    /// Changes the given fields (`description: Some(None)` clears it); `None` when absent.
    async fn update_film(
        &self,
        id: FilmId,
        title: Option<String>,
        description: Option<Option<String>>,
    ) -> Result<Option<Film>, ContentError>;
    /// Removes the film record only: the viewers' ratings, reviews and bookmarks stay.
    async fn delete_film(&self, id: FilmId) -> Result<bool, ContentError>;
    async fn rating_by_id(&self, id: uuid::Uuid) -> Result<Option<UserRating>, ContentError>;
    /// Every rating of a film, or of a user, by time of the last change.
    async fn film_ratings(&self, film: FilmId) -> Result<Vec<UserRating>, ContentError>;
    async fn user_ratings(
        &self,
        user: &UserId,
        ascending: bool,
    ) -> Result<Vec<UserRating>, ContentError>;
    /// Every review of the set by creation time.
    async fn reviews(&self, of: ReviewsOf, ascending: bool) -> Result<Vec<Review>, ContentError>;

    /// Removes everything of a user — ratings (out of the films' aggregates too), reviews
    /// (with the votes on them), their votes (out of the reviews' counts), bookmarks and
    /// their events not yet relayed — in one transaction. Records no event.
    async fn erase_user(&self, user: &UserId) -> Result<(), ContentError>;

    /// The oldest events of the outbox, at most `max`.
    async fn outbox(&self, max: i64) -> Result<Vec<Envelope>, ContentError>;
    /// Forgets events once the log has them.
    async fn outbox_done(&self, ids: &[String]) -> Result<(), ContentError>;
}

/// The event a change records: the user's, at the time of the change, with a fresh id.
fn envelope(user: &UserId, event: ugc_model::Event, now: Timestamp) -> Envelope {
    Envelope {
        v: ugc_model::ENVELOPE_VERSION,
        event_id: ugc_model::EventId::new_v7(),
        user_id: Some(user.clone()),
        received_at: now,
        occurred_at: now,
        client_ip: None,
        context: Default::default(),
        event,
    }
}

/// SQLite: a file under the data directory, WAL. One writer task serialises the writes
/// of this process (SQLite allows one writer anyway; queueing here instead of in
/// `busy_timeout` keeps writers fair and never fails a transaction with SQLITE_BUSY) and
/// commits them in groups, one fsync for all the changes waiting (see `group`); reads
/// use their own connections, which WAL lets run beside the writer.
///
/// The writer never checkpoints: SQLite's automatic checkpoint runs inside the commit
/// that crosses its threshold, copying the WAL's pages into the database file with an
/// fsync while every write queued behind that commit waits (hundreds of milliseconds on
/// a large database). A task of its own checkpoints instead, PASSIVE (it waits for no
/// reader or writer), on its own connection.
pub mod sqlite {
    type Db = sqlx::Sqlite;
    /// How often the WAL is copied into the database file.
    const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
    /// SQLite has no row locks: its one writer holds the whole database.
    const FOR_UPDATE: &str = "";
    include!("backend.rs");

    impl Store {
        /// Opens (creating when missing) the database file.
        pub async fn open(path: &std::path::Path) -> Result<Store, ContentError> {
            use sqlx::sqlite::{
                SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
            };
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // A 2xx means the change is on disk, as for events.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(std::time::Duration::from_secs(5));
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect_with(
                    options
                        .clone()
                        .pragma("wal_autocheckpoint", "0")
                        // After a burst, the WAL file shrinks back to this once reused.
                        .pragma("journal_size_limit", "67108864"),
                )
                .await?;
            let checkpointer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            let reader = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect_with(options.read_only(true))
                .await?;
            let (queue, jobs) = crate::group::queue();
            tokio::spawn(crate::group::run(writer.clone(), jobs));
            tokio::spawn(checkpoints(checkpointer, queue.downgrade()));
            Ok(Store {
                writer,
                reader,
                group: Some(queue),
            })
        }
    }

    /// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the store is closed (its
    /// writer queue gone).
    async fn checkpoints(
        pool: sqlx::Pool<Db>,
        open: tokio::sync::mpsc::WeakSender<crate::group::Job<Conn>>,
    ) {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if open.upgrade().is_none() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "content database checkpoint failed; trying again");
            }
        }
    }
}

/// PostgreSQL: row locks (`FOR UPDATE`, and the row an `UPDATE` touches) serialise
/// writers of the same rows; aggregates are updated by increments, never rewritten from a
/// read, so concurrent raters of one film never lose an update.
pub mod postgres {
    type Db = sqlx::Postgres;
    const FOR_UPDATE: &str = " FOR UPDATE";
    include!("backend.rs");

    impl Store {
        /// Connects to `postgres://…`. A database that does not answer within 3 s is
        /// unavailable (503 to clients) rather than a request that hangs.
        pub async fn connect(url: &str) -> Result<Store, ContentError> {
            use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
            let options: PgConnectOptions = url
                .parse()
                .map_err(|e| ContentError::Internal(format!("UGC_CONTENT_URL: {e}")))?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(std::time::Duration::from_secs(3))
                .connect_with(options)
                .await?;
            // PostgreSQL commits concurrent transactions together by itself.
            Ok(Store {
                writer: pool.clone(),
                reader: pool,
                group: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the writer's own checkpoints off, the changes still reach the database file
    /// while the store stays open, and the WAL does not keep every page ever written.
    #[tokio::test]
    async fn sqlite_changes_reach_the_database_file_while_the_store_is_open() {
        let path = std::env::temp_dir().join(format!("ugc-checkpoint-{}.db", uuid::Uuid::now_v7()));
        let store = sqlite::Store::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let user = UserId::parse("checkpoint-test").unwrap();
        for _ in 0..2_000 {
            let film = FilmId::from(uuid::Uuid::now_v7());
            store
                .set_rating(&user, film, Score::LIKE, Timestamp::now())
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let size = std::fs::metadata(&path).unwrap().len();
            if size > before + 100 * 1024 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file is still {size} bytes (was {before}) 30 s after 2,000 \
                 changes: nothing checkpoints the WAL"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
