//! Running listeners inside the `contextvars` context captured at emit time, cheaply.
//!
//! Each event's listeners must run in a fresh copy of its snapshot, so that what one event's
//! listener sets is never seen by the next event. Copying, entering and leaving a context per
//! event is a fifth of a queued event's cost, and consecutive events nearly always share one
//! snapshot (`ContextCapture` hands out the same object while the emitting context does not
//! change). So a worker keeps the copy it entered for the next event of the same snapshot, as
//! long as that copy still holds exactly the snapshot's variables: a context keeps them in an
//! immutable map shared by its copies, and every `ContextVar.set` or `reset` replaces the map,
//! so "same map" means "nothing was set". Python code cannot get hold of the entered context
//! object itself, so sharing it between events is not observable.
//!
//! Telling the maps apart reads a field of the context object, whose layout the C API hides:
//! that is done only where the layout is known and was checked at startup; elsewhere every
//! event gets its own copy, as before.

use std::os::raw::c_void;

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;

use crate::capi::{context_copy, context_enter, context_exit, copy_context};

/// Offset of `ctx_vars` in CPython's `PyContext` (3.11 to 3.13): after the object header
/// (16 bytes) and `ctx_prev`.
#[cfg(target_pointer_width = "64")]
const CTX_VARS: usize = 24;

/// Whether `ctx_vars` can be read at `CTX_VARS` here (checked once).
fn layout_known(py: Python<'_>) -> bool {
    static KNOWN: GILOnceCell<bool> = GILOnceCell::new();
    *KNOWN.get_or_init(py, || {
        #[cfg(target_pointer_width = "64")]
        {
            let v = py.version_info();
            if v < (3, 11) || v >= (3, 14) {
                return false;
            }
            // Two copies share their map and a third, after a set, does not.
            let check = || -> PyResult<bool> {
                let a = copy_context(py)?;
                let b = context_copy(py, &a)?;
                let var = py.import("contextvars")?.getattr("ContextVar")?.call1(("nova-layout-check",))?;
                let c = context_copy(py, &a)?;
                c.bind(py).call_method1("run", (var.getattr("set")?, 1))?;
                // SAFETY: all three are live contexts, at least CTX_VARS + 8 bytes long on
                // these versions.
                let (va, vb, vc) = unsafe { (raw_vars(&a), raw_vars(&b), raw_vars(&c)) };
                Ok(!va.is_null() && va == vb && vc != va && !vc.is_null())
            };
            check().unwrap_or(false)
        }
        #[cfg(not(target_pointer_width = "64"))]
        false
    })
}

/// SAFETY: `ctx` is a live `contextvars.Context` on a 64-bit CPython 3.11–3.13.
#[cfg(target_pointer_width = "64")]
unsafe fn raw_vars(ctx: &Py<PyAny>) -> *const c_void {
    unsafe { *(ctx.as_ptr() as *const u8).add(CTX_VARS).cast::<*const c_void>() }
}

/// Words of `PyThreadState` searched for its `context` field (it sits well within them on
/// 3.11 to 3.13, and the search stops where it is found).
#[cfg(target_pointer_width = "64")]
const THREAD_STATE_WORDS: usize = 64;

/// Where the calling thread's current context sits in CPython's `PyThreadState` (a private
/// field), found once: two contexts entered one inside the other must each be found at the
/// same word, which must follow the inner one out again. `None` where that does not hold.
fn current_context_offset(py: Python<'_>) -> Option<usize> {
    static OFFSET: GILOnceCell<Option<usize>> = GILOnceCell::new();
    *OFFSET.get_or_init(py, || {
        #[cfg(target_pointer_width = "64")]
        if layout_known(py) {
            let find = || -> PyResult<Option<usize>> {
                let (outer, inner) = (copy_context(py)?, copy_context(py)?);
                // SAFETY: GIL held, so this thread has a state; it is read word by word up to
                // the first match, within the struct on the versions `layout_known` allows.
                let ts = unsafe { pyo3::ffi::PyThreadState_Get() } as *const *const c_void;
                let word = |i: usize| unsafe { *ts.add(i) };
                let find_ctx = |ctx: &Py<PyAny>| (0..THREAD_STATE_WORDS).find(|&i| word(i) == ctx.as_ptr() as *const c_void);
                context_enter(py, &outer)?;
                let at_outer = find_ctx(&outer);
                context_enter(py, &inner)?;
                let at_inner = find_ctx(&inner);
                context_exit(py, &inner)?;
                let back = at_inner.map(|i| word(i) == outer.as_ptr() as *const c_void);
                context_exit(py, &outer)?;
                Ok(match (at_outer, at_inner, back) {
                    (Some(i), Some(j), Some(true)) if i == j => Some(i),
                    _ => None,
                })
            };
            return find().unwrap_or(None);
        }
        None
    })
}

/// Whether the calling thread's current context holds exactly `snapshot`'s variables, told
/// without copying it; false when that cannot be told (or there is no current context yet).
/// `snapshot` keeps its variables map alive, so an equal address means the same map.
pub fn current_has_vars_of(py: Python<'_>, snapshot: &Py<PyAny>) -> bool {
    #[cfg(target_pointer_width = "64")]
    if let Some(offset) = current_context_offset(py) {
        // SAFETY: the offset was found for this build; the GIL is held, so the thread state
        // and its current context (if any) are live.
        unsafe {
            let ts = pyo3::ffi::PyThreadState_Get() as *const *const u8;
            let current = *ts.add(offset);
            if current.is_null() {
                return false;
            }
            let vars = *current.add(CTX_VARS).cast::<*const c_void>();
            return !vars.is_null() && vars == raw_vars(snapshot);
        }
    }
    let _ = (py, snapshot);
    false
}

/// Whether two contexts hold the very same variables map; false when that cannot be told.
pub fn same_vars(py: Python<'_>, a: &Py<PyAny>, b: &Py<PyAny>) -> bool {
    #[cfg(target_pointer_width = "64")]
    if layout_known(py) {
        // SAFETY: the layout was checked; both are live contexts.
        return unsafe { raw_vars(a) == raw_vars(b) };
    }
    let _ = (py, a, b);
    false
}

/// The context a worker has entered for the events it is running (see the module docs).
#[derive(Default)]
pub struct ContextRunner {
    /// (the snapshot, the entered copy of it)
    entered: Option<(Py<PyAny>, Py<PyAny>)>,
}

impl ContextRunner {
    /// Run `f` inside a copy of `snapshot` that holds just the snapshot's variables.
    pub fn run<R>(&mut self, py: Python<'_>, snapshot: &Py<PyAny>, f: impl FnOnce() -> R) -> PyResult<R> {
        let reusable = match &self.entered {
            Some((snap, copy)) => snap.is(snapshot) && same_vars(py, copy, snapshot),
            None => false,
        };
        if !reusable {
            self.leave(py)?;
            let copy = context_copy(py, snapshot)?;
            context_enter(py, &copy)?;
            self.entered = Some((snapshot.clone_ref(py), copy));
        }
        Ok(f())
    }

    /// Leave the entered copy, if any (at the end of a batch, before the GIL is released).
    pub fn leave(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.entered.take() {
            Some((_, copy)) => context_exit(py, &copy),
            None => Ok(()),
        }
    }
}
