//! A FUSE filesystem for power-loss tests, in the spirit of LazyFS. The test process (root)
//! mounts it with mount(2) itself (no fusermount, no libfuse: `fuser` only speaks the
//! protocol) over a backing directory, and it passes every operation through to that
//! directory, except that file data written (writes, and size changes: truncate, extend) is
//! held in memory per file until that file is fsynced (fsync or fdatasync; the flush of a
//! close does not count). Reads see the held data. [`LazyFs::cut`] is the power loss: every
//! unsynced write is dropped, syncs still waiting fail, the mount answers nothing any more and
//! is unmounted; mounting again over the same backing directory shows only what was synced.
//!
//! Metadata follows the strict-but-simple model: create, mkdir, rename, unlink, rmdir, chmod
//! and chown reach the backing directory at once, as if every directory were fsynced after
//! each change. A missing directory fsync is therefore not caught here; what is caught is
//! data a program counted as durable without having fsynced it, including a file renamed into
//! place before its contents were synced (it comes back empty or short, as on ext4).
//!
//! Inodes live as on a POSIX filesystem: a file whose name goes (unlinked, or replaced by a
//! rename) can still be opened through the inode the kernel looked up before, until the kernel
//! forgets it, so a reader opening a file by name while it is replaced gets the old file or
//! the new one, never "not found".
//!
//! To cut at a chosen moment rather than by timing, [`LazyFs::hold_syncs`] makes the syncs of
//! chosen paths wait (the disk has stopped) until the cut, which fails them. A torn cut
//! ([`LazyFs::cut_torn`]) keeps part of one file's unsynced data: a seeded prefix of it, or
//! seeded 512-byte sectors of it (a disk persists whole sectors, in any order).
//!
//! "Durable" here means "in the backing directory": the backing directory itself is never
//! fsynced, since the machine running the test does not lose power. Mounting needs root and
//! /dev/fuse; [`available`] says why it cannot be done when it cannot.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    Request, Session, SessionACL, TimeOrNow, WriteFlags,
};
use witness::rng::SplitMix64;

/// The mount's source name, by which a mount left behind by a killed test run is found.
const FSNAME: &str = "witness-lazyfs";
/// The kernel caches no attribute or name: a file's size depends on held writes and on what a
/// cut drops, so the kernel asks every time.
const TTL: Duration = Duration::ZERO;
const SECTOR: u64 = 512;

/// Why a FUSE filesystem cannot be mounted here, if it cannot (checked once per process).
pub fn available() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            // SAFETY: geteuid(2) has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err("not root (the test mounts its FUSE filesystem with mount(2))".into());
            }
            OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/fuse")
                .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
            remove_stale_mounts();
            let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
            let fs = LazyFs::mount(&dir.path().join("disk"), &dir.path().join("mnt"))
                .map_err(|e| format!("cannot mount a FUSE filesystem: {e}"))?;
            std::fs::write(fs.mountpoint.join("probe"), b"probe")
                .map_err(|e| format!("cannot write through a FUSE mount: {e}"))?;
            Ok(())
        })
        .clone()
}

/// Unmounts (lazily) every lazyfs mount of this machine whose process is gone: its mount point
/// answers "transport endpoint is not connected". Live mounts of other tests are left alone.
fn remove_stale_mounts() {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    for line in text.lines() {
        let Some((mine, theirs)) = line.split_once(" - ") else { continue };
        let mut fs = theirs.split(' ');
        if fs.next() != Some("fuse") || fs.next() != Some(FSNAME) {
            continue;
        }
        let Some(point) = mine.split(' ').nth(4) else { continue };
        // mountinfo escapes spaces and a few other bytes as octal.
        let point = point.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\");
        if std::fs::metadata(&point).err().and_then(|e| e.raw_os_error()) == Some(libc::ENOTCONN) {
            detach(Path::new(&point));
        }
    }
}

