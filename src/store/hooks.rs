//! Test hooks: a movable clock and injected storage faults. They exist only with the
//! `test-hooks` feature, which the test suites enable (a dev-dependency of the package on
//! itself) and the shipped binary does not; without it the writer's clock is the wall clock
//! and no write fails on purpose.

use super::StoreOptions;

#[cfg(feature = "test-hooks")]
pub use enabled::{FaultPlan, TestClock, TestHooks};

#[cfg(feature = "test-hooks")]
mod enabled {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    /// What a test may change below the writer.
    #[derive(Debug, Clone, Default)]
    pub struct TestHooks {
        /// The store's clock: the wall clock plus an offset the test sets at open (entries of
        /// an earlier fiscal year) and may move later (a credential's expiry).
        pub clock: TestClock,
        /// Injected storage faults (tests of poisoning).
        pub faults: Option<Arc<FaultPlan>>,
    }

    /// An offset added to the wall clock wherever the store reads the time (the writer's
    /// stamps, credential expiry), shared with the test so it can move time forward instead
    /// of sleeping.
    #[derive(Debug, Clone, Default)]
    pub struct TestClock(Arc<AtomicI64>);

    impl TestClock {
        /// A clock `offset_ms` from the wall clock (negative: in the past).
        pub fn offset(offset_ms: i64) -> Self {
            TestClock(Arc::new(AtomicI64::new(offset_ms)))
        }

        /// Moves the clock `ms` forward, for every store opened with it.
        pub fn advance(&self, ms: i64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }

        pub(super) fn offset_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Storage faults to inject below the writer: the n-th synced write of the key store or
    /// of the data batch fails as a failed `fsync` or a full disk would.
    #[derive(Debug, Default)]
    pub struct FaultPlan {
        /// Data batches that still succeed before one fails (`u64::MAX`: never).
        pub data_writes_left: AtomicU64,
        /// Key-store batches that still succeed before one fails (`u64::MAX`: never).
        pub key_writes_left: AtomicU64,
    }

    impl FaultPlan {
        /// Fails the data batch after `data` good ones and the key-store batch after `keys`.
        pub fn new(data: u64, keys: u64) -> Arc<Self> {
            Arc::new(FaultPlan {
                data_writes_left: data.into(),
                key_writes_left: keys.into(),
            })
        }

        /// Whether this write is the one to fail (counts it down otherwise).
        pub(super) fn fails(counter: &AtomicU64) -> bool {
            let before = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 | u64::MAX => None,
                n => Some(n - 1),
            });
            before == Err(0)
        }
    }
}

/// Which synced write a fault plan may fail.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write {
    KeyStore,
    Data,
}

impl StoreOptions {
    /// The store's clock in Unix milliseconds: the wall clock, plus the test clock's offset
    /// with the feature.
    pub(crate) fn now_ms(&self) -> u64 {
        #[cfg(feature = "test-hooks")]
        return super::now_ms().saturating_add_signed(self.hooks.clock.offset_ms());
        #[cfg(not(feature = "test-hooks"))]
        super::now_ms()
    }

    /// Whether this synced write is to fail: never without the feature.
    pub(crate) fn injected_fault(&self, write: Write) -> bool {
        #[cfg(feature = "test-hooks")]
        return self.hooks.faults.as_deref().is_some_and(|f| {
            enabled::FaultPlan::fails(match write {
                Write::KeyStore => &f.key_writes_left,
                Write::Data => &f.data_writes_left,
            })
        });
        #[cfg(not(feature = "test-hooks"))]
        {
            let _ = write;
            false
        }
    }
}
