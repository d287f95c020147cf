//! keelfs filesystem core.
//!
//! * [`format`]: the single implementation of the on-disk format described
//!   byte by byte in `docs/format.md`. `mkfs.keelfs`, `fsck.keelfs` and the
//!   mount program all encode and decode keelfs structures through it.
//! * [`core`]: the mounted filesystem ([`core::Fs`]): allocators, inode
//!   cache, extent trees, file data.
//! * [`alloc`]: block and inode allocation.
//! * [`journal`]: every metadata change goes through a transaction.
//! * [`dir`]: directories, the B+tree of names (§8); [`xattr`]: extended
//!   attributes (§9); both change blocks through a [`meta_tx::MetaTx`].
//! * [`fuse`]: mounting, the daemon and the worker pool of the FUSE adapter.
//! * [`devset`]: the legs a filesystem lives on: opening, identifying and
//!   checking them, reading and writing their superblocks;
//!   [`member_scan`]: finding members that were not named among the block
//!   devices, by uuid.
//! * [`mkfs`]: formatting a set of legs (the library behind `mkfs.keelfs`).
//!
//! The block engine (`keelfs-engine`) stores, mirrors and seals blocks; this
//! crate decides what their payloads mean. Errors are [`error::FsError`];
//! they become errno only at the FUSE boundary.

pub mod alloc;
pub mod core;
pub mod devset;
pub mod dir;
pub mod error;
pub mod format;
pub mod fuse;
pub mod journal;
pub mod member_scan;
pub mod meta_tx;
pub mod mkfs;
pub mod xattr;
