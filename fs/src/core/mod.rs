//! The filesystem core: a mounted keelfs, [`Fs`].
//!
//! [`Fs::mount`] identifies the legs (`devset`), builds the stack
//! `MirrorSet` → `Volume` → `Bufio` → `Journal`, opens the allocators and
//! the inode cache, marks the superblock mounted on every leg and finishes
//! off orphans a crash left. [`Fs::unmount`] commits, flushes and writes the
//! superblocks clean with the free counts. Dropping an `Fs` without
//! unmounting is a crash: nothing uncommitted reaches the disk.
//!
//! The pieces, one file each:
//!
//! * `meta.rs`: reading and creating metadata blocks with kind checks;
//! * `time.rs`: timestamps;
//! * `atime.rs`: when reads update atime (the mount's atime mode);
//! * `superblock.rs`: the in-memory superblock and its per-leg writes;
//! * `scrub.rs`: online scrub of every allocated block on every leg;
//! * `resync.rs`: online resync of a stale, returning or new leg;
//! * `replace.rs`: a new device in the place of a leg, then resynced;
//! * `add.rs`: a new leg added to the set (`keelfs add`), then resynced;
//! * `health.rs`: failed legs recorded in the superblocks, persistent
//!   error counters, EIO when no leg is left;
//! * `inode.rs`: the inode cache ([`InodeCell`], [`InodeState`]);
//! * `orphan.rs`: the orphan list (unlinked but open), anchored in the
//!   root inode and journalled like any inode field;
//! * `lifecycle.rs`: creating inodes, dropping links, forget, freeing,
//!   orphan recovery (the API the namespace code builds on);
//! * `reclaim.rs`: freeing everything an inode holds;
//! * `tags.rs`: the tag table (§7);
//! * `extent.rs`: the extent tree (§6);
//! * `file.rs`, `file_space.rs`, `symlink.rs`: file data (read, write,
//!   truncate, fallocate, lseek, copy) and symlink targets;
//! * `file_ops.rs`: the public file API on [`Fs`] (getattr, setattr, open,
//!   read, write, fsync, statfs, …);
//! * `acl.rs`: POSIX ACLs (validation, mode bits, chmod, inheritance);
//! * `chattr.rs`: chattr flags and the rules they impose;
//! * `privs.rs`: who keeps setuid/setgid after a write, chown or ACL;
//! * `namespace.rs`, `rename.rs`, `readdir.rs`, `xattr_ops.rs`: the
//!   namespace API on [`Fs`] (lookup, mknod, mkdir, symlink, link, unlink,
//!   rmdir, rename, readdir(plus), extended attributes), over the
//!   directory B+tree of [`crate::dir`] and the xattr chains of
//!   [`crate::xattr`].
//!
//! Metadata goes through bufio and the journal (`tx.write`); file data goes
//! straight to the volume (`read_data` / `write_data`), one request per
//! physically contiguous run.
//!
//! # Lock order
//!
//! 1. the journal handle (`journal.start()`), before any inode lock: a
//!    commit waits for open handles, so a thread holding an inode lock must
//!    never wait in `start`;
//! 2. a rename between two directories takes the rename mutex
//!    (`Fs::rename_lock`) here, before any inode lock;
//! 3. inode locks ([`InodeCell::write`]/[`InodeCell::read`]): a directory
//!    before its children; two directories (rename): an ancestor before its
//!    descendant, else in ascending inode number (the rename mutex keeps
//!    ancestry still meanwhile, see `rename.rs`); two non-directories
//!    (copy_file_range, the two names of a rename) in ascending inode
//!    number;
//! 4. inode-cache shard mutexes, allocator group mutexes, the inode- and
//!    tag-table initialisation mutexes (never two of one kind at once);
//! 5. bufio buffer guards — never held across `journal.start()`,
//!    `journal.commit()`, `cache.flush()` or another `new_buf` of the same
//!    block;
//! 6. leaf locks: the orphan list, the superblock (held across its own I/O,
//!    taken alone or from a commit hook).

