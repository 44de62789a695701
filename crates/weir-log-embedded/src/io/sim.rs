//! [`SimDisk`]: an in-memory file system that knows what is durable, for power-cut tests.
//! See the module docs of `io` for what it models.
//!
//! Every node (file or directory) lives in one table, named by its index. A file holds its
//! durable bytes, its current bytes (what reads see: the page cache) and the operations
//! since its last sync; a directory holds its durable entries, its current entries and the
//! operations since its last fsync. A sync applies the pending operations to the durable
//! state in order. A power cut builds a new disk from the root down, out of what survives
//! of each directory and file; only nodes it reaches are kept.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ffi::{OsStr, OsString},
    fmt,
    fs::TryLockError,
    io,
    path::{Component, Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use super::{Access, Io, IoFile, Metadata};

/// The unit a torn write keeps or drops.
pub const SECTOR: u64 = 512;
const ROOT: usize = 0;

/// What a power cut keeps of what was not made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Nothing: every file and directory as of its last sync.
    DropUnsynced,
    /// Each 512-byte sector of each unsynced write, each unsynced truncation and each
    /// unsynced directory operation, independently kept or dropped (the seed decides).
    Torn,
    /// Everything written: every write and directory operation reached the disk before
    /// the power went. (A process crash, where the page cache survives unsynced, is
    /// [`SimDisk::fork`].)
    KeepAll,
}

/// Which operations a [`Fault`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOn {
    /// Positional writes: the failing one writes half its bytes first.
    Write,
    /// File syncs and directory fsyncs: the failing one forgets what it was to make
    /// durable (Linux marks the pages clean after a failed writeback).
    Sync,
}

/// An error to inject: the operation after the next `skip` ones that match fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub on: FaultOn,
    pub skip: u64,
    pub error: io::ErrorKind,
    /// Counts only operations on paths under this one.
    pub under: Option<PathBuf>,
}

impl Fault {
    /// The next matching operation fails with `error`.
    pub fn next(on: FaultOn, error: io::ErrorKind) -> Fault {
        Fault {
            on,
            skip: 0,
            error,
            under: None,
        }
    }
}

/// An in-memory disk whose power can be cut. Cheap to clone; clones share the disk.
#[derive(Clone)]
pub struct SimDisk {
    disk: Arc<Mutex<Disk>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimDisk")
    }
}

impl Default for SimDisk {
    fn default() -> SimDisk {
        SimDisk::new()
    }
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link {
        name: OsString,
        node: usize,
    },
    Unlink {
        name: OsString,
        node: usize,
    },
    Rename {
        from: OsString,
        to: OsString,
        node: usize,
    },
}

#[derive(Debug, Clone, Default)]
struct FileNode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<FileOp>,
}

#[derive(Debug, Clone, Default)]
struct DirNode {
    durable: BTreeMap<OsString, usize>,
    current: BTreeMap<OsString, usize>,
    pending: Vec<DirOp>,
}

#[derive(Debug, Clone)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

struct ArmedFault {
    fault: Fault,
    seen: u64,
}

struct Disk {
    nodes: Vec<Node>,
    powered: bool,
    /// Mutating operations so far.
    ops: u64,
    /// Power fails at this operation.
    power_fails_at: Option<u64>,
    faults: Vec<ArmedFault>,
    locked: BTreeSet<usize>,
}

/// splitmix64: reproducible coin flips for torn cuts.
struct Coins(u64);

impl Coins {
    fn flip(&mut self) -> bool {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) & 1 == 1
    }
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss: the disk is gone")
}

fn bad_handle() -> io::Error {
    // EBADF, as for a write to a file opened read-only.
    io::Error::from_raw_os_error(9)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn names(path: &Path) -> io::Result<Vec<&OsStr>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                names.pop();
            }
            Component::Normal(name) => names.push(name),
            Component::Prefix(_) => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
    Ok(names)
}

fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}

