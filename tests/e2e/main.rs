//! End-to-end suite: a real whd, a real SQLite file, real HTTP receivers on loopback.

mod delivery;
mod ingest;
mod recovery;
mod subscriptions;