pub mod acl;
mod add;
pub mod atime;
pub mod chattr;
pub mod extent;
mod file;
mod file_ops;
mod file_space;
pub mod health;
pub mod inode;
mod lifecycle;
pub mod meta;
pub mod namespace;
pub mod orphan;
pub mod privs;
mod readdir;
mod reclaim;
pub mod rename;
mod replace;
pub mod resync;
pub mod scrub;
pub mod superblock;
mod symlink;
pub mod tags;
pub mod time;
mod xattr_ops;

pub use acl::AclKind;
pub use file_ops::{FileAttr, SetAttr, StatFs, TimeSet, Whence};
pub use file_space::FallocMode;
pub use inode::{InodeCache, InodeCell, InodeState};
pub use namespace::{Caller, LINK_MAX};
pub use privs::Actor;
pub use readdir::DirListEntry;
pub use rename::{RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT};

use crate::alloc::{BlockAllocator, InodeAllocator, MetaAllocator};
use crate::devset::{self, DeviceSet};
use crate::error::{FsError, FsResult};
use crate::format::{Layout, Superblock};
use crate::journal::{self, Journal, JournalConfig};
use health::{Health, HealthWatcher};
use keelfs_engine::bufio::{BlockStore, Bufio, BufioConfig};
use keelfs_engine::device::DeviceRef;
use keelfs_engine::integrity::Volume;
use orphan::Orphans;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use superblock::SuperblockKeeper;
use tags::TagTable;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountParams {
    /// Change nothing on disk (no journal commits, no superblock writes).
    pub read_only: bool,
    /// Accept a set with missing, failed or stale legs.
    pub degraded: bool,
    /// Metadata cache size in bytes.
    pub cache_bytes: u64,
    /// Unused inode cells kept in memory, at most (about).
    pub inode_cache_entries: usize,
    /// Run bufio's background writeback and ageing thread (tests turn it
    /// off for determinism).
    pub background_writeback: bool,
}

impl Default for MountParams {
    fn default() -> MountParams {
        MountParams {
            read_only: false,
            degraded: false,
            cache_bytes: 64 << 20,
            inode_cache_entries: 65536,
            background_writeback: true,
        }
    }
}

impl MountParams {
    fn bufio_config(&self, block_size: u64) -> BufioConfig {
        let limit = self.cache_bytes.max(16 * block_size);
        BufioConfig {
            memory_limit_bytes: limit,
            resident_min_bytes: (1 << 20).min(limit / 4),
            background_tick: self.background_writeback.then_some(Duration::from_secs(1)),
            ..BufioConfig::default()
        }
    }
}

/// A mounted keelfs. See the module docs.
pub struct Fs {
    keeper: Arc<SuperblockKeeper>,
    layout: Layout,
    volume: Arc<Volume>,
    cache: Arc<Bufio>,
    journal: Journal,
    blocks: BlockAllocator,
    ialloc: InodeAllocator,
    inodes: InodeCache,
    tags: TagTable,
    orphans: Orphans,
    read_only: bool,
    /// Held by renames between two directories (lock order: after the
    /// journal handle, before inode locks); keeps directory ancestry still.
    rename_lock: Mutex<()>,
    health: Arc<Health>,
    /// The health thread (none on a read-only mount); stopped at unmount.
    watcher: Mutex<Option<HealthWatcher>>,
    /// Background resyncs ([`Fs::start_resync`]).
    resync: resync::ResyncControl,
    /// When reads update atime (`atime.rs`).
    atime: atime::AtimeSetting,
}

