//! keelfs filesystem core.
//!
//! For now this crate holds one thing: [`format`], the single implementation
//! of the on-disk format described byte by byte in `docs/format.md`.
//! `mkfs.keelfs`, `fsck.keelfs` and the mount program all encode and decode
//! keelfs structures through it, never through a copy of their own.
//!
//! The block engine (`keelfs-engine`) stores, mirrors and seals blocks; this
//! crate decides what their payloads mean.

#![forbid(unsafe_code)]

pub mod format;
