//! The file system as the log sees it: every file and directory operation of the log goes
//! through one [`Io`], so that tests can run the log on a simulated disk that loses what a
//! power cut loses (`SimDisk`, behind the `sim` feature, which the crate's own tests turn
//! on).
//!
//! A [`crate::Log`] holds its `Io` as an `Arc<dyn Io>` and hands it to each part that
//! touches the disk (partitions, segments, topics, groups, the journal); files are
//! `Box<dyn IoFile>`. [`crate::Log::open`] uses [`RealIo`], a thin layer over `std::fs`;
//! [`crate::Log::open_with_io`] takes any other.
//!
//! # What the seam costs and keeps
//!
//! - One dynamic call per positional write, read, `fdatasync` and `ftruncate`, each of
//!   which [`RealIo`] turns into exactly the one syscall the log made before; no buffer is
//!   copied. Opening a file boxes its handle once. An allocation ahead (a segment's, once
//!   per 64 KiB to 1 MiB written) is an `fstatvfs` and a write of zeros per 64 KiB.
//! - Errors pass through untouched: a full disk is still `ErrorKind::StorageFull`, which the
//!   log turns into [`crate::Error::DiskFull`] or [`crate::Error::JournalDiskFull`].
//!
//! # What the simulated disk models
//!
//! `SimDisk` keeps, per file, the durable bytes and the writes and truncations since its
//! last `sync_data`/`sync_all`, and per directory the durable entries and the creations,
//! renames and removals since its last fsync. As POSIX promises and no more (ext4 without
//! its `auto_da_alloc` heuristics): a new file's (or directory's) entry is durable only
//! once its directory is fsynced, and a rename or removal likewise; syncing a file makes
//! its bytes and length durable, never its name.
//!
//! `SimDisk::power_cut` ends the run (the old disk fails every operation from then on)
//! and returns the disk as it comes back after a reboot:
//!
//! - `CutMode::DropUnsynced`: every file and directory as of its last sync.
//! - `CutMode::Torn`: from the durable state, each 512-byte sector of each unsynced
//!   write, each unsynced truncation and each unsynced directory operation is kept or
//!   dropped, independently, by a generator seeded by the caller; so a sector may hold an
//!   older write's bytes, a later write may survive an earlier one, a file may grow with
//!   zeros where a dropped sector was, and a rename may land without the creation before
//!   it.
//! - `CutMode::KeepAll`: everything written, as if every write reached the disk.
//!
//! A process crash is `SimDisk::fork`: the next process finds the page cache, unsynced
//! writes and all, and a later power cut can still take them.
//!
//! `SimDisk::fail_power_after` cuts the power in the middle of whatever the log is doing:
//! after the next N mutating operations, every operation fails (the log sees IO errors),
//! and a later `power_cut` images the disk as it was at that moment. `SimDisk::inject`
//! makes the Nth write or sync fail with a chosen error (`StorageFull` for ENOSPC, `Other`
//! for EIO): a failing write first writes half its bytes, and a failing sync forgets the
//! writes it was to make durable, as Linux does after a failed `fsync` (a later sync that
//! succeeds does not bring them back). `SimDisk::crash_image` is the image a cut would
//! leave, with the disk going on. Nothing else is simulated: no tearing within a sector,
//! no bit rot, no latency, and renames only within one directory (all the log does).

use std::{
    ffi::OsString,
    fmt,
    fs::{File, OpenOptions, TryLockError},
    io,
    os::unix::fs::FileExt,
    path::Path,
};

#[cfg(any(test, feature = "sim"))]
mod sim;

#[cfg(any(test, feature = "sim"))]
pub use sim::{CutMode, Fault, FaultOn, SECTOR, SimDisk};

/// How to open a file; each is one combination of `std::fs::OpenOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only; the file must exist.
    Read,
    /// Write only; the file must exist.
    Write,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Write only; created if missing, kept as it is if not.
    Create,
    /// Read and write; a new file, failing with `AlreadyExists` if there is one.
    CreateNew,
    /// Write only; created if missing, emptied if not (`File::create`).
    Truncate,
}

