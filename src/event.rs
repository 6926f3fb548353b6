//! `nova.Event`: an immutable event with a UUIDv7 id and a UTC timestamp.
//!
//! The id is made eagerly (it orders events); the timestamp is kept as microseconds since the
//! Unix epoch and becomes a `datetime` only when somebody asks for it, since most events are
//! never looked at that way.

use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering::Relaxed;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use crate::errors::{type_name, validation_error};

/// Python objects the event needs, looked up once.
struct Helpers {
    utc: Py<PyAny>,
    epoch: Py<PyAny>,
    timedelta: Py<PyAny>,
    datetime: Py<PyAny>,
    mapping_proxy: Py<PyAny>,
    empty: Py<PyDict>,
}

static HELPERS: GILOnceCell<Helpers> = GILOnceCell::new();

fn helpers(py: Python<'_>) -> PyResult<&Helpers> {
    HELPERS.get_or_try_init(py, || {
        let dt = py.import("datetime")?;
        let utc = dt.getattr("timezone")?.getattr("utc")?;
        let datetime = dt.getattr("datetime")?;
        let epoch = datetime.call1((1970, 1, 1, 0, 0, 0, 0, &utc))?;
        Ok(Helpers {
            utc: utc.unbind(),
            epoch: epoch.unbind(),
            timedelta: dt.getattr("timedelta")?.unbind(),
            datetime: datetime.unbind(),
            mapping_proxy: py.import("types")?.getattr("MappingProxyType")?.unbind(),
            empty: PyDict::new(py).unbind(),
        })
    })
}

/// The package's one JSON codec (`nova._codec`), found on first use (never while `nova`
/// itself is still importing).
struct Codec {
    to_json: Py<PyAny>,
    loads: Py<PyAny>,
}

fn codec(py: Python<'_>) -> PyResult<&Codec> {
    static CODEC: GILOnceCell<Codec> = GILOnceCell::new();
    CODEC.get_or_try_init(py, || {
        let m = py.import("nova._codec")?;
        Ok(Codec { to_json: m.getattr("to_json")?.unbind(), loads: m.getattr("loads")?.unbind() })
    })
}

#[pyclass(module = "nova", name = "Event", subclass, frozen, weakref)]
pub struct Event {
    /// A generated UUIDv7 as a number (0 when the caller gave the id); its text is made on
    /// first use, since most events are dispatched without anyone reading the id.
    uuid: u128,
    id: GILOnceCell<Py<PyString>>,
    type_: Held<PyString>,
    data: Held<PyAny>,
    /// Nova's own copy of the metadata: its (key, value) pairs, both str, in the caller's
    /// order; never handed out mutable. A compact list rather than a dict: most events carry
    /// a key or two, read by key in Rust (an ordering key), and copying a dict and freeing it
    /// cost each such event about as much as the rest of making it.
    metadata: Pairs,
    /// What `metadata` shows: a read-only view of a dict of the pairs, made on first access.
    metadata_view: GILOnceCell<Py<PyAny>>,
    micros: i64,
    /// The `datetime` for `timestamp`, made on first access or given by the caller.
    timestamp: GILOnceCell<Py<PyAny>>,
}

/// A Python object an `Event` holds. An `Event` only ever lives inside its Python object and
/// is dropped by that object's deallocation, which runs with the GIL held, so the reference
/// is released with a plain `Py_DecRef`: `Py`'s own drop first asks a thread-local whether
/// the GIL is held, and `type` and `data` are dropped with every event.
struct Held<T>(ManuallyDrop<Py<T>>);

impl<T> Held<T> {
    fn new(obj: Py<T>) -> Self {
        Held(ManuallyDrop::new(obj))
    }
}

impl<T> std::ops::Deref for Held<T> {
    type Target = Py<T>;
    fn deref(&self) -> &Py<T> {
        &self.0
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        // SAFETY: the GIL is held (see above); the reference is owned and not used again.
        unsafe { crate::ffi::object::release(&self.0) }
    }
}

fn now_micros() -> i64 {
    crate::metrics::stopwatch::wall_micros()
}

