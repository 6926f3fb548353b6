//! Test-only fault injection (the `test-hooks` feature; release wheels never have it): Rust
//! panics at chosen points of a worker's job, and thread-spawn failures.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use pyo3::prelude::*;

/// Where a panic can be injected.
#[derive(Clone, Copy)]
pub enum Point {
    /// Inside one listener attempt, before the listener is called.
    Attempt = 0,
    /// In a lane's batch, as an item is handed to the sink (the item is cut short).
    Batch = 1,
}

static PANICS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static SPAWN_FAILURES: AtomicUsize = AtomicUsize::new(0);

fn take_one(counter: &AtomicUsize) -> bool {
    counter.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// Panic here if a panic at `point` is pending.
pub fn maybe_panic(point: Point) {
    if take_one(&PANICS[point as usize]) {
        panic!("nova test hook: injected panic");
    }
}

/// Whether the next thread spawn is to fail.
pub fn spawn_fails() -> bool {
    take_one(&SPAWN_FAILURES)
}

/// `_test_inject_panic(point, count=1)`: the next `count` passes through `point` ("attempt" or
/// "batch") panic.
#[pyfunction]
#[pyo3(signature = (point, count=1))]
fn _test_inject_panic(point: &str, count: usize) -> PyResult<()> {
    let p = match point {
        "attempt" => Point::Attempt,
        "batch" => Point::Batch,
        _ => return Err(pyo3::exceptions::PyValueError::new_err("point must be 'attempt' or 'batch'")),
    };
    PANICS[p as usize].store(count, SeqCst);
    Ok(())
}

/// `_test_fail_spawn(count=1)`: the next `count` worker-thread spawns fail.
#[pyfunction]
#[pyo3(signature = (count=1))]
fn _test_fail_spawn(count: usize) {
    SPAWN_FAILURES.store(count, SeqCst);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_test_inject_panic, m)?)?;
    m.add_function(wrap_pyfunction!(_test_fail_spawn, m)?)
}
