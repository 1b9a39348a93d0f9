//! Thread-per-core runtime (work in progress).
