//! Small synchronisation pieces for the per-core event loops: a wake-up flag between tasks of
//! one thread ([`Notify`]), and the mailbox through which the control thread hands commands to
//! a core ([`Mailbox`]). Neither is on the per-message path across threads: a [`Notify`] never
//! leaves its thread, and the mailbox carries configuration changes only.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// Wakes one task of the same thread. A notification given while nobody waits is kept (one
/// pending flag), so none is lost between a check and the wait.
#[derive(Debug, Default)]
pub struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// No notification pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes the waiting task, if any.
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits until notified, then clears the flag.
    pub async fn notified(&self) {
        poll_fn(|cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// A queue of commands from other threads to one core's event loop. The receiving side is
/// polled by one task; senders wake it (monoio's `sync` feature makes that wake-up cross-thread
/// safe).
#[derive(Debug)]
pub(crate) struct Mailbox<T> {
    inner: Arc<Mutex<Inner<T>>>,
}

#[derive(Debug)]
struct Inner<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    closed: bool,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Mailbox<T> {
    /// An empty, open mailbox.
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                queue: VecDeque::new(),
                waker: None,
                closed: false,
            })),
        }
    }

    /// Queues `item`; returns it back when the mailbox was closed.
    ///
    /// # Errors
    /// The item, when the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.closed {
                return Err(item);
            }
            inner.queue.push_back(item);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// The next item; waits while the queue is empty.
    pub(crate) async fn recv(&self) -> T {
        poll_fn(|cx| {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match inner.queue.pop_front() {
                Some(item) => Poll::Ready(item),
                None => {
                    inner.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Takes everything queued (tests look at what was sent).
    #[cfg(test)]
    pub(crate) fn take_all(&self) -> Vec<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.queue.drain(..).collect()
    }

    /// Refuses further items.
    pub(crate) fn close(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    }
}

/// Runs a blocking call on its own thread and awaits its result on the event loop.
///
/// # Errors
/// When no thread can be started, or the call panicked.
pub(crate) async fn off_loop<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let mailbox = Mailbox::new();
    let tx = mailbox.clone();
    std::thread::Builder::new()
        .name("sluice-blocking".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(std::io::Error::other("blocking call panicked")));
            let _ = tx.send(result);
        })?;
    mailbox.recv().await
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;

    fn rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
    }

    #[test]
    fn notify_before_wait_is_kept() {
        rt().block_on(async {
            let n = Rc::new(Notify::new());
            n.notify();
            n.notified().await;
            let n2 = Rc::clone(&n);
            let task = monoio::spawn(async move { n2.notified().await });
            monoio::time::sleep(Duration::from_millis(1)).await;
            n.notify();
            task.await;
        });
    }

    #[test]
    fn mailbox_wakes_across_threads() {
        let mailbox = Mailbox::new();
        let sender = mailbox.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.send(7).expect("open");
        });
        let got = rt().block_on(async move { mailbox.recv().await });
        assert_eq!(got, 7);
        t.join().expect("thread");
    }
}
