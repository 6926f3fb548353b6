//! A class's own vectorcall (`tp_vectorcall`, public non-limited API since 3.8 and used for
//! calls of the type object since 3.9), set through pyo3-ffi's declaration of `PyTypeObject`
//! for the CPython the extension is compiled for: no hand-written offset.

use std::os::raw::c_void;

use pyo3::ffi::{PyObject, PyTypeObject};
use pyo3::prelude::*;

/// The C signature of a vectorcall (PEP 590).
pub type VectorcallFunc = unsafe extern "C" fn(
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject;

/// Install `f` as the vectorcall of the type object `tp` itself, so that `tp(...)` calls `f`
/// directly instead of `type.__call__` (an argument tuple and dict, `__new__`'s generic
/// argument parsing, then `__init__`). CPython never inherits `tp_vectorcall`, so subclasses
/// keep the usual route. Returns false, changing nothing, when the type already has one.
///
/// SAFETY: GIL held; `tp` is a live heap type that outlives every call of `f`, no other thread
/// uses it yet (call while the module is being initialised), and `f` gives the same results as
/// `type.__call__` would (it may hand any call it does not take to
/// `call::call_via_type_call`).
pub unsafe fn set_type_vectorcall(_py: Python<'_>, tp: *mut PyTypeObject, f: VectorcallFunc) -> bool {
    unsafe {
        if (*tp).tp_vectorcall.is_some() {
            return false;
        }
        (*tp).tp_vectorcall = Some(f);
        true
    }
}

/// `tp`'s `__new__` and `__init__` slots, to tell whether someone has assigned `tp.__new__`
/// or `tp.__init__` since a vectorcall was installed.
///
/// SAFETY: GIL held; `tp` is a live type object.
#[inline]
pub unsafe fn new_and_init(tp: *mut PyTypeObject) -> (*mut c_void, *mut c_void) {
    unsafe {
        (
            (*tp).tp_new.map_or(std::ptr::null_mut(), |f| f as *mut c_void),
            (*tp).tp_init.map_or(std::ptr::null_mut(), |f| f as *mut c_void),
        )
    }
}
