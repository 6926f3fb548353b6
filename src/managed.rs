//! The hot part of a `ManagedListener` (python/nova/resilience/managed_listener.py): one attempt of a
//! handler — a concurrency slot, the call (under its timeout), its duration, the success and
//! health accounting — with no Python call besides the handler itself.
//!
//! The policy around a failure (circuit breaker, retry decision, back-off, dead letters) stays
//! in Python: it runs only when something went wrong. The core delivers a managed listener's
//! first attempt straight through [`AttemptCore::run`] when [`AttemptCore::takes_first_attempt`]
//! says nothing else has to be checked first.

use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize,
    Ordering::{Relaxed, Release, SeqCst},
};

use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::errors::{describe_event, nova_err, validation_error};
use crate::metrics::{stopwatch, GilCounter, Histogram};
use crate::watchdog;

/// The manager's states, as `ListenerManager` numbers them.
const RUNNING: u8 = 0;
const STOPPING: u8 = 1;

/// Seconds of attempts the health window looks back on.
const HEALTH_WINDOW: i64 = 60;

#[pyclass(frozen, module = "nova._core", name = "_AttemptCore")]
pub struct AttemptCore {
    name: String,
    handler: Py<PyAny>,
    /// The Python hand-over for the shapes the core does not call itself (`async def`
    /// handlers, `on_error`): `hand_over(event, attempt) -> error | None`.
    hand_over: Option<Py<PyAny>>,
    /// The timeout in `stopwatch` ticks.
    timeout_ticks: Option<u64>,
    timeout: Option<f64>,
    /// The concurrency slots: at most `concurrency` attempts at once.
    slots: Slots,
    registered: AtomicBool,
    state: AtomicU8,
    /// A circuit breaker is configured: its permit is taken in Python around every attempt.
    circuit: bool,
    /// `clock.monotonic` of an injected clock (tests); None: the system's monotonic clock.
    clock: Option<Py<PyAny>>,
    /// `ListenerManager._poke`: wakes a `stop()` waiting for attempts to end.
    poke: Py<PyAny>,
    /// Failed first attempts of `managed(event)` calls whose policy (retry or final failure)
    /// has not yet counted them (`run_deciding` until `decided`): busy for `stop()`, so that
    /// no stop falls between the attempt's end and the retry it would have waited for.
    deciding: AtomicUsize,
    succeeded: GilCounter,
    durations: Histogram,
    health: HealthWindow,
}