/// Replays what the journal holds (unless the mount is read-only: then a
/// journal that still needs replay refuses to open, with a clear error),
/// then opens it over the cache.
fn open_journal(
    cache: &Arc<Bufio>,
    volume: &Arc<Volume>,
    layout: &Layout,
    read_only: bool,
) -> FsResult<Journal> {
    if !read_only {
        let report = journal::recover(volume, layout)?;
        if report.transactions_replayed > 0 || report.intent_records > 0 {
            log::info!("journal recovery: {report:?}");
        }
    }
    Journal::open(
        Arc::clone(cache),
        Arc::clone(volume),
        layout,
        JournalConfig::default(),
    )
}

impl Fs {
    /// Mounts the filesystem on `devices` (its legs, in any order).
    pub fn mount(devices: Vec<DeviceRef>, params: &MountParams) -> FsResult<Fs> {
        let set = devset::identify(&devices)?;
        Fs::mount_set(set, params)
    }

    /// Mounts an already identified device set.
    ///
    /// On a read-write mount every given leg that `identify` took out of
    /// service — stale (it missed writes), recorded failed, or recorded as
    /// being resynced — is put in the `Resyncing` state at once: it takes
    /// every write from now on, the member tables record it `Resyncing`,
    /// and [`Fs::start_resync`] (which the FUSE daemon calls once mounted)
    /// copies the rest to it in the background. So a failed leg given back
    /// at mount is re-added, not left out (btrfs leaves it to a manual
    /// scrub; we resync). A set with such legs is still degraded until the
    /// resync is done, so `-o degraded` is still needed to mount it.
    pub fn mount_set(set: DeviceSet, params: &MountParams) -> FsResult<Fs> {
        let report = set.report().clone();
        if report.is_degraded() && !params.degraded {
            return Err(FsError::Invalid(format!(
                "the device set is degraded ({}); mount with -o degraded to use it anyway",
                report.describe().join("; ")
            )));
        }
        if set.mirror().in_service().is_clear() {
            return Err(keelfs_engine::EngineError::NoLegs.into());
        }
        let read_only = params.read_only || report.read_only_required;
        let sb = set.superblock().clone();
        let layout = sb.layout;
        let volume = Arc::clone(set.volume());
        let store: Arc<dyn BlockStore> = volume.clone();
        let cache = Arc::new(Bufio::new(
            store,
            params.bufio_config(u64::from(layout.block_size)),
        )?);
        let journal = open_journal(&cache, &volume, &layout, read_only)?;
        let blocks = BlockAllocator::open(Arc::clone(&cache), &layout)?;
        let ialloc = InodeAllocator::open(Arc::clone(&cache), &layout)?;
        let inodes = InodeCache::new(Arc::clone(&cache), &layout, params.inode_cache_entries);
        let tags = TagTable::new(Arc::clone(&cache), &layout);
        let keeper = Arc::new(SuperblockKeeper::new(set));
        let health = Arc::new(Health::new(Arc::clone(&keeper)));
        let fs = Fs {
            keeper,
            layout,
            volume,
            cache,
            journal,
            blocks,
            ialloc,
            inodes,
            tags,
            orphans: Orphans::default(),
            read_only,
            rename_lock: Mutex::new(()),
            health,
            watcher: Mutex::new(None),
            resync: resync::ResyncControl::default(),
            atime: atime::AtimeSetting::default(),
        };
        if !read_only {
            let mirror = fs.volume.set();
            for p in 0..mirror.num_legs() {
                if mirror.leg_state(p) == keelfs_engine::mirror::LegState::Failed {
                    log::info!(
                        "leg {} is behind the others: it will be resynced",
                        mirror.leg_device(p).name()
                    );
                    mirror.mark_resyncing(p);
                    fs.keeper.track(p);
                }
            }
            let gen = fs.journal.committed_seq();
            fs.keeper.write(gen, |sb| {
                sb.state.clean_unmount = false;
                sb.mount_count = sb.mount_count.saturating_add(1);
                sb.last_mounted = time::now().secs.max(0) as u64;
            })?;
            fs.recover_orphans(&sb)?;
            let watcher = HealthWatcher::start(Arc::clone(&fs.health))
                .map_err(|e| FsError::Invalid(format!("cannot start the health thread: {e}")))?;
            *fs.watcher.lock() = Some(watcher);
        }
        Ok(fs)
    }

