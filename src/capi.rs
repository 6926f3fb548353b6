//! The few CPython C functions Nova calls that are public and stable but outside the limited
//! API (so pyo3-ffi leaves them out of abi3 builds): entering a `contextvars.Context`, and
//! calling a handler without building an argument tuple. Each has existed, exported, since
//! Python 3.9; on the hot path they save an allocation and a Python-level call per event.
//! Also the two thread calls the timeout watchdog needs.

use std::os::raw::{c_int, c_long, c_ulong};

use pyo3::ffi::{PyObject, Py_ssize_t};
use pyo3::prelude::*;

extern "C" {
    fn PyContext_CopyCurrent() -> *mut PyObject;
    fn PyContext_Copy(ctx: *mut PyObject) -> *mut PyObject;
    fn PyContext_Enter(ctx: *mut PyObject) -> c_int;
    fn PyContext_Exit(ctx: *mut PyObject) -> c_int;
    fn PyObject_CallOneArg(callable: *mut PyObject, arg: *mut PyObject) -> *mut PyObject;
    fn PyObject_Vectorcall(
        callable: *mut PyObject,
        args: *const *mut PyObject,
        nargsf: usize,
        kwnames: *mut PyObject,
    ) -> *mut PyObject;
    fn PyThread_get_thread_ident() -> c_ulong;
}

/// The calling thread's identifier, as `threading.get_ident()` gives it.
pub fn thread_ident() -> c_ulong {
    // SAFETY: no preconditions; the GIL is not needed.
    unsafe { PyThread_get_thread_ident() }
}

/// Raise `exc` (an exception class) in thread `tid` at its next bytecode, or with `None`
/// clear one still pending there.
pub fn set_async_exc(_py: Python<'_>, tid: c_ulong, exc: Option<&Bound<'_, PyAny>>) {
    let ptr = exc.map_or(std::ptr::null_mut(), |e| e.as_ptr());
    // SAFETY: GIL held (the token); `ptr` is a live class or NULL, which means "clear".
    unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(tid as c_long, ptr) };
}

/// `contextvars.copy_context()`.
pub fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: GIL held; returns a new reference or NULL with an exception set.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, PyContext_CopyCurrent())?.unbind()) }
}

/// Run `f` inside a fresh copy of the snapshot `ctx`, as `ctx.copy().run(f)` would: each
/// event gets its own context, so what one listener sets is not seen by the next event.
pub fn run_in_context<R>(py: Python<'_>, ctx: &Py<PyAny>, f: impl FnOnce() -> R) -> PyResult<R> {
    // SAFETY: GIL held; the copy is new, owned here, and entered by this thread only.
    unsafe {
        let copy = Bound::from_owned_ptr_or_err(py, PyContext_Copy(ctx.as_ptr()))?;
        if PyContext_Enter(copy.as_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        let out = f();
        if PyContext_Exit(copy.as_ptr()) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(out)
    }
}

/// `f(arg)` through vectorcall.
#[inline]
pub fn call1<'py>(f: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: GIL held (the Bound tokens prove it); both pointers are live objects.
    unsafe { Bound::from_owned_ptr_or_err(f.py(), PyObject_CallOneArg(f.as_ptr(), arg.as_ptr())) }
}

/// `f(a, b)` through vectorcall; `b` may be None.
#[inline]
pub fn call2<'py>(
    f: &Bound<'py, PyAny>,
    a: &Bound<'py, PyAny>,
    b: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = f.py();
    let none = py.None().into_bound(py);
    let b = b.unwrap_or(&none);
    let args = [a.as_ptr(), b.as_ptr()];
    // SAFETY: GIL held; `args` outlives the call; 2 positional arguments, no keywords.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            PyObject_Vectorcall(f.as_ptr(), args.as_ptr(), 2 as Py_ssize_t as usize, std::ptr::null_mut()),
        )
    }
}
