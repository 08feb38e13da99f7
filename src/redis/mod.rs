//! Redis: the connection pool with its health state, the key layout, and
//! the event writer's own connection ([`direct`], speaking [`wire`]).

pub mod direct;
pub mod keys;
pub mod pool;
pub mod wire;

pub use pool::{Health, RedisPool};
