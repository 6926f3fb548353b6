//! blinker's receivers per sender, kept and dispatched in Rust for `nova.compat.blinker` (see
//! the locking rules in `compat/mod.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};
use rustc_hash::FxHashMap;

use super::{call, deref_weak, is_method, method_type, new_weakref, WEAK_METHOD};

/// blinker's `make_id`: how receivers and senders are told apart. A bound method is its function
/// and instance; a `str` or `int` is its value; anything else is its identity. Sender 0 (and
/// False) is the ANY bucket, as in blinker, whose ANY id is 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ident {
    Any,
    Addr(usize),
    Method(usize, usize),
    Int(i64),
    BigInt(Box<str>),
    Str(Box<str>),
}

impl Ident {
    fn of(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Ident> {
        if is_method(py, obj)? {
            let f = obj.getattr(intern!(py, "__func__"))?;
            let s = obj.getattr(intern!(py, "__self__"))?;
            return Ok(Ident::Method(f.as_ptr() as usize, s.as_ptr() as usize));
        }
        if let Ok(s) = obj.downcast::<PyString>() {
            if let Ok(text) = s.to_str() {
                return Ok(Ident::Str(text.into()));
            }
            return Ok(Ident::Addr(obj.as_ptr() as usize)); // lone surrogates: by identity
        }
        if let Ok(i) = obj.downcast::<PyInt>() {
            return Ok(match i.extract::<i64>() {
                Ok(v) => Ident::from_int(v),
                Err(_) => Ident::BigInt(i.str()?.to_str()?.into()),
            });
        }
        Ok(Ident::Addr(obj.as_ptr() as usize))
    }

    fn from_int(v: i64) -> Ident {
        if v == 0 {
            Ident::Any
        } else {
            Ident::Int(v)
        }
    }

    /// The Python value blinker would use as the key.
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Ident::Any => 0i64.into_pyobject(py)?.into_any(),
            Ident::Addr(a) => a.into_pyobject(py)?.into_any(),
            Ident::Method(f, s) => (*f, *s).into_pyobject(py)?.into_any(),
            Ident::Int(v) => v.into_pyobject(py)?.into_any(),
            Ident::BigInt(s) => py.get_type::<PyInt>().call1((&**s,))?,
            Ident::Str(s) => PyString::new(py, s).into_any(),
        })
    }
}

/// blinker's bookkeeping, generic over what a receiver is so the rules are unit-tested in plain
/// Rust. Buckets keep connection order; empty buckets stay until `cleanup` (as blinker's
/// defaultdicts do), which `has_receivers_for` can observe.
pub struct Book<R> {
    pub receivers: FxHashMap<Ident, R>,
    pub by_sender: FxHashMap<Ident, Vec<Ident>>,
    pub by_receiver: FxHashMap<Ident, Vec<Ident>>,
    /// Order of `receivers` (blinker's dict is insertion-ordered).
    order: Vec<Ident>,
}

impl<R> Default for Book<R> {
    fn default() -> Self {
        Book {
            receivers: FxHashMap::default(),
            by_sender: FxHashMap::default(),
            by_receiver: FxHashMap::default(),
            order: Vec::new(),
        }
    }
}

impl<R> Book<R> {
    /// Connect; returns the receiver this one replaced, if any.
    pub fn connect(&mut self, rid: Ident, sid: Ident, r: R) -> Option<R> {
        let old = self.receivers.insert(rid.clone(), r);
        if old.is_none() {
            self.order.push(rid.clone());
        }
        let bucket = self.by_sender.entry(sid.clone()).or_default();
        if !bucket.contains(&rid) {
            bucket.push(rid.clone());
        }
        let senders = self.by_receiver.entry(rid).or_default();
        if !senders.contains(&sid) {
            senders.push(sid);
        }
        old
    }

