//! `async def` listeners of queued deliveries run as tasks on their event loop: the worker
//! hands the coroutine over (`nova._aio.submit`, a batch per loop wake-up) and goes on; when
//! the task ends, [`ListenerRun`] settles the delivery as a returning listener call would have:
//! metrics, `on_error`, counts, the log line, the middleware's `after`, and (on a bus) the
//! release of the partition's later events for that subscriber, which waited to keep order.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyTuple;

use crate::dispatch::{log_failure, DispatchCounters, PendingAfter};
use crate::listener::Sub;
use crate::metrics::stopwatch;

/// Told when a subscriber's deferred event (retried, or in a task) is finished (success or
/// final failure), so an ordered partition can release the events it held back for that
/// subscriber.
pub trait FollowUp: Send + Sync {
    fn finished(&self, py: Python<'_>, sub: &Arc<Sub>, event: &Bound<'_, PyAny>, ok: bool);
}

/// What a listener task needs from the component that started it (its retry queue,
/// `retry::Retries`): in-flight counting, the table a shutdown cancels from, and a later
/// attempt when a managed listener's attempt asks for one.
pub trait TaskHome: Send + Sync {
    /// The component's name, for log lines.
    fn label(&self) -> Arc<str>;
    /// A task was handed to its loop (counted in flight until `end_task`).
    fn begin_task(&self);
    /// A task has ended and its delivery is settled (or handed back).
    fn end_task(&self);
    /// Put `run` in the live table a shutdown cancels from; its key.
    fn track(&self, run: Py<ListenerRun>) -> u64;
    /// Take the run with `key` out of the live table.
    fn untrack(&self, key: u64);
    /// `next`'s attempt after its delay.
    fn retry_later(&self, py: Python<'_>, next: NextAttempt<'_, '_>);
}

/// A delivery's next attempt: attempt `attempt` of `event` for `sub`, `delay` seconds from
/// now, inside `context`; `follow` is told when the delivery is finally settled, and
/// `after` holds the event's middleware hooks waiting for that outcome.
pub struct NextAttempt<'a, 'py> {
    pub sub: Arc<Sub>,
    pub event: &'a Bound<'py, PyAny>,
    pub context: Option<&'a Py<PyAny>>,
    pub attempt: u32,
    pub topic: Option<&'a str>,
    pub delay: f64,
    pub follow: Option<Arc<dyn FollowUp>>,
    pub after: Option<Arc<PendingAfter>>,
}

/// Which attempt of a delivery this is, on which topic, in which context: what its next
/// attempt needs (a managed listener's attempt running as a task, or waiting for a retry).
pub struct RetryPlan {
    pub attempt: u32,
    pub topic: Option<String>,
    pub context: Option<Py<PyAny>>,
}

impl RetryPlan {
    pub fn clone_ref(&self, py: Python<'_>) -> RetryPlan {
        RetryPlan {
            attempt: self.attempt,
            topic: self.topic.clone(),
            context: self.context.as_ref().map(|c| c.clone_ref(py)),
        }
    }

    /// The attempt after this one, `delay` seconds from now.
    pub fn next<'a, 'py>(
        &'a self,
        sub: &Arc<Sub>,
        event: &'a Bound<'py, PyAny>,
        delay: f64,
        follow: Option<Arc<dyn FollowUp>>,
        after: Option<Arc<PendingAfter>>,
    ) -> NextAttempt<'a, 'py> {
        NextAttempt {
            sub: sub.clone(),
            event,
            context: self.context.as_ref(),
            attempt: self.attempt + 1,
            topic: self.topic.as_deref(),
            delay,
            follow,
            after,
        }
    }
}

/// Everything a task's end needs to settle its delivery.
pub struct TaskEnd {
    /// Set for a managed listener's `attempt_async` (its result says done, retry or failed).
    pub plan: Option<RetryPlan>,
    pub sub: Arc<Sub>,
    pub event: Py<PyAny>,
    pub component: Arc<str>,
    pub counters: Arc<DispatchCounters>,
    pub retries: Arc<dyn TaskHome>,
    pub after: Option<Arc<PendingAfter>>,
    pub follow: Option<Arc<dyn FollowUp>>,
}

impl TaskEnd {
    /// A plain listener's task for `event` (no retry plan, no pending `after`, nothing held
    /// back); set those fields where they apply.
    pub fn new<H: TaskHome + 'static>(
        sub: &Arc<Sub>,
        event: &Bound<'_, PyAny>,
        counters: &Arc<DispatchCounters>,
        home: &Arc<H>,
    ) -> TaskEnd {
        TaskEnd {
            plan: None,
            sub: sub.clone(),
            event: event.clone().unbind(),
            component: home.label(),
            counters: counters.clone(),
            retries: home.clone(),
            after: None,
            follow: None,
        }
    }
}

