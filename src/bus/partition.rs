//! One partition's delivery: the sink its lane's worker hands batches to, and the backlog of
//! events held back per subscriber while that subscriber waits for a retry or a task
//! (`crate::holdback`).

use std::sync::{Arc, OnceLock, Weak};

use pyo3::prelude::*;

use super::*;
use crate::context::ContextRunner;
use crate::dispatch::{attempt, log_failure, Attempt, Delivery, Dispatch, PendingAfter};
use crate::event::as_event;
use crate::ffi::context::run_in_copy as run_in_context;
use crate::holdback::HoldBack;
use crate::listener::Sub;
use crate::queue::{Items, Sink};
use crate::tasks::{FollowUp, NextAttempt};

/// A held-back event: (event, context, the event's middleware `after` hooks waiting for this
/// subscriber's outcome).
pub(super) type Held = (Py<PyAny>, Option<Py<PyAny>>, Option<Arc<PendingAfter>>);

/// Every held event of `held` (shutdown); their pending `after` hooks are told they were not
/// delivered.
fn take_all_held(py: Python<'_>, held: &HoldBack<Held>, component: &str) -> Vec<Py<PyAny>> {
    let mut events = Vec::new();
    for (event, _, after) in held.take_all() {
        if let Some(a) = after {
            let err = crate::errors::nova_err(
                py,
                "ClosedError",
                format!(
                    "{component} shut down before {} was delivered (it was held back behind a retry of an earlier \
                     event); it is in the shutdown report's undelivered events",
                    crate::errors::describe_event(event.bind(py))
                ),
            );
            a.settle(py, Some(err));
        }
        events.push(event);
    }
    events
}

/// Delivers one partition's events and holds back, per subscriber, the events that arrive
/// while that subscriber waits for a retry (so its order is kept and nobody else waits).
pub(super) struct PartitionSink {
    pub(super) core: Weak<BusCore>,
    /// Set once, right after the topic is made (it owns this sink: hence weak).
    pub(super) topic: OnceLock<Weak<Topic>>,
    pub(super) held: HoldBack<Held>,
    pub(super) me: OnceLock<Weak<PartitionSink>>,
}

impl PartitionSink {
    pub(super) fn held_len(&self) -> usize {
        self.held.len()
    }

    pub(super) fn take_held(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let name = self.core.upgrade().map(|c| format!("bus '{}'", c.name)).unwrap_or_else(|| "bus".into());
        take_all_held(py, &self.held, &name)
    }

    /// Deliver `event` to `sub`, or hold it back if `sub` is waiting for a retry here.
    /// `after` gives the event's pending middleware hooks to a delivery that settles later
    /// (held back, or retried), which then reports its outcome there.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver_to(
        &self,
        py: Python<'_>,
        core: &BusCore,
        topic: &Topic,
        sub: &Arc<Sub>,
        event: &Bound<'_, PyAny>,
        context: Option<&Py<PyAny>>,
        after: &dyn Fn() -> Option<Arc<PendingAfter>>,
    ) -> Delivery {
        let hold = || (event.clone().unbind(), context.map(|c| c.clone_ref(py)), after());
        if self.held.holds_any() && self.held.hold(sub.seq, hold) {
            return Delivery::Pending;
        }
        self.deliver_now(py, core, topic, sub, event, context, after)
    }

    /// Deliver `event` to `sub` now: the worker when nothing is held for `sub`, or a finisher
    /// releasing what was (`holdback` keeps these two from overlapping).
    #[allow(clippy::too_many_arguments)]
    fn deliver_now(
        &self,
        py: Python<'_>,
        core: &BusCore,
        topic: &Topic,
        sub: &Arc<Sub>,
        event: &Bound<'_, PyAny>,
        context: Option<&Py<PyAny>>,
        after: &dyn Fn() -> Option<Arc<PendingAfter>>,
    ) -> Delivery {
        let id = if topic.mode == Mode::ExactlyOnce {
            let id = as_event(event).map(|e| e.get().id_str(py)).unwrap_or_default();
            if topic.dedup.lock().get(&sub.seq).is_some_and(|d| d.contains(&id)) {
                return Delivery::Done;
            }
            Some(id)
        } else {
            None
        };
        let last = topic.mode == Mode::AtMostOnce;
        match attempt(py, sub, event, 1, Some(&topic.name), core.event_loop.as_ref(), last) {
            Attempt::Done => {
                core.counters.processed.inc(py);
                if let Some(id) = id {
                    self.mark_seen(topic, sub, id);
                }
                Delivery::Done
            }
            Attempt::Failed(e) => {
                core.counters.processed.inc(py);
                core.counters.failed.inc();
                if topic.mode == Mode::AtMostOnce {
                    core.dropped_at_most_once.inc();
                }
                // A managed listener has dead-lettered or logged it already.
                if sub.managed.is_none() {
                    Delivery::Failed(e)
                } else {
                    Delivery::Reported(e)
                }
            }
            Attempt::Retry(delay) => {
                self.held.wait(sub.seq);
                let follow: Option<Arc<dyn FollowUp>> =
                    self.me.get().and_then(Weak::upgrade).map(|s| s as Arc<dyn FollowUp>);
                let next = NextAttempt {
                    sub: sub.clone(),
                    event,
                    context,
                    attempt: 2,
                    topic: Some(&topic.name),
                    delay,
                    follow,
                    after: after(),
                };
                core.retries.schedule(py, next);
                Delivery::Pending
            }
            Attempt::Async(coro, managed) => {
                // The partition's later events wait for this task (for this subscriber only),
                // as they wait for a retry: per-key order holds, other partitions go on.
                self.held.wait(sub.seq);
                let end = crate::tasks::TaskEnd {
                    plan: managed.then(|| crate::tasks::RetryPlan {
                        attempt: 1,
                        topic: Some(topic.name.clone()),
                        context: context.map(|c| c.clone_ref(py)),
                    }),
                    after: after(),
                    follow: self.me.get().and_then(Weak::upgrade).map(|s| s as Arc<dyn FollowUp>),
                    ..crate::tasks::TaskEnd::new(sub, event, &core.counters, &core.retries)
                };
                crate::tasks::spawn(py, coro.into_bound(py), core.event_loop.as_ref(), end, false);
                Delivery::Pending
            }
        }
    }

    /// Deliver `event` on the publisher's thread (`Bus::delivers_here`): its listeners'
    /// tasks start on this loop at once; `context` is kept for retries.
    pub(super) fn deliver_here(
        &self,
        py: Python<'_>,
        core: &BusCore,
        topic: &Topic,
        event: &Bound<'_, PyAny>,
        context: &Py<PyAny>,
    ) {
        let _topic = CurrentTopic::enter(py, &topic.name_obj);
        let resolved = topic.subs.read().clone();
        let d = Dispatch { component: &core.name, chain: &core.chain, counters: &core.counters };
        let result = d.run(
            py,
            event.clone(),
            |_| &*resolved,
            |sub, ev, later| self.deliver_to(py, core, topic, sub, ev, Some(context), &|| later.defer()),
        );
        if let Err(e) = result {
            log_failure(py, &core.name, &e);
        }
    }

    pub(super) fn mark_seen(&self, topic: &Topic, sub: &Sub, id: String) {
        topic.dedup.lock().entry(sub.seq).or_insert_with(|| Dedup::new(topic.dedup_window)).mark(id);
    }
}

