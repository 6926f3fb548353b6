//! C entry points of Nova's own: a method whose common call skips PyO3's argument parsing, and
//! the trampoline every such entry goes through (errors and panics become raised exceptions).

use std::ffi::CStr;
use std::panic::AssertUnwindSafe;

use pyo3::ffi::{PyObject, Py_ssize_t};

/// A Python object as the C API passes it (CPython's `PyObject *`).
pub type Obj = *mut PyObject;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::PyClass;

/// Run the body of a C entry point that CPython calls with the GIL held: `Ok` is returned as
/// is, an `Err` is raised, and a panic is caught and raised as `PanicException` (a panic must
/// never unwind into CPython's frames). Entering through `Python::with_gil` tells PyO3 the GIL
/// is held, so references dropped in the body are released at once.
pub fn trampoline(body: impl FnOnce(Python<'_>) -> PyResult<*mut PyObject>) -> *mut PyObject {
    Python::with_gil(|py| match std::panic::catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(out)) => out,
        Ok(Err(err)) => {
            err.restore(py);
            std::ptr::null_mut()
        }
        Err(payload) => {
            super::panic_to_pyerr(payload).restore(py);
            std::ptr::null_mut()
        }
    })
}

/// The arguments of a fast call, borrowed from the caller: the positional ones, and the
/// keyword ones where the entry passes them on.
#[derive(Clone, Copy)]
pub struct Args<'a, 'py> {
    py: Python<'py>,
    raw: &'a [*mut PyObject],
    /// The keywords' names (a tuple of str; NULL when none) and their values, in order.
    kwnames: *mut PyObject,
    kwvalues: &'a [*mut PyObject],
}

impl<'a, 'py> Args<'a, 'py> {
    /// A vectorcall's arguments: `args` holds `nargs` positional values followed by one value
    /// per name in `kwnames` (a tuple of str, or NULL).
    ///
    /// SAFETY: as CPython passes them to a vectorcall; the GIL is held.
    pub unsafe fn from_vectorcall(
        py: Python<'py>,
        args: *const *mut PyObject,
        nargs: usize,
        kwnames: *mut PyObject,
    ) -> Self {
        unsafe {
            let nkw = if kwnames.is_null() { 0 } else { pyo3::ffi::PyTuple_GET_SIZE(kwnames) as usize };
            let all = if nargs + nkw == 0 { &[][..] } else { std::slice::from_raw_parts(args, nargs + nkw) };
            Args { py, raw: &all[..nargs], kwnames, kwvalues: &all[nargs..] }
        }
    }

    /// How many positional arguments.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn has_keywords(&self) -> bool {
        !self.kwnames.is_null()
    }

    /// The call as CPython passed it: the positional values followed by the keyword values
    /// (one block), their positional count, and the keywords' names (NULL when none).
    pub fn raw_parts(&self) -> (&'a [*mut PyObject], usize, *mut PyObject) {
        let all = if self.kwvalues.is_empty() {
            self.raw
        } else {
            // SAFETY: `from_vectorcall` split one block in two: the values follow the positional ones.
            unsafe { std::slice::from_raw_parts(self.raw.as_ptr(), self.raw.len() + self.kwvalues.len()) }
        };
        (all, self.raw.len(), self.kwnames)
    }

    /// The keyword arguments, (name, value) in call order.
    pub fn keywords(&self) -> impl Iterator<Item = (Borrowed<'a, 'py, PyAny>, Borrowed<'a, 'py, PyAny>)> + 'a
    where
        'py: 'a,
    {
        let (py, names) = (self.py, self.kwnames);
        // SAFETY: `kwnames` is a tuple with one name per value, and the caller keeps the names
        // and values alive for the call.
        self.kwvalues.iter().enumerate().map(move |(i, v)| unsafe {
            (Borrowed::from_ptr(py, pyo3::ffi::PyTuple_GET_ITEM(names, i as Py_ssize_t)), Borrowed::from_ptr(py, *v))
        })
    }

    /// Argument `i` (< `len()`).
    pub fn get(&self, i: usize) -> Borrowed<'a, 'py, PyAny> {
        // SAFETY: CPython keeps every argument alive for the call; `i` is in range (else the
        // slice index panics, which the trampoline turns into an exception).
        unsafe { Borrowed::from_ptr(self.py, self.raw[i]) }
    }
}

/// A method whose common call skips PyO3's wrapper (see `install_fast_method`).
pub trait FastCall {
    /// The class the method is installed on (a frozen pyclass).
    type Class: PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync;

    /// Where PyO3's own method is kept, for the calls `fast` passes on.
    fn original() -> &'static GILOnceCell<Py<PyAny>>;

    /// The common call, given `self` and the positional arguments of a call without keywords:
    /// `Some(result)` when it took the call, `None` to hand it to PyO3's method unchanged (so
    /// every other form behaves and fails exactly as before).
    fn fast<'py>(py: Python<'py>, slf: &Self::Class, args: Args<'_, 'py>) -> Option<PyResult<Py<PyAny>>>;
}

/// The C entry of a `FastCall` method (`METH_FASTCALL | METH_KEYWORDS`).
unsafe extern "C" fn fast_entry<M: FastCall>(slf: Obj, args: *const Obj, nargs: Py_ssize_t, kwnames: Obj) -> Obj {
    trampoline(|py| {
        // SAFETY: as CPython passes them to a METH_FASTCALL | METH_KEYWORDS method.
        unsafe {
            let args = Args::from_vectorcall(py, args, nargs as usize, kwnames);
            if !args.has_keywords() {
                // A method descriptor only ever calls it with an instance of its class.
                let this = Borrowed::from_ptr(py, slf);
                let this = this.downcast_unchecked::<M::Class>().get();
                if let Some(result) = M::fast(py, this, args) {
                    return result.map(Py::into_ptr);
                }
            }
            let original = M::original().get(py).expect("kept before the fast method is installed");
            super::call::call_with_self(py, original, slf, &args)
        }
    })
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
    let descr = unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyDescr_NewMethod(ty.as_type_ptr(), def))? };
    ty.setattr(name_str, descr)
}
