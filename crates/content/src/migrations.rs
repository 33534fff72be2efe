//! Versioned migrations, built into the binary (no files to ship), applied at start by
//! sqlx's migrator, which records each version and refuses a changed one.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "ratings bookmarks outbox",
        include_str!("../migrations/0001_ratings_bookmarks.sql"),
    ),
    (
        2,
        "reviews votes",
        include_str!("../migrations/0002_reviews.sql"),
    ),
    (
        3,
        "seed 003 films, rating ids, review titles",
        include_str!("../migrations/0003_seed003.sql"),
    ),
];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

pub async fn migrator() -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded).await
}
