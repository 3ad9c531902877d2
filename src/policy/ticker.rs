//! The epoch ticker that enforces policy deadlines, awake only while a policy runs. An idle controller (no
//! analysis due) has no thread waking 100 times a second: the ticker parks until a call starts and parks
//! again when the last call ends. It also admits at most a fixed number of calls at once, so the memory
//! hostile policies can take is bounded by that number times the per-call cap, however many canaries are
//! reconciled at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::Engine;

#[derive(Debug, Default)]
struct State {
    /// Policy calls running now.
    calls: usize,
    /// The engine is gone: the ticker ends.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Epoch increments so far (read by tests).
    ticks: AtomicU64,
    /// Calls admitted at once; more wait in `enter`.
    max_calls: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ticker of one engine; it ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct Ticker {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_all();
    }
}

/// A running call: the ticker ticks while at least one exists.
pub(super) struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.calls = state.calls.saturating_sub(1);
        // A call waiting for its turn may go.
        self.0.changed.notify_all();
    }
}

impl Ticker {
    /// Starts the (parked) ticker thread for `engine`, advancing its epoch every `tick` while calls run;
    /// at most `max_calls` (at least 1) run at once.
    pub(super) fn spawn(engine: &Engine, tick: Duration, max_calls: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            max_calls: max_calls.max(1),
            ..Shared::default()
        });
        let weak = engine.weak();
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("fledge-policy-epoch".into())
            .spawn(move || {
                loop {
                    {
                        let mut state = thread.lock();
                        while state.calls == 0 && !state.closed {
                            state = thread.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
                        }
                        if state.closed {
                            break;
                        }
                    }
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => {
                            engine.increment_epoch();
                            thread.ticks.fetch_add(1, Ordering::Relaxed);
                        }
                        None => break,
                    }
                }
            })?;
        Ok(Self {
            _stop: Arc::new(StopOnDrop(shared.clone())),
            shared,
        })
    }

    /// Marks a call as running until the guard drops, once fewer than `max_calls` run; wakes the ticker if
    /// it was parked. Blocks (a policy call runs on a blocking thread) while the others run.
    pub(super) fn enter(&self) -> Running {
        let mut state = self.shared.lock();
        while state.calls >= self.shared.max_calls && !state.closed {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.calls += 1;
        if state.calls == 1 {
            self.shared.changed.notify_all();
        }
        Running(self.shared.clone())
    }

    /// Epoch increments so far.
    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_ticks_only_while_a_call_runs() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).expect("engine");
        let ticker = Ticker::spawn(&engine, Duration::from_millis(2), 4).expect("ticker");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(ticker.ticks(), 0, "parked while nothing runs");
        let running = ticker.enter();
        std::thread::sleep(Duration::from_millis(40));
        let during = ticker.ticks();
        assert!(during >= 5, "ticks while a call runs: {during}");
        drop(running);
        std::thread::sleep(Duration::from_millis(10));
        let after = ticker.ticks();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(ticker.ticks(), after, "parked again once the last call ended");
    }

    #[test]
    fn a_call_beyond_the_limit_waits_for_a_running_one_to_end() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).expect("engine");
        let ticker = Ticker::spawn(&engine, Duration::from_millis(2), 1).expect("ticker");
        let first = ticker.enter();
        let (tx, rx) = std::sync::mpsc::channel();
        let second = ticker.clone();
        std::thread::spawn(move || {
            let _running = second.enter();
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "a second call ran beside the first"
        );
        drop(first);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the second call runs once the first ended");
    }
}
