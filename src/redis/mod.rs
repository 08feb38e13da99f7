//! Redis: the connection pool with its health state (one node or a
//! [`cluster`]), the key layout, the event writer's own connection to a
//! single node ([`direct`], speaking [`wire`]), and the pipelined connections
//! cache lookups and stores share on a single node ([`mux`]).

pub mod cluster;
pub mod direct;
mod error;
mod health;
pub mod keys;
pub mod log_target;
pub mod mux;
mod options;
pub mod pool;
pub mod tier;
pub mod wire;

pub use error::RedisFailure;
pub use health::Health;
pub use log_target::LogTarget;
pub use options::{RedisConfig, redact_url};
pub use pool::{Node, RedisPool};
pub use tier::{CacheTier, TierStats};
pub use wire::{Commands, RespBuf};
