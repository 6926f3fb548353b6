//! Timeouts of synchronous handlers: one native thread raises `_AsyncTimeout` inside a thread
//! whose handler ran past its deadline (`PyThreadState_SetAsyncExc`, which CPython delivers at
//! the handler's next bytecode).
//!
//! Built for the common case, a handler that ends in time: each thread has a watch slot (one
//! per nesting level, made once), and starting or ending a watch is an atomic store and a
//! compare-exchange on it — no lock, no allocation. The watchdog thread sleeps until the
//! earliest deadline it knows of; a new watch wakes it only when its deadline is earlier than
//! that (or when a scan is under way). Once nothing is watched it keeps planning a wake one
//! timeout ahead for a couple of rounds, so a stream of quick attempts, whose deadlines all
//! lie past the planned wake, costs it no wake-ups at all.
//!
//! A slot's state is IDLE, the deadline of its running watch, or FIRED. Whoever moves it away
//! from the deadline owns the outcome: the worker ending the watch in time, or the watchdog
//! firing it. The watchdog fires with the GIL held and the worker ends its watch with the GIL
//! held (it has just returned from the handler), so a worker that finds FIRED knows the
//! exception was already set.

use std::cell::RefCell;
use std::os::raw::c_ulong;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;

use crate::ffi::thread::{ident as thread_ident, set_async_exc};
use crate::metrics::stopwatch;

/// Empty scans in a row, with no watch started meanwhile, after which an idle watchdog stops
/// planning wake-ups and sleeps until notified.
const DORMANT_AFTER: u32 = 2;

const IDLE: u64 = 0;
const FIRED: u64 = u64::MAX;

/// One thread's watch at one nesting level.
struct Slot {
    tid: c_ulong,
    /// IDLE, FIRED, or the running watch's deadline (`stopwatch` ticks).
    state: AtomicU64,
}

struct Watchdog {
    /// Every slot ever made; a thread's slots go away with it.
    slots: Mutex<Vec<Weak<Slot>>>,
    wake: Condvar,
    /// When the thread plans to wake next: u64::MAX only when notified, 0 while it scans.
    wake_at: AtomicU64,
    /// The longest timeout seen: how far ahead an idle watchdog plans its next wake.
    idle_horizon: AtomicU64,
    started: AtomicBool,
}

/// Set at interpreter exit: from then on nothing is fired (firing needs the GIL).
static STOPPED: AtomicBool = AtomicBool::new(false);

fn watchdog() -> &'static Watchdog {
    static WD: OnceLock<Watchdog> = OnceLock::new();
    WD.get_or_init(|| Watchdog {
        slots: Mutex::new(Vec::new()),
        wake: Condvar::new(),
        wake_at: AtomicU64::new(u64::MAX),
        idle_horizon: AtomicU64::new(0),
        started: AtomicBool::new(false),
    })
}

/// This thread's watch slots, by nesting level (attempts nest when a handler runs another
/// managed listener synchronously); they live as long as the thread.
struct ThreadSlots {
    slots: Vec<Arc<Slot>>,
    /// How many of them are in use.
    depth: usize,
}

thread_local! {
    /// One thread-local for both (each thread-local access costs a lookup in a shared library).
    static SLOTS: RefCell<ThreadSlots> = const { RefCell::new(ThreadSlots { slots: Vec::new(), depth: 0 }) };
}

/// `nova.resilience._watchdog.AsyncTimeout`, the class raised inside a late handler.
fn async_timeout_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CLS: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    CLS.get_or_try_init(py, || Ok(py.import("nova.resilience._watchdog")?.getattr("AsyncTimeout")?.unbind()))
        .map(|c| c.bind(py))
}

/// Whether `err` is a timeout raised by this watchdog.
pub fn is_async_timeout(py: Python<'_>, err: &PyErr) -> bool {
    async_timeout_class(py).map(|cls| err.value(py).is_instance(cls).unwrap_or(false)).unwrap_or(false)
}

/// A running watch of the calling thread; hand it back to [`finish`] on the same thread (the
/// pointer is to a slot this thread's `SLOTS` keeps alive; it also keeps the guard `!Send`).
pub struct Guard {
    slot: *const Slot,
    deadline: u64,
}

