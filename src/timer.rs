//! Delayed work (retry back-off) on a small tokio runtime in its own thread: a waiting retry
//! holds no GIL and occupies no pool worker; when its time comes the job goes to the pool.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::pool::{Job, PoolInner};

fn runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("build the Nova timer runtime");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("nova-timers".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("spawn the Nova timer thread");
        handle
    })
}

/// Run `job` on `pool` after `delay`.
pub fn after(delay: Duration, pool: Arc<PoolInner>, job: Arc<dyn Job>) {
    runtime().spawn(async move {
        tokio::time::sleep(delay).await;
        pool.schedule(job);
    });
}
