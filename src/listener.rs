//! `nova.Listener`, `nova.Subscription`, and the subscriber tables that components resolve
//! event types against (cached per type, so an emit costs one lookup).

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyList, PyString};

use crate::errors::{listener_error_in, type_name, validation_error};
use crate::metrics::{stopwatch, ListenerMetrics, TypeCounters};
use crate::pattern::TypePattern;

static AIO: GILOnceCell<(Py<PyAny>, Py<PyAny>)> = GILOnceCell::new();

/// `nova._aio.is_async` and `nova._aio.wait`.
fn aio(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>)> {
    AIO.get_or_try_init(py, || {
        let m = py.import("nova._aio")?;
        Ok((m.getattr("is_async")?.unbind(), m.getattr("wait")?.unbind()))
    })
}

/// `Listener(name, handler, *, on_error=None)`.
#[pyclass(module = "nova", name = "Listener", subclass, frozen)]
pub struct Listener {
    name: Py<PyString>,
    name_str: String,
    handler: Py<PyAny>,
    on_error: Option<Py<PyAny>>,
    is_async: bool,
}

/// How one call of a listener ended.
pub enum Outcome {
    Ok,
    /// The handler raised and `on_error` handled it.
    Handled,
    /// The handler (or `on_error`) raised; the error to report.
    Failed(PyErr),
}

impl Listener {
    pub fn name(&self) -> &str {
        &self.name_str
    }

