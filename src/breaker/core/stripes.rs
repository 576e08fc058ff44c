//! Per-thread stripes: each thread counts on a cache line of its own, given
//! back when the thread exits.

use std::cell::Cell;

use super::*;

thread_local! {
    /// This thread's stripe, or `UNASSIGNED`.
    pub(super) static STRIPE: Cell<usize> = const { Cell::new(UNASSIGNED) };
    /// Gives an owned stripe back when the thread exits.
    static STRIPE_OWNER: StripeOwner = const { StripeOwner(Cell::new(UNASSIGNED)) };
}

/// Owned stripe indices not held by a live thread.
static FREE_STRIPES: Mutex<Option<Vec<usize>>> = Mutex::new(None);

struct StripeOwner(Cell<usize>);

impl Drop for StripeOwner {
    fn drop(&mut self) {
        let index = self.0.get();
        if index != UNASSIGNED {
            // Anything this thread records from now on goes to the shared
            // stripe, since the owned one may soon have a new owner.
            let _ = STRIPE.try_with(|s| s.set(SHARED_STRIPE));
            lock(&FREE_STRIPES).get_or_insert_with(Vec::new).push(index);
        }
    }
}

/// This thread's stripe, and whether it owns it alone.
#[inline]
pub(super) fn stripe_index() -> (usize, bool) {
    let index = STRIPE.try_with(Cell::get).unwrap_or(SHARED_STRIPE);
    if index == UNASSIGNED {
        return assign_stripe();
    }
    (index, index != SHARED_STRIPE)
}

#[cold]
#[inline(never)]
fn assign_stripe() -> (usize, bool) {
    let index = lock(&FREE_STRIPES)
        .get_or_insert_with(|| (0..OWNED_STRIPES).rev().collect())
        .pop();
    let registered = index.and_then(|i| STRIPE_OWNER.try_with(|o| o.0.set(i)).ok().map(|()| i));
    let (index, owned) = match registered {
        Some(i) => (i, true),
        None => {
            if let Some(i) = index {
                lock(&FREE_STRIPES).get_or_insert_with(Vec::new).push(i);
            }
            (SHARED_STRIPE, false)
        }
    };
    let _ = STRIPE.try_with(|s| s.set(index));
    (index, owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_get_distinct_owned_stripes_and_give_them_back() {
        let (mine, owned) = stripe_index();
        assert!(owned && mine < OWNED_STRIPES);
        let theirs = std::thread::spawn(stripe_index).join().unwrap();
        assert!(theirs.1);
        assert_ne!(theirs.0, mine);
        // Stripes come back when their thread exits: many more threads
        // than stripes, one after another, each own one. (Other tests'
        // threads may take any given stripe meanwhile, so none in
        // particular is looked for.)
        for _ in 0..3 * OWNED_STRIPES {
            assert!(std::thread::spawn(stripe_index).join().unwrap().1);
        }
    }
}
