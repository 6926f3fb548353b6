//! Listener tables for the drop-in compatibility layers (`nova.compat.pyee`,
//! `nova.compat.blinker`).
//!
//! Both layers keep their listeners here and dispatch from here: `emit` / `send` are Rust
//! methods of the base classes the Python emitters and signals derive from, so one emit is one
//! Python -> Rust call plus the handler calls made from Rust.
//!
//! Locking rules (they keep Python code and Rust locks apart, which is what makes the tables
//! safe with threads, re-entrant handlers, weakref callbacks and the cycle collector):
//! - a table lock (`RwLock`) is held only around pure Rust work and increfs: nothing that can run
//!   Python code (calls, comparisons, decrefs, allocations of Python objects) happens under it;
//!   whatever a change removes is dropped after the lock is released;
//! - readers take a snapshot (`Arc<Vec<..>>`) and iterate it unlocked, so handlers may add and
//!   remove listeners while an emit is running (the running emit keeps its snapshot, as pyee does);
//! - pyee's structural changes (which compare event names and handlers with Python `==`) are
//!   serialised by a re-entrant mutex taken with the GIL released when it is contended.
//!
//! `pyee.rs` holds pyee's handlers per event name, `blinker.rs` blinker's receivers per
//! sender; this module the helpers both use.

mod blinker;
mod pyee;

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyTuple, PyType};

pub use blinker::{SignalCleanup, SignalTable};
pub use pyee::{OnceCall, PyeeSlot, PyeeTable};

/// `f(*args, **kwargs)` with the tuple and dict given (no copies).
#[inline]
pub(crate) fn call<'py>(
    py: Python<'py>,
    f: &Py<PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    crate::ffi::object::call_prepared(f.bind(py), args, kwargs)
}

/// The referent of a weak reference, or `None` once it is gone.
#[inline]
pub(crate) fn deref_weak<'py>(py: Python<'py>, r: &Py<PyAny>) -> Option<Bound<'py, PyAny>> {
    crate::ffi::object::weakref_get(py, r)
}

/// `weakref.ref(obj, callback)`; `TypeError` when `obj` cannot be weakly referenced.
pub(crate) fn new_weakref(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    callback: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    crate::ffi::object::weakref_new(py, obj, callback)
}

static METHOD_TYPE: GILOnceCell<Py<PyType>> = GILOnceCell::new();
pub(crate) static WEAK_METHOD: GILOnceCell<Py<PyAny>> = GILOnceCell::new();

pub(crate) fn method_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    METHOD_TYPE.import(py, "types", "MethodType")
}

/// `inspect.ismethod(obj)`: a bound method of a Python function (types.MethodType).
pub(crate) fn is_method(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.get_type().is(method_type(py)?))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyeeTable>()?;
    m.add_class::<PyeeSlot>()?;
    m.add_class::<OnceCall>()?;
    m.add_class::<SignalTable>()?;
    m.add_class::<SignalCleanup>()?;
    Ok(())
}
