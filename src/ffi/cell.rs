//! A memo shared by the threads that call into one component (the last topic published to, the
//! last event type resolved, the last context captured), read and replaced without blocking.
//!
//! A `parking_lot::RwLock` on every build: the GIL is never the lock, so the same code is
//! sound on a free-threaded build. A reader or writer that would have to wait gets `None`
//! instead: a memo is only a shortcut, so the caller takes the long way, and no thread ever
//! blocks on one while it may run Python code (a reader may run Python code while it reads:
//! a callable ordering key, say, which may publish again on the same thread).

use pyo3::prelude::*;

pub struct Memo<T>(parking_lot::RwLock<T>);

impl<T: Default> Default for Memo<T> {
    fn default() -> Self {
        Memo::new(T::default())
    }
}

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