    /// Commits, flushes, frees what is left on the orphan list (nothing is
    /// open once unmounted) and writes every leg's superblock clean with the
    /// free counts.
    pub fn unmount(self) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.stop_resync();
        if let Some(mut watcher) = self.watcher.lock().take() {
            watcher.stop();
        }
        self.health.check_legs();
        self.check_writable()?;
        self.free_remaining_orphans()?;
        self.journal.shutdown()?;
        self.cache.flush()?;
        self.write_superblock(true)
    }

    /// Makes everything durable (commit, flush) and records the free counts
    /// in the superblocks (the filesystem stays marked mounted).
    pub fn sync_all(&self) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.health.check_legs();
        self.journal.commit()?;
        self.cache.flush()?;
        self.write_superblock(false)
    }

    /// Records in every leg's superblock that there is no lost+found.
    pub(crate) fn forget_lost_found(&self) -> FsResult<()> {
        let gen = self.journal.committed_seq();
        self.keeper.write(gen, |sb| sb.lost_found_inode = 0)
    }

    fn write_superblock(&self, clean: bool) -> FsResult<()> {
        let gen = self.journal.committed_seq();
        let free_blocks = self.blocks.free_blocks();
        let free_inodes = self.ialloc.free_inodes();
        self.keeper.write(gen, |sb| {
            sb.free_blocks = free_blocks;
            sb.free_inodes = free_inodes;
            sb.state.clean_unmount = clean;
        })
    }

    /// Fails with `ReadOnly` on a read-only mount.
    /// Fails with EIO (`NoLegs`) when no mirror leg is left in service.
    pub fn check_writable(&self) -> FsResult<()> {
        if self.read_only {
            Err(FsError::ReadOnly)
        } else if self.health.unavailable() {
            Err(keelfs_engine::EngineError::NoLegs.into())
        } else {
            Ok(())
        }
    }

    /// Records leg failures now (the health thread does it within
    /// [`health::POLL_INTERVAL`]); returns whether a leg had failed since
    /// the last look. Call it holding no lock.
    pub fn check_legs(&self) -> bool {
        self.health.check_legs()
    }

    /// Mirror leg `leg`'s error counters, persistent plus this mount's.
    pub fn leg_totals(&self, leg: usize) -> Option<crate::format::superblock::MemberCounters> {
        self.keeper.leg_totals(leg)
    }

    /// Whether the mount is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The integrity-protected volume (file data goes here directly).
    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }

    /// The metadata cache.
    pub fn cache(&self) -> &Arc<Bufio> {
        &self.cache
    }

    /// The journal: every metadata change goes through `journal().start()`.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The §3 layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        u64::from(self.layout.block_size)
    }

    /// The superblock as last written (free counts in it are a summary;
    /// [`Fs::statfs`] has the live ones).
    pub fn superblock(&self) -> Superblock {
        self.keeper.snapshot()
    }

    /// The device set (legs, mirror, what identify found).
    pub fn device_set(&self) -> &DeviceSet {
        self.keeper.set()
    }

    /// The block allocator.
    pub fn blocks(&self) -> &BlockAllocator {
        &self.blocks
    }

    /// Where directory, xattr and other tree blocks come from.
    pub fn meta_allocator(&self) -> &dyn MetaAllocator {
        &self.blocks
    }

    /// The inode allocator.
    pub fn inode_allocator(&self) -> &InodeAllocator {
        &self.ialloc
    }

    /// The inode cache.
    pub fn inodes(&self) -> &InodeCache {
        &self.inodes
    }

    /// The tag table.
    pub fn tags(&self) -> &TagTable {
        &self.tags
    }

    /// The orphan list.
    pub fn orphans(&self) -> &Orphans {
        &self.orphans
    }
}
