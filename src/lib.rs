//! logmesh: one binary that turns any number of machines into a log platform.
//!
//! The library holds everything; `src/main.rs` only parses arguments and calls [`cli::run`].
//! See ARCHITECTURE.md for the code map, the data flow and the invariants.

pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod counters;
pub mod disk;
pub mod e2e;
pub mod event;
pub mod eventlog;
pub mod files;
pub mod http;
pub mod intake;
pub mod lane;
pub mod live;
pub mod metrics;
pub mod nats;
pub mod node;
pub mod pipeline;
pub mod queue;
pub mod store;
pub mod syslog;
pub mod telemetry;
pub mod units;
pub mod work;
