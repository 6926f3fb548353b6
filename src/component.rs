//! Pieces every component (emitter, bus) shares: argument parsing of policies, the event
//! check at the door, context capture, and the shutdown report.

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::{describe_event, type_name, validation_error};
use crate::ffi::context::{copy_current, Bindings};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnFull {
    Raise,
    Block,
    DropNewest,
    DropOldest,
}

impl OnFull {
    /// From `nova.OnFull` (or its string value); `None` means RAISE.
    pub fn parse(py: Python<'_>, field: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<OnFull> {
        let Some(value) = value.filter(|v| !v.is_none()) else {
            return Ok(OnFull::Raise);
        };
        let raw = value.getattr("value").unwrap_or_else(|_| value.clone());
        let text: String = raw.extract().unwrap_or_default();
        match text.as_str() {
            "raise" => Ok(OnFull::Raise),
            "block" => Ok(OnFull::Block),
            "drop_newest" => Ok(OnFull::DropNewest),
            "drop_oldest" => Ok(OnFull::DropOldest),
            _ => Err(validation_error(
                py,
                format!(
                    "{field} must be a nova.OnFull (RAISE, BLOCK, DROP_NEWEST, DROP_OLDEST), got {}",
                    value.repr()?
                ),
            )),
        }
    }
}

/// A positive integer argument, with an error naming the field.
pub fn positive(py: Python<'_>, field: &str, value: i64) -> PyResult<usize> {
    if value < 1 {
        Err(validation_error(py, format!("{field} must be a positive integer, got {value}")))
    } else {
        Ok(value as usize)
    }
}

/// Documented upper limits of sizes that are allocated up front (docs/bus.md, "Limits"): a
/// queue's slots, a topic's partitions (and all its slots together), a pool's threads.
pub const MAX_BUFFER_SIZE: usize = 1 << 22;
pub const MAX_PARTITIONS: usize = 4096;
pub const MAX_TOPIC_SLOTS: usize = 1 << 24;
pub const MAX_WORKERS: usize = 1024;

/// A positive integer argument no larger than `max`, with an error naming the field and the
/// limit.
pub fn bounded(py: Python<'_>, field: &str, value: i64, max: usize) -> PyResult<usize> {
    let n = positive(py, field, value)?;
    if n > max {
        return Err(validation_error(py, format!("{field} must be at most {max}, got {value}")));
    }
    Ok(n)
}

/// Check that `obj` is a `nova.Event` and run the component's validator on it.
#[inline]
pub fn check_event(
    py: Python<'_>,
    component: &str,
    obj: &Bound<'_, PyAny>,
    validator: Option<&Py<PyAny>>,
) -> PyResult<()> {
    if crate::event::as_event(obj).is_none() {
        return Err(validation_error(
            py,
            format!(
                "{component}: expected a nova.Event, got {}; wrap the payload as nova.Event(type, data)",
                type_name(obj)
            ),
        ));
    }
    if let Some(v) = validator {
        if let Err(cause) = v.bind(py).call1((obj,)) {
            let err = validation_error(
                py,
                format!("{component}: validator rejected {}: {}", describe_event(obj), cause.value(py)),
            );
            err.set_cause(py, Some(cause));
            return Err(err);
        }
    }
    Ok(())
}

/// The emitting thread's context for a queued event. Consecutive emits from a context that
/// binds the same variables to the very same objects share one snapshot, so the queue does not
/// hold a new GC-tracked object per event (and a worker can reuse its entered copy). Reuse is by
/// identity only: a listener never sees another emit's objects, however equal they compare.
/// The memo is an `ffi::cell::Memo`: a shortcut that a thread skips rather than wait for.
pub struct ContextCapture {
    /// The last snapshot handed out, with what it binds (read once, when it was captured).
    last: crate::ffi::cell::Memo<Option<(Py<PyAny>, Bindings)>>,
}

impl Default for ContextCapture {
    fn default() -> Self {
        ContextCapture { last: crate::ffi::cell::Memo::new(None) }
    }
}