fn detach(point: &Path) {
    let Ok(target) = CString::new(point.as_os_str().as_bytes()) else { return };
    // SAFETY: umount2(2) with a valid NUL-terminated path.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

/// How a torn cut keeps part of a file's unsynced data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// A seeded prefix of the unsynced writes, in the order they were made: at least one byte
    /// kept and one lost when there are two or more.
    Prefix,
    /// Each 512-byte sector the unsynced writes touched kept or lost by seed (at least one of
    /// each when there are two or more): a lost sector keeps what the backing file had there,
    /// zeros past its old end.
    Sectors,
}

/// What a cut did.
#[derive(Debug, Default)]
pub struct Cut {
    /// Files whose unsynced changes were dropped (paths relative to the mount), with how many
    /// bytes had been written to each since its last sync (0 for a size change alone).
    pub lost: Vec<(PathBuf, u64)>,
    /// The paths whose syncs were waiting (held) when the power went: they failed.
    pub held: Vec<PathBuf>,
    /// For a torn cut, the file torn and what of its unsynced data was kept.
    pub torn: Option<(PathBuf, String)>,
}

/// A mounted lazyfs. Dropped without a cut, it stops answering and is unmounted (what was not
/// synced is not written either).
pub struct LazyFs {
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    mounted: bool,
}

