//! `nova._core`: the Rust core of Nova. Each concern lives in its own module; this file only
//! registers them.

use pyo3::prelude::*;

mod bus;
mod claim;
mod compat;
mod component;
mod context;
mod dispatch;
mod emitter;
mod errors;
mod event;
mod event_json;
mod ffi;
mod handoff;
mod holdback;
mod lifecycle;
mod listener;
mod managed;
mod metrics;
mod partition;
mod pattern;
mod pool;
mod queue;
mod retry;
mod tasks;
mod timer;
mod watchdog;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    event::register(m)?;
    event_json::register(m)?;
    listener::register(m)?;
    pool::register(m)?;
    m.add_class::<lifecycle::Component>()?;
    emitter::register(m)?;
    bus::register(m)?;
    compat::register(m)?;
    managed::register(m)?;
    watchdog::register(m)?;
    tasks::register(m)?;
    #[cfg(feature = "test-hooks")]
    ffi::hooks::register(m)?;
    Ok(())
}
