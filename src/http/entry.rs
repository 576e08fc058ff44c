//! A cached response as stored in Redis: status, headers, body and
//! trailers, in a versioned, length-prefixed encoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::directives::Directives;
use super::CachedBody;

/// A cached response: status, headers, body, and trailers (gRPC).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Entry {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) trailers: Option<HeaderMap>,
    /// How old it is and how long it may be served.
    pub(super) lifetime: Lifetime,
    /// For a variant (RFC 9111 §4.1): the identity of the request header
    /// values it was made for ([`variant::id`](super::variant::id)).
    pub(super) variant: Option<[u8; 32]>,
}

/// An entry's times, in milliseconds (`requested` and `stored`: since the
/// Unix epoch), after RFC 9111 §4.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Lifetime {
    /// When the request that fetched it was sent: a purge at or after this
    /// moment makes the entry unusable.
    pub(super) requested: u64,
    /// When the response was received (its `response_time`).
    pub(super) stored: u64,
    /// Its corrected initial age (§4.2.3): what it was already old then.
    pub(super) age: u64,
    /// Its freshness lifetime (§4.2.1).
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
    /// A lifetime that starts `now`, fresh for `fresh` ms, never stale.
    pub(super) fn fresh_for(now: u64, fresh: u64) -> Self {
        Lifetime {
            requested: now,
            stored: now,
            age: 0,
            fresh,
            revalidate: 0,
            if_error: 0,
        }
    }

    /// Its current age at `now` (ms since the epoch; a clock that went
    /// back counts as no time passed).
    pub(super) fn age_at(&self, now: u64) -> u64 {
        self.age.saturating_add(now.saturating_sub(self.stored))
    }

    /// Its freshness left at `now`, in whole seconds (negative once stale):
    /// `Cache-Status`'s `ttl`, its lifetime less the `Age` a hit carries.
    pub(super) fn ttl_at(&self, now: u64) -> i64 {
        let left = i128::from(self.fresh / 1000) - i128::from(self.age_at(now) / 1000);
        i64::try_from(left).unwrap_or(i64::MIN)
    }

    /// What the entry may be used for at `now`: fresh while its age is
    /// under its freshness lifetime, then within each stale window.
    pub(super) fn at(&self, now: u64) -> Use {
        let age = self.age_at(now);
        let Some(stale) = age.checked_sub(self.fresh) else {
            return Use::Fresh;
        };
        if stale < self.revalidate {
            Use::Revalidate
        } else if stale < self.if_error {
            Use::IfError
        } else {
            Use::Expired
        }
    }

    /// [`at`](Self::at) for a request that may bound the age it accepts
    /// (`max-age`) or ask for time left (`min-fresh`): a fresh entry that
    /// does not satisfy them is not served, and neither is a stale one.
    pub(super) fn for_request(&self, now: u64, request: &Directives) -> Use {
        let age = self.age_at(now);
        let too_old = request.max_age.is_some_and(|d| age > d.millis());
        let too_short = request
            .min_fresh
            .is_some_and(|d| self.fresh.saturating_sub(age) < d.millis());
        if too_old || too_short {
            return Use::Expired;
        }
        self.at(now)
    }

    /// How long Redis keeps the entry: while fresh, then while it may be
    /// served stale (ms).
    pub(super) fn kept(&self) -> u64 {
        let left = self.fresh.saturating_sub(self.age);
        left.saturating_add(self.revalidate.max(self.if_error))
    }
}

/// The entry format: the magic, the six [`Lifetime`] figures, the status,
/// the headers, the body, the trailers, and a variant's 32-byte identity
/// (absent for an entry that does not vary: earlier versions, which do not
/// know variants, read those alone). Entries of earlier formats (which
/// did not all carry their age and lifetime) are not read: a miss, and
/// overwritten by the next store.
const MAGIC: &[u8; 4] = b"FBH3";

/// At most this many header lines are read from an entry: more is not a
/// response this layer stored (and more than `HeaderMap` can hold would
/// panic it).
const MAX_HEADERS: u32 = 1024;

/// Headers that describe one connection or one hop, never stored (RFC 9111
/// §3.1, RFC 9110 §7.6.1), and `Age`, which a hit computes afresh.
fn not_stored(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "proxy-authenticate"
            | "proxy-authentication-info"
            | "proxy-authorization"
            | "age"
    )
}

/// The header names a message's `Connection` lines name: hop-by-hop too.
fn connection_names(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

impl Entry {
    pub(super) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.body.len() + 256);
        out.put_slice(MAGIC);
        let l = self.lifetime;
        for figure in [
            l.requested,
            l.stored,
            l.age,
            l.fresh,
            l.revalidate,
            l.if_error,
        ] {
            out.put_u64(figure);
        }
        out.put_u16(self.status.as_u16());
        put_headers(&mut out, &self.headers, &connection_names(&self.headers));
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        match &self.trailers {
            None => out.put_u32(u32::MAX),
            Some(trailers) => put_headers(&mut out, trailers, &[]),
        }
        if let Some(id) = &self.variant {
            out.put_slice(id);
        }
        out.freeze()
    }

    /// `None` for anything that is not a whole, valid entry of this
    /// format, whatever the bytes.
    pub(super) fn decode(bytes: &Bytes) -> Option<Entry> {
        let mut b = bytes.clone();
        if take(&mut b, 4)?.as_ref() != MAGIC {
            return None;
        }
        let lifetime = Lifetime {
            requested: take_u64(&mut b)?,
            stored: take_u64(&mut b)?,
            age: take_u64(&mut b)?,
            fresh: take_u64(&mut b)?,
            revalidate: take_u64(&mut b)?,
            if_error: take_u64(&mut b)?,
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
        let variant = match b.len() {
            0 => None,
            32 => Some(b.as_ref().try_into().ok()?),
            _ => return None,
        };
        Some(Entry {
            status,
            headers,
            body,
            trailers,
            lifetime,
            variant,
        })
    }

    /// The stored response as served at `now`: with its current `Age`
    /// (RFC 9111 §4.2.3: the stored age plus the time it spent stored), and
    /// for `HEAD` the headers of the `GET` (its `Content-Length` too) with
    /// no body.
    pub(super) fn into_response<B>(self, head: bool, now: u64) -> Response<CachedBody<B>> {
        let age = self.lifetime.age_at(now) / 1000;
        let mut headers = self.headers;
        headers.insert(http::header::AGE, HeaderValue::from(age));
        let body = if head {
            if !headers.contains_key(http::header::CONTENT_LENGTH) {
                headers.insert(
                    http::header::CONTENT_LENGTH,
                    HeaderValue::from(self.body.len()),
                );
            }
            Bytes::new()
        } else {
            self.body
        };
        let mut res = Response::new(CachedBody::with_trailers(body, self.trailers));
        *res.status_mut() = self.status;
        *res.headers_mut() = headers;
        res
    }
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap, hop: &[HeaderName]) {
    let kept: Vec<_> = headers
        .iter()
        .filter(|(n, _)| !not_stored(n) && !hop.contains(n))
        .collect();
    out.put_u32(kept.len() as u32);
    for (name, value) in kept {
        out.put_u32(name.as_str().len() as u32);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
}

fn take_headers(b: &mut Bytes, count: u32) -> Option<HeaderMap> {
    if count > MAX_HEADERS {
        return None;
    }
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let n = take_u32(b)? as usize;
        let name = HeaderName::from_bytes(&take(b, n)?).ok()?;
        let n = take_u32(b)? as usize;
        let value = HeaderValue::from_maybe_shared(take(b, n)?).ok()?;
        headers.try_append(name, value).ok()?;
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
mod tests;