/// UUIDv7 state: for the whole process, the last (millisecond << 12 | counter) handed out, so
/// ids are strictly increasing across threads (RFC 9562 method 1, a 12-bit counter); for each
/// thread, a wyrand generator for the 62 random bits. One atomic per id, no lock (the uuid
/// crate's own v7 context takes a mutex per id). The generator is per thread because a shared
/// one costs a second lock-prefixed add per event, which on the emit path weighs more than
/// the thread-local lookup. On a cache line of its own: it is written on every event made, and
/// a read-mostly static beside it (the event type, read on every delivery) would move between
/// cores with it when the GIL is off.
static LAST_TICK: crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64> =
    crossbeam_utils::CachePadded::new(std::sync::atomic::AtomicU64::new(0));

thread_local! {
    /// (the fork generation it was seeded in, the generator's state)
    static RNG: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Bumped in a child process after `fork()` (`_after_fork_in_child`, registered with
/// `os.register_at_fork` by `nova`): a forked child inherits its parent's generators, and
/// would otherwise make the parent's random bits, so the same ids within a millisecond.
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Reseed every thread's id generator in a forked child (before it makes any id).
#[pyfunction]
pub fn _after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn random_u64() -> u64 {
    let generation = FORK_GENERATION.load(Relaxed);
    RNG.with(|state| {
        let (seeded_in, mut s) = state.get();
        if seeded_in != generation || s == 0 {
            // The OS's random source, as uuid's v4 uses it: fresh in a forked child.
            let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
            s = (a ^ b) | 1;
        }
        s = s.wrapping_add(0xa076_1d64_78bd_642f);
        state.set((generation, s));
        let t = (s as u128).wrapping_mul((s ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    })
}

/// A new UUIDv7 for an event made at `micros` since the epoch.
pub fn new_uuid7(micros: i64) -> uuid::Uuid {
    use std::sync::atomic::Ordering::Relaxed;
    let r = random_u64();
    let now_tick = ((micros.max(0) as u64 / 1000) << 12) | ((r >> 55) & 0x1FF);
    let mut last = LAST_TICK.load(Relaxed);
    let tick = loop {
        let next = if now_tick > last { now_tick } else { last + 1 };
        match LAST_TICK.compare_exchange_weak(last, next, Relaxed, Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    uuid::Uuid::from_u128(uuid7_bits(tick >> 12, (tick & 0xFFF) as u16, r))
}

/// The UUIDv7 `uuid::Builder::from_unix_timestamp_millis` makes from the millisecond, the
/// 12-bit counter (as its first two bytes) and `r` (little-endian, as the other eight),
/// assembled as one number: the builder goes byte by byte, on every event.
fn uuid7_bits(millis: u64, counter: u16, r: u64) -> u128 {
    let version_counter = 0x7000 | (counter & 0xFFF) as u64;
    let variant_random = (r.swap_bytes() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    ((millis & 0xFFFF_FFFF_FFFF) as u128) << 80 | (version_counter as u128) << 64 | variant_random as u128
}

fn id_text(py: Python<'_>, uuid: u128) -> Py<PyString> {
    let mut buf = uuid::Uuid::encode_buffer();
    let s = uuid::Uuid::from_u128(uuid).hyphenated().encode_lower(&mut buf);
    PyString::new(py, s).unbind()
}

static EVENT_TYPE: std::sync::atomic::AtomicPtr<pyo3::ffi::PyTypeObject> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// `obj` as an Event, without the generic type-object lookup (this runs on every emit).
#[inline]
pub fn as_event<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, Event>> {
    let want = EVENT_TYPE.load(std::sync::atomic::Ordering::Relaxed);
    if want.is_null() {
        return obj.downcast::<Event>().ok();
    }
    // SAFETY: the Event type lives as long as the module; the check makes the cast valid.
    crate::ffi::object::is_instance_of_type(obj, want).then(|| unsafe { obj.downcast_unchecked::<Event>() })
}

fn non_empty_str<'py>(py: Python<'py>, field: &str, value: &Bound<'py, PyAny>) -> PyResult<Py<PyString>> {
    match value.downcast::<PyString>() {
        Ok(s) if crate::ffi::object::str_len(s) > 0 => Ok(s.clone().unbind()),
        Ok(_) => Err(validation_error(py, format!("Event.{field} must be a non-empty str, got ''"))),
        Err(_) => Err(validation_error(py, format!("Event.{field} must be a non-empty str, got {}", type_name(value)))),
    }
}

/// A metadata (key, value) pair: both str.
type Pair = (Held<PyString>, Held<PyString>);

/// The pairs of an event's metadata, in order. The first is kept inline: most events with
/// metadata carry one key (an ordering key), and a heap block of its own cost such an event
/// an allocation and a free.
#[derive(Default)]
struct Pairs {
    first: Option<Pair>,
    rest: Box<[Pair]>,
}

impl Pairs {
    fn iter(&self) -> impl Iterator<Item = &Pair> {
        self.first.iter().chain(self.rest.iter())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

/// Copy a `Mapping[str, str]`, checking every key and value.
fn copy_metadata<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Pairs> {
    if value.is_none() {
        return Ok(Pairs::default());
    }
    if let Ok(dict) = value.downcast_exact::<PyDict>() {
        // The common case. With the GIL nothing changes the dict while it is read here (no
        // Python code runs); without it another thread may (PyO3's iterator panics on that),
        // so the pairs are read from a copy, taken atomically.
        #[cfg(Py_GIL_DISABLED)]
        let dict = &dict.copy()?;
        let (mut first, mut rest) = (None, Vec::new());
        for (k, v) in dict.iter() {
            let pair = match (k.downcast_into::<PyString>(), v.downcast_into::<PyString>()) {
                (Ok(k), Ok(v)) => (Held::new(k.unbind()), Held::new(v.unbind())),
                // The error names what was read, the state the check saw.
                _ => return copy_metadata_slow(py, dict.as_any()),
            };
            if first.is_none() {
                first = Some(pair);
            } else {
                rest.push(pair);
            }
        }
        return Ok(Pairs { first, rest: rest.into_boxed_slice() });
    }
    copy_metadata_slow(py, value)
}

/// Any mapping, with an error naming the first bad key or value.
fn copy_metadata_slow<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Pairs> {
    let items = match value.call_method0("items") {
        Ok(items) => items,
        Err(_) => {
            return Err(validation_error(
                py,
                format!("Event.metadata must be a mapping of str to str, got {}", type_name(value)),
            ))
        }
    };
    // Through a dict: a later value for an equal key replaces the earlier one, as in a dict.
    let out = PyDict::new(py);
    for item in items.try_iter()? {
        let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
        if !k.is_instance_of::<PyString>() {
            return Err(validation_error(
                py,
                format!("Event.metadata keys must be str, got {} ({})", type_name(&k), k.repr()?),
            ));
        }
        if !v.is_instance_of::<PyString>() {
            return Err(validation_error(
                py,
                format!("Event.metadata['{}'] must be a str, got {}; convert it with str()", k.str()?, type_name(&v)),
            ));
        }
        out.set_item(k, v)?;
    }
    copy_metadata(py, out.as_any())
}

/// Microseconds since the epoch of an aware (or naive, meaning UTC) datetime, and the aware
/// datetime to show as `timestamp`.
fn timestamp_micros<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<(i64, Bound<'py, PyAny>)> {
    let h = helpers(py)?;
    if !value.is_instance(h.datetime.bind(py))? {
        return Err(validation_error(py, format!("Event.timestamp must be a datetime, got {}", type_name(value))));
    }
    let aware = if value.getattr("tzinfo")?.is_none() {
        let kwargs = PyDict::new(py);
        kwargs.set_item("tzinfo", h.utc.bind(py))?;
        value.call_method("replace", (), Some(&kwargs))?
    } else {
        value.clone()
    };
    let delta = aware.sub(h.epoch.bind(py))?;
    let one_us = h.timedelta.bind(py).call1((0, 0, 1))?;
    let micros: i64 = delta.floor_div(one_us)?.extract()?;
    Ok((micros, aware))
}

impl Event {
    pub fn id_str(&self, py: Python<'_>) -> String {
        self.id_obj(py).to_string()
    }
    pub fn type_str(&self, py: Python<'_>) -> String {
        self.type_.bind(py).to_string()
    }
    pub fn type_obj<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        self.type_.bind(py)
    }
    pub fn id_obj<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        self.id.get_or_init(py, || id_text(py, self.uuid)).bind(py)
    }
    /// The partition (of `partitions`) the event's id maps to, as `partition_of(id)`, without
    /// making the id's str when it has not been asked for yet.
    pub fn id_partition(&self, py: Python<'_>, partitions: usize) -> PyResult<usize> {
        Ok(match self.id.get(py) {
            Some(id) => crate::partition::partition_of(id.bind(py).to_str()?, partitions),
            None => {
                let mut buf = uuid::Uuid::encode_buffer();
                let id = uuid::Uuid::from_u128(self.uuid).hyphenated().encode_lower(&mut buf);
                crate::partition::partition_of(id, partitions)
            }
        })
    }
    pub fn micros(&self) -> i64 {
        self.micros
    }
    /// The generated UUIDv7 while its text has not been made yet (None once it has, or when
    /// the caller gave the id): a writer can spell it without making the str.
    pub fn unmade_id(&self, py: Python<'_>) -> Option<u128> {
        (self.uuid != 0 && self.id.get(py).is_none()).then_some(self.uuid)
    }
    pub fn data_obj<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.data.bind(py)
    }
    /// The metadata's (key, value) pairs, in order: to read, never to hand out.
    pub fn metadata_pairs<'a, 'py: 'a>(
        &'a self,
        py: Python<'py>,
    ) -> impl Iterator<Item = (&'a Bound<'py, PyString>, &'a Bound<'py, PyString>)> + 'a {
        self.metadata.iter().map(move |(k, v)| (k.bind(py), v.bind(py)))
    }
    /// Whether the timestamp is shown in UTC (`timezone.utc`): always, unless the caller gave a
    /// datetime with another zone or offset.
    pub fn timestamp_is_utc(&self, py: Python<'_>) -> PyResult<bool> {
        match self.timestamp.get(py) {
            None => Ok(true),
            Some(ts) => Ok(ts.bind(py).getattr(pyo3::intern!(py, "tzinfo"))?.is(&helpers(py)?.utc)),
        }
    }
    /// Start loading the first metadata value into the cache (an ordering key's value, read
    /// soon after: events published in a batch are often out of cache by then; the keys are
    /// compared by identity first, which reads only the event).
    #[inline]
    pub fn prefetch_metadata(&self) {
        #[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
        if let Some((_, value)) = &self.metadata.first {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: a prefetch is only a hint and never faults; nothing is read.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(value.as_ptr() as *const i8) };
        }
    }

    /// The metadata value under `key`. Keys are compared by identity first (a topic's ordering
    /// key and the events' keys are usually one interned str, a literal in the code), then by
    /// value (where, as in a dict lookup, a str subclass's own `__eq__` may run).
    fn metadata_value<'a, 'py: 'a>(
        &'a self,
        py: Python<'py>,
        key: &Bound<'py, PyString>,
    ) -> Option<&'a Bound<'py, PyString>> {
        let pairs = || self.metadata_pairs(py);
        pairs()
            .find(|(k, _)| k.is(key))
            .or_else(|| pairs().find(|(k, _)| k.as_any().eq(key).unwrap_or(false)))
            .map(|(_, v)| v)
    }

    /// The partition (of `partitions`) of the metadata value under `key`, "" when absent.
    pub fn metadata_partition(&self, py: Python<'_>, key: &Bound<'_, PyString>, partitions: usize) -> PyResult<usize> {
        let value = match self.metadata_value(py, key) {
            Some(v) => v.to_str()?,
            None => "",
        };
        Ok(crate::partition::partition_of(value, partitions))
    }

    fn timestamp_obj<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyAny>> {
        let obj = self.timestamp.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            let h = helpers(py)?;
            let delta = h.timedelta.bind(py).call1((0, 0, self.micros))?;
            Ok(h.epoch.bind(py).add(delta)?.unbind())
        })?;
        Ok(obj.bind(py))
    }

    /// A new dict of the metadata, the caller's to change.
    fn metadata_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in self.metadata_pairs(py) {
            dict.set_item(k, v)?;
        }
        Ok(dict)
    }

    /// Build an event of class `cls` through `Event.__new__`, so subclasses keep their class
    /// without running a subclass `__init__` of another signature.
    fn build<'py>(
        py: Python<'py>,
        cls: &Bound<'py, PyType>,
        type_: &Bound<'py, PyAny>,
        data: &Bound<'py, PyAny>,
        id: &Bound<'py, PyAny>,
        metadata: &Bound<'py, PyAny>,
        timestamp: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("id", id)?;
        kwargs.set_item("metadata", metadata)?;
        kwargs.set_item("timestamp", timestamp)?;
        py.get_type::<Event>().getattr("__new__")?.call((cls, type_, data), Some(&kwargs))
    }
}

