//! Counters and histograms kept in atomics; Python reads them only when asked (`stats()`,
//! `_metrics()` at scrape time).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// Upper bounds, in seconds, of the listener-duration histogram buckets.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
    1.0, 5.0,
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

pub struct Histogram {
    buckets: [AtomicU64; DURATION_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    #[inline]
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = DURATION_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BOUNDS.len());
        self.buckets[idx].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// (bounds, non-cumulative bucket counts incl. +Inf, sum in seconds, count)
    pub fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, f64, u64)> {
        let bounds = PyList::new(py, DURATION_BOUNDS)?;
        let counts = PyList::new(py, self.buckets.iter().map(|b| b.load(Relaxed)))?;
        Ok((
            bounds,
            counts,
            self.sum_nanos.load(Relaxed) as f64 / 1e9,
            self.count.load(Relaxed),
        ))
    }

    /// Add another histogram's counts into this snapshot-only one.
    pub fn merge_from(&self, other: &Histogram) {
        for (a, b) in self.buckets.iter().zip(other.buckets.iter()) {
            a.fetch_add(b.load(Relaxed), Relaxed);
        }
        self.sum_nanos.fetch_add(other.sum_nanos.load(Relaxed), Relaxed);
        self.count.fetch_add(other.count.load(Relaxed), Relaxed);
    }
}

/// Outcomes and timings of one subscriber (a listener on one component).
#[derive(Default)]
pub struct ListenerMetrics {
    pub success: Counter,
    pub failure: Counter,
    pub duration: Histogram,
}

/// Accepted, rejected and dropped emits of one event type.
#[derive(Default)]
pub struct TypeCounters {
    pub accepted: Counter,
    pub rejected: Counter,
    pub dropped: Counter,
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
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count.load(Relaxed), 3);
        assert_eq!(h.buckets[0].load(Relaxed), 1);
        assert_eq!(h.buckets[6].load(Relaxed), 1);
        assert_eq!(h.buckets[DURATION_BOUNDS.len()].load(Relaxed), 1);
    }
}
