//! `nova.Emitter`: events routed by type (exact or `*`/`#` patterns) to listeners, either in
//! the caller's thread (`emit`) or through one bounded queue drained by pool workers
//! (`emit_async`).

use std::sync::{Arc, Weak};

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyTuple};

use crate::component::{
    bounded, check_event, deadline, shutdown_report, ContextCapture, OnFull, MAX_BUFFER_SIZE, MAX_WORKERS,
};
use crate::context::ContextRunner;
use crate::dispatch::{attempt, log_failure, Attempt, Chain, Delivery, Dispatch, DispatchCounters};
use crate::errors::{buffer_full, describe_event, emitter_closed, group_errors, validation_error};
use crate::event::as_event;
use crate::ffi::method::{install_fast_method, FastCall};
use crate::lifecycle::{Component, Kind, Lifecycle, Parts};
use crate::listener::component_snapshot;
use crate::listener::{LastResolved, Listener, Registry, Resolved, ResolvedRef, Sub, Subscription, Unsubscribe};
use crate::metrics::{pairs, Counter, TypeCounters};
use crate::pool::WorkerPool;
use crate::queue::{Item, Items, Lane, Pushed, Sink};
use crate::retry::Retries;
use crate::tasks::{NextAttempt, TaskHome};

pub struct EmitterCore {
    name: String,
    registry: Registry,
    chain: Chain,
    counters: Arc<DispatchCounters>,
    retries: Arc<Retries>,
    dropped_full: Counter,
    dropped_shutdown: Counter,
    event_loop: Option<Py<PyAny>>,
}

impl EmitterCore {
    /// The listeners (and counters) of an event's type; `None` for a non-event.
    #[inline]
    fn resolve(&self, event: &Bound<'_, PyAny>) -> Option<Arc<Resolved>> {
        let ev = as_event(event)?;
        let py = event.py();
        self.registry.resolve_type(py, ev.get().type_obj(py))
    }

    /// Run middleware and listeners in this thread (`emit`); `resolved` is reused unless
    /// middleware replaced the event. Managed listeners run their whole policy here.
    fn dispatch<'py>(
        &self,
        py: Python<'py>,
        event: Bound<'py, PyAny>,
        resolved: Option<Arc<Resolved>>,
    ) -> Result<(), PyErr> {
        let d = Dispatch { component: &self.name, chain: &self.chain, counters: &self.counters };
        let original = event.as_ptr();
        d.run(
            py,
            event,
            |ev| match resolved {
                Some(r) if ev.as_ptr() == original => r,
                _ => self.resolve(ev).unwrap_or_else(|| self.registry.resolve("")),
            },
            |sub, ev, _later| {
                let place = || format!("emitter '{}'", self.name);
                let result = sub.call(py, ev, self.event_loop.as_ref(), Some(&place));
                self.counters.processed.inc(py);
                match result {
                    Ok(()) => Delivery::Done,
                    Err(e) => {
                        self.counters.failed.inc();
                        Delivery::Failed(e)
                    }
                }
            },
        )
    }

    /// Asynchronous delivery (a worker, inside the emitter's context): failures are counted and
    /// logged, never raised; a managed listener's retries wait on the timer runtime. The
    /// listeners are those subscribed now, found through the worker's `memo`.
    fn dispatch_queued(
        &self,
        py: Python<'_>,
        event: Bound<'_, PyAny>,
        memo: &mut Option<LastResolved>,
        context: Option<&Py<PyAny>>,
    ) {
        let d = Dispatch { component: &self.name, chain: &self.chain, counters: &self.counters };
        let original = event.as_ptr();
        let first = as_event(&event).map(|ev| self.registry.resolve_in(py, ev.get().type_obj(py), memo));
        let result = d.run(
            py,
            event,
            |ev| match first {
                Some(r) if ev.as_ptr() == original => ResolvedRef::Borrowed(r),
                // Middleware replaced the event.
                _ => ResolvedRef::Owned(self.resolve(ev).unwrap_or_else(|| self.registry.resolve(""))),
            },
            |sub, ev, later| match attempt(py, sub, ev, 1, None, self.event_loop.as_ref(), false) {
                Attempt::Done => {
                    self.counters.processed.inc(py);
                    Delivery::Done
                }
                Attempt::Failed(e) => {
                    self.counters.processed.inc(py);
                    self.counters.failed.inc();
                    // A managed listener has dead-lettered or logged it already.
                    if sub.managed.is_none() {
                        Delivery::Failed(e)
                    } else {
                        Delivery::Reported(e)
                    }
                }
                Attempt::Retry(delay) => {
                    let next = NextAttempt {
                        sub: sub.clone(),
                        event: ev,
                        context,
                        attempt: 2,
                        topic: None,
                        delay,
                        follow: None,
                        after: later.defer(),
                    };
                    self.retries.schedule(py, next);
                    Delivery::Pending
                }
                Attempt::Async(coro, managed) => {
                    let plan = managed.then(|| crate::tasks::RetryPlan {
                        attempt: 1,
                        topic: None,
                        context: context.map(|c| c.clone_ref(py)),
                    });
                    let end = crate::tasks::TaskEnd {
                        plan,
                        after: later.defer(),
                        ..crate::tasks::TaskEnd::new(sub, ev, &self.counters, &self.retries)
                    };
                    crate::tasks::spawn(py, coro.into_bound(py), self.event_loop.as_ref(), end, false);
                    Delivery::Pending
                }
            },
        );
        if let Err(e) = result {
            log_failure(py, &self.name, &e);
        }
    }

    /// Bump one of the counters of `event`'s type (`bump` must not call Python code).
    #[inline]
    fn count(&self, event: &Bound<'_, PyAny>, bump: impl FnOnce(&TypeCounters)) {
        if let Some(ev) = as_event(event) {
            self.registry.count_type(event.py(), ev.get().type_obj(event.py()), bump);
        }
    }

    #[inline]
    fn count_accepted(&self, event: &Bound<'_, PyAny>) -> Option<Arc<Resolved>> {
        let r = self.resolve(event)?;
        r.counters.accepted.inc(event.py());
        Some(r)
    }

    fn count_type(&self, event: &Bound<'_, PyAny>, dropped: bool) {
        let py = event.py();
        self.count(event, |c| if dropped { c.dropped.inc(py) } else { c.rejected.inc(py) });
    }
}

