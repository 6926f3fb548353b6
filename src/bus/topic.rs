//! A topic: its configuration (delivery mode, ordering key, buffer), its partitions' lanes
//! and sinks, its subscribers; and how the bus makes, finds and configures topics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::store_writer::{Durability, StoreSink};
use super::*;
use crate::component::{bounded, positive, OnFull, MAX_BUFFER_SIZE, MAX_PARTITIONS, MAX_TOPIC_SLOTS};
use crate::errors::{describe_event, type_name, validation_error};
use crate::event::as_event;
use crate::listener::{Resolved, Sub};
use crate::metrics::TypeCounters;
use crate::partition::partition_of;
use crate::queue::Lane;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(clippy::enum_variant_names)] // the names of nova.DeliveryMode
pub(super) enum Mode {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl Mode {
    pub(super) fn parse(py: Python<'_>, field: &str, v: &Bound<'_, PyAny>) -> PyResult<Mode> {
        let raw = v.getattr("value").unwrap_or_else(|_| v.clone());
        match raw.extract::<String>().unwrap_or_default().as_str() {
            "at_most_once" => Ok(Mode::AtMostOnce),
            "at_least_once" => Ok(Mode::AtLeastOnce),
            "exactly_once" => Ok(Mode::ExactlyOnce),
            _ => Err(validation_error(py, format!("{field} must be a nova.DeliveryMode, got {}", v.repr()?))),
        }
    }
}

pub(super) enum OrderingKey {
    /// No key: the event id (no ordering between events).
    EventId,
    /// A metadata key, read in Rust (kept as a Python str so its hash is computed once).
    Metadata(Py<PyString>),
    /// A callable `event -> str`, called once per event.
    Callable(Py<PyAny>),
}

impl OrderingKey {
    /// A `TopicConfig.ordering_key`: None, a metadata key, or a callable.
    pub(super) fn parse(key: &Bound<'_, PyAny>) -> PyResult<OrderingKey> {
        Ok(if key.is_none() {
            OrderingKey::EventId
        } else if let Ok(s) = key.downcast::<PyString>() {
            OrderingKey::Metadata(PyString::intern(key.py(), s.to_str()?).unbind())
        } else {
            OrderingKey::Callable(key.clone().unbind())
        })
    }

    /// Which of `partitions` the `event` published on `topic` goes to: the key's FNV-1a
    /// (the same in every process, so a distributed backend agrees with the local bus).
    pub(super) fn partition(&self, topic: &str, event: &Bound<'_, PyAny>, partitions: usize) -> PyResult<usize> {
        let py = event.py();
        if partitions <= 1 {
            return Ok(0);
        }
        let Some(ev) = as_event(event) else {
            return Err(validation_error(
                py,
                format!("topic '{topic}': expected a nova.Event, got {}", type_name(event)),
            ));
        };
        let ev = ev.get();
        Ok(match self {
            OrderingKey::EventId => ev.id_partition(py, partitions)?,
            OrderingKey::Metadata(k) => ev.metadata_partition(py, k.bind(py), partitions)?,
            OrderingKey::Callable(f) => {
                let key = f.bind(py).call1((event,))?;
                let key = key.downcast::<PyString>().map_err(|_| {
                    validation_error(
                        py,
                        format!(
                            "topic '{topic}': ordering_key returned {} for {}; it must return a str",
                            type_name(&key),
                            describe_event(event)
                        ),
                    )
                })?;
                partition_of(key.to_str()?, partitions)
            }
        })
    }
}

pub(super) struct Topic {
    pub(super) name: String,
    pub(super) name_obj: Py<PyString>,
    pub(super) config: Py<PyAny>,
    pub(super) mode: Mode,
    pub(super) on_full: OnFull,
    pub(super) key: OrderingKey,
    pub(super) dedup_window: usize,
    pub(super) lanes: Vec<Arc<Lane>>,
    pub(super) sinks: Vec<Arc<PartitionSink>>,
    pub(super) subs: RwLock<Arc<Resolved>>,
    /// Bumped after every change of `subs`, so a worker can keep its copy for a whole batch
    /// and re-read only when this moves (one load per event instead of a lock and a clone).
    pub(super) subs_version: AtomicU64,
    pub(super) dedup: Mutex<HashMap<u64, Dedup>>,
    pub(super) deleted: AtomicBool,
    /// On a bus with a store and `durability="batch"`: the lane of the topic's store writer
    /// (see `store_writer.rs`) and its sink.
    pub(super) store: Option<(Arc<Lane>, Arc<StoreSink>)>,
}

impl Topic {
    pub(super) fn queued(&self) -> usize {
        self.lanes.iter().map(|l| l.len()).sum::<usize>() + self.sinks.iter().map(|s| s.held_len()).sum::<usize>()
    }

