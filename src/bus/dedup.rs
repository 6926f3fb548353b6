//! Exactly-once bookkeeping: the ids each subscriber of an EXACTLY_ONCE topic processed, the
//! last `window` of them.

use std::collections::{HashSet, VecDeque};

use rustc_hash::FxBuildHasher;

/// Ids a subscriber processed successfully on an EXACTLY_ONCE topic (the last `window`).
pub(super) struct Dedup {
    pub(super) window: usize,
    pub(super) seen: HashSet<String, FxBuildHasher>,
    pub(super) order: VecDeque<String>,
}

impl Dedup {
    pub(super) fn new(window: usize) -> Dedup {
        Dedup { window, seen: HashSet::default(), order: VecDeque::new() }
    }
    pub(super) fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }
    pub(super) fn mark(&mut self, id: String) {
        if self.seen.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > self.window {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }
}
