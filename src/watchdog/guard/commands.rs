//! Which Redis writes create keys, and where those keys are among their
//! arguments.

use redis::Cmd;

/// How a write creates keys.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Creates {
    /// `SET`: given the TTL in place (`PX`) unless it sets one, or keeps
    /// one (`KEEPTTL`: then followed, like the rest).
    Set,
    /// The key at this argument (the command's name is argument 0).
    At(usize),
    /// Every other argument from the first: `MSET`, `MSETNX`.
    Pairs,
    /// `XGROUP CREATE key group id MKSTREAM`.
    XGroupCreate,
    /// `SORT key … STORE destination`.
    SortStore,
}

/// What `name` (any case) creates, if it is a write that can create a key.
pub(super) fn creates(name: &[u8]) -> Option<Creates> {
    // No name of the table is longer.
    let mut buf = [0u8; 20];
    let upper = buf.get_mut(..name.len())?;
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    Some(match &*upper {
        // Strings, bitmaps, counters.
        b"SET" => Creates::Set,
        b"SETNX" | b"GETSET" | b"APPEND" | b"SETRANGE" | b"INCR" | b"INCRBY" | b"INCRBYFLOAT"
        | b"DECR" | b"DECRBY" | b"SETBIT" | b"BITFIELD" => Creates::At(1),
        b"MSET" | b"MSETNX" => Creates::Pairs,
        b"BITOP" => Creates::At(2),
        // Hashes.
        b"HSET" | b"HSETNX" | b"HMSET" | b"HINCRBY" | b"HINCRBYFLOAT" => Creates::At(1),
        // Lists.
        b"LPUSH" | b"RPUSH" => Creates::At(1),
        b"LMOVE" | b"BLMOVE" | b"RPOPLPUSH" | b"BRPOPLPUSH" => Creates::At(2),
        // Sets.
        b"SADD" | b"SUNIONSTORE" | b"SINTERSTORE" | b"SDIFFSTORE" => Creates::At(1),
        b"SMOVE" => Creates::At(2),
        // Sorted sets and geo.
        b"ZADD" | b"ZINCRBY" | b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" | b"ZRANGESTORE"
        | b"GEOADD" | b"GEOSEARCHSTORE" => Creates::At(1),
        // Streams.
        b"XADD" => Creates::At(1),
        b"XGROUP" => Creates::XGroupCreate,
        // HyperLogLog.
        b"PFADD" | b"PFMERGE" => Creates::At(1),
        // Keys made from others.
        b"COPY" | b"RENAME" | b"RENAMENX" => Creates::At(2),
        b"RESTORE" => Creates::At(1),
        b"SORT" => Creates::SortStore,
        _ => return None,
    })
}

/// Argument `i` of `cmd` (0 is its name).
pub(super) fn arg(cmd: &Cmd, i: usize) -> Option<&[u8]> {
    match cmd.args_iter().nth(i)? {
        redis::Arg::Simple(a) => Some(a),
        _ => None,
    }
}

/// Whether an argument of `cmd` after the first `from` is `word` (any
/// case).
pub(super) fn has_word(cmd: &Cmd, from: usize, word: &[u8]) -> bool {
    cmd.args_iter().skip(from).any(|a| match a {
        redis::Arg::Simple(a) => a.eq_ignore_ascii_case(word),
        _ => false,
    })
}

/// The keys `cmd` (a write that creates keys `how`) may create.
pub(super) fn created_keys(cmd: &Cmd, how: Creates) -> Vec<&[u8]> {
    let n = cmd.args_iter().len();
    match how {
        Creates::Set | Creates::At(_) => {
            let i = if let Creates::At(i) = how { i } else { 1 };
            arg(cmd, i).into_iter().collect()
        }
        Creates::Pairs => (1..n).step_by(2).filter_map(|i| arg(cmd, i)).collect(),
        Creates::XGroupCreate => {
            let create = arg(cmd, 1).is_some_and(|a| a.eq_ignore_ascii_case(b"CREATE"));
            match create && has_word(cmd, 3, b"MKSTREAM") {
                true => arg(cmd, 2).into_iter().collect(),
                false => Vec::new(),
            }
        }
        Creates::SortStore => cmd
            .args_iter()
            .enumerate()
            .skip(2)
            .find(|(_, a)| matches!(a, redis::Arg::Simple(a) if a.eq_ignore_ascii_case(b"STORE")))
            .and_then(|(i, _)| arg(cmd, i + 1))
            .into_iter()
            .collect(),
    }
}

/// Whether a `SET` sets a TTL itself (`EX`, `PX`, `EXAT`, `PXAT`), after
/// its key and value.
pub(super) fn set_has_ttl(cmd: &Cmd) -> bool {
    [&b"EX"[..], b"PX", b"EXAT", b"PXAT"]
        .iter()
        .any(|w| has_word(cmd, 3, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_any_case_and_long_or_unknown_ones_are_not() {
        assert_eq!(creates(b"set"), Some(Creates::Set));
        assert_eq!(creates(b"HsEt"), Some(Creates::At(1)));
        assert_eq!(creates(b"LMOVE"), Some(Creates::At(2)));
        assert_eq!(creates(b"GET"), None);
        assert_eq!(creates(b"EVAL"), None);
        assert_eq!(creates(b""), None);
        assert_eq!(creates(&[b'A'; 300]), None);
    }

    #[test]
    fn the_created_keys_are_found_where_each_command_puts_them() {
        fn keys(c: &Cmd) -> Vec<&[u8]> {
            created_keys(c, creates(arg(c, 0).unwrap()).unwrap())
        }
        let mset = redis::cmd("MSET").arg("a").arg(1).arg("b").arg(2).clone();
        assert_eq!(keys(&mset), [&b"a"[..], b"b"]);
        let sort = redis::cmd("SORT")
            .arg("src")
            .arg("LIMIT")
            .arg(0)
            .arg(5)
            .arg("store")
            .arg("dst")
            .clone();
        assert_eq!(keys(&sort), [&b"dst"[..]]);
        let plain_sort = redis::cmd("SORT").arg("src").clone();
        assert!(keys(&plain_sort).is_empty());
        let group = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("s")
            .arg("g")
            .arg("$")
            .arg("MKSTREAM")
            .clone();
        assert_eq!(keys(&group), [&b"s"[..]]);
        let no_mk = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("s")
            .arg("g")
            .arg("$")
            .clone();
        assert!(keys(&no_mk).is_empty());
        let set = redis::cmd("SET").arg("k").arg("EX").arg("NX").clone();
        assert!(!set_has_ttl(&set), "a value of \"EX\" is no option");
        assert!(set_has_ttl(
            &redis::cmd("SET").arg("k").arg("v").arg("px").arg(5).clone()
        ));
    }
}
