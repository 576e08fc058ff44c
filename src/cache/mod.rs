//! The fail-open cache: a typed handle over backend → breaker → fail-open.
//!
//! ```
//! use std::time::Duration;
//! use fusebox::cache::{Cache, Write};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Never fails or waits because Redis is down: only bad settings are errors.
//! let cache = Cache::builder()
//!     .name("pages")
//!     .prefix("fusebox-doc:")
//!     .default_ttl(Duration::from_secs(60))
//!     .redis_url("redis://127.0.0.1:6379").build()?;
//!
//! // Every write gets a TTL (60 s here) unless asked otherwise. With Redis
//! // down this is `Write::Skipped(reason)`, never an error.
//! let written: Write = cache.set("home", "<html>home").await;
//! // A miss when the key is absent, and also when Redis is down, hung or
//! // full: within the deadline, or at once once the breaker is open.
//! let page = cache.get("home").await;
//! if written.is_done() {
//!     assert_eq!(page.as_deref(), Some(&b"<html>home"[..]));
//! }
//!
//! // One loader call per key at a time, however many callers miss at once;
//! // the loader's errors are the only errors.
//! let about = cache
//!     .get_or_load("about", || async { Ok::<_, std::io::Error>("<html>about") })
//!     .await?;
//! assert_eq!(about, "<html>about");
//! # Ok(()) }
//! ```
//!
//! # Failing open
//!
//! Under the handle, every error of the backend becomes a miss (reads) or
//! a skip (writes, deletes), counted and traced, never surfaced:
//!
//! * A failed `get` is `None`; a failed `get_many` all-`None`; a failed
//!   write [`Write::Skipped`] with its [`Reason`].
//! * When Redis refuses writes while it may still serve reads, writes are
//!   shed locally for the [hold-down](CacheBuilder::write_hold_down)
//!   period, counted with the reason of the refusal, while reads go on:
//!   after `OOM` the writes that may grow memory (deletes go on); after
//!   `READONLY`, `MISCONF` or a write that timed out, every change.
//! * Each fallback increments
//!   [`CACHE_FAIL_OPEN_TOTAL`](crate::telemetry::CACHE_FAIL_OPEN_TOTAL); a
//!   `WARN` event of target `fusebox::cache` summarises them at most once per
//!   second per cache, not once per call.
//!
//! What the layers under the handle do, and every default, is in
//! [`CacheBuilder`]. The request vocabulary ([`CacheRequest`],
//! [`CacheResponse`]) is public, so the same stack works over any
//! `Service<CacheRequest>` ([`CacheBuilder::backend`]).

mod codec;
mod config;
mod fail_open;
mod handle;

pub use crate::flight::InFlight;
pub use crate::near::{Invalidation, NearCache, NearStats};
pub use crate::request::{CacheRequest, CacheResponse, Fault, FaultClassifier, Reason, Ttl};
#[cfg(feature = "serde")]
pub use codec::JsonCodec;
#[cfg(feature = "prost")]
pub use codec::ProstCodec;
pub use codec::{Codec, Typed};
pub use config::CacheBuilder;
#[cfg(feature = "http")]
pub(crate) use handle::Placed;
pub use handle::{Backend, Cache, Deletion, Write};