fn apply_file_op(bytes: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => write_into(bytes, *offset, data),
        FileOp::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

fn apply_dir_op(entries: &mut BTreeMap<OsString, usize>, op: &DirOp) {
    match op {
        DirOp::Link { name, node } => {
            entries.insert(name.clone(), *node);
        }
        DirOp::Unlink { name, node } => {
            if entries.get(name) == Some(node) {
                entries.remove(name);
            }
        }
        DirOp::Rename { from, to, node } => {
            if entries.get(from) == Some(node) {
                entries.remove(from);
            }
            entries.insert(to.clone(), *node);
        }
    }
}

impl Disk {
    fn new() -> Disk {
        Disk {
            nodes: vec![Node::Dir(DirNode::default())],
            powered: true,
            ops: 0,
            power_fails_at: None,
            faults: Vec::new(),
            locked: BTreeSet::new(),
        }
    }

    fn check_power(&self) -> io::Result<()> {
        if self.powered {
            Ok(())
        } else {
            Err(power_lost())
        }
    }

    /// Counts a mutating operation; the one the power fails at fails, and so does
    /// everything after it.
    fn mutation(&mut self) -> io::Result<()> {
        self.check_power()?;
        self.ops += 1;
        if self.power_fails_at.is_some_and(|at| self.ops >= at) {
            self.powered = false;
            return Err(power_lost());
        }
        Ok(())
    }

    /// The error an armed fault injects into this operation, if one does.
    fn fault(&mut self, on: FaultOn, path: &Path) -> Option<io::Error> {
        let index = self.faults.iter_mut().position(|armed| {
            if armed.fault.on != on
                || armed
                    .fault
                    .under
                    .as_ref()
                    .is_some_and(|under| !path.starts_with(under))
            {
                return false;
            }
            armed.seen += 1;
            armed.seen > armed.fault.skip
        })?;
        let armed = self.faults.remove(index);
        Some(io::Error::new(
            armed.fault.error,
            format!(
                "simulated {:?} failure at {}",
                armed.fault.on,
                path.display()
            ),
        ))
    }

    fn dir(&self, node: usize) -> Option<&DirNode> {
        match &self.nodes[node] {
            Node::Dir(dir) => Some(dir),
            Node::File(_) => None,
        }
    }

    fn dir_mut(&mut self, node: usize) -> &mut DirNode {
        match &mut self.nodes[node] {
            Node::Dir(dir) => dir,
            Node::File(_) => unreachable!("checked to be a directory"),
        }
    }

    fn file_mut(&mut self, node: usize) -> &mut FileNode {
        match &mut self.nodes[node] {
            Node::File(file) => file,
            Node::Dir(_) => unreachable!("files are opened as files"),
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<usize> {
        let mut node = ROOT;
        for name in names(path)? {
            let dir = self
                .dir(node)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotADirectory))?;
            node = *dir.current.get(name).ok_or_else(|| not_found(path))?;
        }
        Ok(node)
    }

    /// The directory that holds `path` and the name in it.
    fn parent(&self, path: &Path) -> io::Result<(usize, OsString)> {
        let mut names = names(path)?;
        let name = names
            .pop()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let parent: PathBuf = names.iter().collect();
        let node = self.lookup(&Path::new("/").join(parent))?;
        if self.dir(node).is_none() {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        }
        Ok((node, name.to_owned()))
    }

    fn link(&mut self, dir: usize, name: OsString, node: usize) {
        let dir = self.dir_mut(dir);
        dir.current.insert(name.clone(), node);
        dir.pending.push(DirOp::Link { name, node });
    }

    fn unlink(&mut self, dir: usize, name: OsString, node: usize) {
        let dir = self.dir_mut(dir);
        dir.current.remove(&name);
        dir.pending.push(DirOp::Unlink { name, node });
    }

    fn add(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// What of file `node` survives the cut.
    fn surviving_file(file: &FileNode, mode: CutMode, coins: &mut Coins) -> Vec<u8> {
        match mode {
            CutMode::DropUnsynced => file.durable.clone(),
            CutMode::KeepAll => file.current.clone(),
            CutMode::Torn => {
                let mut bytes = file.durable.clone();
                for op in &file.pending {
                    match op {
                        FileOp::Write { offset, data } => {
                            let end = offset + data.len() as u64;
                            let mut at = *offset;
                            while at < end {
                                let sector_end = ((at / SECTOR + 1) * SECTOR).min(end);
                                if coins.flip() {
                                    let from = (at - offset) as usize;
                                    let to = (sector_end - offset) as usize;
                                    write_into(&mut bytes, at, &data[from..to]);
                                }
                                at = sector_end;
                            }
                        }
                        FileOp::SetLen(_) => {
                            if coins.flip() {
                                apply_file_op(&mut bytes, op);
                            }
                        }
                    }
                }
                bytes
            }
        }
    }

    fn surviving_entries(
        dir: &DirNode,
        mode: CutMode,
        coins: &mut Coins,
    ) -> BTreeMap<OsString, usize> {
        match mode {
            CutMode::DropUnsynced => dir.durable.clone(),
            CutMode::KeepAll => dir.current.clone(),
            CutMode::Torn => {
                let mut entries = dir.durable.clone();
                for op in &dir.pending {
                    if coins.flip() {
                        apply_dir_op(&mut entries, op);
                    }
                }
                entries
            }
        }
    }

    /// The disk as it comes back after a power cut now.
    fn image(&self, mode: CutMode, seed: u64) -> Disk {
        let mut coins = Coins(seed);
        let mut image = Disk::new();
        // Old node → new node, so a file with two names keeps one set of bytes.
        let mut copied: HashMap<usize, usize> = HashMap::from([(ROOT, ROOT)]);
        let mut to_visit = vec![ROOT];
        while let Some(old_dir) = to_visit.pop() {
            let Some(dir) = self.dir(old_dir) else {
                continue;
            };
            let new_dir = copied[&old_dir];
            for (name, old) in Disk::surviving_entries(dir, mode, &mut coins) {
                let new = match copied.get(&old) {
                    Some(&new) => new,
                    None => {
                        let node = match &self.nodes[old] {
                            Node::File(file) => {
                                let bytes = Disk::surviving_file(file, mode, &mut coins);
                                Node::File(FileNode {
                                    durable: bytes.clone(),
                                    current: bytes,
                                    pending: Vec::new(),
                                })
                            }
                            Node::Dir(_) => {
                                to_visit.push(old);
                                Node::Dir(DirNode::default())
                            }
                        };
                        let new = image.add(node);
                        copied.insert(old, new);
                        new
                    }
                };
                let dir = image.dir_mut(new_dir);
                dir.durable.insert(name.clone(), new);
                dir.current.insert(name, new);
            }
        }
        image
    }
}

impl SimDisk {
    /// An empty disk: a root directory and nothing else.
    pub fn new() -> SimDisk {
        SimDisk {
            disk: Arc::new(Mutex::new(Disk::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts the power now: this disk fails every operation from here on, and the returned
    /// disk is what comes back, per `mode` (and `seed`, for [`CutMode::Torn`]). If the
    /// power already failed (see [`SimDisk::fail_power_after`]), the image is that of the
    /// moment it did.
    pub fn power_cut(&self, mode: CutMode, seed: u64) -> SimDisk {
        let mut disk = self.lock();
        disk.powered = false;
        SimDisk {
            disk: Arc::new(Mutex::new(disk.image(mode, seed))),
        }
    }

    /// What a power cut now would leave, without cutting it: this disk goes on.
    pub fn crash_image(&self, mode: CutMode, seed: u64) -> SimDisk {
        let disk = self.lock();
        SimDisk {
            disk: Arc::new(Mutex::new(disk.image(mode, seed))),
        }
    }

    /// An independent copy of the disk as it is, unsynced writes and all, with its power on
    /// and no faults armed: what the next process sees after this one crashed (the page
    /// cache survives a process crash, still unsynced).
    pub fn fork(&self) -> SimDisk {
        let disk = self.lock();
        let mut copy = Disk::new();
        copy.nodes = disk.nodes.clone();
        SimDisk {
            disk: Arc::new(Mutex::new(copy)),
        }
    }

    /// The next `ops` mutating operations (file creations, writes, truncations, syncs,
    /// directory creations, renames, removals and fsyncs) succeed; the one after fails, and
    /// so does every operation after it, as on a machine that lost power.
    pub fn fail_power_after(&self, ops: u64) {
        let mut disk = self.lock();
        disk.power_fails_at = Some(disk.ops + ops + 1);
    }

    /// Whether the power is still on.
    pub fn is_powered(&self) -> bool {
        self.lock().powered
    }

    /// How many mutating operations the disk has seen.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Arms a one-shot fault; see [`Fault`].
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(ArmedFault { fault, seen: 0 });
    }

    /// Whether every injected fault has fired.
    pub fn faults_fired(&self) -> bool {
        self.lock().faults.is_empty()
    }
}

impl Io for SimDisk {
    fn open(&self, path: &Path, access: Access) -> io::Result<Box<dyn IoFile>> {
        let mut disk = self.lock();
        disk.check_power()?;
        let node = match disk.lookup(path) {
            Ok(node) => {
                if disk.dir(node).is_some() {
                    return Err(io::Error::from(io::ErrorKind::IsADirectory));
                }
                match access {
                    Access::CreateNew => {
                        return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                    }
                    Access::Truncate => {
                        disk.mutation()?;
                        let file = disk.file_mut(node);
                        file.current.clear();
                        file.pending.push(FileOp::SetLen(0));
                    }
                    _ => {}
                }
                node
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && access.creates() => {
                let (dir, name) = disk.parent(path)?;
                disk.mutation()?;
                let node = disk.add(Node::File(FileNode::default()));
                disk.link(dir, name, node);
                node
            }
            Err(e) => return Err(e),
        };
        Ok(Box::new(SimFile {
            disk: Arc::clone(&self.disk),
            node,
            path: path.to_owned(),
            readable: access.readable(),
            writable: access.writable(),
            locked: AtomicBool::new(false),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let disk = self.lock();
        disk.check_power()?;
        match &disk.nodes[disk.lookup(path)?] {
            Node::File(file) => Ok(file.current.clone()),
            Node::Dir(_) => Err(io::Error::from(io::ErrorKind::IsADirectory)),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        disk.check_power()?;
        let (dir, name) = disk.parent(path)?;
        if disk.dir(dir).is_some_and(|d| d.current.contains_key(&name)) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        disk.mutation()?;
        let node = disk.add(Node::Dir(DirNode::default()));
        disk.link(dir, name, node);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        disk.check_power()?;
        let (dir, name) = disk.parent(path)?;
        let node = disk.lookup(path)?;
        if disk.dir(node).is_some() {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        disk.mutation()?;
        disk.unlink(dir, name, node);
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        disk.check_power()?;
        let (dir, name) = disk.parent(path)?;
        let node = disk.lookup(path)?;
        match disk.dir(node) {
            None => return Err(io::Error::from(io::ErrorKind::NotADirectory)),
            Some(d) if !d.current.is_empty() => {
                return Err(io::Error::from(io::ErrorKind::DirectoryNotEmpty));
            }
            Some(_) => {}
        }
        disk.mutation()?;
        disk.unlink(dir, name, node);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        disk.check_power()?;
        let (dir, from_name) = disk.parent(from)?;
        let (to_dir, to_name) = disk.parent(to)?;
        if dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SimDisk renames within one directory only",
            ));
        }
        let node = disk.lookup(from)?;
        if disk.dir(node).is_some() || disk.lookup(to).is_ok_and(|n| disk.dir(n).is_some()) {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        }
        disk.mutation()?;
        let dir = disk.dir_mut(dir);
        dir.current.remove(&from_name);
        dir.current.insert(to_name.clone(), node);
        dir.pending.push(DirOp::Rename {
            from: from_name,
            to: to_name,
            node,
        });
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        disk.check_power()?;
        let node = disk.lookup(path)?;
        if disk.dir(node).is_none() {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        }
        disk.mutation()?;
        let fault = disk.fault(FaultOn::Sync, path);
        let dir = disk.dir_mut(node);
        let pending = std::mem::take(&mut dir.pending);
        if let Some(error) = fault {
            return Err(error);
        }
        for op in &pending {
            apply_dir_op(&mut dir.durable, op);
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        let disk = self.lock();
        disk.check_power()?;
        let node = disk.lookup(path)?;
        let dir = disk
            .dir(node)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotADirectory))?;
        Ok(dir.current.keys().cloned().collect())
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let disk = self.lock();
        disk.check_power()?;
        Ok(match &disk.nodes[disk.lookup(path)?] {
            Node::File(file) => Metadata {
                is_dir: false,
                len: file.current.len() as u64,
            },
            Node::Dir(_) => Metadata {
                is_dir: true,
                len: 0,
            },
        })
    }
}

/// An open file of a [`SimDisk`].
struct SimFile {
    disk: Arc<Mutex<Disk>>,
    node: usize,
    /// As opened, for faults limited to a directory.
    path: PathBuf,
    readable: bool,
    writable: bool,
    locked: AtomicBool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sync(&self) -> io::Result<()> {
        let mut disk = self.lock();
        disk.mutation()?;
        let fault = disk.fault(FaultOn::Sync, &self.path);
        let file = disk.file_mut(self.node);
        let pending = std::mem::take(&mut file.pending);
        if let Some(error) = fault {
            return Err(error);
        }
        for op in &pending {
            apply_file_op(&mut file.durable, op);
        }
        Ok(())
    }
}

impl IoFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if !self.readable {
            return Err(bad_handle());
        }
        let mut disk = self.lock();
        disk.check_power()?;
        let file = disk.file_mut(self.node);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match file
            .current
            .get(start..)
            .and_then(|rest| rest.get(..buf.len()))
        {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            )),
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(bad_handle());
        }
        let mut disk = self.lock();
        disk.mutation()?;
        let fault = disk.fault(FaultOn::Write, &self.path);
        // A failing write gets half its bytes in first, as on a disk that fills up.
        let data = match fault {
            Some(_) => &buf[..buf.len() / 2],
            None => buf,
        };
        let file = disk.file_mut(self.node);
        write_into(&mut file.current, offset, data);
        file.pending.push(FileOp::Write {
            offset,
            data: data.to_vec(),
        });
        match fault {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut disk = self.lock();
        disk.mutation()?;
        let file = disk.file_mut(self.node);
        file.current.resize(len as usize, 0);
        file.pending.push(FileOp::SetLen(len));
        Ok(())
    }

    /// A write of zeros from `from` to `to`, torn by a power cut like any other write (no
    /// fault is injected into it: a failed fill only leaves the segment growing as it is
    /// written). Panics if it would overwrite bytes the file holds: the writer must only
    /// ever fill past its frames.
    fn allocate(&self, from: u64, to: u64) -> io::Result<()> {
        if !self.writable {
            return Err(bad_handle());
        }
        let mut disk = self.lock();
        disk.mutation()?;
        let file = disk.file_mut(self.node);
        let held = file.current.len() as u64;
        assert!(
            from >= held,
            "{}: zeros from {from} would overwrite bytes up to {held}",
            self.path.display()
        );
        if to > from {
            let data = vec![0; (to - from) as usize];
            write_into(&mut file.current, from, &data);
            file.pending.push(FileOp::Write { offset: from, data });
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn size(&self) -> io::Result<u64> {
        let mut disk = self.lock();
        disk.check_power()?;
        Ok(disk.file_mut(self.node).current.len() as u64)
    }

    fn try_lock(&self) -> Result<(), TryLockError> {
        let mut disk = self.lock();
        disk.check_power().map_err(TryLockError::Error)?;
        if self.locked.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !disk.locked.insert(self.node) {
            return Err(TryLockError::WouldBlock);
        }
        self.locked.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        if self.locked.load(Ordering::Relaxed) {
            self.lock().locked.remove(&self.node);
        }
    }
}

#[cfg(test)]
mod tests;
