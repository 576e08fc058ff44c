//! Targeted cache control (RFC 9213): a field such as `CDN-Cache-Control`
//! whose directives, when it is a valid Structured Field Dictionary (RFC
//! 8941), replace `Cache-Control` and `Expires` for this cache. An invalid
//! field is ignored whole, as if absent.

use http::header::HeaderName;
use http::HeaderMap;

use super::directives::{Delta, Directives, MAX_DELTA};

/// The directives of the first field of `names` that `headers` holds with a
/// valid, non-empty value (RFC 9213 §2.1); `None` when there is none, and
/// the response's `Cache-Control` and `Expires` apply.
pub(super) fn directives(headers: &HeaderMap, names: &[HeaderName]) -> Option<Directives> {
    names.iter().find_map(|name| {
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        // Field lines are one list joined with commas (RFC 9110 §5.3).
        let mut joined = Vec::new();
        for (i, line) in lines.enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(line.as_bytes());
        }
        let members = dictionary(&joined)?;
        if members.is_empty() {
            return None;
        }
        to_directives(&members)
    })
}

/// A bare item's value, as far as cache directives need it.
#[derive(Debug, PartialEq)]
enum Item {
    Integer(i64),
    Boolean(bool),
    /// A string, token, decimal or byte sequence: valid, but never the type
    /// a known directive takes.
    Other,
    /// A string: `private` and `no-cache` may name fields.
    String,
}

/// The directives the members stand for; `None` when a known directive has
/// the wrong type (then the whole field is ignored).
fn to_directives(members: &[(String, Item)]) -> Option<Directives> {
    let mut d = Directives::default();
    // In a dictionary the last of a repeated key wins (RFC 8941 §3.2).
    for (key, item) in members {
        let boolean = match item {
            Item::Boolean(b) => Some(*b),
            _ => None,
        };
        // `private` and `no-cache` may name fields: counted whole.
        let flag = match item {
            Item::String => Some(true),
            _ => boolean,
        };
        let delta = match item {
            Item::Integer(n) if *n >= 0 => Some(Delta::Secs((*n as u64).min(MAX_DELTA))),
            _ => None,
        };
        match key.as_str() {
            "no-store" => d.no_store = boolean?,
            "no-cache" => d.no_cache = flag?,
            "private" => d.private = flag?,
            "public" => d.public = boolean?,
            "must-revalidate" => d.must_revalidate = boolean?,
            "proxy-revalidate" => d.proxy_revalidate = boolean?,
            "max-age" => d.max_age = Some(delta?),
            "s-maxage" => d.s_maxage = Some(delta?),
            "stale-while-revalidate" => d.stale_while_revalidate = Some(delta?),
            "stale-if-error" => d.stale_if_error = Some(delta?),
            _ => {}
        }
    }
    Some(d)
}

