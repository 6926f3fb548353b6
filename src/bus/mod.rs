//! `nova.Bus`: named topics split into partitions, each one bounded lock-free queue drained by
//! at most one worker at a time, so the events of one partition reach each subscriber in
//! publish order while partitions run in parallel.

mod dedup;
mod partition;
mod pattern;
mod publish;
mod store_writer;
mod topic;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use regex::Regex;
use rustc_hash::FxBuildHasher;

use crate::component::{bounded, deadline, shutdown_report, ContextCapture, OnFull, MAX_BUFFER_SIZE, MAX_PARTITIONS};
use crate::dispatch::{Chain, DispatchCounters};
use crate::errors::{buffer_full, topic_not_found};
use crate::holdback::HoldBack;
use crate::lifecycle::{Component, Kind, Lifecycle, Parts};
use crate::listener::component_snapshot;
use crate::listener::{Listener, Registry, Sub, Subscription, Unsubscribe};
use crate::metrics::{pairs, Counter, GilCounter};
use crate::partition::partition_of;
use crate::pool::{PoolInner, WorkerPool};
use crate::queue::Lane;
use crate::retry::Retries;

use dedup::Dedup;
use partition::PartitionSink;
use pattern::{current_topic, CurrentTopic, TopicPattern};
use publish::PublishLock;
use store_writer::{Durability, StoreFailures};
use topic::{Mode, OrderingKey, Topic};

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
    /// Appends the topics' store writers could not make, until raised.
    store_failures: Arc<StoreFailures>,
}

impl Unsubscribe for BusCore {
    fn unsubscribe(&self, seq: u64) {
        self.patterns.write().retain(|(_, s)| s.seq != seq);
        for t in self.topics.read().values() {
            t.remove_sub(seq);
        }
    }
}

/// A topic and the str object that named it.
type LastTopic = (Py<PyString>, Arc<Topic>);

#[pyclass(module = "nova", name = "Bus", extends = Component, subclass, frozen)]
pub struct Bus {
    core: Arc<BusCore>,
    life: Arc<Lifecycle>,
    default_partitions: usize,
    default_buffer_size: usize,
    default_mode: Py<PyAny>,
    backend: Option<Py<PyAny>>,
    store: Option<Py<PyAny>>,
    durability: Durability,
    validator: Option<Py<PyAny>>,
    context: ContextCapture,
    /// The topic of the last publish and the str object that named it (held, so its address
    /// cannot be reused by another string): a run of publishes to one topic skips the lookup.
    last_topic: crate::ffi::cell::Memo<Option<LastTopic>>,
    /// Held across "is there room", the store's append and the enqueue when the bus has a
    /// store, so that the store holds exactly the accepted events, in publish order.
    publish_lock: PublishLock,
}