/// One run of an `async def` listener for one event, as its task runs it: awaiting it steps
/// the listener's coroutine (passing through what it yields), and its end settles the
/// delivery once, in the task's last step (no done-callback round through the loop).
/// A listener's failure is settled and ends the task quietly; a cancellation is settled,
/// then propagates, so the task ends cancelled.
#[pyclass(module = "nova._core", frozen)]
pub struct ListenerRun {
    /// The listener's coroutine; None when the caller awaits it itself (`aemit`) and only
    /// reports its end (`finish_raising`).
    coro: Option<Py<PyAny>>,
    end: Mutex<Option<(TaskEnd, u64)>>,
    /// The component's name, kept for the log line once `end` is taken.
    component: Mutex<Option<Arc<str>>>,
    /// A weak reference to the task running it, once created: what a shutdown's deadline
    /// cancels. Weak: the task refers to this run, and a task whose loop is dropped must
    /// stay collectable (its run settles as it goes) although the run is in the live table.
    task: Mutex<Option<Py<PyAny>>>,
    /// Its key in the component's table of live tasks (`Retries::track`); 0 when not in it.
    key: std::sync::atomic::AtomicU64,
}

/// `nova._aio.submit`.
fn submit(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    static SUBMIT: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    SUBMIT.get_or_try_init(py, || Ok::<_, PyErr>(py.import("nova._aio")?.getattr("submit")?.unbind()))
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
    let run = match Py::new(py, ListenerRun::new(Some(coro.clone().unbind()), end)) {
        Ok(r) => {
            r.get().key.store(retries.track(r.clone_ref(py)), Relaxed);
            r
        }
        Err(e) => {
            retries.end_task();
            let _ = coro.call_method0("close");
            log_failure(py, "nova", &e);
            return;
        }
    };
    let handed = match event_loop.filter(|_| here) {
        // On the loop's own thread: create the task now, nothing to hand over.
        Some(l) => create_task(l.bind(py), run.bind(py)).map(|task| run.get().started(py, task)),
        None => submit(py).and_then(|s| s.bind(py).call1((event_loop.map(|l| l.bind(py)), &run)).map(drop)),
    };
    if let Err(e) = handed {
        // Never reached its loop: settle it now, as failed.
        let _ = coro.call_method0("close");
        run.get().settle(py, Some(e), None);
    }
}

/// `event_loop.create_task(run)`. With no task factory set, that is `asyncio.Task(run,
/// loop=event_loop)`, made here directly, without `create_task`'s Python frame (a tenth of a
/// no-op listener's cost).
fn create_task<'py>(event_loop: &Bound<'py, PyAny>, run: &Bound<'py, ListenerRun>) -> PyResult<Bound<'py, PyAny>> {
    static TASK: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    let py = event_loop.py();
    if !event_loop.call_method0(pyo3::intern!(py, "get_task_factory"))?.is_none() {
        return event_loop.call_method1(pyo3::intern!(py, "create_task"), (run,));
    }
    let task = TASK.get_or_try_init(py, || Ok::<_, PyErr>(py.import("asyncio")?.getattr("Task")?.unbind()))?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item(pyo3::intern!(py, "loop"), event_loop)?;
    task.bind(py).call((run,), Some(&kwargs))
}

