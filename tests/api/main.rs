//! Integration tests: a real server on loopback, over HTTP, against a fresh Postgres
//! database per test and against SQLite.

mod helpers;

mod attribution_backlog;
mod bad_input;
mod billed_cost;
mod cardinality;
mod config;
mod counting;
mod database_stall;
mod deployment_inputs;
mod disk_full;
mod fixtures;
mod hostile_values;
mod openapi;
mod ops;
mod postgres_tls;
mod presend;
mod presumed_new;
mod process;
mod queries;
mod recent_rows;
mod relay;
mod replicas_and_faults;
mod saturation;
mod schemathesis;
mod signatures;
mod slow_clients;
mod sms_cost;
mod v1;
mod write_conflicts;
