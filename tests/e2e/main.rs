//! End-to-end suite: a real whd, a real SQLite file, real HTTP receivers on loopback.

mod attempt_log;
mod bench;
mod cli;
mod dashboard;
mod delivery;
mod grpc_web;
mod ingest;
mod json_api;
mod recovery;
mod reflection;
mod security;
mod subscriptions;
mod watch;