impl FollowUp for PartitionSink {
    fn finished(&self, py: Python<'_>, sub: &Arc<Sub>, event: &Bound<'_, PyAny>, ok: bool) {
        let (Some(core), Some(topic)) = (self.core.upgrade(), self.topic.get().and_then(Weak::upgrade)) else {
            return;
        };
        if ok && topic.mode == Mode::ExactlyOnce {
            if let Some(e) = as_event(event) {
                self.mark_seen(&topic, sub, e.get().id_str(py));
            }
        }
        // Release what was held back for this subscriber, in order, until it waits again.
        let Some(epoch) = self.held.end_wait(sub.seq) else {
            return;
        };
        while let Some((ev, ctx, after)) = self.held.next(sub.seq, epoch) {
            let ev = ev.into_bound(py);
            // Already counted as pending for this subscriber: handed on as it is.
            let handed = || after.clone();
            let run = || self.deliver_now(py, &core, &topic, sub, &ev, ctx.as_ref(), &handed);
            let delivery = match &ctx {
                Some(c) => run_in_context(py, c, run).unwrap_or_else(Delivery::Failed),
                None => run(),
            };
            let settled = match delivery {
                Delivery::Pending => None,
                Delivery::Done => Some(None),
                Delivery::Failed(e) => {
                    log_failure(py, &core.name, &e);
                    Some(Some(e))
                }
                Delivery::Reported(e) => Some(Some(e)),
            };
            if let (Some(outcome), Some(a)) = (settled, &after) {
                a.settle(py, outcome);
            }
        }
    }
}

impl Sink for PartitionSink {
    fn deliver_batch(&self, py: Python<'_>, items: &mut Items<'_, '_>, contexts: &mut ContextRunner) {
        let (Some(core), Some(topic)) = (self.core.upgrade(), self.topic.get().and_then(Weak::upgrade)) else {
            // The bus is gone: nobody is left to deliver to.
            while items.next(py).is_some() {}
            return;
        };
        let _topic = CurrentTopic::enter(py, &topic.name_obj);
        let mut subs = None;
        let d = Dispatch { component: &core.name, chain: &core.chain, counters: &core.counters };
        while let Some((event, ctx)) = items.next(py) {
            let resolved = topic.subs_since(&mut subs);
            let event = event.into_bound(py);
            let run = || {
                d.run(
                    py,
                    event,
                    |_| resolved,
                    |sub, ev, later| self.deliver_to(py, &core, &topic, sub, ev, ctx, &|| later.defer()),
                )
            };
            let result = match ctx {
                Some(c) => contexts.run(py, c, run).and_then(|r| r),
                None => run(),
            };
            if let Err(e) = result {
                log_failure(py, &core.name, &e);
            }
        }
    }

    fn internal_failure(&self, py: Python<'_>, err: &PyErr, lost_item: bool) {
        let name = match self.core.upgrade() {
            Some(core) => {
                if lost_item {
                    core.counters.failed.inc();
                }
                core.name.clone()
            }
            None => "bus".to_string(),
        };
        log_failure(py, &name, err);
    }
}
