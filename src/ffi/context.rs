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

/// Whether two contexts hold the same variables, each bound to the identical object. Reads
/// only (a context's mapping methods run no user code); an error reads as "not the same".
pub fn same_entries(py: Python<'_>, a: &Py<PyAny>, b: &Py<PyAny>) -> bool {
    if a.is(b) {
        return true;
    }
    let (a, b) = (a.bind(py), b.bind(py));
    let same = || -> PyResult<bool> {
        let n = a.len()?;
        if n != b.len()? {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
        for var in a.try_iter()? {
            let var = var?;
            let ours = a.get_item(&var)?;
            match b.get_item(&var) {
                Ok(theirs) if theirs.is(&ours) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    };
    same().unwrap_or_else(|e| {
        drop(e);
        false
    })
}

/// What a context binds, as (variable, value) pairs, in its iteration order.
pub fn entries(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<Vec<(Py<PyAny>, Py<PyAny>)>> {
    let ctx = ctx.bind(py);
    let mut out = Vec::with_capacity(ctx.len()?);
    for var in ctx.try_iter()? {
        let var = var?;
        let value = ctx.get_item(&var)?;
        out.push((var.unbind(), value.unbind()));
    }
    Ok(out)
}

/// Whether `ctx` binds exactly `entries` (as `entries` returned them), each variable to the
/// identical object; reads only `ctx`. An error reads as "no".
pub fn holds_exactly(py: Python<'_>, ctx: &Py<PyAny>, entries: &[(Py<PyAny>, Py<PyAny>)]) -> bool {
    let ctx = ctx.bind(py);
    let same = || -> PyResult<bool> {
        if ctx.len()? != entries.len() {
            return Ok(false);
        }
        for (var, value) in entries {
            if !ctx.get_item(var)?.is(value) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    same().unwrap_or_else(|e| {
        drop(e);
        false
    })
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
