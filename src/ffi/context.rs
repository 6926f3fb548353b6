//! `contextvars.Context` through its public C API (`Include/context.h`).
//!
//! The context object's layout is private on every version, so two contexts are compared by
//! what they hold, read through the mapping protocol: the same variables, each bound to the
//! very same object (identity, never `==`, which could call user code and call two distinct
//! but equal request objects the same).

use pyo3::prelude::*;

/// `contextvars.copy_context()`.
pub fn copy_current(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: GIL held; returns a new reference or NULL with an exception set.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_CopyCurrent())?.unbind()) }
}

/// `ctx.copy()`.
pub fn copy(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: GIL held; `ctx` is a live context (callers only pass contexts made by
    // `copy_current`/`copy`); returns a new reference or NULL with an exception set.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyContext_Copy(ctx.as_ptr()))?.unbind()) }
}

/// Make `ctx` the calling thread's current context (until `exit`).
pub fn enter(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<()> {
    // SAFETY: GIL held; `ctx` is a live context.
    if unsafe { pyo3::ffi::PyContext_Enter(ctx.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// Leave `ctx`, entered by `enter` on this thread.
pub fn exit(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<()> {
    // SAFETY: GIL held; `ctx` is a live context.
    if unsafe { pyo3::ffi::PyContext_Exit(ctx.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// What a context binds: its variables, each with its value, read once. A captured snapshot
/// is never entered, so this stays true of it; other contexts are compared against it by
/// identity of the values (never `==`, which could call user code and call two distinct but
/// equal request objects the same).
pub struct Bindings(Vec<(Py<PyAny>, Py<PyAny>)>);

impl Bindings {
    /// Read what `ctx` binds (its mapping methods run no user code).
    pub fn of(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<Bindings> {
        let ctx = ctx.bind(py);
        let mut out = Vec::with_capacity(ctx.len()?);
        for var in ctx.try_iter()? {
            let var = var?;
            let value = ctx.get_item(&var)?;
            out.push((var.unbind(), value.unbind()));
        }
        Ok(Bindings(out))
    }

    /// Whether `ctx` binds exactly these variables, each to the identical object; reads only
    /// `ctx`, and runs no user code. An error reads as "no".
    pub fn held_by(&self, py: Python<'_>, ctx: &Py<PyAny>) -> bool {
        let ctx = ctx.bind(py);
        let same = || -> PyResult<bool> {
            if ctx.len()? != self.0.len() {
                return Ok(false);
            }
            for (var, value) in &self.0 {
                if !ctx.get_item(var)?.is(value) {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        same().unwrap_or(false)
    }
}

/// Run `f` inside a fresh copy of the snapshot `ctx`, as `ctx.copy().run(f)` would: each
/// event gets its own context, so what one listener sets is not seen by the next event.
pub fn run_in_copy<R>(py: Python<'_>, ctx: &Py<PyAny>, f: impl FnOnce() -> R) -> PyResult<R> {
    let copy = copy(py, ctx)?;
    enter(py, &copy)?;
    let out = f();
    exit(py, &copy)?;
    Ok(out)
}
