//! `async def` listeners of queued deliveries run as tasks on their event loop: the worker
//! hands the coroutine over (`nova._aio.submit`, a batch per loop wake-up) and goes on; when
//! the task ends, [`TaskDone`] settles the delivery as a returning listener call would have:
//! metrics, `on_error`, counts, the log line, the middleware's `after`, and (on a bus) the
//! release of the partition's later events for that subscriber, which waited to keep order.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;

use crate::dispatch::{log_failure, DispatchCounters, PendingAfter};
use crate::listener::Sub;
use crate::metrics::stopwatch;
use crate::retry::{FollowUp, Retries};

/// A managed listener's attempt running as a task: what a retry needs.
pub struct RetryPlan {
    pub attempt: u32,
    pub topic: Option<String>,
    pub context: Option<Py<PyAny>>,
}

/// Everything a task's end needs to settle its delivery.
pub struct TaskEnd {
    /// Set for a managed listener's `attempt_async` (its result says done, retry or failed).
    pub plan: Option<RetryPlan>,
    pub sub: Arc<Sub>,
    pub event: Py<PyAny>,
    pub component: Arc<str>,
    pub counters: Arc<DispatchCounters>,
    pub retries: Arc<Retries>,
    pub after: Option<Arc<PendingAfter>>,
    pub follow: Option<Arc<dyn FollowUp>>,
}

impl TaskEnd {
    /// A plain listener's task for `event` (no retry plan, no pending `after`, nothing held
    /// back); set those fields where they apply.
    pub fn new(
        sub: &Arc<Sub>,
        event: &Bound<'_, PyAny>,
        counters: &Arc<DispatchCounters>,
        retries: &Arc<Retries>,
    ) -> TaskEnd {
        TaskEnd {
            plan: None,
            sub: sub.clone(),
            event: event.clone().unbind(),
            component: retries.label.clone(),
            counters: counters.clone(),
            retries: retries.clone(),
            after: None,
            follow: None,
        }
    }
}

/// Told how one listener task ended (`nova._aio.guarded` calls `finish` on the loop's thread,
/// in the task's last step); settles once.
#[pyclass(module = "nova._core", frozen)]
pub struct TaskDone {
    end: Mutex<Option<(TaskEnd, u64)>>,
    /// The component's name, kept for the log line once `end` is taken.
    component: Mutex<Option<Arc<str>>>,
}

/// `nova._aio.submit` and `nova._aio.guarded`.
fn aio(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>)> {
    static AIO: GILOnceCell<(Py<PyAny>, Py<PyAny>)> = GILOnceCell::new();
    AIO.get_or_try_init(py, || {
        let m = py.import("nova._aio")?;
        Ok::<_, PyErr>((m.getattr("submit")?.unbind(), m.getattr("guarded")?.unbind()))
    })
}

/// Whether `event_loop` is the loop running on this thread (`asyncio._get_running_loop()`).
pub fn runs_here(py: Python<'_>, event_loop: &Py<PyAny>) -> bool {
    static RUNNING: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    let Ok(running) =
        RUNNING.get_or_try_init(py, || Ok::<_, PyErr>(py.import("asyncio")?.getattr("_get_running_loop")?.unbind()))
    else {
        return false;
    };
    running.bind(py).call0().is_ok_and(|l| l.is(event_loop))
}

/// Hand `coro` (the listener's coroutine for `end.event`) to `event_loop` (or Nova's own) as a
/// task; the delivery is settled when it ends. Counted as in flight for flush and shutdown
/// until then.
/// `here`: the caller knows `event_loop` runs on this thread (the task is created directly).
pub fn spawn(py: Python<'_>, coro: Bound<'_, PyAny>, event_loop: Option<&Py<PyAny>>, end: TaskEnd, here: bool) {
    let retries = end.retries.clone();
    retries.begin_task();
    let done = match Py::new(py, TaskDone::new(end)) {
        Ok(d) => d,
        Err(e) => {
            retries.end_task();
            let _ = coro.call_method0("close");
            log_failure(py, "nova", &e);
            return;
        }
    };
    let handed = aio(py).and_then(|(submit, guarded)| match event_loop.filter(|_| here) {
        // On the loop's own thread: create the task now, nothing to hand over.
        Some(l) => {
            let task = guarded.bind(py).call1((&coro, done.bind(py)))?;
            l.bind(py).call_method1(pyo3::intern!(py, "create_task"), (task,)).map(drop)
        }
        None => submit.bind(py).call1((event_loop.map(|l| l.bind(py)), &coro, done.bind(py))).map(drop),
    });
    if let Err(e) = handed {
        // Never reached its loop: settle it now, as failed.
        let _ = coro.call_method0("close");
        done.get().settle(py, Some(e), None);
    }
}

