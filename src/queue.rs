//! A lane: one bounded lock-free queue (crossbeam `ArrayQueue`) with the bookkeeping to run it
//! on a `WorkerPool` — at most `limit` workers at once, taking the GIL once per batch.
//!
//! An emitter has one lane; a bus topic has one lane per partition (limit 1, which is what
//! keeps a partition's order).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Release, SeqCst},
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;

use crate::claim::Claim;
use crate::context::ContextRunner;
use crate::pool::{Job, PoolInner};

/// How long a worker keeps the GIL for one lane before it lets others run.
const TIME_SLICE: Duration = Duration::from_millis(2);

/// Free-threaded builds: a worker hands delivered events back to their producer to release
/// (see `Lane::recycle`) in chunks of this many, so that the two threads touch the hand-back
/// queue's shared cache lines once a chunk rather than once an event.
#[cfg(Py_GIL_DISABLED)]
const CHUNK: usize = 64;

/// Free-threaded builds: how many chunks a lane keeps for its producers to release. Past it, a
/// worker releases them itself.
#[cfg(Py_GIL_DISABLED)]
const RETURNED_CHUNKS: usize = 4;

/// One queued event and the `contextvars.Context` captured when it was emitted. Its
/// listeners are those subscribed when it is delivered.
pub struct Item {
    pub event: Py<PyAny>,
    pub context: Option<Py<PyAny>>,
}

/// Where a sink takes a batch's items from, one at a time (see `Items::next`).
pub struct Items<'b, 'l> {
    batch: &'b mut Batch<'l>,
}

impl Items<'_, '_> {
    /// The next item's event and the context captured with it, or `None` when the batch ends.
    /// The context is lent, not given: the lane keeps the reference the producer took and
    /// releases it once the sink asks for the next item (on free-threaded builds it goes back
    /// to the producer, like the event's; see `Lane::recycle`).
    pub fn next(&mut self, py: Python<'_>) -> Option<(Py<PyAny>, Option<&Py<PyAny>>)> {
        let event = self.batch.next(py)?;
        Some((event, self.batch.context.as_ref()))
    }
}

/// What a lane hands its items to, with the GIL held.
pub trait Sink: Send + Sync {
    /// Deliver, in order, every item `items` hands out until it returns `None`; `contexts` is
    /// the worker's entered context, kept across the batch. Work that is the same for the
    /// whole batch (finding the topic, its subscribers) is done once here, not per item.
    fn deliver_batch(&self, py: Python<'_>, items: &mut Items<'_, '_>, contexts: &mut ContextRunner);

    /// A Rust panic interrupted delivery (a bug in Nova, never a listener's exception, which
    /// is reported the usual way); `lost_item` tells whether an event being delivered was cut
    /// short by it. Count it as failed and log it.
    fn internal_failure(&self, py: Python<'_>, err: &PyErr, lost_item: bool) {
        let _ = lost_item;
        crate::dispatch::log_failure(py, "worker", err);
    }
}

pub struct Lane {
    queue: ArrayQueue<Item>,
    claim: Claim,
    in_flight: AtomicUsize,
    /// Written by producers on every push; `retired` by workers on every item. On cache lines
    /// of their own: with the GIL off a producer and a worker run at once, and sharing one
    /// line would move it between their cores twice per event.
    enqueued: CachePadded<AtomicU64>,
    retired: CachePadded<AtomicU64>,
    stopped: AtomicBool,
    sink: Arc<dyn Sink>,
    pool: Arc<PoolInner>,
    // Producers blocked on a full queue (OnFull.BLOCK) and flushers wait here.
    waiters: AtomicUsize,
    signal: (Mutex<()>, Condvar),
    /// Free-threaded builds: the references to delivered events that the producers took when
    /// they queued them, handed back for a producer to release (`recycle`). CPython counts
    /// references per object owner: a release by another thread than the one that made the
    /// object queues it to that thread under a mutex (biased reference counting), which a
    /// worker releasing every event it delivers makes the hot spot of a queued emit. The
    /// worker releases only a reference of its own (taken and dropped in pairs, which never
    /// queues), and the producer releases the one it took, a chunk at a time.
    #[cfg(Py_GIL_DISABLED)]
    returned: ArrayQueue<Vec<Py<PyAny>>>,
}

pub enum Pushed {
    Ok,
    /// The queue was full; the item comes back.
    Full(Item),
}

impl Lane {
    pub fn new(capacity: usize, limit: usize, sink: Arc<dyn Sink>, pool: Arc<PoolInner>) -> Arc<Lane> {
        Arc::new(Lane {
            queue: ArrayQueue::new(capacity.max(1)),
            claim: Claim::new(limit),
            in_flight: AtomicUsize::new(0),
            enqueued: CachePadded::new(AtomicU64::new(0)),
            retired: CachePadded::new(AtomicU64::new(0)),
            stopped: AtomicBool::new(false),
            sink,
            pool,
            waiters: AtomicUsize::new(0),
            signal: (Mutex::new(()), Condvar::new()),
            #[cfg(Py_GIL_DISABLED)]
            returned: ArrayQueue::new(RETURNED_CHUNKS),
        })
    }

