//! A thread that renews the worker's lease through its own store connection while training
//! blocks the worker. When it cannot for half the lease, the worker's runs would soon be given to
//! another worker: it records why and stops the worker's training, which hands its runs back.
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::panic_message;
use crate::sweep::store::{self, HEARTBEAT_EVERY, Location, WorkerInfo};

pub(super) struct Heartbeat {
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    thread: JoinHandle<()>,
}

impl Heartbeat {
    /// Starts heartbeating for `me`; a failure sets `training_stop`.
    pub(super) fn start(
        db: Location,
        me: WorkerInfo,
        lease: Duration,
        training_stop: Arc<AtomicBool>,
    ) -> Heartbeat {
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let (flag, failed) = (stop.clone(), failure.clone());
        let thread = std::thread::spawn(move || {
            let beat = AssertUnwindSafe(|| beat_until(&flag, &db, &me, lease / 2));
            let outcome = std::panic::catch_unwind(beat).unwrap_or_else(|panic| {
                Err(anyhow!(
                    "the heartbeat thread panicked: {}",
                    panic_message(&panic)
                ))
            });
            if let Err(e) = outcome {
                tracing::error!("{e:#}");
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                training_stop.store(true, Ordering::Relaxed);
            }
        });
        Heartbeat {
            stop,
            failure,
            thread,
        }
    }

    /// Why the heartbeat stopped, if it failed.
    pub(super) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the thread; its failure, if any, is the error.
    pub(super) fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            return Err(anyhow!("the heartbeat thread could not be joined"));
        }
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.as_ref().map_or(Ok(()), |f| Err(anyhow!("{f}")))
    }
}

/// Heartbeats every [`HEARTBEAT_EVERY`] until `stop`; an error once no heartbeat has gone
/// through for `give_up_after`.
fn beat_until(
    stop: &AtomicBool,
    db: &Location,
    me: &WorkerInfo,
    give_up_after: Duration,
) -> Result<()> {
    let mut store =
        store::open(db).map_err(|e| e.context("the heartbeat cannot open the results store"))?;
    let tick = Duration::from_millis(200);
    let (mut last_beat, mut last_ok) = (Instant::now(), Instant::now());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        if last_beat.elapsed() < HEARTBEAT_EVERY {
            continue;
        }
        last_beat = Instant::now();
        match store.heartbeat(me) {
            Ok(()) => last_ok = Instant::now(),
            Err(e) if last_ok.elapsed() >= give_up_after => {
                return Err(e.context(format!(
                    "no heartbeat went through for {:.0} s",
                    last_ok.elapsed().as_secs_f64()
                )));
            }
            Err(e) => tracing::warn!("heartbeat failed, retrying: {e:#}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_that_cannot_reach_the_store_stops_training_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let db = Location::Sqlite(dir.path().join("no/such/folder/r.db"));
        let training_stop = Arc::new(AtomicBool::new(false));
        let me = WorkerInfo::this_process(1);
        let beat = Heartbeat::start(db, me, Duration::from_secs(15), training_stop.clone());
        let started = Instant::now();
        while !training_stop.load(Ordering::Relaxed) {
            assert!(started.elapsed() < Duration::from_secs(30), "never stopped");
            std::thread::sleep(Duration::from_millis(20));
        }
        let why = beat.failure().unwrap();
        assert!(
            why.contains("heartbeat cannot open the results store"),
            "{why}"
        );
        assert!(beat.stop().is_err());
    }
}
