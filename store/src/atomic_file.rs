//! Small files replaced atomically: the vote file and the commitlog's purge meta file.
//!
//! On disk: `len u32 | crc32c(contents) u32 | contents` (little endian). A save writes
//! `<path>.tmp`, fdatasyncs it, renames it over `<path>` and fsyncs the directory, so `<path>` is
//! always either the previous or the new complete contents. A torn `.tmp` is never read.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::fs::read_exact_at;
use crate::{FileSystem, StoreError};

const FRAME_BYTES: usize = 8;
/// Contents are tiny (a vote, a purge point); anything bigger on disk is damage.
const CONTENTS_BYTES_MAX: usize = 64 * 1024;

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

fn parent(path: &Path) -> Result<&Path, StoreError> {
    path.parent().ok_or_else(|| StoreError::Invalid(format!("{} has no parent directory", path.display())))
}

/// Durably replaces `path` with `contents`; when it returns Ok, a crash keeps the new contents.
pub(crate) fn replace(fs: &dyn FileSystem, path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    if contents.len() > CONTENTS_BYTES_MAX {
        return Err(StoreError::TooLarge { size: contents.len(), limit: CONTENTS_BYTES_MAX });
    }
    let mut framed = Vec::with_capacity(FRAME_BYTES + contents.len());
    framed.extend_from_slice(&(contents.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32c::crc32c(contents).to_le_bytes());
    framed.extend_from_slice(contents);
    replace_bytes(fs, path, &framed)
}

/// Durably replaces `path` with `bytes` as given (no frame added): the temp file, fdatasync,
/// rename and directory fsync of `replace`, for files that frame themselves (segment index files).
pub(crate) fn replace_bytes(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = tmp_path(path);
    let file = fs.open(&tmp, true).map_err(|e| StoreError::io("open temp file", e))?;
    // A torn temp file from an earlier crash may be longer than the new contents.
    file.set_len(0).map_err(|e| StoreError::io("clear temp file", e))?;
    file.write_all_at(bytes, 0).map_err(|e| StoreError::io("write temp file", e))?;
    file.sync_data().map_err(|e| StoreError::io("sync temp file", e))?;
    fs.rename(&tmp, path).map_err(|e| StoreError::io("rename temp file", e))?;
    fs.sync_dir(parent(path)?).map_err(|e| StoreError::io("sync directory", e))
}

/// The contents last saved at `path`, None if there is no such file.
pub(crate) fn load(fs: &dyn FileSystem, path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    if !fs.exists(path) {
        return Ok(None);
    }
    let corrupt =
        |reason: &str| StoreError::Corrupt { segment: path.display().to_string(), position: 0, reason: reason.into() };
    let file = fs.open(path, false).map_err(|e| StoreError::io("open", e))?;
    let file_len = file.len().map_err(|e| StoreError::io("stat", e))?;
    if file_len < FRAME_BYTES as u64 || file_len > (FRAME_BYTES + CONTENTS_BYTES_MAX) as u64 {
        return Err(corrupt("file length out of range"));
    }
    let mut bytes = vec![0; file_len as usize];
    read_exact_at(&*file, &mut bytes, 0).map_err(|e| StoreError::io("read", e))?;
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    if FRAME_BYTES + len != bytes.len() {
        return Err(corrupt("length field does not match file length"));
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[FRAME_BYTES..]) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    bytes.drain(..FRAME_BYTES);
    Ok(Some(bytes))
}

/// Removes `path` (if present) durably.
pub(crate) fn remove(fs: &dyn FileSystem, path: &Path) -> Result<(), StoreError> {
    if fs.exists(path) {
        fs.remove_file(path).map_err(|e| StoreError::io("remove file", e))?;
        fs.sync_dir(parent(path)?).map_err(|e| StoreError::io("sync directory", e))?;
    }
    Ok(())
}
