//! [`StoreError`]: what went wrong in a store, with the engine's own error kept as its source.

/// An engine's own error, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store.
///
/// `Display` is one line that stands on its own (it already says what the source says), so a
/// printer need not walk the chain; it never holds a secret (a database URL's password, a
/// password hash). The source is there for logs that want the engine's own error and for
/// callers that downcast it; [`StoreError::code`] gives the engine's error code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such record (or not the caller's: the store does not tell the difference).
    #[error("not found")]
    NotFound,
    /// A unique name is taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The change is not allowed in the record's current state (e.g. regenerating a revoked token).
    #[error("{0}")]
    InvalidState(&'static str),
    /// The database could not be reached or answered with an error.
    #[error("database unavailable: {what}")]
    Unavailable {
        /// What failed, in words.
        what: String,
        /// The engine's error code, when it gave one: PostgreSQL's SQLSTATE, SQLite's extended
        /// result code (as a decimal number).
        code: Option<String>,
        /// The engine's error (sqlx, rusqlite, I/O), when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The database holds something keyward did not write (a corrupt or foreign row).
    #[error("corrupt record: {what}")]
    Corrupt {
        /// What is wrong, in words (a column name and why, or the engine's message).
        what: String,
        /// The engine's error code, as for [`StoreError::Unavailable`].
        code: Option<String>,
        /// The engine's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A long operation (a restore, a backup) stopped because its [`Progress`](crate::Progress)
    /// said so, before writing anything that stays: the transaction was rolled back, the
    /// partial file removed.
    #[error("interrupted before anything was written")]
    Interrupted,
}

impl StoreError {
    /// [`StoreError::Unavailable`] with no engine error behind it.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable {
            what: what.into(),
            code: None,
            source: None,
        }
    }

    /// [`StoreError::Corrupt`] with no engine error behind it.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            code: None,
            source: None,
        }
    }

    /// [`StoreError::Unavailable`] caused by `source`. `what` must already say what `source`
    /// says (see the type's docs).
    pub(crate) fn unavailable_from(
        what: impl Into<String>,
        code: Option<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Unavailable {
            what: what.into(),
            code,
            source: Some(source.into()),
        }
    }

    /// [`StoreError::Corrupt`] caused by `source`, as [`StoreError::unavailable_from`].
    pub(crate) fn corrupt_from(
        what: impl Into<String>,
        code: Option<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Corrupt {
            what: what.into(),
            code,
            source: Some(source.into()),
        }
    }

    /// The engine's error code behind this error, if it gave one: PostgreSQL's SQLSTATE (e.g.
    /// `57P01`, the server shutting down), SQLite's extended result code (e.g. `261`,
    /// `SQLITE_BUSY_RECOVERY`).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Unavailable { code, .. } | Self::Corrupt { code, .. } => code.as_deref(),
            Self::NotFound | Self::Conflict(_) | Self::InvalidState(_) | Self::Interrupted => None,
        }
    }
}

/// Results from a store.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_source_and_code_are_kept_and_display_is_one_line() {
        let io = std::io::Error::other("connection reset");
        let err = StoreError::unavailable_from(
            format!("cannot read: {io}"),
            Some("08006".to_owned()),
            io,
        );
        assert_eq!(
            err.to_string(),
            "database unavailable: cannot read: connection reset"
        );
        assert_eq!(err.code(), Some("08006"));
        assert_eq!(
            err.source().map(ToString::to_string).as_deref(),
            Some("connection reset")
        );
    }
}
