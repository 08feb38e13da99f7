//! Redis: the connection pool with its health state, and the key layout.

pub mod keys;
pub mod pool;

pub use pool::{Health, RedisPool};
