//! A small pool of scratch buffers for the fused NeRV's im2col matrices and conv outputs, which
//! every forward pass overwrites in full: reusing them spares the page faults and the zeroing of
//! about 15 MB per frame. Bounded: at most [`KEEP`] buffers are kept.

use std::sync::Mutex;

use crate::tensor::zeroed_buffer;

/// Buffers kept for reuse (the paper's NeRV uses six per forward pass).
const KEEP: usize = 12;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `n` values whose contents are unspecified (left by an earlier pass): the caller
/// overwrites every value before reading it.
pub(super) fn take(n: usize) -> Vec<f32> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    // The smallest kept buffer that is large enough.
    let best = (pool.iter().enumerate())
        .filter(|(_, v)| v.capacity() >= n)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i);
    match best {
        Some(i) => {
            let mut v = pool.swap_remove(i);
            v.truncate(n);
            if v.len() < n {
                v.resize(n, 0.0);
            }
            v
        }
        None => zeroed_buffer(n),
    }
}

/// Returns a buffer to the pool (dropped when the pool is full: the smallest goes).
pub(super) fn give(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    pool.push(v);
    if pool.len() > KEEP {
        let smallest = (pool.iter().enumerate())
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)
            .expect("non-empty");
        pool.swap_remove(smallest);
    }
}
