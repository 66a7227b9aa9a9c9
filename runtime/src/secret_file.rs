//! Files that hold secrets (signing keys, generated demo passwords): readable by their
//! owner only.

use std::path::Path;

/// Writes `bytes` to `path`, created (or truncated) with mode 0600 on Unix.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?
            .write_all(bytes)
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes)
    }
}
