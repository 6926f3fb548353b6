//! `nova.Bus`: named topics split into partitions, each one bounded lock-free queue drained by
//! at most one worker at a time, so the events of one partition reach each subscriber in
//! publish order while partitions run in parallel.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::sync::GILProtected;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use regex::Regex;
use rustc_hash::FxBuildHasher;

use crate::component::{
    bounded, check_event, deadline, pick_loop, positive, shutdown_report, ContextCapture, OnFull, MAX_BUFFER_SIZE,
    MAX_PARTITIONS, MAX_TOPIC_SLOTS,
};
use crate::dispatch::{attempt, log_failure, Attempt, Chain, Delivery, Dispatch, DispatchCounters, PendingAfter};
use crate::errors::{
    buffer_full, bus_closed, describe_event, pool_closed, topic_not_found, type_name, validation_error,
};
use crate::event::as_event;
use crate::ffi::context::run_in_copy as run_in_context;
use crate::listener::component_snapshot;
use crate::listener::{Listener, Registry, Resolved, Sub, Subscription, Unsubscribe};
use crate::metrics::{pairs, Counter, GilCounter, TypeCounters};
use crate::partition::partition_of;
use crate::pool::{PoolInner, WorkerPool};
use crate::queue::{Item, Lane, Pushed, Sink};
use crate::retry::Retries;
use crate::tasks::FollowUp;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(clippy::enum_variant_names)] // the names of nova.DeliveryMode
enum Mode {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl Mode {
    fn parse(py: Python<'_>, field: &str, v: &Bound<'_, PyAny>) -> PyResult<Mode> {
        let raw = v.getattr("value").unwrap_or_else(|_| v.clone());
        match raw.extract::<String>().unwrap_or_default().as_str() {
            "at_most_once" => Ok(Mode::AtMostOnce),
            "at_least_once" => Ok(Mode::AtLeastOnce),
            "exactly_once" => Ok(Mode::ExactlyOnce),
            _ => Err(validation_error(py, format!("{field} must be a nova.DeliveryMode, got {}", v.repr()?))),
        }
    }
}

enum OrderingKey {
    /// No key: the event id (no ordering between events).
    EventId,
    /// A metadata key, read in Rust (kept as a Python str so its hash is computed once).
    Metadata(Py<PyString>),
    /// A callable `event -> str`, called once per event.
    Callable(Py<PyAny>),
}

/// Ids a subscriber processed successfully on an EXACTLY_ONCE topic (the last `window`).
struct Dedup {
    window: usize,
    seen: HashSet<String, FxBuildHasher>,
    order: VecDeque<String>,
}

impl Dedup {
    fn new(window: usize) -> Dedup {
        Dedup { window, seen: HashSet::default(), order: VecDeque::new() }
    }
    fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }
    fn mark(&mut self, id: String) {
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

struct Topic {
    name: String,
    name_obj: Py<PyString>,
    config: Py<PyAny>,
    mode: Mode,
    on_full: OnFull,
    key: OrderingKey,
    dedup_window: usize,
    lanes: Vec<Arc<Lane>>,
    sinks: Vec<Arc<PartitionSink>>,
    subs: RwLock<Arc<Resolved>>,
    /// Bumped after every change of `subs`, so a worker can keep its copy for a whole batch
    /// and re-read only when this moves (one load per event instead of a lock and a clone).
    subs_version: AtomicU64,
    dedup: Mutex<HashMap<u64, Dedup>>,
    deleted: AtomicBool,
}

impl Topic {
    fn queued(&self) -> usize {
        self.lanes.iter().map(|l| l.len()).sum::<usize>() + self.sinks.iter().map(|s| s.held_len()).sum::<usize>()
    }

    /// Start loading what `partition_for` will read, so that other work can overlap it.
    #[inline]
    fn prefetch_key(&self, event: &Bound<'_, PyAny>) {
        if let (OrderingKey::Metadata(_), Some(ev)) = (&self.key, as_event(event)) {
            if self.lanes.len() > 1 {
                ev.get().prefetch_metadata();
            }
        }
    }

    fn partition_for(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<usize> {
        let n = self.lanes.len();
        if n == 1 {
            return Ok(0);
        }
        let ev = as_event(event).expect("checked at the door").get();
        Ok(match &self.key {
            OrderingKey::EventId => ev.id_partition(py, n)?,
            OrderingKey::Metadata(k) => ev.metadata_partition(py, k.bind(py), n)?,
            OrderingKey::Callable(f) => {
                let key = f.bind(py).call1((event,))?;
                let key = key.downcast::<PyString>().map_err(|_| {
                    validation_error(
                        py,
                        format!(
                            "topic '{}': ordering_key returned {} for {}; it must return a str",
                            self.name,
                            type_name(&key),
                            describe_event(event)
                        ),
                    )
                })?;
                partition_of(key.to_str()?, n)
            }
        })
    }

    fn set_subs(&self, subs: Vec<Arc<Sub>>) {
        let counters = self.subs.read().counters.clone();
        *self.subs.write() = Arc::new(Resolved::new(subs, counters));
        self.subs_version.fetch_add(1, SeqCst);
    }

    /// The subscribers now, reusing `cached` while they have not changed since it was read.
    fn subs_since<'a>(&self, cached: &'a mut Option<(u64, Arc<Resolved>)>) -> &'a Resolved {
        let version = self.subs_version.load(SeqCst);
        match cached {
            Some((v, _)) if *v == version => {}
            _ => *cached = Some((version, self.subs.read().clone())),
        }
        &cached.as_ref().expect("just filled").1
    }

    fn add_sub(&self, sub: Arc<Sub>) {
        let mut subs = self.subs.read().subs.clone();
        subs.push(sub);
        subs.sort_by_key(|s| s.seq);
        self.set_subs(subs);
    }

    fn remove_sub(&self, seq: u64) {
        let subs: Vec<Arc<Sub>> = self.subs.read().subs.iter().filter(|s| s.seq != seq).cloned().collect();
        self.set_subs(subs);
    }
}

pub struct BusCore {
    name: String,
    topics: RwLock<HashMap<String, Arc<Topic>, FxBuildHasher>>,
    patterns: RwLock<Vec<(Regex, Arc<Sub>)>>,
    types: Registry,
    chain: Chain,
    counters: Arc<DispatchCounters>,
    published: GilCounter,
    dropped_full: Counter,
    dropped_at_most_once: Counter,
    dropped_shutdown: Counter,
    event_loop: Option<Py<PyAny>>,
    retries: Arc<Retries>,
    pool: Arc<PoolInner>,
    listener_metrics: Registry,
}

impl Unsubscribe for BusCore {
    fn unsubscribe(&self, seq: u64) {
        self.patterns.write().retain(|(_, s)| s.seq != seq);
        for t in self.topics.read().values() {
            t.remove_sub(seq);
        }
    }
}

/// A subscriber's events held back while it waits for a retry: (event, context, the event's
/// middleware `after` hooks waiting for this subscriber's outcome).
type Backlog = VecDeque<(Py<PyAny>, Option<Py<PyAny>>, Option<Arc<PendingAfter>>)>;

/// The backlogs of one partition, keyed by `Sub::seq` (our own numbers: FxHash, no
/// hash-flooding concern). Only touched with the GIL held, which is all the locking it needs
/// (no Python code runs while it is borrowed). Nearly always empty, which `subs` tells with
/// one load; `events` lets `len` be read from any thread.
struct HeldBack {
    map: GILProtected<RefCell<HashMap<u64, Backlog, FxBuildHasher>>>,
    /// Entries in `map`.
    subs: AtomicUsize,
    /// Events in all backlogs (written with the GIL held: a load and a store).
    events: AtomicUsize,
}

impl Default for HeldBack {
    fn default() -> Self {
        HeldBack {
            map: GILProtected::new(RefCell::new(HashMap::default())),
            subs: AtomicUsize::new(0),
            events: AtomicUsize::new(0),
        }
    }
}

impl HeldBack {
    /// Whether any subscriber's events are held back here.
    fn holds_any(&self) -> bool {
        self.subs.load(SeqCst) > 0
    }

