//! Pages freed by a thread that then goes quiet go back to the OS: the purger returns them
//! once their delay has passed, though the thread that freed them never calls mimalloc again.

use std::sync::mpsc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: gateway_alloc::Mimalloc = gateway_alloc::Mimalloc;

/// This process's resident set in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .expect("rss field")
        .parse()
        .expect("rss");
    pages * 4096
}

#[test]
fn a_quiet_threads_freed_pages_go_back_to_the_os() {
    gateway_alloc::configure();
    let before = rss();
    let (freed_tx, freed_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // 64 MiB in 2048 blocks of 32 KiB, every byte written, then all freed at once.
        let blocks: Vec<Vec<u8>> = (0..2048).map(|i| vec![i as u8 | 1; 32 * 1024]).collect();
        let peak = rss();
        drop(blocks);
        freed_tx.send(peak).expect("send");
        // Quiet from here on: this thread makes no further call into the allocator.
        let _ = done_rx.recv();
    });
    let peak = freed_rx.recv().expect("peak");
    assert!(
        peak > before + (48 << 20),
        "the blocks were not resident: {before} -> {peak}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = rss();
    while now > before + (16 << 20) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = rss();
    }
    done_tx.send(()).expect("stop worker");
    worker.join().expect("worker");
    assert!(
        now <= before + (16 << 20),
        "the freed pages stayed resident: {} MiB before, {} MiB at the peak, {} MiB 20 s after the free",
        before >> 20,
        peak >> 20,
        now >> 20
    );
}
