//! A cached response as stored in Redis: status, headers, body and
//! trailers, in a versioned, length-prefixed encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::CachedBody;

/// A cached response: status, headers, body, and trailers (gRPC).
#[derive(Debug, PartialEq)]
pub(super) struct Entry {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) trailers: Option<HeaderMap>,
    /// For a response that may be served stale (RFC 5861): when it was
    /// stored and for how long it is fresh, then servable stale. `None`:
    /// fresh for as long as the cache keeps it.
    pub(super) lifetime: Option<Lifetime>,
}

/// An entry's lifetimes, in milliseconds (`stored`: since the Unix epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Lifetime {
    pub(super) stored: u64,
    pub(super) fresh: u64,
    /// `stale-while-revalidate`: served stale while it is revalidated.
    pub(super) revalidate: u64,
    /// `stale-if-error`: served stale if the handler fails.
    pub(super) if_error: u64,
}

/// What an entry may be used for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Use {
    /// Served as it is.
    Fresh,
    /// Served stale, and revalidated in the background.
    Revalidate,
    /// Served stale only if the handler fails.
    IfError,
    /// Not served.
    Expired,
}

impl Lifetime {
    /// What the entry may be used for at `now` (ms since the epoch; a
    /// clock that went back counts as no time passed).
    pub(super) fn at(&self, now: u64) -> Use {
        let age = now.saturating_sub(self.stored);
        let stale = age.saturating_sub(self.fresh);
        if age <= self.fresh {
            Use::Fresh
        } else if stale <= self.revalidate {
            Use::Revalidate
        } else if stale <= self.if_error {
            Use::IfError
        } else {
            Use::Expired
        }
    }
}

/// Now, in ms since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

const MAGIC: &[u8; 4] = b"FBH1";
/// An entry with a [`Lifetime`]: the four figures follow the magic.
const MAGIC_STALE: &[u8; 4] = b"FBH2";

/// Headers that describe one connection, never stored.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
            | "te"
            | "trailer"
    )
}

impl Entry {
    pub(super) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.body.len() + 256);
        match self.lifetime {
            None => out.put_slice(MAGIC),
            Some(l) => {
                out.put_slice(MAGIC_STALE);
                for figure in [l.stored, l.fresh, l.revalidate, l.if_error] {
                    out.put_u64(figure);
                }
            }
        }
        out.put_u16(self.status.as_u16());
        put_headers(&mut out, &self.headers);
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        match &self.trailers {
            None => out.put_u32(u32::MAX),
            Some(trailers) => put_headers(&mut out, trailers),
        }
        out.freeze()
    }

    /// `None` for anything that is not a whole, valid entry.
    pub(super) fn decode(bytes: &Bytes) -> Option<Entry> {
        let mut b = bytes.clone();
        if b.remaining() < 4 {
            return None;
        }
        let lifetime = match &b[..4] {
            m if m == MAGIC => {
                b.advance(4);
                None
            }
            m if m == MAGIC_STALE => {
                b.advance(4);
                Some(Lifetime {
                    stored: take_u64(&mut b)?,
                    fresh: take_u64(&mut b)?,
                    revalidate: take_u64(&mut b)?,
                    if_error: take_u64(&mut b)?,
                })
            }
            _ => return None,
        };
        let status = StatusCode::from_u16(take_u16(&mut b)?).ok()?;
        let count = take_u32(&mut b)?;
        let headers = take_headers(&mut b, count)?;
        let n = usize::try_from(take_u64(&mut b)?).ok()?;
        let body = take(&mut b, n)?;
        let trailers = match take_u32(&mut b)? {
            u32::MAX => None,
            count => Some(take_headers(&mut b, count)?),
        };
        b.is_empty().then_some(Entry {
            status,
            headers,
            body,
            trailers,
            lifetime,
        })
    }

    pub(super) fn into_response<B>(self, head: bool) -> Response<CachedBody<B>> {
        let body = if head { Bytes::new() } else { self.body };
        let mut res = Response::new(CachedBody::with_trailers(body, self.trailers));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers;
        res
    }
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    let kept: Vec<_> = headers.iter().filter(|(n, _)| !hop_by_hop(n)).collect();
    out.put_u32(kept.len() as u32);
    for (name, value) in kept {
        out.put_u32(name.as_str().len() as u32);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
}

fn take_headers(b: &mut Bytes, count: u32) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let n = take_u32(b)? as usize;
        let name = HeaderName::from_bytes(&take(b, n)?).ok()?;
        let n = take_u32(b)? as usize;
        let value = HeaderValue::from_maybe_shared(take(b, n)?).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

fn take_u16(b: &mut Bytes) -> Option<u16> {
    (b.remaining() >= 2).then(|| b.get_u16())
}

fn take_u32(b: &mut Bytes) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32())
}

fn take_u64(b: &mut Bytes) -> Option<u64> {
    (b.remaining() >= 8).then(|| b.get_u64())
}

fn take(b: &mut Bytes, n: usize) -> Option<Bytes> {
    (b.remaining() >= n).then(|| b.split_to(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let e = Entry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"<html>"),
            trailers: Some(trailers),
            lifetime: None,
        };
        let bytes = e.encode();
        let back = Entry::decode(&bytes).unwrap();
        assert_eq!(back.body, e.body);
        assert_eq!(back.trailers, e.trailers);
        assert_eq!(back.headers.get_all("x-multi").iter().count(), 2);
        assert!(
            !back.headers.contains_key(header::CONNECTION),
            "hop-by-hop dropped"
        );
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes.slice(..cut)).is_none());
        }
        assert!(Entry::decode(&Bytes::from_static(b"garbage")).is_none());
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(Entry::decode(&Bytes::from(extra)).is_none());

        let lifetime = Lifetime {
            stored: 1_000,
            fresh: 10,
            revalidate: 20,
            if_error: 40,
        };
        let stale = Entry {
            lifetime: Some(lifetime),
            ..back
        };
        let bytes = stale.encode();
        assert_eq!(Entry::decode(&bytes), Some(stale));
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes.slice(..cut)).is_none());
        }
    }

    #[test]
    fn a_lifetime_says_fresh_then_revalidate_then_if_error_then_expired() {
        let l = Lifetime {
            stored: 1_000,
            fresh: 10,
            revalidate: 20,
            if_error: 40,
        };
        assert_eq!(l.at(0), Use::Fresh, "a clock gone back");
        assert_eq!(l.at(1_010), Use::Fresh);
        assert_eq!(l.at(1_030), Use::Revalidate);
        assert_eq!(l.at(1_031), Use::IfError);
        assert_eq!(l.at(1_050), Use::IfError);
        assert_eq!(l.at(1_051), Use::Expired);
        let max = Lifetime {
            stored: u64::MAX,
            fresh: u64::MAX,
            revalidate: u64::MAX,
            if_error: u64::MAX,
        };
        assert_eq!(max.at(u64::MAX), Use::Fresh);
    }
}
