//! A device backed by an image file or a block device.
//!
//! Reads and writes are pread/pwrite(v) on one shared descriptor (they are
//! positionless, so any number of threads may use it at once); `flush` is
//! fdatasync, which on Linux also flushes the device's volatile cache.
//! Opening takes an advisory `flock` so two keelfs processes never drive the
//! same device at once; a second opener gets a clear error instead of a
//! silently corrupted mirror. Sparse image files stay sparse: nothing here
//! writes what the layers above do not ask to write, and `write_zeroes`
//! punches holes in files and uses BLKZEROOUT on block devices (the only
//! `unsafe` here besides flock: the ioctls and fallocate).

use super::{check_range, Device};
use crate::error::{DeviceError, DeviceResult};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

#[derive(Debug)]
pub struct FileDevice {
    name: String,
    file: File,
    size: u64,
    is_block_device: bool,
}

/// How to open a [`FileDevice`].
#[derive(Debug, Clone, Copy)]
pub struct FileOpenOptions {
    /// Open read-only (writes then fail with EBADF from the kernel).
    pub read_only: bool,
    /// Take an exclusive flock, failing at once if another process holds it.
    pub lock: bool,
    /// Wait for the lock instead of failing (a remount racing the old daemon).
    pub wait_for_lock: bool,
}

impl Default for FileOpenOptions {
    fn default() -> Self {
        FileOpenOptions {
            read_only: false,
            lock: true,
            wait_for_lock: false,
        }
    }
}

impl FileDevice {
    /// Open an existing image file or block device read-write, locked.
    pub fn open(path: impl AsRef<Path>) -> DeviceResult<Self> {
        Self::open_with(path, FileOpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, opts: FileOpenOptions) -> DeviceResult<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let open_err = |source: io::Error| DeviceError::Open {
            device: name.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let is_block_device = meta.file_type().is_block_device();
        if !is_block_device && !meta.file_type().is_file() {
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            )));
        }
        if opts.lock {
            let mut how = libc::LOCK_EX;
            if !opts.wait_for_lock {
                how |= libc::LOCK_NB;
            }
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), how) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                let e = if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    io::Error::new(io::ErrorKind::WouldBlock, "in use by another process")
                } else {
                    e
                };
                return Err(open_err(e));
            }
        }
        // lseek(SEEK_END) gives the size of block devices as well as files.
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        let size = size - size % super::SECTOR;
        Ok(FileDevice {
            name,
            file,
            size,
            is_block_device,
        })
    }

    /// Create (or truncate to) a sparse image file of `size` bytes.
    pub fn create_image(path: impl AsRef<Path>, size: u64) -> DeviceResult<Self> {
        let path = path.as_ref();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|source| DeviceError::Open {
                device: path.display().to_string(),
                source,
            })?;
        f.set_len(size).map_err(|source| DeviceError::Open {
            device: path.display().to_string(),
            source,
        })?;
        drop(f);
        Self::open(path)
    }

    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    fn io_err(&self, op: &'static str, offset: u64, source: io::Error) -> DeviceError {
        DeviceError::Io {
            device: self.name.clone(),
            op,
            offset,
            source,
        }
    }
}

impl Device for FileDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        check_range(&self.name, self.size, offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.io_err("read", offset, e))
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        check_range(&self.name, self.size, offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io_err("write", offset, e))
    }

    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> DeviceResult<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        check_range(&self.name, self.size, offset, total)?;
        let mut slices: Vec<io::IoSlice> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
        let mut slices: &mut [io::IoSlice] = &mut slices;
        let mut off = offset;
        while !slices.is_empty() {
            let n = nix::sys::uio::pwritev(&self.file, slices, off as i64)
                .map_err(|e| self.io_err("write", off, io::Error::from(e)))?;
            if n == 0 {
                return Err(self.io_err("write", off, io::ErrorKind::WriteZero.into()));
            }
            off += n as u64;
            io::IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }

    fn flush(&self) -> DeviceResult<()> {
        self.file
            .sync_data()
            .map_err(|e| self.io_err("flush", 0, e))
    }

    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        check_range(&self.name, self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // BLKDISCARD = _IO(0x12, 119)
        match self.release_range(0x1277, offset, len) {
            // Discard is advisory: a device that cannot do it keeps the bytes.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.io_err("discard", offset, e)),
            Ok(()) => Ok(()),
        }
    }

    /// Block devices: the BLKZEROOUT ioctl (the device zeroes the range, by
    /// WRITE ZEROES or by writing, and it reads back as zeroes, which
    /// BLKDISCARD does not promise). Files: punch a hole (fallocate
    /// PUNCH_HOLE | KEEP_SIZE), which reads back as zeroes and keeps a
    /// sparse image sparse. Where neither is supported, zero buffers are
    /// written.
    fn write_zeroes(&self, offset: u64, len: u64) -> DeviceResult<()> {
        check_range(&self.name, self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // BLKZEROOUT = _IO(0x12, 127)
        match self.release_range(0x127f, offset, len) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL)
                ) =>
            {
                super::write_zeroes_by_writing(self, offset, len)
            }
            Err(e) => Err(self.io_err("write zeroes", offset, e)),
            Ok(()) => Ok(()),
        }
    }
}

