//! How many workers are draining one lane, at most `limit` at once, without ever leaving a
//! pushed item with nobody coming for it. (A managed listener's concurrency slots are counted
//! apart, in `managed.rs`: they change only with the GIL held on a GIL build, and by
//! compare-and-swap on a free-threaded one; a lane's claim is taken without the GIL.)
//!
//! Producers push, then `should_schedule`; a worker that finds the queue empty `release`s its
//! slot and then looks at the queue once more, taking the slot back (`try_claim`) if an item
//! slipped in. Either the producer saw the slot free and scheduled a worker, or the releasing
//! worker sees the item: the `loom` model below checks every interleaving.

#[cfg(nova_loom)]
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
#[cfg(not(nova_loom))]
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

pub struct Claim {
    active: AtomicUsize,
    limit: usize,
}

impl Claim {
    pub fn new(limit: usize) -> Claim {
        Claim { active: AtomicUsize::new(0), limit: limit.max(1) }
    }

    /// After a push: take a slot for a new worker if one is needed. A second worker only helps
    /// when those running leave a backlog (slow or GIL-releasing listeners); for fast ones it
    /// would only contend for the GIL. `backlog` is asked only then: a lane already being
    /// drained (the common case) is told apart by one load.
    pub fn should_schedule(&self, backlog: impl Fn() -> usize) -> bool {
        let mut active = self.active.load(SeqCst);
        loop {
            if active >= self.limit || (active > 0 && backlog() <= active) {
                return false;
            }
            match self.active.compare_exchange(active, active + 1, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(now) => active = now,
            }
        }
    }

    /// At most this many at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A worker found the queue empty and gives its slot back.
    pub fn release(&self) {
        self.active.fetch_sub(1, SeqCst);
    }

    /// Take a slot back after `release` (the queue turned out not to be empty).
    pub fn try_claim(&self) -> bool {
        let mut active = self.active.load(SeqCst);
        while active < self.limit {
            match self.active.compare_exchange(active, active + 1, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(now) => active = now,
            }
        }
        false
    }
}

#[cfg(all(test, nova_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize as Count;
    use loom::sync::{Arc, Mutex};
    use std::collections::VecDeque;

    /// One worker run as the pool would do it: drain, release, look again.
    fn worker(claim: &Claim, queue: &Mutex<VecDeque<u32>>, done: &Count) {
        loop {
            while queue.lock().unwrap().pop_front().is_some() {
                done.fetch_add(1, SeqCst);
            }
            claim.release();
            if !queue.lock().unwrap().is_empty() && claim.try_claim() {
                continue;
            }
            return;
        }
    }

    #[test]
    fn no_item_is_left_without_a_worker() {
        loom::model(|| {
            let claim = Arc::new(Claim::new(1));
            let queue = Arc::new(Mutex::new(VecDeque::new()));
            let done = Arc::new(Count::new(0));
            // A worker is already running (it claimed the slot for an earlier item).
            assert!(claim.should_schedule(|| 1));
            let (c, q, d) = (claim.clone(), queue.clone(), done.clone());
            let running = loom::thread::spawn(move || worker(&c, &q, &d));
            // Meanwhile a producer pushes an item, running a worker when told to schedule one.
            let (c, q, d) = (claim.clone(), queue.clone(), done.clone());
            let producer = loom::thread::spawn(move || {
                q.lock().unwrap().push_back(1);
                if c.should_schedule(|| q.lock().unwrap().len()) {
                    worker(&c, &q, &d);
                }
            });
            running.join().unwrap();
            producer.join().unwrap();
            assert_eq!(done.load(SeqCst), 1, "an item was stranded");
            assert!(queue.lock().unwrap().is_empty());
        });
    }
}
