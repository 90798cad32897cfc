//! Staying connected: capped, jittered exponential backoff, and a
//! connection slot that reconnects on demand, so a lost connection or a
//! database restart costs the worker a few retries, not its life.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::db::Database;

/// First retry delay.
const BASE: Duration = Duration::from_millis(200);
/// Longest delay between retries: a database back from a restart is seen
/// within this long.
const CAP: Duration = Duration::from_secs(4);

/// Exponential backoff with jitter, capped at [`CAP`].
#[derive(Debug, Default)]
pub(super) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay: BASE · 2^attempt capped at CAP, times a random
    /// factor in [0.5, 1) so that many workers do not retry in step.
    pub(super) fn next_delay(&mut self) -> Duration {
        let exp = BASE.saturating_mul(1u32 << self.attempt.min(10));
        self.attempt = self.attempt.saturating_add(1);
        let capped = exp.min(CAP);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 2000.0;
        capped.mul_f64(0.5 + jitter)
    }

    /// Sleep the next delay; false when `stop` was cancelled first.
    pub(super) async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = stop.cancelled() => false,
        }
    }

    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Retries since the last success.
    pub(super) fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// A connection opened on demand and reopened after it broke.
pub(super) struct Conn {
    database: Database,
    client: Option<Client>,
    backoff: Backoff,
    role: &'static str,
}

impl Conn {
    pub(super) fn new(database: Database, role: &'static str) -> Self {
        Self {
            database,
            client: None,
            backoff: Backoff::default(),
            role,
        }
    }

    /// The open connection, connecting (with backoff) as needed; None only
    /// when `stop` is cancelled while waiting.
    pub(super) async fn get(&mut self, stop: &CancellationToken) -> Option<&mut Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        while self.client.is_none() {
            match self.database.connect().await {
                Ok(c) => {
                    if self.backoff.attempts() > 0 {
                        tracing::warn!(connection = self.role, "reconnected to the database");
                    }
                    self.backoff.reset();
                    self.client = Some(c);
                }
                Err(e) => {
                    if self.backoff.attempts() == 0 {
                        tracing::warn!(
                            connection = self.role,
                            "cannot reach the database, retrying: {e:#}"
                        );
                    } else {
                        tracing::debug!(
                            connection = self.role,
                            "still cannot reach the database: {e:#}"
                        );
                    }
                    if !self.backoff.wait(stop).await {
                        return None;
                    }
                }
            }
        }
        self.client.as_mut()
    }

    /// Forget a connection that failed, so the next `get` reconnects.
    pub(super) fn broken(&mut self) {
        self.client = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= BASE / 2 && first < BASE, "{first:?}");
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d < CAP, "{d:?}");
        }
        assert!(b.next_delay() >= CAP / 2);
        b.reset();
        assert!(b.next_delay() < BASE);
    }
}
