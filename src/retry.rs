//! Retries of asynchronous deliveries: each waits on the timer runtime (no GIL, no worker),
//! then runs the managed listener's next attempt on the pool inside the original context.
//! The component can wait for them (flush) or abandon them at a shutdown deadline.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;

use crate::dispatch::{attempt, log_failure, Attempt, DispatchCounters, PendingAfter};
use crate::ffi::context::run_in_copy as run_in_context;
use crate::handoff::Handoff;
use crate::listener::Sub;
use crate::pool::{Job, PoolInner};
use crate::tasks::{FollowUp, ListenerRun, NextAttempt, RetryPlan, TaskHome};
use rustc_hash::FxHashMap;

/// An event waiting for a retry: its subscriber, and the event's middleware `after` hooks
/// waiting for its outcome (if the component has middleware).
type Waiting = (Arc<Sub>, Py<PyAny>, Option<Arc<PendingAfter>>);

/// Why an event was left undelivered at shutdown.
#[derive(Clone, Copy)]
pub enum Left {
    /// It waited for a retry.
    Retry,
    /// Its listener's task was still running at the deadline, and was cancelled.
    Task,
}

/// The outcome `after` hooks get for an event left undelivered at shutdown.
pub fn undelivered_at_shutdown(
    py: Python<'_>,
    component: &str,
    sub: &Sub,
    event: &Bound<'_, PyAny>,
    why: Left,
) -> PyErr {
    let why = match why {
        Left::Retry => "it waited for a retry",
        Left::Task => "its listener task was still running at the deadline and was cancelled",
    };
    crate::errors::nova_err(
        py,
        "ClosedError",
        format!(
            "{component} shut down before {} was delivered to listener '{}' ({why}); \
             it is in the shutdown report's undelivered events",
            crate::errors::describe_event(event),
            sub.listener_name(py)
        ),
    )
}

pub struct Retries {
    component: String,
    /// The component's name, shared with the listener tasks it starts (`tasks::TaskEnd`).
    pub label: Arc<str>,
    pool: Arc<PoolInner>,
    counters: Arc<DispatchCounters>,
    event_loop: Option<Py<PyAny>>,
    next_id: AtomicU64,
    /// Listener tasks running on an event loop (`tasks.rs`): in flight, like running retries.
    tasks: std::sync::atomic::AtomicUsize,
    /// The listener tasks a shutdown can cancel at its deadline (by key; those an `aemit`
    /// caller awaits itself are counted in `tasks` but not here).
    live: Mutex<FxHashMap<u64, Py<ListenerRun>>>,
    /// Events waiting for a retry (by job id), handed either to their job or to a shutdown.
    waiting: Handoff<Waiting>,
    idle: (Mutex<()>, Condvar),
    /// Itself, for the retries its listener tasks ask for (`TaskHome::retry_later`).
    me: std::sync::Weak<Retries>,
}

struct RetryJob {
    id: u64,
    retries: Arc<Retries>,
    plan: RetryPlan,
    follow: Option<Arc<dyn FollowUp>>,
}

impl TaskHome for Retries {
    fn label(&self) -> Arc<str> {
        self.label.clone()
    }

    fn begin_task(&self) {
        self.tasks.fetch_add(1, SeqCst);
    }

    fn end_task(&self) {
        self.tasks.fetch_sub(1, SeqCst);
        self.notify();
    }

    fn track(&self, run: Py<ListenerRun>) -> u64 {
        let key = self.next_id.fetch_add(1, SeqCst);
        self.live.lock().insert(key, run);
        key
    }

    fn untrack(&self, key: u64) {
        // Taken out under the lock, released after it (dropping may run Python code).
        let run = self.live.lock().remove(&key);
        drop(run);
    }

    fn retry_later(&self, py: Python<'_>, next: NextAttempt<'_, '_>) {
        if let Some(me) = self.me.upgrade() {
            me.schedule(py, next);
        }
    }
}