    pub fn handler<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.handler.bind(py)
    }

    pub fn is_async(&self) -> bool {
        self.is_async
    }

    pub fn on_error(&self) -> Option<&Py<PyAny>> {
        self.on_error.as_ref()
    }

    /// Call the handler once, awaiting it on `event_loop` when it is `async def`, and apply
    /// `on_error`.
    #[inline]
    pub fn invoke(&self, py: Python<'_>, event: &Bound<'_, PyAny>, event_loop: Option<&Py<PyAny>>) -> Outcome {
        let mut result = crate::ffi::call::call1(self.handler.bind(py), event);
        if self.is_async {
            result = result.and_then(|coro| {
                let wait = &aio(py)?.1;
                wait.bind(py).call1((event_loop.map(|l| l.bind(py)), coro))
            });
        }
        match result {
            Ok(_) => Outcome::Ok,
            Err(err) => match &self.on_error {
                None => Outcome::Failed(err),
                Some(on_error) => match crate::ffi::call::call2(on_error.bind(py), event, Some(err.value(py).as_any()))
                {
                    Ok(_) => Outcome::Handled,
                    Err(e2) => Outcome::Failed(e2),
                },
            },
        }
    }

    /// The `Listener` to subscribe for `obj`, and the managed listener behind it if `obj` is one
    /// (an object with `attempt` and `abandon`, from `ListenerManager.register`).
    pub fn for_subscription(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<(Py<Listener>, Option<Py<PyAny>>)> {
        if obj.hasattr("attempt")? && obj.hasattr("abandon")? && obj.is_callable() {
            let name = obj
                .getattr("name")?
                .downcast_into::<PyString>()
                .map_err(|_| validation_error(py, "a managed listener's name must be a str"))?;
            let listener = Listener::build(py, name.unbind(), obj.clone().unbind(), None)?;
            return Ok((Py::new(py, listener)?, Some(obj.clone().unbind())));
        }
        Ok((Listener::coerce(py, obj)?, None))
    }

    /// A `Listener` for `obj`: itself when it already is one, else a wrapper named by the
    /// callable's `__qualname__`.
    pub fn coerce(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Py<Listener>> {
        if let Ok(l) = obj.downcast::<Listener>() {
            return Ok(l.clone().unbind());
        }
        if !obj.is_callable() {
            return Err(validation_error(
                py,
                format!("listener must be callable or a nova.Listener, got {}", type_name(obj)),
            ));
        }
        let name = match obj.getattr("__qualname__") {
            Ok(n) if n.is_instance_of::<PyString>() => n.downcast_into::<PyString>()?,
            _ => obj.repr()?,
        };
        let listener = Listener::build(py, name.unbind(), obj.clone().unbind(), None)?;
        Py::new(py, listener)
    }

    fn build(
        py: Python<'_>,
        name: Py<PyString>,
        handler: Py<PyAny>,
        on_error: Option<Py<PyAny>>,
    ) -> PyResult<Listener> {
        let is_async = aio(py)?.0.bind(py).call1((handler.bind(py),))?.is_truthy()?;
        let name_str = name.bind(py).to_string();
        Ok(Listener { name, name_str, handler, on_error, is_async })
    }
}

#[pymethods]
impl Listener {
    #[new]
    #[pyo3(signature = (name, handler, *, on_error=None))]
    fn new(
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        handler: &Bound<'_, PyAny>,
        on_error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let name = match name.downcast::<PyString>() {
            Ok(s) if s.len()? > 0 => s.clone().unbind(),
            _ => {
                return Err(validation_error(
                    py,
                    format!("Listener.name must be a non-empty str, got {}", name.repr()?),
                ))
            }
        };
        if !handler.is_callable() {
            return Err(validation_error(py, format!("Listener.handler must be callable, got {}", type_name(handler))));
        }
        let on_error = match on_error {
            Some(f) if !f.is_none() => {
                if !f.is_callable() {
                    return Err(validation_error(
                        py,
                        format!("Listener.on_error must be callable or None, got {}", type_name(f)),
                    ));
                }
                Some(f.clone().unbind())
            }
            _ => None,
        };
        Listener::build(py, name, handler.clone().unbind(), on_error)
    }

    #[getter(name)]
    fn py_name(&self, py: Python<'_>) -> Py<PyString> {
        self.name.clone_ref(py)
    }

    #[getter(handler)]
    fn py_handler(&self, py: Python<'_>) -> Py<PyAny> {
        self.handler.clone_ref(py)
    }

    #[getter(on_error)]
    fn py_on_error(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.on_error.as_ref().map(|f| f.clone_ref(py))
    }

    /// Calling a listener calls its handler (so a Listener is itself a callable listener).
    fn __call__(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Ok(self.handler.bind(py).call1((event,))?.unbind())
    }

    fn __repr__(&self) -> String {
        format!("Listener(name={:?})", self.name_str)
    }
}

static NEXT_SUB: AtomicU64 = AtomicU64::new(1);

/// One subscription of a listener to a type, pattern or topic, as the core sees it.
pub struct Sub {
    pub seq: u64,
    pub id: Py<PyString>,
    pub topic: String,
    pub pattern: Option<TypePattern>,
    pub listener: Py<Listener>,
    /// A `ManagedListener` (retry policy, circuit, dead letters): asynchronous delivery calls
    /// its `attempt(event, n, topic)` and owns the waiting between attempts.
    pub managed: Option<Py<PyAny>>,
    /// The managed listener's `_core`, which runs a first attempt with no Python call.
    pub core: Option<Py<crate::managed::AttemptCore>>,
    /// The managed listener's handler is `async def`: queued deliveries run its attempts as
    /// tasks (`attempt_async`).
    pub managed_async: bool,
    pub active: AtomicBool,
    pub metrics: Arc<ListenerMetrics>,
}

impl Sub {
    pub fn new(
        py: Python<'_>,
        topic: &str,
        listener: Py<Listener>,
        managed: Option<Py<PyAny>>,
        metrics: Arc<ListenerMetrics>,
    ) -> Sub {
        let seq = NEXT_SUB.fetch_add(1, SeqCst);
        let mut buf = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf).to_string();
        let core = managed
            .as_ref()
            .and_then(|m| m.bind(py).getattr("_core").ok())
            .and_then(|c| c.downcast_into::<crate::managed::AttemptCore>().ok())
            .map(Bound::unbind);
        let managed_async = managed
            .as_ref()
            .and_then(|m| m.bind(py).getattr("_is_async").ok())
            .is_some_and(|a| a.is_truthy().unwrap_or(false));
        Sub {
            seq,
            id: PyString::new(py, &id).unbind(),
            topic: topic.to_string(),
            pattern: TypePattern::parse(topic),
            listener,
            managed,
            core,
            managed_async,
            active: AtomicBool::new(true),
            metrics,
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(SeqCst)
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match &self.pattern {
            Some(p) => p.matches(event_type),
            None => self.topic == event_type,
        }
    }

    pub fn listener_name<'a>(&'a self, py: Python<'a>) -> String {
        self.listener.bind(py).get().name().to_string()
    }

    /// Call the listener once and record the outcome; a failure comes back as a
    /// `ListenerError`. Returns (failed, error).
    /// `component` names where it ran (`emitter 'orders'`) in the error, when known.
    pub fn call(
        &self,
        py: Python<'_>,
        event: &Bound<'_, PyAny>,
        event_loop: Option<&Py<PyAny>>,
        component: Option<&dyn Fn() -> String>,
    ) -> Result<(), PyErr> {
        let listener = self.listener.bind(py).get();
        let fail = |cause: PyErr| {
            let place = component.map(|c| c());
            listener_error_in(py, place.as_deref(), listener.name(), event, cause)
        };
        if let Some(outcome) = self.call_managed(py, event) {
            return outcome.map_err(fail);
        }
        let start = stopwatch::now();
        let outcome = listener.invoke(py, event, event_loop);
        self.metrics.duration.observe_nanos(py, stopwatch::elapsed_nanos(start));
        match outcome {
            Outcome::Ok | Outcome::Handled => {
                self.metrics.success.inc(py);
                Ok(())
            }
            Outcome::Failed(cause) => {
                self.metrics.failure.inc();
                Err(fail(cause))
            }
        }
    }
}

