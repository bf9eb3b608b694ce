//! `SimFs`: an in-memory file system that can simulate a machine crash.
//!
//! Model (see README, "Crash simulation"):
//! - a file (inode) has `durable` bytes and a list of unsynced ops (writes, set_len) whose
//!   application to `durable` gives the `current` bytes everyone reads; `sync_data` applies them;
//! - directory entry changes (create, rename, unlink) are queued per parent directory and become
//!   durable only on `sync_dir(parent)`. Directories themselves are durable at once (simplification);
//! - `crash(seed)` keeps, per directory, a random prefix of the queued entry changes, and per file
//!   the durable bytes plus a random prefix of its unsynced ops, the first dropped write possibly
//!   applied in part (torn), and possibly garbage (zeros or noise) up to where unsynced writes
//!   reached. Handles opened before the crash fail from then on;
//! - `cut_power_after(n)`: after `n` more mutating calls every call fails, which freezes an
//!   operation half-way (an fsync in flight) until `crash` is called.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileSystem, StoreFile};
use crate::rng::SplitMix64;

/// In-memory file system whose `crash` drops unsynced bytes (see README).
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

#[derive(Default)]
struct SimState {
    /// Bumped by every crash; handles from an older generation are dead.
    generation: u64,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    files: BTreeMap<PathBuf, u64>,
    durable_files: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    pending_dir_ops: BTreeMap<PathBuf, Vec<DirOp>>,
    mutating_ops_until_power_cut: Option<u64>,
    powered_off: bool,
}

#[derive(Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    unsynced: Vec<FileOp>,
}

enum FileOp {
    Write { position: usize, data: Vec<u8> },
    SetLen(usize),
}

enum DirOp {
    Link { path: PathBuf, inode: u64 },
    Unlink { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
}

struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    generation: u64,
}

impl FileOp {
    fn apply(&self, buf: &mut Vec<u8>) {
        match self {
            FileOp::Write { position, data } => {
                let end = position + data.len();
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[*position..end].copy_from_slice(data);
            }
            FileOp::SetLen(len) => buf.resize(*len, 0),
        }
    }

    /// How far this op made the file reach (where lost data may leave garbage).
    fn extent(&self) -> usize {
        match self {
            FileOp::Write { position, data } => position + data.len(),
            FileOp::SetLen(len) => *len,
        }
    }
}

impl DirOp {
    fn apply(&self, files: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirOp::Link { path, inode } => {
                files.insert(path.clone(), *inode);
            }
            DirOp::Unlink { path } => {
                files.remove(path);
            }
            DirOp::Rename { from, to } => {
                if let Some(inode) = files.remove(from) {
                    files.insert(to.clone(), inode);
                }
            }
        }
    }
}

impl Inode {
    fn push(&mut self, op: FileOp) {
        op.apply(&mut self.current);
        self.unsynced.push(op);
    }

    fn sync(&mut self) {
        for op in self.unsynced.drain(..) {
            op.apply(&mut self.durable);
        }
        debug_assert_eq!(self.durable, self.current);
    }

    fn crash(&mut self, rng: &mut SplitMix64) {
        let mut bytes = std::mem::take(&mut self.durable);
        let reach = self.unsynced.iter().map(FileOp::extent).max().unwrap_or(0);
        let kept = rng.below(self.unsynced.len() + 1);
        for op in &self.unsynced[..kept] {
            op.apply(&mut bytes);
        }
        if let Some(FileOp::Write { position, data }) = self.unsynced.get(kept)
            && rng.one_in(2)
        {
            let torn = FileOp::Write { position: *position, data: data[..rng.below(data.len())].to_vec() };
            torn.apply(&mut bytes);
        }
        if bytes.len() < reach && rng.one_in(3) {
            // The size reached the disk but the data did not: zeros or noise past the good bytes.
            let garbage_len = 1 + rng.below(reach - bytes.len());
            let noise = rng.one_in(2);
            bytes.extend((0..garbage_len).map(|_| if noise { rng.next_u64() as u8 } else { 0 }));
        }
        self.current = bytes.clone();
        self.durable = bytes;
        self.unsynced.clear();
    }
}

