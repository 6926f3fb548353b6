//! Publishing: admitting an event, queueing it on its partition (or delivering it on the
//! bus's own loop), and the all-or-nothing publish through a store.

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use super::*;
use crate::component::{check_event, OnFull};
use crate::errors::{buffer_full, describe_event, pool_closed};
use crate::event::as_event;
use crate::metrics::{GilCounter, TypeCounters};
use crate::queue::{Item, Lane, Pushed};

/// A lock taken with the GIL released when it is contended (a thread holding it may be
/// waiting for the GIL inside the store's `append`).
pub(super) struct PublishLock(pub(super) parking_lot::RawMutex);

pub(super) struct PublishGuard<'a>(&'a PublishLock);

impl PublishLock {
    pub(super) fn acquire(&self, py: Python<'_>) -> PublishGuard<'_> {
        use parking_lot::lock_api::RawMutex as _;
        if !self.0.try_lock() {
            let raw = &self.0;
            py.allow_threads(|| raw.lock());
        }
        PublishGuard(self)
    }
}

impl Drop for PublishGuard<'_> {
    fn drop(&mut self) {
        use parking_lot::lock_api::RawMutex as _;
        // SAFETY: this guard's `acquire` locked it, and nothing else unlocks it.
        unsafe { self.0 .0.unlock() }
    }
}

