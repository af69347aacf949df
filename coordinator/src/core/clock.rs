//! What the core takes from the world besides the calls it answers: the wall clock
//! ([`Clock`]: the Unix times stored in records) and the source of worker ids and gang secrets
//! ([`Ids`]). The service passes the system clock and the OS's randomness ([`SystemClock`],
//! [`OsIds`]); tests pass a clock they move ([`ManualClock`]) and a seeded source
//! ([`SeededIds`]), so that a run of the core is a function of its inputs and its rules can be
//! checked over generated cases.
//!
//! Heartbeat deadlines use monotonic time (`Instant`), passed with each call.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rand::{RngCore as _, SeedableRng as _};

/// The clocks the core reads when a call brings no time of its own.
pub trait Clock: std::fmt::Debug + Send + Sync {
    /// Now, Unix ms (the times stored in records).
    fn unix_ms(&self) -> i64;

    /// Now, on the monotonic clock (deadlines).
    fn instant(&self) -> Instant;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> i64 {
        now_ms()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// Current Unix time in milliseconds, from the system's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A clock that moves only when told: clones share the time. Its monotonic time starts at the
/// `Instant` it was made and moves with it.
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// Milliseconds it was moved forward.
    moved: Arc<AtomicI64>,
    start_ms: i64,
    start: Instant,
}

impl ManualClock {
    /// A clock at `unix_ms`.
    pub fn at(unix_ms: i64) -> Self {
        Self {
            moved: Arc::default(),
            start_ms: unix_ms,
            start: Instant::now(),
        }
    }

    /// Moves it forward by `ms` (at least 0).
    pub fn advance(&self, ms: i64) {
        self.moved.fetch_add(ms.max(0), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn unix_ms(&self) -> i64 {
        self.start_ms + self.moved.load(Ordering::SeqCst)
    }

    fn instant(&self) -> Instant {
        self.start + Duration::from_millis(self.moved.load(Ordering::SeqCst) as u64)
    }
}

/// Where worker ids and gang secrets come from.
pub trait Ids: std::fmt::Debug + Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);

    /// `bytes` random bytes in hex.
    fn hex(&mut self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.fill(&mut buf);
        hex::encode(buf)
    }

    /// A new worker's id: `w-` and 8 hex digits.
    fn worker_id(&mut self) -> String {
        format!("w-{}", self.hex(4))
    }

    /// A gang's shared secret: 32 random bytes in hex (64 digits).
    fn secret(&mut self) -> String {
        self.hex(32)
    }
}

/// The operating system's randomness (what the coordinator uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsIds;

impl Ids for OsIds {
    fn fill(&mut self, buf: &mut [u8]) {
        rand::fill(buf);
    }
}

/// A seeded generator: the same seed gives the same ids and secrets (for tests).
#[derive(Debug, Clone)]
pub struct SeededIds(rand::rngs::StdRng);

impl SeededIds {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(rand::rngs::StdRng::seed_from_u64(seed))
    }
}

impl Ids for SeededIds {
    fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}
