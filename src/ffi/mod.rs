//! Every use of CPython's C API that PyO3's safe API does not cover, in one place.
//!
//! Nothing outside this module calls CPython's C API (`pyo3::ffi`) or takes raw object
//! pointers; elsewhere `unsafe` is left for PyO3's unchecked downcasts, CPU intrinsics and
//! the lock-free bookkeeping. Rules for this module:
//! - only public or documented-unstable C API, as `Include/*.h` and `Include/cpython/*.h`
//!   declare it for the CPython the extension is built for (the wheel is per CPython minor, so
//!   the non-limited API is fair game, and a struct's fields are read through pyo3-ffi's
//!   declaration for that version, never at a hand-written offset);
//! - no private struct (`PyContext`, `PyThreadState`, a dict's keys), no `pyo3::impl_`;
//! - a thread state is made, used and freed on its own thread (`gil`);
//! - version differences behind the compile-time cfgs that `build.rs` sets (`Py_3_12`, ...).

pub mod call;
pub mod cell;
pub mod context;
pub mod gil;
#[cfg(feature = "test-hooks")]
pub mod hooks;
pub mod method;
pub mod object;
pub mod thread;
pub mod types;

/// A Rust panic turned into a Python exception (PyO3's `PanicException`, with the message).
pub fn panic_to_pyerr(payload: Box<dyn std::any::Any + Send>) -> pyo3::PyErr {
    pyo3::panic::PanicException::new_err(panic_message(&payload))
}

/// The text a panic was raised with.
pub fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
