//! purgeq: a durable CDN purge queue.
//!
//! Producers [`store::Store::enqueue`] purge jobs; a worker claims them per lane, collapses
//! duplicate targets ([`planner`]), calls the provider ([`provider`]), and records each job's
//! outcome; the `status` command reads the audit trail. ARCHITECTURE.md maps the modules, the path of
//! a job through them, and where each invariant is enforced.

pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod emulator;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pacer;
pub mod planner;
pub mod policy;
pub mod provider;
pub mod quota;
pub mod seal;
pub mod secret;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod target;
pub mod text;
pub mod worker;