    /// Called by a producer as it queues an event: release a chunk of the delivered events
    /// handed back to it, if there is one (free-threaded builds; nothing to do with a GIL).
    #[inline]
    pub fn recycle(&self, _py: Python<'_>) {
        #[cfg(Py_GIL_DISABLED)]
        drop(self.returned.pop());
    }

    /// Hand a worker's chunk of delivered events back to the producers (free-threaded
    /// builds); when the lane holds enough already, the worker releases them itself.
    #[cfg(Py_GIL_DISABLED)]
    fn hand_back(&self, chunk: Vec<Py<PyAny>>) {
        if !chunk.is_empty() {
            drop(self.returned.push(chunk));
        }
    }

    /// Release every delivered event handed back (a flush, a shutdown).
    pub fn recycle_all(&self, _py: Python<'_>) {
        #[cfg(Py_GIL_DISABLED)]
        while self.returned.pop().is_some() {}
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
    /// Workers in the middle of a batch on this lane (each delivers one item at a time).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }
    pub fn retired(&self) -> u64 {
        self.retired.load(SeqCst)
    }
    /// (retired, unfinished) from one reading of `retired`: unfinished items were accepted and
    /// are neither delivered nor dropped nor taken back. After `stop_and_take` they are the
    /// ones workers still hold (each the item it delivers and maybe the one it popped ahead).
    pub fn progress(&self) -> (u64, u64) {
        let retired = self.retired.load(SeqCst);
        (retired, self.enqueued.load(SeqCst).saturating_sub(retired))
    }

    pub fn try_push(self: &Arc<Self>, item: Item) -> Pushed {
        self.enqueued.fetch_add(1, SeqCst);
        match self.queue.push(item) {
            Ok(()) => {
                self.kick();
                Pushed::Ok
            }
            Err(item) => {
                self.enqueued.fetch_sub(1, SeqCst);
                Pushed::Full(item)
            }
        }
    }

    /// Push, displacing the oldest item when full; returns the displaced one.
    pub fn force_push(self: &Arc<Self>, py: Python<'_>, item: Item) -> Option<Item> {
        self.enqueued.fetch_add(1, SeqCst);
        let old = self.queue.force_push(item);
        if old.is_some() {
            self.retire(py);
        }
        self.kick();
        old
    }

    /// Push, waiting for room until `deadline`. Call without the GIL.
    pub fn push_blocking(self: &Arc<Self>, mut item: Item, deadline: Option<Instant>) -> Pushed {
        let mut guard = self.signal.0.lock();
        self.waiters.fetch_add(1, SeqCst);
        let result = loop {
            match self.try_push(item) {
                Pushed::Ok => break Pushed::Ok,
                Pushed::Full(back) => item = back,
            }
            if self.pool.is_closed() && self.in_flight.load(SeqCst) == 0 {
                break Pushed::Full(item);
            }
            let Some(wait) = crate::component::next_wait(deadline, Duration::from_millis(50)) else {
                break Pushed::Full(item);
            };
            self.signal.1.wait_for(&mut guard, wait);
        };
        self.waiters.fetch_sub(1, SeqCst);
        result
    }

    /// Wait until every item accepted before the call is delivered or dropped. Call without
    /// the GIL.
    pub fn wait_retired(&self, deadline: Option<Instant>) -> bool {
        self.wait_retired_to(self.accepted(), deadline)
    }

    /// Items accepted so far (a target for `wait_retired_to`).
    pub fn accepted(&self) -> u64 {
        self.enqueued.load(SeqCst)
    }

    /// Wait until `target` items are delivered or dropped. Call without the GIL.
    pub fn wait_retired_to(&self, target: u64, deadline: Option<Instant>) -> bool {
        self.wait_until(deadline, || self.retired.load(SeqCst) >= target)
    }

    /// Wait until the queue is empty and nothing is in flight. Call without the GIL.
    pub fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        self.wait_until(deadline, || self.queue.is_empty() && self.in_flight.load(SeqCst) == 0)
    }