impl Retries {
    pub fn new(
        component: &str,
        pool: Arc<PoolInner>,
        counters: Arc<DispatchCounters>,
        event_loop: Option<Py<PyAny>>,
    ) -> Arc<Retries> {
        Arc::new_cyclic(|me| Retries {
            me: me.clone(),
            component: component.to_string(),
            label: Arc::from(component),
            pool,
            counters,
            event_loop,
            next_id: AtomicU64::new(1),
            tasks: std::sync::atomic::AtomicUsize::new(0),
            live: Mutex::new(FxHashMap::default()),
            waiting: Handoff::default(),
            idle: (Mutex::new(()), Condvar::new()),
        })
    }

    /// Events waiting for a retry or running one, or in a listener task on an event loop.
    pub fn pending(&self) -> usize {
        self.waiting.pending() + self.tasks.load(SeqCst)
    }

    /// Retries running now and listener tasks not finished: in flight for a shutdown report.
    pub fn running(&self) -> usize {
        self.waiting.running() + self.tasks.load(SeqCst)
    }

    /// At a shutdown's deadline: every listener task still running is cancelled and its event
    /// handed back (counted as undelivered, never also as processed).
    pub fn abandon_tasks(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let live: Vec<Py<ListenerRun>> = self.live.lock().drain().map(|(_, d)| d).collect();
        let events = live
            .iter()
            .filter_map(|d| d.get().abandon(py))
            .map(|end| {
                self.hand_back(py, &end.sub, end.event.bind(py), end.after, Left::Task);
                end.retries.end_task();
                end.event
            })
            .collect();
        self.notify();
        events
    }

    /// An event a shutdown hands back: its managed listener is told (its `stop()` reports
    /// it) and its middleware's `after` hooks get the outcome.
    fn hand_back(
        &self,
        py: Python<'_>,
        sub: &Sub,
        event: &Bound<'_, PyAny>,
        after: Option<Arc<PendingAfter>>,
        why: Left,
    ) {
        if let Some(m) = &sub.managed {
            if let Err(e) = m.bind(py).call_method1("abandon", (event,)) {
                log_failure(py, &self.component, &e);
            }
        }
        if let Some(a) = after {
            a.settle(py, Some(undelivered_at_shutdown(py, &self.component, sub, event, why)));
        }
    }

    /// `next`'s attempt after its delay.
    pub fn schedule(self: &Arc<Self>, py: Python<'_>, next: NextAttempt<'_, '_>) {
        let NextAttempt { sub, event, context, attempt, topic, delay, follow, after } = next;
        let id = self.next_id.fetch_add(1, SeqCst);
        if let Err((sub, event, after)) = self.waiting.park(id, (sub, event.clone().unbind(), after)) {
            // The component was shut down while this event's attempt ran: its report is made,
            // so the event is settled here, as abandoned (its manager reports it).
            let event = event.bind(py);
            self.abandon_late(py, &sub, event);
            if let Some(a) = after {
                a.settle(py, Some(undelivered_at_shutdown(py, &self.component, &sub, event, Left::Retry)));
            }
            if let Some(f) = &follow {
                f.finished(py, &sub, event, false);
            }
            return;
        }
        let job = Arc::new(RetryJob {
            id,
            retries: self.clone(),
            plan: RetryPlan { attempt, topic: topic.map(str::to_string), context: context.map(|c| c.clone_ref(py)) },
            follow,
        });
        // A delay the policy computed as inf or beyond a day is capped at a day (NaN: at once).
        let delay = Duration::try_from_secs_f64(delay.clamp(0.0, 86_400.0)).unwrap_or_default();
        crate::timer::after(delay, self.pool.clone(), job);
    }