impl Sub {
    /// A managed listener called synchronously, as `managed(event)` would run it: the first
    /// attempt in the native core, the Python policy (retries in this thread, dead letters)
    /// only after a failure. None when the core cannot take the attempt itself.
    fn call_managed(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> Option<Result<(), PyErr>> {
        let (core, managed) = (self.core.as_ref()?.get(), self.managed.as_ref()?);
        if !core.takes_first_attempt() {
            return None;
        }
        let (result, elapsed) = core.run(py, event, 1);
        self.metrics.duration.observe_nanos(py, elapsed);
        let outcome = match result {
            Ok(None) => Ok(()),
            Ok(Some(error)) => {
                managed.bind(py).call_method1("_after_first_failure", (event, error, py.None())).map(|_| ())
            }
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(()) => self.metrics.success.inc(py),
            Err(_) => self.metrics.failure.inc(),
        }
        Some(outcome)
    }
}

/// Something a `Subscription` can leave.
pub trait Unsubscribe: Send + Sync {
    fn unsubscribe(&self, seq: u64);
}

/// What `subscribe` returns.
#[pyclass(module = "nova", name = "Subscription", frozen)]
pub struct Subscription {
    pub sub: Arc<Sub>,
    pub owner: Weak<dyn Unsubscribe>,
}

#[pymethods]
impl Subscription {
    #[getter]
    fn id(&self, py: Python<'_>) -> Py<PyString> {
        self.sub.id.clone_ref(py)
    }

    /// The event type, pattern or topic subscribed to.
    #[getter]
    fn topic(&self) -> &str {
        &self.sub.topic
    }

    #[getter]
    fn listener(&self, py: Python<'_>) -> Py<Listener> {
        self.sub.listener.clone_ref(py)
    }

    #[getter]
    fn active(&self) -> bool {
        self.sub.is_active()
    }

    /// Stop receiving events (idempotent).
    fn unsubscribe(&self) {
        if let Some(owner) = self.owner.upgrade() {
            owner.unsubscribe(self.sub.seq);
        }
        self.sub.active.store(false, SeqCst);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _t: Option<Py<PyAny>>, _v: Option<Py<PyAny>>, _tb: Option<Py<PyAny>>) -> bool {
        self.unsubscribe();
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Subscription(topic={:?}, listener={:?}, active={})",
            self.sub.topic,
            self.sub.listener_name(py),
            self.sub.is_active()
        )
    }
}

/// The listeners an event type resolves to, plus that type's emit counters.
pub struct Resolved {
    pub subs: Vec<Arc<Sub>>,
    pub counters: Arc<TypeCounters>,
    /// Every subscriber is a plain `async def` listener (no policy), and there is one: an
    /// emit or publish from their loop's own thread can start their tasks itself.
    pub all_plain_async: bool,
    /// Every subscriber is an `async def` listener, managed or not, and there is one.
    pub all_async: bool,
}

