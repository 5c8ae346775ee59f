//! The one error type of the crate.
//!
//! Every variant names the file (or tensor source) it concerns, so that a user reading the message
//! knows where to look. No code path of the library panics on bad input: it returns one of these.

use std::path::PathBuf;

/// Errors of the xinc library.
#[derive(Debug, thiserror::Error)]
pub enum XincError {
    /// Reading or writing a file failed at the operating-system level.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An image file could not be decoded (truncated, corrupt, unsupported layout).
    #[error("{}: cannot decode image: {reason}", path.display())]
    Image { path: PathBuf, reason: String },

    /// A configuration or metadata file (JSON/YAML) is malformed or lacks a field.
    #[error("{}: invalid configuration: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    /// A dataset's files disagree with each other or with the format (a segment id missing from
    /// the JSON, a frame without its annotation, a flow array of the wrong shape, …).
    #[error("{}: malformed dataset: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },

    /// A checkpoint container (PyTorch zip/pickle or safetensors) is unreadable or unsafe.
    #[error("{}: cannot read checkpoint: {reason}", path.display())]
    Checkpoint { path: PathBuf, reason: String },

    /// A tensor that the model needs is absent from the weights.
    #[error("{origin}: missing tensor `{name}`")]
    MissingTensor { origin: String, name: String },

    /// The weights hold tensors that the model does not know.
    #[error("{origin}: unexpected tensor(s) {names:?}")]
    UnexpectedTensors { origin: String, names: Vec<String> },

    /// A tensor has the wrong shape.
    #[error("{origin}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        origin: String,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor holds NaN or infinite values.
    #[error("{origin}: tensor `{name}` holds {count} non-finite value(s)")]
    NonFinite {
        origin: String,
        name: String,
        count: usize,
    },

    /// A caller passed an argument outside its domain (a size of zero, an unknown layer name, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An error raised inside candle (tensor arithmetic, device).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, XincError>;

impl XincError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        XincError::Io {
            path: path.into(),
            source,
        }
    }

    /// A checkpoint error for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        XincError::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A configuration error for `path`.
    pub fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        XincError::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A malformed-dataset error for `path`.
    pub fn dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        XincError::Dataset {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An image decoding error for `path`.
    pub fn image(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        XincError::Image {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
