//! The daemon's memory policy.
//!
//! What the daemon holds is bounded by design: the metadata cache by its
//! byte limit (`cache_size`, bufio's watermarks), the inode cache by its
//! cell limit, and request buffers by the worker count times the largest
//! request (1 MiB). The allocator must not add an unbounded term of its
//! own. glibc's does, by default, in two ways: every thread that allocates
//! gets an arena of its own (up to 8 per core), and its mmap threshold
//! rises to the size of the largest block freed, so once a 1 MiB request
//! buffer is freed, later ones come from the arenas and stay there. With
//! two dozen workers moving 1 MiB buffers that is tens of MiB that never go
//! back. [`apply`] fixes both: two arenas, and a fixed 256 KiB threshold so
//! request buffers are mapped and unmapped with the request.
//!
//! Relies on glibc's `mallopt`; on other C libraries it does nothing.

/// Sets the allocator policy above. Call it before starting threads.
pub fn apply() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it takes plain
        // integers, touches no memory of ours, and is safe to call at any
        // time (we call it before the worker threads exist). A refused
        // parameter returns 0 and leaves the default, which is still correct.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}