    fn add_events(&self, n: isize) {
        // Release: a flusher that sees the lane idle (after this, by its SeqCst counters)
        // sees this count too.
        self.events.store(self.events.load(Relaxed).wrapping_add_signed(n), Release);
    }

    /// Append to `seq`'s backlog if it has one (`Err` if it has none).
    fn push(
        &self,
        py: Python<'_>,
        seq: u64,
        event: &Bound<'_, PyAny>,
        context: Option<&Py<PyAny>>,
        after: &dyn Fn() -> Option<Arc<PendingAfter>>,
    ) -> Result<(), ()> {
        let mut map = self.map.get(py).borrow_mut();
        let q = map.get_mut(&seq).ok_or(())?;
        q.push_back((event.clone().unbind(), context.map(|c| c.clone_ref(py)), after()));
        self.add_events(1);
        Ok(())
    }

    /// Start holding back `seq`'s events (it waits for a retry).
    fn start(&self, py: Python<'_>, seq: u64) {
        let mut map = self.map.get(py).borrow_mut();
        if let std::collections::hash_map::Entry::Vacant(e) = map.entry(seq) {
            e.insert(VecDeque::new());
            self.subs.fetch_add(1, SeqCst);
        }
    }

    /// Stop holding back `seq`'s events; what was held, in order.
    fn finish(&self, py: Python<'_>, seq: u64) -> Option<Backlog> {
        let backlog = self.map.get(py).borrow_mut().remove(&seq)?;
        self.subs.fetch_sub(1, SeqCst);
        self.add_events(-(backlog.len() as isize));
        Some(backlog)
    }

