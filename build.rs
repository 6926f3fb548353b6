//! Compile-time CPython version cfgs (`Py_3_12`, `Py_3_13`, `Py_GIL_DISABLED`, ...) for the
//! version-specific code in `src/ffi/`.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
