//! Bounded exponential backoff for loops that outlive their dependencies (relay,
//! projector): 100 ms doubling to 5 s, with jitter, forever until reset.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

pub struct Backoff {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        Backoff {
            current: builder.build(),
            builder,
        }
    }
}

impl Backoff {
    /// The next delay; grows until [`Backoff::reset`].
    pub fn next_delay(&mut self) -> Duration {
        self.current.next().unwrap_or(Duration::from_secs(5))
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }
}
