//! Words of memory shared by the master and every worker: an anonymous `MAP_SHARED` mapping
//! made before the first fork, seen as a slice of atomics.
//!
//! This is the only `unsafe` of the pool's observability; everything built on it (the stats
//! board, the pool-wide rate-limit table) is safe code over `&[AtomicU64]`.
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use nix::sys::mman::{self, MapFlags, ProtFlags};

/// A zero-filled, page-aligned array of `AtomicU64` shared with forked processes.
pub(crate) struct SharedWords {
    base: NonNull<AtomicU64>,
    len: usize,
}

impl SharedWords {
    /// Maps `len` words (at least one).
    pub(crate) fn new(len: usize) -> io::Result<SharedWords> {
        let len = len.max(1);
        let bytes = len
            .checked_mul(std::mem::size_of::<AtomicU64>())
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| io::Error::other("shared mapping too large"))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks: it aliases no
        // Rust object. It is zero-filled and page-aligned, so aligned for `AtomicU64`.
        let ptr = unsafe {
            mman::mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(io::Error::from)?;
        Ok(SharedWords {
            base: ptr.cast(),
            len,
        })
    }

    /// The words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds exactly `len` aligned words and lives as long as `self`
        // (the slice borrows `self`); every bit pattern is a valid `AtomicU64`, and the
        // memory is only ever accessed atomically, by this process or the forked ones.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: `base` and the length are exactly the mapping made in `new`, and no
        // reference into it outlives `self` (`words` borrows `self`).
        let _ = unsafe {
            mman::munmap(
                self.base.cast(),
                self.len * std::mem::size_of::<AtomicU64>(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn shared_with_a_forked_child() {
        let shm = SharedWords::new(16).unwrap();
        assert_eq!(shm.words().len(), 16);
        assert!(shm.words().iter().all(|w| w.load(Ordering::Relaxed) == 0));
        // SAFETY: the child touches no lock: one atomic store, then `_exit` (the test harness
        // is multi-threaded).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                shm.words()[7].store(42, Ordering::Release);
                // SAFETY: ends the child at once, running nothing of the parent's.
                unsafe { nix::libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(shm.words()[7].load(Ordering::Acquire), 42);
            }
        }
    }
}
