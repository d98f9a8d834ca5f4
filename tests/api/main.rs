//! Integration tests: a real server on loopback, over HTTP, against a fresh Postgres
//! database per test and against SQLite.

mod helpers;

mod bad_input;
mod config;
mod counting;
mod fixtures;
mod hostile_values;
mod openapi;
mod ops;
mod presend;
mod presumed_new;
mod process;
mod queries;
mod recent_rows;
mod replicas_and_faults;
mod schemathesis;
mod signatures;
mod slow_clients;
mod v1;
mod write_conflicts;
