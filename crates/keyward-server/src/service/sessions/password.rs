//! User passwords: Argon2id with the crate's recommended parameters, in PHC strings, computed in
//! a bounded pool.
//!
//! One Argon2id computation takes about 19 MiB and tens of milliseconds of CPU, and an anonymous
//! client can ask for one with every sign-in attempt. Unbounded, 150 parallel sign-ins took the
//! server from 35 MB to 1.39 GB. So every hash and check runs in [`PasswordPool`]: at most one
//! per core at a time, a short queue behind them, and a bounded wait; past that the caller is
//! told to come back later ([`ServiceError::Busy`]), so memory stays flat however many arrive.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use keyward_core::RawSecret;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

use super::{ServiceError, ServiceResult};

/// Shortest and longest password accepted.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 12..=1024;

/// Longest a password computation waits for its turn before the caller is told to retry.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many computations may wait per running one: beyond it, callers are turned away at once.
const QUEUE_PER_SLOT: usize = 16;

/// What a caller that was turned away is told to wait before retrying (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 2;

/// Hashes a new password. Runs on the calling thread: call it through [`PasswordPool::hash`],
/// which refuses one outside [`PASSWORD_CHARS`] before it queues.
fn hash_password(password: &RawSecret) -> ServiceResult<String> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

/// Checks a password against a stored PHC string (constant-time inside argon2). Runs on the
/// calling thread: call it through [`PasswordPool::verify`].
fn verify_password(password: &RawSecret, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.expose().as_bytes(), phc)
        .is_ok()
}

/// Runs Argon2id computations off the async workers, a bounded number at a time.
pub struct PasswordPool {
    slots: Semaphore,
    /// Computations waiting for a slot or running.
    admitted: AtomicUsize,
    /// The most that may wait or run at once.
    limit: usize,
}

impl PasswordPool {
    /// A pool running `slots` computations at once (at least one).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            slots: Semaphore::new(slots),
            admitted: AtomicUsize::new(0),
            limit: slots * (1 + QUEUE_PER_SLOT),
        }
    }

    /// A pool with one slot per core this process may use.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }

    /// Hashes a new password (refusing one of the wrong length before queueing).
    pub async fn hash(&self, password: RawSecret) -> ServiceResult<String> {
        let chars = password.expose().chars().count();
        if !PASSWORD_CHARS.contains(&chars) {
            return Err(ServiceError::BadPassword);
        }
        self.run(move || hash_password(&password)).await?
    }

    /// Checks `password` against the PHC string `phc`.
    pub async fn verify(&self, password: RawSecret, phc: String) -> ServiceResult<bool> {
        self.run(move || verify_password(&password, &phc)).await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ServiceResult<T> {
        let admitted = Admission::enter(self)?;
        let permit = tokio::time::timeout(QUEUE_TIMEOUT, self.slots.acquire())
            .await
            .map_err(|_| ServiceError::Busy)?
            .map_err(|_| ServiceError::Internal("the password pool is closed".to_owned()))?;
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ServiceError::Internal(format!("password computation failed: {e}")));
        drop(permit);
        drop(admitted);
        result
    }
}

/// One computation counted against the pool's limit while it waits or runs.
struct Admission<'a>(&'a AtomicUsize);

impl<'a> Admission<'a> {
    fn enter(pool: &'a PasswordPool) -> ServiceResult<Self> {
        let before = pool.admitted.fetch_add(1, Ordering::AcqRel);
        let admission = Self(&pool.admitted);
        if before >= pool.limit {
            // Dropping the admission gives the place back.
            return Err(ServiceError::Busy);
        }
        Ok(admission)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn hashes_verify_and_refuse_short_passwords() {
        let pool = PasswordPool::new(1);
        let pw = || RawSecret::new("correct horse battery".to_owned());
        let phc = pool.hash(pw()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(pool.verify(pw(), phc.clone()).await.unwrap());
        assert!(
            !pool
                .verify(RawSecret::new("wrong horse battery".to_owned()), phc)
                .await
                .unwrap()
        );
        assert!(matches!(
            pool.hash(RawSecret::new("short".to_owned())).await,
            Err(ServiceError::BadPassword)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_the_queue_callers_are_turned_away_at_once() {
        let pool = Arc::new(PasswordPool::new(1));
        let phc = pool
            .hash(RawSecret::new("correct horse battery".to_owned()))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..3 * pool.limit)
            .map(|_| {
                let pool = Arc::clone(&pool);
                let phc = phc.clone();
                tokio::spawn(async move {
                    pool.verify(RawSecret::new("wrong horse battery".to_owned()), phc)
                        .await
                })
            })
            .collect();
        let mut busy = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(matched) => assert!(!matched),
                Err(ServiceError::Busy) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(busy >= pool.limit, "{busy} turned away");
        assert_eq!(
            pool.admitted.load(Ordering::Acquire),
            0,
            "every place given back"
        );
    }
}
