//! Running listeners inside the `contextvars` context captured at emit time, cheaply.
//!
//! Each event's listeners must run in a fresh copy of its snapshot, so that what one event's
//! listener sets is never seen by the next event. Copying, entering and leaving a context per
//! event is a large part of a queued event's cost, and consecutive events nearly always share
//! one snapshot (`ContextCapture` hands out the same object while the emitting context holds
//! the same variables). So a worker keeps the copy it entered for the next event of the same
//! snapshot, as long as that copy still binds exactly the snapshot's variables to the very
//! same objects (nothing was set, or whatever was set was reset). Python code cannot get hold
//! of the entered context object itself, so sharing it between events is not observable.
//!
//! Contexts are compared through their public mapping protocol (`ffi::context::same_entries`):
//! the context object's layout is private to CPython.

use pyo3::prelude::*;

use crate::ffi::context::{copy, enter, exit, same_entries};

/// The context a worker has entered for the events it is running (see the module docs).
#[derive(Default)]
pub struct ContextRunner {
    /// (the snapshot, the entered copy of it)
    entered: Option<(Py<PyAny>, Py<PyAny>)>,
}

impl ContextRunner {
    /// Run `f` inside a copy of `snapshot` that holds just the snapshot's variables.
    pub fn run<R>(&mut self, py: Python<'_>, snapshot: &Py<PyAny>, f: impl FnOnce() -> R) -> PyResult<R> {
        let reusable = match &self.entered {
            Some((snap, entered)) => snap.is(snapshot) && same_entries(py, entered, snapshot),
            None => false,
        };
        if !reusable {
            self.leave(py)?;
            let fresh = copy(py, snapshot)?;
            enter(py, &fresh)?;
            self.entered = Some((snapshot.clone_ref(py), fresh));
        }
        Ok(f())
    }

    /// Leave the entered copy, if any (at the end of a batch, before the GIL is released).
    pub fn leave(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.entered.take() {
            Some((_, entered)) => exit(py, &entered),
            None => Ok(()),
        }
    }
}
