//! Group commit: a bus with a store (and `durability="batch"`, the default) does not append
//! each published event in the publisher's call. Each topic has one more lane, drained by one
//! worker at a time, whose sink appends everything queued since its last batch in one
//! `store.append(topic, *events)` call (one transaction for `SqliteStore`). Publishers only
//! queue; order per stream is the lane's (FIFO, one writer). `flush()` and `shutdown()` wait
//! until every accepted event is stored; a failed append is kept and raised as `StoreError` by
//! the next `publish` or `flush`, never dropped silently.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::context::ContextRunner;
use crate::dispatch::log_failure;
use crate::errors::nova_err;
use crate::queue::{Items, Sink};

/// How a bus with a store makes published events durable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Durability {
    /// Appends are grouped: `publish` queues the event for the store's writer, which commits
    /// what has gathered (at once when idle, so within milliseconds). A crash may lose the
    /// events published since the last commit; `flush()` returns once they are stored.
    Batch,
    /// `publish` appends its event (one transaction each) before it returns.
    Event,
}

impl Durability {
    pub(super) fn parse(py: Python<'_>, value: &str) -> PyResult<Durability> {
        match value {
            "batch" => Ok(Durability::Batch),
            "event" => Ok(Durability::Event),
            other => Err(crate::errors::validation_error(
                py,
                format!(
                    "Bus.durability must be 'batch' (group commit) or 'event' (a commit per publish), got {other:?}"
                ),
            )),
        }
    }
}

/// A failed append, kept until someone is told (the next `publish` or `flush`).
#[derive(Default)]
pub(super) struct StoreFailures {
    /// Set while `first` holds an error not yet raised: the publish path reads only this.
    pending: AtomicBool,
    /// (the first error, the stream, how many events were not stored since it was raised last)
    first: Mutex<Option<(PyErr, String, u64)>>,
}

impl StoreFailures {
    fn record(&self, py: Python<'_>, bus: &str, stream: &str, lost: u64, err: PyErr) {
        log_failure(py, bus, &err);
        let mut first = self.first.lock();
        match first.as_mut() {
            Some((_, _, n)) => *n += lost,
            None => *first = Some((err, stream.to_string(), lost)),
        }
        self.pending.store(true, SeqCst);
    }

    /// The `StoreError` to raise for appends that failed since the last one raised, if any.
    pub(super) fn take(&self, py: Python<'_>, bus: &str) -> Option<PyErr> {
        if !self.pending.load(SeqCst) {
            return None;
        }
        let (cause, stream, lost) = self.first.lock().take()?;
        self.pending.store(false, SeqCst);
        let err = nova_err(
            py,
            "StoreError",
            format!(
                "bus '{bus}': the store failed to append {lost} published event(s) (first to stream '{stream}'): {}; \
                 they were delivered but are not in the store",
                cause.value(py)
            ),
        );
        err.set_cause(py, Some(cause));
        Some(err)
    }
}

/// The sink of a topic's store lane: appends each batch in one call.
pub(super) struct StoreSink {
    bus: String,
    stream: Py<PyString>,
    store: Py<PyAny>,
    failures: Arc<StoreFailures>,
    /// Events appended (or given up on, with a failure recorded): the lane counts an event
    /// retired as soon as the sink takes it, before the batch's append, so waiting for the
    /// store uses this count instead.
    done: AtomicU64,
    signal: (Mutex<()>, Condvar),
    /// The batch being gathered (one worker at a time drains the lane): kept here so that a
    /// batch cut short by a panic is still appended.
    gathered: Mutex<Vec<Py<PyAny>>>,
}

impl StoreSink {
    pub(super) fn new(bus: &str, stream: Py<PyString>, store: Py<PyAny>, failures: Arc<StoreFailures>) -> StoreSink {
        StoreSink {
            bus: bus.to_string(),
            stream,
            store,
            failures,
            done: AtomicU64::new(0),
            signal: (Mutex::new(()), Condvar::new()),
            gathered: Mutex::new(Vec::new()),
        }
    }

    /// Append `events` now, in this thread (what a shutdown finds still queued).
    pub(super) fn append(&self, py: Python<'_>, events: Vec<Py<PyAny>>) {
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        let mut args = Vec::with_capacity(events.len() + 1);
        args.push(self.stream.clone_ref(py).into_any());
        args.extend(events);
        let appended = PyTuple::new(py, args).and_then(|a| self.store.bind(py).call_method1("append", a));
        if let Err(e) = appended {
            self.failures.record(py, &self.bus, &self.stream.to_string(), n, e);
        }
        self.done.fetch_add(n, SeqCst);
        let _g = self.signal.0.lock();
        self.signal.1.notify_all();
    }

    /// Wait (without the GIL) until `target` events have been appended or given up on.
    pub(super) fn wait_done(&self, target: u64, deadline: Option<Instant>) -> bool {
        let mut g = self.signal.0.lock();
        while self.done.load(SeqCst) < target {
            let Some(wait) = crate::component::next_wait(deadline, Duration::from_millis(20)) else {
                return false;
            };
            self.signal.1.wait_for(&mut g, wait);
        }
        true
    }
}

impl Sink for StoreSink {
    fn deliver_batch(&self, py: Python<'_>, items: &mut Items<'_, '_>, _contexts: &mut ContextRunner) {
        let events = {
            // One lock for the batch (taking items never calls back into this sink; a panic
            // among them releases it while unwinding, before `internal_failure` takes what
            // was gathered).
            let mut gathered = self.gathered.lock();
            while let Some((event, _context)) = items.next(py) {
                gathered.push(event);
            }
            std::mem::take(&mut *gathered)
        };
        self.append(py, events);
    }

    fn internal_failure(&self, py: Python<'_>, err: &PyErr, lost_item: bool) {
        // What the batch had gathered left the queue: it is appended all the same.
        let events = std::mem::take(&mut *self.gathered.lock());
        self.append(py, events);
        if lost_item {
            self.failures.record(py, &self.bus, &self.stream.to_string(), 1, err.clone_ref(py));
            self.done.fetch_add(1, SeqCst);
        } else {
            log_failure(py, &self.bus, err);
        }
    }
}
