//! keelfs filesystem crate: the fs core (format, inodes, directories) and the
//! FUSE adapter with its mount/daemon plumbing.

pub mod fuse;
