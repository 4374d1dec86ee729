// PATCH (failover gateway): the whole file.

//! Idle HTTP/1 connections parked without a task each.
//!
//! A kept-alive HTTP/1 connection waiting for its next request used to hold a task, its chain
//! of boxed connection futures and a timer (about 3 KiB besides its socket). Once its grace
//! second has passed, the connection is parked here instead: one entry in its thread's lot
//! holding the stream, the closure that resumes it and its deadline. One task per lot waits
//! for all of them: each entry's socket wakes the lot through a waker that names the entry,
//! and a sweep once a second closes the entries whose idle timeout passed. When bytes (or the
//! end) arrive, the closure spawns a new task that serves the connection again. At shutdown
//! every parked connection is resumed at once, to linger for a request on its way as a waiting
//! one does.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

use crate::protocols::Stream;
use crate::server::ShutdownWatch;

/// What resumes a parked connection: spawns the task that serves it again.
pub(crate) type Resume = Box<dyn FnOnce(Stream) + Send>;

/// A parked connection.
struct Parked {
    stream: Stream,
    resume: Resume,
    /// Closed when this passes with nothing read.
    until: Instant,
    /// The L4 buffers given back while parked (patches 17 and 27).
    buffers: Option<crate::protocols::l4::stream::L4BufferSettings>,
}

/// One thread's parked connections and the task that waits for them.
struct Lot {
    entries: Mutex<Entries>,
    /// Entries whose sockets woke, to be looked at by the lot's task.
    ready: Mutex<Vec<usize>>,
    wake: Notify,
}

#[derive(Default)]
struct Entries {
    slots: Vec<Option<Parked>>,
    free: Vec<usize>,
}

impl Entries {
    fn insert(&mut self, parked: Parked) -> usize {
        PARKED.fetch_add(1, Ordering::Relaxed);
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(parked);
                i
            }
            None => {
                self.slots.push(Some(parked));
                self.slots.len() - 1
            }
        }
    }

    fn take(&mut self, i: usize) -> Option<Parked> {
        let parked = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        PARKED.fetch_sub(1, Ordering::Relaxed);
        Some(parked)
    }
}

/// The waker of one entry: its socket's readiness puts the entry in the lot's ready list.
struct EntryWaker {
    lot: Arc<Lot>,
    index: usize,
}

impl Wake for EntryWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut ready) = self.lot.ready.lock() {
            ready.push(self.index);
        }
        self.lot.wake.notify_one();
    }
}

thread_local! {
    static LOT: RefCell<Option<Arc<Lot>>> = const { RefCell::new(None) };
}

/// Parks `stream`, idle, until bytes or its end arrive (then `resume` gets it) or `idle`
/// passes (then it is closed). Must be called on a Tokio runtime; the lot's task is spawned on
/// it with the first connection parked on this thread.
pub(crate) fn park(mut stream: Stream, resume: Resume, idle: Duration, shutdown: &ShutdownWatch) {
    let buffers =
        crate::protocols::l4::stream::Stream::under(&mut stream).and_then(|l4| l4.park_buffers());
    let parked = Parked {
        stream,
        resume,
        until: Instant::now() + idle,
        buffers,
    };
    let lot = LOT.with(|lot| {
        lot.borrow_mut()
            .get_or_insert_with(|| {
                let lot = Arc::new(Lot {
                    entries: Mutex::default(),
                    ready: Mutex::default(),
                    wake: Notify::new(),
                });
                tokio::spawn(run(lot.clone(), shutdown.clone()));
                lot
            })
            .clone()
    });
    let Ok(mut entries) = lot.entries.lock() else {
        return;
    };
    let index = entries.insert(parked);
    let ready = poll_entry(&lot, &mut entries, index);
    drop(entries);
    if let Some(parked) = ready {
        wake_up(parked);
    }
}

/// Connections parked on every thread now.
pub fn parked_connections() -> usize {
    PARKED.load(Ordering::Relaxed)
}

static PARKED: AtomicUsize = AtomicUsize::new(0);

/// Polls entry `index`'s socket for readiness with the entry's own waker; takes the entry out
/// when the socket has something (bytes, its end or an error).
fn poll_entry(lot: &Arc<Lot>, entries: &mut Entries, index: usize) -> Option<Parked> {
    let parked = entries.slots.get_mut(index)?.as_mut()?;
    let waker = Waker::from(Arc::new(EntryWaker {
        lot: lot.clone(),
        index,
    }));
    let mut cx = Context::from_waker(&waker);
    let mut empty = ReadBuf::new(&mut []);
    // A zero-length read only waits until the socket has something, as the head wait's does.
    match Pin::new(&mut parked.stream).poll_read(&mut cx, &mut empty) {
        Poll::Pending => None,
        Poll::Ready(_) => entries.take(index),
    }
}

/// Hands a parked connection back to a task of its own (with its buffers).
fn wake_up(mut parked: Parked) {
    if let (Some(buffers), Some(l4)) = (
        parked.buffers,
        crate::protocols::l4::stream::Stream::under(&mut parked.stream),
    ) {
        l4.unpark_buffers(buffers);
    }
    (parked.resume)(parked.stream);
}

/// The lot's task: resumes the entries whose sockets woke, closes the expired ones once a
/// second, and resumes all of them at shutdown (they linger there for a request on its way).
async fn run(lot: Arc<Lot>, mut shutdown: ShutdownWatch) {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = *shutdown.borrow();
    loop {
        let woke = std::mem::take(&mut *lot.ready.lock().unwrap_or_else(|e| e.into_inner()));
        let mut resumed = Vec::new();
        if let Ok(mut entries) = lot.entries.lock() {
            for index in woke {
                resumed.extend(poll_entry(&lot, &mut entries, index));
            }
            if shutting_down {
                for index in 0..entries.slots.len() {
                    resumed.extend(entries.take(index));
                }
            }
        }
        for parked in resumed {
            wake_up(parked);
        }
        tokio::select! {
            _ = lot.wake.notified() => {}
            _ = sweep.tick() => close_expired(&lot),
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = changed.is_err() || *shutdown.borrow();
            }
        }
    }
}

/// Closes the entries whose idle timeout passed.
fn close_expired(lot: &Lot) {
    let now = Instant::now();
    let mut expired = Vec::new();
    if let Ok(mut entries) = lot.entries.lock() {
        for index in 0..entries.slots.len() {
            if entries.slots[index]
                .as_ref()
                .is_some_and(|parked| parked.until <= now)
            {
                expired.extend(entries.take(index));
            }
        }
    }
    // Dropped outside the lock: each closes its socket.
    drop(expired);
}
