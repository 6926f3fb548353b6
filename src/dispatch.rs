//! Running one event through a component: middleware `before` hooks in order, every matching
//! listener in subscription order, then `after` hooks in reverse with the outcome.

use std::sync::atomic::{
    AtomicBool,
    Ordering::{Acquire, Release},
};
use std::sync::Arc;

use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyTuple;

use crate::errors::{describe_event, group_errors, middleware_error, type_name, validation_error};
use crate::listener::{Resolved, Sub};
use crate::metrics::{Counter, GilCounter};

/// A middleware object with its hooks looked up once.
pub struct Middleware {
    pub obj: Py<PyAny>,
    before: Option<Py<PyAny>>,
    after: Option<Py<PyAny>>,
}

/// The middleware of a component; replaced wholesale on `use`, read without locking for long.
#[derive(Default)]
pub struct Chain {
    items: RwLock<Arc<Vec<Middleware>>>,
    /// Set once the first middleware is added (none is ever removed). Most components have no
    /// middleware, and this spares each of their events the lock and the `Arc` clone of
    /// `snapshot`.
    used: AtomicBool,
}

fn hook(py: Python<'_>, obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<Py<PyAny>>> {
    match obj.getattr(name) {
        Ok(f) if f.is_none() => Ok(None),
        Ok(f) if f.is_callable() => Ok(Some(f.unbind())),
        Ok(f) => Err(validation_error(py, format!("middleware.{name} must be callable, got {}", type_name(&f)))),
        Err(_) => Ok(None),
    }
}

impl Chain {
    pub fn add(&self, py: Python<'_>, items: &Bound<'_, PyTuple>) -> PyResult<()> {
        let mut added = Vec::new();
        for obj in items.iter() {
            let before = hook(py, &obj, "before")?;
            let after = hook(py, &obj, "after")?;
            if before.is_none() && after.is_none() {
                return Err(validation_error(
                    py,
                    format!(
                        "middleware must have a before(event) or after(event, error) method, got {}; \
                         nova.middleware(before=..., after=...) builds one from functions",
                        type_name(&obj)
                    ),
                ));
            }
            added.push(Middleware { obj: obj.unbind(), before, after });
        }
        let mut guard = self.items.write();
        let mut all: Vec<Middleware> = guard
            .iter()
            .map(|m| Middleware {
                obj: m.obj.clone_ref(py),
                before: m.before.as_ref().map(|f| f.clone_ref(py)),
                after: m.after.as_ref().map(|f| f.clone_ref(py)),
            })
            .collect();
        all.extend(added);
        *guard = Arc::new(all);
        self.used.store(true, Release);
        Ok(())
    }

    /// The middleware now, or `None` when there has never been any.
    pub fn snapshot(&self) -> Option<Arc<Vec<Middleware>>> {
        if self.used.load(Acquire) {
            Some(self.items.read().clone())
        } else {
            None
        }
    }
}

/// Counters every dispatching component keeps. Bumped by workers on every delivery: on cache
/// lines of their own (see `TypeCounters`).
#[derive(Default)]
#[repr(align(128))]
pub struct DispatchCounters {
    pub processed: GilCounter,
    pub failed: Counter,
    pub middleware_errors: Counter,
}

/// Log a failure nobody will see raised (asynchronous delivery) on the `nova` logger.
pub fn log_failure(py: Python<'_>, component: &str, err: &PyErr) {
    static LOGGER: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    let logger = LOGGER.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("logging")?.getattr("getLogger")?.call1(("nova",))?.unbind())
    });
    if let Ok(logger) = logger {
        let kwargs = pyo3::types::PyDict::new(py);
        let _ = kwargs.set_item("exc_info", err.value(py));
        let _ = logger.bind(py).call_method("error", ("%s: %s", component, err.value(py).to_string()), Some(&kwargs));
    }
}

/// Log a warning on the `nova` logger.
pub fn warn(py: Python<'_>, msg: &str) {
    if let Ok(logger) = py.import("logging").and_then(|l| l.getattr("getLogger")?.call1(("nova",))) {
        let _ = logger.call_method1("warning", (msg,));
    }
}

pub struct Dispatch<'a> {
    pub component: &'a str,
    pub chain: &'a Chain,
    pub counters: &'a Arc<DispatchCounters>,
}