impl Unsubscribe for EmitterCore {
    fn unsubscribe(&self, seq: u64) {
        self.registry.remove(seq);
    }
}

/// Delivers queued events, inside the `contextvars` context captured at emit time so that
/// listeners and middleware see the emitting thread's context variables.
struct EmitterSink {
    core: Arc<EmitterCore>,
}

impl Sink for EmitterSink {
    fn deliver_batch(&self, py: Python<'_>, items: &mut Items<'_, '_>, contexts: &mut ContextRunner) {
        let mut memo = None;
        while let Some((event, context)) = items.next(py) {
            let event = event.into_bound(py);
            match context {
                Some(ctx) => {
                    let run = || self.core.dispatch_queued(py, event, &mut memo, Some(ctx));
                    if let Err(e) = contexts.run(py, ctx, run) {
                        log_failure(py, &self.core.name, &e);
                    }
                }
                None => self.core.dispatch_queued(py, event, &mut memo, None),
            }
        }
    }

    fn internal_failure(&self, py: Python<'_>, err: &PyErr, lost_item: bool) {
        if lost_item {
            self.core.counters.failed.inc();
        }
        log_failure(py, &self.core.name, err);
    }
}

/// A listener's coroutine for `aemit` and what settles it.
type AsyncCall = (PyObject, Py<crate::tasks::ListenerRun>);

/// The synchronous listeners of an `aemit` whose async listeners run on the caller's loop:
/// called once, on the worker pool, it delivers the event to them as `emit` would and returns
/// their failures (the caller raises them with those of the async listeners).
#[pyclass(module = "nova._core", frozen)]
pub struct SyncPart {
    core: Arc<EmitterCore>,
    subs: Vec<Arc<Sub>>,
    event: Py<PyAny>,
}

#[pymethods]
impl SyncPart {
    fn __call__(&self, py: Python<'_>) -> Vec<PyObject> {
        let event = self.event.bind(py);
        let place = || format!("emitter '{}'", self.core.name);
        let mut errors = Vec::new();
        for sub in self.subs.iter().filter(|s| s.is_active()) {
            let result = sub.call(py, event, self.core.event_loop.as_ref(), Some(&place));
            self.core.counters.processed.inc(py);
            if let Err(e) = result {
                self.core.counters.failed.inc();
                errors.push(e.into_value(py).into_any());
            }
        }
        errors
    }
}

#[pyclass(module = "nova", name = "Emitter", extends = Component, subclass, frozen)]
pub struct Emitter {
    core: Arc<EmitterCore>,
    lane: Arc<Lane>,
    life: Arc<Lifecycle>,
    on_full: OnFull,
    validator: Option<Py<PyAny>>,
    propagate_context: bool,
    context: ContextCapture,
}

