//! Small durable-filesystem steps: create a directory durably, replace a file atomically.

use std::{io, path::Path};

use crate::io::{Access, Io};

/// Creates `dir` if it is missing and makes its entry in the parent durable.
pub(crate) fn create_dir(io: &dyn Io, dir: &Path) -> io::Result<()> {
    match io.create_dir(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => io.sync_dir(parent),
            _ => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_dir(io, dir) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` and its missing ancestors, as `std::fs::create_dir_all` does.
pub(crate) fn create_dir_all(io: &dyn Io, dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || is_dir(io, dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(io, parent)?;
    }
    match io.create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_dir(io, dir) => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn is_dir(io: &dyn Io, path: &Path) -> bool {
    io.metadata(path).is_ok_and(|m| m.is_dir)
}

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file:
/// write a temporary file beside it, fsync it, rename it over `path`, fsync the directory.
pub(crate) fn write_atomically(io: &dyn Io, path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let file = io.open(&tmp, Access::Truncate)?;
        file.write_all_at(contents, 0)?;
        file.sync_all()?;
    }
    io.rename(&tmp, path)?;
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => io.sync_dir(parent),
        _ => io.sync_dir(Path::new(".")),
    }
}
