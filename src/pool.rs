//! `nova.WorkerPool`: native threads shared by emitters, buses and listener managers.
//!
//! Workers block on a channel without the GIL. Each keeps one Python thread state for its
//! whole life (so taking the GIL per batch is a plain re-acquire, not a thread-state setup).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::{buffer_full, internal_error, nova_err, pool_closed, validation_error};
use crate::ffi::gil::{self, ThreadState};

/// Work that the pool runs: a lane draining its queue, or a submitted call.
pub trait Job: Send + Sync {
    fn run(self: Arc<Self>, pool: &Arc<PoolInner>);
}

enum Task {
    Job(Arc<dyn Job>),
    Call(CallTask),
    Stop,
}

struct CallTask {
    func: Py<PyAny>,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
    future: Py<PyAny>,
    context: Py<PyAny>,
}

pub struct PoolInner {
    pub name: String,
    pub workers: usize,
    queue_size: usize,
    tx: Sender<Task>,
    rx: Receiver<Task>,
    queued_calls: AtomicUsize,
    queued_jobs: AtomicUsize,
    busy: AtomicUsize,
    completed: AtomicU64,
    closed: AtomicBool,
    stopped: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    idle: (Mutex<()>, Condvar),
}

static POOLS: Mutex<Vec<Weak<PoolInner>>> = Mutex::new(Vec::new());

/// Worker threads that a pool stopped waiting for (a listener ran past its close deadline):
/// the exit hook joins them, so none is left running when the interpreter finalises.
static DETACHED: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

fn spawn_worker(name: String, pool: Arc<PoolInner>) -> std::io::Result<JoinHandle<()>> {
    #[cfg(feature = "test-hooks")]
    if crate::ffi::hooks::spawn_fails() {
        return Err(std::io::Error::other("injected by nova._core._test_fail_spawn"));
    }
    std::thread::Builder::new().name(name).spawn(move || worker_main(pool))
}