impl Emitter {
    #[inline]
    /// Open for `event` (named in the error when given)?
    fn check_open(&self, py: Python<'_>, event: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.life.check_open(py, event)
    }

    #[inline]
    fn admit(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open(py, Some(event))?;
        if let Err(e) = check_event(py, &self.core.name, event, self.validator.as_ref()) {
            self.count_rejected(py, event);
            return Err(e);
        }
        Ok(())
    }

    fn count_rejected(&self, _py: Python<'_>, event: &Bound<'_, PyAny>) {
        self.core.count_type(event, false);
    }

    fn item(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<Item> {
        Ok(Item {
            event: event.clone().unbind(),
            context: if self.propagate_context { Some(self.context.capture(py)?) } else { None },
        })
    }

    /// Queue one admitted event under `policy`.
    /// Called on the thread of the loop its async listeners run on (whose tasks cannot finish
    /// while that thread waits for them).
    fn on_own_loop(&self, py: Python<'_>) -> bool {
        self.core.event_loop.as_ref().is_some_and(|l| crate::tasks::runs_here(py, l))
    }

    /// `emit_async` on the thread of the loop its listeners run on, when every one of them is
    /// a plain `async def` listener, no middleware is set and nothing is queued ahead: a worker
    /// would only hand the coroutines straight back to this loop, so their tasks are started
    /// here (no thread hop, no GIL hand-off). False when any of that does not hold.
    fn start_tasks_here(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> bool {
        let Some(event_loop) = &self.core.event_loop else { return false };
        if self.core.chain.snapshot().is_some() || self.lane.len() > 0 || self.lane.in_flight() > 0 {
            return false;
        }
        let Some(resolved) = self.core.resolve(event) else { return false };
        if !resolved.all_plain_async || !crate::tasks::runs_here(py, event_loop) {
            return false;
        }
        resolved.counters.accepted.inc(py);
        for sub in resolved.subs.iter().filter(|s| s.is_active()) {
            match attempt(py, sub, event, 1, None, Some(event_loop), false) {
                Attempt::Async(coro, _) => {
                    let end = crate::tasks::TaskEnd::new(sub, event, &self.core.counters, &self.core.retries);
                    crate::tasks::spawn(py, coro.into_bound(py), Some(event_loop), end, true);
                }
                Attempt::Failed(e) => {
                    self.core.counters.processed.inc(py);
                    self.core.counters.failed.inc();
                    log_failure(py, &self.core.name, &e);
                }
                Attempt::Done | Attempt::Retry(_) => self.core.counters.processed.inc(py),
            }
        }
        true
    }

    fn enqueue(&self, py: Python<'_>, event: &Bound<'_, PyAny>, policy: OnFull, timeout: Option<f64>) -> PyResult<()> {
        let item = self.item(py, event)?;
        self.lane.recycle(py);
        // Counted as accepted up front and taken back if the push fails (the item is gone
        // into the queue once pushed).
        self.core.count(event, |c| c.accepted.inc(py));
        match policy {
            OnFull::DropOldest => {
                if let Some(old) = self.lane.force_push(py, item) {
                    self.core.dropped_full.inc();
                    self.core.count_type(old.event.bind(py), true);
                }
            }
            _ => {
                let pushed = match self.lane.try_push(item) {
                    Pushed::Full(item) if policy == OnFull::Block => {
                        let lane = self.lane.clone();
                        let until = deadline(py, "Emitter.emit_async timeout", timeout)?;
                        py.allow_threads(move || lane.push_blocking(item, until))
                    }
                    other => other,
                };
                if let Pushed::Full(_) = pushed {
                    self.core.count(event, |c| c.accepted.undo(py));
                    if policy == OnFull::DropNewest {
                        self.core.dropped_full.inc();
                        self.core.count_type(event, true);
                        return Ok(());
                    }
                    self.count_rejected(py, event);
                    return Err(self.full_error(py, event, policy));
                }
            }
        }
        Ok(())
    }

    fn full_error(&self, py: Python<'_>, event: &Bound<'_, PyAny>, policy: OnFull) -> PyErr {
        let hint = if policy == OnFull::Block {
            "waited past the timeout; raise the timeout or buffer_size, or add workers"
        } else {
            "use on_full=OnFull.BLOCK to wait for room, raise buffer_size, or add workers"
        };
        buffer_full(
            py,
            format!(
                "emitter '{}' buffer is full ({} events queued) for {}; {hint}",
                self.core.name,
                self.lane.capacity(),
                describe_event(event)
            ),
        )
    }
}

#[pymethods]
impl Emitter {
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, one Rust parameter each
    #[new]
    #[pyo3(signature = (*, pool=None, buffer_size=1000, max_concurrency=10, on_full=None,
                        validator=None, r#loop=None, name="emitter", propagate_context=true))]
    fn new(
        py: Python<'_>,
        pool: Option<Py<WorkerPool>>,
        buffer_size: i64,
        max_concurrency: i64,
        on_full: Option<&Bound<'_, PyAny>>,
        validator: Option<Py<PyAny>>,
        r#loop: Option<Py<PyAny>>,
        name: &str,
        propagate_context: bool,
    ) -> PyResult<PyClassInitializer<Self>> {
        let buffer_size = bounded(py, "Emitter.buffer_size", buffer_size, MAX_BUFFER_SIZE)?;
        let max_concurrency = bounded(py, "Emitter.max_concurrency", max_concurrency, MAX_WORKERS)?;
        let on_full = OnFull::parse(py, "Emitter.on_full", on_full)?;
        let parts = Lifecycle::start(py, Kind::Emitter, name, pool, r#loop, validator)?;
        let Parts { life, counters, event_loop, retries, validator } = parts;
        let pool_inner = life.pool_inner().clone();
        let core = Arc::new(EmitterCore {
            name: name.to_string(),
            registry: Registry::default(),
            chain: Chain::default(),
            counters,
            retries,
            dropped_full: Counter::default(),
            dropped_shutdown: Counter::default(),
            event_loop,
        });
        let sink = Arc::new(EmitterSink { core: core.clone() });
        let lane = Lane::new(buffer_size, max_concurrency, sink, pool_inner);
        let emitter = Emitter {
            core,
            lane,
            life: life.clone(),
            on_full,
            validator,
            propagate_context,
            context: ContextCapture::default(),
        };
        Ok(Component::base(&life).add_subclass(emitter))
    }

    /// Subscribe `listener` to an event type or a `*`/`#` pattern.
    /// (The Python layer turns `config=` into a managed listener before calling this.)
    fn _subscribe(&self, py: Python<'_>, event_type: &str, listener: &Bound<'_, PyAny>) -> PyResult<Subscription> {
        if event_type.is_empty() {
            return Err(validation_error(py, "subscribe: event_type must be a non-empty str"));
        }
        if self.life.is_closed() {
            return Err(emitter_closed(py, format!("emitter '{}' is shut down; cannot subscribe", self.core.name)));
        }
        let (listener, managed) = Listener::for_subscription(py, listener)?;
        let metrics = self.core.registry.metrics_for(listener.get().name());
        let sub = Arc::new(Sub::new(py, event_type, listener, managed, metrics));
        self.core.registry.add(sub.clone());
        let owner: Weak<dyn Unsubscribe> = Arc::downgrade(&(self.core.clone() as Arc<dyn Unsubscribe>));
        Ok(Subscription { sub, owner })
    }

    /// Run middleware and every matching listener now, in this thread.
    fn emit(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        self.admit(py, event)?;
        let resolved = self.core.count_accepted(event);
        self.core.dispatch(py, event.clone(), resolved)
    }

    /// Queue the event and return at once; a full buffer is handled by `on_full`.
    #[pyo3(signature = (event, *, timeout=None))]
    fn emit_async(&self, py: Python<'_>, event: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        self.admit(py, event)?;
        if self.start_tasks_here(py, event) {
            return Ok(());
        }
        self.enqueue(py, event, self.on_full, timeout)
    }

    /// For `aemit` on the thread of the loop its listeners run on, when no middleware is set
    /// and every async listener is a plain `async def` one: admits and counts the event and
    /// returns each async listener's (coroutine, ListenerRun) for the caller to await here,
    /// and the sync listeners' part for it to run on the pool (None if there are none); else
    /// None (the caller takes the general route: `emit` on the pool).
    #[allow(clippy::type_complexity)]
    fn _aemit_here(
        &self,
        py: Python<'_>,
        event: &Bound<'_, PyAny>,
    ) -> PyResult<Option<(Vec<AsyncCall>, Option<Py<SyncPart>>)>> {
        let Some(event_loop) = &self.core.event_loop else { return Ok(None) };
        if self.core.chain.snapshot().is_some() || !crate::tasks::runs_here(py, event_loop) {
            return Ok(None);
        }
        let Some(resolved) = self.core.resolve(event) else { return Ok(None) };
        let subs: Vec<&Arc<Sub>> = resolved.subs.iter().filter(|s| s.is_active()).collect();
        let (plain_async, sync): (Vec<&Arc<Sub>>, Vec<&Arc<Sub>>) =
            subs.into_iter().partition(|s| s.listener.get().is_async());
        if plain_async.is_empty() || plain_async.iter().any(|s| s.managed.is_some()) {
            return Ok(None);
        }
        self.admit(py, event)?;
        // Every coroutine first: a handler that raises instead leaves nothing half-started.
        let mut coros = Vec::with_capacity(plain_async.len());
        for sub in &plain_async {
            match crate::ffi::call::call1(sub.listener.bind(py).get().handler(py), event) {
                Ok(c) => coros.push(c),
                Err(e) => {
                    for c in coros {
                        let _ = c.call_method0("close");
                    }
                    return Err(crate::errors::listener_error_in(
                        py,
                        Some(&format!("emitter '{}'", self.core.name)),
                        sub.listener.bind(py).get().name(),
                        event,
                        e,
                    ));
                }
            }
        }
        resolved.counters.accepted.inc(py);
        let mut calls = Vec::new();
        for (sub, coro) in plain_async.into_iter().zip(coros) {
            self.core.retries.begin_task();
            let end = crate::tasks::TaskEnd::new(sub, event, &self.core.counters, &self.core.retries);
            calls.push((coro.unbind(), Py::new(py, crate::tasks::ListenerRun::new(None, end))?));
        }
        let sync_part = match sync.is_empty() {
            true => None,
            false => Some(Py::new(
                py,
                SyncPart {
                    core: self.core.clone(),
                    subs: sync.into_iter().cloned().collect(),
                    event: event.clone().unbind(),
                },
            )?),
        };
        Ok(Some((calls, sync_part)))
    }

    /// Wait (without the GIL, up to `timeout` seconds) until the buffer has room; for
    /// `aemit_async`, from a thread of the loop's executor.
    #[pyo3(signature = (timeout=None))]
    fn _wait_room(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let until = deadline(py, "timeout", timeout)?;
        let lane = self.lane.clone();
        Ok(py.allow_threads(move || lane.wait_for_room_until(1, until)))
    }

    /// Queue without waiting whatever the policy; `BufferFull` when there is no room
    /// (`aemit_async` tries this, and waits for room when it is full).
    fn _try_emit_async(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        self.admit(py, event)?;
        self.enqueue(py, event, OnFull::Raise, None)
    }

    /// Validate all, then run (or queue) them in order.
    #[pyo3(signature = (events, *, asynchronous=false))]
    fn emit_batch(&self, py: Python<'_>, events: &Bound<'_, PyAny>, asynchronous: bool) -> PyResult<()> {
        let events: Vec<Bound<'_, PyAny>> = events.try_iter()?.collect::<PyResult<_>>()?;
        self.check_open(py, events.first())?;
        for ev in &events {
            if let Err(e) = check_event(py, &self.core.name, ev, self.validator.as_ref()) {
                self.count_rejected(py, ev);
                return Err(e);
            }
        }
        if asynchronous {
            if self.on_full == OnFull::Raise && self.lane.len() + events.len() > self.lane.capacity() {
                return Err(buffer_full(
                    py,
                    format!(
                        "emitter '{}': a batch of {} events does not fit in the buffer ({} of {} free); nothing was queued",
                        self.core.name,
                        events.len(),
                        self.lane.capacity() - self.lane.len().min(self.lane.capacity()),
                        self.lane.capacity()
                    ),
                ));
            }
            for ev in &events {
                self.enqueue(py, ev, self.on_full, None)?;
            }
            return Ok(());
        }
        let mut errors = Vec::new();
        for ev in &events {
            let resolved = self.core.count_accepted(ev);
            if let Err(e) = self.core.dispatch(py, ev.clone(), resolved) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(group_errors(py, &format!("a batch of {} events", events.len()), errors))
        }
    }

    /// Add middleware (objects with `before(event)` and/or `after(event, error)`).
    #[pyo3(signature = (*middleware))]
    fn r#use(&self, py: Python<'_>, middleware: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.core.chain.add(py, middleware)
    }

    /// Wait until everything queued so far is processed; False on timeout.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let lane = self.lane.clone();
        let retries = self.core.retries.clone();
        let until = deadline(py, "Emitter.flush timeout", timeout)?;
        let with_tasks = !self.on_own_loop(py);
        let flushed = py.allow_threads(move || lane.wait_retired(until) && retries.wait_idle(until, with_tasks));
        self.lane.recycle_all(py);
        Ok(flushed)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = &self.core;
        py.import("nova._types")?.getattr("EmitterStats")?.call1((
            // Every accepted event counts once under its type: no emitter-wide counter to bump.
            c.registry.accepted_total(),
            c.counters.processed.get(),
            c.counters.failed.get(),
            self.lane.len() + c.retries.pending(),
            c.dropped_full.get() + c.dropped_shutdown.get(),
            c.registry.len(),
            c.counters.middleware_errors.get(),
        ))
    }

    /// Stop accepting events, process the queue until `timeout`, and report what was left.
    #[pyo3(signature = (timeout=30.0))]
    fn shutdown<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let until = deadline(py, "Emitter.shutdown timeout", timeout)?;
        if !self.life.close() {
            return shutdown_report(py, 0, Vec::new(), 0);
        }
        let lane = self.lane.clone();
        let before = lane.retired();
        let retries = self.core.retries.clone();
        let with_tasks = !self.on_own_loop(py);
        py.allow_threads(|| {
            if lane.wait_idle(until) {
                retries.wait_idle(until, with_tasks);
            }
        });
        let left = lane.stop_and_take(py);
        let (retired, unfinished) = lane.progress();
        let drained = retired - before - left.len() as u64;
        let in_flight = unfinished as usize;
        let mut undelivered: Vec<Py<PyAny>> = left.into_iter().map(|i| i.event).collect();
        undelivered.extend(self.core.retries.abandon_all(py));
        if with_tasks {
            // Listener tasks still running at the deadline are cancelled; called on their
            // own loop's thread, they could not have run yet, and go on (in flight).
            undelivered.extend(self.core.retries.abandon_tasks(py));
        }
        // Retries running now finish on their own: in flight, never also undelivered.
        let in_flight = in_flight + self.core.retries.running();
        self.core.dropped_shutdown.add(undelivered.len() as u64);
        self.context.clear(py);
        self.life.finish(py, until, drained, undelivered, in_flight)
    }

