//! How the control thread (a new table) wakes a core's transport at once,
//! even when it is idle: each transport installs an
//! [`engine::CoreWaker`](crate::engine::CoreWaker) in its core's report
//! while it runs ([`Installed`]), and `Shared::wake_cores` calls it.
//!
//! - uring: an [`EventFd`] the ring keeps a read on; a write completes it.
//! - glommio: a [`TaskWake`], the waker of a task of the core's executor;
//!   glommio queues a waker woken from a foreign thread to its executor and
//!   writes the executor's own eventfd if it sleeps.

use std::future::Future;
use std::io;
use std::os::unix::io::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::engine::{CoreWaker, Shared};

/// An eventfd owned by a core: closed when the last holder (the core's
/// transport, or a thread that loaded its waker) drops it, so a write never
/// reaches a reused fd.
#[derive(Debug)]
pub(crate) struct EventFd(RawFd);

impl EventFd {
    /// A new non-blocking eventfd.
    pub fn new() -> io::Result<Arc<EventFd>> {
        // SAFETY: eventfd(2) with no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(EventFd(fd)))
    }

    /// The fd, for the ring's read.
    pub fn fd(&self) -> RawFd {
        self.0
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.0) };
    }
}

/// Wakes a uring core through its eventfd.
#[derive(Debug)]
struct EventFdWaker(Arc<EventFd>);

impl CoreWaker for EventFdWaker {
    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a live buffer to an eventfd kept open
        // by the Arc; a full counter (EAGAIN) already means "wake".
        let _ = unsafe { libc::write(self.0.fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// Wakes a glommio core: a flag, and the waker of the core's task that
/// waits for it ([`TaskWake::woken`]).
#[derive(Debug, Default)]
pub(crate) struct TaskWake {
    pending: AtomicBool,
    /// Touched only when a config is published and when the task waits
    /// again: never per request.
    waker: Mutex<Option<Waker>>,
}

impl TaskWake {
    /// Resolves once [`CoreWaker::wake`] has been called since the last
    /// time it resolved.
    pub fn woken(&self) -> Woken<'_> {
        Woken(self)
    }
}

/// See [`TaskWake::woken`].
#[derive(Debug)]
pub(crate) struct Woken<'a>(&'a TaskWake);

impl Future for Woken<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let w = self.0;
        if w.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        if let Ok(mut slot) = w.waker.lock() {
            match &*slot {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        // A wake between the swap and storing the waker set the flag.
        if w.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The glommio core's waker, as installed.
#[derive(Debug)]
struct TaskWaker(Arc<TaskWake>);

impl CoreWaker for TaskWaker {
    fn wake(&self) {
        self.0.pending.store(true, Ordering::Release);
        let waker = self.0.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A core's waker installed in its report; removed when dropped (the core
/// stopped).
#[derive(Debug)]
pub(crate) struct Installed {
    shared: Arc<Shared>,
    core: usize,
}

impl Installed {
    fn new(shared: &Arc<Shared>, core: usize, waker: Box<dyn CoreWaker>) -> Installed {
        if let Some(r) = shared.reports.get(core) {
            r.waker.store(Some(Arc::new(waker)));
        }
        Installed {
            shared: shared.clone(),
            core,
        }
    }

    /// Installs `fd` as core `core`'s waker.
    pub fn eventfd(shared: &Arc<Shared>, core: usize, fd: &Arc<EventFd>) -> Installed {
        Installed::new(shared, core, Box::new(EventFdWaker(fd.clone())))
    }

    /// Installs `wake` as core `core`'s waker.
    pub fn task(shared: &Arc<Shared>, core: usize, wake: &Arc<TaskWake>) -> Installed {
        Installed::new(shared, core, Box::new(TaskWaker(wake.clone())))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(r) = self.shared.reports.get(self.core) {
            r.waker.store(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A glommio core that only waits on its wake (no tick runs) and counts
    /// what it saw; the wakes come from this thread, as from the control
    /// thread.
    #[test]
    fn a_glommio_core_wakes_on_a_wake_from_another_thread() {
        let shared = Arc::new(Shared::new(1));
        let wake = Arc::new(TaskWake::default());
        let (seen_tx, seen) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let core_shared = shared.clone();
        let core_wake = wake.clone();
        let core = std::thread::spawn(move || {
            let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(64 << 10)
                .make()
                .expect("a glommio executor");
            ex.run(async move {
                let _installed = Installed::task(&core_shared, 0, &core_wake);
                ready_tx.send(()).unwrap();
                for n in 1..=2 {
                    core_wake.woken().await;
                    seen_tx.send(n).unwrap();
                }
            });
        });
        ready.recv().unwrap();
        // Nothing is seen before a wake.
        assert_eq!(
            seen.recv_timeout(Duration::from_millis(200)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "the task must wait for a wake"
        );
        for n in 1..=2 {
            shared.wake_cores();
            assert_eq!(
                seen.recv_timeout(Duration::from_secs(10)),
                Ok(n),
                "wake {n} must reach the idle core"
            );
        }
        core.join().unwrap();
        assert!(
            shared.reports[0].waker.load().is_none(),
            "a stopped core's waker is removed"
        );
    }

    #[test]
    fn a_uring_cores_eventfd_counts_the_wakes() {
        let shared = Arc::new(Shared::new(1));
        let fd = EventFd::new().unwrap();
        let installed = Installed::eventfd(&shared, 0, &fd);
        shared.wake_cores();
        shared.wake_cores();
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into a live buffer from our eventfd.
        let n = unsafe { libc::read(fd.fd(), buf.as_mut_ptr().cast(), 8) };
        assert_eq!(n, 8);
        assert_eq!(u64::from_ne_bytes(buf), 2, "both wakes were written");
        drop(installed);
        assert!(shared.reports[0].waker.load().is_none());
    }
}
