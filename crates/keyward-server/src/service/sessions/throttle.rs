//! The sign-in throttle: failed sign-ins counted per key (`user:NAME`, `ip:ADDR`) over a sliding
//! window, in memory.
//!
//! - An attempt **reserves** its place before the password is checked: the reservation counts as
//!   a failure at once, and is given back only if the sign-in succeeds or the password is never
//!   checked. So however many attempts arrive in parallel, at most [`SIGN_IN_LIMIT`] per key are
//!   checked within a window (checking first and counting after let 60 parallel attempts
//!   through).
//! - Attempts refused while a key is throttled form a **burst**: the first is reported at once,
//!   the rest are only counted, and [`SignInThrottle::ended_bursts`] reports each burst once
//!   more when it is over, with its count. An anonymous flood writes a few audit rows, not one
//!   per attempt.
//! - Memory is bounded: at most [`THROTTLE_KEYS`] keys, each with at most [`SIGN_IN_LIMIT`]
//!   times.

use keyward_core::UserId;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use time::Duration;

/// Failed sign-ins allowed per account name, and per client address, within [`SIGN_IN_WINDOW`].
pub const SIGN_IN_LIMIT: usize = 10;
/// The sliding window failed sign-ins are counted over.
pub const SIGN_IN_WINDOW: Duration = Duration::minutes(1);
/// How many names and addresses the throttle tracks before it forgets quiet ones.
pub const THROTTLE_KEYS: usize = 100_000;

/// What a throttle key stands for, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottleSubject {
    /// An account name: the user, when the name is a user's.
    Account(Option<UserId>),
    /// A client address.
    Address(IpAddr),
}

/// A burst of refused attempts on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// What was throttled.
    pub subject: ThrottleSubject,
    /// The first refused attempt (unix seconds).
    pub first: i64,
    /// The last refused attempt (unix seconds).
    pub last: i64,
    /// How many attempts were refused.
    pub refused: u64,
}

/// The answer to a reservation.
#[derive(Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The attempt may go ahead; its place is held as a failure until released.
    Granted,
    /// A key is throttled: the attempt is refused unchecked. `started` lists the keys whose
    /// burst this attempt began (report those now).
    Throttled {
        /// Keys (indexes into the reserved keys) whose burst starts with this attempt.
        started: Vec<usize>,
    },
}

#[derive(Default)]
struct State {
    failures: HashMap<String, VecDeque<i64>>,
    bursts: HashMap<String, Burst>,
}

/// Failed sign-ins per key, and the bursts of refusals; see the module docs.
#[derive(Default)]
pub struct SignInThrottle {
    state: Mutex<State>,
}

