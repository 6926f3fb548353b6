//! What every component that owns deliveries (Emitter, Bus) shares about its life: its worker
//! pool (made for it, or given), the moment it closes, the shutdown report made once, and the
//! owned pool closed with it. One piece, so the components cannot drift apart.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Instant;

use pyo3::prelude::*;

use crate::component::{pick_loop, shutdown_report};
use crate::dispatch::DispatchCounters;
use crate::errors::{nova_err, pool_closed};
use crate::pool::{PoolInner, WorkerPool};
use crate::retry::Retries;

pub struct Lifecycle {
    /// The component's name (`name=`).
    name: String,
    /// "emitter 'orders'", "bus 'main'": how errors and warnings name the component.
    label: String,
    /// The component's own kind of closed error ("EmitterClosed", "BusClosed"), and what
    /// the error says was refused ("emitted", "published") and how to go on.
    closed_error: (&'static str, &'static str, &'static str),
    pool: Py<WorkerPool>,
    pool_inner: Arc<PoolInner>,
    /// Made for this component (closed with it), or the caller's (left open).
    owns_pool: bool,
    closed: AtomicBool,
    reported: AtomicBool,
}

/// Which component a `Lifecycle` belongs to (how its errors name it).
#[derive(Clone, Copy)]
pub enum Kind {
    Emitter,
    Bus,
}

/// What a new component (Emitter, Bus) is made from: its life, its dispatch counters, the loop
/// its async listeners run on, its retry queue, and its checked validator.
pub struct Parts {
    pub life: Arc<Lifecycle>,
    pub counters: Arc<DispatchCounters>,
    pub event_loop: Option<Py<PyAny>>,
    pub retries: Arc<Retries>,
    pub validator: Option<Py<PyAny>>,
}

impl Lifecycle {
    /// The parts of a new `kind` of component named `name`, from its constructor's `pool=`,
    /// `loop=` and `validator=`.
    pub fn start(
        py: Python<'_>,
        kind: Kind,
        name: &str,
        pool: Option<Py<WorkerPool>>,
        event_loop: Option<Py<PyAny>>,
        validator: Option<Py<PyAny>>,
    ) -> PyResult<Parts> {
        let (class, closed_error) = match kind {
            Kind::Emitter => ("Emitter", ("EmitterClosed", "emitted", "create a new Emitter")),
            Kind::Bus => ("Bus", ("BusClosed", "published", "create a new Bus")),
        };
        let validator = validator.filter(|v| !v.is_none(py));
        if validator.as_ref().is_some_and(|v| !v.bind(py).is_callable()) {
            return Err(crate::errors::validation_error(py, format!("{class}.validator must be callable or None")));
        }
        let label = format!("{} '{name}'", class.to_lowercase());
        let life = Lifecycle::new(py, label, name, pool, closed_error)?;
        let counters = Arc::new(DispatchCounters::default());
        let event_loop = pick_loop(py, event_loop)?;
        let retries =
            Retries::new(name, life.pool_inner.clone(), counters.clone(), event_loop.as_ref().map(|l| l.clone_ref(py)));
        Ok(Parts { life: Arc::new(life), counters, event_loop, retries, validator })
    }

    /// `pool`: the caller's, or None to make one named after the component (`name`).
    /// `closed_error`: (exception class, the verb an event was refused, the fix).
    pub fn new(
        py: Python<'_>,
        label: String,
        name: &str,
        pool: Option<Py<WorkerPool>>,
        closed_error: (&'static str, &'static str, &'static str),
    ) -> PyResult<Lifecycle> {
        let (pool, owns_pool) = match pool.filter(|p| !p.is_none(py)) {
            Some(p) => (p, false),
            None => (Py::new(py, WorkerPool::create(py, None, 1000, &format!("{name}-pool"))?)?, true),
        };
        let pool_inner = pool.borrow(py).inner.clone();
        Ok(Lifecycle {
            name: name.to_string(),
            label,
            closed_error,
            pool,
            pool_inner,
            owns_pool,
            closed: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        })
    }

    pub fn pool(&self, py: Python<'_>) -> Py<WorkerPool> {
        self.pool.clone_ref(py)
    }

    pub fn pool_inner(&self) -> &Arc<PoolInner> {
        &self.pool_inner
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Whether its shutdown report has been made (or is being made).
    pub fn reported(&self) -> bool {
        self.reported.load(SeqCst)
    }

    /// Open (and its pool too)? Else the error, naming `event` when given.
    pub fn check_open(&self, py: Python<'_>, event: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let (class, verb, fix) = self.closed_error;
        let refused =
            || event.map(|e| format!(" ({} was not {verb})", crate::errors::describe_event(e))).unwrap_or_default();
        if self.is_closed() {
            return Err(nova_err(py, class, format!("{} is shut down{}; {fix}", self.label, refused())));
        }
        if self.pool_inner.is_closed() {
            return Err(pool_closed(
                py,
                format!("{}: its worker pool '{}' is closed{}", self.label, self.pool_inner.name, refused()),
            ));
        }
        Ok(())
    }

    /// Close for good (nothing is accepted from now on); true for the one call that makes the
    /// shutdown report (a second shutdown reports nothing).
    pub fn close(&self) -> bool {
        self.closed.store(true, SeqCst);
        !self.reported.swap(true, SeqCst)
    }

    /// Close the pool if it is the component's own: it finishes its work until `until`, or at
    /// once when listener calls are still in flight (they finish on their own).
    pub fn close_owned_pool(&self, py: Python<'_>, until: Option<Instant>, in_flight: usize) {
        if self.owns_pool {
            let inner = self.pool_inner.clone();
            let until = if in_flight > 0 { Some(Instant::now()) } else { until };
            py.allow_threads(move || inner.close(until));
        }
    }

    /// The end of a shutdown: the owned pool closed, then the report.
    pub fn finish<'py>(
        &self,
        py: Python<'py>,
        until: Option<Instant>,
        drained: u64,
        undelivered: Vec<Py<PyAny>>,
        in_flight: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close_owned_pool(py, until, in_flight);
        shutdown_report(py, drained, undelivered, in_flight)
    }
}

/// `nova._core._Component`: the base class of Emitter and Bus, with what they share (their
/// name, worker pool and closed state, read from the `Lifecycle` both hold).
#[pyclass(module = "nova._core", name = "_Component", subclass, frozen)]
pub struct Component {
    life: Arc<Lifecycle>,
}

impl Component {
    /// The base part of a component whose life is `life`.
    pub fn base(life: &Arc<Lifecycle>) -> PyClassInitializer<Component> {
        PyClassInitializer::from(Component { life: life.clone() })
    }
}

#[pymethods]
impl Component {
    #[getter]
    fn name(&self) -> &str {
        &self.life.name
    }

    #[getter]
    fn pool(&self, py: Python<'_>) -> Py<WorkerPool> {
        self.life.pool(py)
    }

    #[getter]
    fn closed(&self) -> bool {
        self.life.is_closed()
    }
}