fn powered_off_error() -> io::Error {
    io::Error::other("SimFs: power is off (simulated crash in progress)")
}

impl SimState {
    /// Fails once the power is cut; counts down mutating calls towards a scheduled cut.
    fn check_power(&mut self, mutating: bool) -> io::Result<()> {
        if self.powered_off {
            return Err(powered_off_error());
        }
        if mutating && let Some(left) = self.mutating_ops_until_power_cut.as_mut() {
            if *left == 0 {
                self.powered_off = true;
                return Err(powered_off_error());
            }
            *left -= 1;
        }
        Ok(())
    }

    fn dir_exists(&self, path: &Path) -> bool {
        path.as_os_str().is_empty() || path == Path::new("/") || self.dirs.contains(path)
    }

    fn parent_of(path: &Path) -> io::Result<PathBuf> {
        path.parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))
    }

    fn queue_dir_op(&mut self, parent: PathBuf, op: DirOp) {
        self.pending_dir_ops.entry(parent).or_default().push(op);
    }
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Turns the file system into a state a real machine could show after losing power now
    /// (see the module doc). Every handle opened before becomes unusable; power is restored.
    pub fn crash(&self, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let mut state = self.state.lock();
        let state = &mut *state;
        for (_dir, ops) in std::mem::take(&mut state.pending_dir_ops) {
            let kept = rng.below(ops.len() + 1);
            for op in &ops[..kept] {
                op.apply(&mut state.durable_files);
            }
        }
        state.files = state.durable_files.clone();
        let live: BTreeSet<u64> = state.files.values().copied().collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        // Visit inodes in a fixed order so that a seed always gives the same outcome.
        for inode in &live {
            state.inodes.get_mut(inode).expect("live inode").crash(&mut rng);
        }
        state.generation += 1;
        state.powered_off = false;
        state.mutating_ops_until_power_cut = None;
    }

    /// After `mutating_ops` more mutating calls (writes, set_len, syncs, creates, renames,
    /// removes), every call fails until `crash` is called: the power went out mid-operation.
    pub fn cut_power_after(&self, mutating_ops: u64) {
        self.state.lock().mutating_ops_until_power_cut = Some(mutating_ops);
    }

    /// Whether a scheduled power cut has happened.
    pub fn is_powered_off(&self) -> bool {
        self.state.lock().powered_off
    }
}

impl SimFile {
    fn with_inode<T>(&self, mutating: bool, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut state = self.state.lock();
        if state.generation != self.generation {
            return Err(io::Error::other("SimFs: stale handle from before a crash"));
        }
        state.check_power(mutating)?;
        let inode = state.inodes.get_mut(&self.inode).expect("an open handle keeps its inode until a crash");
        Ok(f(inode))
    }
}

fn to_usize(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "position too large"))
}

impl StoreFile for SimFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        let position = to_usize(position)?;
        self.with_inode(false, |inode| {
            let available = inode.current.len().saturating_sub(position);
            let n = available.min(buf.len());
            buf[..n].copy_from_slice(&inode.current[position..position + n]);
            n
        })
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        let position = to_usize(position)?;
        self.with_inode(true, |inode| inode.push(FileOp::Write { position, data: buf.to_vec() }))
    }

    fn len(&self) -> io::Result<u64> {
        self.with_inode(false, |inode| inode.current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = to_usize(len)?;
        self.with_inode(true, |inode| inode.push(FileOp::SetLen(len)))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_inode(true, Inode::sync)
    }
}