#[pymethods]
impl Event {
    /// `Event(...)`: its checks and defaults (the vectorcall of `Event("type", data)` comes
    /// here too).
    #[new]
    #[pyo3(signature = (r#type, data=None, *, id=None, metadata=None, timestamp=None))]
    fn new(
        py: Python<'_>,
        r#type: &Bound<'_, PyAny>,
        data: Option<Py<PyAny>>,
        id: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        timestamp: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let type_ = non_empty_str(py, "type", r#type)?;
        let (given_ts, micros) = match timestamp {
            Some(ts) if !ts.is_none() => {
                let (micros, aware) = timestamp_micros(py, ts)?;
                (Some(aware), micros)
            }
            _ => (None, now_micros()),
        };
        let id_cell = GILOnceCell::new();
        let uuid = match id {
            Some(v) if !v.is_none() => {
                let _ = id_cell.set(py, non_empty_str(py, "id", v)?);
                0
            }
            _ => new_uuid7(micros).as_u128(),
        };
        let metadata = match metadata {
            Some(m) => copy_metadata(py, m)?,
            None => Pairs::default(),
        };
        let cell = GILOnceCell::new();
        if let Some(aware) = given_ts {
            let _ = cell.set(py, aware.unbind());
        }
        Ok(Event {
            uuid,
            id: id_cell,
            type_: Held::new(type_),
            data: Held::new(data.unwrap_or_else(|| py.None())),
            metadata,
            metadata_view: GILOnceCell::new(),
            micros,
            timestamp: cell,
        })
    }

    #[getter]
    fn id(&self, py: Python<'_>) -> Py<PyString> {
        self.id_obj(py).clone().unbind()
    }

    #[getter]
    fn r#type(&self, py: Python<'_>) -> Py<PyString> {
        self.type_.clone_ref(py)
    }

