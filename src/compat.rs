//! Listener tables for the drop-in compatibility layers (`nova.compat.pyee`,
//! `nova.compat.blinker`).

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
