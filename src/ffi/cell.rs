//! A memo shared by the threads that call into one component (the last topic published to, the
//! last event type resolved, the last context captured), read and replaced without blocking.
//!
//! A reader or writer that would have to wait gets `None` instead: a memo is only a shortcut,
//! so the caller takes the long way, and no thread ever blocks on one while it may run Python
//! code (a reader may run Python code while it reads: a callable ordering key, say, which may
//! publish again on the same thread, or let another thread run).
//!
//! What guards it depends on the build, chosen at compile time:
//! - free-threaded (`Py_GIL_DISABLED`): a `parking_lot::RwLock` (`try_read`/`try_write`), on
//!   cache lines of its own: a read writes the lock word, which must not share a line with
//!   anything another core writes per event;
//! - with a GIL: a `RefCell`'s borrow flag, touched only by a thread that holds the GIL (every
//!   call takes the `Python` token, and a guard cannot leave the thread: it is not `Send`), so
//!   the GIL serialises every change of the flag, and taking or giving back the GIL orders
//!   memory between threads. This saves the two lock-prefixed instructions of the lock per
//!   read, which the per-emit paths pay: about 10% of a synchronous `emit` on these machines.

use pyo3::prelude::*;

#[cfg(Py_GIL_DISABLED)]
pub struct Memo<T>(crossbeam_utils::CachePadded<parking_lot::RwLock<T>>);

#[cfg(not(Py_GIL_DISABLED))]
pub struct Memo<T>(std::cell::RefCell<T>);

// SAFETY (GIL builds): the `RefCell` is only reached through `read`/`write`, which need the
// `Python` token, so only by the thread holding the GIL; their guards are not `Send`, and the
// thread gives the GIL back only between bytecodes or in `allow_threads`, whose closure cannot
// capture them. So at most one thread touches the cell at a time. `T: Send`: the value may be
// read and dropped by whichever thread holds the GIL.
#[cfg(not(Py_GIL_DISABLED))]
unsafe impl<T: Send> Sync for Memo<T> {}

impl<T: Default> Default for Memo<T> {
    fn default() -> Self {
        Memo::new(T::default())
    }
}

impl<T> Memo<T> {
    #[cfg(Py_GIL_DISABLED)]
    pub fn new(value: T) -> Self {
        Memo(crossbeam_utils::CachePadded::new(parking_lot::RwLock::new(value)))
    }

    #[cfg(not(Py_GIL_DISABLED))]
    pub fn new(value: T) -> Self {
        Memo(std::cell::RefCell::new(value))
    }

    /// Read it, unless another thread (or this one, further up its stack) is replacing it.
    #[inline]
    pub fn read<'a>(&'a self, _py: Python<'a>) -> Option<impl std::ops::Deref<Target = T> + 'a> {
        #[cfg(Py_GIL_DISABLED)]
        return self.0.try_read();
        #[cfg(not(Py_GIL_DISABLED))]
        return self.0.try_borrow().ok();
    }

    /// Replace it, unless it is being read or replaced.
    #[inline]
    pub fn write<'a>(&'a self, _py: Python<'a>) -> Option<impl std::ops::DerefMut<Target = T> + 'a> {
        #[cfg(Py_GIL_DISABLED)]
        return self.0.try_write();
        #[cfg(not(Py_GIL_DISABLED))]
        return self.0.try_borrow_mut().ok();
    }
}