impl LazyFs {
    /// Mounts a lazyfs over `backing` at `mountpoint` (both created if missing).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<LazyFs> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let state = Arc::new(Mutex::new(State::new(backing.to_path_buf())));
        let dev = OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
        let options = CString::new(format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd()))?;
        let target = CString::new(mountpoint.as_os_str().as_bytes())?;
        let source = CString::new(FSNAME)?;
        // SAFETY: mount(2) with valid NUL-terminated strings; the options name an open
        // /dev/fuse descriptor this process keeps for the session.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("mount fuse at {}: {e}", mountpoint.display())));
        }
        // The session only speaks the protocol: it never unmounts, so a mount made again at the
        // same place after a cut is never taken down by an old session.
        let session =
            match Session::from_fd(Lazy(state.clone()), OwnedFd::from(dev), SessionACL::Owner, Config::default()) {
                Ok(s) => s,
                Err(e) => {
                    detach(mountpoint);
                    return Err(e);
                }
            };
        // The loop ends by itself once the kernel lets go of the connection (the mount gone and
        // its last open file closed).
        std::thread::Builder::new().name("lazyfs".into()).spawn(move || {
            let _ = session.run();
        })?;
        Ok(LazyFs { mountpoint: mountpoint.to_path_buf(), state, mounted: true })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// From now until the cut, syncs (fsync, fdatasync, a directory's fsync) of the paths
    /// (relative to the mount) `which` picks wait instead of reaching the disk.
    pub fn hold_syncs(&self, which: impl Fn(&Path) -> bool + Send + 'static) {
        self.state().hold = Some(Box::new(which));
    }

    /// The paths whose syncs are waiting.
    pub fn held(&self) -> Vec<PathBuf> {
        self.state().held.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Files with unsynced writes, with how many bytes were written to each since its last
    /// sync, by path.
    pub fn unsynced(&self) -> Vec<(PathBuf, u64)> {
        let st = self.state();
        let mut out: Vec<(PathBuf, u64)> = st
            .nodes
            .values()
            .filter_map(|n| Some((n.path.clone()?, written(&n.pending))))
            .filter(|(_, bytes)| *bytes > 0)
            .collect();
        out.sort();
        out
    }

    /// The power goes: every unsynced write is dropped, waiting syncs fail, and the mount is
    /// unmounted.
    pub fn cut(self) -> Cut {
        self.power_off(None)
    }

    /// Like [`LazyFs::cut`], except that part of the unsynced data of `file` (relative to the
    /// mount) reaches the disk, as `tear` says, chosen by `seed`.
    pub fn cut_torn(self, file: &Path, seed: u64, tear: Tear) -> Cut {
        self.power_off(Some((file, seed, tear)))
    }

    fn power_off(mut self, torn: Option<(&Path, u64, Tear)>) -> Cut {
        let mut cut = Cut::default();
        let held = {
            let mut st = self.state();
            st.dead = true;
            let mut nodes: Vec<(PathBuf, Vec<Op>)> = st
                .nodes
                .values_mut()
                .filter_map(|n| Some((n.path.clone()?, std::mem::take(&mut n.pending))))
                .filter(|(_, ops)| !ops.is_empty())
                .collect();
            nodes.sort_by(|a, b| a.0.cmp(&b.0));
            for (path, ops) in nodes {
                if let Some((file, seed, tear)) = torn.filter(|(file, ..)| *file == path) {
                    let kept = st.tear(&path, &ops, seed, tear).unwrap_or_else(|e| format!("tear failed: {e}"));
                    cut.torn = Some((file.to_path_buf(), kept));
                }
                cut.lost.push((path, written(&ops)));
            }
            std::mem::take(&mut st.held)
        };
        // Dropped unanswered, each waiting sync is answered with EIO.
        cut.held = held.into_iter().map(|(path, _reply)| path).collect();
        self.unmount();
        cut
    }

    fn unmount(&mut self) {
        if std::mem::take(&mut self.mounted) {
            detach(&self.mountpoint);
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if self.mounted {
            let held = {
                let mut st = self.state();
                st.dead = true;
                std::mem::take(&mut st.held)
            };
            drop(held);
            self.unmount();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A handler that panicked left nothing half-done that matters to a test filesystem.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A change to a file's data not yet synced.
enum Op {
    Write { at: u64, data: Vec<u8> },
    SetLen(u64),
}

fn written(ops: &[Op]) -> u64 {
    ops.iter().map(|op| if let Op::Write { data, .. } = op { data.len() as u64 } else { 0 }).sum()
}

/// The file's size once `ops` are applied over a backing file of `base` bytes.
fn logical_len(base: u64, ops: &[Op]) -> u64 {
    ops.iter().fold(base, |len, op| match op {
        Op::Write { at, data } => len.max(at + data.len() as u64),
        Op::SetLen(l) => *l,
    })
}

/// Up to `size` bytes at `offset` of the backing `file` with `ops` applied over it.
fn read_overlay(file: &File, ops: &[Op], offset: u64, size: u64) -> io::Result<Vec<u8>> {
    let base = file.metadata()?.len();
    let len = logical_len(base, ops);
    if offset >= len {
        return Ok(Vec::new());
    }
    let end = len.min(offset.saturating_add(size));
    let mut buf = vec![0u8; (end - offset) as usize];
    let from_base = end.min(base).saturating_sub(offset) as usize;
    if from_base > 0 {
        file.read_exact_at(&mut buf[..from_base], offset)?;
    }
    for op in ops {
        match op {
            Op::Write { at, data } => {
                let (a, b) = ((*at).max(offset), (at + data.len() as u64).min(end));
                if a < b {
                    buf[(a - offset) as usize..(b - offset) as usize]
                        .copy_from_slice(&data[(a - at) as usize..(b - at) as usize]);
                }
            }
            // What lay past a shrink reads as zeros if the file grows again.
            Op::SetLen(l) if *l < end => buf[((*l).max(offset) - offset) as usize..].fill(0),
            Op::SetLen(_) => {}
        }
    }
    Ok(buf)
}

fn apply(file: &File, ops: &[Op]) -> io::Result<()> {
    for op in ops {
        match op {
            Op::Write { at, data } => file.write_all_at(data, *at)?,
            Op::SetLen(l) => file.set_len(*l)?,
        }
    }
    Ok(())
}

type Filter = Box<dyn Fn(&Path) -> bool + Send>;

struct Node {
    /// Relative to the backing directory; none once unlinked or replaced by a rename (the node
    /// is kept while open, or while the kernel may still open it: see `kept`).
    path: Option<PathBuf>,
    pending: Vec<Op>,
    /// References the kernel holds: entries replied (lookup, create, mkdir) less those it
    /// forgot.
    lookups: u64,
    /// A file whose name went while the kernel still held it: a handle to it, so that an open
    /// by inode opens the file the kernel found. Opening by name is a lookup and then an open;
    /// a rename over the name between the two must not make the file vanish (it never does
    /// on a POSIX filesystem).
    kept: Option<File>,
}

impl Node {
    fn at(path: PathBuf) -> Node {
        Node { path: Some(path), pending: Vec::new(), lookups: 0, kept: None }
    }
}

struct Handle {
    ino: u64,
    file: File,
}

struct State {
    backing: PathBuf,
    /// Cut: every request fails.
    dead: bool,
    /// Inode numbers are this mount's own, one per path, never reused; a node with a path is
    /// never forgotten (a test's handful of files costs nothing, and a file's held data must
    /// outlive the kernel's memory of its inode). A node without one goes with its last handle
    /// and the kernel's last reference.
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    next_ino: u64,
    files: HashMap<u64, Handle>,
    dirs: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_fh: u64,
    hold: Option<Filter>,
    held: Vec<(PathBuf, ReplyEmpty)>,
}

impl State {
    fn new(backing: PathBuf) -> State {
        let root = Node::at(PathBuf::new());
        State {
            backing,
            dead: false,
            nodes: HashMap::from([(INodeNo::ROOT.0, root)]),
            by_path: HashMap::from([(PathBuf::new(), INodeNo::ROOT.0)]),
            next_ino: INodeNo::ROOT.0 + 1,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            hold: None,
            held: Vec::new(),
        }
    }

    fn abs(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.nodes.get(&ino).and_then(|n| n.path.clone()).ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn intern(&mut self, rel: PathBuf) -> u64 {
        if let Some(ino) = self.by_path.get(&rel) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_path.insert(rel.clone(), ino);
        self.nodes.insert(ino, Node::at(rel));
        ino
    }

    /// The node of `rel`, with one more reference held by the kernel: for an entry replied.
    fn entry(&mut self, rel: PathBuf) -> u64 {
        let ino = self.intern(rel);
        self.nodes.get_mut(&ino).expect("interned").lookups += 1;
        ino
    }

    /// The kernel dropped `n` references to `ino`.
    fn forget(&mut self, ino: u64, n: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        self.drop_if_unreachable(ino);
    }

    /// Forgets a node that has no name and no handle open, if nothing can open it again: the
    /// kernel holds no reference to it, or no handle was kept to open it by.
    fn drop_if_unreachable(&mut self, ino: u64) {
        let unreachable = |n: &Node| n.path.is_none() && (n.lookups == 0 || n.kept.is_none());
        if self.nodes.get(&ino).is_some_and(unreachable) && !self.is_open(ino) {
            self.nodes.remove(&ino);
        }
    }

    /// Handles to the files at and under `rel` that the kernel holds, taken before their names
    /// go (a rename over them, an unlink), for [`State::detach`]; opened as `open` opens files
    /// (a directory cannot be, and is not kept).
    fn keep(&self, rel: &Path) -> Vec<(u64, File)> {
        self.by_path
            .iter()
            .filter(|(p, ino)| p.starts_with(rel) && self.nodes[*ino].lookups > 0)
            .filter_map(|(p, ino)| Some((*ino, OpenOptions::new().read(true).write(true).open(self.abs(p)).ok()?)))
            .collect()
    }

    fn is_open(&self, ino: u64) -> bool {
        self.files.values().any(|h| h.ino == ino)
    }

    /// `rel` and everything under it are gone from the namespace: their held data goes with
    /// them, unless still open or held by the kernel (`kept`, from [`State::keep`]).
    fn detach(&mut self, rel: &Path, kept: Vec<(u64, File)>) {
        let mut kept: HashMap<u64, File> = kept.into_iter().collect();
        let gone: Vec<PathBuf> = self.by_path.keys().filter(|p| p.starts_with(rel)).cloned().collect();
        for path in gone {
            let ino = self.by_path.remove(&path).expect("listed");
            let node = self.nodes.get_mut(&ino).expect("interned");
            node.path = None;
            node.kept = kept.remove(&ino);
            self.drop_if_unreachable(ino);
        }
    }

    fn meta(&self, ino: u64, fh: Option<u64>) -> Result<Metadata, Errno> {
        if let Some(path) = self.nodes.get(&ino).and_then(|n| n.path.as_ref()) {
            return Ok(std::fs::symlink_metadata(self.abs(path))?);
        }
        let handle = fh
            .and_then(|fh| self.files.get(&fh))
            .filter(|h| h.ino == ino)
            .or_else(|| self.files.values().find(|h| h.ino == ino))
            .ok_or(Errno::ENOENT)?;
        Ok(handle.file.metadata()?)
    }

    fn attr(&self, ino: u64, m: &Metadata) -> FileAttr {
        let size = match self.nodes.get(&ino) {
            Some(n) if m.is_file() => logical_len(m.len(), &n.pending),
            _ => m.len(),
        };
        let time = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: m.blocks(),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: time(m.mtime(), m.mtime_nsec()),
            kind: FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile),
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let m = self.meta(ino, fh)?;
        Ok(self.attr(ino, &m))
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name)?;
        let m = std::fs::symlink_metadata(self.abs(&rel))?;
        let ino = self.entry(rel);
        Ok(self.attr(ino, &m))
    }

    fn add_handle(&mut self, ino: u64, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, Handle { ino, file });
        fh
    }

    fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let rel = self.child(parent, name)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).mode(mode & !umask & 0o7777);
        if flags & libc::O_EXCL != 0 {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let file = options.open(self.abs(&rel))?;
        let m = file.metadata()?;
        let ino = self.entry(rel);
        let fh = self.add_handle(ino, file);
        Ok((self.attr(ino, &m), fh))
    }

    fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        fh: Option<u64>,
    ) -> Result<FileAttr, Errno> {
        if let Some(path) = self.nodes.get(&ino).and_then(|n| n.path.clone()) {
            let abs = self.abs(&path);
            if let Some(mode) = mode {
                std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&abs, uid, gid)?;
            }
        }
        if let Some(len) = size {
            // A size change is data: it is held like a write.
            self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?.pending.push(Op::SetLen(len));
        }
        self.getattr(ino, fh)
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        match node.pending.last_mut() {
            // Appends grow one held write rather than piling up.
            Some(Op::Write { at, data: held }) if *at + held.len() as u64 == offset => held.extend_from_slice(data),
            _ => node.pending.push(Op::Write { at: offset, data: data.to_vec() }),
        }
        Ok(data.len() as u32)
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let handle = self.files.get(&fh).ok_or(Errno::EBADF)?;
        let ops = self.nodes.get(&ino).map_or(&[][..], |n| &n.pending[..]);
        Ok(read_overlay(&handle.file, ops, offset, size as u64)?)
    }

    /// Whether a sync of `ino` must wait for the cut; if so, it is parked with its reply.
    fn holds(&mut self, ino: u64, reply: ReplyEmpty) -> Option<ReplyEmpty> {
        let path = self.nodes.get(&ino).and_then(|n| n.path.clone());
        match (&self.hold, path) {
            (Some(hold), Some(path)) if hold(&path) => {
                self.held.push((path, reply));
                None
            }
            _ => Some(reply),
        }
    }

    fn sync(&mut self, ino: u64, fh: u64) -> Result<(), Errno> {
        let ops = std::mem::take(&mut self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?.pending);
        let handle = self.files.get(&fh).ok_or(Errno::EBADF)?;
        Ok(apply(&handle.file, &ops)?)
    }

    fn opendir(&mut self, ino: u64) -> Result<u64, Errno> {
        let rel = self.path(ino)?;
        let parent = rel.parent().and_then(|p| self.by_path.get(p)).copied().unwrap_or(INodeNo::ROOT.0);
        let mut entries = vec![(ino, FileType::Directory, ".".into()), (parent, FileType::Directory, "..".into())];
        for entry in std::fs::read_dir(self.abs(&rel))? {
            let entry = entry?;
            let kind = FileType::from_std(entry.file_type()?).unwrap_or(FileType::RegularFile);
            let child = self.intern(rel.join(entry.file_name()));
            entries.push((child, kind, entry.file_name()));
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.dirs.insert(fh, entries);
        Ok(fh)
    }

    fn rename(&mut self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr) -> Result<(), Errno> {
        let from = self.child(parent, name)?;
        let to = self.child(newparent, newname)?;
        if from == to {
            return Ok(std::fs::rename(self.abs(&from), self.abs(&to))?);
        }
        let kept = self.keep(&to);
        std::fs::rename(self.abs(&from), self.abs(&to))?;
        // Whatever `to` was is replaced, held data and all.
        self.detach(&to, kept);
        let moved: Vec<(PathBuf, u64)> =
            self.by_path.iter().filter(|(p, _)| p.starts_with(&from)).map(|(p, i)| (p.clone(), *i)).collect();
        for (old, ino) in moved {
            self.by_path.remove(&old);
            let rest = old.strip_prefix(&from).expect("under `from`");
            let new = if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
            self.nodes.get_mut(&ino).expect("interned").path = Some(new.clone());
            self.by_path.insert(new, ino);
        }
        Ok(())
    }

    /// Writes the part of `ops` (the unsynced data of `path`) that `tear` keeps; says what.
    fn tear(&self, path: &Path, ops: &[Op], seed: u64, tear: Tear) -> io::Result<String> {
        let file = OpenOptions::new().read(true).write(true).open(self.abs(path))?;
        let mut rng = SplitMix64::new(seed);
        match tear {
            Tear::Prefix => {
                let total = written(ops);
                let keep = if total >= 2 { 1 + rng.below(total - 1) } else { 0 };
                let mut budget = keep;
                for op in ops {
                    if budget == 0 {
                        break;
                    }
                    match op {
                        Op::Write { at, data } => {
                            let n = budget.min(data.len() as u64);
                            file.write_all_at(&data[..n as usize], *at)?;
                            budget -= n;
                        }
                        Op::SetLen(l) => file.set_len(*l)?,
                    }
                }
                Ok(format!("the first {keep} of {total} unsynced bytes"))
            }
            Tear::Sectors => {
                let base = file.metadata()?.len();
                let len = logical_len(base, ops);
                let lo = ops
                    .iter()
                    .map(|op| match op {
                        Op::Write { at, .. } => *at,
                        Op::SetLen(l) => *l,
                    })
                    .min()
                    .unwrap_or(len)
                    .min(len);
                let content = read_overlay(&file, ops, lo, len - lo)?;
                let first = lo / SECTOR;
                let count = len.div_ceil(SECTOR).saturating_sub(first);
                let mut keep: Vec<bool> = (0..count).map(|_| rng.below(2) == 1).collect();
                if count >= 2 && keep.iter().all(|k| *k == keep[0]) {
                    let last = keep.len() - 1;
                    keep[last] = !keep[last];
                }
                for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
                    let start = ((first + i as u64) * SECTOR).max(lo);
                    let end = ((first + i as u64 + 1) * SECTOR).min(len);
                    file.write_all_at(&content[(start - lo) as usize..(end - lo) as usize], start)?;
                }
                let pattern: String = keep.iter().map(|k| if *k { 'K' } else { '-' }).collect();
                Ok(format!("sectors from byte {} kept (K) or lost (-): {pattern}", first * SECTOR))
            }
        }
    }
}

