//! Running one event through a component: middleware `before` hooks in order, every matching
//! listener in subscription order, then `after` hooks in reverse with the outcome.

use std::sync::atomic::{AtomicBool, Ordering::{Acquire, Release}};
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
        Ok(f) => Err(validation_error(
            py,
            format!("middleware.{name} must be callable, got {}", type_name(&f)),
        )),
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

/// Counters every dispatching component keeps.
#[derive(Default)]
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
        let _ = logger.bind(py).call_method(
            "error",
            ("%s: %s", component, err.value(py).to_string()),
            Some(&kwargs),
        );
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
    pub counters: &'a DispatchCounters,
}

/// How one asynchronous attempt of a subscriber ended.
pub enum Attempt {
    Done,
    /// Failed for good (a managed listener has already dead-lettered or logged it).
    Failed(PyErr),
    /// Try again (attempt + 1) after this many seconds.
    Retry(f64),
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
    let run = || {
        #[cfg(feature = "test-hooks")]
        crate::ffi::hooks::maybe_panic(crate::ffi::hooks::Point::Attempt);
        attempt_unguarded(py, sub, event, n, topic, event_loop, last)
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

fn attempt_unguarded(
    py: Python<'_>,
    sub: &Sub,
    event: &Bound<'_, PyAny>,
    n: u32,
    topic: Option<&str>,
    event_loop: Option<&Py<PyAny>>,
    last: bool,
) -> Attempt {
    let Some(managed) = &sub.managed else {
        return match sub.call(py, event, event_loop, None) {
            Ok(()) => Attempt::Done,
            Err(e) => Attempt::Failed(e),
        };
    };
    let r = match &sub.core {
        // The common case runs in Rust; Python's policy is asked only after a failure.
        Some(core) if n == 1 && core.get().takes_first_attempt() => {
            let (result, elapsed) = core.get().run(py, event, n);
            sub.metrics.duration.observe_nanos(py, elapsed);
            match result {
                Ok(None) => Ok(py.None().into_bound(py)),
                Ok(Some(error)) => managed.bind(py).call_method1("_after_failed_attempt", (event, n, topic, error, last)),
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
            sub.metrics
                .duration
                .observe_nanos(py, crate::metrics::stopwatch::elapsed_nanos(start));
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
}

impl Dispatch<'_> {
    /// `after(event, outcome)` of `mws` in reverse order; a failing hook is counted and logged.
    fn run_after<'py>(
        &self,
        py: Python<'py>,
        mws: &[Middleware],
        event: &Bound<'py, PyAny>,
        outcome: Option<&Bound<'py, PyAny>>,
    ) {
        for mw in mws.iter().rev() {
            if let Some(after) = &mw.after {
                if let Err(e) = crate::ffi::call::call2(after.bind(py), event, outcome) {
                    self.counters.middleware_errors.inc();
                    log_failure(py, self.component, &e);
                }
            }
        }
    }

    /// Run `event` through middleware and the listeners `resolve` picks for the (possibly
    /// replaced) event. `Err` is what a synchronous caller raises: a `MiddlewareError`, a
    /// `ListenerError`, or an `ExceptionGroup` of them.
    pub fn run<'py, R: std::ops::Deref<Target = Resolved>>(
        &self,
        py: Python<'py>,
        event: Bound<'py, PyAny>,
        resolve: impl FnOnce(&Bound<'py, PyAny>) -> R,
        mut deliver: impl FnMut(&Arc<Sub>, &Bound<'py, PyAny>) -> Option<PyErr>,
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
                        self.run_after(py, &chain[..index], &event, Some(err.value(py).as_any()));
                        return Err(err);
                    }
                }
            }
        }
        let resolved = resolve(&event);
        let mut errors = Vec::new();
        for sub in resolved.subs.iter() {
            if !sub.is_active() {
                continue;
            }
            if let Some(e) = deliver(sub, &event) {
                errors.push(e);
            }
        }
        let outcome = if errors.is_empty() {
            None
        } else {
            Some(group_errors(py, &describe_event(&event), errors))
        };
        if !chain.is_empty() {
            let value = outcome.as_ref().map(|e| e.value(py).clone().into_any());
            self.run_after(py, chain, &event, value.as_ref());
        }
        match outcome {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