    /// blinker's `_disconnect`: from ANY means from everything; else from that sender only.
    pub fn disconnect(&mut self, rid: &Ident, sid: &Ident) -> Option<R> {
        if *sid == Ident::Any {
            if self.by_receiver.remove(rid).is_some() {
                for bucket in self.by_sender.values_mut() {
                    bucket.retain(|x| x != rid);
                }
            }
            let old = self.receivers.remove(rid);
            if old.is_some() {
                self.order.retain(|x| x != rid);
            }
            old
        } else {
            self.by_sender.entry(sid.clone()).or_default().retain(|x| x != rid);
            self.by_receiver.entry(rid.clone()).or_default().retain(|x| x != sid);
            None
        }
    }

    /// A weakly referenced sender went away.
    pub fn forget_sender(&mut self, sid: &Ident) {
        if let Some(bucket) = self.by_sender.remove(sid) {
            for rid in bucket {
                if let Some(s) = self.by_receiver.get_mut(&rid) {
                    s.retain(|x| x != sid);
                }
            }
        }
    }

    /// The receivers for `sid` (ANY's first, then the sender's own, each once), in order.
    pub fn ids_for(&self, sid: Option<&Ident>) -> Vec<Ident> {
        let mut out: Vec<Ident> = self.by_sender.get(&Ident::Any).cloned().unwrap_or_default();
        if let Some(bucket) = sid.filter(|s| **s != Ident::Any).and_then(|s| self.by_sender.get(s)) {
            let n = out.len();
            for rid in bucket {
                if !out[..n].contains(rid) {
                    out.push(rid.clone());
                }
            }
        }
        out
    }

    pub fn has_receivers_for(&self, sid: Option<&Ident>) -> bool {
        if self.receivers.is_empty() {
            return false;
        }
        if self.by_sender.get(&Ident::Any).is_some_and(|b| !b.is_empty()) {
            return true;
        }
        match sid {
            None => false,
            Some(s) => self.by_sender.contains_key(s),
        }
    }

    /// Whether some sender other than ANY has a non-empty bucket.
    pub fn has_specific(&self) -> bool {
        self.by_sender.iter().any(|(s, b)| *s != Ident::Any && !b.is_empty())
    }

    pub fn cleanup(&mut self) {
        self.by_sender.retain(|_, b| !b.is_empty());
        self.by_receiver.retain(|_, b| !b.is_empty());
    }

    pub fn ordered(&self) -> impl Iterator<Item = (&Ident, &R)> {
        self.order.iter().filter_map(|id| self.receivers.get_key_value(id))
    }
}

/// `(id, [id, ...])` pairs copied out of a bucket map.
type Buckets = Vec<(Ident, Vec<Ident>)>;

/// How a receiver is held.
enum Target {
    Strong(Py<PyAny>),
    Weak(Py<PyAny>),
    /// A `weakref.WeakMethod` (whose referent is the instance) and a weak reference to the
    /// function: the bound method is rebuilt for each call, as WeakMethod does.
    Method {
        wm: Py<PyAny>,
        func: Py<PyAny>,
    },
}

struct Receiver {
    target: Target,
    is_coro: bool,
}

impl Receiver {
    /// The callable, or None if it was collected.
    fn resolve<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(match &self.target {
            Target::Strong(f) => Some(f.bind(py).clone()),
            Target::Weak(r) => deref_weak(py, r),
            Target::Method { wm, func } => match (deref_weak(py, wm), deref_weak(py, func)) {
                (Some(obj), Some(f)) => Some(method_type(py)?.call1((f, obj))?),
                _ => None,
            },
        })
    }

    /// What blinker keeps in `receivers`: the receiver, or its weak reference.
    fn stored<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        match &self.target {
            Target::Strong(f) => f.bind(py),
            Target::Weak(r) => r.bind(py),
            Target::Method { wm, .. } => wm.bind(py),
        }
    }

    fn visit(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match &self.target {
            Target::Strong(f) => visit.call(f),
            Target::Weak(r) => visit.call(r),
            Target::Method { wm, func } => {
                visit.call(wm)?;
                visit.call(func)
            }
        }
    }
}

#[derive(Default)]
struct SigInner {
    book: Book<Arc<Receiver>>,
    weak_senders: FxHashMap<Ident, Py<PyAny>>,
    /// The ANY bucket resolved, rebuilt on every change: what most sends iterate.
    any: Arc<Vec<(Ident, Arc<Receiver>)>>,
}

