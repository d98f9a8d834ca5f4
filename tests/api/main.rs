//! Integration tests: a real server on loopback, over HTTP, against a fresh Postgres
//! database per test and against SQLite.

mod helpers;

mod bad_input;
mod counting;
mod fixtures;
mod ops;
mod process;
mod replicas_and_faults;
mod signatures;
mod slow_clients;
