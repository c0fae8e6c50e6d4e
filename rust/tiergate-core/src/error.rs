//! The core's one error type. The core does no I/O, so nothing it reports is worth
//! retrying with the same input: every error says what was wrong with the input.

use std::fmt;

/// What kind of input was rejected. The bindings map `InvalidInput` to
/// `ValueError` and `OutOfRange` to `IndexError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed JSON, a non-object body, a NaN, a negative duration, a bad quantile...
    InvalidInput,
    /// A candidate index past the end of the table.
    OutOfRange,
}

/// An input the core refused, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CoreError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
        }
    }

    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::OutOfRange,
            message: message.into(),
        }
    }

    /// Always `false`: the core is deterministic, the same input fails the same way.
    pub fn retryable(&self) -> bool {
        false
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CoreError {}

impl From<serde_json::Error> for CoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::invalid(format!("invalid JSON body: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;
