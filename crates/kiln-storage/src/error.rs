//! What can go wrong with storage, told so that a worker can decide whether
//! another attempt may help ([`StorageError::is_transient`]).

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {key:?} not found")]
    NotFound { key: String },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("object {key:?} is {size} bytes, more than the {limit} allowed")]
    TooLarge { key: String, size: u64, limit: u64 },
    #[error("object {key:?}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The server refused or failed a request.
    #[error("{operation} {key:?} failed: {message}")]
    Backend {
        operation: &'static str,
        key: String,
        message: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
    },
    #[error("storage is misconfigured: {0}")]
    Config(String),
}

impl StorageError {
    pub(crate) fn io(key: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return StorageError::NotFound { key: key.to_owned() };
        }
        StorageError::Io {
            key: key.to_owned(),
            source,
        }
    }

    /// Whether the same request may succeed later: a network failure, a
    /// 5xx or throttling answer, a full disk. A missing object, a bad key
    /// or a refusal (4xx) will not change by retrying.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::NotFound { .. }
            | StorageError::InvalidKey { .. }
            | StorageError::TooLarge { .. }
            | StorageError::Config(_) => false,
            StorageError::Io { .. } => true,
            StorageError::Backend { status, .. } => match status {
                None => true,
                Some(code) => *code >= 500 || *code == 429 || *code == 408,
            },
        }
    }
}
