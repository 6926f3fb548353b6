//! Per-key order for a subscriber that waits: while one of its events waits for a retry or a
//! task, the partition's later events for it are held back, then released in order, and never
//! two of them run at once.
//!
//! The protocol, for one subscriber `seq` of one partition (`T` is what a held event carries):
//! - The partition's worker asks `hold` before it delivers. While `seq` has an entry the event
//!   goes to the back of its queue; with no entry the worker delivers it itself.
//! - A delivery that has to wait (a retry, a task) calls `wait`: the entry appears, or, made by
//!   an earlier wait, is marked waiting again under a new epoch.
//! - When the wait ends, its finisher calls `end_wait` (the epoch to release under) and then
//!   `next` for one event at a time, delivering each without asking `hold`. `next` hands out
//!   nothing once another wait has begun (a released event waited again: that wait's finisher
//!   goes on) and removes the entry, in the same lock, when the queue is empty: only then does
//!   the worker deliver directly again, so nothing overtakes what was held.
//!
//! Without a GIL the worker, a retry thread and a loop thread run these at once; the lock makes
//! each step atomic, and the `loom` model below checks the order over every interleaving.

use std::collections::{HashMap, VecDeque};

#[cfg(nova_loom)]
use loom::sync::{
    atomic::{AtomicUsize, Ordering::SeqCst},
    Mutex, MutexGuard,
};
use rustc_hash::FxBuildHasher;
#[cfg(not(nova_loom))]
use std::sync::{
    atomic::{AtomicUsize, Ordering::SeqCst},
    Mutex, MutexGuard,
};

struct Entry<T> {
    queue: VecDeque<T>,
    /// Bumped by every `wait`: a finisher releases only under the epoch its wait had.
    epoch: u64,
    waiting: bool,
}

pub struct HoldBack<T> {
    /// Keyed by `Sub::seq` (our own numbers: FxHash, no hash-flooding concern).
    map: Mutex<HashMap<u64, Entry<T>, FxBuildHasher>>,
    /// Entries in `map`: nearly always 0, which the worker reads without the lock.
    subs: AtomicUsize,
    /// Events held in all queues, readable from any thread.
    events: AtomicUsize,
}

impl<T> Default for HoldBack<T> {
    fn default() -> Self {
        HoldBack { map: Mutex::new(HashMap::default()), subs: AtomicUsize::new(0), events: AtomicUsize::new(0) }
    }
}

impl<T> HoldBack<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry<T>, FxBuildHasher>> {
        // Every step leaves the map whole before anything that can panic: take it anyway.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any subscriber's events are held back here (one load: the common answer is no).
    pub fn holds_any(&self) -> bool {
        self.subs.load(SeqCst) > 0
    }

    /// Put `seq`'s event at the back of its queue if it has one (`make` is called only then);
    /// false when the caller is to deliver it now.
    pub fn hold(&self, seq: u64, make: impl FnOnce() -> T) -> bool {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(&seq) else {
            return false;
        };
        entry.queue.push_back(make());
        self.events.fetch_add(1, SeqCst);
        true
    }

    /// `seq`'s delivery waits (for a retry or a task): its later events are held back.
    pub fn wait(&self, seq: u64) {
        let mut map = self.lock();
        let entry = map.entry(seq).or_insert_with(|| {
            self.subs.fetch_add(1, SeqCst);
            Entry { queue: VecDeque::new(), epoch: 0, waiting: false }
        });
        entry.epoch += 1;
        entry.waiting = true;
    }

    /// `seq`'s wait has ended: the epoch to call `next` with, or `None` when a shutdown took
    /// what was held.
    pub fn end_wait(&self, seq: u64) -> Option<u64> {
        let mut map = self.lock();
        let entry = map.get_mut(&seq)?;
        entry.waiting = false;
        Some(entry.epoch)
    }

    /// The next held event to deliver, in order; `None` when the queue is empty (the entry is
    /// gone: the worker delivers from now on), when a newer wait has begun, or after a
    /// shutdown.
    pub fn next(&self, seq: u64, epoch: u64) -> Option<T> {
        let mut map = self.lock();
        let entry = map.get_mut(&seq)?;
        if entry.waiting || entry.epoch != epoch {
            return None;
        }
        match entry.queue.pop_front() {
            Some(item) => {
                self.events.fetch_sub(1, SeqCst);
                Some(item)
            }
            None => {
                map.remove(&seq);
                self.subs.fetch_sub(1, SeqCst);
                None
            }
        }
    }

