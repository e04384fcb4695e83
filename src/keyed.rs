//! Walking maps keyed by the same ids together, in key order. The leader's per-tick work goes
//! over every group of the committed state and, for each, reads the leader's own per-group
//! maps (its memory, the readiness schedule, the configured timings). A search per group costs
//! a walk down a tree of string comparisons each, and at thousands of groups most of them miss
//! the CPU's caches; walking the maps side by side costs one comparison per entry, so walking them
//! stays linear in the groups.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;

/// Looks up keys given in ascending order in one walk over a map (`map.iter()`, or
/// `map.iter_mut()` to change what it finds): each look-up resumes where the last stopped. A
/// key below the last one looked up is not found (the caller's order is the contract: it walks
/// another map of the same keys in order).
pub struct Cursor<'a, K: 'a, V, I: Iterator<Item = (&'a K, V)>> {
    rest: Peekable<I>,
}

impl<'a, K: Ord + 'a, V, I: Iterator<Item = (&'a K, V)>> Cursor<'a, K, V, I> {
    pub fn new(entries: I) -> Cursor<'a, K, V, I> {
        Cursor { rest: entries.peekable() }
    }

    /// The value of `key`, if the map holds it.
    pub fn seek(&mut self, key: &K) -> Option<V> {
        while let Some((k, _)) = self.rest.peek() {
            match (*k).cmp(key) {
                Ordering::Less => {
                    self.rest.next();
                }
                Ordering::Equal => return self.rest.next().map(|(_, v)| v),
                Ordering::Greater => return None,
            }
        }
        None
    }
}

/// Makes `mine` hold exactly the keys of `theirs`: an entry for a new key is made by `new`,
/// one whose key went is dropped, the rest are kept. Then yields each key with both values, in
/// key order. Linear while the keys stay the same (the steady case, checked in one walk); a
/// change of keys rebuilds `mine` once.
pub fn align<'a, K: Ord + Clone, T, M>(
    mine: &'a mut BTreeMap<K, M>,
    theirs: &'a BTreeMap<K, T>,
    mut new: impl FnMut(&K) -> M,
) -> impl Iterator<Item = (&'a K, &'a T, &'a mut M)> {
    if mine.len() != theirs.len() || !mine.keys().eq(theirs.keys()) {
        let mut old = std::mem::take(mine);
        *mine = theirs.keys().map(|k| (k.clone(), old.remove(k).unwrap_or_else(|| new(k)))).collect();
    }
    theirs.iter().zip(mine.values_mut()).map(|((k, t), m)| (k, t, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_finds_keys_looked_up_in_order_and_misses_the_absent() {
        let map: BTreeMap<&str, u32> = [("b", 2), ("d", 4), ("f", 6)].into();
        let mut cursor = Cursor::new(map.iter());
        assert_eq!(cursor.seek(&"a"), None);
        assert_eq!(cursor.seek(&"b"), Some(&2));
        assert_eq!(cursor.seek(&"c"), None);
        assert_eq!(cursor.seek(&"d"), Some(&4), "a miss does not lose the next key");
        assert_eq!(cursor.seek(&"f"), Some(&6));
        assert_eq!(cursor.seek(&"g"), None);
    }

    #[test]
    fn aligning_keeps_entries_of_kept_keys_makes_new_ones_and_drops_the_gone() {
        let mut mine: BTreeMap<&str, u32> = [("a", 1), ("b", 2), ("c", 3)].into();
        let theirs: BTreeMap<&str, char> = [("b", 'B'), ("c", 'C'), ("d", 'D')].into();
        let mut made = Vec::new();
        let seen: Vec<_> = align(&mut mine, &theirs, |k| {
            made.push(*k);
            0
        })
        .map(|(k, t, m)| {
            *m += 10;
            (*k, *t, *m)
        })
        .collect();
        assert_eq!(seen, [("b", 'B', 12), ("c", 'C', 13), ("d", 'D', 10)]);
        assert_eq!(made, ["d"]);
        assert_eq!(mine, [("b", 12), ("c", 13), ("d", 10)].into());
        // The same keys again: nothing made, every entry kept.
        assert_eq!(align(&mut mine, &theirs, |_| unreachable!()).count(), 3);
    }
}