impl SigInner {
    /// Rebuild the ANY snapshot; returns the old one, for the caller to drop unlocked.
    #[must_use]
    fn refresh(&mut self, specific: &AtomicBool) -> Arc<Vec<(Ident, Arc<Receiver>)>> {
        let any: Vec<(Ident, Arc<Receiver>)> = self
            .book
            .ids_for(None)
            .into_iter()
            .filter_map(|rid| self.book.receivers.get(&rid).map(|r| (rid, r.clone())))
            .collect();
        specific.store(self.book.has_specific(), Ordering::Release);
        std::mem::replace(&mut self.any, Arc::new(any))
    }
}

/// Base class of `nova.compat.blinker.Signal`: receivers by sender, and `send`.
#[pyclass(module = "nova._core", name = "SignalTable", subclass, frozen, weakref)]
pub struct SignalTable {
    inner: RwLock<SigInner>,
    muted: AtomicBool,
    /// Some sender other than ANY has receivers: only then does `send` look at the sender.
    specific: AtomicBool,
}

/// The weakref callback that disconnects a collected receiver (or forgets a collected sender).
/// It holds the signal weakly, so a signal is never kept alive by what it references.
#[pyclass(module = "nova._core", frozen)]
pub struct SignalCleanup {
    signal: Py<PyAny>,
    id: Ident,
    sender: bool,
}

#[pymethods]
impl SignalCleanup {
    fn __call__(&self, py: Python<'_>, _ref: &Bound<'_, PyAny>) -> PyResult<()> {
        // During interpreter shutdown, do nothing (as blinker does); if even asking fails, the
        // interpreter is going away too.
        let finalizing =
            py.import("sys").and_then(|m| m.getattr("is_finalizing")?.call0()?.is_truthy()).unwrap_or(true);
        if finalizing {
            return Ok(());
        }
        let Some(sig) = deref_weak(py, &self.signal) else {
            return Ok(());
        };
        let table = sig.downcast::<SignalTable>()?.get();
        if self.sender {
            table.forget_sender(&self.id);
        } else {
            table.drop_receiver(&self.id, &Ident::Any);
        }
        Ok(())
    }
}

impl SignalTable {
    /// Apply `f` under the write lock and refresh the snapshot. Whatever `f` returns (removed
    /// receivers, say) and the old snapshot are dropped by the caller, after the lock is released.
    fn change<T>(&self, f: impl FnOnce(&mut SigInner) -> T) -> T {
        let (out, old_any) = {
            let mut g = self.inner.write();
            let out = f(&mut g);
            let old_any = g.refresh(&self.specific);
            (out, old_any)
        };
        drop(old_any);
        out
    }

    fn drop_receiver(&self, rid: &Ident, sid: &Ident) {
        let old = self.change(|i| i.book.disconnect(rid, sid));
        drop(old); // outside the lock: may run Python code
    }

    fn forget_sender(&self, sid: &Ident) {
        let old = self.change(|i| {
            i.book.forget_sender(sid);
            i.weak_senders.remove(sid)
        });
        drop(old);
    }

    fn cleanup_callback<'py>(slf: &Bound<'py, Self>, id: Ident, sender: bool) -> PyResult<Bound<'py, SignalCleanup>> {
        let py = slf.py();
        let signal = new_weakref(py, slf.as_any(), None)?;
        Bound::new(py, SignalCleanup { signal, id, sender })
    }

    /// Live receivers for `sender` (None: ANY's only); collected ones are disconnected.
    fn live<'py>(&self, py: Python<'py>, sid: Option<&Ident>) -> PyResult<Vec<(Bound<'py, PyAny>, bool)>> {
        let list: Vec<(Ident, Arc<Receiver>)> = {
            let g = self.inner.read();
            g.book
                .ids_for(sid)
                .into_iter()
                .filter_map(|rid| g.book.receivers.get(&rid).map(|r| (rid, r.clone())))
                .collect()
        };
        let mut out = Vec::with_capacity(list.len());
        for (rid, r) in list {
            match r.resolve(py)? {
                Some(f) => out.push((f, r.is_coro)),
                None => self.drop_receiver(&rid, &Ident::Any),
            }
        }
        Ok(out)
    }

    /// blinker creates the ANY bucket whenever it looks receivers up; so do we (it shows in
    /// `_by_sender`).
    fn touch_any(&self) {
        let needed = {
            let g = self.inner.read();
            !g.book.receivers.is_empty() && !g.book.by_sender.contains_key(&Ident::Any)
        };
        if needed {
            self.inner.write().book.by_sender.entry(Ident::Any).or_default();
        }
    }
}

