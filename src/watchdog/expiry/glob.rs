//! Redis's glob matching, as `SCAN … MATCH` does it.

/// Whether `key` matches the Redis glob `pattern` (`*`, `?`, `[abc]`,
/// `[a-z]`, `[^a]`, `\` escapes), as `SCAN … MATCH` and `KEYS` do. Linear
/// backtracking on the last `*`: no pattern makes it exponential.
pub(crate) fn glob(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, k));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => {
                let (matched, len) = class(&pattern[p..], key[k]);
                matched.then_some(len)
            }
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == key[k]).then_some(2),
            Some(c) => (*c == key[k]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(len), _) => {
                p += len;
                k += 1;
            }
            // Mismatch: the last `*` takes one more byte.
            (None, Some((sp, sk))) => {
                star = Some((sp, sk + 1));
                p = sp + 1;
                k = sk + 1;
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// A `[…]` class at the start of `pattern`: whether `c` is in it, and how
/// many pattern bytes it spans (to the end, if unclosed).
fn class(pattern: &[u8], c: u8) -> (bool, usize) {
    let mut i = 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (a, b) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= (a..=b).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    (matched != negate, (i + 1).min(pattern.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        let yes = [
            ("jobs:done:*", "jobs:done:1"),
            ("jobs:done:*", "jobs:done:"),
            ("*", ""),
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("h\\*llo", "h*llo"),
            ("*:done:*", "queue:a:done:7"),
            ("a*b*c", "aXbYbZc"),
        ];
        for (p, k) in yes {
            assert!(glob(p.as_bytes(), k.as_bytes()), "{p} ~ {k}");
        }
        let no = [
            ("jobs:done:*", "jobs:todo:1"),
            ("jobs:done:*", "xjobs:done:1"),
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("h\\*llo", "hello"),
            ("a*b*c", "aXbYbZ"),
            ("", "a"),
        ];
        for (p, k) in no {
            assert!(!glob(p.as_bytes(), k.as_bytes()), "{p} !~ {k}");
        }
        // Never exponential: a pathological pattern on a long key.
        let key = vec![b'a'; 10_000];
        assert!(!glob(b"*a*a*a*a*a*a*a*a*b", &key));
    }
}
