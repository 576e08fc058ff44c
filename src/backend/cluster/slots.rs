//! Slots and who owns them: the hash slot of a key, the map of slot
//! ranges to primaries (each with its circuit), and `CLUSTER SLOTS`.

use std::sync::Arc;

use bytes::Bytes;

use crate::breaker::Breaker;
use crate::hold::HoldDown;

/// The shard of slots no primary holds (in this backend's latest map).
pub(super) const UNMAPPED: &str = "unmapped";

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// A primary and its circuit.
#[derive(Clone, Debug)]
pub(super) struct Shard {
    pub(super) addr: Arc<str>,
    pub(super) circuit: Arc<Circuit>,
}

/// What a primary's calls share, kept while it stays in the map: its
/// breaker, and its write hold-down (one shard refusing writes, full or
/// demoted, holds down its own writes only).
#[derive(Debug)]
pub(super) struct Circuit {
    pub(super) breaker: Breaker,
    pub(super) hold: HoldDown,
    /// When a timeout of this shard was last noticed late (on the
    /// hold-down's clock; 0: never): the timeouts one stall of this process
    /// causes together count as one failure.
    pub(super) late_at: std::sync::atomic::AtomicU64,
}

impl Circuit {
    /// Whether a timeout noticed late now is part of a stall already
    /// counted (another was noticed late within `deadline`); if not, it is
    /// recorded as the stall's one failure.
    pub(super) fn same_stall(&self, deadline: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.hold.nanos();
        let last = self.late_at.load(Relaxed);
        let window = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < window {
            return true;
        }
        self.late_at.store(now, Relaxed);
        false
    }
}

/// Which primary owns each slot: ranges sorted by their first slot, each
/// with its primary's circuit resolved when the map was read (a call takes
/// no lock to find its breaker).
#[derive(Debug, Default)]
pub(super) struct SlotMap(pub(super) Vec<(u16, u16, Shard)>);

impl SlotMap {
    pub(super) fn owner(&self, slot: u16) -> Option<&Shard> {
        self.index_of(slot).map(|i| &self.0[i].2)
    }

    /// The position of the range holding `slot`.
    pub(super) fn index_of(&self, slot: u16) -> Option<usize> {
        let i = self.0.partition_point(|(_, end, _)| *end < slot);
        self.0
            .get(i)
            .is_some_and(|(start, _, _)| *start <= slot)
            .then_some(i)
    }

    /// Whether `ranges` are this map's, owner for owner.
    pub(super) fn same_as(&self, ranges: &[(u16, u16, Arc<str>)]) -> bool {
        self.0.len() == ranges.len()
            && self
                .0
                .iter()
                .zip(ranges)
                .all(|((s, e, shard), (s2, e2, addr))| s == s2 && e == e2 && shard.addr == *addr)
    }
}

/// The hash slot of `key`: CRC16 (XMODEM) of its hash tag — the part
/// between the first `{` and the next `}`, when not empty — or of the whole
/// key, modulo 16384.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// The positions of `keys`, grouped by slot (in the order slots first
/// appear).
pub(super) fn by_slot(keys: &[Bytes]) -> Vec<(u16, Vec<usize>)> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let slot = slot_of(key);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    groups
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id…], replicas…]…]`.
pub(super) fn parse_slots(reply: &redis::Value) -> Option<Vec<(u16, u16, Arc<str>)>> {
    use redis::Value;
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut map = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let (start, end) = (int(fields.first()?)?, int(fields.get(1)?)?);
        let Value::Array(primary) = fields.get(2)? else {
            return None;
        };
        let (host, port) = (text(primary.first()?)?, int(primary.get(1)?)?);
        map.push((start, end, Arc::from(format!("{host}:{port}"))));
    }
    map.sort_by_key(|(start, _, _)| *start);
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Config;

    #[test]
    fn slots_follow_the_hash_tag_as_redis_does() {
        // Reference values from `CLUSTER KEYSLOT` (also checked against a
        // live cluster in tests/cluster).
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    #[test]
    fn the_map_finds_each_slot_owner() {
        let shard = |addr: &str| Shard {
            addr: Arc::from(addr),
            circuit: Arc::new(Circuit {
                breaker: Breaker::new(Config::default()),
                hold: HoldDown::new(std::time::Duration::ZERO),
                late_at: Default::default(),
            }),
        };
        let addr = |map: &SlotMap, slot| map.owner(slot).map(|s| s.addr.to_string());
        let map = SlotMap(vec![
            (0, 5460, shard("a")),
            (5461, 10922, shard("b")),
            (10923, 16383, shard("c")),
        ]);
        assert_eq!(addr(&map, 0).as_deref(), Some("a"));
        assert_eq!(addr(&map, 5461).as_deref(), Some("b"));
        assert_eq!(addr(&map, 16383).as_deref(), Some("c"));
        let gap = SlotMap(vec![(0, 10, shard("a")), (20, 30, shard("b"))]);
        assert_eq!(addr(&gap, 15), None);
        assert_eq!(addr(&gap, 31), None);
        assert_eq!(addr(&SlotMap::default(), 1), None);
    }

    /// `CLUSTER SLOTS` replies are untrusted bytes: any reply parses to a
    /// map or `None`, never a panic.
    fn reply() -> impl proptest::strategy::Strategy<Value = redis::Value> {
        use proptest::prelude::*;
        use redis::Value;
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            (0i64..17_000).prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::BulkString),
            "[a-z0-9.:]{0,12}".prop_map(Value::SimpleString),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
        })
    }

    proptest::proptest! {
        #[test]
        fn any_reply_parses_or_is_refused_without_panicking(reply in reply()) {
            if let Some(map) = parse_slots(&reply) {
                let empty = SlotMap::default();
                proptest::prop_assert_eq!(empty.same_as(&map), map.is_empty());
            }
        }
    }
}