impl PoolInner {
    /// A pool with `workers` threads; a thread that cannot be started is a `NovaError` (the
    /// threads already started are stopped again).
    pub fn new(py: Python<'_>, name: String, workers: usize, queue_size: usize) -> PyResult<Arc<PoolInner>> {
        let (tx, rx) = unbounded();
        let inner = Arc::new(PoolInner {
            name,
            workers,
            queue_size,
            tx,
            rx,
            queued_calls: AtomicUsize::new(0),
            queued_jobs: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            idle: (Mutex::new(()), Condvar::new()),
        });
        for i in 0..workers {
            match spawn_worker(format!("nova-{}-{}", inner.name, i), inner.clone()) {
                Ok(handle) => inner.threads.lock().push(handle),
                Err(e) => {
                    let started = inner.threads.lock().len();
                    inner.closed.store(true, SeqCst);
                    inner.stopped.store(true, SeqCst);
                    for _ in 0..started {
                        let _ = inner.tx.send(Task::Stop);
                    }
                    DETACHED.lock().append(&mut inner.threads.lock());
                    return Err(nova_err(
                        py,
                        "NovaError",
                        format!(
                            "worker pool '{}' could not start worker thread {} of {}: {e}; \
                             lower the number of workers or raise the process's thread limit",
                            inner.name,
                            i + 1,
                            workers
                        ),
                    ));
                }
            }
        }
        let mut pools = POOLS.lock();
        pools.retain(|w| w.strong_count() > 0);
        pools.push(Arc::downgrade(&inner));
        drop(pools);
        Ok(inner)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Schedule internal work; never bounded (lanes are few and each is queued at most
    /// `max_concurrency` times).
    pub fn schedule(&self, job: Arc<dyn Job>) {
        self.queued_jobs.fetch_add(1, SeqCst);
        if self.tx.send(Task::Job(job)).is_err() {
            self.queued_jobs.fetch_sub(1, SeqCst);
        }
    }

    fn notify_idle(&self) {
        let _g = self.idle.0.lock();
        self.idle.1.notify_all();
    }

    fn is_idle(&self) -> bool {
        self.queued_calls.load(SeqCst) == 0 && self.queued_jobs.load(SeqCst) == 0 && self.busy.load(SeqCst) == 0
    }

    /// Stop accepting work, let queued and running work finish until `deadline`, then stop
    /// the threads. Call without the GIL.
    pub fn close(&self, deadline: Option<Instant>) -> bool {
        self.closed.store(true, SeqCst);
        let mut g = self.idle.0.lock();
        while !self.is_idle() {
            let Some(wait) = crate::component::next_wait(deadline, Duration::from_millis(20)) else {
                break;
            };
            self.idle.1.wait_for(&mut g, wait);
        }
        drop(g);
        let idle = self.is_idle();
        if !self.stopped.swap(true, SeqCst) {
            for _ in 0..self.workers {
                let _ = self.tx.send(Task::Stop);
            }
        }
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.threads.lock());
        for h in handles {
            // A worker still inside a listener past the deadline finishes alone; the exit hook
            // joins it if the interpreter exits first.
            loop {
                if h.is_finished() {
                    let _ = h.join();
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    DETACHED.lock().push(h);
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        idle
    }
}

fn worker_main(pool: Arc<PoolInner>) {
    // One thread state for the worker's whole life, bound and freed on this thread (see
    // `ffi::gil`); none at all when the interpreter is already exiting.
    let Some(_state) = ThreadState::bind() else { return };
    worker_loop(&pool);
}

/// How long a worker keeps the GIL across jobs that are already waiting before it lets other
/// threads have it. Each hand-off of the GIL costs a wake-up and, for the thread giving it up
/// to a waiter, up to a switch interval: draining several lanes per hand-off keeps the GIL
/// busy with deliveries rather than with changing hands.
const GIL_HOLD: Duration = Duration::from_millis(2);

fn worker_loop(pool: &Arc<PoolInner>) {
    let mut next: Option<Task> = None;
    loop {
        let task = match next.take() {
            Some(t) => t,
            None => match pool.rx.recv() {
                Ok(t) => t,
                Err(_) => break,
            },
        };
        if let Task::Stop = task {
            break;
        }
        // Through the exit gate: once the interpreter exits the worker stops here.
        let taken = gil::attach(|py| {
            let start = Instant::now();
            let mut task = task;
            loop {
                run_task(py, pool, task);
                if pool.closed.load(SeqCst) {
                    pool.notify_idle();
                }
                if start.elapsed() >= GIL_HOLD {
                    return None;
                }
                match pool.rx.try_recv() {
                    Ok(Task::Stop) => return Some(Task::Stop),
                    Ok(t) => task = t,
                    Err(_) => return None,
                }
            }
        });
        match taken {
            Some(after) => next = after,
            None => break,
        }
    }
}

/// Run one task; the GIL is held (jobs that take it again get it for free). A panic in the
/// task is caught here, as a last resort (lanes catch their own and settle their events): it
/// is logged and the worker lives on.
fn run_task(py: Python<'_>, pool: &Arc<PoolInner>, task: Task) {
    let run = || match task {
        Task::Stop => {}
        Task::Job(job) => {
            pool.queued_jobs.fetch_sub(1, SeqCst);
            job.run(pool);
        }
        Task::Call(call) => {
            pool.queued_calls.fetch_sub(1, SeqCst);
            run_call(py, call, &pool.completed);
        }
    };
    pool.busy.fetch_add(1, SeqCst);
    if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(run)) {
        let err = internal_error(py, &format!("worker pool '{}'", pool.name), &crate::ffi::panic_message(&payload));
        crate::dispatch::log_failure(py, &pool.name, &err);
    }
    pool.busy.fetch_sub(1, SeqCst);
}

fn run_call(py: Python<'_>, call: CallTask, completed: &AtomicU64) {
    let future = call.future.bind(py);
    let go = match future.call_method0("set_running_or_notify_cancel") {
        Ok(v) => v.is_truthy().unwrap_or(false),
        Err(_) => false,
    };
    if !go {
        completed.fetch_add(1, SeqCst);
        return;
    }
    let args = PyTuple::new(py, [call.func.bind(py).clone()])
        .and_then(|head| head.as_sequence().concat(call.args.bind(py).as_sequence()))
        .and_then(|seq| seq.to_tuple());
    let result = args
        .and_then(|args| call.context.bind(py).getattr("run")?.call(args, call.kwargs.as_ref().map(|k| k.bind(py))));
    // Count it before the future resolves, so a caller that saw the result sees the count.
    completed.fetch_add(1, SeqCst);
    let _ = match result {
        Ok(value) => future.call_method1("set_result", (value,)),
        Err(err) => future.call_method1("set_exception", (err.value(py),)),
    };
}

/// `nova.WorkerPool(workers=None, queue_size=1000, *, name="pool")`.
#[pyclass(module = "nova", name = "WorkerPool", subclass)]
pub struct WorkerPool {
    pub inner: Arc<PoolInner>,
}

impl WorkerPool {
    pub fn create(py: Python<'_>, workers: Option<usize>, queue_size: usize, name: &str) -> PyResult<WorkerPool> {
        let workers = match workers {
            Some(0) => {
                return Err(validation_error(py, "WorkerPool.workers must be at least 1 (or None for the CPU count)"))
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        };
        if queue_size == 0 {
            return Err(validation_error(py, "WorkerPool.queue_size must be at least 1"));
        }
        Ok(WorkerPool { inner: PoolInner::new(py, name.to_string(), workers, queue_size)? })
    }
}

#[pymethods]
impl WorkerPool {
    #[new]
    #[pyo3(signature = (workers=None, queue_size=1000, *, name="pool"))]
    fn new(py: Python<'_>, workers: Option<i64>, queue_size: i64, name: &str) -> PyResult<Self> {
        if let Some(w) = workers {
            if w < 1 || w as usize > crate::component::MAX_WORKERS {
                return Err(validation_error(
                    py,
                    format!(
                        "WorkerPool.workers must be between 1 and {} (or None for the CPU count), got {w}",
                        crate::component::MAX_WORKERS
                    ),
                ));
            }
        }
        if queue_size < 1 {
            return Err(validation_error(py, format!("WorkerPool.queue_size must be at least 1, got {queue_size}")));
        }
        WorkerPool::create(py, workers.map(|w| w as usize), queue_size as usize, name)
    }

    #[getter]
    fn workers(&self) -> usize {
        self.inner.workers
    }

    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Run `fn(*args, **kwargs)` on a worker; returns a `concurrent.futures.Future`.
    #[pyo3(signature = (func, /, *args, **kwargs))]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        func: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = &self.inner;
        if inner.is_closed() {
            return Err(pool_closed(py, format!("worker pool '{}' is closed; create a new WorkerPool", inner.name)));
        }
        if inner.queued_calls.load(SeqCst) >= inner.queue_size {
            return Err(buffer_full(
                py,
                format!(
                    "worker pool '{}' has {} tasks waiting (queue_size={}); wait for some to finish or raise queue_size",
                    inner.name, inner.queue_size, inner.queue_size
                ),
            ));
        }
        let future = py.import("concurrent.futures")?.getattr("Future")?.call0()?;
        let context = py.import("contextvars")?.getattr("copy_context")?.call0()?;
        inner.queued_calls.fetch_add(1, SeqCst);
        let task =
            Task::Call(CallTask { func, args, kwargs, future: future.clone().unbind(), context: context.unbind() });
        if inner.tx.send(task).is_err() {
            inner.queued_calls.fetch_sub(1, SeqCst);
            return Err(pool_closed(py, format!("worker pool '{}' is closed", inner.name)));
        }
        Ok(future)
    }

    /// Let queued and running work finish (up to `timeout` seconds), then stop the workers.
    #[pyo3(signature = (timeout=None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = crate::component::deadline(py, "WorkerPool.close timeout", timeout)?;
        let inner = self.inner.clone();
        Ok(py.allow_threads(move || inner.close(deadline)))
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let i = &self.inner;
        py.import("nova._types")?.getattr("PoolStats")?.call1((
            i.workers,
            i.busy.load(SeqCst),
            i.queued_calls.load(SeqCst) + i.queued_jobs.load(SeqCst),
            i.completed.load(SeqCst),
        ))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _t: Option<Py<PyAny>>, _v: Option<Py<PyAny>>, _tb: Option<Py<PyAny>>) -> bool {
        let _ = self.close(py, None);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "WorkerPool(name={:?}, workers={}, closed={})",
            self.inner.name,
            self.inner.workers,
            self.inner.is_closed()
        )
    }
}

/// Close every live pool: queued work gets until `timeout` to finish.
#[pyfunction]
#[pyo3(signature = (timeout=5.0))]
pub fn _close_all_pools(py: Python<'_>, timeout: f64) {
    let pools: Vec<Arc<PoolInner>> = POOLS.lock().iter().filter_map(|w| w.upgrade()).collect();
    let deadline = crate::component::deadline(py, "timeout", Some(timeout)).ok().flatten();
    py.allow_threads(|| {
        // In parallel: one pool's slow listener must not use up the others' time.
        std::thread::scope(|scope| {
            for p in &pools {
                scope.spawn(move || p.close(deadline));
            }
        });
    });
}

/// Nova's exit hook (registered with `atexit` by `nova`, so it runs before the interpreter
/// finalises): stop the timeout watchdog, give queued work until `timeout` to finish, close
/// the GIL gate (no native thread of Nova's asks for the GIL after this; see `ffi::gil`), then
/// join every worker thread. A worker still inside a listener is waited for, as Python waits
/// for a non-daemon thread or a `ThreadPoolExecutor` worker at exit; a warning names it.
#[pyfunction]
#[pyo3(signature = (timeout=5.0))]
pub fn _at_exit(py: Python<'_>, timeout: f64) {
    crate::watchdog::stop();
    _close_all_pools(py, timeout);
    gil::close_gate(py);
    let mut handles: Vec<JoinHandle<()>> = std::mem::take(&mut *DETACHED.lock());
    for pool in POOLS.lock().iter().filter_map(|w| w.upgrade()) {
        handles.append(&mut pool.threads.lock());
    }
    let warn_after = Instant::now() + Duration::from_secs(1);
    let mut warned = false;
    for h in handles {
        while !h.is_finished() {
            if !warned && Instant::now() >= warn_after {
                warned = true;
                let name = h.thread().name().unwrap_or("nova worker").to_string();
                let msg = format!(
                    "nova: waiting at exit for worker thread '{name}', still inside a listener; \
                     shut components down (or give listeners a timeout) before the interpreter exits"
                );
                crate::dispatch::warn(py, &msg);
            }
            py.allow_threads(|| std::thread::sleep(Duration::from_millis(5)));
        }
        let _ = h.join();
    }
}

impl Drop for WorkerPool {
    /// A pool nobody can reach any more (no component holds it) stops its threads once its
    /// queued work is done, in the background.
    fn drop(&mut self) {
        if !self.inner.is_closed() {
            let inner = self.inner.clone();
            let _ = std::thread::Builder::new().name("nova-pool-closer".into()).spawn(move || inner.close(None));
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WorkerPool>()?;
    m.add_function(wrap_pyfunction!(_close_all_pools, m)?)?;
    m.add_function(wrap_pyfunction!(_at_exit, m)?)?;
    Ok(())
}
