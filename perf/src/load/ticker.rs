//! Precise waits for the publishers' schedule. monoio's timer is a wheel of 1 ms slots that
//! rounds every sleep up to the end of a slot, so a publisher sleeping until its next send time
//! would wake 1 to 2 ms late, and that delay (measured from the schedule, as it must be) would
//! swamp a broker's latency on loopback (a fraction of a millisecond). Spinning until the time
//! would burn a core the broker under test needs.
//!
//! So each worker has a ticker: a plain thread with a timer slack of 1 µs that sleeps on a
//! condition variable until the worker's earliest deadline, then wakes the worker's event loop
//! once (monoio's wakers may be woken from another thread). On the worker, deadlines live in a
//! small list ([`Ticker::sleep_until`]); one task fires those that are due and tells the thread
//! the next one. Waits longer than [`COARSE_ABOVE`] sleep on the wheel first, so the thread
//! only handles the last stretch. A wake-up costs two futex calls and an eventfd write.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use sluice_dataplane::bench_support::load::Notify;

/// Waits longer than this sleep on monoio's wheel until this much before their deadline.
pub const COARSE_ABOVE: Duration = Duration::from_millis(3);

#[derive(Debug, Default)]
struct State {
    next: Option<Instant>,
    waker: Option<Waker>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Remote {
    state: Mutex<State>,
    cv: Condvar,
}

impl Remote {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One worker's precise timer (see the module documentation).
#[derive(Debug)]
pub struct Ticker {
    remote: Arc<Remote>,
    /// Deadlines waited for, with the wake-up of each waiting task.
    waiting: RefCell<Vec<(Instant, Rc<Notify>)>>,
    /// The deadline the thread was last given.
    armed: Cell<Option<Instant>>,
    /// Wakes the local task that fires deadlines.
    changed: Notify,
}

impl Ticker {
    /// Starts the ticker's thread; [`Ticker::run`] must be spawned on the worker.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(name: &str) -> std::io::Result<Rc<Self>> {
        let remote = Arc::new(Remote::default());
        let r = Arc::clone(&remote);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || ticker_thread(&r))?;
        Ok(Rc::new(Self {
            remote,
            waiting: RefCell::new(Vec::new()),
            armed: Cell::new(None),
            changed: Notify::new(),
        }))
    }

    /// Waits until `deadline`, a few tens of microseconds late at most on an idle machine.
    pub async fn sleep_until(&self, deadline: Instant) {
        let now = Instant::now();
        if deadline <= now {
            return;
        }
        if deadline - now > COARSE_ABOVE {
            monoio::time::sleep(deadline - now - COARSE_ABOVE + Duration::from_millis(1)).await;
            if Instant::now() >= deadline {
                return;
            }
        }
        let notify = Rc::new(Notify::new());
        self.waiting
            .borrow_mut()
            .push((deadline, Rc::clone(&notify)));
        self.changed.notify();
        while Instant::now() < deadline {
            notify.notified().await;
        }
    }

    /// Fires due deadlines and arms the thread for the next one, until [`Ticker::stop`].
    pub async fn run(self: Rc<Self>) {
        // The thread's wake-up comes here as a waker.
        let fired = Rc::new(Cell::new(false));
        loop {
            let now = Instant::now();
            let next = {
                let mut w = self.waiting.borrow_mut();
                w.retain(|(at, n)| {
                    if *at <= now {
                        n.notify();
                        false
                    } else {
                        true
                    }
                });
                w.iter().map(|(at, _)| *at).min()
            };
            if self.remote.lock().stop {
                return;
            }
            // The thread needs a word only for an earlier deadline than the one it sleeps
            // until: for a later one it fires early, and the next turn re-arms it.
            if let Some(n) = next
                && self.armed.get().is_none_or(|a| n < a)
            {
                self.armed.set(next);
                self.remote.lock().next = next;
                self.remote.cv.notify_one();
            }
            // Wait for the thread (the armed deadline passed) or a new deadline.
            fired.set(false);
            let remote = Arc::clone(&self.remote);
            let changed = &self.changed;
            let mut registered = false;
            poll_fn(|cx| {
                if !registered {
                    remote.lock().waker = Some(cx.waker().clone());
                    registered = true;
                }
                let due = self.armed.get().is_some_and(|t| Instant::now() >= t);
                // A new deadline: poll `changed` through its flag.
                let mut f = std::pin::pin!(changed.notified());
                if due || f.as_mut().poll(cx).is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            if self.armed.get().is_some_and(|t| Instant::now() >= t) {
                self.armed.set(None);
            }
        }
    }

    /// Ends the thread and [`Ticker::run`].
    pub fn stop(&self) {
        self.remote.lock().stop = true;
        self.remote.cv.notify_one();
        self.changed.notify();
    }
}

fn ticker_thread(r: &Remote) {
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
    let mut st = r.lock();
    loop {
        if st.stop {
            if let Some(w) = st.waker.take() {
                w.wake();
            }
            return;
        }
        match st.next {
            None => st = r.cv.wait(st).unwrap_or_else(PoisonError::into_inner),
            Some(t) => {
                let now = Instant::now();
                if t <= now {
                    st.next = None;
                    if let Some(w) = st.waker.take() {
                        drop(st);
                        w.wake();
                        st = r.lock();
                    }
                } else {
                    st =
                        r.cv.wait_timeout(st, t - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_end_close_to_their_deadline() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let late = rt.block_on(async {
            let t = Ticker::start("ticker-test").expect("thread");
            let run = monoio::spawn(Rc::clone(&t).run());
            let mut late = Vec::new();
            for i in 0..200u64 {
                let at = Instant::now() + Duration::from_micros(300 + i * 37 % 5000);
                t.sleep_until(at).await;
                late.push(Instant::now() - at);
            }
            t.stop();
            run.await;
            late
        });
        // The same waits on monoio's wheel, side by side.
        let wheel = rt.block_on(async {
            let mut late = Vec::new();
            for i in 0..50u64 {
                let at = Instant::now() + Duration::from_micros(300 + i * 37 % 5000);
                monoio::time::sleep(at - Instant::now()).await;
                late.push(Instant::now() - at);
            }
            late
        });
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        assert!(late.iter().all(|d| *d >= Duration::ZERO), "never early");
        let (ours, theirs) = (median(late), median(wheel));
        assert!(
            ours < theirs,
            "ticker median {ours:?}, wheel median {theirs:?}"
        );
    }
}