impl Bus {
    pub(super) fn admit(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open_for(py, Some(event))?;
        if let Err(e) = check_event(py, &self.core.name, event, self.validator.as_ref()) {
            if let Some(ev) = as_event(event) {
                if let Ok(t) = ev.get().type_obj(py).to_str() {
                    self.core.types.resolve(t).counters.rejected.inc(py);
                }
            }
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn count(&self, py: Python<'_>, event: &Bound<'_, PyAny>, which: fn(&TypeCounters) -> &GilCounter) {
        if let Some(ev) = as_event(event) {
            // Through the last-type memo: consecutive events of one type skip the cache lookup.
            self.core.types.count_type(py, ev.get().type_obj(py), |c| which(c).inc(py));
        }
    }

    /// Whether an event for `lane` of `topic` is delivered by the publisher itself: on the
    /// thread of the bus's loop, when every subscriber of the topic is an `async def`
    /// listener (managed or not), no middleware is set and the partition has nothing queued or running (a
    /// worker would only hand the coroutines straight back to this loop). Per-key order holds
    /// as on a worker: later events wait for this one's tasks in the partition's backlog.
    pub(super) fn delivers_here(&self, py: Python<'_>, topic: &Topic, lane: &Lane) -> bool {
        // Cheapest first: a bus made outside any event loop (the common case) stops here.
        let Some(event_loop) = &self.core.event_loop else { return false };
        lane.len() == 0
            && lane.in_flight() == 0
            && topic.subs.read().all_async
            && self.core.chain.snapshot().is_none()
            && crate::tasks::runs_here(py, event_loop)
    }

    /// Queue `event` on `partition` of `topic`, with the publisher's `context`.
    pub(super) fn enqueue(
        &self,
        py: Python<'_>,
        topic: &Topic,
        event: &Bound<'_, PyAny>,
        partition: usize,
        context: Py<PyAny>,
    ) -> PyResult<()> {
        let lane = &topic.lanes[partition];
        if self.delivers_here(py, topic, lane) {
            topic.sinks[partition].deliver_here(py, &self.core, topic, event, &context);
            self.core.published.inc(py);
            self.count(py, event, |c| &c.accepted);
            return Ok(());
        }
        let item = Item { event: event.clone().unbind(), context: Some(context) };
        lane.recycle(py);
        match topic.on_full {
            OnFull::DropOldest => {
                if let Some(old) = lane.force_push(py, item) {
                    self.core.dropped_full.inc();
                    self.count(py, old.event.bind(py), |c| &c.dropped);
                }
            }
            policy => {
                let pushed = match lane.try_push(item) {
                    Pushed::Full(item) if policy == OnFull::Block => {
                        let lane = lane.clone();
                        py.allow_threads(move || lane.push_blocking(item, None))
                    }
                    other => other,
                };
                if let Pushed::Full(_) = pushed {
                    if policy == OnFull::DropNewest {
                        self.core.dropped_full.inc();
                        self.count(py, event, |c| &c.dropped);
                        return Ok(());
                    }
                    self.count(py, event, |c| &c.rejected);
                    return Err(buffer_full(
                        py,
                        format!(
                            "bus '{}': partition {} of topic '{}' is full ({} events) for {}; \
                             use on_full=OnFull.BLOCK, raise buffer_size or partitions, or add workers",
                            self.core.name,
                            partition,
                            topic.name,
                            lane.capacity(),
                            describe_event(event)
                        ),
                    ));
                }
            }
        }
        self.core.published.inc(py);
        self.count(py, event, |c| &c.accepted);
        Ok(())
    }

    /// Publish `batch` (events with their partitions) on a bus with a store, all or nothing:
    /// under the publish lock, room is made sure of first (a full partition refuses, drops or
    /// waits by the topic's `on_full` before anything is stored), then the accepted events are
    /// appended to the store in one call, then queued. A store that raises leaves nothing
    /// queued and its error reaches the caller. Events DROP_NEWEST drops are never stored;
    /// those DROP_OLDEST displaces later were accepted, so the store keeps them.
    pub(super) fn publish_stored(
        &self,
        py: Python<'_>,
        store: &Py<PyAny>,
        topic: &Topic,
        batch: &[(Bound<'_, PyAny>, usize)],
        context: Py<PyAny>,
    ) -> PyResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _lock = self.publish_lock.acquire(py);
        self.check_open_for(py, batch.first().map(|(e, _)| e))?;
        if let Some(err) = self.core.store_failures.take(py, &self.core.name) {
            return Err(err);
        }
        // (partition, events for it): a publish of one event, the usual call, allocates
        // nothing here.
        let one;
        let mut many = Vec::new();
        let need: &[(usize, usize)] = match batch {
            [(_, p)] => {
                one = [(*p, 1)];
                &one
            }
            _ => {
                let mut counts = vec![0usize; topic.lanes.len()];
                for (_, p) in batch {
                    counts[*p] += 1;
                }
                many.extend(counts.into_iter().enumerate().filter(|(_, n)| *n > 0));
                &many
            }
        };
        // Which events DROP_NEWEST drops (made only when it drops any).
        let mut keep: Vec<bool> = Vec::new();
        for &(p, ref n) in need {
            let lane = &topic.lanes[p];
            if lane.len() + n <= lane.capacity() {
                continue;
            }
            match topic.on_full {
                OnFull::DropOldest => {}
                OnFull::Block if *n <= lane.capacity() => {
                    let lane = lane.clone();
                    let n = *n;
                    if !py.allow_threads(move || lane.wait_for_room(n)) {
                        return Err(pool_closed(
                            py,
                            format!("bus '{}': its worker pool closed while waiting for room", self.core.name),
                        ));
                    }
                }
                OnFull::DropNewest => {
                    // The newest of this partition's events beyond its free room are dropped.
                    if keep.is_empty() {
                        keep = vec![true; batch.len()];
                    }
                    let mut free = lane.capacity().saturating_sub(lane.len());
                    for (i, (ev, q)) in batch.iter().enumerate() {
                        if *q == p {
                            if free > 0 {
                                free -= 1;
                            } else {
                                keep[i] = false;
                                self.core.dropped_full.inc();
                                self.count(py, ev, |c| &c.dropped);
                            }
                        }
                    }
                }
                _ => {
                    for (ev, _) in batch {
                        self.count(py, ev, |c| &c.rejected);
                    }
                    return Err(buffer_full(
                        py,
                        format!(
                            "bus '{}': {} event(s) do not fit partition {} of topic '{}' ({} of {} free); \
                             nothing was published or stored; use on_full=OnFull.BLOCK, raise buffer_size \
                             or partitions, or add workers",
                            self.core.name,
                            n,
                            p,
                            topic.name,
                            lane.capacity().saturating_sub(lane.len()),
                            lane.capacity()
                        ),
                    ));
                }
            }
        }
        let accepted =
            || batch.iter().enumerate().filter(|(i, _)| keep.get(*i).copied().unwrap_or(true)).map(|(_, b)| b);
        if accepted().next().is_none() {
            return Ok(());
        }
        match &topic.store {
            // Group commit: queued for the topic's store writer, in publish order.
            Some((lane, _)) => {
                for (ev, _) in accepted() {
                    let item = Item { event: ev.clone().unbind(), context: None };
                    if let Pushed::Full(item) = lane.try_push(item) {
                        let lane = lane.clone();
                        if let Pushed::Full(_) = py.allow_threads(move || lane.push_blocking(item, None)) {
                            return Err(pool_closed(
                                py,
                                format!(
                                    "bus '{}': its worker pool closed while the store writer was behind",
                                    self.core.name
                                ),
                            ));
                        }
                    }
                }
            }
            // durability="event": stored before publish returns.
            None => {
                let mut args = vec![PyString::new(py, &topic.name).into_any()];
                args.extend(accepted().map(|(ev, _)| ev.clone()));
                store.bind(py).call_method1("append", PyTuple::new(py, args)?)?;
            }
        }
        for (ev, p) in accepted() {
            // Room was made sure of under the lock (workers only ever make more).
            self.enqueue(py, topic, ev, *p, context.clone_ref(py))?;
        }
        Ok(())
    }
}
