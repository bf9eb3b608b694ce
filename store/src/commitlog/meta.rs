//! The purge point, persisted in `<dir>/commitlog.meta` (an atomically replaced framed file).
//! Contents: version u8, has_purged u8, purged index u64, purged term u64 (little endian).
use std::path::{Path, PathBuf};

use crate::{FileSystem, LogIndex, StoreError, atomic_file};

const FILE_NAME: &str = "commitlog.meta";
const VERSION: u8 = 1;
const CONTENTS_BYTES: usize = 1 + 1 + 8 + 8;

pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

pub(super) fn load(fs: &dyn FileSystem, dir: &Path) -> Result<Option<(LogIndex, u64)>, StoreError> {
    let path = path(dir);
    let Some(bytes) = atomic_file::load(fs, &path)? else { return Ok(None) };
    if bytes.len() != CONTENTS_BYTES || bytes[0] != VERSION || bytes[1] > 1 {
        return Err(StoreError::Corrupt {
            segment: path.display().to_string(),
            position: 0,
            reason: "bad purge meta contents".into(),
        });
    }
    let index = u64::from_le_bytes(bytes[2..10].try_into().expect("8 bytes"));
    let term = u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes"));
    Ok((bytes[1] == 1).then_some((LogIndex(index), term)))
}

/// Durable when it returns.
pub(super) fn store(fs: &dyn FileSystem, dir: &Path, purged: (LogIndex, u64)) -> Result<(), StoreError> {
    let mut bytes = Vec::with_capacity(CONTENTS_BYTES);
    bytes.push(VERSION);
    bytes.push(1);
    bytes.extend_from_slice(&purged.0.0.to_le_bytes());
    bytes.extend_from_slice(&purged.1.to_le_bytes());
    atomic_file::replace(fs, &path(dir), &bytes)
}