/// A managed listener's concurrency slots. Attempts take and give back a slot only with the
/// GIL held (the token proves it), so the count is a plain load and store, not the two locked
/// instructions of a lock-free counter, on every attempt. A thread that finds every slot taken
/// waits without the GIL until a release wakes it or, should that wake-up race its
/// registration (a release does not fence against it, which would cost the locked
/// instruction again), a millisecond passes; then it tries again with the GIL.
struct Slots {
    active: AtomicUsize,
    limit: usize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Slots {
    fn new(limit: usize) -> Slots {
        Slots {
            active: AtomicUsize::new(0),
            limit: limit.max(1),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self, py: Python<'_>) {
        loop {
            let active = self.active.load(Relaxed);
            if active < self.limit {
                // The GIL serialises takers on a GIL build; without it, a compare-and-swap.
                #[cfg(not(Py_GIL_DISABLED))]
                self.active.store(active + 1, Relaxed);
                #[cfg(Py_GIL_DISABLED)]
                if self
                    .active
                    .compare_exchange(active, active + 1, std::sync::atomic::Ordering::Acquire, Relaxed)
                    .is_err()
                {
                    continue;
                }
                return;
            }
            // Every slot taken: wait with the GIL released, so the holders can finish.
            py.allow_threads(|| {
                let mut guard = self.lock.lock();
                self.waiters.fetch_add(1, SeqCst);
                while self.active.load(Relaxed) >= self.limit {
                    self.freed.wait_for(&mut guard, std::time::Duration::from_millis(1));
                }
                self.waiters.fetch_sub(1, SeqCst);
            });
        }
    }

    fn release(&self, _py: Python<'_>) {
        #[cfg(not(Py_GIL_DISABLED))]
        self.active.store(self.active.load(Relaxed) - 1, Release);
        #[cfg(Py_GIL_DISABLED)]
        self.active.fetch_sub(1, Release);
        if self.waiters.load(Relaxed) > 0 {
            let _guard = self.lock.lock();
            self.freed.notify_one();
        }
    }

    fn active(&self) -> usize {
        self.active.load(Relaxed)
    }
}

/// Attempts and failures per second over the last minute, in a ring of per-second slots:
/// counting is two atomic reads and an add; only the first attempt of a new second takes the
/// lock, to reset the slot it reuses.
struct HealthWindow {
    slots: [HealthSlot; RING],
    reset: Mutex<()>,
}

/// Slots in the ring: more than the window's seconds, so the window never sees a reused slot.
const RING: usize = 64;

#[derive(Default)]
struct HealthSlot {
    second: AtomicI64,
    attempts: AtomicU64,
    failures: AtomicU64,
}

impl HealthWindow {
    fn new() -> Self {
        HealthWindow {
            slots: std::array::from_fn(|_| HealthSlot { second: AtomicI64::new(i64::MIN), ..Default::default() }),
            reset: Mutex::new(()),
        }
    }

    /// Count an attempt. Only ever done with the GIL held (hence the token), which serialises
    /// the counts: a load and a store each, not a locked add.
    fn count(&self, _py: Python<'_>, second: i64, failed: bool) {
        let slot = &self.slots[second.rem_euclid(RING as i64) as usize];
        if slot.second.load(SeqCst) != second {
            let _guard = self.reset.lock();
            if slot.second.load(SeqCst) != second {
                slot.attempts.store(0, SeqCst);
                slot.failures.store(0, SeqCst);
                slot.second.store(second, SeqCst);
            }
        }
        let add = |a: &AtomicU64| {
            #[cfg(not(Py_GIL_DISABLED))]
            a.store(a.load(Relaxed) + 1, Relaxed);
            #[cfg(Py_GIL_DISABLED)]
            a.fetch_add(1, Relaxed);
        };
        add(&slot.attempts);
        if failed {
            add(&slot.failures);
        }
    }

    /// (attempts, failures) of the seconds after `horizon` up to `now`.
    fn window(&self, horizon: i64, now: i64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|s| {
                let second = s.second.load(SeqCst);
                second > horizon && second <= now
            })
            .fold((0, 0), |(a, f), s| (a + s.attempts.load(Relaxed), f + s.failures.load(Relaxed)))
    }
}

impl AttemptCore {
    /// Whether the core may run attempt 1 itself: registered, the manager running, and no
    /// circuit breaker to ask first.
    #[inline]
    pub fn takes_first_attempt(&self) -> bool {
        !self.circuit && self.registered.load(SeqCst) && self.state.load(SeqCst) == RUNNING
    }

    /// One attempt: `Ok(None)` on success, `Ok(Some(error))` when the handler failed with an
    /// `Exception` (or timed out); `Err` for what must propagate (`KeyboardInterrupt`, an
    /// enclosing attempt's timeout). Also returns how long the handler ran, in nanoseconds.
    pub fn run<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        attempt: u32,
    ) -> (PyResult<Option<Bound<'py, PyAny>>>, u64) {
        self.run_deciding(py, event, attempt, false)
    }