impl Resolved {
    pub fn new(subs: Vec<Arc<Sub>>, counters: Arc<TypeCounters>) -> Resolved {
        let all_async = !subs.is_empty()
            && subs.iter().all(|s| if s.managed.is_some() { s.managed_async } else { s.listener.get().is_async() });
        let all_plain_async = all_async && subs.iter().all(|s| s.managed.is_none());
        Resolved { subs, counters, all_plain_async, all_async }
    }
}

/// A resolution borrowed from a memo, or one of its own.
pub enum ResolvedRef<'a> {
    Borrowed(&'a Resolved),
    Owned(Arc<Resolved>),
}

impl std::ops::Deref for ResolvedRef<'_> {
    type Target = Resolved;
    fn deref(&self) -> &Resolved {
        match self {
            ResolvedRef::Borrowed(r) => r,
            ResolvedRef::Owned(r) => r,
        }
    }
}

/// Distinct event types whose resolution is cached before the cache starts over.
const CACHE_LIMIT: usize = 10_000;

/// The last resolution `Registry::resolve_type` made: the type's str object (held, so its
/// address cannot be reused by another string), the table generation it was valid for, and
/// the result.
pub struct LastResolved {
    type_: Py<PyString>,
    generation: u64,
    resolved: Arc<Resolved>,
}

#[derive(Default)]
struct LastMemo(crate::ffi::cell::Memo<Option<LastResolved>>);

/// Subscribers of a component, in subscription order, with a per-type resolution cache.
#[derive(Default)]
pub struct Registry {
    subs: RwLock<Vec<Arc<Sub>>>,
    /// Bumped (under the cache lock) on every change, so a resolution computed from an older
    /// table is never cached.
    generation: AtomicU64,
    cache: RwLock<HashMap<String, Arc<Resolved>, FxBuildHasher>>,
    /// In front of `cache`: events of one type usually share one str object (a literal, or an
    /// interned name), so comparing addresses answers most emits without taking the cache
    /// lock or hashing the name. An `ffi::cell::Memo`: on a GIL build the GIL guards it, on a
    /// free-threaded build a lock of its own that a thread skips rather than wait for.
    last: LastMemo,
    type_counters: Mutex<HashMap<String, Arc<TypeCounters>>>,
    listener_metrics: Mutex<HashMap<String, Arc<ListenerMetrics>>>,
}

impl Registry {
    pub fn add(&self, sub: Arc<Sub>) {
        self.subs.write().push(sub);
        self.invalidate();
    }

    fn invalidate(&self) {
        let mut cache = self.cache.write();
        self.generation.fetch_add(1, SeqCst);
        cache.clear();
    }

    pub fn remove(&self, seq: u64) -> Option<Arc<Sub>> {
        let mut subs = self.subs.write();
        let pos = subs.iter().position(|s| s.seq == seq)?;
        let sub = subs.remove(pos);
        sub.active.store(false, SeqCst);
        drop(subs);
        self.invalidate();
        Some(sub)
    }

    pub fn len(&self) -> usize {
        self.subs.read().len()
    }

    /// The shared metrics of a listener name (kept after it unsubscribes, for scrapes).
    pub fn metrics_for(&self, name: &str) -> Arc<ListenerMetrics> {
        self.listener_metrics.lock().entry(name.to_string()).or_default().clone()
    }