/// The members of a Structured Field Dictionary (RFC 8941 §4.2.2), their
/// parameters dropped; `None` when the text is not one.
fn dictionary(text: &[u8]) -> Option<Vec<(String, Item)>> {
    let mut p = Parser { text, at: 0 };
    let mut members = Vec::new();
    p.skip(|b| b == b' ');
    while !p.done() {
        let key = p.key()?;
        let item = if p.eat(b'=') {
            p.bare_item()?
        } else {
            Item::Boolean(true)
        };
        p.parameters()?;
        members.push((key, item));
        p.skip(|b| b == b' ' || b == b'\t');
        if p.done() {
            break;
        }
        if !p.eat(b',') {
            return None;
        }
        p.skip(|b| b == b' ' || b == b'\t');
        if p.done() {
            // A trailing comma.
            return None;
        }
    }
    Some(members)
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.at >= self.text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.at += usize::from(hit);
        hit
    }

    fn skip(&mut self, keep: impl Fn(u8) -> bool) -> &[u8] {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    /// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`
    fn key(&mut self) -> Option<String> {
        let first = self.peek()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        let key = self.skip(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        });
        Some(String::from_utf8_lossy(key).into_owned())
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip(|b| b == b' ');
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn bare_item(&mut self) -> Option<Item> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => {
                self.at += 1;
                let b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
                self.skip(b64);
                self.eat(b':').then_some(Item::Other)
            }
            b'?' => {
                self.at += 1;
                let value = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.at += 1;
                Some(Item::Boolean(value))
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                let tchar = |b: u8| b.is_ascii_alphanumeric() || b":/!#$%&'*+-.^_`|~".contains(&b);
                self.skip(tchar);
                Some(Item::Other)
            }
            _ => None,
        }
    }

    /// An Integer (at most 15 digits) or a Decimal (at most 12 digits, a
    /// dot, 1 to 3 digits).
    fn number(&mut self) -> Option<Item> {
        let negative = self.eat(b'-');
        let whole = self.skip(|b| b.is_ascii_digit()).to_vec();
        if whole.is_empty() {
            return None;
        }
        if self.eat(b'.') {
            let fraction = self.skip(|b| b.is_ascii_digit()).len();
            return (whole.len() <= 12 && (1..=3).contains(&fraction)).then_some(Item::Other);
        }
        if whole.len() > 15 {
            return None;
        }
        let n: i64 = std::str::from_utf8(&whole).ok()?.parse().ok()?;
        Some(Item::Integer(if negative { -n } else { n }))
    }

    /// A String: printable ASCII, with `\"` and `\\` the only escapes.
    fn string(&mut self) -> Option<Item> {
        self.at += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(Item::String);
                }
                b'\\' => {
                    self.at += 1;
                    if !matches!(self.peek()?, b'"' | b'\\') {
                        return None;
                    }
                    self.at += 1;
                }
                0x20..=0x7e => self.at += 1,
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Option<Directives> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("cdn-cache-control", line.parse().unwrap());
        }
        directives(&headers, &[HeaderName::from_static("cdn-cache-control")])
    }

    #[test]
    fn valid_dictionaries_give_their_directives() {
        let d = parse(&["max-age=60, stale-if-error=5"]).unwrap();
        assert_eq!(d.max_age, Some(Delta::Secs(60)));
        assert_eq!(d.stale_if_error, Some(Delta::Secs(5)));
        let d = parse(&["private", "no-cache=\"x-a\""]).unwrap();
        assert!(d.private && d.no_cache && !d.no_store);
        let d =
            parse(&["no-store;a=1, max-age=99999999999, x-ext=tok/en, y=:aGk=:, z=1.5"]).unwrap();
        assert!(d.no_store);
        assert_eq!(d.max_age, Some(Delta::Secs(MAX_DELTA)));
        assert!(
            parse(&["s-maxage=0, must-revalidate=?1"])
                .unwrap()
                .must_revalidate
        );
        assert!(!parse(&["public=?0, max-age=1"]).unwrap().public);
        let d = parse(&["public, proxy-revalidate, s-maxage=7, stale-while-revalidate=8"]).unwrap();
        assert!(d.public && d.proxy_revalidate && !d.must_revalidate);
        assert_eq!(d.s_maxage, Some(Delta::Secs(7)));
        assert_eq!(d.stale_while_revalidate, Some(Delta::Secs(8)));
        // Spaces and tabs around the commas (RFC 8941 §4.2.2's OWS).
        let d = parse(&["max-age=1 \t,\t public"]).unwrap();
        assert!(d.public && d.max_age == Some(Delta::Secs(1)));
        // Valid items of other types beside the directives: keys and tokens
        // that begin with `*`, escapes in strings, the longest integer, a
        // decimal at its limits.
        for line in [
            "*x=1, max-age=4",
            "x=*tok, max-age=4",
            "x=\"a\\\"b\\\\c\", max-age=4",
            "x=123456789012345, max-age=4",
            "x=123456789012.123, max-age=4",
        ] {
            assert_eq!(
                parse(&[line]).unwrap().max_age,
                Some(Delta::Secs(4)),
                "{line}"
            );
        }
        assert_eq!(
            parse(&["max-age=123456789012345"]).unwrap().max_age,
            Some(Delta::Secs(MAX_DELTA))
        );
        // Repeated keys: the last wins.
        assert_eq!(
            parse(&["max-age=1, max-age=2"]).unwrap().max_age,
            Some(Delta::Secs(2))
        );
    }

    #[test]
    fn invalid_or_mistyped_fields_are_ignored_whole() {
        for line in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age =10",
            "max-age= 10",
            "MaX-aGe=10",
            "max-age=10,",
            "max-age=-1",
            "max-age=1.5",
            "no-store=1",
            "max-age=1 private",
            "x=\"unterminated",
            "x=\"bad\\escape\"",
            "x=?2",
            "x=!tok",
            "x=,max-age=1",
            "x=1.5555",
            "x=1234567890123.5",
            "max-age=1234567890123456",
            "",
        ] {
            assert_eq!(parse(&[line]), None, "{line:?}");
        }
        assert_eq!(
            directives(
                &HeaderMap::new(),
                &[HeaderName::from_static("cdn-cache-control")]
            ),
            None
        );
    }
}
