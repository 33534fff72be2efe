use std::path::Path;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use ugc_log::LogProducer;
use ugc_model::{FilmId, ReviewId, ReviewText, Score, Timestamp, UserId, Vote};

use crate::{
    Bookmark, ContentError, ContentStore, Cursor, Film, Limit, Page, Rating, RatingSummary, Review,
    ReviewSort, ReviewsOf, UserRating, VoteSummary, postgres, sqlite,
};

/// Where content lives, from `UGC_CONTENT_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentUrl {
    /// A SQLite file (`<data-dir>/content.db` when no URL is set).
    Sqlite(std::path::PathBuf),
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
}

impl ContentUrl {
    /// `None` or empty: SQLite under the data directory.
    pub fn parse(url: Option<&str>, data_dir: &Path) -> Result<ContentUrl, String> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(ContentUrl::Sqlite(data_dir.join("content.db"))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(ContentUrl::Postgres(u.to_owned()))
            }
            Some(u) => match u.strip_prefix("sqlite://") {
                Some(path) if !path.is_empty() => Ok(ContentUrl::Sqlite(path.into())),
                _ => Err(format!(
                    "UGC_CONTENT_URL must be postgres://… or sqlite://PATH, got {u:?}"
                )),
            },
        }
    }
}

/// Ratings, reviews and bookmarks for the edge: the store, plus a nudge to the outbox
/// relay after each change so events reach the log at once.
#[derive(Clone)]
pub struct ContentService {
    store: Arc<dyn ContentStore>,
    wake: Arc<Notify>,
}

