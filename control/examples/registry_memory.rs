//! Heap bytes held by a registry of the synthetic log's 100,000 stacks (a counting allocator
//! around the system one): `cargo run --release -p inlet-control --example registry_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout as asked.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let stacks = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(inlet_control::synthetic::STACKS);
    let log = inlet_control::synthetic::generate(stacks);
    let before = LIVE.load(Ordering::Relaxed);
    let mut registry = inlet_control::registry::Registry::new();
    for bytes in &log.records {
        let record = serde_json::from_slice(bytes).expect("parse");
        registry.apply(&record).expect("accepted");
    }
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "{:?}: {:.1} MiB of heap ({} bytes per stack)",
        registry.sizes(),
        (after - before) as f64 / (1024.0 * 1024.0),
        (after - before) / stacks
    );
}