    /// Wait until the queue has room for `n` more items (or the pool closes). Call without the
    /// GIL.
    pub fn wait_for_room(&self, n: usize) -> bool {
        self.wait_for_room_until(n, None)
    }

    /// `wait_for_room` until `deadline`.
    pub fn wait_for_room_until(&self, n: usize, deadline: Option<Instant>) -> bool {
        self.wait_until(deadline, || self.len() + n <= self.capacity() || self.pool.is_closed())
            && self.len() + n <= self.capacity()
    }

    fn wait_until(&self, deadline: Option<Instant>, done: impl Fn() -> bool) -> bool {
        let mut guard = self.signal.0.lock();
        self.waiters.fetch_add(1, SeqCst);
        let ok = loop {
            if done() {
                break true;
            }
            let Some(wait) = crate::component::next_wait(deadline, Duration::from_millis(50)) else {
                break false;
            };
            self.signal.1.wait_for(&mut guard, wait);
        };
        self.waiters.fetch_sub(1, SeqCst);
        ok
    }

    fn wake_waiters(&self) {
        if self.waiters.load(SeqCst) > 0 {
            let _g = self.signal.0.lock();
            self.signal.1.notify_all();
        }
    }

    /// Count one item delivered, dropped or taken back. Only ever done with the GIL held
    /// (hence the token): on a GIL build that serialises the writes, so a load and a store, not
    /// a locked add, on every event; on a free-threaded build, an atomic add. Readers without
    /// the GIL see a well-defined count either way.
    #[inline]
    fn retire(&self, _py: Python<'_>) {
        #[cfg(not(Py_GIL_DISABLED))]
        self.retired.store(self.retired.load(std::sync::atomic::Ordering::Relaxed).wrapping_add(1), Release);
        #[cfg(Py_GIL_DISABLED)]
        self.retired.fetch_add(1, Release);
    }

    /// After shutdown's deadline: take nothing more from the queue and hand back what is left.
    pub fn stop_and_take(&self, py: Python<'_>) -> Vec<Item> {
        self.stopped.store(true, SeqCst);
        self.recycle_all(py);
        let mut left = Vec::new();
        while let Some(item) = self.queue.pop() {
            self.retire(py);
            left.push(item);
        }
        self.wake_waiters();
        left
    }

    /// Pop an item. Free-threaded builds: when the queue is empty, watch it for a moment
    /// (a few microseconds), since a producer running beside this worker is usually about to
    /// push the next item: ending the batch instead would cost a release, a new claim and a
    /// wake-up through the pool for nearly every event. (With a GIL the producer and the
    /// worker take turns, and items wait in batches.) It looks at the queue's tail only once
    /// the queue is found empty, and then at growing intervals: the producer writes that
    /// cache line on every push, and each look moves it to this core and back.
    #[inline]
    fn pop(&self) -> Option<Item> {
        #[cfg(Py_GIL_DISABLED)]
        {
            if let Some(item) = self.queue.pop() {
                return Some(item);
            }
            // 1, 2, 4 ... 64, 64, 64, 64 spin-loop hints between looks: about 5 to 20
            // microseconds in all.
            for step in 0..10 {
                for _ in 0..1u32 << step.min(6) {
                    std::hint::spin_loop();
                }
                if !self.queue.is_empty() {
                    break;
                }
            }
        }
        self.queue.pop()
    }