impl SignInThrottle {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // The lock guards plain maps updated in single steps, so a poisoned one is still sound.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// Reserves a place for one attempt on every key at `now`, or refuses it if any key has
    /// [`SIGN_IN_LIMIT`] failures in the window. `subjects[i]` says what `keys[i]` stands for.
    pub fn reserve(&self, keys: &[String], subjects: &[ThrottleSubject], now: i64) -> Reservation {
        let since = now - SIGN_IN_WINDOW.whole_seconds();
        self.with(|state| {
            let mut blocked = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                if let Some(times) = state.failures.get_mut(key) {
                    while times.front().is_some_and(|&t| t <= since) {
                        times.pop_front();
                    }
                    if times.len() >= SIGN_IN_LIMIT {
                        blocked.push(i);
                    }
                }
            }
            if !blocked.is_empty() {
                let mut started = Vec::new();
                for i in blocked {
                    let subject = subjects
                        .get(i)
                        .cloned()
                        .unwrap_or(ThrottleSubject::Account(None));
                    let burst = state.bursts.entry(keys[i].clone()).or_insert_with(|| {
                        started.push(i);
                        Burst {
                            subject,
                            first: now,
                            last: now,
                            refused: 0,
                        }
                    });
                    burst.last = now;
                    burst.refused += 1;
                }
                return Reservation::Throttled { started };
            }
            if state.failures.len() >= THROTTLE_KEYS {
                state
                    .failures
                    .retain(|_, times| times.back().is_some_and(|&t| t > since));
            }
            for key in keys {
                let times = state.failures.entry(key.clone()).or_default();
                times.push_back(now);
                while times.len() > SIGN_IN_LIMIT {
                    times.pop_front();
                }
            }
            Reservation::Granted
        })
    }

    /// Gives back the places an attempt reserved at `at` (it succeeded, or was never checked).
    pub fn release(&self, keys: &[String], at: i64) {
        self.with(|state| {
            for key in keys {
                if let Some(times) = state.failures.get_mut(key)
                    && let Some(i) = times.iter().rposition(|&t| t == at)
                {
                    times.remove(i);
                }
            }
        });
    }

    /// Forgets every failure of `key` (a successful sign-in clears its account).
    pub fn clear(&self, key: &str) {
        self.with(|state| state.failures.remove(key));
    }

    /// Bursts that are over at `now` (their key is no longer throttled), each reported once.
    pub fn ended_bursts(&self, now: i64) -> Vec<Burst> {
        let since = now - SIGN_IN_WINDOW.whole_seconds();
        self.with(|state| {
            let State { failures, bursts } = state;
            let mut ended = Vec::new();
            bursts.retain(|key, burst| {
                let still_blocked = failures.get(key).is_some_and(|times| {
                    times.iter().filter(|&&t| t > since).count() >= SIGN_IN_LIMIT
                });
                if still_blocked {
                    true
                } else {
                    ended.push(burst.clone());
                    false
                }
            });
            ended
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Vec<ThrottleSubject> {
        vec![ThrottleSubject::Account(None)]
    }

    #[test]
    fn reservations_count_before_the_check_in_a_sliding_window() {
        let throttle = SignInThrottle::default();
        let keys = ["user:alice".to_owned()];
        for i in 0..SIGN_IN_LIMIT {
            assert_eq!(
                throttle.reserve(&keys, &account(), 100),
                Reservation::Granted,
                "attempt {i}"
            );
        }
        assert_eq!(
            throttle.reserve(&keys, &account(), 100),
            Reservation::Throttled { started: vec![0] }
        );
        assert_eq!(
            throttle.reserve(&keys, &account(), 159),
            Reservation::Throttled { started: vec![] },
            "the same burst"
        );
        assert_eq!(throttle.ended_bursts(159), vec![]);
        assert_eq!(
            throttle.reserve(&keys, &account(), 160),
            Reservation::Granted,
            "a minute later"
        );
        let ended = throttle.ended_bursts(160);
        assert_eq!(ended.len(), 1);
        assert_eq!(
            (ended[0].first, ended[0].last, ended[0].refused),
            (100, 159, 2)
        );
        assert_eq!(throttle.ended_bursts(161), vec![], "reported once");
        let bob = ["user:bob".to_owned()];
        assert_eq!(
            throttle.reserve(&bob, &account(), 100),
            Reservation::Granted
        );
    }

    #[test]
    fn a_released_place_is_given_back() {
        let throttle = SignInThrottle::default();
        let keys = ["user:alice".to_owned(), "ip:10.0.0.1".to_owned()];
        let subjects = [
            ThrottleSubject::Account(None),
            ThrottleSubject::Address("10.0.0.1".parse().unwrap()),
        ];
        for _ in 0..10 * SIGN_IN_LIMIT {
            assert_eq!(
                throttle.reserve(&keys, &subjects, 100),
                Reservation::Granted
            );
            throttle.release(&keys, 100);
        }
        for _ in 0..SIGN_IN_LIMIT {
            assert_eq!(
                throttle.reserve(&keys, &subjects, 100),
                Reservation::Granted
            );
        }
        assert_eq!(
            throttle.reserve(&keys, &subjects, 100),
            Reservation::Throttled {
                started: vec![0, 1]
            }
        );
    }
}
