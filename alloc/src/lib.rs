//! The gateway's allocator: mimalloc, called the cheapest way for each layout.
//!
//! The `mimalloc` crate's `GlobalAlloc` calls `mi_malloc_aligned` for every allocation; its
//! checks for the alignment cost about 16 instructions per call, and the proxy allocates about
//! a hundred times per request. Every mimalloc block is aligned to a machine word (its size
//! classes are whole words), so layouts that need no more than that go to plain `mi_malloc`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned};
use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator (`#[global_allocator]` in the binary).
pub struct Mimalloc;

// SAFETY: every method forwards to mimalloc, which returns blocks of at least the requested
// size, aligned as `layout` asks (plain calls only where mimalloc's word alignment suffices),
// and frees or resizes only blocks it returned.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi_malloc(layout.size()).cast()
        } else {
            mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi_zalloc(layout.size()).cast()
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi_realloc(ptr.cast(), new_size).cast()
        } else {
            mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

// mimalloc's options (`mi_option_e` in its `mimalloc.h`, v3): the index of `purge_delay`.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_collect(force: bool);
}

/// How long (milliseconds) a page left without blocks stays committed before it goes back to
/// the OS. A page reused within that time is not returned and faulted in again: at 0 (what
/// this crate set before) a proxy serving 36 000 requests per second on one core made 0.025
/// `madvise` calls and took 0.12 page faults per request, and 0.008 faults at 200.
pub const PURGE_DELAY_MS: std::ffi::c_long = 200;

/// How often the purger thread returns the pages whose delay has passed. mimalloc purges only
/// when some thread allocates through its slow path or collects, so without it a worker that
/// goes quiet after a burst of connections would keep the pages their requests used.
pub const PURGE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// The name of the purger thread.
pub const PURGER_THREAD: &str = "mimalloc-purge";

/// Sets mimalloc's options for a proxy that holds many connections and starts the purger:
/// memory freed into whole free pages goes back to the OS `PURGE_DELAY_MS` after it was freed
/// (at most one `PURGE_TICK` later), whether or not the thread that freed it runs again.
/// Call once, at start, before other threads.
pub fn configure() {
    // SAFETY: plain option setters of the linked mimalloc, called with a valid option index.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    let purger = std::thread::Builder::new()
        .name(PURGER_THREAD.into())
        .spawn(|| loop {
            std::thread::sleep(PURGE_TICK);
            // SAFETY: mimalloc's public collection entry point; without `force` it frees this
            // thread's own empty pages and purges the arenas' ranges whose delay has passed.
            unsafe { mi_collect(false) }
        });
    if purger.is_err() {
        // Without the thread nothing would purge a quiet worker's pages: purge at once.
        // SAFETY: as above.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

/// mimalloc's current `purge_delay` (milliseconds).
pub fn purge_delay() -> std::ffi::c_long {
    // SAFETY: a plain option getter of the linked mimalloc.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_is_the_option_configure_sets() {
        // mimalloc v3's own default for `purge_delay` is 1000 ms: the index names that option.
        assert_eq!(super::purge_delay(), 1000);
        super::configure();
        assert_eq!(super::purge_delay(), super::PURGE_DELAY_MS);
        // The new thread names itself as it starts.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let purger_runs = || {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .any(|comm| comm.trim() == super::PURGER_THREAD)
        };
        while !purger_runs() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(purger_runs(), "no {} thread", super::PURGER_THREAD);
    }

    use super::*;

    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes_when_resized() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 3, 8, 13, 24, 100, 4096, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let q = Mimalloc.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xab));
                    Mimalloc.dealloc(q, Layout::from_size_align(size * 3, align).expect("layout"));
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
