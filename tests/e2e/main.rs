//! End-to-end suite: a real whd, a real SQLite file, real HTTP receivers on loopback.

mod dashboard;
mod delivery;
mod ingest;
mod json_api;
mod recovery;
mod subscriptions;
