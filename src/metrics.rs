//! Counters and histograms kept in atomics; Python reads them only when asked (`stats()`,
//! `_metrics()` at scrape time).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// Nanoseconds on the monotonic clock (`std::time::Instant`, portable), since a fixed point
/// early in the process.
#[inline]
pub fn mono_nanos() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
}

/// A timer for listener durations, read twice per listener call, and for timeout deadlines. On x86-64 with an invariant
/// TSC it reads the time-stamp counter (half the cost of the vDSO clock on the VMs we measure
/// on, where the two reads were a tenth of a queued event's time), scaled to nanoseconds by a
/// factor calibrated against the monotonic clock on first use; elsewhere it is `mono_nanos`.
pub mod stopwatch {
    use std::sync::OnceLock;

    /// Nanoseconds per tick, as a 32.32 fixed-point number; None: use the monotonic clock.
    fn scale() -> Option<u64> {
        static SCALE: OnceLock<Option<u64>> = OnceLock::new();
        *SCALE.get_or_init(calibrate)
    }

    #[cfg(target_arch = "x86_64")]
    fn calibrate() -> Option<u64> {
        use std::arch::x86_64::{__cpuid, _rdtsc};
        // Leaf 0x80000007 EDX bit 8: the invariant TSC (a constant rate in every power state).
        let invariant = __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0;
        if !invariant {
            return None;
        }
        // 200 µs against the monotonic clock: an error of a few parts in 10,000.
        // SAFETY: RDTSC is available on every x86-64 CPU.
        let (t0, n0) = (unsafe { _rdtsc() }, super::mono_nanos());
        let (mut t1, mut n1) = (t0, n0);
        while n1.saturating_sub(n0) < 200_000 {
            t1 = unsafe { _rdtsc() };
            n1 = super::mono_nanos();
        }
        let ticks = t1.checked_sub(t0).filter(|&t| t > 0)?;
        Some((((n1 - n0) as u128) << 32).checked_div(ticks as u128)? as u64)
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn calibrate() -> Option<u64> {
        None
    }

    /// Now, in this timer's units (ticks).
    #[inline]
    pub fn now() -> u64 {
        #[cfg(target_arch = "x86_64")]
        if scale().is_some() {
            // SAFETY: RDTSC is available on every x86-64 CPU.
            return unsafe { std::arch::x86_64::_rdtsc() };
        }
        super::mono_nanos()
    }

    /// Nanoseconds since `now()` returned `begun`.
    #[inline]
    pub fn elapsed_nanos(begun: u64) -> u64 {
        ticks_to_nanos(now().saturating_sub(begun))
    }

    #[inline]
    pub fn ticks_to_nanos(ticks: u64) -> u64 {
        match scale() {
            Some(scale) => ((ticks as u128 * scale as u128) >> 32) as u64,
            None => ticks,
        }
    }

    /// Microseconds since the Unix epoch, for event timestamps: the real-time clock read at
    /// most every 10 ms per thread, and the ticks since then added to it. Every event carries
    /// a timestamp, and on the VMs we measure on a real-time clock read was a tenth of
    /// creating an event. Between two reads the result can be off by the calibration error
    /// over 10 ms (a few microseconds); a step of the system clock shows within 10 ms.
    #[inline]
    pub fn wall_micros() -> i64 {
        thread_local! {
            /// (ticks, real-time nanoseconds) when this thread last read the real-time clock.
            static ANCHOR: std::cell::Cell<(u64, i64)> = const { std::cell::Cell::new((0, 0)) };
        }
        static REFRESH_TICKS: OnceLock<u64> = OnceLock::new();
        if scale().is_none() {
            return super::epoch_micros();
        }
        let refresh = *REFRESH_TICKS.get_or_init(|| nanos_to_ticks(10_000_000));
        let ticks = now();
        ANCHOR.with(|anchor| {
            let (t0, real0) = anchor.get();
            let since = ticks.wrapping_sub(t0);
            if t0 != 0 && since < refresh {
                return (real0 + ticks_to_nanos(since) as i64) / 1000;
            }
            let real = super::epoch_nanos();
            anchor.set((ticks, real));
            real / 1000
        })
    }

    pub fn nanos_to_ticks(nanos: u64) -> u64 {
        match scale() {
            Some(scale) => {
                ((nanos as u128) << 32).checked_div(scale as u128).map_or(u64::MAX, |t| t.min(u64::MAX as u128) as u64)
            }
            None => nanos,
        }
    }
}

/// Nanoseconds since the Unix epoch on the real-time clock (`std::time::SystemTime`);
/// negative before 1970.
#[inline]
pub fn epoch_nanos() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(before) => -(before.duration().as_nanos() as i64),
    }
}

/// Microseconds since the Unix epoch on the real-time clock.
#[inline]
pub fn epoch_micros() -> i64 {
    epoch_nanos().div_euclid(1000)
}

/// Upper bounds, in seconds, of the listener-duration histogram buckets.
pub const DURATION_BOUNDS: [f64; 14] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

