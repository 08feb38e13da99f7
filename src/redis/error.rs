//! Why a Redis call gave no answer: the one error every Redis caller sees,
//! whatever the topology or the client underneath.

use bb8_redis::redis::RedisError;

use super::mux::MuxError;

/// Why a Redis call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// The breaker is open: Redis failed recently and is not asked.
    #[error("redis is marked down")]
    Down,
    #[error("redis did not answer in time")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Lookup(#[from] MuxError),
}
