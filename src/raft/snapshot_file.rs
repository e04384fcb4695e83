//! The on-disk frame of a state-machine snapshot, and the crash-safe ways to write it and to
//! create a directory.
//!
//! Layout: magic `WITNSNAP` (8 bytes), format version (u32 LE), payload length (u64 LE),
//! CRC-32 of the payload (u32 LE), payload. The same bytes travel between nodes when a leader
//! sends a snapshot, so a corrupted transfer is caught by the receiver too.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"WITNSNAP";
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("not a witness snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("snapshot is truncated: expected {expected} payload bytes, found {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("snapshot checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
}

pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn decode(bytes: &[u8]) -> Result<&[u8], FrameError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let stored = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(FrameError::Truncated { expected: len, found: payload.len() as u64 });
    }
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(payload)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old file or the new one:
/// write a temporary file, fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("snapshot path has no parent directory"))?;
    create_dir_durably(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents so that they survive a power loss: like a renamed
/// file's, a new directory's entry is durable only once its parent is fsynced. Without it, the
/// first snapshot's directory (the log already purged behind it) or a new Raft log's could
/// vanish with the power.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(d) = next.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        next = d.parent();
    }
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = created.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_corruption_is_caught() {
        let framed = encode(b"{\"hello\":1}");
        assert_eq!(decode(&framed).unwrap(), b"{\"hello\":1}");

        let mut flipped = framed.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        assert!(matches!(decode(&flipped), Err(FrameError::Checksum { .. })));

        assert!(matches!(decode(&framed[..framed.len() - 1]), Err(FrameError::Truncated { .. })));
        assert_eq!(decode(b"garbage"), Err(FrameError::BadMagic));

        let mut future = framed.clone();
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(decode(&future), Err(FrameError::UnsupportedVersion(2)));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/current.snap");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!path.with_extension("tmp").exists());
    }
}