    /// Pop an item and start loading its event into the cache.
    fn pop_prefetched(&self) -> Option<Item> {
        let item = self.pop()?;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint; any address is allowed.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(item.event.as_ptr() as *const i8);
        }
        Some(item)
    }

    /// Make sure a worker will look at the queue (at most `limit` at once).
    fn kick(self: &Arc<Self>) {
        if self.claim.should_schedule(|| self.queue.len()) {
            self.pool.schedule(self.clone());
        }
    }
}

enum BatchEnd {
    Empty,
    Yield,
}

/// How often a batch that panicked is resumed before what it still holds is given up.
const PANIC_RESUMES: u32 = 3;

/// A worker's position in one batch of a lane: hands the sink one item at a time and counts
/// each as retired once the sink asks for the next (only once it has been delivered).
struct Batch<'a> {
    lane: &'a Lane,
    start: Instant,
    n: u32,
    /// One worker at a time on this lane (a bus partition): one item is popped ahead.
    one_at_a_time: bool,
    ahead: Option<Item>,
    winding_down: bool,
    /// An item is with the sink and not yet counted.
    handed: bool,
    /// The context captured with the item with the sink, lent to it (`Items::next`).
    context: Option<Py<PyAny>>,
    /// Free-threaded builds: the producer's reference to the event with the sink, kept back
    /// (the sink gets one of this worker's). Once the item is delivered, it and the context
    /// are gathered in `chunk`, to be handed back to the lane: this worker never releases a
    /// reference a producer took.
    #[cfg(Py_GIL_DISABLED)]
    kept: Option<Py<PyAny>>,
    #[cfg(Py_GIL_DISABLED)]
    chunk: Vec<Py<PyAny>>,
}

