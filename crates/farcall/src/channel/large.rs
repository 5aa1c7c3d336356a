//! Memory for large received frames, reused.
//!
//! A large frame (an array's data, say) is read into memory of its own and
//! handed on without a copy: the application ends up owning it. Fresh
//! memory is costly, though: the kernel zeroes every page before the first
//! byte lands, 6 to 8 ms for 64 MiB here, a third of the transfer. So a
//! consumer that is done with a frame (the Python package, when the numpy
//! array over it is collected) gives the memory back with [`recycle`], and
//! the next large frame of a fitting size is read into it, its pages
//! already in place.
//!
//! The pool keeps at most [`POOL_BYTES`] in [`POOL_BUFFERS`] buffers, the
//! most recently returned; a process that stops receiving large frames
//! keeps that much memory until it exits.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

/// At most this much memory waits in the pool.
pub const POOL_BYTES: usize = 256 << 20;

/// At most this many buffers wait in the pool.
pub const POOL_BUFFERS: usize = 4;

/// Buffers smaller than this are not worth keeping (the frame reader
/// copies smaller frames out of its own buffer).
const MIN_POOLED: usize = 256 * 1024;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for `len` bytes: a returned one that fits
/// (no more than twice the size), or fresh memory backed by huge pages.
pub fn buffer(len: usize) -> BytesMut {
    let reused = {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        let fitting = pool
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        fitting.map(|i| pool.swap_remove(i))
    };
    match reused {
        Some(mut v) => {
            v.clear();
            // No copy: the Bytes holds the one reference to `v`, which
            // try_into_mut turns back into an owned, empty buffer.
            Bytes::from(v).try_into_mut().unwrap_or_else(|_| fresh(len))
        }
        None => fresh(len),
    }
}

/// Gives memory the application is done with back to the pool (large
/// enough buffers only; the oldest go when the pool is full).
pub fn recycle(buf: BytesMut) {
    if buf.capacity() < MIN_POOLED || buf.capacity() > POOL_BYTES {
        return;
    }
    // Emptied first: turning a BytesMut into a Vec moves its contents to
    // the front of the allocation. No copy otherwise: the memory is this
    // BytesMut's alone.
    let mut buf = buf;
    buf.clear();
    let v = Vec::from(buf);
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    pool.push(v);
    while pool.len() > POOL_BUFFERS || pool.iter().map(Vec::capacity).sum::<usize>() > POOL_BYTES {
        pool.remove(0);
    }
}

/// New memory for `len` bytes. Huge pages are asked for: the kernel then
/// faults the buffer in 2 MiB at a time instead of 4 KiB.
fn fresh(len: usize) -> BytesMut {
    let buf = BytesMut::with_capacity(len);
    const HUGE: usize = 2 << 20;
    let start = buf.as_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + len) & !(HUGE - 1);
    if end > aligned {
        // SAFETY: the range lies inside the allocation just made; madvise
        // only changes how its pages are backed. Failure is harmless.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                end - aligned,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_memory_serves_the_next_frame_of_a_fitting_size() {
        // One test touches the pool: tests run in parallel.
        let mut first = buffer(1 << 20);
        first.extend_from_slice(&[7; 1 << 20]);
        let at = first.as_ptr();
        recycle(first);
        let again = buffer(600 * 1024);
        assert_eq!(again.as_ptr(), at, "reused");
        assert!(again.is_empty());
        recycle(again);
        // Too small a frame for that buffer: fresh memory.
        assert_ne!(buffer(300 * 1024).as_ptr(), at);
        // Too large: fresh memory too.
        let bigger = buffer(2 << 20);
        assert_ne!(bigger.as_ptr(), at);
        assert!(bigger.capacity() >= 2 << 20);
        // Small buffers are not kept.
        recycle(BytesMut::with_capacity(1024));
        let pool = POOL.lock().unwrap();
        assert!(pool.iter().all(|v| v.capacity() >= MIN_POOLED));
        assert!(pool.len() <= POOL_BUFFERS);
    }
}
