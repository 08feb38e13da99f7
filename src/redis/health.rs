//! The breaker in front of Redis: up or down, opened by failures, closed by
//! the first success, each change of state logged once (not per request).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bb8_redis::bb8;
use bb8_redis::redis::RedisError;

use super::RedisFailure;

/// Keeps the last connection error bb8 saw, so the "redis is unreachable"
/// warning can say why (bb8's own `get` only reports a timeout).
#[derive(Debug, Clone, Default)]
pub(super) struct LastError(Arc<std::sync::Mutex<Option<String>>>);

impl bb8::ErrorSink<RedisError> for LastError {
    fn sink(&self, error: RedisError) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

impl LastError {
    /// bb8's own error (a timeout) with the connect error behind it, e.g. a
    /// refused password or certificate, which is what the user can fix.
    pub(super) fn explain(&self, e: bb8::RunError<RedisError>) -> String {
        let last = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match last {
            Some(cause) => format!("{e} (last connect error: {cause})"),
            None => e.to_string(),
        }
    }
}

/// Consecutive failures that open the breaker.
const TRIP_AFTER: u32 = 3;
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Up or down, with the state change logged once (not per request).
pub struct Health {
    up: AtomicBool,
    failures: AtomicU32,
    /// Errors seen, by any caller, for metrics.
    errors: AtomicU64,
    target: String,
    pub(super) last_error: LastError,
}

impl Health {
    pub(super) fn new(target: String, last_error: LastError) -> Health {
        Health {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            errors: AtomicU64::new(0),
            target,
            last_error,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(super) fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(redis = %self.target, "redis is reachable again");
        }
    }

    pub(super) fn failure(&self, why: &RedisFailure, trip_now: bool) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if (trip_now || n >= TRIP_AFTER) && self.up.swap(false, Ordering::AcqRel) {
            let cause = self
                .last_error
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| why.to_string());
            tracing::warn!(
                redis = %self.target,
                error = %cause,
                "redis is unreachable; serving from L1 and the backend until it answers"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_trips_after_repeated_failures_and_closes_on_success() {
        let h = Health::new("t".into(), LastError::default());
        for _ in 0..TRIP_AFTER - 1 {
            h.failure(&RedisFailure::Timeout, false);
            assert!(h.is_up());
        }
        h.failure(&RedisFailure::Timeout, false);
        assert!(!h.is_up());
        h.success();
        assert!(h.is_up());
        h.failure(&RedisFailure::Timeout, true);
        assert!(!h.is_up());
    }
}
