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
//! The snapshot itself is never entered (only copies of it are), so what it binds never
//! changes: the runner reads it once, when it first enters a copy of it, and later checks the
//! entered copy against that list. So the worker does not read the snapshot object per event:
//! with the GIL off, its producer writes that object's reference count on every emit, and a
//! read from another core moves the cache line away from it each time.
//!
//! Contexts are compared through their public mapping protocol (`ffi::context`): the context
//! object's layout is private to CPython.

use pyo3::prelude::*;

use crate::ffi::context::{copy, enter, exit, Bindings};

/// A snapshot a worker has entered a copy of.
struct Entered {
    snapshot: Py<PyAny>,
    copy: Py<PyAny>,
    /// What `snapshot` binds (see the module docs).
    binds: Bindings,
}

/// The context a worker has entered for the events it is running (see the module docs).
#[derive(Default)]
pub struct ContextRunner {
    entered: Option<Entered>,
}

impl ContextRunner {
    /// Run `f` inside a copy of `snapshot` that holds just the snapshot's variables.
    pub fn run<R>(&mut self, py: Python<'_>, snapshot: &Py<PyAny>, f: impl FnOnce() -> R) -> PyResult<R> {
        let reusable = match &self.entered {
            Some(e) => e.snapshot.is(snapshot) && e.binds.held_by(py, &e.copy),
            None => false,
        };
        if !reusable {
            self.leave(py)?;
            let binds = Bindings::of(py, snapshot)?;
            let fresh = copy(py, snapshot)?;
            enter(py, &fresh)?;
            self.entered = Some(Entered { snapshot: snapshot.clone_ref(py), copy: fresh, binds });
        }
        Ok(f())
    }

    /// Leave the entered copy, if any (at the end of a batch, before the GIL is released).
    pub fn leave(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.entered.take() {
            Some(e) => exit(py, &e.copy),
            None => Ok(()),
        }
    }
}
