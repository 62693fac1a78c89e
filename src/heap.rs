//! The process heap under glibc: make memory that a burst of sessions used go back to the
//! kernel once they leave (issue 14 item 5). Both calls are no-ops on other C libraries.

/// Blocks of at least this size get their own mapping, unmapped when freed (glibc's default).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Keep glibc's mmap threshold fixed at [`MMAP_THRESHOLD`]; call once at start.
///
/// Left dynamic, glibc raises the threshold to the size of each mapped block freed (up to
/// 32 MiB). A burst of sessions grows and frees tables of a few MB, so afterwards blocks of
/// up to that size came from the heap arenas, where freed memory stays fragmented: the hub's
/// anonymous RSS rose ~2.5 MB with each burst of 200 offering sessions (5.8, 8.1, 10.1 MB over
/// three rounds) and stayed at 5.3-5.7 MB with the threshold fixed. Setting it also fixes the
/// trim threshold (2 × 128 KiB), so freed heap tops are given back as before.
pub fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Give the allocator's free pages back to the kernel (after a burst, not on a hot path: it
/// walks every arena's free lists).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointers are passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes in blocks that have their own mapping (glibc's `mallinfo2().hblkhd`), for tests;
/// `None` where that is not known.
pub fn mapped_bytes() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallinfo2 only reads the allocator's counters.
    return Some(unsafe { libc::mallinfo2() }.hblkhd);
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}