impl ContextCapture {
    pub fn capture(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let current = copy_current(py)?;
        // The check runs no Python code, so it may run under the memo's borrow; freeing the
        // old snapshot may (a finaliser, which could emit again on this thread), so that
        // happens after the borrow ends.
        let reused = self.last.read(py).and_then(|last| match &*last {
            Some((snapshot, binds)) if binds.held_by(py, &current) => Some(snapshot.clone_ref(py)),
            _ => None,
        });
        if let Some(snapshot) = reused {
            return Ok(snapshot);
        }
        if let Ok(binds) = Bindings::of(py, &current) {
            let old = self.last.write(py).map(|mut last| last.replace((current.clone_ref(py), binds)));
            drop(old);
        }
        Ok(current)
    }

    /// Forget the last snapshot (at shutdown), so that what the last emit's context held is
    /// not kept alive for as long as the component object lives.
    pub fn clear(&self, py: Python<'_>) {
        let old = self.last.write(py).and_then(|mut last| last.take());
        drop(old);
    }
}

/// The loop async listeners run on: the one given, else the one running here, else `None`
/// (Nova's private loop thread, started on first need).
pub fn pick_loop(py: Python<'_>, given: Option<Py<PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    if let Some(l) = given.filter(|l| !l.is_none(py)) {
        return Ok(Some(l));
    }
    match py.import("asyncio")?.getattr("get_running_loop")?.call0() {
        Ok(l) => Ok(Some(l.unbind())),
        Err(_) => Ok(None),
    }
}

/// `nova.ShutdownReport(drained, undelivered, in_flight)`.
pub fn shutdown_report<'py>(
    py: Python<'py>,
    drained: u64,
    undelivered: Vec<Py<PyAny>>,
    in_flight: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let list = PyList::new(py, undelivered)?;
    py.import("nova._types")?.getattr("ShutdownReport")?.call1((drained, list, in_flight))
}

/// How long to wait before looking again, at most `step`, for a wait that ends at `deadline`
/// (None: never); None once the deadline has passed.
pub fn next_wait(deadline: Option<std::time::Instant>, step: std::time::Duration) -> Option<std::time::Duration> {
    match deadline {
        Some(d) => {
            let left = d.saturating_duration_since(std::time::Instant::now());
            (!left.is_zero()).then(|| left.min(step))
        }
        None => Some(step),
    }
}

/// A timeout in seconds to a deadline: `None` and `inf` mean no deadline (wait for ever), zero
/// or less means now, and a value too far away to represent is no deadline either. NaN is a
/// `ValidationError` naming `field` (it used to read as zero).
pub fn deadline(py: Python<'_>, field: &str, timeout: Option<f64>) -> PyResult<Option<std::time::Instant>> {
    let Some(t) = timeout else { return Ok(None) };
    if t.is_nan() {
        return Err(validation_error(
            py,
            format!("{field} must be a number of seconds, or None (or float('inf')) to wait without a limit; got nan"),
        ));
    }
    let now = std::time::Instant::now();
    if t <= 0.0 {
        return Ok(Some(now));
    }
    Ok(std::time::Duration::try_from_secs_f64(t).ok().and_then(|d| now.checked_add(d)))
}

/// A component dropped without `shutdown()` with `discarded` events still queued: they are lost,
/// so say so the way Python does for an unclosed file (a `ResourceWarning`) and on the `nova`
/// logger. Runs in the component's deallocation; a failure to warn is ignored (the interpreter
/// may be finalising).
pub fn warn_unclosed(py: Python<'_>, what: &str, discarded: usize) {
    let msg = format!(
        "{what} was garbage-collected without shutdown() and discarded {discarded} queued event(s); \
         call shutdown() (or use it as a context manager) to deliver or report them"
    );
    if let Ok(warnings) = py.import("warnings") {
        let category = py.get_type::<pyo3::exceptions::PyResourceWarning>();
        if warnings.call_method1("warn", (&msg, category, 2)).is_err() {
            // A filter turned the warning into an error: nothing can raise from a destructor.
            let _ = PyErr::take(py);
        }
    }
    crate::dispatch::warn(py, &msg);
}