impl<'a> Batch<'a> {
    fn new(lane: &'a Lane) -> Batch<'a> {
        // On a lane drained by one worker at a time (a bus partition), one item is popped
        // ahead of the one being delivered and its event prefetched: events reach a
        // partition's queue interleaved with other partitions', so by delivery they are
        // usually out of cache. (Where several workers share a lane, an item held ahead would
        // wait for a slow listener that another worker could have run it beside.)
        let one_at_a_time = lane.claim.limit() == 1;
        let ahead = if one_at_a_time && !lane.stopped.load(SeqCst) { lane.pop_prefetched() } else { None };
        Batch {
            lane,
            start: Instant::now(),
            n: 0,
            one_at_a_time,
            ahead,
            winding_down: false,
            handed: false,
            context: None,
            #[cfg(Py_GIL_DISABLED)]
            kept: None,
            #[cfg(Py_GIL_DISABLED)]
            chunk: Vec::new(),
        }
    }

    /// Count the item the sink was handed, if any, as retired.
    fn settle(&mut self, py: Python<'_>) {
        if std::mem::take(&mut self.handed) {
            #[cfg(not(Py_GIL_DISABLED))]
            drop(self.context.take());
            #[cfg(Py_GIL_DISABLED)]
            {
                if self.chunk.capacity() == 0 {
                    self.chunk.reserve_exact(CHUNK);
                }
                self.chunk.extend(self.kept.take());
                self.chunk.extend(self.context.take());
                // A partial chunk is handed back when the batch ends: a `flush` may return a
                // moment before, leaving at most one chunk to be released by the next emit.
                if self.chunk.len() >= CHUNK {
                    self.lane.hand_back(std::mem::take(&mut self.chunk));
                }
            }
            self.lane.retire(py);
            self.n += 1;
            if self.n.is_multiple_of(16) {
                self.lane.wake_waiters();
                self.winding_down |= self.start.elapsed() >= TIME_SLICE;
            }
        }
    }

    /// The next item's event (its context goes to `self.context`), or `None` when the batch
    /// ends.
    fn next(&mut self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.settle(py);
        let lane = self.lane;
        let more = !self.winding_down && !lane.stopped.load(SeqCst);
        // The item popped ahead is delivered even when the batch ends (its slice is up, or
        // shutdown stops the lane): it has left the queue.
        let item = if self.one_at_a_time {
            let item = self.ahead.take()?;
            if more {
                self.ahead = lane.pop_prefetched();
            }
            item
        } else if more {
            lane.pop()?
        } else {
            return None;
        };
        self.handed = true;
        let Item { event, context } = item;
        self.context = context;
        // Free-threaded builds: the sink gets (and drops) a reference of this worker's own.
        #[cfg(Py_GIL_DISABLED)]
        let event = {
            let lent = event.clone_ref(py);
            self.kept = Some(event);
            lent
        };
        #[cfg(feature = "test-hooks")]
        crate::ffi::hooks::maybe_panic(crate::ffi::hooks::Point::Batch);
        Some(event)
    }
}

impl Lane {
    /// One batch, with the GIL held. A Rust panic in the sink is caught: the item it was
    /// delivering is reported to the sink as failed (and counted retired), and the batch
    /// resumes with the next item; the lane's counters and claim stay right either way.
    fn run_batch(&self, py: Python<'_>) -> BatchEnd {
        let mut contexts = ContextRunner::default();
        // In flight for the whole batch, marked before the first pop and cleared after the
        // last, so that "queue empty and nothing in flight" is never seen while an item is
        // between the two (one mark per batch, not two per item).
        self.in_flight.fetch_add(1, SeqCst);
        let mut batch = Batch::new(self);
        let mut resumes = 0;
        loop {
            let delivered = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.sink.deliver_batch(py, &mut Items { batch: &mut batch }, &mut contexts)
            }));
            let Err(payload) = delivered else { break };
            let err =
                crate::errors::internal_error(py, "a worker delivering events", &crate::ffi::panic_message(&payload));
            self.sink.internal_failure(py, &err, batch.handed);
            if let Err(e) = contexts.leave(py) {
                crate::dispatch::log_failure(py, "worker", &e);
            }
            contexts = ContextRunner::default();
            resumes += 1;
            if resumes >= PANIC_RESUMES {
                // Give up on what this batch still holds (an item popped ahead): reported as
                // failed, never silently dropped; the rest stays queued for the next batch.
                batch.settle(py);
                if let Some(item) = batch.ahead.take() {
                    self.sink.internal_failure(py, &err, true);
                    drop(item);
                    self.retire(py);
                }
                break;
            }
        }
        batch.settle(py);
        #[cfg(Py_GIL_DISABLED)]
        self.hand_back(std::mem::take(&mut batch.chunk));
        let end = if batch.winding_down { BatchEnd::Yield } else { BatchEnd::Empty };
        if let Err(e) = contexts.leave(py) {
            crate::dispatch::log_failure(py, "worker", &e);
        }
        self.in_flight.fetch_sub(1, SeqCst);
        end
    }
}

impl Job for Lane {
    fn run(self: Arc<Self>, pool: &Arc<PoolInner>) {
        loop {
            let end = if self.stopped.load(SeqCst) {
                BatchEnd::Empty
            } else {
                // Nested: the worker already holds the GIL, so this only proves it.
                Python::with_gil(|py| self.run_batch(py))
            };
            self.wake_waiters();
            match end {
                BatchEnd::Yield => {
                    // Keep our slot; go to the back of the pool's queue so other lanes run.
                    pool.schedule(self.clone());
                    return;
                }
                BatchEnd::Empty => {
                    self.claim.release();
                    if !self.stopped.load(SeqCst) && !self.queue.is_empty() && self.claim.try_claim() {
                        continue;
                    }
                    return;
                }
            }
        }
    }
}
