/// The content boundary's one error type.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ContentError {
    /// The database cannot answer now (down, unreachable, overloaded); worth a retry.
    #[error("the content database is unavailable: {0}")]
    Unavailable(String),
    /// A cursor that this service did not hand out.
    #[error("{0}")]
    BadCursor(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (not the author, or voting on their own review).
    #[error("{0}")]
    Forbidden(String),
    /// One review per user and film: this is the caller's existing one.
    #[error("you already reviewed this film: review {0}")]
    ReviewExists(ugc_model::ReviewId),
    #[error("content database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for ContentError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Tls(_)
            | E::Protocol(_) => ContentError::Unavailable(e.to_string()),
            E::Database(d) => {
                let code = d.code().unwrap_or_default();
                // PostgreSQL: connection exceptions (08), shutdown (57P0x), too many
                // connections (53300), serialization failure and deadlock (40001, 40P01).
                // SQLite: busy and locked (5, 6).
                let transient = code.starts_with("08")
                    || code.starts_with("57P0")
                    || matches!(&*code, "53300" | "40001" | "40P01" | "5" | "6");
                if transient {
                    ContentError::Unavailable(e.to_string())
                } else {
                    ContentError::Internal(e.to_string())
                }
            }
            _ => ContentError::Internal(e.to_string()),
        }
    }
}
