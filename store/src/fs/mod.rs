//! The narrow file-system seam: everything the store does to disk goes through `FileSystem` and
//! `StoreFile`, so a test can swap in `SimFs` and simulate a machine crash that drops every byte
//! not yet fsynced.
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod sim;

pub use sim::SimFs;

// `len` is fallible here, and an `is_empty` would be of no use to the store.
#[allow(clippy::len_without_is_empty)]
pub trait StoreFile: Send + Sync {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
    /// Advises the kernel that `[offset, offset + len)` will not be read soon, so its clean pages
    /// can leave the page cache (`POSIX_FADV_DONTNEED`). Advisory: it never loses data (dirty
    /// pages are written back, not discarded) and a file system without a page cache ignores it.
    fn drop_cache(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

pub trait FileSystem: Send + Sync + 'static {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
}

/// Fills `buf` from `position`, failing with `UnexpectedEof` if the file ends first
/// (`read_at` may legally return short reads).
pub fn read_exact_at(file: &dyn StoreFile, buf: &mut [u8], position: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], position + done as u64) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended before the requested range")),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The real file system (std::fs, pread/pwrite, fdatasync).
pub struct RealFs;

struct RealFile(File);

impl StoreFile for RealFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.0.read_at(buf, position)
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.0.write_all_at(buf, position)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        // fdatasync: the data and the size, not the timestamps.
        self.0.sync_data()
    }
    fn drop_cache(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (offset, len) = (offset.min(i64::MAX as u64) as libc::off_t, len.min(i64::MAX as u64) as libc::off_t);
        // SAFETY: posix_fadvise only reads its arguments; the descriptor is open for self's life.
        match unsafe { libc::posix_fadvise(self.0.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) } {
            0 => Ok(()),
            code => Err(io::Error::from_raw_os_error(code)),
        }
    }
}

impl FileSystem for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut paths =
            std::fs::read_dir(path)?.map(|entry| entry.map(|e| e.path())).collect::<io::Result<Vec<_>>>()?;
        paths.sort();
        Ok(paths)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // A directory's entries (create, rename, unlink) are durable only once the directory
        // itself is fsynced.
        File::open(path)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: RealFs does positional reads/writes, set_len, cache drops, rename and listing as the
    // store expects.
    #[test]
    fn real_fs_basics() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let path = dir.path().join("a");
        let file = fs.open(&path, true).unwrap();
        file.write_all_at(b"hello world", 0).unwrap();
        file.write_all_at(b"W", 6).unwrap();
        let mut buf = [0u8; 11];
        read_exact_at(&*file, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello World");
        file.set_len(5).unwrap();
        file.sync_data().unwrap();
        assert_eq!(file.len().unwrap(), 5);
        assert!(read_exact_at(&*file, &mut buf, 0).is_err());
        // Dropping cached pages keeps the bytes.
        file.drop_cache(0, 5).unwrap();
        read_exact_at(&*file, &mut buf[..5], 0).unwrap();
        assert_eq!(&buf[..5], b"hello");
        fs.rename(&path, &dir.path().join("b")).unwrap();
        fs.sync_dir(dir.path()).unwrap();
        assert_eq!(fs.read_dir(dir.path()).unwrap(), vec![dir.path().join("b")]);
        assert!(fs.open(&path, false).is_err());
    }
}
