//! The hand-off between a retry that is about to run and a shutdown that abandons what is
//! still waiting: each waiting event goes to exactly one of the two.
//!
//! A retry job `claim`s its event before it runs the attempt, taking it out of the waiting set
//! (it then counts as running, which a shutdown reports as in flight); a shutdown's
//! `abandon_all` takes everything still waiting and stops the hand-off, after which `park`
//! (a further retry) hands the event straight back to be settled as abandoned. All three go
//! through one lock, so no event is both run and reported. The `loom` model below checks every
//! interleaving of a retry job (which may fail and park its event again) with a shutdown.

use std::collections::HashMap;

#[cfg(nova_loom)]
use loom::sync::Mutex;
#[cfg(not(nova_loom))]
use std::sync::Mutex;

struct State<T> {
    waiting: HashMap<u64, T>,
    running: usize,
    stopped: bool,
}

pub struct Handoff<T> {
    state: Mutex<State<T>>,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Handoff { state: Mutex::new(State { waiting: HashMap::new(), running: 0, stopped: false }) }
    }
}

impl<T> Handoff<T> {
    fn lock(&self) -> impl std::ops::DerefMut<Target = State<T>> + '_ {
        // A panic while the lock is held cannot leave the map half-changed: take it anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for a retry: `Err(item)` back when the hand-off has stopped (settle it as
    /// abandoned; no shutdown report will see it).
    pub fn park(&self, id: u64, item: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.stopped {
            return Err(item);
        }
        s.waiting.insert(id, item);
        Ok(())
    }

    /// Take a waiting event to run its retry (it counts as running until `finish`); `None`
    /// when a shutdown has taken it (or stopped the hand-off) first.
    pub fn claim(&self, id: u64) -> Option<T> {
        let mut s = self.lock();
        if s.stopped {
            return None;
        }
        let item = s.waiting.remove(&id)?;
        s.running += 1;
        Some(item)
    }

    /// A claimed retry has run (its event delivered, failed, or parked again).
    pub fn finish(&self) {
        let mut s = self.lock();
        s.running -= 1;
    }

    /// Stop: every event still waiting is handed back, and from now on nothing is claimed or
    /// parked.
    pub fn abandon_all(&self) -> Vec<T> {
        let mut s = self.lock();
        s.stopped = true;
        s.waiting.drain().map(|(_, v)| v).collect()
    }

    /// Events waiting for a retry or running one.
    pub fn pending(&self) -> usize {
        let s = self.lock();
        s.waiting.len() + s.running
    }

    /// Retries running now (in flight for a shutdown report).
    pub fn running(&self) -> usize {
        self.lock().running
    }
}

#[cfg(all(test, nova_loom))]
mod tests {
    use super::*;
    use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use loom::sync::Arc;

    /// How an event ended: delivered by its retry, reported by the shutdown, or handed back by
    /// `park` after the shutdown (abandoned late, reported to its manager).
    #[derive(Default)]
    struct Ends {
        delivered: AtomicUsize,
        reported: AtomicUsize,
        late: AtomicUsize,
    }

    #[test]
    fn every_event_ends_exactly_once() {
        loom::model(|| {
            let h = Arc::new(Handoff::<u32>::default());
            let ends = Arc::new(Ends::default());
            // Two events wait for a retry; the first one's retry fails and parks it again.
            h.park(1, 10).unwrap();
            h.park(2, 20).unwrap();
            let (hj, ej) = (h.clone(), ends.clone());
            let job = loom::thread::spawn(move || {
                if let Some(ev) = hj.claim(1) {
                    // The attempt failed: wait for another retry.
                    if hj.park(3, ev).is_err() {
                        ej.late.fetch_add(1, SeqCst);
                    }
                    hj.finish();
                }
                if hj.claim(3).is_some() {
                    ej.delivered.fetch_add(1, SeqCst);
                    hj.finish();
                }
                if hj.claim(2).is_some() {
                    ej.delivered.fetch_add(1, SeqCst);
                    hj.finish();
                }
            });
            let (hs, es) = (h.clone(), ends.clone());
            let shutdown = loom::thread::spawn(move || {
                let left = hs.abandon_all();
                es.reported.fetch_add(left.len(), SeqCst);
            });
            job.join().unwrap();
            shutdown.join().unwrap();
            let total = ends.delivered.load(SeqCst) + ends.reported.load(SeqCst) + ends.late.load(SeqCst);
            assert_eq!(total, 2, "an event was lost or counted twice");
            assert_eq!(h.pending(), 0);
        });
    }
}
