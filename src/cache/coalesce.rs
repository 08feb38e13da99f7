//! Request coalescing: concurrent misses for one key send one backend request
//! (docs/contract.md section 3, step 10).
//!
//! The first request for a key becomes the leader and holds a [`FlightGuard`];
//! the others wait on its outcome. The guard's `Drop` publishes
//! [`Outcome::Retry`] when the leader is cancelled (its client hung up), so a
//! waiter takes over instead of waiting forever; cancellation safety does not
//! depend on the leader's future running to completion.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::envelope::Entry;

/// What the leader's request came to.
#[derive(Clone, Debug)]
pub enum Outcome {
    Pending,
    /// The answer was stored: serve it.
    Stored(Arc<Entry>),
    /// The answer may not be shared (not storable, or too large): each waiter
    /// asks the backend itself.
    GoDirect,
    /// The leader failed or went away: contend again (one becomes leader).
    Retry,
}

struct Flight {
    tx: watch::Sender<Outcome>,
}

/// The keys with a backend request in flight.
#[derive(Default)]
pub struct Coalescer {
    /// std Mutex: held only to look up or insert, never across an `.await`.
    flights: Mutex<foldhash::HashMap<String, Arc<Flight>>>,
    waits: std::sync::atomic::AtomicU64,
}

pub enum Join {
    Leader(FlightGuard),
    Waiter(watch::Receiver<Outcome>),
}

impl Coalescer {
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(key) {
            self.waits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Join::Waiter(flight.tx.subscribe());
        }
        let flight = Arc::new(Flight {
            tx: watch::Sender::new(Outcome::Pending),
        });
        flights.insert(key.to_owned(), flight.clone());
        Join::Leader(FlightGuard {
            coalescer: self.clone(),
            key: key.to_owned(),
            flight,
            finished: false,
        })
    }

    fn remove(&self, key: &str, flight: &Arc<Flight>) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
    }

    /// Requests that waited for another's backend answer, since startup.
    pub fn waits(&self) -> u64 {
        self.waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keys with a request in flight (for metrics and tests).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Held by the leader until it publishes an outcome.
pub struct FlightGuard {
    coalescer: Arc<Coalescer>,
    key: String,
    flight: Arc<Flight>,
    finished: bool,
}

impl FlightGuard {
    pub fn finish(mut self, outcome: Outcome) {
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        // Remove the flight before announcing: a woken waiter that contends
        // again must find a new flight (or lead one), never this finished one.
        self.coalescer.remove(&self.key, &self.flight);
        self.flight.tx.send_replace(outcome);
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.publish(Outcome::Retry);
    }
}

/// Waits for the leader, at most `limit`; a leader that takes longer than
/// that is left to finish alone and the waiter goes to the backend itself.
pub async fn wait(mut rx: watch::Receiver<Outcome>, limit: Duration) -> Outcome {
    let waited = tokio::time::timeout(limit, async {
        loop {
            let current = rx.borrow_and_update().clone();
            if !matches!(current, Outcome::Pending) {
                return current;
            }
            if rx.changed().await.is_err() {
                return Outcome::Retry;
            }
        }
    })
    .await;
    waited.unwrap_or(Outcome::GoDirect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_request_waits_for_the_first() {
        let c = Arc::new(Coalescer::default());
        let Join::Leader(guard) = c.join("k") else {
            panic!("first must lead")
        };
        let Join::Waiter(rx) = c.join("k") else {
            panic!("second must wait")
        };
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(5)));
        guard.finish(Outcome::GoDirect);
        assert!(matches!(waiter.await.unwrap(), Outcome::GoDirect));
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters() {
        let c = Arc::new(Coalescer::default());
        let Join::Leader(guard) = c.join("k") else {
            panic!()
        };
        let Join::Waiter(rx) = c.join("k") else {
            panic!()
        };
        drop(guard);
        assert!(matches!(
            wait(rx, Duration::from_secs(5)).await,
            Outcome::Retry
        ));
        assert!(
            matches!(c.join("k"), Join::Leader(_)),
            "a waiter can take over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nobody_waits_forever() {
        let c = Arc::new(Coalescer::default());
        let Join::Leader(_guard) = c.join("k") else {
            panic!()
        };
        let Join::Waiter(rx) = c.join("k") else {
            panic!()
        };
        assert!(matches!(
            wait(rx, Duration::from_secs(3)).await,
            Outcome::GoDirect
        ));
    }

    #[tokio::test]
    async fn other_keys_do_not_wait() {
        let c = Arc::new(Coalescer::default());
        let Join::Leader(_a) = c.join("a") else {
            panic!()
        };
        assert!(matches!(c.join("b"), Join::Leader(_)));
    }
}
