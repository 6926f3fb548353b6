//! Thread identity and asynchronous exceptions, for the timeout watchdog.

use std::os::raw::{c_long, c_ulong};

use pyo3::prelude::*;

extern "C" {
    /// Public since Python 1.x (`Include/pythread.h`); pyo3-ffi does not declare it.
    fn PyThread_get_thread_ident() -> c_ulong;
}

/// The calling thread's identifier, as `threading.get_ident()` gives it.
pub fn ident() -> c_ulong {
    // SAFETY: no preconditions; the GIL is not needed.
    unsafe { PyThread_get_thread_ident() }
}

/// Raise `exc` (an exception class) in thread `tid` at its next bytecode, or with `None` clear
/// one still pending there (`PyThreadState_SetAsyncExc`).
pub fn set_async_exc(_py: Python<'_>, tid: c_ulong, exc: Option<&Bound<'_, PyAny>>) {
    let ptr = exc.map_or(std::ptr::null_mut(), |e| e.as_ptr());
    // SAFETY: GIL held (the token); `ptr` is a live class or NULL, which means "clear".
    unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(tid as c_long, ptr) };
}
