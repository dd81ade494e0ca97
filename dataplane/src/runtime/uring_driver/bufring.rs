//! A provided-buffer ring: buffers the kernel picks from for multishot
//! receives, so no buffer is tied to an idle connection. Each completion names
//! the buffer it filled; the buffer goes back to the ring once its bytes have
//! been handed to the worker (which keeps only an incomplete tail).

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The ring and its buffers.
pub(crate) struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    entries: u16,
    bufs: Vec<u8>,
    size: usize,
    /// Our copy of the tail; published with [`publish`](Self::publish).
    tail: u16,
}

impl BufRing {
    /// Registers `entries` (a power of two) buffers of `size` bytes as group
    /// `bgid`.
    pub fn new(
        submitter: &Submitter<'_>,
        entries: u16,
        size: usize,
        bgid: u16,
    ) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two());
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = BufRing {
            ring: ptr.cast(),
            ring_bytes,
            entries,
            bufs: vec![0; usize::from(entries) * size],
            size,
            tail: 0,
        };
        // SAFETY: the mapping is page-aligned, `ring_bytes` long, and lives
        // until `drop`, after the ring is unregistered.
        unsafe { submitter.register_buf_ring_with_flags(ptr as u64, entries, bgid, 0)? };
        for bid in 0..entries {
            ring.recycle(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// The first `len` bytes of buffer `bid`.
    #[inline]
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * self.size;
        &self.bufs[start..start + len.min(self.size)]
    }

    /// Gives buffer `bid` back to the kernel (visible after `publish`).
    #[inline]
    pub fn recycle(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs.as_ptr() as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: `idx` < entries, inside the mapping.
        let entry = unsafe { &mut *self.ring.add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel.
    #[inline]
    pub fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of the mapping; the
        // kernel reads it with acquire ordering, so entries written before
        // this release store are visible with it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the region mapped in `new`; the ring is dropped
        // after the io_uring instance that used it (see the driver).
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}
