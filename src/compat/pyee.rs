//! pyee's handlers per event name, kept and dispatched in Rust for `nova.compat.pyee` (see the
//! locking rules in `compat/mod.rs`).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::{ReentrantMutex, ReentrantMutexGuard, RwLock};
use pyo3::exceptions::{PyException, PyKeyError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::call;

/// One registered handler. `key` is what `listeners()` returns and what `remove_listener`
/// matches; `value` is what pyee stores against it (the handler itself, or a `OnceCall` for
/// `once`); `func` is what is called.
struct Entry {
    key: Py<PyAny>,
    value: Py<PyAny>,
    func: Py<PyAny>,
    once: bool,
    id: u64,
}

impl Entry {
    fn clone_ref(&self, py: Python<'_>) -> Entry {
        Entry {
            key: self.key.clone_ref(py),
            value: self.value.clone_ref(py),
            func: self.func.clone_ref(py),
            once: self.once,
            id: self.id,
        }
    }
}

/// Where `key` is among `entries` (compared with Python `==`, as pyee's `OrderedDict` does).
fn position(py: Python<'_>, entries: &[Entry], key: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
    for (i, e) in entries.iter().enumerate() {
        if e.key.bind(py).eq(key)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Pure list edits, shared by the table and the unit tests: the new list after putting `new` at
/// `found` (keeping its position, as an `OrderedDict` assignment does) or at the end.
fn with_upsert<T>(old: &[T], found: Option<usize>, new: T, clone: impl Fn(&T) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity(old.len() + usize::from(found.is_none()));
    let mut new = Some(new);
    for (i, item) in old.iter().enumerate() {
        if Some(i) == found {
            out.push(new.take().expect("placed once"));
        } else {
            out.push(clone(item));
        }
    }
    if let Some(n) = new {
        out.push(n);
    }
    out
}

/// The new list without the item at `index`.
fn without<T>(old: &[T], index: usize, clone: impl Fn(&T) -> T) -> Vec<T> {
    old.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, item)| clone(item)).collect()
}

/// The handlers of one event name. Lives in the table's index dict, keyed by the event name, so
/// names compare and hash exactly as a Python dict would.
#[pyclass(module = "nova._core", frozen)]
pub struct PyeeSlot {
    handlers: RwLock<Arc<Vec<Entry>>>,
}

impl PyeeSlot {
    fn empty() -> Self {
        PyeeSlot { handlers: RwLock::new(Arc::new(Vec::new())) }
    }
    fn snapshot(&self) -> Arc<Vec<Entry>> {
        self.handlers.read().clone()
    }
}

#[pymethods]
impl PyeeSlot {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(g) = self.handlers.try_read() {
            for e in g.iter() {
                visit.call(&e.key)?;
                visit.call(&e.value)?;
                visit.call(&e.func)?;
            }
        }
        Ok(())
    }
    fn __clear__(&self) {
        let old = std::mem::replace(&mut *self.handlers.write(), Arc::new(Vec::new()));
        drop(old);
    }
}

/// What pyee stores for a `once` handler: calling it calls the handler. The table recognises it
/// and removes the entry before the call, so the handler runs at most once.
#[pyclass(module = "nova._core", frozen)]
pub struct OnceCall {
    func: Py<PyAny>,
}

#[pymethods]
impl OnceCall {
    #[new]
    fn new(func: Py<PyAny>) -> Self {
        OnceCall { func }
    }
    #[getter]
    fn func(&self, py: Python<'_>) -> Py<PyAny> {
        self.func.clone_ref(py)
    }
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call(py, &self.func, args, kwargs)
    }
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> (Bound<'py, PyType>, (Py<PyAny>,)) {
        (slf.get_type(), (slf.get().func.clone_ref(slf.py()),))
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("<once {}>", self.func.bind(py).repr()?))
    }
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.func)
    }
}

// How handlers are run, chosen per class when an emitter is created (see `PyeeTable::new`).
const RUN_SYNC: u8 = 0; // call the handler; exceptions propagate (pyee.EventEmitter)
const RUN_ASYNCIO: u8 = 1; // call; schedule an awaitable result; exceptions -> "error"
const RUN_CUSTOM: u8 = 2; // self._emit_run(f, args, kwargs) (a subclass's own)
const RUN_MASK: u8 = 3;
const CUSTOM_ERROR: u8 = 4; // self._emit_handle_potential_error is a subclass's own
const CUSTOM_CALL: u8 = 8; // self._call_handlers is a subclass's own

/// Base class of `nova.compat.pyee.EventEmitter`: the listener table and `emit`.
#[pyclass(module = "nova._core", name = "PyeeTable", subclass, frozen, weakref)]
pub struct PyeeTable {
    /// event name -> PyeeSlot. Reads happen without locks (under the GIL, a dict lookup is
    /// atomic); every change happens under `write`.
    index: Py<PyDict>,
    write: ReentrantMutex<()>,
    mode: AtomicU8,
    next_id: AtomicU64,
}

fn native_tag(cls: &Bound<'_, PyType>, name: &str) -> Option<String> {
    cls.getattr(name).and_then(|f| f.getattr("_nova_native")).and_then(|t| t.extract::<String>()).ok()
}

