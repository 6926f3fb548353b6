//! Nova's exceptions live in `nova.errors` (Python) so users and the core share one class
//! hierarchy; this module raises them from Rust.

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyString};

static ERRORS: GILOnceCell<Py<PyModule>> = GILOnceCell::new();

fn errors_module(py: Python<'_>) -> &Bound<'_, PyModule> {
    ERRORS.get_or_init(py, || py.import("nova.errors").expect("nova.errors must be importable").unbind()).bind(py)
}

/// An error of class `nova.errors.<class>` with `msg`.
pub fn nova_err(py: Python<'_>, class: &str, msg: impl AsRef<str>) -> PyErr {
    match errors_module(py).getattr(class) {
        Ok(cls) => match cls.call1((msg.as_ref(),)) {
            Ok(value) => PyErr::from_value(value),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

macro_rules! error_fn {
    ($($fn_name:ident => $class:literal),* $(,)?) => {
        $(
            #[allow(dead_code)]
            pub fn $fn_name(py: Python<'_>, msg: impl AsRef<str>) -> PyErr {
                nova_err(py, $class, msg)
            }
        )*
    };
}

error_fn! {
    validation_error => "ValidationError",
    buffer_full => "BufferFull",
    emitter_closed => "EmitterClosed",
    bus_closed => "BusClosed",
    pool_closed => "PoolClosed",
    middleware_error => "MiddlewareError",
    topic_not_found => "TopicNotFound",
}

/// A `NovaError` for a Rust panic (a bug in Nova, not in the caller's code): says where it
/// happened and what it said.
pub fn internal_error(py: Python<'_>, place: &str, panic: &str) -> PyErr {
    nova_err(
        py,
        "NovaError",
        format!("internal error in Nova ({place}): {panic}; the event was not delivered. This is a bug in Nova: please report it"),
    )
}

/// `ListenerError(msg, listener=name, event=event)` with `cause` as `__cause__`.
pub fn listener_error(py: Python<'_>, listener: &str, event: &Bound<'_, PyAny>, cause: PyErr) -> PyErr {
    listener_error_in(py, None, listener, event, cause)
}

/// `listener_error`, the message starting with the component the listener ran in (for
/// example `emitter 'orders'`), when known.
pub fn listener_error_in(
    py: Python<'_>,
    component: Option<&str>,
    listener: &str,
    event: &Bound<'_, PyAny>,
    cause: PyErr,
) -> PyErr {
    let describe = describe_event(event);
    let place = component.map(|c| format!("{c}: ")).unwrap_or_default();
    let msg = format!(
        "{place}listener '{listener}' failed on {describe}: {}: {}",
        cause.get_type(py).qualname().map(|s| s.to_string()).unwrap_or_else(|_| "Exception".into()),
        cause.value(py)
    );
    let build = || -> PyResult<PyErr> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("listener", listener)?;
        kwargs.set_item("event", event)?;
        let value = errors_module(py).getattr("ListenerError")?.call((msg.as_str(),), Some(&kwargs))?;
        let err = PyErr::from_value(value);
        err.set_cause(py, Some(cause));
        Ok(err)
    };
    build().unwrap_or_else(|e| e)
}

/// Raise several failures as one `ExceptionGroup`, a single one as itself.
pub fn group_errors(py: Python<'_>, what: &str, mut errors: Vec<PyErr>) -> PyErr {
    if errors.len() == 1 {
        return errors.pop().unwrap();
    }
    let build = || -> PyResult<PyErr> {
        let list = PyList::empty(py);
        for e in &errors {
            list.append(e.value(py))?;
        }
        let msg = format!("{} listeners failed on {what}", errors.len());
        let group = py.import("builtins")?.getattr("ExceptionGroup")?.call1((msg, list))?;
        Ok(PyErr::from_value(group))
    };
    build().unwrap_or_else(|e| e)
}

/// "event <id> (<type>)" for messages; best effort on foreign objects. Read through the
/// attributes (error paths only), so this layer needs no knowledge of the `Event` type.
pub fn describe_event(event: &Bound<'_, PyAny>) -> String {
    let py = event.py();
    let attr = |name: &pyo3::Bound<'_, PyString>| {
        event.getattr(name).ok().and_then(|v| v.downcast_into::<PyString>().ok()).map(|s| s.to_string())
    };
    if let (Some(id), Some(type_)) = (attr(pyo3::intern!(py, "id")), attr(pyo3::intern!(py, "type"))) {
        return format!("event {id} ({type_})");
    }
    match event.repr() {
        Ok(r) => r.to_string(),
        Err(_) => "event".to_string(),
    }
}

/// Short type name of a Python object for error messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n: Bound<'_, PyString>| n.to_string()).unwrap_or_else(|_| "object".into())
}
