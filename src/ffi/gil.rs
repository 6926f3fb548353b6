//! Taking the GIL from Nova's own native threads (pool workers, the timeout watchdog), and
//! their thread states.
//!
//! Two rules keep this sound on every CPython:
//!
//! 1. A thread state is made, used and freed on its own thread. A worker binds one for its
//!    whole life with the documented `PyGILState_Ensure`/`PyGILState_Release` pair
//!    ([`ThreadState`]), so each batch re-takes the GIL cheaply through `Python::with_gil`,
//!    and the worker frees it itself as it ends. (Freeing another thread's state from the
//!    thread that holds the GIL unbinds *the caller's* `PyGILState` slot on 3.12 and later:
//!    its next `PyGILState_Ensure` then waits for the GIL it holds, or aborts.)
//! 2. No native thread asks for the GIL once the interpreter is finalising: CPython would end
//!    the thread inside the call (`pthread_exit` before 3.14, a hang from 3.14), with Rust
//!    frames on its stack. Nova's exit hook (`nova._core._at_exit`, run by `atexit`, before
//!    finalisation) closes a gate: every native thread asks for the GIL only through
//!    [`attach`], which counts it in and checks the gate first, and the hook waits (with the
//!    GIL released) until no thread is between the check and the GIL. After that no native
//!    thread of Nova's asks for the GIL again; the hook then joins the workers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use pyo3::prelude::*;

static EXITING: AtomicBool = AtomicBool::new(false);
/// Written by every worker batch: on a cache line of its own, away from statics read per event.
static ENTERING: crossbeam_utils::CachePadded<AtomicUsize> = crossbeam_utils::CachePadded::new(AtomicUsize::new(0));

/// Run `f` with the GIL, from a thread that may not hold it; `None`, without touching Python,
/// once the interpreter is exiting. A thread that already holds the GIL (a nested call) may use
/// `Python::with_gil` directly.
pub fn attach<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    // Counted in before the gate is read, and the exit hook closes the gate before it reads
    // the count (both sequentially consistent): either the hook sees this thread and waits
    // for it, or this thread sees the gate closed.
    ENTERING.fetch_add(1, SeqCst);
    if EXITING.load(SeqCst) {
        ENTERING.fetch_sub(1, SeqCst);
        return None;
    }
    Some(Python::with_gil(|py| {
        ENTERING.fetch_sub(1, SeqCst);
        f(py)
    }))
}

/// Close the gate (interpreter exit, with the GIL held): from now on no native thread of
/// Nova's takes the GIL. Returns once every thread already past the gate has it and let go of
/// it again or is running Python code (it runs to the end of its batch, then stops).
pub fn close_gate(py: Python<'_>) {
    EXITING.store(true, SeqCst);
    py.allow_threads(|| {
        while ENTERING.load(SeqCst) > 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    });
}

/// A native thread's Python thread state, kept bound for the thread's whole life so that each
/// `Python::with_gil` on it is a plain re-acquire, not a thread-state setup. Made and dropped
/// on the thread itself (it is `!Send`).
pub struct ThreadState {
    state: pyo3::ffi::PyGILState_STATE,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ThreadState {
    /// Bind a thread state to the calling thread; `None` once the interpreter is exiting.
    pub fn bind() -> Option<ThreadState> {
        // Inside `attach` the GIL is held, so this second Ensure only counts the state in
        // (LOCKED): when `attach` lets go, the state stays bound and the GIL is released.
        // SAFETY: GIL held; paired with the Release in `drop`, on this thread.
        let state = attach(|_py| unsafe { pyo3::ffi::PyGILState_Ensure() })?;
        Some(ThreadState { state, _not_send: std::marker::PhantomData })
    }
}

impl Drop for ThreadState {
    /// Let go of the thread state on its own thread: with the GIL taken through `attach`, the
    /// Release undoes `bind`'s count and `attach`'s own release then frees the state. Once the
    /// interpreter is exiting nothing is touched: finalisation frees every thread state left.
    fn drop(&mut self) {
        let state = self.state;
        // SAFETY: GIL held (inside attach); `state` came from the Ensure in `bind` on this
        // thread.
        let _ = attach(|_py| unsafe { pyo3::ffi::PyGILState_Release(state) });
    }
}
