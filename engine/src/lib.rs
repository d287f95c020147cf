//! keelfs engine: the block layers every keelfs program stands on.
//!
//! The engine stores blocks, never files. From the bottom up:
//!
//! * [`device`]: one storage device (image file, block device, memory, or a
//!   fault-injecting / recording wrapper used by tests). Byte-addressed,
//!   sector-aligned, with a `flush` barrier.
//! * [`ioctx`]: the I/O context of whoever asked for the I/O (a FUSE caller's
//!   pid, or an internal worker) and its priority class, after blk-ioc.
//! * [`sched`]: per-device dispatch by priority class: real-time before
//!   best-effort before idle.
//! * [`mirror`]: a mirror set of N devices ("legs"), after dm-io: one write
//!   goes to every leg in parallel and returns one error bit per leg; a read
//!   goes to one leg; plugs batch and merge adjacent writes.
//! * [`integrity`]: per-block tags (crc32c bound to the block address and a
//!   generation), generated on write and verified on read; a bad copy is read
//!   from the next leg and the bad legs are rewritten from the good one.
//! * [`bufio`]: the metadata block cache, after dm-bufio: hold counts, clean
//!   and dirty LRUs, watermarks, pins that keep a buffer from its home
//!   location until the journal allows it, writeback in block order.
//!
//! Each layer calls only the one below it. Errors are typed per layer
//! ([`error`]); nothing here knows about errno except `Errno`-free
//! `std::io::Error`s carried up from devices.

pub mod bufio;
pub mod device;
pub mod error;
pub mod integrity;
pub mod ioctx;
pub mod mirror;
pub mod sched;
pub mod stats;

pub use error::{DeviceError, EngineError};
