//! tiergate's routing core: pure functions and data structures, no I/O, no Python.
#![forbid(unsafe_code)]

/// Version of the core, reported by the Python package.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
