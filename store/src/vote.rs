//! The durable vote: a small file replaced atomically (write temp, fsync, rename, fsync dir).
//! The bytes are opaque to the store (the raft crate serializes its vote); a checksum guards them.
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{FileSystem, StoreError, atomic_file};

pub struct VoteFile {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    /// Serializes saves: two concurrent saves would share the temp file.
    save_lock: Mutex<()>,
}

impl VoteFile {
    pub fn open(fs: Arc<dyn FileSystem>, path: PathBuf) -> Result<VoteFile, StoreError> {
        let dir =
            path.parent().ok_or_else(|| StoreError::Invalid(format!("{} has no parent directory", path.display())))?;
        fs.create_dir_all(dir).map_err(|e| StoreError::io("create vote directory", e))?;
        Ok(VoteFile { fs, path, save_lock: Mutex::new(()) })
    }

    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        atomic_file::load(&*self.fs, &self.path)
    }

    /// Durable when it returns.
    pub fn save(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let _guard = self.save_lock.lock();
        atomic_file::replace(&*self.fs, &self.path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimFs;
    use std::path::Path;

    // Goal: a saved vote survives a crash; a missing file loads as None; a torn temp file is ignored.
    #[test]
    fn save_load_crash() {
        let sim = SimFs::new();
        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
        let path = Path::new("/node/vote");
        let vote = VoteFile::open(fs.clone(), path.into()).unwrap();
        assert_eq!(vote.load().unwrap(), None);
        vote.save(b"term=1").unwrap();
        vote.save(b"term=2").unwrap();
        // A save that dies after writing its temp file but before the rename.
        sim.cut_power_after(3);
        assert!(vote.save(b"term=3, a longer vote").is_err());
        sim.crash(11);
        let vote = VoteFile::open(fs, path.into()).unwrap();
        assert_eq!(vote.load().unwrap().as_deref(), Some(&b"term=2"[..]));
        vote.save(b"term=4").unwrap();
        assert_eq!(vote.load().unwrap().as_deref(), Some(&b"term=4"[..]));
    }
}