    /// `run`; with `deciding`, a failed attempt counts in `deciding` from before its slot is
    /// given back until the caller's `decided()`.
    fn run_deciding<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        attempt: u32,
        deciding: bool,
    ) -> (PyResult<Option<Bound<'py, PyAny>>>, u64) {
        self.slots.acquire(py);
        let started = stopwatch::now();
        let result = match &self.hand_over {
            Some(hand_over) => {
                hand_over.bind(py).call1((event, attempt)).map(|r| if r.is_none() { None } else { Some(r) })
            }
            None => self.invoke(event, attempt, started),
        };
        let elapsed = stopwatch::elapsed_nanos(started);
        if deciding && matches!(result, Ok(Some(_))) {
            self.deciding.fetch_add(1, SeqCst);
        }
        self.slots.release(py);
        if let Ok(outcome) = &result {
            self.durations.observe_nanos(py, elapsed);
            self.health.count(py, self.second_at(py, started), outcome.is_some());
            if outcome.is_none() {
                self.succeeded.inc(py);
            }
        }
        if self.state.load(SeqCst) == STOPPING {
            let _ = self.poke.bind(py).call0();
        }
        (result, elapsed)
    }

    /// Call the synchronous handler once, under the timeout if there is one.
    /// `started`: now, by `stopwatch::now()`.
    fn invoke<'py>(
        &self,
        event: &Bound<'py, PyAny>,
        attempt: u32,
        started: u64,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = event.py();
        let handler = self.handler.bind(py);
        let Some(timeout) = self.timeout_ticks else {
            return caught(py, crate::ffi::call::call1(handler, event));
        };
        let guard = watchdog::start(timeout, started);
        let result = crate::ffi::call::call1(handler, event);
        if !watchdog::finish(guard) {
            return match result {
                // A timeout the handler did not cause to be ours: an enclosing attempt's.
                Err(e) if watchdog::is_async_timeout(py, &e) => Err(e),
                other => caught(py, other),
            };
        }
        watchdog::clear_pending(py);
        let err = nova_err(
            py,
            "ListenerTimeout",
            format!(
                "listener '{}' ran past its timeout of {} on {} (attempt {attempt}); it was interrupted",
                self.name,
                seconds(self.timeout.unwrap_or_default()),
                describe_event(event),
            ),
        );
        if let Err(cause) = result {
            if !watchdog::is_async_timeout(py, &cause) {
                err.set_cause(py, Some(cause));
            }
        }
        Ok(Some(err.into_value(py).into_bound(py).into_any()))
    }

    /// The current second of the health window's clock: the injected one, if any, else the
    /// stopwatch's.
    fn now_second(&self, py: Python<'_>) -> i64 {
        self.second_at(py, stopwatch::now())
    }

    /// The health window's second of a `stopwatch` reading (an attempt's start: no clock read
    /// of its own), or of the injected clock now.
    fn second_at(&self, py: Python<'_>, ticks: u64) -> i64 {
        match &self.clock {
            None => (stopwatch::ticks_to_nanos(ticks) / 1_000_000_000) as i64,
            Some(clock) => {
                clock.bind(py).call0().and_then(|t| t.extract::<f64>()).map(|t| t.floor() as i64).unwrap_or(0)
            }
        }
    }
}

/// A handler's result as an attempt's: an `Exception` is the attempt's error; anything else
/// (`KeyboardInterrupt`, `SystemExit`...) propagates.
fn caught<'py>(py: Python<'py>, result: PyResult<Bound<'py, PyAny>>) -> PyResult<Option<Bound<'py, PyAny>>> {
    match result {
        Ok(_) => Ok(None),
        Err(e) if e.is_instance_of::<PyException>(py) => Ok(Some(e.into_value(py).into_bound(py).into_any())),
        Err(e) => Err(e),
    }
}

/// Seconds as Python's `f"{x:g}s"` writes them.
fn seconds(x: f64) -> String {
    let mut s = format!("{x}");
    if s.contains('.') && !s.contains('e') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}s")
}