/// Watch the calling thread for `timeout` from `now`, both in `stopwatch` ticks (the clock the
/// attempt is timed with: no second clock read per attempt).
pub fn start(timeout: u64, now: u64) -> Guard {
    let wd = watchdog();
    if !wd.started.load(SeqCst) && !wd.started.swap(true, SeqCst) {
        std::thread::Builder::new().name("nova-watchdog".into()).spawn(run).expect("spawn the Nova watchdog thread");
    }
    if wd.idle_horizon.load(SeqCst) < timeout {
        wd.idle_horizon.fetch_max(timeout, SeqCst);
    }
    let slot = SLOTS.with(|cell| {
        let mut mine = cell.borrow_mut();
        let depth = mine.depth;
        if depth == mine.slots.len() {
            let slot = Arc::new(Slot { tid: thread_ident(), state: AtomicU64::new(IDLE) });
            wd.slots.lock().push(Arc::downgrade(&slot));
            mine.slots.push(slot);
        }
        mine.depth = depth + 1;
        Arc::as_ptr(&mine.slots[depth])
    });
    let deadline = now.saturating_add(timeout).clamp(1, FIRED - 1);
    // SAFETY: the slot is kept alive by this thread's SLOTS.
    unsafe { &*slot }.state.store(deadline, SeqCst);
    // Read after the store: a scan that began later sees this watch; one under way (0) or a
    // planned wake past the deadline needs a nudge.
    let planned = wd.wake_at.load(SeqCst);
    if planned == 0 || deadline < planned {
        let _guard = wd.slots.lock();
        wd.wake.notify_one();
    }
    Guard { slot, deadline }
}

/// End a watch (with the GIL held, right after the handler returned); true when it fired.
pub fn finish(guard: Guard) -> bool {
    SLOTS.with(|cell| cell.borrow_mut().depth -= 1);
    // SAFETY: started on this thread, whose SLOTS keeps the slot alive.
    let slot = unsafe { &*guard.slot };
    let ended = slot.state.compare_exchange(guard.deadline, IDLE, SeqCst, SeqCst).is_ok();
    if !ended {
        slot.state.store(IDLE, SeqCst); // it fired: the slot is free again
    }
    !ended
}

/// After one's own watch fired: clear a timeout still pending in this thread, unless an
/// enclosing attempt's watch fired too (that one must still reach its handler).
pub fn clear_pending(py: Python<'_>) {
    let outer_fired = SLOTS.with(|cell| {
        let mine = cell.borrow();
        mine.slots[..mine.depth].iter().any(|s| s.state.load(SeqCst) == FIRED)
    });
    if !outer_fired {
        set_async_exc(py, thread_ident(), None);
    }
}

/// Stop firing (interpreter exit).
pub fn stop() {
    STOPPED.store(true, SeqCst);
    let wd = watchdog();
    let _guard = wd.slots.lock();
    wd.wake.notify_all();
}

/// The watchdog thread: sleeps without the GIL; takes it only to fire.
fn run() {
    let wd = watchdog();
    let mut slots = wd.slots.lock();
    let mut empty_scans = 0;
    loop {
        if STOPPED.load(SeqCst) {
            wd.wake_at.store(u64::MAX, SeqCst);
            wd.wake.wait(&mut slots);
            continue;
        }
        wd.wake_at.store(0, SeqCst); // scanning
        let now = stopwatch::now();
        slots.retain(|s| s.strong_count() > 0);
        let earliest = slots
            .iter()
            .filter_map(Weak::upgrade)
            .map(|s| s.state.load(SeqCst))
            .filter(|&d| d != IDLE && d != FIRED)
            .min();
        let wake_at = match earliest {
            Some(deadline) if deadline <= now => {
                drop(slots);
                fire_expired();
                slots = wd.slots.lock();
                continue;
            }
            Some(deadline) => {
                empty_scans = 0;
                deadline
            }
            None if empty_scans < DORMANT_AFTER => {
                empty_scans += 1;
                now.saturating_add(wd.idle_horizon.load(SeqCst))
            }
            None => u64::MAX,
        };
        wd.wake_at.store(wake_at, SeqCst);
        // Woken by a new watch: attempts are running, so plan ahead again rather than go
        // dormant (a dormant watchdog is notified by every watch).
        let notified = if wake_at == u64::MAX {
            wd.wake.wait(&mut slots);
            true
        } else {
            let wait = Duration::from_nanos(stopwatch::ticks_to_nanos(wake_at - now));
            !wd.wake.wait_for(&mut slots, wait).timed_out()
        };
        if notified {
            empty_scans = 0;
        }
    }
}

fn fire_expired() {
    // Through the exit gate: never asks for the GIL once the interpreter exits.
    crate::ffi::gil::attach(|py| {
        if STOPPED.load(SeqCst) {
            return;
        }
        let Ok(cls) = async_timeout_class(py) else { return };
        let slots: Vec<Arc<Slot>> = watchdog().slots.lock().iter().filter_map(Weak::upgrade).collect();
        let now = stopwatch::now();
        for slot in slots {
            let state = slot.state.load(SeqCst);
            if state != IDLE
                && state != FIRED
                && state <= now
                && slot.state.compare_exchange(state, FIRED, SeqCst, SeqCst).is_ok()
            {
                set_async_exc(py, slot.tid, Some(cls));
            }
        }
    });
}

#[pyfunction]
fn _stop_watchdog() {
    stop();
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_stop_watchdog, m)?)
}