impl PyeeTable {
    fn lock(&self, py: Python<'_>) -> ReentrantMutexGuard<'_, ()> {
        loop {
            if let Some(g) = self.write.try_lock() {
                return g;
            }
            // Another thread holds it and may be waiting for the GIL: wait with the GIL released.
            py.allow_threads(|| drop(self.write.lock()));
        }
    }

    fn slot<'py>(&self, py: Python<'py>, event: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyeeSlot>>> {
        let index = self.index.bind(py);
        let Some(item) = crate::ffi::object::dict_get(index, event)? else { return Ok(None) };
        // SAFETY: the index is private to this table and only ever holds PyeeSlot objects.
        Ok(Some(unsafe { item.downcast_into_unchecked::<PyeeSlot>() }))
    }

    /// Remove the entry `id` from `slot` (a `once` handler about to run). True if this call
    /// removed it, false if something else did first.
    fn take(&self, py: Python<'_>, event: &Bound<'_, PyAny>, slot: &Bound<'_, PyeeSlot>, id: u64) -> PyResult<bool> {
        let _g = self.lock(py);
        let (old, empty) = {
            let mut h = slot.get().handlers.write();
            let Some(i) = h.iter().position(|e| e.id == id) else {
                return Ok(false);
            };
            let new = without(&h, i, |e| e.clone_ref(py));
            let empty = new.is_empty();
            (std::mem::replace(&mut *h, Arc::new(new)), empty)
        };
        drop(old);
        if empty {
            self.forget_if_current(py, event, slot)?;
        }
        Ok(true)
    }

    /// `del index[event]` if it still maps to `slot` (caller holds `write`).
    fn forget_if_current(&self, py: Python<'_>, event: &Bound<'_, PyAny>, slot: &Bound<'_, PyeeSlot>) -> PyResult<()> {
        if let Some(cur) = self.slot(py, event)? {
            if cur.is(slot) {
                self.index.bind(py).del_item(event)?;
            }
        }
        Ok(())
    }

    fn run_handlers(
        &self,
        slf: &Bound<'_, PyeeTable>,
        event: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        mode: u8,
    ) -> PyResult<bool> {
        let py = slf.py();
        let Some(slot) = self.slot(py, event)? else {
            return Ok(false);
        };
        let snap = slot.get().snapshot();
        if snap.is_empty() {
            return Ok(false);
        }
        for e in snap.iter() {
            if e.once && !self.take(py, event, &slot, e.id)? {
                continue;
            }
            match mode & RUN_MASK {
                RUN_SYNC => {
                    call(py, &e.func, args, kwargs)?;
                }
                RUN_ASYNCIO => match call(py, &e.func, args, kwargs) {
                    Ok(res) => {
                        if !res.is_none() {
                            slf.call_method1(intern!(py, "_nova_schedule"), (res,))?;
                        }
                    }
                    Err(err) if err.is_instance_of::<PyException>(py) => {
                        slf.call_method1(intern!(py, "emit"), (intern!(py, "error"), err.value(py)))?;
                    }
                    Err(err) => return Err(err),
                },
                _ => {
                    let kw = match kwargs {
                        Some(k) => k.copy()?,
                        None => PyDict::new(py),
                    };
                    slf.call_method1(intern!(py, "_emit_run"), (e.func.bind(py), args, kw))?;
                }
            }
        }
        Ok(true)
    }

    fn remove(&self, py: Python<'_>, event: &Bound<'_, PyAny>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let _g = self.lock(py);
        let Some(slot) = self.slot(py, event)? else {
            return Ok(());
        };
        loop {
            let snap = slot.get().snapshot();
            let found = position(py, &snap, key)?;
            let Some(i) = found else {
                return Err(PyKeyError::new_err(key.clone().unbind()));
            };
            let new = without(&snap, i, |e| e.clone_ref(py));
            let empty = new.is_empty();
            let old = {
                let mut h = slot.get().handlers.write();
                if !Arc::ptr_eq(&h, &snap) {
                    continue;
                }
                std::mem::replace(&mut *h, Arc::new(new))
            };
            drop(old);
            if empty {
                self.forget_if_current(py, event, &slot)?;
            }
            return Ok(());
        }
    }
}

#[pymethods]
impl PyeeTable {
    #[new]
    #[classmethod]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(cls: &Bound<'_, PyType>, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        let mut mode = match native_tag(cls, "_emit_run").as_deref() {
            Some("sync") => RUN_SYNC,
            Some("asyncio") => RUN_ASYNCIO,
            None if cls.getattr("_emit_run").is_err() => RUN_SYNC,
            _ => RUN_CUSTOM,
        };
        if cls.getattr("_emit_handle_potential_error").is_ok()
            && native_tag(cls, "_emit_handle_potential_error").is_none()
        {
            mode |= CUSTOM_ERROR;
        }
        if cls.getattr("_call_handlers").is_ok() && native_tag(cls, "_call_handlers").is_none() {
            mode |= CUSTOM_CALL;
        }
        PyeeTable {
            index: PyDict::new(cls.py()).unbind(),
            write: ReentrantMutex::new(()),
            mode: AtomicU8::new(mode),
            next_id: AtomicU64::new(0),
        }
    }

    /// `emit(event, *args, **kwargs) -> bool`: call every handler of `event` with the arguments;
    /// true if there was one. An unhandled `"error"` event raises.
    #[pyo3(signature = (event, *args, **kwargs))]
    fn emit(
        slf: &Bound<'_, Self>,
        event: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let this = slf.get();
        let mode = this.mode.load(Ordering::Relaxed);
        let handled = if mode & CUSTOM_CALL != 0 {
            let kw = match kwargs {
                Some(k) => k.copy()?,
                None => PyDict::new(py),
            };
            slf.call_method1(intern!(py, "_call_handlers"), (event, args, kw))?.is_truthy()?
        } else {
            this.run_handlers(slf, event, args, kwargs, mode)?
        };
        if !handled && (mode & CUSTOM_ERROR != 0 || event.eq(intern!(py, "error"))?) {
            let error = match args.get_item(0) {
                Ok(a) => a,
                Err(_) => py.None().into_bound(py),
            };
            slf.call_method1(intern!(py, "_emit_handle_potential_error"), (event, error))?;
        }
        Ok(handled)
    }

    /// pyee's `_call_handlers(event, args, kwargs)`: run the handlers, true if there were any.
    /// (`kwargs` is a dict, as pyee passes it, not `**kwargs`.)
    fn _nova_call_handlers(
        slf: &Bound<'_, Self>,
        event: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: &Bound<'_, PyDict>,
    ) -> PyResult<bool> {
        let this = slf.get();
        let kwargs = Some(kwargs).filter(|k| !k.is_empty());
        this.run_handlers(slf, event, args, kwargs, this.mode.load(Ordering::Relaxed))
    }

    /// Add or replace (keeping its place) the handler `key` of `event`.
    fn _nova_add(
        &self,
        py: Python<'_>,
        event: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        key.hash()?; // an OrderedDict key must be hashable; fail as pyee would
        let (func, once) = match value.downcast::<OnceCall>() {
            Ok(o) => (o.get().func.clone_ref(py), true),
            Err(_) => (value.clone().unbind(), false),
        };
        let _g = self.lock(py);
        let slot = match self.slot(py, event)? {
            Some(s) => s,
            None => {
                let s = Bound::new(py, PyeeSlot::empty())?;
                self.index.bind(py).set_item(event, &s)?;
                s
            }
        };
        loop {
            let snap = slot.get().snapshot();
            let found = position(py, &snap, key)?;
            let entry = Entry {
                key: key.clone().unbind(),
                value: value.clone().unbind(),
                func: func.clone_ref(py),
                once,
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
            };
            let new = with_upsert(&snap, found, entry, |e| e.clone_ref(py));
            let old = {
                let mut h = slot.get().handlers.write();
                if !Arc::ptr_eq(&h, &snap) {
                    continue; // changed while we compared (re-entrant code): redo
                }
                std::mem::replace(&mut *h, Arc::new(new))
            };
            drop(old);
            return Ok(());
        }
    }

    fn _nova_remove(&self, py: Python<'_>, event: &Bound<'_, PyAny>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.remove(py, event, key)
    }

    /// Without an event: forget every event. With one: it stays known, with no handlers.
    #[pyo3(signature = (event=None))]
    fn _nova_clear(&self, py: Python<'_>, event: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let _g = self.lock(py);
        let index = self.index.bind(py);
        match event {
            None => index.clear(),
            Some(ev) => index.set_item(ev, Bound::new(py, PyeeSlot::empty())?)?,
        }
        Ok(())
    }

    fn _nova_listeners<'py>(&self, py: Python<'py>, event: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        match self.slot(py, event)? {
            None => Ok(PyList::empty(py)),
            Some(s) => PyList::new(py, s.get().snapshot().iter().map(|e| e.key.bind(py))),
        }
    }

    fn _nova_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySet>> {
        PySet::new(py, self.index.bind(py).keys())
    }

    /// `[(event, [(key, value), ...]), ...]` in insertion order.
    fn _nova_items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (event, slot) in self.index.bind(py).copy()?.iter() {
            let slot = slot.downcast_into::<PyeeSlot>()?;
            let pairs = PyList::empty(py);
            for e in slot.get().snapshot().iter() {
                pairs.append((e.key.bind(py), e.value.bind(py)))?;
            }
            out.append((event, pairs))?;
        }
        Ok(out)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.index)
    }

    fn __clear__(&self) {
        Python::with_gil(|py| self.index.bind(py).clear());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_keeps_position_or_appends() {
        let v = vec![1, 2, 3];
        assert_eq!(with_upsert(&v, Some(1), 9, |x| *x), vec![1, 9, 3]);
        assert_eq!(with_upsert(&v, None, 9, |x| *x), vec![1, 2, 3, 9]);
        assert_eq!(with_upsert(&[], None, 9, |x: &i32| *x), vec![9]);
        assert_eq!(without(&v, 0, |x| *x), vec![2, 3]);
        assert_eq!(without(&v, 2, |x| *x), vec![1, 2]);
    }
}