impl Drop for Bus {
    /// Dropped without `shutdown()`: the events still queued can no longer be delivered (the
    /// partitions' sinks only reach the bus weakly). Take them, count them as dropped, and warn.
    fn drop(&mut self) {
        // The bus is the core's one owner; a worker (or a retry's follow-up) that holds it for
        // a moment finishes the event it has, and finds the lanes stopped and empty after it.
        if self.life.reported() {
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
            self.store_the_rest(py);
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
        self.life.check_open(py, event)
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

    /// Wait (without the GIL) until every event accepted so far is in the store.
    fn wait_stored(&self, py: Python<'_>, until: Option<Instant>) -> bool {
        let writers: Vec<_> = self
            .all_topics()
            .iter()
            .filter_map(|t| t.store.as_ref().map(|(lane, sink)| (lane.accepted(), sink.clone())))
            .collect();
        py.allow_threads(|| writers.iter().all(|(target, sink)| sink.wait_done(*target, until)))
    }

    /// At shutdown: the store writers stop, and what they had not taken yet is appended here.
    /// Accepted events are in the store whatever the deadline (a failure is logged).
    fn store_the_rest(&self, py: Python<'_>) {
        for t in self.all_topics() {
            if let Some((lane, sink)) = &t.store {
                let left: Vec<Py<PyAny>> = lane.stop_and_take(py).into_iter().map(|i| i.event).collect();
                // A batch a worker is in the middle of ends by itself.
                let target = lane.accepted();
                py.allow_threads(|| sink.wait_done(target - left.len() as u64, None));
                sink.append(py, left);
            }
        }
        if let Some(err) = self.core.store_failures.take(py, &self.core.name) {
            crate::dispatch::log_failure(py, &self.core.name, &err);
        }
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
                        r#loop=None, name="bus", durability="batch"))]
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
        durability: &str,
    ) -> PyResult<PyClassInitializer<Self>> {
        let durability = Durability::parse(py, durability)?;
        let default_partitions = bounded(py, "Bus.default_partitions", default_partitions, MAX_PARTITIONS)?;
        let default_buffer_size = bounded(py, "Bus.default_buffer_size", default_buffer_size, MAX_BUFFER_SIZE)?;
        let default_mode = match default_delivery_mode.filter(|m| !m.is_none(py)) {
            Some(m) => {
                Mode::parse(py, "Bus.default_delivery_mode", m.bind(py))?;
                m
            }
            None => py.import("nova._types")?.getattr("DeliveryMode")?.getattr("AT_LEAST_ONCE")?.unbind(),
        };
        let parts = Lifecycle::start(py, Kind::Bus, name, pool, r#loop, validator)?;
        let Parts { life, counters, event_loop, retries, validator } = parts;
        let pool_inner = life.pool_inner().clone();
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
            store_failures: Arc::default(),
        });
        let bus = Bus {
            core,
            life: life.clone(),
            default_partitions,
            default_buffer_size,
            default_mode,
            backend: backend.filter(|b| !b.is_none(py)),
            store: store.filter(|s| !s.is_none(py)),
            durability,
            validator,
            context: ContextCapture::default(),
            last_topic: crate::ffi::cell::Memo::new(None),
            publish_lock: PublishLock(<parking_lot::RawMutex as parking_lot::lock_api::RawMutex>::INIT),
        };
        Ok(Component::base(&life).add_subclass(bus))
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
        self.admit(py, event)?;
        self.with_topic(py, topic, |t| {
            // The context is captured while the ordering key's memory loads.
            t.prefetch_key(event);
            let context = self.context.capture(py)?;
            let p = t.partition_for(event)?;
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
        let t = self.get_or_create(py, topic)?;
        let parts: Vec<usize> = events.iter().map(|e| t.partition_for(e)).collect::<PyResult<_>>()?;
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
        let lane = t.lanes[t.partition_for(event)?].clone();
        Ok(py.allow_threads(move || lane.wait_for_room_until(1, until)))
    }

    #[pyo3(signature = (*middleware))]
    fn r#use(&self, py: Python<'_>, middleware: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.core.chain.add(py, middleware)
    }

    /// For a bus whose topics live in a backend (`nova.backends`): the bus's own checks on
    /// `events` for `topic` (closed, validator), and the store's append (in this call).
    fn _admit_to_store(&self, py: Python<'_>, topic: &str, events: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        for ev in &events {
            self.admit(py, ev)?;
        }
        if let (Some(store), false) = (&self.store, events.is_empty()) {
            let mut args = vec![PyString::new(py, topic).into_any()];
            args.extend(events);
            store.bind(py).call_method1("append", PyTuple::new(py, args)?)?;
        }
        Ok(())
    }

    /// For a bus whose topics live in a backend, once the backend is shut down: closed, and
    /// its own worker pool (if it made one) closed at once.
    fn _close_local(&self, py: Python<'_>) {
        self.life.close();
        self.life.close_owned_pool(py, Some(Instant::now()), 0);
    }

    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let until = deadline(py, "Bus.flush timeout", timeout)?;
        let flushed = self.wait_flushed(py, until) && self.wait_stored(py, until);
        for t in self.all_topics() {
            for lane in &t.lanes {
                lane.recycle_all(py);
            }
        }
        match self.core.store_failures.take(py, &self.core.name) {
            Some(err) => Err(err),
            None => Ok(flushed),
        }
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
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
        if !self.life.close() {
            return shutdown_report(py, 0, Vec::new(), 0);
        }
        let before: u64 = self.core.counters.processed.get();
        self.wait_idle(py, until);
        self.wait_stored(py, until);
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
        self.context.clear(py);
        self.store_the_rest(py);
        self.life.finish(py, until, drained, left, in_flight)
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

/// `nova._core.partition(key, partitions)`: the partition a key maps to (for backends).
/// `nova._core.event_partition(event, ordering_key, partitions, topic)`: the partition the bus
/// puts `event` in, for a topic with that `TopicConfig.ordering_key` (for distributed
/// backends, which must agree with the local bus).
#[pyfunction]
fn event_partition(
    event: &Bound<'_, PyAny>,
    ordering_key: &Bound<'_, PyAny>,
    partitions: usize,
    topic: &str,
) -> PyResult<usize> {
    OrderingKey::parse(ordering_key)?.partition(topic, event, partitions)
}

#[pyfunction(name = "partition")]
fn partition_index(key: &str, partitions: usize) -> usize {
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
    m.add_function(wrap_pyfunction!(partition_index, m)?)?;
    m.add_function(wrap_pyfunction!(event_partition, m)?)?;
    m.add_function(wrap_pyfunction!(current_topic, m)?)?;
    Ok(())
}
