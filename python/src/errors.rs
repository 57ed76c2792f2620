//! Cairn errors as Python exceptions. The classes and the kind → class
//! table live in Python (`cairn/errors.py`), so that they can subclass
//! several builtins (`cairn.InvalidInput` is a `ValueError` too); this side
//! only hands over the kind and the message.

use cairn_types::{Error, ErrorKind};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

pub fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::AlreadyExists => "AlreadyExists",
        ErrorKind::NotADirectory => "NotADirectory",
        ErrorKind::IsADirectory => "IsADirectory",
        ErrorKind::DirectoryNotEmpty => "DirectoryNotEmpty",
        ErrorKind::InvalidInput => "InvalidInput",
        ErrorKind::PermissionDenied => "PermissionDenied",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::Unavailable => "Unavailable",
        ErrorKind::Corrupt => "Corrupt",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::NoSpace => "NoSpace",
        ErrorKind::Internal => "Internal",
        ErrorKind::TooLarge => "TooLarge",
    }
}

/// The Python exception for `e`: `cairn.errors.from_native(kind, message)`.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let made = py
        .import("cairn.errors")
        .and_then(|m| m.getattr("from_native"))
        .and_then(|f| f.call1((kind_name(e.kind), e.message.as_str())));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        // Only if the Python half is missing or broken.
        Err(_) => PyOSError::new_err(format!("{:?}: {}", e.kind, e.message)),
    }
}