const DURATION_BOUNDS_NANOS: [u64; 14] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Add `n` to an atomic that is only ever written with the GIL held (the callers take the
/// `Python` token to prove it). On a GIL build the GIL already serialises the writes, so a
/// plain load and store does, without the lock-prefixed add, which costs an uncontended ~7 ns
/// on the VMs we measure on (a few per emit add up); reads stay well-defined from any thread.
/// On a free-threaded build (`Py_GIL_DISABLED`) nothing serialises them: an atomic add.
#[inline]
fn add_under_gil(a: &AtomicU64, n: u64, _py: Python<'_>) {
    #[cfg(not(Py_GIL_DISABLED))]
    a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
    #[cfg(Py_GIL_DISABLED)]
    a.fetch_add(n, Relaxed);
}

/// A counter bumped only with the GIL held, on the per-event paths (see `add_under_gil`).
#[derive(Default)]
pub struct GilCounter(AtomicU64);

impl GilCounter {
    #[inline]
    pub fn inc(&self, py: Python<'_>) {
        add_under_gil(&self.0, 1, py);
    }
    /// Take back an `inc` (a count made before the outcome was known).
    #[inline]
    pub fn undo(&self, py: Python<'_>) {
        add_under_gil(&self.0, u64::MAX, py);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Durations by bucket. The count of observations is the sum of the buckets, worked out when
/// read: one add fewer per listener call, and a snapshot's count always agrees with its buckets.
pub struct Histogram {
    buckets: [AtomicU64; DURATION_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_nanos: AtomicU64::new(0) }
    }
}

impl Histogram {
    #[inline]
    pub fn observe(&self, py: Python<'_>, d: Duration) {
        self.observe_nanos(py, d.as_nanos() as u64);
    }

    /// Record one observation; written only with the GIL held (see `add_under_gil`).
    #[inline]
    pub fn observe_nanos(&self, py: Python<'_>, nanos: u64) {
        let idx = DURATION_BOUNDS_NANOS.iter().position(|b| nanos <= *b).unwrap_or(DURATION_BOUNDS_NANOS.len());
        add_under_gil(&self.buckets[idx], 1, py);
        add_under_gil(&self.sum_nanos, nanos, py);
    }

    /// (bounds, non-cumulative bucket counts incl. +Inf, sum in seconds, count)
    pub fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, f64, u64)> {
        let bounds = PyList::new(py, DURATION_BOUNDS)?;
        let loaded: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count = loaded.iter().sum();
        let counts = PyList::new(py, loaded)?;
        Ok((bounds, counts, self.sum_nanos.load(Relaxed) as f64 / 1e9, count))
    }

    /// Add another histogram's counts into this snapshot-only one.
    pub fn merge_from(&self, other: &Histogram) {
        for (a, b) in self.buckets.iter().zip(other.buckets.iter()) {
            a.fetch_add(b.load(Relaxed), Relaxed);
        }
        self.sum_nanos.fetch_add(other.sum_nanos.load(Relaxed), Relaxed);
    }
}

/// Outcomes and timings of one subscriber (a listener on one component). Bumped by workers on
/// every delivery: on cache lines of its own (see `TypeCounters`).
#[derive(Default)]
#[repr(align(128))]
pub struct ListenerMetrics {
    pub success: GilCounter,
    pub failure: Counter,
    pub duration: Histogram,
}

/// Accepted, rejected and dropped emits of one event type. Bumped by producers on every emit,
/// while workers bump the listeners' counters: each kind on cache lines of its own (128 bytes:
/// x86 fetches lines in pairs), so that with the GIL off a producer and a worker on two cores
/// do not move one line between them per event because two small allocations sat side by side.
#[derive(Default)]
#[repr(align(128))]
pub struct TypeCounters {
    pub accepted: GilCounter,
    pub rejected: GilCounter,
    pub dropped: GilCounter,
}

/// A `(label, count)` list for `_metrics()`.
pub fn pairs<'py>(py: Python<'py>, items: Vec<(String, u64)>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (k, v) in items {
        list.append(PyTuple::new(py, [k.into_pyobject(py)?.into_any(), v.into_pyobject(py)?.into_any()])?)?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopwatch_measures_in_nanoseconds() {
        let begun = stopwatch::now();
        let t0 = mono_nanos();
        while mono_nanos() - t0 < 2_000_000 {}
        let took = stopwatch::elapsed_nanos(begun);
        assert!((1_900_000..20_000_000).contains(&took), "{took}");
    }

    #[test]
    fn wall_micros_follows_the_real_time_clock() {
        for _ in 0..3 {
            let ours = stopwatch::wall_micros();
            let real = epoch_micros();
            assert!((real - ours).abs() < 1_000, "{ours} vs {real}");
            let t0 = mono_nanos();
            while mono_nanos() - t0 < 7_000_000 {}
        }
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        pyo3::prepare_freethreaded_python();
        Python::with_gil(|py| {
            h.observe(py, Duration::from_micros(10));
            h.observe(py, Duration::from_millis(3));
            h.observe(py, Duration::from_secs(60));
        });
        assert_eq!(h.buckets.iter().map(|b| b.load(Relaxed)).sum::<u64>(), 3);
        assert_eq!(h.buckets[0].load(Relaxed), 1);
        assert_eq!(h.buckets[6].load(Relaxed), 1);
        assert_eq!(h.buckets[DURATION_BOUNDS.len()].load(Relaxed), 1);
    }
}