    /// Events held back now.
    pub fn len(&self) -> usize {
        self.events.load(SeqCst)
    }

    /// Take every held event (shutdown), in order per subscriber.
    pub fn take_all(&self) -> Vec<T> {
        let taken: Vec<Entry<T>> = {
            let mut map = self.lock();
            self.subs.store(0, SeqCst);
            self.events.store(0, SeqCst);
            map.drain().map(|(_, e)| e).collect()
        };
        // Dropped (which may run Python code for T) after the lock is let go.
        taken.into_iter().flat_map(|e| e.queue).collect()
    }
}

#[cfg(all(test, not(nova_loom)))]
mod tests {
    use super::*;

    #[test]
    fn releases_in_order_then_delivers_directly() {
        let h = HoldBack::<u32>::default();
        assert!(!h.holds_any());
        assert!(!h.hold(1, || 0));
        h.wait(1);
        assert!(h.hold(1, || 2) && h.hold(1, || 3));
        assert_eq!(h.len(), 2);
        let epoch = h.end_wait(1).unwrap();
        assert_eq!(h.next(1, epoch), Some(2));
        // 2 waits again: its own finisher goes on, this one stops.
        h.wait(1);
        assert_eq!(h.next(1, epoch), None);
        let epoch2 = h.end_wait(1).unwrap();
        assert_ne!(epoch, epoch2);
        assert_eq!(h.next(1, epoch), None);
        assert_eq!(h.next(1, epoch2), Some(3));
        assert_eq!(h.next(1, epoch2), None);
        assert!(!h.holds_any() && h.len() == 0);
        assert!(!h.hold(1, || 4));
    }

    #[test]
    fn shutdown_takes_everything() {
        let h = HoldBack::<u32>::default();
        h.wait(1);
        h.wait(2);
        assert!(h.hold(1, || 10) && h.hold(2, || 20) && h.hold(1, || 11));
        let mut all = h.take_all();
        all.sort();
        assert_eq!(all, vec![10, 11, 20]);
        assert!(!h.holds_any() && h.len() == 0);
        assert_eq!(h.end_wait(1), None);
    }
}

#[cfg(all(test, nova_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Deliveries in the order they ran; `busy` catches two at once.
    #[derive(Default)]
    struct Listener {
        busy: AtomicUsize,
        got: Mutex<Vec<u32>>,
    }

    impl Listener {
        fn deliver(&self, ev: u32) {
            assert_eq!(self.busy.fetch_add(1, SeqCst), 0, "two events of one key ran at once");
            self.got.lock().unwrap().push(ev);
            self.busy.fetch_sub(1, SeqCst);
        }
    }

    /// The partition's worker: hold or deliver, as `PartitionSink::deliver_to` does.
    fn publish(h: &HoldBack<u32>, l: &Listener, ev: u32) {
        if !(h.holds_any() && h.hold(0, || ev)) {
            l.deliver(ev);
        }
    }

    /// A finisher: the retried event is delivered, then what was held is released; event
    /// `fails_once` waits for one more retry, run by a thread of its own.
    fn finish(h: Arc<HoldBack<u32>>, l: Arc<Listener>, retried: u32, fails_once: Option<u32>) {
        l.deliver(retried);
        let Some(epoch) = h.end_wait(0) else { return };
        let mut again = None;
        while let Some(ev) = h.next(0, epoch) {
            if Some(ev) == fails_once {
                h.wait(0);
                let (h2, l2) = (h.clone(), l.clone());
                again = Some(loom::thread::spawn(move || finish(h2, l2, ev, None)));
                break;
            }
            l.deliver(ev);
        }
        if let Some(t) = again {
            t.join().unwrap();
        }
    }

    fn model(fails_once: Option<u32>) {
        loom::model(move || {
            let h = Arc::new(HoldBack::<u32>::default());
            let l = Arc::new(Listener::default());
            // Event 1 failed and waits for its retry.
            h.wait(0);
            let (hf, lf) = (h.clone(), l.clone());
            let retry = loom::thread::spawn(move || finish(hf, lf, 1, fails_once));
            for ev in 2..=3 {
                publish(&h, &l, ev);
            }
            retry.join().unwrap();
            assert_eq!(*l.got.lock().unwrap(), vec![1, 2, 3], "per-key order broken");
            assert!(!h.holds_any() && h.len() == 0);
        });
    }

    #[test]
    fn holdback_keeps_order_against_a_finishing_retry() {
        model(None);
    }

    #[test]
    fn holdback_keeps_order_when_a_released_event_waits_again() {
        model(Some(2));
    }
}
