#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
pub mod compat;
mod config;
mod error;
mod exporter;
pub mod report;
mod router;
mod rules;
mod server;

pub use axum;
pub use config::{ADDR_VAR, Endpoint, MonitorConfig, OPEN_VAR, PING_TIMEOUT_VAR, TOKEN_VAR};
pub use error::Error;
pub use exporter::{
    SECONDS_BUCKETS, UPKEEP_INTERVAL, build_recorder, builder, install, install_with, installed,
};
pub use metrics_exporter_prometheus;
pub use router::{Monitor, MonitorBuilder, router};
pub use rules::alert_rules;
pub use server::{Server, serve};
