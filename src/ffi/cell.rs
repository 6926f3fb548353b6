//! A memo shared by the threads that call into one component (the last topic published to, the
//! last event type resolved, the last context captured), read and replaced without blocking.
//!
//! On a GIL build the GIL already serialises every access, so it is a `RefCell` inside PyO3's
//! `GILProtected` (no lock: a flag check per access). On a free-threaded build (`Py_GIL_DISABLED`,
//! where `GILProtected` does not exist) it is a `parking_lot::RwLock`. Either way a reader or
//! writer that would have to wait gets `None` instead: a memo is only a shortcut, so the caller
//! takes the long way, and no thread ever blocks on one while it may run Python code.

use pyo3::prelude::*;

#[cfg(not(Py_GIL_DISABLED))]
pub struct Memo<T>(pyo3::sync::GILProtected<std::cell::RefCell<T>>);

#[cfg(Py_GIL_DISABLED)]
pub struct Memo<T>(parking_lot::RwLock<T>);

impl<T: Default> Default for Memo<T> {
    fn default() -> Self {
        Memo::new(T::default())
    }
}

#[cfg(not(Py_GIL_DISABLED))]
impl<T> Memo<T> {
    pub fn new(value: T) -> Self {
        Memo(pyo3::sync::GILProtected::new(std::cell::RefCell::new(value)))
    }

    /// Read it, unless it is being replaced (by this thread, further up its stack).
    #[inline]
    pub fn read<'a>(&'a self, py: Python<'a>) -> Option<impl std::ops::Deref<Target = T> + 'a> {
        self.0.get(py).try_borrow().ok()
    }

    /// Replace it, unless it is being read or replaced.
    #[inline]
    pub fn write<'a>(&'a self, py: Python<'a>) -> Option<impl std::ops::DerefMut<Target = T> + 'a> {
        self.0.get(py).try_borrow_mut().ok()
    }
}

#[cfg(Py_GIL_DISABLED)]
impl<T> Memo<T> {
    pub fn new(value: T) -> Self {
        Memo(parking_lot::RwLock::new(value))
    }

    /// Read it, unless another thread is replacing it.
    #[inline]
    pub fn read<'a>(&'a self, _py: Python<'a>) -> Option<impl std::ops::Deref<Target = T> + 'a> {
        self.0.try_read()
    }

    /// Replace it, unless it is being read or replaced.
    #[inline]
    pub fn write<'a>(&'a self, _py: Python<'a>) -> Option<impl std::ops::DerefMut<Target = T> + 'a> {
        self.0.try_write()
    }
}