    /// Wait (without the GIL) until no retry is pending.
    /// `with_tasks`: also wait for listener tasks; false when called on the thread of the
    /// loop that runs them (they cannot finish while it waits), and then the answer is only
    /// true if none is left.
    pub fn wait_idle(&self, deadline: Option<Instant>, with_tasks: bool) -> bool {
        let mut g = self.idle.0.lock();
        loop {
            let tasks = self.tasks.load(SeqCst);
            if self.waiting.pending() == 0 && (tasks == 0 || !with_tasks) {
                return tasks == 0;
            }
            let Some(wait) = crate::component::next_wait(deadline, Duration::from_millis(20)) else {
                return false;
            };
            self.idle.1.wait_for(&mut g, wait);
        }
    }

    /// An event whose retry would come after the shutdown report: its managed listener is told
    /// (the manager's `stop()` reports it), and it is logged.
    fn abandon_late(&self, py: Python<'_>, sub: &Sub, event: &Bound<'_, PyAny>) {
        if let Some(m) = &sub.managed {
            if let Err(e) = m.bind(py).call_method1("abandon", (event,)) {
                log_failure(py, &self.component, &e);
            }
        }
        crate::dispatch::warn(
            py,
            &format!(
                "{}: {} needed another retry after shutdown; it was abandoned (its listener manager reports it)",
                self.component,
                crate::errors::describe_event(event)
            ),
        );
    }

    /// Stop retrying: every waiting event is handed back (and its managed listener told).
    /// Retries already running finish (they are in flight); none starts after this.
    pub fn abandon_all(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let waiting: Vec<Waiting> = self.waiting.abandon_all();
        let mut events = Vec::with_capacity(waiting.len());
        for (sub, event, after) in waiting {
            self.hand_back(py, &sub, event.bind(py), after, Left::Retry);
            events.push(event);
        }
        self.notify();
        events
    }

    fn notify(&self) {
        let _g = self.idle.0.lock();
        self.idle.1.notify_all();
    }
}

/// A claimed retry, counted as running until dropped (also when something panics).
struct Running<'a, T>(&'a Handoff<T>);

impl<T> Drop for Running<'_, T> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

impl Job for RetryJob {
    fn run(self: Arc<Self>, _pool: &Arc<PoolInner>) {
        let r = &self.retries;
        // Nested: the worker holds the GIL already.
        Python::with_gil(|py| {
            // Taken out of the waiting set first: a shutdown from now on sees it as in flight,
            // never as undelivered (and if the shutdown came first, it is not run).
            let Some((sub, event, after)) = r.waiting.claim(self.id) else { return };
            let _running = Running(&r.waiting);
            let event = event.bind(py);
            let plan = &self.plan;
            let go = || attempt(py, &sub, event, plan.attempt, plan.topic.as_deref(), r.event_loop.as_ref(), false);
            let outcome = match &plan.context {
                Some(ctx) => run_in_context(py, ctx, go).unwrap_or_else(Attempt::Failed),
                None => go(),
            };
            let ok = match outcome {
                Attempt::Retry(delay) => {
                    r.schedule(py, plan.next(&sub, event, delay, self.follow.clone(), after));
                    return;
                }
                Attempt::Async(coro, _) => {
                    // A managed async listener's next attempt: a task, which settles it.
                    let end = crate::tasks::TaskEnd {
                        plan: Some(plan.clone_ref(py)),
                        after,
                        follow: self.follow.clone(),
                        ..crate::tasks::TaskEnd::new(&sub, event, &r.counters, r)
                    };
                    crate::tasks::spawn(py, coro.into_bound(py), r.event_loop.as_ref(), end, false);
                    return;
                }
                Attempt::Done => {
                    r.counters.processed.inc(py);
                    if let Some(a) = &after {
                        a.settle(py, None);
                    }
                    true
                }
                Attempt::Failed(e) => {
                    r.counters.processed.inc(py);
                    r.counters.failed.inc();
                    if sub.managed.is_none() {
                        log_failure(py, &r.component, &e);
                    }
                    if let Some(a) = &after {
                        a.settle(py, Some(e));
                    }
                    false
                }
            };
            if let Some(f) = &self.follow {
                f.finished(py, &sub, event, ok);
            }
        });
        r.notify();
    }
}
