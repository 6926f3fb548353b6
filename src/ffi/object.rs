//! Object-level calls the hot paths make without PyO3's checks: a dict lookup, calls with a
//! prepared tuple and dict, weak references, a type check by type object, a plain reference
//! release, and a coroutine step.

use pyo3::ffi::PyTypeObject;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// `dict[key]` as a new reference (`PyDict_GetItemRef`, with pyo3-ffi's fallback before
/// 3.13): `None` when absent, `Err` when the lookup raised. Safe against a dict another thread
/// changes meanwhile (on a free-threaded build nothing else keeps a borrowed item alive).
#[inline]
pub fn dict_get<'py>(dict: &Bound<'py, PyDict>, key: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = dict.py();
    let mut item: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
    // SAFETY: GIL held (or attached, free-threaded); both are live; on 1, `item` is a new
    // reference; on -1 an exception is set.
    unsafe {
        match pyo3::ffi::compat::PyDict_GetItemRef(dict.as_ptr(), key.as_ptr(), &mut item) {
            1 => Ok(Some(Bound::from_owned_ptr(py, item))),
            0 => Ok(None),
            _ => Err(PyErr::fetch(py)),
        }
    }
}

/// `f(*args, **kwargs)` with the tuple and dict already made (`PyObject_Call`).
#[inline]
pub fn call_prepared<'py>(
    f: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let kw = kwargs.map_or(std::ptr::null_mut(), |k| k.as_ptr());
    // SAFETY: GIL held; all pointers are live objects (kwargs may be NULL); a new reference or
    // NULL with an exception set comes back.
    unsafe { Bound::from_owned_ptr_or_err(f.py(), pyo3::ffi::PyObject_Call(f.as_ptr(), args.as_ptr(), kw)) }
}

/// The referent of weak reference `r`, or `None` once it is gone (`PyWeakref_GetRef`, with
/// pyo3-ffi's fallback before 3.13).
#[inline]
pub fn weakref_get<'py>(py: Python<'py>, r: &Py<PyAny>) -> Option<Bound<'py, PyAny>> {
    let mut obj: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
    // SAFETY: GIL held; `r` is a weak reference; on 1, `obj` is a new reference.
    match unsafe { pyo3::ffi::compat::PyWeakref_GetRef(r.as_ptr(), &mut obj) } {
        // SAFETY: as above.
        1 => Some(unsafe { Bound::from_owned_ptr(py, obj) }),
        _ => None,
    }
}

/// `weakref.ref(obj, callback)`; `TypeError` when `obj` cannot be weakly referenced.
pub fn weakref_new(py: Python<'_>, obj: &Bound<'_, PyAny>, callback: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
    let cb = callback.map_or(std::ptr::null_mut(), |c| c.as_ptr());
    // SAFETY: GIL held; a new reference or NULL with an exception set comes back.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyWeakref_NewRef(obj.as_ptr(), cb))?.unbind()) }
}

/// Whether `obj`'s type is `tp` or a subtype of it (`Py_TYPE` and `PyType_IsSubtype`).
#[inline]
pub fn is_instance_of_type(obj: &Bound<'_, PyAny>, tp: *mut PyTypeObject) -> bool {
    // SAFETY: GIL held; `obj` is live and `tp` is a live type object (callers pass a type they
    // keep alive for the interpreter's life).
    unsafe {
        let t = pyo3::ffi::Py_TYPE(obj.as_ptr());
        t == tp || pyo3::ffi::PyType_IsSubtype(t, tp) != 0
    }
}

/// Release an owned reference with a plain `Py_DecRef`, skipping PyO3's check of whether the
/// GIL is held (a `Py`'s drop asks a thread-local).
///
/// SAFETY: the GIL is held, and the reference is owned by the caller and never used again
/// (which is why it sits in a `ManuallyDrop`).
#[inline]
pub unsafe fn release<T>(obj: &std::mem::ManuallyDrop<Py<T>>) {
    // SAFETY: as the caller promises.
    unsafe { pyo3::ffi::Py_DecRef(obj.as_ptr()) }
}

/// The length of a str in code points (`PyUnicode_GetLength`: no type-slot dispatch).
#[inline]
pub fn str_len(s: &Bound<'_, pyo3::types::PyString>) -> isize {
    // SAFETY: GIL held; `s` is a str, for which this cannot fail.
    unsafe { pyo3::ffi::PyUnicode_GetLength(s.as_ptr()) }
}

/// What one step of a coroutine or generator came to (`PyIter_Send`).
pub enum Sent<'py> {
    /// It yielded this value (it is suspended).
    Yielded(Bound<'py, PyAny>),
    /// It returned this value (it is finished).
    Returned(Bound<'py, PyAny>),
    /// It raised.
    Raised(PyErr),
}

/// Resume `iter` with `value` (`PyIter_Send`: a coroutine's `send` without the method call,
/// and without a `StopIteration` made for its return).
pub fn iter_send<'py>(py: Python<'py>, iter: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>) -> Sent<'py> {
    use pyo3::ffi::PySendResult::{PYGEN_ERROR, PYGEN_NEXT, PYGEN_RETURN};
    let mut result: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
    // SAFETY: GIL held; both are live objects; on NEXT and RETURN `result` is a new reference,
    // on ERROR an exception is set.
    unsafe {
        match pyo3::ffi::PyIter_Send(iter.as_ptr(), value.as_ptr(), &mut result) {
            PYGEN_NEXT => Sent::Yielded(Bound::from_owned_ptr(py, result)),
            PYGEN_RETURN => Sent::Returned(Bound::from_owned_ptr(py, result)),
            PYGEN_ERROR => Sent::Raised(PyErr::fetch(py)),
        }
    }
}
