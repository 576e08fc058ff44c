//! Typed values: a [`Codec`] turns a `T` into the bytes Redis stores and
//! back, and [`Typed`] is a cache that speaks `T`.

use std::fmt;
use std::future::Future;

use bytes::Bytes;

use super::handle::{Backend, Cache};
use super::Write;
use crate::flight::Coalesced;
use crate::request::Reason;

/// How values of type `T` are stored: encoded once when written, decoded
/// from the bytes Redis returned (a [`Bytes`](bytes::Bytes) the codec may keep slices of,
/// so decoding need not copy).
///
/// Implemented by [`JsonCodec`] (feature `serde`) and [`ProstCodec`] (feature
/// `prost`); implement it for any other format.
pub trait Codec<T> {
    /// Why a value did not encode or a stored one did not decode.
    type Error: fmt::Display;

    /// The bytes to store for `value`.
    fn encode(&self, value: &T) -> Result<Bytes, Self::Error>;

    /// The value stored as `bytes`.
    fn decode(&self, bytes: Bytes) -> Result<T, Self::Error>;
}

/// JSON through serde (feature `serde`).
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec<T> for JsonCodec {
    type Error = serde_json::Error;

    fn encode(&self, value: &T) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(value).map(Bytes::from)
    }

    fn decode(&self, bytes: Bytes) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&bytes)
    }
}

/// Protocol Buffers through prost (feature `prost`): the messages a tonic
/// service already has. Decoding reads the returned [`Bytes`](bytes::Bytes) in place.
#[cfg(feature = "prost")]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProstCodec;

#[cfg(feature = "prost")]
impl<T: prost::Message + Default> Codec<T> for ProstCodec {
    type Error = prost::DecodeError;

    fn encode(&self, value: &T) -> Result<Bytes, prost::DecodeError> {
        Ok(Bytes::from(value.encode_to_vec()))
    }

    fn decode(&self, bytes: Bytes) -> Result<T, prost::DecodeError> {
        T::decode(bytes)
    }
}

/// A [`Cache`] that reads and writes `T`s through a [`Codec`], from
/// [`Cache::typed`]. Cheap to clone; shares the cache, its breaker and its
/// single flight.
///
/// A stored value that does not decode is a miss, counted with reason
/// `undecodable` (and, for `get_or_load`, replaced); a value that does not
/// encode is returned but never stored, counted with reason `other`.
///
/// ```no_run
/// # #[cfg(feature = "serde")]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use fusebox::cache::{Cache, JsonCodec};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct User { name: String }
///
/// let users = Cache::builder().name("users").redis_url("redis://127.0.0.1:6379").build()?.typed(JsonCodec);
/// let user: User = users
///     .get_or_load("user:1", || async { Ok::<_, std::io::Error>(User { name: "ada".into() }) })
///     .await?;
/// # let _ = user; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Typed<C, B = crate::backend::RedisBackend> {
    cache: Cache<B>,
    codec: C,
}

impl<B: Backend> Cache<B> {
    /// This cache, reading and writing values through `codec`.
    pub fn typed<C>(&self, codec: C) -> Typed<C, B> {
        Typed {
            cache: self.clone(),
            codec,
        }
    }
}

impl<C, B: Backend> Typed<C, B> {
    /// The untyped cache underneath.
    pub fn cache(&self) -> &Cache<B> {
        &self.cache
    }

    /// The value at `key`, or `None` if absent, if the cache could not
    /// answer, or if it does not decode.
    pub async fn get<T>(&self, key: impl AsRef<[u8]>) -> Option<T>
    where
        C: Codec<T>,
    {
        let bytes = self.cache.get(key).await?;
        self.decode(bytes)
    }

    /// Writes `value` with the cache's default TTL.
    pub async fn set<T>(&self, key: impl AsRef<[u8]>, value: &T) -> Write
    where
        C: Codec<T>,
    {
        match self.encode(value) {
            Some(bytes) => self.cache.set(key, bytes).await,
            None => Write::Skipped(Reason::Other),
        }
    }

    /// [`Cache::get_or_load`] for `T`s: on a miss, `load`'s value is
    /// encoded once to be stored and handed back as it is (the caller that
    /// loaded never decodes); callers that waited for it decode the stored
    /// bytes.
    pub async fn get_or_load<T, F, Fut, E>(&self, key: impl AsRef<[u8]>, load: F) -> Result<T, E>
    where
        C: Codec<T>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = key.as_ref();
        if let Some(v) = self.get(key).await {
            return Ok(v);
        }
        let ttl = self.cache.default_ttl();
        let loaded = self
            .cache
            .coalesce(key, load, |load| async move {
                let value = load().await?;
                // Not shared when it does not encode: the waiters load
                // their own.
                let share = self.encode(&value).map(|bytes| (bytes, ttl));
                Ok((value, share))
            })
            .await?;
        match loaded {
            Coalesced::Led(value) => Ok(value),
            Coalesced::Shared(bytes, load) => match self.decode(bytes) {
                Some(value) => Ok(value),
                None => load().await,
            },
            Coalesced::Direct(load) => load().await,
        }
    }

    fn encode<T>(&self, value: &T) -> Option<Bytes>
    where
        C: Codec<T>,
    {
        match self.codec.encode(value) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                let name = self.cache.label();
                crate::telemetry::cache_fail_open(name, "set", Reason::Other.as_str());
                tracing::debug!(target: "fusebox::cache", cache = &**name, error = %e, "value does not encode");
                None
            }
        }
    }

    fn decode<T>(&self, bytes: Bytes) -> Option<T>
    where
        C: Codec<T>,
    {
        match self.codec.decode(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                let name = self.cache.label();
                crate::telemetry::cache_fail_open(name, "get", Reason::Undecodable.as_str());
                tracing::debug!(target: "fusebox::cache", cache = &**name, error = %e, "cached value does not decode");
                None
            }
        }
    }
}

#[cfg(all(test, feature = "serde", feature = "prost"))]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize)]
    struct Page {
        title: String,
        views: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Reply {
        #[prost(string, tag = "1")]
        message: String,
        #[prost(uint64, repeated, tag = "2")]
        ids: Vec<u64>,
    }

    proptest::proptest! {
        /// Values read from Redis are untrusted: each codec decodes them
        /// or says it cannot, never panics.
        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let bytes = Bytes::from(bytes);
            let _ = Codec::<Page>::decode(&JsonCodec, bytes.clone());
            let _ = Codec::<serde_json::Value>::decode(&JsonCodec, bytes.clone());
            let _ = Codec::<Reply>::decode(&ProstCodec, bytes);
        }
    }
}
