//! Bulk loading of the persistent B+trees ([`imbl::OrdMap`], [`imbl::OrdSet`]) when a
//! snapshot is read: the order in which sorted keys are inserted.
//!
//! imbl's B+tree splits a full leaf in halves. Keys inserted in ascending order therefore
//! leave every leaf but the last half full; keys in random order fill them to about 70%, but
//! each insert walks a cold path through the tree. [`fill_order`] inserts every other key first
//! (ascending, so the path stays in cache; the leaves end half full) and then the keys in
//! between (ascending again; each lands in the half-full leaf that holds its neighbours, which
//! it fills without a split). The tree ends with full leaves, built along a warm path.

/// `items` (sorted) in fill order: the even positions, then the odd ones.
pub(crate) fn fill_order<T>(items: Vec<T>) -> impl Iterator<Item = T> {
    let mut even = Vec::with_capacity(items.len().div_ceil(2));
    let mut odd = Vec::with_capacity(items.len() / 2);
    for (i, item) in items.into_iter().enumerate() {
        if i % 2 == 0 {
            even.push(item);
        } else {
            odd.push(item);
        }
    }
    even.into_iter().chain(odd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evens_then_odds_every_item_once() {
        let order: Vec<u32> = fill_order((0..7).collect()).collect();
        assert_eq!(order, [0, 2, 4, 6, 1, 3, 5]);
        assert_eq!(fill_order(Vec::<u32>::new()).count(), 0);
    }
}