impl TaskDone {
    pub fn new(end: TaskEnd) -> TaskDone {
        TaskDone { end: Mutex::new(Some((end, stopwatch::now()))), component: Mutex::new(None) }
    }

    fn settle(&self, py: Python<'_>, error: Option<PyErr>, result: Option<&Bound<'_, PyAny>>) {
        let managed = self.end.lock().as_ref().is_some_and(|(e, _)| e.plan.is_some());
        if let Some(err) = self.settle_quietly(py, error, result) {
            // A managed listener has dead-lettered or logged its final failure itself.
            if !managed {
                let component = self.component.lock().take();
                log_failure(py, component.as_deref().unwrap_or("nova"), &err);
            }
        }
    }

    /// Settle without logging the failure: the `ListenerError` to raise to the caller, if
    /// the listener failed.
    fn settle_quietly(&self, py: Python<'_>, error: Option<PyErr>, result: Option<&Bound<'_, PyAny>>) -> Option<PyErr> {
        let (end, started) = self.end.lock().take()?;
        *self.component.lock() = Some(end.component.clone());
        let sub = &end.sub;
        let event = end.event.bind(py);
        let listener = sub.listener.bind(py).get();
        sub.metrics.duration.observe_nanos(py, stopwatch::elapsed_nanos(started));
        if let (Some(plan), None) = (&end.plan, &error) {
            // attempt_async returned a delay: wait for the next attempt, still pending.
            if let Some(delay) = result.filter(|r| !r.is_none()).and_then(|r| r.extract::<f64>().ok()) {
                end.retries.schedule(
                    py,
                    sub.clone(),
                    event,
                    plan.context.as_ref(),
                    plan.attempt + 1,
                    plan.topic.as_deref(),
                    delay.max(0.0),
                    end.follow.clone(),
                    end.after.clone(),
                );
                end.retries.end_task();
                return None;
            }
        }
        // A managed listener's on_error ran inside its attempt.
        let on_error = if end.plan.is_some() { None } else { listener.on_error() };
        let error = match (error, on_error) {
            (Some(err), Some(on_error)) => {
                crate::ffi::call::call2(on_error.bind(py), event, Some(err.value(py).as_any())).err()
            }
            (error, _) => error,
        };
        end.counters.processed.inc(py);
        let ok = error.is_none();
        let failure = error.map(|cause| {
            sub.metrics.failure.inc();
            end.counters.failed.inc();
            crate::errors::listener_error(py, listener.name(), event, cause)
        });
        if ok {
            sub.metrics.success.inc(py);
        }
        if let Some(after) = &end.after {
            after.settle(py, failure.as_ref().map(|e| e.clone_ref(py)));
        }
        if let Some(follow) = &end.follow {
            follow.finished(py, sub, event, ok);
        }
        end.retries.end_task();
        failure
    }
}

impl Drop for TaskDone {
    /// Dropped without being told how its task ended (the task never ran to its end): it no
    /// longer counts as in flight, so nothing waits for it for ever.
    fn drop(&mut self) {
        if let Some((end, _)) = self.end.get_mut().take() {
            end.retries.end_task();
        }
    }
}

#[pymethods]
impl TaskDone {
    /// `finish(error)`: the listener's coroutine returned (`None`) or raised `error` (a
    /// cancellation included), or never ran (its loop was closed).
    #[pyo3(signature = (error, result=None))]
    fn finish(&self, py: Python<'_>, error: Option<Bound<'_, PyAny>>, result: Option<Bound<'_, PyAny>>) {
        let error = error.map(|e| {
            if e.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>() {
                crate::errors::nova_err(
                    py,
                    "ListenerError",
                    "the listener's task was cancelled before it finished; the event was not delivered",
                )
            } else {
                PyErr::from_value(e)
            }
        });
        self.settle(py, error, result.as_ref());
    }

    /// `returned(result)`: the listener's coroutine returned `result` (the common end; one
    /// positional argument, the cheapest call).
    fn returned(&self, py: Python<'_>, result: Bound<'_, PyAny>) {
        self.settle(py, None, Some(&result));
    }

    /// `finish` for a caller that raises the failure itself (`aemit`): returns the
    /// `ListenerError` (or None) instead of logging it.
    fn finish_raising(&self, py: Python<'_>, error: Option<Bound<'_, PyAny>>) -> Option<PyObject> {
        let error = error.map(PyErr::from_value);
        self.settle_quietly(py, error, None).map(|e| e.into_value(py).into_any())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TaskDone>()
}
