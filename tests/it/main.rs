//! The integration tests, in one binary: each module is one area of the contract, and
//! `common` holds the fixtures they share (a PostgreSQL schema per test, the demo data).

#[macro_use]
mod common;

mod browser;
mod conformance;
mod eager;
mod failover;
mod faults;
mod hostile;
mod instances;
mod layer;
mod live;
mod mud_server;
mod names;
mod pgbouncer;
mod postgres;
mod purge;
mod races;
mod remember;
mod security;
#[cfg(feature = "sqlx")]
mod sqlx_store;
mod sudo;
mod test_login;
mod tls;
mod user_ids;
mod watch;