#[pymethods]
impl SignalTable {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        SignalTable {
            inner: RwLock::new(SigInner::default()),
            muted: AtomicBool::new(false),
            specific: AtomicBool::new(false),
        }
    }

    #[getter]
    fn get_is_muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_is_muted(&self, value: bool) {
        self.muted.store(value, Ordering::Relaxed);
    }

    /// `send(sender=None, /, *, _async_wrapper=None, **kwargs) -> [(receiver, result), ...]`.
    #[pyo3(signature = (sender=None, /, *, _async_wrapper=None, **kwargs))]
    fn send<'py>(
        slf: &Bound<'py, Self>,
        sender: Option<&Bound<'py, PyAny>>,
        _async_wrapper: Option<&Bound<'py, PyAny>>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let this = slf.get();
        let results = PyList::empty(py);
        if this.muted.load(Ordering::Relaxed) {
            return Ok(results);
        }
        let sender = match sender {
            Some(s) => s.clone(),
            None => py.None().into_bound(py),
        };
        let args = PyTuple::new(py, [&sender])?;
        let kwargs = kwargs.filter(|k| !k.is_empty());
        let async_wrapper = _async_wrapper.filter(|w| !w.is_none());

        // The common case: receivers for ANY only, iterated from the cached snapshot.
        let specific = this.specific.load(Ordering::Acquire);
        let list: Arc<Vec<(Ident, Arc<Receiver>)>> = if specific {
            let sid = Ident::of(py, &sender)?;
            this.touch_any();
            let g = this.inner.read();
            let ids = g.book.ids_for(Some(&sid));
            Arc::new(ids.into_iter().filter_map(|rid| g.book.receivers.get(&rid).map(|r| (rid, r.clone()))).collect())
        } else {
            let g = this.inner.read();
            if g.any.is_empty() {
                let touch = !g.book.receivers.is_empty() && !g.book.by_sender.contains_key(&Ident::Any);
                drop(g);
                if touch {
                    this.touch_any();
                }
                return Ok(results);
            }
            g.any.clone()
        };
        for (rid, r) in list.iter() {
            let Some(receiver) = r.resolve(py)? else {
                this.drop_receiver(rid, &Ident::Any);
                continue;
            };
            let result = if r.is_coro {
                let Some(wrap) = async_wrapper else {
                    return Err(PyRuntimeError::new_err("Cannot send to a coroutine function."));
                };
                let wrapped = wrap.call1((&receiver,))?.unbind();
                call(py, &wrapped, &args, kwargs)?
            } else {
                let f = receiver.clone().unbind();
                call(py, &f, &args, kwargs)?
            };
            results.append(PyTuple::new(py, [receiver, result])?)?;
        }
        Ok(results)
    }

    /// Connect (the Python layer has checked the arguments and emits `receiver_connected`).
    #[pyo3(signature = (receiver, sender, weak, sender_is_any, is_coro))]
    fn _nova_connect(
        slf: &Bound<'_, Self>,
        receiver: &Bound<'_, PyAny>,
        sender: &Bound<'_, PyAny>,
        weak: bool,
        sender_is_any: bool,
        is_coro: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let rid = Ident::of(py, receiver)?;
        let sid = if sender_is_any { Ident::Any } else { Ident::of(py, sender)? };
        let target = if weak {
            let cb = Self::cleanup_callback(slf, rid.clone(), false)?;
            if is_method(py, receiver)? {
                let wm = WEAK_METHOD.import(py, "weakref", "WeakMethod")?.call1((receiver, &cb))?;
                let func = new_weakref(py, &receiver.getattr(intern!(py, "__func__"))?, None)?;
                Target::Method { wm: wm.unbind(), func }
            } else {
                Target::Weak(new_weakref(py, receiver, Some(cb.as_any()))?)
            }
        } else {
            Target::Strong(receiver.clone().unbind())
        };
        // A weakly referenceable sender gets a callback that forgets it when it is collected.
        let mut sender_ref = None;
        if sid != Ident::Any && !this.inner.read().weak_senders.contains_key(&sid) {
            let cb = Self::cleanup_callback(slf, sid.clone(), true)?;
            let made = if is_method(py, sender)? {
                WEAK_METHOD.import(py, "weakref", "WeakMethod")?.call1((sender, &cb)).map(Bound::unbind)
            } else {
                new_weakref(py, sender, Some(cb.as_any()))
            };
            match made {
                Ok(r) => sender_ref = Some(r),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) => {}
                Err(e) => return Err(e),
            }
        }
        let receiver = Arc::new(Receiver { target, is_coro });
        let garbage = this.change(|i| {
            let old_r = i.book.connect(rid, sid.clone(), receiver);
            let old_s = match sender_ref {
                Some(r) if !i.weak_senders.contains_key(&sid) => i.weak_senders.insert(sid, r),
                other => other, // already tracked: drop ours
            };
            (old_r, old_s)
        });
        drop(garbage);
        Ok(())
    }

    #[pyo3(signature = (receiver, sender, sender_is_any))]
    fn _nova_disconnect(
        &self,
        py: Python<'_>,
        receiver: &Bound<'_, PyAny>,
        sender: &Bound<'_, PyAny>,
        sender_is_any: bool,
    ) -> PyResult<()> {
        let rid = Ident::of(py, receiver)?;
        let sid = if sender_is_any { Ident::Any } else { Ident::of(py, sender)? };
        self.drop_receiver(&rid, &sid);
        Ok(())
    }

    /// The live receivers for `sender` and whether each is a coroutine function.
    fn _nova_receivers_for<'py>(
        &self,
        py: Python<'py>,
        sender: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<(Bound<'py, PyAny>, bool)>> {
        if self.inner.read().book.receivers.is_empty() {
            return Ok(Vec::new());
        }
        self.touch_any();
        let sid = Ident::of(py, sender)?;
        self.live(py, Some(&sid))
    }

    #[pyo3(signature = (sender, sender_is_any))]
    fn _nova_has_receivers_for(
        &self,
        py: Python<'_>,
        sender: &Bound<'_, PyAny>,
        sender_is_any: bool,
    ) -> PyResult<bool> {
        self.touch_any();
        let sid = if sender_is_any { None } else { Some(Ident::of(py, sender)?) };
        Ok(self.inner.read().book.has_receivers_for(sid.as_ref()))
    }

    /// `receivers`: receiver id -> the receiver (strong) or its weak reference.
    #[getter]
    fn receivers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pairs: Vec<(Ident, Arc<Receiver>)> = {
            let g = self.inner.read();
            g.book.ordered().map(|(k, r)| (k.clone(), r.clone())).collect()
        };
        let out = PyDict::new(py);
        for (k, r) in pairs {
            out.set_item(k.to_py(py)?, r.stored(py))?;
        }
        Ok(out)
    }

    /// `(by_sender, by_receiver)` as `{id: [id, ...]}` dicts.
    fn _nova_buckets<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let (s, r): (Buckets, Buckets) = {
            let g = self.inner.read();
            (
                g.book.by_sender.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                g.book.by_receiver.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            )
        };
        let conv = |m: Buckets| -> PyResult<Bound<'py, PyDict>> {
            let d = PyDict::new(py);
            for (k, v) in m {
                let items = v.iter().map(|x| x.to_py(py)).collect::<PyResult<Vec<_>>>()?;
                d.set_item(k.to_py(py)?, PyList::new(py, items)?)?;
            }
            Ok(d)
        };
        Ok((conv(s)?, conv(r)?))
    }

    fn _nova_weak_senders<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let pairs: Vec<(Ident, Py<PyAny>)> = {
            let g = self.inner.read();
            g.weak_senders.iter().map(|(k, v)| (k.clone(), v.clone_ref(py))).collect()
        };
        let out = PyDict::new(py);
        for (k, v) in pairs {
            out.set_item(k.to_py(py)?, v)?;
        }
        Ok(out)
    }

    fn _cleanup_bookkeeping(&self) {
        self.change(|i| i.book.cleanup());
    }

    fn _clear_state(&self) {
        let old = self.change(|i| (std::mem::take(&mut i.book), std::mem::take(&mut i.weak_senders)));
        drop(old);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(g) = self.inner.try_read() {
            for r in g.book.receivers.values() {
                r.visit(&visit)?;
            }
            for w in g.weak_senders.values() {
                visit.call(w)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let old = std::mem::take(&mut *self.inner.write());
        self.specific.store(false, Ordering::Release);
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: usize) -> Ident {
        Ident::Addr(n)
    }

    #[test]
    fn zero_is_any() {
        assert_eq!(Ident::from_int(0), Ident::Any);
        assert_eq!(Ident::from_int(5), Ident::Int(5));
    }

    #[test]
    fn connect_and_ids_for_dedupes_any_and_sender() {
        let mut b: Book<u32> = Book::default();
        b.connect(a(1), Ident::Any, 1);
        b.connect(a(2), a(100), 2);
        b.connect(a(1), a(100), 1); // also for the sender: called once
        assert_eq!(b.ids_for(None), vec![a(1)]);
        assert_eq!(b.ids_for(Some(&a(100))), vec![a(1), a(2)]);
        assert_eq!(b.ids_for(Some(&a(200))), vec![a(1)]);
        assert!(b.has_specific());
        assert_eq!(b.ordered().map(|(_, r)| *r).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn disconnect_from_sender_keeps_receiver_and_empty_buckets() {
        let mut b: Book<u32> = Book::default();
        b.connect(a(1), a(100), 1);
        b.connect(a(2), a(100), 2);
        b.disconnect(&a(1), &a(100));
        b.disconnect(&a(2), &a(100));
        assert_eq!(b.receivers.len(), 2);
        assert_eq!(b.by_sender.len(), 1);
        assert_eq!(b.by_receiver.len(), 2);
        assert!(!b.has_specific());
        // blinker: the key is still there, so has_receivers_for says yes
        assert!(b.has_receivers_for(Some(&a(100))));
        b.cleanup();
        assert!(b.by_sender.is_empty() && b.by_receiver.is_empty());
    }

    #[test]
    fn disconnect_any_removes_everywhere() {
        let mut b: Book<u32> = Book::default();
        b.connect(a(1), Ident::Any, 1);
        b.connect(a(1), a(100), 1);
        assert_eq!(b.disconnect(&a(1), &Ident::Any), Some(1));
        assert!(b.receivers.is_empty());
        assert!(b.by_sender.values().all(|v| v.is_empty()));
        assert!(!b.has_receivers_for(Some(&a(100))));
        assert_eq!(b.ordered().count(), 0);
    }

    #[test]
    fn forget_sender_keeps_receiver_entry() {
        let mut b: Book<u32> = Book::default();
        b.connect(a(1), a(100), 1);
        b.forget_sender(&a(100));
        assert_eq!(b.receivers.len(), 1);
        assert!(b.by_sender.is_empty());
        assert_eq!(b.by_receiver.get(&a(1)).map(Vec::len), Some(0));
        assert_eq!(b.ids_for(Some(&a(100))), Vec::<Ident>::new());
    }

    #[test]
    fn reconnect_replaces_without_duplicating() {
        let mut b: Book<u32> = Book::default();
        assert_eq!(b.connect(a(1), Ident::Any, 1), None);
        assert_eq!(b.connect(a(1), Ident::Any, 7), Some(1));
        assert_eq!(b.ids_for(None), vec![a(1)]);
        assert_eq!(b.ordered().map(|(_, r)| *r).collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn str_and_int_idents_are_values() {
        assert_eq!(Ident::Str("a".into()), Ident::Str("a".into()));
        assert_ne!(Ident::Str("1".into()), Ident::Int(1));
    }
}