    pub fn listener_metrics(&self) -> Vec<(String, Arc<ListenerMetrics>)> {
        let mut v: Vec<_> = self.listener_metrics.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Events accepted, all types together.
    pub fn accepted_total(&self) -> u64 {
        self.type_counters.lock().values().map(|c| c.accepted.get()).sum()
    }

    pub fn type_counters(&self) -> Vec<(String, Arc<TypeCounters>)> {
        let mut v: Vec<_> = self.type_counters.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// `resolve` for a type given as a Python str, through the `last` memo.
    #[inline]
    pub fn resolve_type(&self, py: Python<'_>, event_type: &Bound<'_, PyString>) -> Option<Arc<Resolved>> {
        // Read before resolving: a change racing with this call leaves a memo that is already
        // stale, hence never used, rather than a stale result that looks current.
        let generation = self.generation.load(SeqCst);
        if let Some(last) = self.last.0.read(py) {
            if let Some(l) = &*last {
                if l.type_.as_ptr() == event_type.as_ptr() && l.generation == generation {
                    return Some(l.resolved.clone());
                }
            }
        }
        let resolved = self.resolve(event_type.to_str().ok()?);
        let remembered =
            Some(LastResolved { type_: event_type.clone().unbind(), generation, resolved: resolved.clone() });
        let previous = self.last.0.write(py).map(|mut last| std::mem::replace(&mut *last, remembered));
        // Dropped after the memo is released: freeing the old str must not find it held.
        drop(previous);
        Some(resolved)
    }

    /// Bump one of `event_type`'s counters (`bump` must not call Python code): through the
    /// memo without taking a reference to the resolution, else as `resolve_type`.
    #[inline]
    pub fn count_type(&self, py: Python<'_>, event_type: &Bound<'_, PyString>, bump: impl FnOnce(&TypeCounters)) {
        let generation = self.generation.load(SeqCst);
        if let Some(last) = self.last.0.read(py) {
            if let Some(l) = &*last {
                if l.type_.as_ptr() == event_type.as_ptr() && l.generation == generation {
                    bump(&l.resolved.counters);
                    return;
                }
            }
        }
        if let Some(r) = self.resolve_type(py, event_type) {
            bump(&r.counters);
        }
    }

    /// The resolution of `event_type` through `memo`, a memo of the caller's own (a worker
    /// keeps one across a batch of queued events): consecutive events of one type take no
    /// reference to it, as long as the table has not changed.
    pub fn resolve_in<'m>(
        &self,
        _py: Python<'_>,
        event_type: &Bound<'_, PyString>,
        memo: &'m mut Option<LastResolved>,
    ) -> &'m Resolved {
        // Read before resolving, as in `resolve_type`.
        let generation = self.generation.load(SeqCst);
        let hit = matches!(memo, Some(l) if l.type_.as_ptr() == event_type.as_ptr() && l.generation == generation);
        if !hit {
            let resolved = match event_type.to_str() {
                Ok(t) => self.resolve(t),
                Err(_) => self.resolve(""),
            };
            *memo = Some(LastResolved { type_: event_type.clone().unbind(), generation, resolved });
        }
        &memo.as_ref().expect("just filled").resolved
    }

    pub fn resolve(&self, event_type: &str) -> Arc<Resolved> {
        if let Some(r) = self.cache.read().get(event_type) {
            return r.clone();
        }
        let generation = self.generation.load(SeqCst);
        let subs: Vec<Arc<Sub>> = self.subs.read().iter().filter(|s| s.matches(event_type)).cloned().collect();
        let counters = {
            let mut tc = self.type_counters.lock();
            if tc.len() >= CACHE_LIMIT && !tc.contains_key(event_type) {
                tc.entry("(other)".to_string()).or_default().clone()
            } else {
                tc.entry(event_type.to_string()).or_default().clone()
            }
        };
        let resolved = Arc::new(Resolved::new(subs, counters));
        let mut cache = self.cache.write();
        if self.generation.load(SeqCst) == generation {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(event_type.to_string(), resolved.clone());
        }
        resolved
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Listener>()?;
    m.add_class::<Subscription>()?;
    Ok(())
}

/// The part of a component's `_metrics()` snapshot every component has: its name, emits by
/// event type and result, and outcomes and durations by listener.
pub fn component_snapshot<'py>(
    py: Python<'py>,
    component: &str,
    types: &Registry,
    listeners: &Registry,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let d = pyo3::types::PyDict::new(py);
    d.set_item("component", component)?;
    let emitted = PyList::empty(py);
    for (t, tc) in types.type_counters() {
        for (result, n) in
            [("accepted", tc.accepted.get()), ("rejected", tc.rejected.get()), ("dropped", tc.dropped.get())]
        {
            if n > 0 {
                emitted.append((t.as_str(), result, n))?;
            }
        }
    }
    d.set_item("emitted", emitted)?;
    let processed = PyList::empty(py);
    let durations = PyList::empty(py);
    for (name, m) in listeners.listener_metrics() {
        processed.append((name.as_str(), "success", m.success.get()))?;
        processed.append((name.as_str(), "failure", m.failure.get()))?;
        let (bounds, counts, sum, count) = m.duration.snapshot(py)?;
        durations.append((name.as_str(), bounds, counts, sum, count))?;
    }
    d.set_item("processed", processed)?;
    d.set_item("durations", durations)?;
    Ok(d)
}