    /// Start loading what `partition_for` will read, so that other work can overlap it.
    #[inline]
    pub(super) fn prefetch_key(&self, event: &Bound<'_, PyAny>) {
        if let (OrderingKey::Metadata(_), Some(ev)) = (&self.key, as_event(event)) {
            if self.lanes.len() > 1 {
                ev.get().prefetch_metadata();
            }
        }
    }

    pub(super) fn partition_for(&self, event: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.key.partition(&self.name, event, self.lanes.len())
    }

    pub(super) fn set_subs(&self, subs: Vec<Arc<Sub>>) {
        let counters = self.subs.read().counters.clone();
        *self.subs.write() = Arc::new(Resolved::new(subs, counters));
        self.subs_version.fetch_add(1, SeqCst);
    }

    /// The subscribers now, reusing `cached` while they have not changed since it was read.
    pub(super) fn subs_since<'a>(&self, cached: &'a mut Option<(u64, Arc<Resolved>)>) -> &'a Resolved {
        let version = self.subs_version.load(SeqCst);
        match cached {
            Some((v, _)) if *v == version => {}
            _ => *cached = Some((version, self.subs.read().clone())),
        }
        &cached.as_ref().expect("just filled").1
    }

    pub(super) fn add_sub(&self, sub: Arc<Sub>) {
        let mut subs = self.subs.read().subs.clone();
        subs.push(sub);
        subs.sort_by_key(|s| s.seq);
        self.set_subs(subs);
    }

    pub(super) fn remove_sub(&self, seq: u64) {
        let subs: Vec<Arc<Sub>> = self.subs.read().subs.iter().filter(|s| s.seq != seq).cloned().collect();
        self.set_subs(subs);
    }
}

impl Bus {
    pub(super) fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.core.topics.read().get(name).cloned()
    }

    pub(super) fn default_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("partitions", self.default_partitions)?;
        kwargs.set_item("buffer_size", self.default_buffer_size)?;
        kwargs.set_item("delivery_mode", self.default_mode.bind(py))?;
        py.import("nova._types")?.getattr("TopicConfig")?.call((), Some(&kwargs))
    }

    pub(super) fn get_or_create(&self, py: Python<'_>, name: &str) -> PyResult<Arc<Topic>> {
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
    pub(super) fn with_topic<R>(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        f: impl FnOnce(&Topic) -> R,
    ) -> PyResult<R> {
        if let Some(last) = self.last_topic.read(py) {
            if let Some((obj, t)) = &*last {
                if obj.is(name) && !t.deleted.load(SeqCst) {
                    return Ok(f(t));
                }
            }
        }
        let t = self.get_or_create(py, name.to_str()?)?;
        if let Some(mut last) = self.last_topic.write(py) {
            let old = last.replace((name.clone().unbind(), t.clone()));
            drop(last);
            // Freed after the borrow ends: dropping may run Python code.
            drop(old);
        }
        Ok(f(&t))
    }

    pub(super) fn create(&self, py: Python<'_>, name: &str, config: &Bound<'_, PyAny>) -> PyResult<Arc<Topic>> {
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
        let key = OrderingKey::parse(&key_obj)?;
        let mut lanes = Vec::with_capacity(partitions);
        let mut sinks = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let sink = Arc::new(PartitionSink {
                core: Arc::downgrade(&self.core),
                topic: OnceLock::new(),
                held: HoldBack::default(),
                me: OnceLock::new(),
            });
            let _ = sink.me.set(Arc::downgrade(&sink));
            lanes.push(Lane::new(buffer_size, 1, sink.clone(), self.core.pool.clone()));
            sinks.push(sink);
        }
        let store = match (&self.store, self.durability) {
            (Some(store), Durability::Batch) => {
                let sink = Arc::new(StoreSink::new(
                    &self.core.name,
                    PyString::new(py, name).unbind(),
                    store.clone_ref(py),
                    self.core.store_failures.clone(),
                ));
                // Bounded: publishers wait (without the GIL) when the store falls this far behind.
                let capacity = (partitions * buffer_size).clamp(1024, 65_536);
                Some((Lane::new(capacity, 1, sink.clone(), self.core.pool.clone()), sink))
            }
            _ => None,
        };
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
            store,
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
}
