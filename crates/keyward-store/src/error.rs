/// What a change ran into in what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    AppSlugTaken,
    /// A permission being removed from an app is still held by one of its live keys.
    PermissionInUse,
    /// A revoked key cannot be changed.
    KeyRevoked,
    RateLimitSchemeInUse,
    RateLimitSchemeExists,
    /// An app changed while the change read it.
    AppChanged,
    SecretExists,
    /// The key's owner already holds this many active keys of its app.
    MaxKeysReached(u32),
}

/// A value that refers to something that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    UnknownRateLimitScheme,
    UnknownApp,
}

/// Why a change is not the caller's to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// The credential changed confers more than the caller holds.
    InsufficientScope,
    /// The caller's own credential is gone or revoked (it raced its own revocation).
    ActorRevoked,
}

/// Storage failures, in the terms the layers above act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0:?}")]
    Conflict(Conflict),
    #[error("invalid reference: {0:?}")]
    InvalidReference(Reference),
    #[error("not permitted: {0:?}")]
    NotPermitted(Forbidden),
    /// Storage cannot be reached; the caller should answer 503 and try again later.
    #[error("storage is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("storage failed: {0}")]
    Database(#[source] sqlx::Error),
    /// A change's commit failed in a way that does not tell whether it happened. Caches must
    /// forget `stale` (and the cluster must hear of it) as if it had.
    #[error("the change may or may not have been stored: {source}")]
    UncertainCommit {
        #[source]
        source: sqlx::Error,
        stale: crate::Stale,
        propagation: Option<crate::Propagation>,
    },
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("migrating the database failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
        matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
    }

    /// For `map_err` on an insert: a unique violation becomes `Conflict(conflict)`.
    pub(crate) fn conflict_if_duplicate(conflict: Conflict) -> impl FnOnce(sqlx::Error) -> Self {
        move |error| {
            if Self::is_unique_violation(&error) {
                Self::Conflict(conflict)
            } else {
                error.into()
            }
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error),
            sqlx::Error::Database(ref db) if db.code().as_deref() == Some("5") => {
                // SQLITE_BUSY: the database is locked for longer than the busy timeout.
                StoreError::Unavailable(error)
            }
            sqlx::Error::Database(ref db)
                if matches!(db.code().as_deref(), Some("40P01" | "40001" | "57P01")) =>
            {
                // PostgreSQL: a deadlock victim, a serialization failure, or a server shutting
                // down. Nothing was committed; the caller may simply try again.
                StoreError::Unavailable(error)
            }
            other => StoreError::Database(other),
        }
    }
}
