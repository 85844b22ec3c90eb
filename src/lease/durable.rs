//! Small files that must survive a crash whole: the local backend's token
//! counter and the peers backend's promises.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that after a crash the file holds either the
/// old or the new content, never a torn one, and the new one once this
/// returns: a temp file next to it, fsync, rename, fsync of the directory.
/// On failure, the path that failed and why. Blocking.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // A leading dot: no counter or state file has such a name.
    let temp = dir.join(format!(".{name}.tmp"));
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |e| (path, e)
    };
    let mut file = File::create(&temp).map_err(failed(&temp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(failed(&temp))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(failed(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed(dir))
}
