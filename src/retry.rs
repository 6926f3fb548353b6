//! Retries of asynchronous deliveries: each waits on the timer runtime (no GIL, no worker),
//! then runs the managed listener's next attempt on the pool inside the original context.
//! The component can wait for them (flush) or abandon them at a shutdown deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;

use crate::ffi::context::run_in_copy as run_in_context;
use crate::dispatch::{attempt, log_failure, Attempt, DispatchCounters};
use crate::listener::Sub;
use crate::pool::{Job, PoolInner};

/// Told when a subscriber's retried event is finished (success or final failure), so an
/// ordered partition can release the events it held back for that subscriber.
pub trait FollowUp: Send + Sync {
    fn finished(&self, py: Python<'_>, sub: &Arc<Sub>, event: &Bound<'_, PyAny>, ok: bool);
}

pub struct Retries {
    component: String,
    pool: Arc<PoolInner>,
    counters: Arc<DispatchCounters>,
    event_loop: Option<Py<PyAny>>,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, (Arc<Sub>, Py<PyAny>)>>,
    stopped: AtomicBool,
    idle: (Mutex<()>, Condvar),
}

struct RetryJob {
    id: u64,
    retries: Arc<Retries>,
    sub: Arc<Sub>,
    event: Py<PyAny>,
    context: Option<Py<PyAny>>,
    attempt: u32,
    topic: Option<String>,
    follow: Option<Arc<dyn FollowUp>>,
}

impl Retries {
    pub fn new(
        component: &str,
        pool: Arc<PoolInner>,
        counters: Arc<DispatchCounters>,
        event_loop: Option<Py<PyAny>>,
    ) -> Arc<Retries> {
        Arc::new(Retries {
            component: component.to_string(),
            pool,
            counters,
            event_loop,
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
            idle: (Mutex::new(()), Condvar::new()),
        })
    }

    pub fn pending(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Attempt `attempt` of `event` for `sub` after `delay` seconds.
    #[allow(clippy::too_many_arguments)]
    pub fn schedule(
        self: &Arc<Self>,
        py: Python<'_>,
        sub: Arc<Sub>,
        event: &Bound<'_, PyAny>,
        context: Option<&Py<PyAny>>,
        attempt: u32,
        topic: Option<&str>,
        delay: f64,
        follow: Option<Arc<dyn FollowUp>>,
    ) {
        let id = self.next_id.fetch_add(1, SeqCst);
        self.waiting
            .lock()
            .insert(id, (sub.clone(), event.clone().unbind()));
        let job = Arc::new(RetryJob {
            id,
            retries: self.clone(),
            sub,
            event: event.clone().unbind(),
            context: context.map(|c| c.clone_ref(py)),
            attempt,
            topic: topic.map(str::to_string),
            follow,
        });
        // A delay the policy computed as inf or beyond a day is capped at a day (NaN: at once).
        let delay = Duration::try_from_secs_f64(delay.clamp(0.0, 86_400.0)).unwrap_or_default();
        crate::timer::after(delay, self.pool.clone(), job);
    }

    /// Wait (without the GIL) until no retry is pending.
    pub fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let mut g = self.idle.0.lock();
        loop {
            if self.pending() == 0 {
                return true;
            }
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    (d - now).min(Duration::from_millis(20))
                }
                None => Duration::from_millis(20),
            };
            self.idle.1.wait_for(&mut g, wait);
        }
    }

    /// Stop retrying: every waiting event is handed back (and its managed listener told).
    pub fn abandon_all(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.stopped.store(true, SeqCst);
        let waiting: Vec<(Arc<Sub>, Py<PyAny>)> = self.waiting.lock().drain().map(|(_, v)| v).collect();
        let mut events = Vec::with_capacity(waiting.len());
        for (sub, event) in waiting {
            if let Some(m) = &sub.managed {
                if let Err(e) = m.bind(py).call_method1("abandon", (event.bind(py),)) {
                    log_failure(py, &self.component, &e);
                }
            }
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

impl Job for RetryJob {
    fn run(self: Arc<Self>, _pool: &Arc<PoolInner>) {
        let r = &self.retries;
        if r.stopped.load(SeqCst) || !r.waiting.lock().contains_key(&self.id) {
            return;
        }
        Python::with_gil(|py| {
            let event = self.event.bind(py);
            let go = || attempt(py, &self.sub, event, self.attempt, self.topic.as_deref(), r.event_loop.as_ref(), false);
            let outcome = match &self.context {
                Some(ctx) => run_in_context(py, ctx, go).unwrap_or_else(Attempt::Failed),
                None => go(),
            };
            let ok = match outcome {
                Attempt::Retry(delay) => {
                    r.schedule(
                        py,
                        self.sub.clone(),
                        event,
                        self.context.as_ref(),
                        self.attempt + 1,
                        self.topic.as_deref(),
                        delay,
                        self.follow.clone(),
                    );
                    r.waiting.lock().remove(&self.id);
                    return;
                }
                Attempt::Done => {
                    r.counters.processed.inc(py);
                    true
                }
                Attempt::Failed(e) => {
                    r.counters.processed.inc(py);
                    r.counters.failed.inc();
                    if self.sub.managed.is_none() {
                        log_failure(py, &r.component, &e);
                    }
                    false
                }
            };
            if let Some(f) = &self.follow {
                f.finished(py, &self.sub, event, ok);
            }
            r.waiting.lock().remove(&self.id);
        });
        r.notify();
    }
}
