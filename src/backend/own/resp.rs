//! The little of RESP2 a batch connection speaks: its commands written
//! straight into one buffer, and its replies read straight out of the
//! bytes received, each value copied once into its own `Bytes`.

use bytes::Bytes;

use super::batch::{Answer, Kind};
use crate::backend::error::RedisError;
use crate::request::{CacheRequest, CacheResponse};

/// `n` in decimal, in `digits`' tail: the slice returned.
fn decimal(digits: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

/// Appends `n` in decimal.
fn put_uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(&mut [0; 20], n));
}

/// Appends a command's header: its argument count.
pub(super) fn put_array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    put_uint(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends one argument.
pub(super) fn put_bulk(out: &mut Vec<u8>, arg: &[u8]) {
    out.push(b'$');
    put_uint(out, arg.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// Appends the commands of a batch of `kind`: one `MGET` for `GET`s (a
/// `GET` for one); a `SET` each for `SET`s; the same `MGET` (or `GET`) and
/// a `PTTL` each for `GET`s with TTL. (Every request is of `kind`: others
/// are not written.)
pub(super) fn put_batch<'a>(
    out: &mut Vec<u8>,
    kind: Kind,
    requests: impl ExactSizeIterator<Item = &'a CacheRequest> + Clone,
) {
    let key = |r: &'a CacheRequest| match r {
        CacheRequest::Get(key) | CacheRequest::GetWithTtl(key) => Some(&key[..]),
        _ => None,
    };
    match kind {
        Kind::Get | Kind::GetWithTtl => {
            put_array(out, requests.len() + 1);
            // One key alone goes as a `GET`, as it would without batching.
            put_bulk(
                out,
                if requests.len() == 1 {
                    &b"GET"[..]
                } else {
                    b"MGET"
                },
            );
            for k in requests.clone().filter_map(key) {
                put_bulk(out, k);
            }
            if let Kind::GetWithTtl = kind {
                for k in requests.filter_map(key) {
                    put_array(out, 2);
                    put_bulk(out, b"PTTL");
                    put_bulk(out, k);
                }
            }
        }
        Kind::Set => {
            for r in requests {
                if let CacheRequest::Set { key, value, ttl } = r {
                    let px = match ttl {
                        crate::request::Ttl::After(d) => Some(super::super::commands::millis(*d)),
                        crate::request::Ttl::Never => None,
                    };
                    put_array(out, if px.is_some() { 5 } else { 3 });
                    put_bulk(out, b"SET");
                    put_bulk(out, key);
                    put_bulk(out, value);
                    if let Some(ms) = px {
                        put_bulk(out, b"PX");
                        put_bulk(out, decimal(&mut [0; 20], ms));
                    }
                }
            }
        }
    }
}

/// The start of one reply.
#[derive(Debug, PartialEq)]
pub(super) enum Head<'a> {
    /// `+…`
    Simple,
    /// `-…`, whole (with its `\r\n`), as a client's error reads it.
    Error(&'a [u8]),
    /// `:…`
    Int(i64),
    /// `$…`: the bytes, or none (`$-1`).
    Bulk(Option<&'a [u8]>),
    /// `*…`: how many replies follow (none for `*-1`).
    Array(Option<usize>),
}

/// What the bytes received are not.
#[derive(Debug, PartialEq)]
pub(super) struct Malformed;

/// The reply head at the start of `buf` and the bytes it takes (for a
/// bulk string, its contents too), or `None` until all of it is here.
pub(super) fn head(buf: &[u8]) -> Result<Option<(Head<'_>, usize)>, Malformed> {
    let Some(cr) = buf.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    let Some(&lf) = buf.get(cr + 1) else {
        return Ok(None);
    };
    if lf != b'\n' || cr == 0 {
        return Err(Malformed);
    }
    let line = &buf[1..cr];
    let used = cr + 2;
    Ok(Some(match buf[0] {
        b'+' => (Head::Simple, used),
        b'-' => (Head::Error(&buf[..used]), used),
        b':' => (Head::Int(int(line)?), used),
        b'$' => match int(line)? {
            -1 => (Head::Bulk(None), used),
            n => {
                let n = usize::try_from(n).map_err(|_| Malformed)?;
                let end = used.checked_add(n).ok_or(Malformed)?;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(Malformed);
                }
                (Head::Bulk(Some(&buf[used..end])), end + 2)
            }
        },
        b'*' => match int(line)? {
            -1 => (Head::Array(None), used),
            n => (
                Head::Array(Some(usize::try_from(n).map_err(|_| Malformed)?)),
                used,
            ),
        },
        _ => return Err(Malformed),
    }))
}

fn int(line: &[u8]) -> Result<i64, Malformed> {
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(Malformed);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(Malformed);
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -n } else { n })
}

