//! Background tasks, timers and cross-thread hand-offs, all of which wake [`Server::wait`].
//!
//! Tasks are Rust's coroutines: a `Future` registered with [`Server::spawn`] is resumed by the
//! server's loop whenever its waker fires, and the waker also breaks a blocking `wait()`, so a
//! task never needs the app to spin.
//!
//! [`Server::spawn`]: crate::Server::spawn
//! [`Server::wait`]: crate::Server::wait

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::body::Body;
use crate::request::RequestId;

pub(crate) type Response = http::Response<Body>;

/// The meeting point between the loop and everything that may wake it: task wakers, timers,
/// stream senders and responders, from this thread or another.
pub(crate) struct Hub {
    waker: mio::Waker,
    signalled: AtomicBool,
    inner: Mutex<HubInner>,
}

#[derive(Default)]
pub(crate) struct HubInner {
    pub(crate) woken_tasks: Vec<usize>,
    pub(crate) streams: Vec<(usize, u64)>,
    pub(crate) responses: Vec<(RequestId, Response)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_wakers: HashMap<u64, Waker>,
    next_timer: u64,
}

impl Hub {
    pub(crate) fn new(waker: mio::Waker) -> Hub {
        Hub {
            waker,
            signalled: AtomicBool::new(false),
            inner: Mutex::new(HubInner::default()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Breaks the loop's `epoll_wait`, once per batch of wakes.
    pub(crate) fn signal(&self) {
        if !self.signalled.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                tracing::warn!(error = %e, "cannot wake the server loop");
            }
        }
    }

    /// Called by the loop before draining: wakes after this point signal again.
    pub(crate) fn clear_signal(&self) {
        self.signalled.store(false, Ordering::Release);
    }

    /// Fires the timers due at `now`; returns the next deadline.
    pub(crate) fn fire_timers(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut inner = self.lock();
            while let Some(Reverse((at, id))) = inner.timers.peek().copied() {
                if at > now {
                    break;
                }
                inner.timers.pop();
                if let Some(w) = inner.timer_wakers.remove(&id) {
                    due.push(w);
                }
            }
            inner.timers.peek().map(|Reverse((at, _))| *at)
        };
        for w in due {
            w.wake();
        }
        next
    }

    /// The earliest pending timer.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.lock().timers.peek().map(|Reverse((at, _))| *at)
    }

    pub(crate) fn has_work(&self, inner: &HubInner) -> bool {
        !inner.woken_tasks.is_empty() || !inner.streams.is_empty() || !inner.responses.is_empty()
    }
}

/// Tells the loop that a stream on a connection has new data.
#[derive(Clone)]
pub(crate) struct Notify {
    pub(crate) hub: Arc<Hub>,
    pub(crate) conn: usize,
    pub(crate) gen: u64,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.hub.lock().streams.push((self.conn, self.gen));
        self.hub.signal();
    }
}

struct TaskWaker {
    hub: Arc<Hub>,
    key: usize,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.hub.lock().woken_tasks.push(self.key);
        self.hub.signal();
    }
}

/// Identifies a background task registered with [`Server::spawn`](crate::Server::spawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId(pub(crate) usize);

type BoxedTask = Pin<Box<dyn Future<Output = ()>>>;

/// The task set of one server.
#[derive(Default)]
pub(crate) struct Tasks {
    tasks: Slab<(BoxedTask, Waker)>,
}

impl Tasks {
    pub(crate) fn spawn(&mut self, hub: &Arc<Hub>, fut: BoxedTask) -> TaskId {
        let entry = self.tasks.vacant_entry();
        let key = entry.key();
        let waker = Waker::from(Arc::new(TaskWaker {
            hub: Arc::clone(hub),
            key,
        }));
        entry.insert((fut, waker));
        // A new task runs on the next pass.
        hub.lock().woken_tasks.push(key);
        TaskId(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn cancel(&mut self, id: TaskId) -> bool {
        self.tasks.try_remove(id.0).is_some()
    }

    /// Polls the tasks in `woken` once each. A panicking task is removed and logged rather than
    /// taking the server down.
    pub(crate) fn run(&mut self, mut woken: Vec<usize>) {
        woken.sort_unstable();
        woken.dedup();
        for key in woken {
            let Some((fut, waker)) = self.tasks.get_mut(key) else {
                continue;
            };
            let waker = waker.clone();
            let mut cx = Context::from_waker(&waker);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fut.as_mut().poll(&mut cx)
            }));
            match result {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(())) => {
                    drop(self.tasks.remove(key));
                }
                Err(_) => {
                    tracing::error!(task = key, "background task panicked; it was removed");
                    drop(self.tasks.remove(key));
                }
            }
        }
    }
}

/// A handle for creating [`Sleep`] futures on a server's clock; cheap to clone and `Send`.
#[derive(Clone)]
pub struct Timer {
    pub(crate) hub: Arc<Hub>,
}

impl Timer {
    /// A future that completes after `duration`.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(Instant::now() + duration)
    }

    /// A future that completes at `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep {
            hub: Arc::clone(&self.hub),
            deadline,
            id: None,
        }
    }
}

/// A timer future driven by the server loop (no thread, no busy wait).
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    hub: Arc<Hub>,
    deadline: Instant,
    id: Option<u64>,
}

impl Sleep {
    /// When the timer fires.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some(id) = self.id.take() {
                self.hub.lock().timer_wakers.remove(&id);
            }
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let mut earliest = false;
        let hub = Arc::clone(&self.hub);
        {
            let mut inner = hub.lock();
            let id = match self.id {
                Some(id) => id,
                None => {
                    let id = inner.next_timer;
                    inner.next_timer += 1;
                    earliest = inner
                        .timers
                        .peek()
                        .is_none_or(|Reverse((at, _))| deadline < *at);
                    inner.timers.push(Reverse((deadline, id)));
                    id
                }
            };
            inner.timer_wakers.insert(id, cx.waker().clone());
            self.id = Some(id);
        }
        if earliest {
            // The loop may be blocked with a later timeout (when polled from another thread).
            self.hub.signal();
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.hub.lock().timer_wakers.remove(&id);
        }
    }
}

/// Answers requests from outside the loop: from a background task or another thread.
///
/// ```no_run
/// # fn demo(server: &mut tickhttp::Server, req: tickhttp::Request) {
/// let responder = server.responder();
/// let timer = server.timer();
/// let id = req.id();
/// server.spawn(async move {
///     timer.sleep(std::time::Duration::from_millis(100)).await;
///     responder.respond(id, http::Response::new("late".into()));
/// });
/// # }
/// ```
#[derive(Clone)]
pub struct Responder {
    pub(crate) hub: Arc<Hub>,
}

impl Responder {
    /// Queues the response for `id`; the loop sends it on its next pass.
    pub fn respond(&self, id: RequestId, response: Response) {
        self.hub.lock().responses.push((id, response));
        self.hub.signal();
    }
}

/// Yields once: the task is resumed on the next loop pass. A task that loops over
/// `yield_now().await` runs once per pass, like a fiber resumed on every poll.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future returned by [`yield_now`].
#[must_use = "futures do nothing unless polled"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            Poll::Ready(())
        } else {
            self.yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