    #[getter]
    fn data(&self, py: Python<'_>) -> Py<PyAny> {
        self.data.clone_ref(py)
    }

    /// A read-only view (`types.MappingProxyType`) of the metadata, made on first access.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let view = self.metadata_view.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            let h = helpers(py)?;
            let dict = if self.metadata.is_empty() { h.empty.bind(py).clone() } else { self.metadata_dict(py)? };
            Ok(h.mapping_proxy.bind(py).call1((dict,))?.unbind())
        })?;
        Ok(view.bind(py).clone())
    }

    #[getter]
    fn timestamp<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.timestamp_obj(py).cloned()
    }

    /// A new event whose metadata is this one's merged with `pairs` (new values win).
    #[pyo3(signature = (**pairs))]
    fn with_metadata<'py>(slf: &Bound<'py, Self>, pairs: Option<&Bound<'py, PyDict>>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let merged = this.metadata_dict(py)?;
        if let Some(p) = pairs {
            merged.update(p.as_mapping())?;
        }
        Event::build(
            py,
            &slf.get_type(),
            this.type_.bind(py).as_any(),
            this.data.bind(py),
            this.id_obj(py).as_any(),
            merged.as_any(),
            this.timestamp_obj(py)?,
        )
    }

    /// A new event with the given fields replaced; the rest (id and timestamp included) kept.
    #[pyo3(signature = (*, r#type=None, data=None, metadata=None, id=None, timestamp=None))]
    fn replace<'py>(
        slf: &Bound<'py, Self>,
        r#type: Option<Bound<'py, PyAny>>,
        data: Option<Bound<'py, PyAny>>,
        metadata: Option<Bound<'py, PyAny>>,
        id: Option<Bound<'py, PyAny>>,
        timestamp: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let type_ = r#type.unwrap_or_else(|| this.type_.bind(py).clone().into_any());
        let data = data.unwrap_or_else(|| this.data.bind(py).clone());
        let metadata = match metadata {
            Some(m) => m,
            None => this.metadata_dict(py)?.into_any(),
        };
        let id = id.unwrap_or_else(|| this.id_obj(py).clone().into_any());
        let timestamp = match timestamp {
            Some(t) => t,
            None => this.timestamp_obj(py)?.clone(),
        };
        Event::build(py, &slf.get_type(), &type_, &data, &id, &metadata, &timestamp)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match as_event(other) {
            Some(o) => {
                let other = o.get();
                let equal = if self.uuid != 0 && other.uuid != 0 {
                    self.uuid == other.uuid
                } else {
                    self.id_obj(py).as_any().eq(other.id_obj(py))?
                };
                Ok(equal.into_pyobject(py)?.to_owned().into_any().unbind())
            }
            None => Ok(py.NotImplemented()),
        }
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.id_obj(py).hash()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        Ok(format!(
            "{}(id={}, type={})",
            slf.get_type().qualname()?,
            this.id_obj(py).repr()?,
            this.type_.bind(py).repr()?
        ))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let this = slf.get();
        let restore = py.import("nova._core")?.getattr("_restore_event")?;
        let args = PyTuple::new(
            py,
            [
                slf.get_type().into_any(),
                this.id_obj(py).clone().into_any(),
                this.type_.bind(py).clone().into_any(),
                this.data.bind(py).clone(),
                this.metadata_dict(py)?.into_any(),
                this.timestamp_obj(py)?.clone(),
            ],
        )?;
        PyTuple::new(py, [restore, args.into_any()])
    }

    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __deepcopy__(slf: Py<Self>, _memo: Py<PyAny>) -> Py<Self> {
        slf
    }

    /// `{"id", "type", "data", "metadata", "timestamp"}`; the timestamp is RFC 3339 with
    /// microseconds, so `from_dict(to_dict())` is exact.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id_obj(py))?;
        d.set_item("type", self.type_.bind(py))?;
        d.set_item("data", self.data.bind(py))?;
        d.set_item("metadata", self.metadata_dict(py)?)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("timespec", "microseconds")?;
        let ts = self.timestamp_obj(py)?.call_method("isoformat", (), Some(&kwargs))?;
        d.set_item("timestamp", ts)?;
        Ok(d)
    }

    #[classmethod]
    fn from_dict<'py>(cls: &Bound<'py, PyType>, d: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let d = d
            .downcast::<PyDict>()
            .map_err(|_| validation_error(py, format!("Event.from_dict expects a dict, got {}", type_name(d))))?;
        let get = |key: &str| -> PyResult<Bound<'py, PyAny>> {
            Ok(d.get_item(key)?.unwrap_or_else(|| py.None().into_bound(py)))
        };
        let type_ =
            d.get_item("type")?.ok_or_else(|| validation_error(py, "Event.from_dict: the key 'type' is missing"))?;
        let ts = get("timestamp")?;
        let ts = if ts.is_instance_of::<PyString>() {
            let h = helpers(py)?;
            h.datetime.bind(py).call_method1("fromisoformat", (ts.clone(),)).map_err(|e| {
                let err = validation_error(py, format!("Event.timestamp: {} is not an RFC 3339 timestamp", ts));
                err.set_cause(py, Some(e));
                err
            })?
        } else {
            ts
        };
        Event::build(py, cls, &type_, &get("data")?, &get("id")?, &get("metadata")?, &ts)
    }

    fn to_json(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let this = slf.get();
        codec(py)?
            .to_json
            .bind(py)
            .call1((slf,))
            .map_err(|e| {
                let err = validation_error(
                    py,
                    format!(
                        "event {} ({}): data is not JSON-serialisable: {}",
                        this.id_obj(py),
                        this.type_.bind(py),
                        e.value(py)
                    ),
                );
                err.set_cause(py, Some(e));
                err
            })?
            .extract()
    }

    #[classmethod]
    fn from_json<'py>(cls: &Bound<'py, PyType>, s: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        let d = codec(py)?.loads.bind(py).call1((s,)).map_err(|e| {
            let err = validation_error(py, "Event.from_json: not valid JSON");
            err.set_cause(py, Some(e));
            err
        })?;
        Event::from_dict(cls, &d)
    }
}

