//! Calling Python callables without building an argument tuple (vectorcall, PEP 590: public
//! since 3.9, in the non-limited API).

use super::method::{Args, Obj};

/// A Python object held with the GIL (PyO3's `Bound<'py, PyAny>`).
type Any<'py> = Bound<'py, PyAny>;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// `f(arg)`.
#[inline]
pub fn call1<'py>(f: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: GIL held (the Bound tokens prove it); both pointers are live objects.
    unsafe { Bound::from_owned_ptr_or_err(f.py(), pyo3::ffi::PyObject_CallOneArg(f.as_ptr(), arg.as_ptr())) }
}

/// `f(a, b)`; `b` may be None.
#[inline]
pub fn call2<'py>(f: &Bound<'py, PyAny>, a: &Bound<'py, PyAny>, b: Option<&Bound<'py, PyAny>>) -> PyResult<Any<'py>> {
    let py = f.py();
    let none = py.None().into_bound(py);
    let b = b.unwrap_or(&none);
    let args = [a.as_ptr(), b.as_ptr()];
    // SAFETY: GIL held; `args` outlives the call; 2 positional arguments, no keywords.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyObject_Vectorcall(f.as_ptr(), args.as_ptr(), 2, std::ptr::null_mut()),
        )
    }
}

/// `PyVectorcall_NARGS`: the positional count without the `PY_VECTORCALL_ARGUMENTS_OFFSET`
/// flag.
#[inline]
pub fn vectorcall_nargs(nargsf: usize) -> usize {
    nargsf & !(1usize << (usize::BITS - 1))
}

/// `method(slf, *args, **kwargs)` for the arguments a fastcall method received.
///
/// SAFETY: GIL held; `args` as CPython passed them (see `Args::from_vectorcall`).
pub unsafe fn call_with_self(py: Python<'_>, method: &Py<PyAny>, slf: Obj, args: &Args<'_, '_>) -> PyResult<Obj> {
    let (all, nargs, kwnames) = args.raw_parts();
    let mut with_self = Vec::with_capacity(1 + all.len());
    with_self.push(slf);
    with_self.extend_from_slice(all);
    // SAFETY: as above; `with_self` outlives the call.
    let out = unsafe { pyo3::ffi::PyObject_Vectorcall(method.as_ptr(), with_self.as_ptr(), nargs + 1, kwnames) };
    if out.is_null() {
        Err(PyErr::fetch(py))
    } else {
        Ok(out)
    }
}

/// What CPython does for a call of a type without a vectorcall of its own:
/// `type(callable).__call__(callable, *args, **kwargs)`, the arguments gathered into a tuple
/// and a dict (`PyObject_Call` would come straight back to the type's vectorcall).
///
/// SAFETY: GIL held; `args` holds `nargs` positional values followed by one value per name in
/// `kwnames` (a tuple of str, or NULL), as a vectorcall receives them.
pub unsafe fn call_via_type_call(py: Python<'_>, callable: Obj, args: &Args<'_, '_>) -> PyResult<Obj> {
    let positional = PyTuple::new(py, (0..args.len()).map(|i| args.get(i)))?;
    let kwargs = if args.has_keywords() {
        let dict = PyDict::new(py);
        for (name, value) in args.keywords() {
            dict.set_item(name, value)?;
        }
        Some(dict)
    } else {
        None
    };
    // SAFETY: GIL held; `callable` is a live type object; the tuple and dict live through the call.
    unsafe {
        let metatype = pyo3::ffi::Py_TYPE(callable);
        let Some(tp_call) = (*metatype).tp_call else {
            return Err(pyo3::exceptions::PyTypeError::new_err("type object is not callable"));
        };
        let kwargs_ptr = kwargs.as_ref().map_or(std::ptr::null_mut(), |d| d.as_ptr());
        let out = tp_call(callable, positional.as_ptr(), kwargs_ptr);
        if out.is_null() {
            Err(PyErr::fetch(py))
        } else {
            Ok(out)
        }
    }
}
