//! The few CPython C functions Nova calls that are public and stable but outside the limited
//! API (so pyo3-ffi leaves them out of abi3 builds): entering a `contextvars.Context`, and
//! calling a handler without building an argument tuple. Each has existed, exported, since
//! Python 3.9; on the hot path they save an allocation and a Python-level call per event.
//! Also the two thread calls the timeout watchdog needs.
//!
//! One step goes further and relies on the type-object layout, which the limited API hides:
//! giving a class a `tp_vectorcall` (see `set_type_vectorcall`), on the CPython versions whose
//! layout is known and only after checking it against `PyType_GetSlot`. Another replaces a
//! PyO3 method by a plain C one for its common call (see `install_fast_method`).

use std::ffi::CStr;
use std::os::raw::{c_int, c_long, c_ulong, c_void};

use pyo3::ffi::{PyObject, PyTypeObject, Py_ssize_t};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyTuple};

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

/// `ctx.copy()`.
pub fn context_copy(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: GIL held; `ctx` is a live context; returns a new reference or NULL with an
    // exception set.
    unsafe { Ok(Bound::from_owned_ptr_or_err(py, PyContext_Copy(ctx.as_ptr()))?.unbind()) }
}

/// Make `ctx` the calling thread's current context (until `context_exit`).
pub fn context_enter(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<()> {
    // SAFETY: GIL held; `ctx` is a live context.
    if unsafe { PyContext_Enter(ctx.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// Leave `ctx`, entered by `context_enter` on this thread.
pub fn context_exit(py: Python<'_>, ctx: &Py<PyAny>) -> PyResult<()> {
    // SAFETY: GIL held; `ctx` is a live context.
    if unsafe { PyContext_Exit(ctx.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(())
}

/// Run `f` inside a fresh copy of the snapshot `ctx`, as `ctx.copy().run(f)` would: each
/// event gets its own context, so what one listener sets is not seen by the next event.
/// (A worker running a batch uses `context::ContextRunner`, which spares most copies.)
pub fn run_in_context<R>(py: Python<'_>, ctx: &Py<PyAny>, f: impl FnOnce() -> R) -> PyResult<R> {
    let copy = context_copy(py, ctx)?;
    context_enter(py, &copy)?;
    let out = f();
    context_exit(py, &copy)?;
    Ok(out)
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

/// The C signature of a vectorcall (PEP 590).
pub type VectorcallFunc = unsafe extern "C" fn(
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject;

/// `PyVectorcall_NARGS`: the positional count without the `PY_VECTORCALL_ARGUMENTS_OFFSET`
/// flag (a macro in C, so not exported).
#[inline]
pub fn vectorcall_nargs(nargsf: usize) -> usize {
    nargsf & !(1usize << (usize::BITS - 1))
}

/// Byte offsets of three `PyTypeObject` fields in 64-bit CPython 3.11, 3.12 and 3.13 (the same
/// in all three: 3.13 only appended fields after `tp_vectorcall`). `type_layout_known` checks
/// them against `PyType_GetSlot` before anything is written.
#[cfg(target_pointer_width = "64")]
mod layout {
    pub const TP_INIT: usize = 296;
    pub const TP_NEW: usize = 312;
    pub const TP_VECTORCALL: usize = 400;
}

/// Read the pointer-sized field at `offset` of a type object.
///
/// SAFETY: `tp` is a live type object whose layout `type_layout_known` has confirmed.
#[cfg(target_pointer_width = "64")]
unsafe fn type_field(tp: *mut PyTypeObject, offset: usize) -> *mut c_void {
    unsafe { *(tp as *const u8).add(offset).cast::<*mut c_void>() }
}

/// Whether `tp`'s layout is the one `layout` describes: a CPython from 3.11 to 3.13 (whose
/// `PyTypeObject` ends with `tp_vectorcall`), where the fields read at our offsets are the
/// ones `PyType_GetSlot` reports.
#[cfg(target_pointer_width = "64")]
fn type_layout_known(py: Python<'_>, tp: *mut PyTypeObject) -> bool {
    let v = py.version_info();
    if v < (3, 11) || v >= (3, 14) {
        return false;
    }
    // SAFETY: GIL held; `tp` is a live heap type, at least as large as a 3.11 PyTypeObject.
    unsafe {
        type_field(tp, layout::TP_NEW) == pyo3::ffi::PyType_GetSlot(tp, pyo3::ffi::Py_tp_new)
            && type_field(tp, layout::TP_INIT) == pyo3::ffi::PyType_GetSlot(tp, pyo3::ffi::Py_tp_init)
    }
}

/// Install `f` as the vectorcall of the type object `tp` itself, so that `tp(...)` calls `f`
/// directly instead of going through `type.__call__` (an argument tuple and dict, `__new__`'s
/// generic argument parsing, then `__init__`). `PyType_FromSpec` has no slot for it before
/// Python 3.14, so the field is written in place; CPython never inherits `tp_vectorcall`, so
/// subclasses keep calling `__new__` and `__init__` the usual way.
///
/// Returns false, changing nothing, where the layout is not known to be right (another
/// Python version, a 32-bit build) or the type already has a vectorcall; `tp(...)` then
/// keeps the ordinary route.
///
/// SAFETY: `tp` is a live heap type that outlives every call of `f`, and `f` gives the same
/// results as `type.__call__` would (it may hand any call it does not handle to
/// `call_via_type_call`).
pub unsafe fn set_type_vectorcall(py: Python<'_>, tp: *mut PyTypeObject, f: VectorcallFunc) -> bool {
    #[cfg(target_pointer_width = "64")]
    unsafe {
        if !type_layout_known(py, tp) || !type_field(tp, layout::TP_VECTORCALL).is_null() {
            return false;
        }
        *(tp as *mut u8).add(layout::TP_VECTORCALL).cast::<Option<VectorcallFunc>>() = Some(f);
        true
    }
    #[cfg(not(target_pointer_width = "64"))]
    {
        let _ = (py, tp, f);
        false
    }
}

/// `tp`'s `__new__` and `__init__` slots, read directly (two loads instead of two
/// `PyType_GetSlot` calls), to tell whether someone has assigned `tp.__new__` or `tp.__init__`
/// since a vectorcall was installed.
///
/// SAFETY: `set_type_vectorcall` returned true for `tp`.
#[inline]
pub unsafe fn type_new_and_init(tp: *mut PyTypeObject) -> (*mut c_void, *mut c_void) {
    #[cfg(target_pointer_width = "64")]
    unsafe {
        (type_field(tp, layout::TP_NEW), type_field(tp, layout::TP_INIT))
    }
    #[cfg(not(target_pointer_width = "64"))]
    {
        let _ = tp;
        unreachable!("set_type_vectorcall never succeeds on 32-bit builds")
    }
}

/// The call a type's vectorcall declines: what CPython does for a type without one, i.e.
/// `type(callable).__call__(callable, *args, **kwargs)` with the arguments gathered into a
/// tuple and a dict. (`PyObject_Call` would come straight back to the vectorcall.)
///
/// SAFETY: GIL held; `args` holds `nargs` positional values followed by one value per name
/// in `kwnames` (a tuple of str, or NULL), as a vectorcall receives them.
pub unsafe fn call_via_type_call(
    py: Python<'_>,
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargs: usize,
    kwnames: *mut PyObject,
) -> PyResult<*mut PyObject> {
    unsafe {
        let positional = PyTuple::new(
            py,
            (0..nargs).map(|i| Borrowed::from_ptr(py, *args.add(i))),
        )?;
        let kwargs = if kwnames.is_null() {
            None
        } else {
            let names = Borrowed::from_ptr(py, kwnames);
            let names = names.downcast_unchecked::<PyTuple>();
            let dict = PyDict::new(py);
            for (i, name) in names.iter().enumerate() {
                dict.set_item(name, Borrowed::from_ptr(py, *args.add(nargs + i)))?;
            }
            Some(dict)
        };
        let metatype = pyo3::ffi::Py_TYPE(callable);
        let tp_call = pyo3::ffi::PyType_GetSlot(metatype, pyo3::ffi::Py_tp_call);
        if tp_call.is_null() {
            return Err(pyo3::exceptions::PyTypeError::new_err("type object is not callable"));
        }
        let tp_call: pyo3::ffi::ternaryfunc = std::mem::transmute(tp_call);
        let kwargs_ptr = kwargs.as_ref().map_or(std::ptr::null_mut(), |d| d.as_ptr());
        let out = tp_call(callable, positional.as_ptr(), kwargs_ptr);
        if out.is_null() {
            Err(PyErr::fetch(py))
        } else {
            Ok(out)
        }
    }
}

/// A method whose common call skips PyO3's wrapper (see `install_fast_method`).
pub trait FastCall {
    /// Where PyO3's own method is kept, for the calls `fast` passes on.
    fn original() -> &'static GILOnceCell<Py<PyAny>>;

    /// The common call, given `self` and the positional arguments of a call without keywords:
    /// `Some(result)` when it took the call, `None` to hand it to PyO3's method unchanged (so
    /// every other form behaves and fails exactly as before).
    ///
    /// SAFETY: GIL held; `slf` is an instance of the class the method was installed on (a
    /// method descriptor guarantees it) and `args` are live objects.
    unsafe fn fast(py: Python<'_>, slf: *mut PyObject, args: &[*mut PyObject]) -> Option<PyResult<Py<PyAny>>>;
}

/// The C entry of a `FastCall` method.
pub unsafe extern "C" fn fast_entry<M: FastCall>(
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and valid fastcall arguments; PyO3's
    // trampoline turns an error or a panic into a raised exception and a NULL return.
    unsafe { pyo3::impl_::trampoline::fastcall_with_keywords(slf, args, nargs, kwnames, fast_call::<M>) }
}

unsafe fn fast_call<M: FastCall>(
    py: Python<'_>,
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> PyResult<*mut PyObject> {
    // SAFETY: as CPython passes them to a METH_FASTCALL | METH_KEYWORDS method.
    unsafe {
        if kwnames.is_null() {
            let positional = std::slice::from_raw_parts(args, nargs as usize);
            if let Some(result) = M::fast(py, slf, positional) {
                return result.map(Py::into_ptr);
            }
        }
        let original = M::original().get(py).expect("kept before the fast method is installed");
        call_method_with_self(py, original, slf, args, nargs, kwnames)
    }
}

/// Put the C method `fast_entry::<M>` in `ty`'s namespace under `name`, in place of the PyO3
/// method there, which is kept (unbound) in `M::original()` first, for the calls it does not
/// take itself.
///
/// Why: PyO3's wrapper parses the arguments against the declared signature and checks the
/// class of `self` again, which costs a hot method as much as its body. A method descriptor
/// already guarantees that `self` is an instance of `ty` (bound or unbound), so the fast path
/// may cast it unchecked. `doc` starts with the `__text_signature__` line PyO3 gave the
/// method, so introspection does not change.
pub fn install_fast_method<M: FastCall>(
    py: Python<'_>,
    ty: &Bound<'_, pyo3::types::PyType>,
    name: &'static CStr,
    doc: &'static CStr,
) -> PyResult<()> {
    let name_str = name.to_str().expect("method names are ASCII");
    let _ = M::original().set(py, ty.getattr(name_str)?.unbind());
    // The descriptor keeps a pointer to its PyMethodDef for as long as it lives; the class
    // (and so the descriptor) lives until the interpreter exits: one small leak per class.
    let def = Box::leak(Box::new(pyo3::ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: pyo3::ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: fast_entry::<M> },
        ml_flags: pyo3::ffi::METH_FASTCALL | pyo3::ffi::METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }));
    // SAFETY: GIL held; `ty` is a live type object and `def` is never freed.
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))?
    };
    ty.setattr(name_str, descr)
}

/// `method(slf, *args, **kwargs)` for the arguments a fast method received.
///
/// SAFETY: GIL held; `args` holds `nargs` positional values followed by one value per name in
/// `kwnames` (a tuple of str, or NULL).
pub unsafe fn call_method_with_self(
    py: Python<'_>,
    method: &Py<PyAny>,
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> PyResult<*mut PyObject> {
    unsafe {
        let nkw = if kwnames.is_null() { 0 } else { pyo3::ffi::PyTuple_Size(kwnames) };
        let mut all = Vec::with_capacity((1 + nargs + nkw) as usize);
        all.push(slf);
        all.extend_from_slice(std::slice::from_raw_parts(args, (nargs + nkw) as usize));
        let out = PyObject_Vectorcall(method.as_ptr(), all.as_ptr(), (nargs + 1) as usize, kwnames);
        if out.is_null() {
            Err(PyErr::fetch(py))
        } else {
            Ok(out)
        }
    }
}