    /// Counters for `nova.metrics` (read at scrape time).
    fn _metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.core;
        let d = component_snapshot(py, &c.name, &c.registry, &c.registry)?;
        d.set_item("queue_size", self.lane.len() + c.retries.pending())?;
        d.set_item("active_listeners", c.registry.len())?;
        d.set_item(
            "dropped",
            pairs(
                py,
                vec![("buffer_full".into(), c.dropped_full.get()), ("shutdown".into(), c.dropped_shutdown.get())],
            )?,
        )?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Emitter(name={:?}, listeners={}, queued={})",
            self.core.name,
            self.core.registry.len(),
            self.lane.len()
        )
    }
}

/// `Emitter.emit(event)` (`QUEUED = false`) and `Emitter.emit_async(event)` with no timeout
/// (`QUEUED = true`), the calls every event makes, as plain C methods (see
/// `ffi::method::install_fast_method`).
struct FastEmit<const QUEUED: bool>;

impl<const QUEUED: bool> FastCall for FastEmit<QUEUED> {
    type Class = Emitter;

    fn original() -> &'static GILOnceCell<Py<PyAny>> {
        static EMIT: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        static EMIT_ASYNC: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        if QUEUED {
            &EMIT_ASYNC
        } else {
            &EMIT
        }
    }

    fn fast<'py>(
        py: Python<'py>,
        emitter: &Emitter,
        args: crate::ffi::method::Args<'_, 'py>,
    ) -> Option<PyResult<Py<PyAny>>> {
        if args.len() != 1 {
            return None;
        }
        let event = args.get(0);
        let done = if QUEUED { emitter.emit_async(py, &event, None) } else { emitter.emit(py, &event) };
        Some(done.map(|()| py.None()))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Emitter>()?;
    m.add_class::<SyncPart>()?;
    let ty = py.get_type::<Emitter>();
    install_fast_method::<FastEmit<false>>(
        py,
        &ty,
        c"emit",
        c"emit($self, event)\n--\n\nRun middleware and every matching listener now, in this thread.",
    )?;
    install_fast_method::<FastEmit<true>>(
        py,
        &ty,
        c"emit_async",
        c"emit_async($self, event, *, timeout=None)\n--\n\nQueue the event and return at once; a full buffer is handled by `on_full`.",
    )
}