/// Unpickling entry point (`Event.__reduce__`): `_restore_event(cls, id, type, data,
/// metadata, timestamp)`.
#[pyfunction]
#[pyo3(signature = (cls, *fields))]
pub fn _restore_event<'py>(cls: &Bound<'py, PyType>, fields: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    if fields.len() != 5 {
        return Err(PyTypeError::new_err("_restore_event: expected (cls, id, type, data, metadata, timestamp)"));
    }
    if !cls.is_subclass_of::<Event>()? {
        return Err(PyTypeError::new_err("_restore_event: not an Event class"));
    }
    let field = |i: usize| fields.get_borrowed_item(i).map(|f| f.to_owned());
    Event::build(py, cls, &field(1)?, &field(2)?, &field(0)?, &field(3)?, &field(4)?)
}

/// `Event(type, data, *, id=, metadata=, timestamp=)`, as events are made on hot paths, builds
/// the event directly with the checks of `Event.__new__` (see `ffi::types`). Any other call
/// (an unknown or repeated keyword, a wrong argument count) goes the ordinary way, so its
/// errors are PyO3's own.
struct FastEvent;

impl crate::ffi::types::FastNew for FastEvent {
    type Class = Event;

    fn construct<'py>(py: Python<'py>, args: crate::ffi::method::Args<'_, 'py>) -> Option<PyResult<Py<PyAny>>> {
        if args.len() != 1 && args.len() != 2 {
            return None;
        }
        let mut data = (args.len() == 2).then(|| args.get(1).to_owned().unbind());
        let (mut id, mut metadata, mut timestamp) = (None, None, None);
        // The keywords `Event(...)` takes (each at most once); any other goes the ordinary
        // way, whose error is PyO3's own.
        for (name, value) in args.keywords() {
            let slot = match name.downcast::<PyString>().ok()?.to_str().ok()? {
                "metadata" => &mut metadata,
                "id" => &mut id,
                "timestamp" => &mut timestamp,
                "data" if data.is_none() => {
                    data = Some(value.to_owned().unbind());
                    continue;
                }
                _ => return None,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        // The ordinary route would also run `object.__init__`, which accepts any arguments
        // when `__new__` is overridden and `__init__` is not: nothing to do here.
        let made = Event::new(py, &args.get(0), data, id.as_deref(), metadata.as_deref(), timestamp.as_deref());
        Some(made.and_then(|e| Ok(Py::new(py, e)?.into_any())))
    }

    fn slots() -> &'static crate::ffi::types::TypeSlots {
        static SLOTS: crate::ffi::types::TypeSlots = crate::ffi::types::TypeSlots::new();
        &SLOTS
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Event>()?;
    EVENT_TYPE.store(py.get_type::<Event>().as_type_ptr(), Relaxed);
    crate::ffi::types::install_type_call::<FastEvent>(py);
    m.add_function(wrap_pyfunction!(_restore_event, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid7_bits_match_the_uuid_builder() {
        let mut r = 0x0123_4567_89ab_cdefu64;
        for i in 0..1000u64 {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let (millis, counter) = (1_700_000_000_000 + i * 7919, (i * 37 % 4096) as u16);
            let mut bytes = [0u8; 10];
            bytes[0] = (counter >> 8) as u8;
            bytes[1] = counter as u8;
            bytes[2..10].copy_from_slice(&r.to_le_bytes());
            let want = uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid();
            assert_eq!(uuid7_bits(millis, counter, r), want.as_u128());
        }
    }

    #[test]
    fn ids_from_one_thread_increase_and_are_v7() {
        let now = now_micros();
        let mut last = new_uuid7(now);
        assert_eq!(last.get_version_num(), 7);
        for _ in 0..10_000 {
            let next = new_uuid7(now);
            assert!(next > last, "{next} <= {last}");
            last = next;
        }
    }
}