impl FileSystem for SimFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let mut state = self.state.lock();
        let existing = state.files.get(path).copied();
        state.check_power(existing.is_none() && create)?;
        let inode = match existing {
            Some(inode) => inode,
            None if !create => {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())));
            }
            None => {
                let parent = SimState::parent_of(path)?;
                if !state.dir_exists(&parent) || state.dirs.contains(path) {
                    return Err(io::Error::new(io::ErrorKind::NotFound, format!("cannot create {}", path.display())));
                }
                state.next_inode += 1;
                let inode = state.next_inode;
                state.inodes.insert(inode, Inode::default());
                state.files.insert(path.to_path_buf(), inode);
                state.queue_dir_op(parent, DirOp::Link { path: path.to_path_buf(), inode });
                inode
            }
        };
        Ok(Arc::new(SimFile { state: self.state.clone(), inode, generation: state.generation }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check_power(true)?;
        if state.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a file", path.display())));
        }
        for ancestor in path.ancestors() {
            if !state.dir_exists(ancestor) {
                state.dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut state = self.state.lock();
        state.check_power(false)?;
        if !state.dir_exists(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", path.display())));
        }
        let children = state.files.keys().chain(state.dirs.iter()).filter(|child| child.parent() == Some(path));
        let mut children: Vec<PathBuf> = children.cloned().collect();
        children.sort();
        Ok(children)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check_power(true)?;
        if state.files.remove(path).is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())));
        }
        state.queue_dir_op(SimState::parent_of(path)?, DirOp::Unlink { path: path.to_path_buf() });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check_power(true)?;
        let parent = SimState::parent_of(from)?;
        if to.parent() != Some(parent.as_path()) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "SimFs renames only within one directory"));
        }
        let inode = state
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", from.display())))?;
        state.files.insert(to.to_path_buf(), inode);
        state.queue_dir_op(parent, DirOp::Rename { from: from.to_path_buf(), to: to.to_path_buf() });
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check_power(true)?;
        if !state.dir_exists(path) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", path.display())));
        }
        let state = &mut *state;
        for op in state.pending_dir_ops.remove(path).unwrap_or_default() {
            op.apply(&mut state.durable_files);
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state.lock();
        state.files.contains_key(path) || state.dir_exists(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(fs: &SimFs, path: &Path) -> Option<Vec<u8>> {
        let file = fs.open(path, false).ok()?;
        let mut buf = vec![0; file.len().unwrap() as usize];
        crate::fs::read_exact_at(&*file, &mut buf, 0).unwrap();
        Some(buf)
    }

    // Goal: synced bytes and dir-synced entries always survive a crash; unsynced ones may not.
    #[test]
    fn crash_keeps_synced_state() {
        for seed in 0..200 {
            let fs = SimFs::new();
            let dir = Path::new("/d");
            fs.create_dir_all(dir).unwrap();
            let a = dir.join("a");
            let file = fs.open(&a, true).unwrap();
            file.write_all_at(b"durable", 0).unwrap();
            file.sync_data().unwrap();
            fs.sync_dir(dir).unwrap();
            file.write_all_at(b"-tail", 7).unwrap();
            let b = dir.join("b");
            fs.open(&b, true).unwrap().sync_data().unwrap();
            fs.crash(seed);
            let bytes = read_all(&fs, &a).expect("dir-synced file survives");
            assert_eq!(&bytes[..7], b"durable");
            assert!(bytes.len() <= 12);
            assert!(file.read_at(&mut [0; 1], 0).is_err(), "old handles are dead");
        }
    }

    // Goal: the crash outcome covers both "lost" and "kept" for unsynced creations and renames.
    #[test]
    fn crash_outcomes_vary() {
        let (mut kept, mut lost) = (0, 0);
        for seed in 0..100 {
            let fs = SimFs::new();
            fs.create_dir_all(Path::new("/d")).unwrap();
            fs.open(Path::new("/d/x"), true).unwrap();
            fs.crash(seed);
            if fs.exists(Path::new("/d/x")) { kept += 1 } else { lost += 1 }
        }
        assert!(kept > 0 && lost > 0);
    }

    // Goal: after a scheduled power cut every call fails until the crash, then works again.
    #[test]
    fn power_cut_freezes_until_crash() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let file = fs.open(Path::new("/d/x"), true).unwrap();
        fs.cut_power_after(1);
        file.write_all_at(b"1", 0).unwrap();
        assert!(file.sync_data().is_err());
        assert!(fs.is_powered_off());
        assert!(fs.sync_dir(Path::new("/d")).is_err());
        fs.crash(7);
        assert!(!fs.is_powered_off());
        fs.create_dir_all(Path::new("/e")).unwrap();
    }
}