    /// If `seq` waits again, put the rest of `backlog` after what it holds now; true if so.
    fn requeue(&self, py: Python<'_>, seq: u64, backlog: &mut Backlog) -> bool {
        match self.map.get(py).borrow_mut().get_mut(&seq) {
            Some(q) => {
                self.add_events(backlog.len() as isize);
                q.extend(backlog.drain(..));
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.events.load(Acquire)
    }

    /// Take every held event (shutdown); their pending `after` hooks are told they were not
    /// delivered.
    fn take(&self, py: Python<'_>, component: &str) -> Vec<Py<PyAny>> {
        let taken: Vec<Backlog> = self.map.get(py).borrow_mut().drain().map(|(_, q)| q).collect();
        self.subs.store(0, SeqCst);
        self.events.store(0, SeqCst);
        // Settled and freed after the borrow ends (both may run Python code).
        let mut events = Vec::new();
        for (event, _, after) in taken.into_iter().flatten() {
            if let Some(a) = after {
                let err = crate::errors::nova_err(
                    py,
                    "ClosedError",
                    format!(
                        "{component} shut down before {} was delivered (it was held back behind a retry of an \
                         earlier event); it is in the shutdown report's undelivered events",
                        crate::errors::describe_event(event.bind(py))
                    ),
                );
                a.settle(py, Some(err));
            }
            events.push(event);
        }
        events
    }
}

/// Delivers one partition's events and holds back, per subscriber, the events that arrive
/// while that subscriber waits for a retry (so its order is kept and nobody else waits).
struct PartitionSink {
    core: Weak<BusCore>,
    /// Set once, right after the topic is made (it owns this sink: hence weak).
    topic: OnceLock<Weak<Topic>>,
    held: HeldBack,
    me: OnceLock<Weak<PartitionSink>>,
}

impl PartitionSink {
    fn held_len(&self) -> usize {
        self.held.len()
    }

    fn take_held(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let name = self.core.upgrade().map(|c| format!("bus '{}'", c.name)).unwrap_or_else(|| "bus".into());
        self.held.take(py, &name)
    }

    /// Deliver `event` to `sub`, or hold it back if `sub` is waiting for a retry here.
    /// `after` gives the event's pending middleware hooks to a delivery that settles later
    /// (held back, or retried), which then reports its outcome there.
    #[allow(clippy::too_many_arguments)]
    fn deliver_to(
        &self,
        py: Python<'_>,
        core: &BusCore,
        topic: &Topic,
        sub: &Arc<Sub>,
        event: &Bound<'_, PyAny>,
        context: Option<&Py<PyAny>>,
        after: &dyn Fn() -> Option<Arc<PendingAfter>>,
    ) -> Delivery {
        if self.held.holds_any() && self.held.push(py, sub.seq, event, context, after).is_ok() {
            return Delivery::Pending;
        }
        let id = if topic.mode == Mode::ExactlyOnce {
            let id = as_event(event).map(|e| e.get().id_str(py)).unwrap_or_default();
            if topic.dedup.lock().get(&sub.seq).is_some_and(|d| d.contains(&id)) {
                return Delivery::Done;
            }
            Some(id)
        } else {
            None
        };
        let last = topic.mode == Mode::AtMostOnce;
        match attempt(py, sub, event, 1, Some(&topic.name), core.event_loop.as_ref(), last) {
            Attempt::Done => {
                core.counters.processed.inc(py);
                if let Some(id) = id {
                    self.mark_seen(topic, sub, id);
                }
                Delivery::Done
            }
            Attempt::Failed(e) => {
                core.counters.processed.inc(py);
                core.counters.failed.inc();
                if topic.mode == Mode::AtMostOnce {
                    core.dropped_at_most_once.inc();
                }
                // A managed listener has dead-lettered or logged it already.
                if sub.managed.is_none() {
                    Delivery::Failed(e)
                } else {
                    Delivery::Reported(e)
                }
            }
            Attempt::Retry(delay) => {
                self.held.start(py, sub.seq);
                let follow: Option<Arc<dyn FollowUp>> =
                    self.me.get().and_then(Weak::upgrade).map(|s| s as Arc<dyn FollowUp>);
                core.retries.schedule(py, sub.clone(), event, context, 2, Some(&topic.name), delay, follow, after());
                Delivery::Pending
            }
            Attempt::Async(coro, managed) => {
                // The partition's later events wait for this task (for this subscriber only),
                // as they wait for a retry: per-key order holds, other partitions go on.
                self.held.start(py, sub.seq);
                let end = crate::tasks::TaskEnd {
                    plan: managed.then(|| crate::tasks::RetryPlan {
                        attempt: 1,
                        topic: Some(topic.name.clone()),
                        context: context.map(|c| c.clone_ref(py)),
                    }),
                    after: after(),
                    follow: self.me.get().and_then(Weak::upgrade).map(|s| s as Arc<dyn FollowUp>),
                    ..crate::tasks::TaskEnd::new(sub, event, &core.counters, &core.retries)
                };
                crate::tasks::spawn(py, coro.into_bound(py), core.event_loop.as_ref(), end, false);
                Delivery::Pending
            }
        }
    }

    /// Deliver `event` on the publisher's thread (`Bus::delivers_here`): its listeners'
    /// tasks start on this loop at once; `context` is kept for retries.
    fn deliver_here(
        &self,
        py: Python<'_>,
        core: &BusCore,
        topic: &Topic,
        event: &Bound<'_, PyAny>,
        context: &Py<PyAny>,
    ) {
        let _topic = CurrentTopic::enter(py, &topic.name_obj);
        let resolved = topic.subs.read().clone();
        let d = Dispatch { component: &core.name, chain: &core.chain, counters: &core.counters };
        let result = d.run(
            py,
            event.clone(),
            |_| &*resolved,
            |sub, ev, later| self.deliver_to(py, core, topic, sub, ev, Some(context), &|| later.defer()),
        );
        if let Err(e) = result {
            log_failure(py, &core.name, &e);
        }
    }

    fn mark_seen(&self, topic: &Topic, sub: &Sub, id: String) {
        topic.dedup.lock().entry(sub.seq).or_insert_with(|| Dedup::new(topic.dedup_window)).mark(id);
    }
}

impl FollowUp for PartitionSink {
    fn finished(&self, py: Python<'_>, sub: &Arc<Sub>, event: &Bound<'_, PyAny>, ok: bool) {
        let (Some(core), Some(topic)) = (self.core.upgrade(), self.topic.get().and_then(Weak::upgrade)) else {
            return;
        };
        if ok && topic.mode == Mode::ExactlyOnce {
            if let Some(e) = as_event(event) {
                self.mark_seen(&topic, sub, e.get().id_str(py));
            }
        }
        // Release what was held back for this subscriber, in order, until it waits again.
        let Some(mut backlog) = self.held.finish(py, sub.seq) else {
            return;
        };
        while let Some((ev, ctx, after)) = backlog.pop_front() {
            let ev = ev.into_bound(py);
            // Already counted as pending for this subscriber: handed on as it is.
            let handed = || after.clone();
            let run = || self.deliver_to(py, &core, &topic, sub, &ev, ctx.as_ref(), &handed);
            let delivery = match &ctx {
                Some(c) => run_in_context(py, c, run).unwrap_or_else(Delivery::Failed),
                None => run(),
            };
            let settled = match delivery {
                Delivery::Pending => None,
                Delivery::Done => Some(None),
                Delivery::Failed(e) => {
                    log_failure(py, &core.name, &e);
                    Some(Some(e))
                }
                Delivery::Reported(e) => Some(Some(e)),
            };
            if let (Some(outcome), Some(a)) = (settled, &after) {
                a.settle(py, outcome);
            }
            if self.held.requeue(py, sub.seq, &mut backlog) {
                return;
            }
        }
    }
}

impl Sink for PartitionSink {
    fn deliver_batch(
        &self,
        py: Python<'_>,
        next: &mut dyn FnMut() -> Option<Item>,
        contexts: &mut crate::context::ContextRunner,
    ) {
        let (Some(core), Some(topic)) = (self.core.upgrade(), self.topic.get().and_then(Weak::upgrade)) else {
            // The bus is gone: nobody is left to deliver to.
            while next().is_some() {}
            return;
        };
        let _topic = CurrentTopic::enter(py, &topic.name_obj);
        let mut subs = None;
        let d = Dispatch { component: &core.name, chain: &core.chain, counters: &core.counters };
        while let Some(item) = next() {
            let resolved = topic.subs_since(&mut subs);
            let event = item.event.into_bound(py);
            let ctx = item.context;
            let run = || {
                d.run(
                    py,
                    event,
                    |_| resolved,
                    |sub, ev, later| self.deliver_to(py, &core, &topic, sub, ev, ctx.as_ref(), &|| later.defer()),
                )
            };
            let result = match &ctx {
                Some(c) => contexts.run(py, c, run).and_then(|r| r),
                None => run(),
            };
            if let Err(e) = result {
                log_failure(py, &core.name, &e);
            }
        }
    }

    fn internal_failure(&self, py: Python<'_>, err: &PyErr, lost_item: bool) {
        let name = match self.core.upgrade() {
            Some(core) => {
                if lost_item {
                    core.counters.failed.inc();
                }
                core.name.clone()
            }
            None => "bus".to_string(),
        };
        log_failure(py, &name, err);
    }
}

/// A topic and the str object that named it.
type LastTopic = (Py<PyString>, Arc<Topic>);

#[pyclass(module = "nova", name = "Bus", subclass, frozen)]
pub struct Bus {
    core: Arc<BusCore>,
    pool: Py<WorkerPool>,
    owns_pool: bool,
    default_partitions: usize,
    default_buffer_size: usize,
    default_mode: Py<PyAny>,
    backend: Option<Py<PyAny>>,
    store: Option<Py<PyAny>>,
    validator: Option<Py<PyAny>>,
    context: ContextCapture,
    /// The topic of the last publish and the str object that named it (held, so its address
    /// cannot be reused by another string): a run of publishes to one topic skips the lookup.
    last_topic: GILProtected<RefCell<Option<LastTopic>>>,
    closed: AtomicBool,
    reported: AtomicBool,
    /// Held across "is there room", the store's append and the enqueue when the bus has a
    /// store, so that the store holds exactly the accepted events, in publish order.
    publish_lock: PublishLock,
}

/// A lock taken with the GIL released when it is contended (a thread holding it may be
/// waiting for the GIL inside the store's `append`).
struct PublishLock(parking_lot::RawMutex);

struct PublishGuard<'a>(&'a PublishLock);

impl PublishLock {
    fn acquire(&self, py: Python<'_>) -> PublishGuard<'_> {
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

impl Drop for Bus {
    /// Dropped without `shutdown()`: the events still queued can no longer be delivered (the
    /// partitions' sinks only reach the bus weakly). Take them, count them as dropped, and warn.
    fn drop(&mut self) {
        // Only when the core goes with the bus (else whoever holds it can still deliver).
        if self.backend.is_some() || self.reported.load(SeqCst) || Arc::strong_count(&self.core) > 1 {
            return;
        }
        Python::with_gil(|py| {
            let mut discarded = 0;
            for t in self.all_topics() {
                for lane in &t.lanes {
                    discarded += lane.stop_and_take(py).len();
                }
                for s in &t.sinks {
                    discarded += s.take_held(py).len();
                }
            }
            discarded += self.core.retries.abandon_all(py).len();
            if discarded > 0 {
                self.core.dropped_shutdown.add(discarded as u64);
                crate::component::warn_unclosed(py, &format!("bus '{}'", self.core.name), discarded);
            }
        });
    }
}

impl Bus {
    /// Open (for `event`, named in the error when given)?
    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        self.check_open_for(py, None)
    }

    fn check_open_for(&self, py: Python<'_>, event: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let refused = || event.map(|e| format!(" ({} was not published)", describe_event(e))).unwrap_or_default();
        if self.closed.load(SeqCst) {
            return Err(bus_closed(
                py,
                format!("bus '{}' is shut down{}; create a new Bus", self.core.name, refused()),
            ));
        }
        if self.core.pool.is_closed() {
            return Err(pool_closed(
                py,
                format!("bus '{}': its worker pool '{}' is closed{}", self.core.name, self.core.pool.name, refused()),
            ));
        }
        Ok(())
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.core.topics.read().get(name).cloned()
    }

    fn default_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("partitions", self.default_partitions)?;
        kwargs.set_item("buffer_size", self.default_buffer_size)?;
        kwargs.set_item("delivery_mode", self.default_mode.bind(py))?;
        py.import("nova._types")?.getattr("TopicConfig")?.call((), Some(&kwargs))
    }

    fn get_or_create(&self, py: Python<'_>, name: &str) -> PyResult<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let config = self.default_config(py)?;
        self.create(py, name, &config)
    }

    /// Run `f` on the topic `name` (made with the defaults if new), found through the
    /// last-topic memo. On a hit the memo stays borrowed while `f` runs, sparing the topic's
    /// reference count two atomic operations per publish; `f` may run Python code (a callable
    /// ordering key, the store) or release the GIL, so the memo is only ever replaced when
    /// nobody has it borrowed.
    fn with_topic<R>(&self, py: Python<'_>, name: &Bound<'_, PyString>, f: impl FnOnce(&Topic) -> R) -> PyResult<R> {
        let memo = self.last_topic.get(py);
        if let Ok(last) = memo.try_borrow() {
            if let Some((obj, t)) = &*last {
                if obj.is(name) && !t.deleted.load(SeqCst) {
                    return Ok(f(t));
                }
            }
        }
        let t = self.get_or_create(py, name.to_str()?)?;
        if let Ok(mut last) = memo.try_borrow_mut() {
            let old = last.replace((name.clone().unbind(), t.clone()));
            drop(last);
            // Freed after the borrow ends: dropping may run Python code.
            drop(old);
        }
        Ok(f(&t))
    }

    fn create(&self, py: Python<'_>, name: &str, config: &Bound<'_, PyAny>) -> PyResult<Arc<Topic>> {
        if name.is_empty() {
            return Err(validation_error(py, "topic name must be a non-empty str"));
        }
        if let Some(t) = self.topic(name) {
            if t.config.bind(py).eq(config)? {
                return Ok(t);
            }
            return Err(validation_error(
                py,
                format!(
                    "bus '{}': topic '{}' exists with {}; it cannot be re-created with {}",
                    self.core.name,
                    name,
                    t.config.bind(py).repr()?,
                    config.repr()?
                ),
            ));
        }
        let partitions =
            bounded(py, "TopicConfig.partitions", config.getattr("partitions")?.extract()?, MAX_PARTITIONS)?;
        let buffer_size =
            bounded(py, "TopicConfig.buffer_size", config.getattr("buffer_size")?.extract()?, MAX_BUFFER_SIZE)?;
        if partitions * buffer_size > MAX_TOPIC_SLOTS {
            return Err(validation_error(
                py,
                format!(
                    "TopicConfig.partitions * TopicConfig.buffer_size must be at most {MAX_TOPIC_SLOTS} \
                     (queue slots allocated for the topic), got {partitions} * {buffer_size}"
                ),
            ));
        }
        let mode = Mode::parse(py, "TopicConfig.delivery_mode", &config.getattr("delivery_mode")?)?;
        let on_full = OnFull::parse(py, "TopicConfig.on_full", Some(&config.getattr("on_full")?))?;
        let dedup_window = positive(py, "TopicConfig.dedup_window", config.getattr("dedup_window")?.extract()?)?;
        let key_obj = config.getattr("ordering_key")?;
        let key = if key_obj.is_none() {
            OrderingKey::EventId
        } else if let Ok(s) = key_obj.downcast::<PyString>() {
            OrderingKey::Metadata(PyString::intern(py, s.to_str()?).unbind())
        } else {
            OrderingKey::Callable(key_obj.unbind())
        };
        let mut lanes = Vec::with_capacity(partitions);
        let mut sinks = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let sink = Arc::new(PartitionSink {
                core: Arc::downgrade(&self.core),
                topic: OnceLock::new(),
                held: HeldBack::default(),
                me: OnceLock::new(),
            });
            let _ = sink.me.set(Arc::downgrade(&sink));
            lanes.push(Lane::new(buffer_size, 1, sink.clone(), self.core.pool.clone()));
            sinks.push(sink);
        }
        let subs: Vec<Arc<Sub>> =
            self.core.patterns.read().iter().filter(|(re, _)| re.is_match(name)).map(|(_, s)| s.clone()).collect();
        let topic = Arc::new(Topic {
            name: name.to_string(),
            name_obj: PyString::new(py, name).unbind(),
            config: config.clone().unbind(),
            mode,
            on_full,
            key,
            dedup_window,
            lanes,
            sinks,
            subs: RwLock::new(Arc::new(Resolved::new(subs, Arc::new(TypeCounters::default())))),
            subs_version: AtomicU64::new(0),
            dedup: Mutex::new(HashMap::new()),
            deleted: AtomicBool::new(false),
        });
        for s in &topic.sinks {
            let _ = s.topic.set(Arc::downgrade(&topic));
        }
        let mut topics = self.core.topics.write();
        // Another thread may have created it meanwhile (we never held the GIL-free lock long).
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    fn admit(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
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

    fn count(&self, py: Python<'_>, event: &Bound<'_, PyAny>, which: fn(&TypeCounters) -> &GilCounter) {
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
    fn delivers_here(&self, py: Python<'_>, topic: &Topic, lane: &Lane) -> bool {
        lane.len() == 0
            && lane.in_flight() == 0
            && topic.subs.read().all_async
            && self.core.chain.snapshot().is_none()
            && self.core.event_loop.as_ref().is_some_and(|l| crate::tasks::runs_here(py, l))
    }

    /// Queue `event` on `partition` of `topic`, with the publisher's `context`.
    fn enqueue(
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
    fn publish_stored(
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
        let mut need = vec![0usize; topic.lanes.len()];
        for (_, p) in batch {
            need[*p] += 1;
        }
        let mut keep = vec![true; batch.len()];
        for (p, n) in need.iter().enumerate().filter(|(_, n)| **n > 0) {
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
        let accepted: Vec<&(Bound<'_, PyAny>, usize)> =
            batch.iter().zip(&keep).filter(|(_, k)| **k).map(|(b, _)| b).collect();
        if accepted.is_empty() {
            return Ok(());
        }
        let mut args = vec![PyString::new(py, &topic.name).into_any()];
        args.extend(accepted.iter().map(|(ev, _)| ev.clone()));
        store.bind(py).call_method1("append", PyTuple::new(py, args)?)?;
        for (ev, p) in accepted {
            // Room was made sure of under the lock (workers only ever make more).
            self.enqueue(py, topic, ev, *p, context.clone_ref(py))?;
        }
        Ok(())
    }

    fn all_topics(&self) -> Vec<Arc<Topic>> {
        self.core.topics.read().values().cloned().collect()
    }

    fn idle(&self) -> bool {
        self.core.retries.pending() == 0
            && self.all_topics().iter().all(|t| {
                t.lanes.iter().all(|l| l.len() == 0 && l.in_flight() == 0) && t.sinks.iter().all(|s| s.held_len() == 0)
            })
    }

    /// Wait until every event queued before the call has been processed, with the retries
    /// and held-back events that follow from it. Events published meanwhile are not waited
    /// for, so a steady stream of publishes cannot keep `flush` from returning.
    fn wait_flushed(&self, py: Python<'_>, until: Option<Instant>) -> bool {
        let targets: Vec<(Arc<Lane>, u64)> = self
            .all_topics()
            .iter()
            .flat_map(|t| t.lanes.iter().map(|l| (l.clone(), l.accepted())).collect::<Vec<_>>())
            .collect();
        let with_tasks = !self.core.event_loop.as_ref().is_some_and(|l| crate::tasks::runs_here(py, l));
        py.allow_threads(|| {
            for (lane, target) in &targets {
                if !lane.wait_retired_to(*target, until) {
                    return false;
                }
            }
            loop {
                if !self.core.retries.wait_idle(until, with_tasks) {
                    return false;
                }
                // A subscriber's held-back events are released when its retry ends (before
                // the retry counts as done); between a failure and its retry being scheduled,
                // they may briefly be held with no retry pending.
                if self.all_topics().iter().all(|t| t.sinks.iter().all(|s| s.held_len() == 0)) {
                    return true;
                }
                if until.is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    }

    fn wait_idle(&self, py: Python<'_>, until: Option<Instant>) -> bool {
        let with_tasks = !self.core.event_loop.as_ref().is_some_and(|l| crate::tasks::runs_here(py, l));
        py.allow_threads(|| loop {
            let lanes: Vec<Arc<Lane>> = self.all_topics().iter().flat_map(|t| t.lanes.clone()).collect();
            for l in &lanes {
                if !l.wait_idle(until) {
                    return false;
                }
            }
            if !self.core.retries.wait_idle(until, with_tasks) {
                return false;
            }
            if self.idle() {
                return true;
            }
            if until.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
        })
    }

    fn subscribe_sub(&self, py: Python<'_>, topic: &str, listener: &Bound<'_, PyAny>) -> PyResult<Arc<Sub>> {
        let (listener, managed) = Listener::for_subscription(py, listener)?;
        let metrics = self.core.listener_metrics.metrics_for(listener.get().name());
        Ok(Arc::new(Sub::new(py, topic, listener, managed, metrics)))
    }

    fn subscription(&self, sub: Arc<Sub>) -> Subscription {
        let owner: Weak<dyn Unsubscribe> = Arc::downgrade(&(self.core.clone() as Arc<dyn Unsubscribe>));
        Subscription { sub, owner }
    }
}

#[pymethods]
impl Bus {
    #[new]
    #[pyo3(signature = (*, pool=None, default_partitions=1, default_buffer_size=1000,
                        default_delivery_mode=None, backend=None, store=None, validator=None,
                        r#loop=None, name="bus"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        pool: Option<Py<WorkerPool>>,
        default_partitions: i64,
        default_buffer_size: i64,
        default_delivery_mode: Option<Py<PyAny>>,
        backend: Option<Py<PyAny>>,
        store: Option<Py<PyAny>>,
        validator: Option<Py<PyAny>>,
        r#loop: Option<Py<PyAny>>,
        name: &str,
    ) -> PyResult<Self> {
        let default_partitions = bounded(py, "Bus.default_partitions", default_partitions, MAX_PARTITIONS)?;
        let default_buffer_size = bounded(py, "Bus.default_buffer_size", default_buffer_size, MAX_BUFFER_SIZE)?;
        let default_mode = match default_delivery_mode.filter(|m| !m.is_none(py)) {
            Some(m) => {
                Mode::parse(py, "Bus.default_delivery_mode", m.bind(py))?;
                m
            }
            None => py.import("nova._types")?.getattr("DeliveryMode")?.getattr("AT_LEAST_ONCE")?.unbind(),
        };
        let validator = validator.filter(|v| !v.is_none(py));
        if let Some(v) = &validator {
            if !v.bind(py).is_callable() {
                return Err(validation_error(py, "Bus.validator must be callable or None"));
            }
        }
        let (pool, owns_pool) = match pool.filter(|p| !p.is_none(py)) {
            Some(p) => (p, false),
            None => (Py::new(py, WorkerPool::create(py, None, 1000, &format!("{name}-pool"))?)?, true),
        };
        let pool_inner = pool.borrow(py).inner.clone();
        let counters = Arc::new(DispatchCounters::default());
        let event_loop = pick_loop(py, r#loop)?;
        let retries =
            Retries::new(name, pool_inner.clone(), counters.clone(), event_loop.as_ref().map(|l| l.clone_ref(py)));
        let core = Arc::new(BusCore {
            name: name.to_string(),
            topics: RwLock::new(HashMap::default()),
            patterns: RwLock::new(Vec::new()),
            types: Registry::default(),
            chain: Chain::default(),
            counters,
            published: GilCounter::default(),
            dropped_full: Counter::default(),
            dropped_at_most_once: Counter::default(),
            dropped_shutdown: Counter::default(),
            event_loop,
            retries,
            pool: pool_inner,
            listener_metrics: Registry::default(),
        });
        Ok(Bus {
            core,
            pool,
            owns_pool,
            default_partitions,
            default_buffer_size,
            default_mode,
            backend: backend.filter(|b| !b.is_none(py)),
            store: store.filter(|s| !s.is_none(py)),
            validator,
            context: ContextCapture::default(),
            last_topic: GILProtected::new(RefCell::new(None)),
            closed: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            publish_lock: PublishLock(<parking_lot::RawMutex as parking_lot::lock_api::RawMutex>::INIT),
        })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.core.name
    }
    #[getter]
    fn pool(&self, py: Python<'_>) -> Py<WorkerPool> {
        self.pool.clone_ref(py)
    }
    #[getter]
    fn backend(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.backend.as_ref().map(|b| b.clone_ref(py))
    }
    #[getter]
    fn store(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.store.as_ref().map(|s| s.clone_ref(py))
    }
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(SeqCst)
    }
    #[getter]
    fn _defaults(&self, py: Python<'_>) -> (usize, usize, Py<PyAny>) {
        (self.default_partitions, self.default_buffer_size, self.default_mode.clone_ref(py))
    }

    /// Create `name` with a full `TopicConfig` (the Python layer merges defaults and fields).
    fn _create_topic(&self, py: Python<'_>, name: &str, config: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open(py)?;
        self.create(py, name, config).map(|_| ())
    }

    fn delete_topic(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let Some(topic) = self.core.topics.write().remove(name) else {
            return Err(topic_not_found(py, format!("bus '{}' has no topic '{}'", self.core.name, name)));
        };
        topic.deleted.store(true, SeqCst);
        for s in topic.subs.read().subs.iter() {
            // Pattern subscriptions live on for other topics; direct ones end with the topic.
            if s.pattern.is_none() && s.topic == topic.name {
                s.active.store(false, SeqCst);
            }
        }
        Ok(())
    }

    fn topics(&self) -> Vec<String> {
        let mut v: Vec<String> = self.core.topics.read().keys().cloned().collect();
        v.sort();
        v
    }

    fn topic_info<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let Some(t) = self.topic(name) else {
            return Err(topic_not_found(py, format!("bus '{}' has no topic '{}'", self.core.name, name)));
        };
        let subscribers = t.subs.read().subs.iter().filter(|s| s.is_active()).count();
        py.import("nova._types")?.getattr("TopicInfo")?.call1((
            name,
            t.lanes.len(),
            t.config.bind(py).getattr("delivery_mode")?,
            subscribers,
            t.queued(),
        ))
    }

    fn _topic_config(&self, name: &str, py: Python<'_>) -> Option<Py<PyAny>> {
        self.topic(name).map(|t| t.config.clone_ref(py))
    }

    /// Subscribe to one topic (created with the defaults if absent).
    fn _subscribe(&self, py: Python<'_>, topic: &str, listener: &Bound<'_, PyAny>) -> PyResult<Subscription> {
        self.check_open(py)?;
        let t = self.get_or_create(py, topic)?;
        let sub = self.subscribe_sub(py, topic, listener)?;
        t.add_sub(sub.clone());
        Ok(self.subscription(sub))
    }

    /// Subscribe to every topic, existing or future, whose whole name matches `pattern`.
    fn _subscribe_pattern(&self, py: Python<'_>, pattern: &str, listener: &Bound<'_, PyAny>) -> PyResult<Subscription> {
        self.check_open(py)?;
        let re = TopicPattern::compile(py, pattern)?.re;
        let (l, managed) = Listener::for_subscription(py, listener)?;
        let metrics = self.core.listener_metrics.metrics_for(l.get().name());
        let mut sub = Sub::new(py, pattern, l, managed, metrics);
        // Mark it as a pattern so deleting one topic does not end it.
        sub.pattern = crate::pattern::TypePattern::parse("#");
        let sub = Arc::new(sub);
        let mut patterns = self.core.patterns.write();
        patterns.push((re.clone(), sub.clone()));
        for t in self.core.topics.read().values() {
            if re.is_match(&t.name) {
                t.add_sub(sub.clone());
            }
        }
        drop(patterns);
        Ok(self.subscription(sub))
    }

    fn publish(&self, py: Python<'_>, topic: &Bound<'_, PyString>, event: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if let Some(b) = &self.backend {
            // The bus's own checks and store still apply; the backend does the transport.
            self.admit(py, event)?;
            if let Some(store) = &self.store {
                store.bind(py).call_method1("append", (topic, event))?;
            }
            return Ok(b.bind(py).call_method1("publish", (topic, event))?.unbind());
        }
        self.admit(py, event)?;
        self.with_topic(py, topic, |t| {
            // The context is captured while the ordering key's memory loads.
            t.prefetch_key(event);
            let context = self.context.capture(py)?;
            let p = t.partition_for(py, event)?;
            match &self.store {
                Some(store) => self.publish_stored(py, store, t, &[(event.clone(), p)], context),
                None => self.enqueue(py, t, event, p, context),
            }
        })??;
        Ok(py.None())
    }

    fn publish_batch(&self, py: Python<'_>, topic: &str, events: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let events: Vec<Bound<'_, PyAny>> = events.try_iter()?.collect::<PyResult<_>>()?;
        for ev in &events {
            self.admit(py, ev)?;
        }
        if let Some(b) = &self.backend {
            if let Some(store) = &self.store {
                if !events.is_empty() {
                    let mut args = vec![PyString::new(py, topic).into_any()];
                    args.extend(events.iter().cloned());
                    store.bind(py).call_method1("append", PyTuple::new(py, args)?)?;
                }
            }
            let list = PyList::new(py, &events)?;
            return Ok(b.bind(py).call_method1("publish_batch", (topic, list))?.unbind());
        }
        let t = self.get_or_create(py, topic)?;
        let parts: Vec<usize> = events.iter().map(|e| t.partition_for(py, e)).collect::<PyResult<_>>()?;
        if let Some(store) = &self.store {
            let context = self.context.capture(py)?;
            let batch: Vec<(Bound<'_, PyAny>, usize)> = events.into_iter().zip(parts).collect();
            self.publish_stored(py, store, &t, &batch, context)?;
            return Ok(py.None());
        }
        if t.on_full == OnFull::Raise {
            let mut need = vec![0usize; t.lanes.len()];
            for p in &parts {
                need[*p] += 1;
            }
            for (p, n) in need.iter().enumerate() {
                let lane = &t.lanes[p];
                if *n > 0 && lane.len() + n > lane.capacity() {
                    return Err(buffer_full(
                        py,
                        format!(
                            "bus '{}': a batch of {} events does not fit partition {} of topic '{}' ({} of {} free); nothing was published",
                            self.core.name, n, p, topic, lane.capacity().saturating_sub(lane.len()), lane.capacity()
                        ),
                    ));
                }
            }
        }
        let context = self.context.capture(py)?;
        for (ev, p) in events.iter().zip(parts) {
            self.enqueue(py, &t, ev, p, context.clone_ref(py))?;
        }
        Ok(py.None())
    }

    /// Wait (without the GIL, up to `timeout` seconds) until `event`'s partition of `topic`
    /// has room; for `apublish`, from a thread of the loop's executor.
    #[pyo3(signature = (topic, event, timeout=None))]
    fn _wait_room(
        &self,
        py: Python<'_>,
        topic: &str,
        event: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let until = deadline(py, "timeout", timeout)?;
        let Some(t) = self.topic(topic) else { return Ok(true) };
        let lane = t.lanes[t.partition_for(py, event)?].clone();
        Ok(py.allow_threads(move || lane.wait_for_room_until(1, until)))
    }

    #[pyo3(signature = (*middleware))]
    fn r#use(&self, py: Python<'_>, middleware: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.core.chain.add(py, middleware)
    }

    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if let Some(b) = &self.backend {
            return b.bind(py).call_method1("flush", (timeout,))?.extract();
        }
        let until = deadline(py, "Bus.flush timeout", timeout)?;
        Ok(self.wait_flushed(py, until))
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(b) = &self.backend {
            return b.bind(py).call_method0("stats");
        }
        let c = &self.core;
        let topics = self.all_topics();
        let queued: usize = topics.iter().map(|t| t.queued()).sum::<usize>() + c.retries.pending();
        let subscribers: usize =
            topics.iter().map(|t| t.subs.read().subs.iter().filter(|s| s.is_active()).count()).sum();
        py.import("nova._types")?.getattr("BusStats")?.call1((
            c.published.get(),
            c.counters.processed.get(),
            c.counters.failed.get(),
            queued,
            c.dropped_full.get() + c.dropped_at_most_once.get() + c.dropped_shutdown.get(),
            topics.len(),
            subscribers,
        ))
    }

    #[pyo3(signature = (timeout=30.0))]
    fn shutdown<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let until = deadline(py, "Bus.shutdown timeout", timeout)?;
        if let Some(b) = &self.backend {
            self.closed.store(true, SeqCst);
            let report = b.bind(py).call_method1("shutdown", (timeout,))?;
            if self.owns_pool {
                let inner = self.pool.borrow(py).inner.clone();
                py.allow_threads(move || inner.close(Some(Instant::now())));
            }
            return Ok(report);
        }
        self.closed.store(true, SeqCst);
        if self.reported.swap(true, SeqCst) {
            return shutdown_report(py, 0, Vec::new(), 0);
        }
        let before: u64 = self.core.counters.processed.get();
        self.wait_idle(py, until);
        let topics = self.all_topics();
        let mut left: Vec<Py<PyAny>> = Vec::new();
        let mut in_flight = 0;
        for t in &topics {
            for lane in &t.lanes {
                left.extend(lane.stop_and_take(py).into_iter().map(|i| i.event));
                in_flight += lane.progress().1 as usize;
            }
        }
        left.extend(self.core.retries.abandon_all(py));
        if !self.core.event_loop.as_ref().is_some_and(|l| crate::tasks::runs_here(py, l)) {
            // Listener tasks still running at the deadline are cancelled; called on their
            // own loop's thread, they could not have run yet, and go on (in flight).
            left.extend(self.core.retries.abandon_tasks(py));
        }
        // Retries running now finish on their own: in flight, never also undelivered.
        in_flight += self.core.retries.running();
        for t in &topics {
            for s in &t.sinks {
                left.extend(s.take_held(py));
            }
        }
        // One event may be undelivered for several subscribers: report it once.
        let mut seen: HashSet<usize, FxBuildHasher> = HashSet::default();
        left.retain(|e| seen.insert(e.as_ptr() as usize));
        self.core.dropped_shutdown.add(left.len() as u64);
        let drained = self.core.counters.processed.get() - before;
        if self.owns_pool {
            let inner = self.pool.borrow(py).inner.clone();
            let until = if in_flight > 0 { Some(Instant::now()) } else { until };
            py.allow_threads(move || inner.close(until));
        }
        shutdown_report(py, drained, left, in_flight)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<Py<PyAny>>,
        _v: Option<Py<PyAny>>,
        _tb: Option<Py<PyAny>>,
    ) -> PyResult<bool> {
        self.shutdown(py, Some(30.0))?;
        Ok(false)
    }

    fn _metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.core;
        let d = component_snapshot(py, &c.name, &c.types, &c.listener_metrics)?;
        let topics = self.all_topics();
        d.set_item("queue_size", topics.iter().map(|t| t.queued()).sum::<usize>())?;
        d.set_item(
            "active_listeners",
            topics.iter().map(|t| t.subs.read().subs.iter().filter(|s| s.is_active()).count()).sum::<usize>(),
        )?;
        d.set_item(
            "dropped",
            pairs(
                py,
                vec![
                    ("buffer_full".into(), c.dropped_full.get()),
                    ("at_most_once".into(), c.dropped_at_most_once.get()),
                    ("shutdown".into(), c.dropped_shutdown.get()),
                ],
            )?,
        )?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("Bus(name={:?}, topics={})", self.core.name, self.core.topics.read().len())
    }
}

/// A topic-name pattern on Rust's linear-time regex engine, matched against whole names
/// (`nova._core.TopicPattern`, also used by distributed backends).
#[pyclass(module = "nova._core", frozen)]
pub struct TopicPattern {
    re: Regex,
    pattern: String,
}

impl TopicPattern {
    fn compile(py: Python<'_>, pattern: &str) -> PyResult<TopicPattern> {
        // Check the pattern as written, so the error's position is in the user's text.
        if let Err(e) = regex_syntax::ast::parse::Parser::new().parse(pattern) {
            let at = pattern[..e.span().start.offset].chars().count();
            return Err(validation_error(
                py,
                format!("invalid topic pattern {pattern:?} at position {at}: {}\n{e}", e.kind()),
            ));
        }
        Regex::new(pattern).map_err(|e| validation_error(py, format!("invalid topic pattern {pattern:?}: {e}")))?;
        let re = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| validation_error(py, format!("invalid topic pattern {pattern:?}: {e}")))?;
        Ok(TopicPattern { re, pattern: pattern.to_string() })
    }
}

#[pymethods]
impl TopicPattern {
    #[new]
    fn new(py: Python<'_>, pattern: &str) -> PyResult<Self> {
        TopicPattern::compile(py, pattern)
    }

    /// Whether the whole of `name` matches.
    fn fullmatch(&self, name: &str) -> bool {
        self.re.is_match(name)
    }

    #[getter]
    fn pattern(&self) -> &str {
        &self.pattern
    }

    fn __repr__(&self) -> String {
        format!("TopicPattern({:?})", self.pattern)
    }
}

thread_local! {
    static CURRENT_TOPIC: std::cell::RefCell<Option<Py<PyString>>> = const { std::cell::RefCell::new(None) };
}

/// Marks the topic whose event this thread is dispatching, for middleware that reports it
/// (`nova._core.current_topic()`), until dropped.
struct CurrentTopic(Option<Py<PyString>>);

impl CurrentTopic {
    fn enter(py: Python<'_>, name: &Py<PyString>) -> CurrentTopic {
        CurrentTopic(CURRENT_TOPIC.with(|c| c.replace(Some(name.clone_ref(py)))))
    }
}

impl Drop for CurrentTopic {
    fn drop(&mut self) {
        let prev = self.0.take();
        CURRENT_TOPIC.with(|c| *c.borrow_mut() = prev);
    }
}

/// The bus topic of the event being dispatched on this thread, or None (an emitter, or no
/// dispatch). Middleware such as TracingMiddleware uses it.
#[pyfunction]
fn current_topic(py: Python<'_>) -> Option<Py<PyString>> {
    CURRENT_TOPIC.with(|c| c.borrow().as_ref().map(|t| t.clone_ref(py)))
}

/// `nova._core.partition(key, partitions)`: the partition a key maps to (for backends).
#[pyfunction]
fn partition(key: &str, partitions: usize) -> usize {
    partition_of(key, partitions)
}

/// `Bus.publish(topic, event)` with a str topic, the call every published event makes, as a
/// plain C method (see `ffi::method::install_fast_method`).
struct FastPublish;

impl crate::ffi::method::FastCall for FastPublish {
    type Class = Bus;

    fn original() -> &'static pyo3::sync::GILOnceCell<Py<PyAny>> {
        static ORIGINAL: pyo3::sync::GILOnceCell<Py<PyAny>> = pyo3::sync::GILOnceCell::new();
        &ORIGINAL
    }

    fn fast<'py>(py: Python<'py>, bus: &Bus, args: crate::ffi::method::Args<'_, 'py>) -> Option<PyResult<Py<PyAny>>> {
        if args.len() != 2 {
            return None;
        }
        let topic = args.get(0);
        let topic = topic.downcast::<PyString>().ok()?;
        Some(bus.publish(py, topic, &args.get(1)))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Bus>()?;
    crate::ffi::method::install_fast_method::<FastPublish>(
        m.py(),
        &m.py().get_type::<Bus>(),
        c"publish",
        c"publish($self, topic, event)\n--\n\nQueue `event` on its partition of `topic` (made with the bus defaults if new); a full partition is handled by the topic's `on_full`.",
    )?;
    m.add_class::<TopicPattern>()?;
    m.add_function(wrap_pyfunction!(partition, m)?)?;
    m.add_function(wrap_pyfunction!(current_topic, m)?)?;
    Ok(())
}
