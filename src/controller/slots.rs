//! How many reconciles run at once (`--concurrency`), and in which order the others wait: first due, first
//! served. kube's own limit (`Config::concurrency`) parks the due reconciles it cannot start in a hash set
//! and takes them back in hash order, so under a sustained backlog some canaries went round again and again
//! while others waited minutes (`make scale`, 1,000 canaries at a 10 s interval: ticks up to 165 s late).
//! Here kube starts every due reconcile, and each waits for a slot of a FIFO semaphore before it works.

use tokio::sync::{Semaphore, SemaphorePermit};

/// The reconcile slots, handed out in the order they were asked for.
#[derive(Debug)]
pub struct Slots(Semaphore);

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: u16) -> Self {
        Self(Semaphore::new(usize::from(n.max(1))))
    }

    /// Waits for a slot behind every reconcile that asked before; the slot frees when the permit drops.
    pub async fn take(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed.
        self.0
            .acquire()
            .await
            .unwrap_or_else(|_| unreachable!("never closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn reconciles_waiting_for_a_slot_start_in_the_order_they_asked() {
        let slots = Arc::new(Slots::new(1));
        let started = Arc::new(Mutex::new(Vec::new()));
        let busy = slots.take().await;
        let mut waiting = Vec::new();
        for canary in 0..32 {
            let (slots, started) = (slots.clone(), started.clone());
            waiting.push(tokio::spawn(async move {
                let _slot = slots.take().await;
                started.lock().expect("lock").push(canary);
                tokio::task::yield_now().await;
            }));
            // Each asks after the one before it.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(busy);
        for w in waiting {
            w.await.expect("reconcile");
        }
        let order = started.lock().expect("lock").clone();
        assert_eq!(order, (0..32).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn no_more_than_n_reconciles_run_at_once() {
        let slots = Slots::new(2);
        let (_a, _b) = (slots.take().await, slots.take().await);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slots.take())
                .await
                .is_err(),
            "a third slot was handed out"
        );
    }
}