impl FileDevice {
    /// Give up a byte range: on a block device the range ioctl `request`
    /// (BLKDISCARD or BLKZEROOUT, both taking a `[start, length]` pair); on
    /// an image file a hole punch, which reads back as zeroes and keeps the
    /// image sparse.
    fn release_range(&self, request: libc::c_ulong, offset: u64, len: u64) -> io::Result<()> {
        let rc = if self.is_block_device {
            let range: [u64; 2] = [offset, len];
            // SAFETY: both requests read a [u64; 2] (start, length) from the
            // pointer, which points at a live local array for the duration
            // of the call; the kernel writes nothing through it.
            unsafe { libc::ioctl(self.file.as_raw_fd(), request, range.as_ptr()) }
        } else {
            // SAFETY: fallocate on a descriptor we own; integer arguments only.
            unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    len as libc::off_t,
                )
            }
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_image_round_trip_and_flush() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.img");
        let d = FileDevice::create_image(&p, 1 << 30).unwrap();
        assert_eq!(d.size(), 1 << 30);
        d.write_at(4096 * 1000, &[5u8; 8192]).unwrap();
        d.write_vectored_at(0, &[&[1u8; 512], &[2u8; 1024]])
            .unwrap();
        d.flush().unwrap();
        let mut b = vec![0u8; 8192];
        d.read_at(4096 * 1000, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 5));
        let mut h = vec![0u8; 1536];
        d.read_at(0, &mut h).unwrap();
        assert!(h[..512].iter().all(|&x| x == 1) && h[512..].iter().all(|&x| x == 2));
        // Sparse: a 1 GiB image with 10 KiB written uses far less than 1 GiB.
        let used = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(used.blocks() * 512 < 1 << 20);
        d.discard(4096 * 1000, 4096).unwrap();
        d.read_at(4096 * 1000, &mut b).unwrap();
        assert!(b[..4096].iter().all(|&x| x == 0) && b[4096..].iter().all(|&x| x == 5));
    }

    #[test]
    fn write_zeroes_punches_a_hole_in_an_image() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.img");
        let d = FileDevice::create_image(&p, 4 << 20).unwrap();
        d.write_at(0, &vec![7u8; 4 << 20]).unwrap();
        d.write_zeroes(4096, (4 << 20) - 8192).unwrap();
        let mut b = vec![0u8; 4 << 20];
        d.read_at(0, &mut b).unwrap();
        assert!(b[..4096].iter().all(|&x| x == 7));
        assert!(b[4096..(4 << 20) - 4096].iter().all(|&x| x == 0));
        assert!(b[(4 << 20) - 4096..].iter().all(|&x| x == 7));
        let used = std::fs::metadata(&p).unwrap().blocks() * 512;
        assert!(used < 1 << 20, "{used} bytes still allocated");
        assert!(matches!(
            d.write_zeroes(4 << 20, 512),
            Err(DeviceError::OutOfRange { .. })
        ));
    }

    #[test]
    fn second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.img");
        let _d = FileDevice::create_image(&p, 1 << 20).unwrap();
        let e = FileDevice::open(&p).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
    }

    #[test]
    fn missing_and_wrong_kind_are_clear_errors() {
        let e = FileDevice::open("/nonexistent/keelfs.img").unwrap_err();
        assert!(matches!(e, DeviceError::Open { .. }), "{e}");
        let e = FileDevice::open("/dev/null").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn out_of_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDevice::create_image(dir.path().join("a.img"), 1 << 20).unwrap();
        assert!(matches!(
            d.write_at(1 << 20, &[0; 512]),
            Err(DeviceError::OutOfRange { .. })
        ));
    }
}
