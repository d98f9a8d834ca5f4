//! Test builds only: a global allocator that counts, per thread, the bytes the thread
//! holds, so that a test can measure its own allocations while other tests run beside
//! it. `mallinfo2` counts the whole process: a test printing a backtrace meanwhile once
//! added 65 MB to a figure that must stay under half a MiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    // `try_with`: a thread may still free memory while its locals are torn down.
    let _ = HELD.try_with(|held| held.set(held.get() + bytes));
}

fn size(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

// SAFETY: every call goes to `System` unchanged; only a thread-local counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, passed on as it is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            add(size(layout.size()));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        add(-size(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            add(size(new_size) - size(layout.size()));
        }
        new
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Bytes this thread has allocated and not freed (a free of another thread's memory
/// counts against the thread that frees it).
pub fn held_by_this_thread() -> isize {
    HELD.with(Cell::get)
}