/// The client's error for an error reply (`-CODE message\r\n`), classified
/// as any other of its errors is.
pub(super) fn server_error(reply: &[u8]) -> RedisError {
    match redis::parse_redis_value(reply).map(|v| v.extract_error()) {
        Ok(Err(e)) => RedisError::from(e),
        _ => RedisError::unexpected_reply(),
    }
}

/// How a batch's replies were read.
pub(super) enum Read {
    /// Each caller's answer, and the bytes the replies took.
    Answers(Vec<Answer>, usize),
    /// One error for the whole batch (its `MGET` refused), and the bytes.
    Failed(RedisError, usize),
    /// Not all here yet.
    Partial,
}

/// Reads the replies to a batch of `n` calls of `kind` at the start of
/// `buf`. `Err` says the bytes are not the replies such a batch gets: the
/// connection is out of step and must go.
pub(super) fn read_batch(kind: Kind, n: usize, buf: &[u8]) -> Result<Read, Malformed> {
    let mut at = 0;
    let next = |at: &mut usize| -> Result<Option<Head<'_>>, Malformed> {
        Ok(head(&buf[*at..])?.map(|(h, used)| {
            *at += used;
            h
        }))
    };
    match kind {
        Kind::Get | Kind::GetWithTtl => {
            let mut values = Vec::with_capacity(n);
            match next(&mut at)? {
                None => return Ok(Read::Partial),
                Some(Head::Error(e)) => {
                    // A `GetWithTtl` batch's `PTTL` replies follow.
                    if let Kind::GetWithTtl = kind {
                        for _ in 0..n {
                            if next(&mut at)?.is_none() {
                                return Ok(Read::Partial);
                            }
                        }
                    }
                    return Ok(Read::Failed(server_error(e), at));
                }
                // One key alone went as a `GET`.
                Some(Head::Bulk(v)) if n == 1 => values.push(v),
                Some(Head::Array(Some(len))) if len == n && n != 1 => {}
                Some(_) => return Err(Malformed),
            }
            // Slices first, copied once all of the batch is here.
            while values.len() < n {
                match next(&mut at)? {
                    None => return Ok(Read::Partial),
                    Some(Head::Bulk(v)) => values.push(v),
                    Some(_) => return Err(Malformed),
                }
            }
            let value = |v: Option<&[u8]>| v.map(Bytes::copy_from_slice);
            if let Kind::Get = kind {
                let answers = values
                    .into_iter()
                    .map(|v| Ok(CacheResponse::Value(value(v))))
                    .collect();
                return Ok(Read::Answers(answers, at));
            }
            let mut ttls = Vec::with_capacity(n);
            for _ in 0..n {
                ttls.push(match next(&mut at)? {
                    None => return Ok(Read::Partial),
                    Some(Head::Int(pttl)) => Ok(super::super::commands::ttl_of(pttl)),
                    Some(Head::Error(e)) => Err(server_error(e)),
                    Some(_) => return Err(Malformed),
                });
            }
            let answers = values
                .into_iter()
                .zip(ttls)
                .map(|(v, ttl)| {
                    let ttl = ttl?;
                    Ok(CacheResponse::ValueWithTtl(value(v).map(|v| (v, ttl))))
                })
                .collect();
            Ok(Read::Answers(answers, at))
        }
        Kind::Set => {
            let mut answers = Vec::with_capacity(n);
            for _ in 0..n {
                answers.push(match next(&mut at)? {
                    None => return Ok(Read::Partial),
                    Some(Head::Simple | Head::Bulk(_)) => Ok(CacheResponse::Written(true)),
                    Some(Head::Error(e)) => Err(server_error(e).on_write()),
                    Some(_) => return Err(Malformed),
                });
            }
            Ok(Read::Answers(answers, at))
        }
    }
}

#[cfg(test)]
mod tests;