/// How one asynchronous attempt of a subscriber ended.
pub enum Attempt {
    Done,
    /// Failed for good (a managed listener has already dead-lettered or logged it).
    Failed(PyErr),
    /// Try again (attempt + 1) after this many seconds.
    Retry(f64),
    /// An `async def` listener's coroutine, to run as a task on its loop (`tasks::spawn`);
    /// the task's end settles the delivery. `true`: a managed listener's `attempt_async`,
    /// whose result is `attempt`'s (None, a retry delay, or the final error).
    Async(Py<PyAny>, bool),
}

/// One asynchronous attempt: a managed listener runs its policy's `attempt`, a plain one is
/// called once. Counts the outcome in the subscriber's metrics. A Rust panic on the way (a bug
/// in Nova) fails the attempt for good with a `ListenerError` whose cause says an internal
/// error occurred; the worker goes on.
/// `last`: this attempt is the only one, whatever the listener's retry policy (a topic whose
/// delivery mode is AT_MOST_ONCE).
pub fn attempt(
    py: Python<'_>,
    sub: &Sub,
    event: &Bound<'_, PyAny>,
    n: u32,
    topic: Option<&str>,
    event_loop: Option<&Py<PyAny>>,
    last: bool,
) -> Attempt {
    // The body runs in a closure so that a panic in it becomes this delivery's failure.
    let run = || -> Attempt {
        #[cfg(feature = "test-hooks")]
        crate::ffi::hooks::maybe_panic(crate::ffi::hooks::Point::Attempt);
        let Some(managed) = &sub.managed else {
            let listener = sub.listener.bind(py).get();
            if listener.is_async() {
                // The coroutine is made here, in the event's context; it runs as a task.
                return match crate::ffi::call::call1(listener.handler(py), event) {
                    Ok(coro) => Attempt::Async(coro.unbind(), false),
                    Err(e) => {
                        sub.metrics.failure.inc();
                        Attempt::Failed(crate::errors::listener_error(py, listener.name(), event, e))
                    }
                };
            }
            return match sub.call(py, event, event_loop, None) {
                Ok(()) => Attempt::Done,
                Err(e) => Attempt::Failed(e),
            };
        };
        if sub.managed_async {
            let coro = if last {
                managed.bind(py).call_method1("attempt_async", (event, n, topic, last))
            } else {
                managed.bind(py).call_method1("attempt_async", (event, n, topic))
            };
            return match coro {
                Ok(coro) => Attempt::Async(coro.unbind(), true),
                Err(e) => {
                    sub.metrics.failure.inc();
                    Attempt::Failed(crate::errors::listener_error(py, &sub.listener_name(py), event, e))
                }
            };
        }
        let r = match &sub.core {
            // The common case runs in Rust; Python's policy is asked only after a failure.
            Some(core) if n == 1 && core.get().takes_first_attempt() => {
                let (result, elapsed) = core.get().run(py, event, n);
                sub.metrics.duration.observe_nanos(py, elapsed);
                match result {
                    Ok(None) => Ok(py.None().into_bound(py)),
                    Ok(Some(error)) => {
                        managed.bind(py).call_method1("_after_failed_attempt", (event, n, topic, error, last))
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                let start = crate::metrics::stopwatch::now();
                // `last` only when set: a managed listener of the user's own may take three arguments.
                let r = if last {
                    managed.bind(py).call_method1("attempt", (event, n, topic, last))
                } else {
                    managed.bind(py).call_method1("attempt", (event, n, topic))
                };
                sub.metrics.duration.observe_nanos(py, crate::metrics::stopwatch::elapsed_nanos(start));
                r
            }
        };
        match r {
            Ok(v) if v.is_none() => {
                sub.metrics.success.inc(py);
                Attempt::Done
            }
            Ok(v) => match v.extract::<f64>() {
                Ok(d) => Attempt::Retry(d.max(0.0)),
                Err(e) => {
                    sub.metrics.failure.inc();
                    Attempt::Failed(e)
                }
            },
            Err(e) => {
                sub.metrics.failure.inc();
                Attempt::Failed(crate::errors::listener_error(py, &sub.listener_name(py), event, e))
            }
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(outcome) => outcome,
        Err(payload) => {
            sub.metrics.failure.inc();
            let cause = crate::errors::internal_error(
                py,
                &format!("listener {} with {}", sub.listener_name(py), describe_event(event)),
                &crate::ffi::panic_message(&payload),
            );
            Attempt::Failed(crate::errors::listener_error(py, &sub.listener_name(py), event, cause))
        }
    }
}

/// How one subscriber's delivery of an event went, as far as its dispatch can tell.
pub enum Delivery {
    Done,
    /// Failed: the error goes to the middleware's `after` and to the caller (raised by a sync
    /// emit, logged by a worker).
    Failed(PyErr),
    /// Failed and already reported (a managed listener dead-lettered or logged it): the error
    /// goes to `after` only.
    Reported(PyErr),
    /// Not settled yet (a retry is scheduled, or the event is held back behind one): whoever
    /// settles it calls `PendingAfter::settle`, taken from `Later::defer`.
    Pending,
}

/// `after(event, outcome)` of `mws` in reverse order; a failing hook is counted and logged.
fn run_after<'py>(
    py: Python<'py>,
    component: &str,
    counters: &DispatchCounters,
    mws: &[Middleware],
    event: &Bound<'py, PyAny>,
    outcome: Option<&Bound<'py, PyAny>>,
) {
    for mw in mws.iter().rev() {
        if let Some(after) = &mw.after {
            if let Err(e) = crate::ffi::call::call2(after.bind(py), event, outcome) {
                counters.middleware_errors.inc();
                log_failure(py, component, &e);
            }
        }
    }
}

/// The middleware `after` hooks of one event some of whose subscribers settle after its
/// dispatch returned (a retry, an event held back behind one): they run once, when the last
/// one settles, with the final outcome (`None`, a `ListenerError`, or an `ExceptionGroup`).
pub struct PendingAfter {
    component: String,
    chain: Arc<Vec<Middleware>>,
    counters: Arc<DispatchCounters>,
    state: parking_lot::Mutex<PendingState>,
}

struct PendingState {
    event: Option<Py<PyAny>>,
    /// Subscribers not settled yet.
    pending: usize,
    /// The dispatch itself has returned (its own outcomes are in `errors`).
    dispatched: bool,
    errors: Vec<PyErr>,
}

impl PendingAfter {
    /// One deferred subscriber has its final outcome (`None`: delivered).
    pub fn settle(&self, py: Python<'_>, error: Option<PyErr>) {
        let ready = {
            let mut s = self.state.lock();
            s.errors.extend(error);
            s.pending -= 1;
            s.pending == 0 && s.dispatched
        };
        if ready {
            self.run(py);
        }
    }

    fn dispatched(&self, py: Python<'_>, errors: Vec<PyErr>) {
        let ready = {
            let mut s = self.state.lock();
            s.errors.extend(errors);
            s.dispatched = true;
            s.pending == 0
        };
        if ready {
            self.run(py);
        }
    }

    fn run(&self, py: Python<'_>) {
        let (event, errors) = {
            let mut s = self.state.lock();
            (s.event.take(), std::mem::take(&mut s.errors))
        };
        let Some(event) = event else { return };
        let event = event.into_bound(py);
        let outcome = (!errors.is_empty()).then(|| group_errors(py, &describe_event(&event), errors));
        let value = outcome.as_ref().map(|e| e.value(py).clone().into_any());
        run_after(py, &self.component, &self.counters, &self.chain, &event, value.as_ref());
    }
}

/// Hands a subscriber that settles later the event's `PendingAfter` (made on first need);
/// nothing when the component has no middleware to tell.
pub struct Later<'a, 'py> {
    component: &'a str,
    counters: &'a Arc<DispatchCounters>,
    chain: Option<&'a Arc<Vec<Middleware>>>,
    event: &'a Bound<'py, PyAny>,
    made: std::cell::RefCell<Option<Arc<PendingAfter>>>,
}

impl Later<'_, '_> {
    /// Count one more subscriber that settles later; settle it through what this returns.
    pub fn defer(&self) -> Option<Arc<PendingAfter>> {
        let chain = self.chain?;
        let mut made = self.made.borrow_mut();
        let pending = made.get_or_insert_with(|| {
            Arc::new(PendingAfter {
                component: self.component.to_string(),
                chain: chain.clone(),
                counters: self.counters.clone(),
                state: parking_lot::Mutex::new(PendingState {
                    event: Some(self.event.clone().unbind()),
                    pending: 0,
                    dispatched: false,
                    errors: Vec::new(),
                }),
            })
        });
        pending.state.lock().pending += 1;
        Some(pending.clone())
    }
}

impl Dispatch<'_> {
    /// Run `event` through middleware and the listeners `resolve` picks for the (possibly
    /// replaced) event. `Err` is what a synchronous caller raises: a `MiddlewareError`, a
    /// `ListenerError`, or an `ExceptionGroup` of them. The `after` hooks run once per event
    /// with its final outcome: now, or when the last subscriber that `deliver` left pending
    /// settles.
    pub fn run<'py, R: std::ops::Deref<Target = Resolved>>(
        &self,
        py: Python<'py>,
        event: Bound<'py, PyAny>,
        resolve: impl FnOnce(&Bound<'py, PyAny>) -> R,
        mut deliver: impl FnMut(&Arc<Sub>, &Bound<'py, PyAny>, &Later<'_, 'py>) -> Delivery,
    ) -> Result<(), PyErr> {
        let snapshot = self.chain.snapshot();
        let chain: &[Middleware] = snapshot.as_deref().map_or(&[], Vec::as_slice);
        let mut event = event;
        for (index, mw) in chain.iter().enumerate() {
            if let Some(before) = &mw.before {
                match crate::ffi::call::call1(before.bind(py), &event) {
                    Ok(r) if r.is_none() => {}
                    Ok(r) if crate::event::as_event(&r).is_some() => event = r,
                    Ok(r) => {
                        self.counters.middleware_errors.inc();
                        return Err(middleware_error(
                            py,
                            format!(
                                "{}: middleware {} returned {} from before(); return an Event or None",
                                self.component,
                                type_name(mw.obj.bind(py)),
                                type_name(&r)
                            ),
                        ));
                    }
                    Err(cause) => {
                        self.counters.middleware_errors.inc();
                        let err = middleware_error(
                            py,
                            format!(
                                "{}: middleware {} rejected {}: {}",
                                self.component,
                                type_name(mw.obj.bind(py)),
                                describe_event(&event),
                                cause.value(py)
                            ),
                        );
                        err.set_cause(py, Some(cause));
                        // The middleware whose before() already ran still get their after().
                        let value = err.value(py).clone().into_any();
                        run_after(py, self.component, self.counters, &chain[..index], &event, Some(&value));
                        return Err(err);
                    }
                }
            }
        }
        let resolved = resolve(&event);
        let later = Later {
            component: self.component,
            counters: self.counters,
            chain: snapshot.as_ref().filter(|c| !c.is_empty()),
            event: &event,
            made: std::cell::RefCell::new(None),
        };
        let mut raised = Vec::new();
        let mut reported = Vec::new();
        for sub in resolved.subs.iter() {
            if !sub.is_active() {
                continue;
            }
            match deliver(sub, &event, &later) {
                Delivery::Done | Delivery::Pending => {}
                Delivery::Failed(e) => raised.push(e),
                Delivery::Reported(e) => reported.push(e),
            }
        }
        let deferred = later.made.into_inner();
        if chain.is_empty() {
            return match raised.is_empty() {
                true => Ok(()),
                false => Err(group_errors(py, &describe_event(&event), raised)),
            };
        }
        // The after hooks see every failure; the caller only those not reported already.
        let for_after: Vec<PyErr> = raised.iter().map(|e| e.clone_ref(py)).chain(reported).collect();
        match deferred {
            Some(pending) => pending.dispatched(py, for_after),
            None => {
                let outcome = (!for_after.is_empty()).then(|| group_errors(py, &describe_event(&event), for_after));
                let value = outcome.as_ref().map(|e| e.value(py).clone().into_any());
                run_after(py, self.component, self.counters, chain, &event, value.as_ref());
            }
        }
        match raised.is_empty() {
            true => Ok(()),
            false => Err(group_errors(py, &describe_event(&event), raised)),
        }
    }
}