#[pymethods]
impl AttemptCore {
    #[new]
    #[pyo3(signature = (*, name, handler, hand_over, timeout, concurrency, circuit, clock, poke))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: String,
        handler: Py<PyAny>,
        hand_over: Option<Py<PyAny>>,
        timeout: Option<f64>,
        concurrency: usize,
        circuit: bool,
        clock: Option<Py<PyAny>>,
        poke: Py<PyAny>,
    ) -> PyResult<Self> {
        if concurrency == 0 {
            return Err(validation_error(py, "concurrency must be >= 1"));
        }
        let timeout_ticks = match timeout {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 => Some(stopwatch::nanos_to_ticks((t * 1e9) as u64)),
            Some(t) => return Err(validation_error(py, format!("timeout must be seconds > 0 or None, got {t}"))),
        };
        Ok(AttemptCore {
            name,
            handler,
            hand_over,
            timeout_ticks,
            timeout,
            slots: Slots::new(concurrency),
            registered: AtomicBool::new(true),
            state: AtomicU8::new(RUNNING),
            circuit,
            clock,
            poke,
            deciding: AtomicUsize::new(0),
            succeeded: GilCounter::default(),
            durations: Histogram::default(),
            health: HealthWindow::new(),
        })
    }

    /// Run attempt `attempt` of `event`: None on success, else the attempt's error.
    /// `accounted=False` calls the handler once under the timeout, outside the slot and the
    /// accounting (for a Python hand-over that adds `on_error`); `deciding=True`: a failure
    /// stays busy for `stop()` until `decided()` (see `ManagedListener._after_first_failure`).
    #[pyo3(name = "run", signature = (event, attempt, *, accounted=true, deciding=false))]
    fn py_run<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        attempt: u32,
        accounted: bool,
        deciding: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        match accounted {
            true => self.run_deciding(py, event, attempt, deciding).0,
            false => self.invoke(event, attempt, stopwatch::now()),
        }
    }

    /// A failure counted busy without an attempt (the circuit refused it): `decided()` ends it.
    fn hold(&self) {
        self.deciding.fetch_add(1, SeqCst);
    }

    /// The policy has counted a failed attempt of `run(..., deciding=True)` (or `hold()`):
    /// as a retry, or as the final failure.
    fn decided(&self, py: Python<'_>) {
        self.deciding.fetch_sub(1, SeqCst);
        if self.state.load(SeqCst) == STOPPING {
            let _ = self.poke.bind(py).call0();
        }
    }

    fn set_state(&self, state: u8) {
        self.state.store(state, SeqCst);
    }

    #[getter]
    fn registered(&self) -> bool {
        self.registered.load(SeqCst)
    }

    #[setter]
    fn set_registered(&self, value: bool) {
        self.registered.store(value, SeqCst);
    }

    /// Attempts running now, and failed ones whose retry is not yet counted (`deciding`).
    #[getter]
    fn active(&self) -> usize {
        self.slots.active() + self.deciding.load(SeqCst)
    }

    #[getter]
    fn succeeded(&self) -> u64 {
        self.succeeded.get()
    }

    /// Count an attempt that ran elsewhere (an async handler awaited on its loop): its
    /// duration in seconds and whether it succeeded.
    fn record(&self, py: Python<'_>, seconds: f64, ok: bool) {
        let nanos = (seconds.max(0.0) * 1e9) as u64;
        self.durations.observe_nanos(py, nanos);
        self.health.count(py, self.now_second(py), !ok);
        if ok {
            self.succeeded.inc(py);
        }
    }

    /// (attempts, failures) over the last minute.
    fn window(&self, py: Python<'_>) -> (u64, u64) {
        let now = self.now_second(py);
        self.health.window(now - HEALTH_WINDOW, now)
    }

    /// (non-cumulative bucket counts incl. +Inf, sum in seconds, count) of attempt durations.
    fn durations<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, f64, u64)> {
        let (_bounds, counts, sum, count) = self.durations.snapshot(py)?;
        Ok((counts, sum, count))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AttemptCore>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_window_counts_the_last_minute_only() {
        pyo3::prepare_freethreaded_python();
        Python::with_gil(|py| {
            let w = HealthWindow::new();
            w.count(py, 100, false);
            w.count(py, 100, true);
            w.count(py, 130, false);
            assert_eq!(w.window(100 - HEALTH_WINDOW, 100), (2, 1));
            assert_eq!(w.window(130 - HEALTH_WINDOW, 130), (3, 1));
            // Second 100 has left the window at 160; its slot is reused 64 seconds later.
            assert_eq!(w.window(160 - HEALTH_WINDOW, 160), (1, 0));
            w.count(py, 164, true);
            assert_eq!(w.window(164 - HEALTH_WINDOW, 164), (2, 1));
        });
    }

    #[test]
    fn seconds_read_like_python_g_format() {
        assert_eq!(seconds(30.0), "30s");
        assert_eq!(seconds(0.05), "0.05s");
        assert_eq!(seconds(1.5), "1.5s");
    }
}