impl ContentService {
    /// Opens the database and migrates its schema.
    pub async fn open(url: &ContentUrl) -> Result<ContentService, ContentError> {
        let store: Arc<dyn ContentStore> = match url {
            ContentUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        ContentError::Internal(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                Arc::new(sqlite::Store::open(path).await?)
            }
            ContentUrl::Postgres(url) => Arc::new(postgres::Store::connect(url).await?),
        };
        store.migrate().await?;
        Ok(Self::new(store))
    }

    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Starts the outbox relay into `producer`; it ends when `stop` turns true.
    pub fn spawn_relay(
        &self,
        producer: Arc<dyn LogProducer>,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::relay::run(
            self.store.clone(),
            producer,
            self.wake.clone(),
            stop,
        ))
    }

    pub fn store(&self) -> &dyn ContentStore {
        self.store.as_ref()
    }

    fn changed<T>(&self, r: Result<T, ContentError>) -> Result<T, ContentError> {
        if r.is_ok() {
            self.wake.notify_one();
        }
        r
    }

    pub async fn set_rating(
        &self,
        user: &UserId,
        film: FilmId,
        score: Score,
    ) -> Result<Rating, ContentError> {
        let r = self
            .store
            .set_rating(user, film, score, Timestamp::now())
            .await;
        self.changed(r)
    }

    pub async fn remove_rating(&self, user: &UserId, film: FilmId) -> Result<bool, ContentError> {
        let r = self.store.remove_rating(user, film, Timestamp::now()).await;
        self.changed(r)
    }

    pub async fn rating_summary(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<RatingSummary, ContentError> {
        self.store.rating_summary(user, film).await
    }

    pub async fn ratings_of(
        &self,
        user: &UserId,
        limit: Limit,
        cursor: Option<&str>,
    ) -> Result<Page<Rating>, ContentError> {
        let after = cursor.map(Cursor::decode).transpose()?;
        self.store.ratings_of(user, limit, after).await
    }

    pub async fn add_bookmark(
        &self,
        user: &UserId,
        film: FilmId,
    ) -> Result<(Bookmark, bool), ContentError> {
        let r = self.store.add_bookmark(user, film, Timestamp::now()).await;
        self.changed(r)
    }

    pub async fn remove_bookmark(&self, user: &UserId, film: FilmId) -> Result<bool, ContentError> {
        let r = self
            .store
            .remove_bookmark(user, film, Timestamp::now())
            .await;
        self.changed(r)
    }

    pub async fn bookmarks_of(
        &self,
        user: &UserId,
        limit: Limit,
        cursor: Option<&str>,
    ) -> Result<Page<Bookmark>, ContentError> {
        let after = cursor.map(Cursor::decode).transpose()?;
        self.store.bookmarks_of(user, limit, after).await
    }

    pub async fn post_review(
        &self,
        user: &UserId,
        film: FilmId,
        title: Option<String>,
        text: ReviewText,
        score: Option<Score>,
    ) -> Result<Review, ContentError> {
        let r = self
            .store
            .post_review(user, film, title, text, score, Timestamp::now())
            .await;
        self.changed(r)
    }

    pub async fn review(&self, id: ReviewId) -> Result<Review, ContentError> {
        self.store
            .review(id)
            .await?
            .ok_or_else(|| ContentError::NotFound(format!("no review {id}")))
    }

    pub async fn edit_review(
        &self,
        user: &UserId,
        id: ReviewId,
        title: Option<Option<String>>,
        text: Option<ReviewText>,
        score: Option<Score>,
    ) -> Result<Review, ContentError> {
        let r = self
            .store
            .edit_review(user, id, title, text, score, Timestamp::now())
            .await;
        self.changed(r)
    }

    pub async fn remove_review(
        &self,
        user: &UserId,
        admin: bool,
        id: ReviewId,
    ) -> Result<(), ContentError> {
        let r = self
            .store
            .remove_review(user, admin, id, Timestamp::now())
            .await;
        self.changed(r)
    }

    pub async fn reviews_of_film(
        &self,
        film: FilmId,
        sort: ReviewSort,
        limit: Limit,
        cursor: Option<&str>,
    ) -> Result<Page<Review>, ContentError> {
        let after = cursor.map(Cursor::decode).transpose()?;
        // A cursor of one order is no position in another.
        if after
            .as_ref()
            .is_some_and(|c| c.rank.is_some() != (sort == ReviewSort::Top))
        {
            return Err(ContentError::BadCursor(
                "this cursor belongs to another sort order".into(),
            ));
        }
        self.store.reviews_of_film(film, sort, limit, after).await
    }

    pub async fn reviews_of_user(
        &self,
        user: &UserId,
        limit: Limit,
        cursor: Option<&str>,
    ) -> Result<Page<Review>, ContentError> {
        let after = cursor.map(Cursor::decode).transpose()?;
        self.store.reviews_of_user(user, limit, after).await
    }

    pub async fn vote(
        &self,
        user: &UserId,
        id: ReviewId,
        value: Vote,
    ) -> Result<VoteSummary, ContentError> {
        let r = self.store.vote(user, id, value, Timestamp::now()).await;
        self.changed(r)
    }

    pub async fn unvote(&self, user: &UserId, id: ReviewId) -> Result<bool, ContentError> {
        let r = self.store.unvote(user, id, Timestamp::now()).await;
        self.changed(r)
    }

    pub async fn create_film(
        &self,
        title: String,
        description: Option<String>,
    ) -> Result<Film, ContentError> {
        self.store
            .create_film(title, description, Timestamp::now())
            .await
    }

    pub async fn film(&self, id: FilmId) -> Result<Option<Film>, ContentError> {
        self.store.film(id).await
    }

    pub async fn films(&self, ascending: bool) -> Result<Vec<Film>, ContentError> {
        self.store.films(ascending).await
    }

    pub async fn update_film(
        &self,
        id: FilmId,
        title: Option<String>,
        description: Option<Option<String>>,
    ) -> Result<Option<Film>, ContentError> {
        self.store.update_film(id, title, description).await
    }

    pub async fn delete_film(&self, id: FilmId) -> Result<bool, ContentError> {
        self.store.delete_film(id).await
    }

    pub async fn rating_by_id(&self, id: uuid::Uuid) -> Result<Option<UserRating>, ContentError> {
        self.store.rating_by_id(id).await
    }

    pub async fn film_ratings(&self, film: FilmId) -> Result<Vec<UserRating>, ContentError> {
        self.store.film_ratings(film).await
    }

    pub async fn user_ratings(
        &self,
        user: &UserId,
        ascending: bool,
    ) -> Result<Vec<UserRating>, ContentError> {
        self.store.user_ratings(user, ascending).await
    }

    pub async fn reviews(
        &self,
        of: ReviewsOf,
        ascending: bool,
    ) -> Result<Vec<Review>, ContentError> {
        self.store.reviews(of, ascending).await
    }

    /// Everything of a user, for the admins' erasure.
    pub async fn erase_user(&self, user: &UserId) -> Result<(), ContentError> {
        self.store.erase_user(user).await
    }

    pub async fn ping(&self) -> Result<(), ContentError> {
        self.store.ping().await
    }
}
