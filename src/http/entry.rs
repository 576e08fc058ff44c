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
}

const MAGIC: &[u8; 4] = b"FBH1";

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
        out.put_slice(MAGIC);
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
        if b.remaining() < 4 || &b[..4] != MAGIC {
            return None;
        }
        b.advance(4);
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
    }
}
