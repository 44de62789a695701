//! Small durable-filesystem steps: create a directory durably, replace a file atomically.

use std::{io, path::Path};

use crate::{
    io::{Access, Io},
    telemetry,
};

/// Creates `dir` if it is missing and makes its entry in the parent durable, also when it
/// was there already: a process that crashed between an earlier `mkdir` and its fsync
/// leaves a directory whose entry a power cut can still take.
pub(crate) fn create_dir(io: &dyn Io, dir: &Path) -> io::Result<()> {
    match io.create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_dir(io, dir) => {}
        Err(e) => return Err(e),
    }
    sync_parent(io, dir)
}

/// Creates `dir` and its missing ancestors, each made durable in its parent (and `dir`'s
/// entry made durable if it was there): a data directory whose own entry a power cut can
/// take takes every acknowledged record with it.
pub(crate) fn create_dir_all(io: &dyn Io, dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
        && !is_dir(io, parent)
    {
        create_dir_all(io, parent)?;
    }
    create_dir(io, dir)
}

/// Whether `path` exists (as `Path::exists`, which takes an error for no).
pub(crate) fn exists(io: &dyn Io, path: &Path) -> bool {
    io.metadata(path).is_ok()
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
    sync_parent(io, path)
}

/// Makes the entry of `path` in its directory durable.
fn sync_parent(io: &dyn Io, path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => io.sync_dir(parent),
        _ => io.sync_dir(Path::new(".")),
    }
}

/// `<generation:020>.<extension>`: the numbered files of the transaction journal and of
/// the write-ahead file.
pub(crate) fn generation_file_name(generation: u64, extension: &str) -> String {
    format!("{generation:020}.{extension}")
}

fn parse_generation_file_name(name: &str, extension: &str) -> Option<u64> {
    let digits = name.strip_suffix(extension)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The generations of the `<generation:020>.<extension>` files in `dir`, oldest first;
/// any other entry is reported as not `what` and left alone.
pub(crate) fn list_generations(
    io: &dyn Io,
    dir: &Path,
    extension: &str,
    what: &str,
) -> io::Result<Vec<u64>> {
    let mut generations = Vec::new();
    for name in io.read_dir(dir)? {
        match name
            .to_str()
            .and_then(|n| parse_generation_file_name(n, extension))
        {
            Some(generation) => generations.push(generation),
            None => telemetry::EntryIgnored {
                path: &dir.join(&name),
                reason: &format!("not {what}"),
            }
            .emit(),
        }
    }
    generations.sort_unstable();
    Ok(generations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_file_names_parse_back() {
        assert_eq!(
            parse_generation_file_name(&generation_file_name(42, "wal"), "wal"),
            Some(42)
        );
        assert_eq!(parse_generation_file_name("42.wal", "wal"), None);
        assert_eq!(
            parse_generation_file_name("00000000000000000042.log", "wal"),
            None
        );
        assert_eq!(
            parse_generation_file_name("00000000000000000042xwal", "wal"),
            None
        );
    }
}
