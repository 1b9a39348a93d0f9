//! DHT-Hunter (work in progress).