impl Access {
    pub fn readable(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite | Access::CreateNew)
    }

    pub fn writable(self) -> bool {
        !matches!(self, Access::Read)
    }

    pub fn creates(self) -> bool {
        matches!(self, Access::Create | Access::CreateNew | Access::Truncate)
    }
}

/// What the log asks about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub is_dir: bool,
    /// Bytes, for a file.
    pub len: u64,
}

/// The file system operations of the log. Paths are those the log builds from the data
/// directory it was opened on.
pub trait Io: Send + Sync + fmt::Debug + 'static {
    fn open(&self, path: &Path, access: Access) -> io::Result<Box<dyn IoFile>>;
    /// The whole contents of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates one directory; `AlreadyExists` if the path exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it, without following symbolic links. The
    /// default walks the tree through the other methods (a `SimDisk` has no links);
    /// nothing of it is made durable.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        for name in self.read_dir(path)? {
            let entry = path.join(name);
            if self.metadata(&entry)?.is_dir {
                self.remove_dir_all(&entry)?;
            } else {
                self.remove_file(&entry)?;
            }
        }
        self.remove_dir(path)
    }
    /// Renames a file within its directory, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of a directory (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// The names in a directory, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// Follows symbolic links.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
}

/// An open file. Positional reads and writes need no seek, so one handle may be shared.
pub trait IoFile: Send + Sync + fmt::Debug {
    /// Fails with `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Allocates the bytes from `from` (the file's end) to `to` by writing zeros there, so
    /// the file is `to` bytes long and, once that is durable, a later write into those
    /// bytes is made durable by an `fdatasync` that need not also record the file's growth
    /// or convert extents (as it would after `fallocate(2)`, whose extents are unwritten
    /// until written). Fails with `StorageFull` rather than leave the file system less
    /// than [`ALLOCATION_RESERVE`] free: the space is for the log's other files.
    fn allocate(&self, from: u64, to: u64) -> io::Result<()>;
    /// `fdatasync`: the file's bytes and length durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: as `sync_data`, plus the rest of the file's metadata.
    fn sync_all(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Takes an exclusive advisory lock (`flock`) held until the handle is dropped.
    fn try_lock(&self) -> Result<(), TryLockError>;
}

/// What [`IoFile::allocate`] leaves free on the real file system.
pub const ALLOCATION_RESERVE: u64 = 1 << 30;

/// The bytes of a file system an unprivileged writer may still take.
pub(crate) fn free_bytes(space: &nix::sys::statvfs::Statvfs) -> u64 {
    // Narrower types than u64 on some platforms.
    #[allow(clippy::useless_conversion)]
    u64::from(space.blocks_available()).saturating_mul(u64::from(space.fragment_size()))
}

/// The real file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealIo;

/// A file of the real file system.
#[derive(Debug)]
pub struct RealFile(File);

impl From<File> for RealFile {
    fn from(file: File) -> RealFile {
        RealFile(file)
    }
}

impl Io for RealIo {
    fn open(&self, path: &Path, access: Access) -> io::Result<Box<dyn IoFile>> {
        let mut options = OpenOptions::new();
        match access {
            Access::Read => options.read(true),
            Access::Write => options.write(true),
            Access::ReadWrite => options.read(true).write(true),
            Access::Create => options.write(true).create(true).truncate(false),
            Access::CreateNew => options.read(true).write(true).create_new(true),
            Access::Truncate => options.write(true).create(true).truncate(true),
        };
        Ok(Box::new(RealFile(options.open(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        // Not the trait's walk: `metadata` follows links, so a link to a directory would
        // be emptied there.
        std::fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let metadata = std::fs::metadata(path)?;
        Ok(Metadata {
            is_dir: metadata.is_dir(),
            len: metadata.len(),
        })
    }
}

impl IoFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn allocate(&self, from: u64, to: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        if to <= from {
            return Ok(());
        }
        let free = free_bytes(&nix::sys::statvfs::fstatvfs(&self.0)?);
        if free < ALLOCATION_RESERVE.saturating_add(to - from) {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            self.0.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn try_lock(&self) -> Result<(), TryLockError> {
        self.0.try_lock()
    }
}
