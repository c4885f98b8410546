//! Status mapping of database errors: PostgreSQL SQLSTATEs are not mistaken for SQLite's
//! retryable result codes.

/// A database error with a chosen SQLSTATE (PostgreSQL) or result code (SQLite).
#[derive(Debug)]
struct CodedError(&'static str);

impl std::fmt::Display for CodedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "database error {}", self.0)
    }
}

impl std::error::Error for CodedError {}

impl sqlx::error::DatabaseError for CodedError {
    fn message(&self) -> &str {
        "synthetic"
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.0.into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

/// A PostgreSQL SQLSTATE that happens to be all digits must not be read as a SQLite result
/// code. 22021 (character_not_in_repertoire: a NUL in text, which reached the database before
/// control characters were refused), 22022 and 42501 (insufficient_privilege) have 5 or 6 in
/// their low byte as numbers, like SQLITE_BUSY and SQLITE_LOCKED, and were answered
/// UNAVAILABLE ("retry with back-off") although no retry can succeed.
#[test]
fn sqlstates_are_not_mistaken_for_sqlite_busy_codes() {
    use todo_shared::db::{Failure, classify};
    let failure = |code: &'static str| classify(&sqlx::Error::Database(Box::new(CodedError(code))));
    let mut wrong = Vec::new();
    for code in ["22021", "22022", "42501", "23502", "22001", "42P01"] {
        if failure(code) != Failure::Internal {
            wrong.push(format!("SQLSTATE {code}: {:?}", failure(code)));
        }
    }
    // The SQLite codes the mapping is meant for stay retryable: SQLITE_BUSY (5),
    // SQLITE_LOCKED (6), SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED_SHAREDCACHE (262).
    for code in ["5", "6", "517", "262"] {
        assert_eq!(failure(code), Failure::Unavailable, "SQLite {code}");
    }
    assert!(wrong.is_empty(), "PostgreSQL errors that are not retryable classified as retryable: {wrong:#?}");
}
