//! The atomics and locks of the concurrent protocols that are model-checked
//! (the breaker's front and circuit, the near cache's tickets and
//! generations, single flight): std's, or
//! loom's under `--cfg fusebox_loom` (`scripts/loom.sh`). The normal build
//! never sees loom.

#[cfg(not(fusebox_loom))]
pub(crate) use std::sync::{atomic, Mutex, MutexGuard};

#[cfg(fusebox_loom)]
pub(crate) use loom::sync::{atomic, Mutex, MutexGuard};

/// Under the model checks, whether the seeded bug `name` is planted
/// (`FUSEBOX_LOOM_SEED=name`): each model must fail with its bug in.
/// Always `false` in the normal build.
#[inline(always)]
pub(crate) fn seeded(name: &str) -> bool {
    #[cfg(fusebox_loom)]
    {
        std::env::var("FUSEBOX_LOOM_SEED").is_ok_and(|s| s == name)
    }
    #[cfg(not(fusebox_loom))]
    {
        let _ = name;
        false
    }
}