/// How a run is resumed.
enum Resume<'py> {
    Send(Bound<'py, PyAny>),
    Throw(Bound<'py, PyTuple>),
}

impl ListenerRun {
    pub fn new(coro: Option<Py<PyAny>>, end: TaskEnd) -> ListenerRun {
        ListenerRun {
            coro,
            end: Mutex::new(Some((end, stopwatch::now()))),
            component: Mutex::new(None),
            task: Mutex::new(None),
            key: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Take the delivery away from a task still running at a shutdown's deadline and cancel
    /// the task (on its loop's thread): its end, whose event the shutdown reports as
    /// undelivered; None if it had settled first.
    pub fn abandon(&self, py: Python<'_>) -> Option<TaskEnd> {
        let (end, _) = self.end.lock().take()?;
        if let Some(task) = self.task.lock().take().and_then(|t| crate::ffi::object::weakref_get(py, &t)) {
            cancel(py, &task);
        }
        Some(end)
    }

    /// One step of the listener's coroutine: what it yielded, or None once it has ended (and
    /// the delivery is settled). A cancellation propagates; any other failure is settled
    /// here and ends the task quietly.
    fn resume(&self, py: Python<'_>, how: Resume<'_>) -> PyResult<Option<PyObject>> {
        use crate::ffi::object::Sent;
        let Some(coro) = &self.coro else {
            return Err(pyo3::exceptions::PyTypeError::new_err("this listener run is awaited by its caller"));
        };
        let coro = coro.bind(py);
        let sent = match how {
            Resume::Send(value) => crate::ffi::object::iter_send(py, coro, &value),
            Resume::Throw(args) => match coro.call_method1(pyo3::intern!(py, "throw"), args) {
                Ok(yielded) => Sent::Yielded(yielded),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                    Sent::Returned(e.value(py).getattr(pyo3::intern!(py, "value"))?)
                }
                Err(e) => Sent::Raised(e),
            },
        };
        match sent {
            Sent::Yielded(y) => Ok(Some(y.unbind())),
            Sent::Returned(result) => {
                self.settle(py, None, Some(&result));
                Ok(None)
            }
            Sent::Raised(e) => {
                let cancelled = e.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py);
                self.finish(py, Some(e.value(py).clone().into_any()), None);
                if cancelled {
                    Err(e)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Taken out of the component's live table once its end is taken.
    fn untrack(&self, end: &TaskEnd) {
        let key = self.key.swap(0, Relaxed);
        if key != 0 {
            end.retries.untrack(key);
        }
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
        self.untrack(&end);
        self.task.lock().take();
        *self.component.lock() = Some(end.component.clone());
        let sub = &end.sub;
        let event = end.event.bind(py);
        let listener = sub.listener.bind(py).get();
        sub.metrics.duration.observe_nanos(py, stopwatch::elapsed_nanos(started));
        if let (Some(plan), None) = (&end.plan, &error) {
            // attempt_async returned a delay: wait for the next attempt, still pending.
            if let Some(delay) = result.filter(|r| !r.is_none()).and_then(|r| r.extract::<f64>().ok()) {
                let next = plan.next(sub, event, delay.max(0.0), end.follow.clone(), end.after.clone());
                end.retries.retry_later(py, next);
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

impl Drop for ListenerRun {
    /// Dropped without being told how its task ended (the task never ran to its end): it no
    /// longer counts as in flight, so nothing waits for it for ever.
    fn drop(&mut self) {
        if let Some((end, _)) = self.end.get_mut().take() {
            end.retries.end_task();
        }
    }
}

/// Cancel `task` from any thread: `task.cancel()` runs on its loop's thread (a closed
/// loop runs nothing more, so there is nothing to cancel).
fn cancel(py: Python<'_>, task: &Bound<'_, PyAny>) {
    let scheduled = task.call_method0("get_loop").and_then(|l| {
        let cancel = task.getattr("cancel")?;
        l.call_method1("call_soon_threadsafe", (cancel,))
    });
    if let Err(e) = scheduled {
        if !e.is_instance_of::<pyo3::exceptions::PyRuntimeError>(py) {
            log_failure(py, "nova", &e);
        }
    }
}

#[pymethods]
impl ListenerRun {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// A task's step (`PyIter_Send(run, None)` lands here).
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        self.resume(py, Resume::Send(py.None().into_bound(py)))
    }

    fn send(&self, py: Python<'_>, value: Bound<'_, PyAny>) -> PyResult<PyObject> {
        self.resume(py, Resume::Send(value))?.ok_or_else(|| pyo3::exceptions::PyStopIteration::new_err(()))
    }

    /// `throw(exc)` (or the old three-argument form): how a task delivers a cancellation.
    #[pyo3(signature = (*args))]
    fn throw(&self, py: Python<'_>, args: Bound<'_, PyTuple>) -> PyResult<PyObject> {
        self.resume(py, Resume::Throw(args))?.ok_or_else(|| pyo3::exceptions::PyStopIteration::new_err(()))
    }

    /// Closed before it ended (its task was destroyed): the coroutine is closed and the
    /// delivery settled as failed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(coro) = &self.coro {
            coro.bind(py).call_method0(pyo3::intern!(py, "close"))?;
        }
        if self.end.lock().is_some() {
            let e = crate::errors::nova_err(
                py,
                "ListenerError",
                "the listener's task was destroyed before it finished; the event was not delivered",
            );
            self.settle(py, Some(e), None);
        }
        Ok(())
    }

    /// `started(task)`: the listener's task was created. If a shutdown took the delivery
    /// away before that, the task is cancelled at once.
    fn started(&self, py: Python<'_>, task: Bound<'_, PyAny>) {
        let end = self.end.lock();
        if end.is_some() {
            match crate::ffi::object::weakref_new(py, &task, None) {
                Ok(weak) => *self.task.lock() = Some(weak),
                Err(e) => log_failure(py, "nova", &e),
            }
        } else {
            drop(end);
            cancel(py, &task);
        }
    }

    /// `finish(error)`: the listener's coroutine returned (`None`) or raised `error` (a
    /// cancellation included), or never ran (its loop was closed).
    #[pyo3(signature = (error, result=None))]
    pub fn finish(&self, py: Python<'_>, error: Option<Bound<'_, PyAny>>, result: Option<Bound<'_, PyAny>>) {
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

    /// `finish` for a caller that raises the failure itself (`aemit`): returns the
    /// `ListenerError` (or None) instead of logging it.
    fn finish_raising(&self, py: Python<'_>, error: Option<Bound<'_, PyAny>>) -> Option<PyObject> {
        let error = error.map(PyErr::from_value);
        self.settle_quietly(py, error, None).map(|e| e.into_value(py).into_any())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ListenerRun>()
}
