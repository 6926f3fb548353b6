//! A class's own vectorcall (`tp_vectorcall`, public non-limited API since 3.8 and used for
//! calls of the type object since 3.9), set through pyo3-ffi's declaration of `PyTypeObject`
//! for the CPython the extension is compiled for: no hand-written offset.
//!
//! `Event(...)` runs on every emit, and the ordinary route costs about as much as dispatching
//! the event: `type.__call__` packs the arguments into a tuple, PyO3's `__new__` parses them
//! against a signature with keywords, then `object.__init__` checks them again.

use std::os::raw::c_void;
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use pyo3::ffi::PyTypeObject;
use pyo3::prelude::*;
use pyo3::PyTypeInfo;

use super::method::{Args, Obj};

/// A class whose common construction skips `type.__call__` (see `install_type_call`).
pub trait FastNew {
    /// The class (its exact type only: subclasses take the ordinary route).
    type Class: PyTypeInfo;

    /// `Class(*args, **kwargs)`: `Some(instance)` when it took the call, `None` to hand it to
    /// `type.__call__` unchanged (so every other form behaves and fails as before).
    fn construct<'py>(py: Python<'py>, args: Args<'_, 'py>) -> Option<PyResult<Py<PyAny>>>;

    /// Where the class's type object and its `__new__` and `__init__` slots are kept once
    /// installed (a later assignment of `Class.__new__` or `Class.__init__` from Python turns
    /// the fast path off).
    fn slots() -> &'static TypeSlots;
}

/// A fast-constructed class's type object, `__new__` and `__init__`, as installed.
pub struct TypeSlots {
    tp: AtomicPtr<PyTypeObject>,
    new: AtomicPtr<c_void>,
    init: AtomicPtr<c_void>,
}

impl TypeSlots {
    pub const fn new() -> TypeSlots {
        TypeSlots {
            tp: AtomicPtr::new(std::ptr::null_mut()),
            new: AtomicPtr::new(std::ptr::null_mut()),
            init: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// `tp`'s `__new__` and `__init__` slots.
///
/// SAFETY: GIL held; `tp` is a live type object.
unsafe fn new_and_init(tp: *mut PyTypeObject) -> (*mut c_void, *mut c_void) {
    unsafe {
        (
            (*tp).tp_new.map_or(std::ptr::null_mut(), |f| f as *mut c_void),
            (*tp).tp_init.map_or(std::ptr::null_mut(), |f| f as *mut c_void),
        )
    }
}

unsafe extern "C" fn type_vectorcall<T: FastNew>(callable: Obj, args: *const Obj, nargsf: usize, kwnames: Obj) -> Obj {
    let nargs = super::call::vectorcall_nargs(nargsf);
    super::method::trampoline(|py| {
        // SAFETY: called by CPython with the GIL held and valid vectorcall arguments;
        // `callable` is the type object (or a subclass, which never inherits the vectorcall).
        unsafe {
            let tp = callable.cast::<PyTypeObject>();
            let slots = T::slots();
            let args = Args::from_vectorcall(py, args, nargs, kwnames);
            if tp == slots.tp.load(Relaxed) && new_and_init(tp) == (slots.new.load(Relaxed), slots.init.load(Relaxed)) {
                if let Some(made) = T::construct(py, args) {
                    return made.map(Py::into_ptr);
                }
            }
            super::call::call_via_type_call(py, callable, &args)
        }
    })
}

/// Give `T::Class` a vectorcall that builds the common forms through `T::construct`. Call once,
/// while the module is being initialised (no other thread uses the type yet). Does nothing
/// unless the class's `__init__` is `object.__init__` (the only one it is right to skip) and
/// the type has no vectorcall yet.
pub fn install_type_call<T: FastNew>(py: Python<'_>) {
    let tp = <T::Class as PyTypeInfo>::type_object_raw(py);
    // SAFETY: GIL held, during module initialisation; the type lives as long as the module.
    unsafe {
        let (new, init) = new_and_init(tp);
        let (_, object_init) = new_and_init(std::ptr::addr_of_mut!(pyo3::ffi::PyBaseObject_Type));
        if init != object_init || (*tp).tp_vectorcall.is_some() {
            return;
        }
        let slots = T::slots();
        slots.tp.store(tp, Relaxed);
        slots.new.store(new, Relaxed);
        slots.init.store(init, Relaxed);
        (*tp).tp_vectorcall = Some(type_vectorcall::<T>);
    }
}