/// The filesystem the session serves: every request under the one lock.
struct Lazy(Arc<Mutex<State>>);

impl Lazy {
    /// Runs `f` on the state unless the power is cut.
    fn live<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut st = lock(&self.0);
        if st.dead {
            return Err(Errno::EIO);
        }
        f(&mut st)
    }

    /// `unlink` and `rmdir`: `remove` the entry `name` of `parent` and forget it.
    fn remove(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty, remove: fn(&Path) -> io::Result<()>) {
        let done = self.live(|st| {
            let rel = st.child(parent.0, name)?;
            let kept = st.keep(&rel);
            remove(&st.abs(&rel))?;
            st.detach(&rel, kept);
            Ok(())
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Lazy {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.live(|st| st.lookup(parent.0, name)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.live(|st| st.getattr(ino.0, fh.map(|f| f.0))) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.live(|st| st.setattr(ino.0, mode, uid, gid, size, fh.map(|f| f.0))) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let made = self.live(|st| {
            if mode & libc::S_IFMT != libc::S_IFREG {
                return Err(Errno::EPERM);
            }
            let (attr, fh) = st.create(parent.0, name, mode, umask, libc::O_EXCL)?;
            st.files.remove(&fh);
            Ok(attr)
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let made = self.live(|st| {
            let rel = st.child(parent.0, name)?;
            std::fs::DirBuilder::new().mode(mode & !umask & 0o7777).create(st.abs(&rel))?;
            let m = std::fs::symlink_metadata(st.abs(&rel))?;
            let ino = st.entry(rel);
            Ok(st.attr(ino, &m))
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply, |p| std::fs::remove_file(p));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply, |p| std::fs::remove_dir(p));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let done = self.live(|st| {
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            st.rename(parent.0, name, newparent.0, newname)
        });
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Opened for reading and writing whatever was asked: the kernel checks the access
        // mode, and a sync needs to write through any handle.
        let opened = self.live(|st| {
            let file = match (st.path(ino.0), st.nodes.get(&ino.0).and_then(|n| n.kept.as_ref())) {
                (Ok(rel), _) => OpenOptions::new().read(true).write(true).open(st.abs(&rel))?,
                (Err(_), Some(kept)) => kept.try_clone()?,
                (Err(e), None) => return Err(e),
            };
            Ok(st.add_handle(ino.0, file))
        });
        match opened {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match self.live(|st| st.read(ino.0, fh.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.live(|st| st.write(ino.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: fuser::LockOwner, reply: ReplyEmpty) {
        // A close makes nothing durable.
        match self.live(|_| Ok(())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = lock(&self.0);
        st.files.remove(&fh.0);
        // An unlinked file's held data goes with its last handle, unless it can be opened again.
        st.drop_if_unreachable(ino.0);
        reply.ok();
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.0).forget(ino.0, nlookup);
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut st = lock(&self.0);
        if st.dead {
            return reply.error(Errno::EIO);
        }
        let Some(reply) = st.holds(ino.0, reply) else { return };
        match st.sync(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live(|st| st.opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let st = lock(&self.0);
        if st.dead {
            return reply.error(Errno::EIO);
        }
        let Some(entries) = st.dirs.get(&fh.0) else { return reply.error(Errno::EBADF) };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        lock(&self.0).dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Directory changes are already on the backing directory; only a hold can delay this.
        let mut st = lock(&self.0);
        if st.dead {
            return reply.error(Errno::EIO);
        }
        if let Some(reply) = st.holds(ino.0, reply) {
            reply.ok();
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = lock(&self.0);
        let Ok(path) = CString::new(st.backing.as_os_str().as_bytes()) else { return reply.error(Errno::EINVAL) };
        // SAFETY: statvfs(3) with a valid NUL-terminated path and a zeroed buffer it fills.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
            return reply.error(Errno::from(io::Error::last_os_error()));
        }
        reply.statfs(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize as u32, 255, s.f_frsize as u32);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.live(|st| st.create(parent.0, name, mode, umask, flags)) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}
