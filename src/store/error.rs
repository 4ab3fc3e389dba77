//! How the store tells errors apart: by SQLSTATE (docs/compatibility.md D6).

/// How an error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, serialization failure, deadlock, resources, shutdown: retry the same batch later.
    Transient,
    /// The data was rejected: isolate the offending events and quarantine them.
    Data,
}

impl ErrorClass {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Data => "data",
        }
    }
}

/// Classifies a database error by SQLSTATE (docs/compatibility.md D6): data exceptions (class 22) and integrity violations
/// (23) are about the rows, so the offending events are isolated; everything else is retried.
///
/// Class 42 (syntax error or access rule violation) is deliberately *not* treated as data, although docs/compatibility.md D6 lists
/// it: every statement's text is a constant and no event content ever reaches it, so a 42 error (a dropped column,
/// a missing privilege, a type mismatch) fails for every event alike. Isolating would quarantine the whole stream;
/// retrying keeps the batch until the schema is fixed, with the SQLSTATE in the logs and metrics.
pub fn classify(error: &sqlx::Error) -> ErrorClass {
    match sqlstate(error).as_deref() {
        Some(code) if code.starts_with("22") || code.starts_with("23") => ErrorClass::Data,
        _ => ErrorClass::Transient,
    }
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("cancelled while waiting to retry")]
    Cancelled,
}
