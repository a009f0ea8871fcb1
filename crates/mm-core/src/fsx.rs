//! File-system primitives with the spool's guarantees built in.
//!
//! Every function names the path in its error. The two rules of the spool live
//! here, once:
//!
//! * **Group access.** Directories are `2770` (setgid, so files inherit the
//!   spool's group) and files `0660`, set with an explicit `chmod` after
//!   creation: Postfix's pipe(8) runs commands with umask 077, which would
//!   otherwise strip the group bits and give Mailman's seed-000 clash (an
//!   entry the MTA's uid wrote that the runner's uid cannot read or unlink).
//! * **Publish by rename.** A file becomes visible under its final name only
//!   complete and on stable storage: write a temporary name, `fsync` it,
//!   `rename` it, `fsync` the directory (the mv-not-cp rule of seed 004).
//!
//! Nothing here follows a symbolic link when opening an entry.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result, io_err};

/// Mode of every directory of the spool: setgid, group-writable.
pub const DIR_MODE: u32 = 0o2770;
/// Mode of every file of the spool: group readable and writable.
pub const FILE_MODE: u32 = 0o660;

/// Creates `path` (one level) with the spool's directory mode; an existing
/// directory is fine. The mode is set explicitly because of the umask.
pub fn create_dir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => {
            fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
                .map_err(io_err("cannot set the mode of", path))?;
            // A one-part relative path has "" as its parent: the current directory.
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            sync_dir(parent)?;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Not `is_dir()`, which follows a link: a symbolic link planted in
            // the spool must never be written through.
            match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(Error::new(
                    crate::ErrorKind::Config,
                    format!(
                        "{} is not a directory (a symbolic link or a file?); the spool needs a real one",
                        path.display()
                    ),
                )),
            }
        }
        // mkdir says EACCES both when the parent is not writable and when a
        // directory above cannot even be searched: name the right one.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let parent = path.parent().unwrap_or(Path::new("."));
            match fs::symlink_metadata(parent) {
                Err(pe) => Err(Error::io("cannot reach", parent, pe)),
                Ok(_) => Err(Error::io("cannot create directory", path, e)),
            }
        }
        Err(e) => Err(Error::io("cannot create directory", path, e)),
    }
}

/// `fsync` a directory, making the renames and unlinks in it durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(io_err("cannot open directory", path))?;
    dir.sync_all()
        .map_err(io_err("cannot sync directory", path))
}

/// Creates `path` exclusively (never an existing file, never through a link)
/// with the spool's file mode.
pub fn create_new(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("cannot create", path))?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io_err("cannot set the mode of", path))?;
    Ok(f)
}

/// Opens an entry for reading without following a symbolic link.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

/// Reads a whole regular file, refusing links and anything that is not a regular file.
pub fn read_entry_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = open_nofollow(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::new(
                crate::ErrorKind::Invalid,
                format!("{} is a symbolic link; left alone", path.display()),
            )
        } else {
            Error::io("cannot open", path, e)
        }
    })?;
    let meta = f.metadata().map_err(io_err("cannot stat", path))?;
    if !meta.is_file() {
        return Err(Error::new(
            crate::ErrorKind::Invalid,
            format!("{} is not a regular file; left alone", path.display()),
        ));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // Through `Take`: File's own read_to_end would stat the file again for a size we have.
    Read::by_ref(&mut f)
        .take(u64::MAX)
        .read_to_end(&mut buf)
        .map_err(io_err("cannot read", path))?;
    Ok(buf)
}

/// Writes `bytes` to a new file `tmp`, `fsync`s it and renames it to `dest`.
/// The directory is *not* synced: the caller does that, once for a batch
/// (group commit) or at once. On any failure the temporary file is removed,
/// so a failed write leaves nothing behind under any name.
pub fn write_and_rename(tmp: &Path, dest: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let result = (|| {
        let mut f = create_new(tmp)?;
        f.write_all(bytes).map_err(io_err("cannot write", tmp))?;
        if sync {
            f.sync_data().map_err(io_err("cannot sync", tmp))?;
        }
        drop(f);
        fs::rename(tmp, dest)
            .map_err(|e| Error::io(format_args!("cannot rename {} to", tmp.display()), dest, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Free space, in bytes, for an unprivileged writer on the file system holding `path`.
pub fn free_space(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path)
        .map_err(|e| Error::io("cannot statvfs", path, io::Error::from(e)))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Sixteen random bytes from the kernel.
pub fn random_bytes() -> [u8; 16] {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(_) => break,
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_rename_leaves_no_temporary_on_failure() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("a.tmp");
        let dest = d.path().join("missing-dir/a.pck");
        assert!(write_and_rename(&tmp, &dest, b"x", true).is_err());
        assert!(!tmp.exists());
    }

    #[test]
    fn files_get_group_modes_despite_umask() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("q");
        create_dir(&sub).unwrap();
        let mode = fs::metadata(&sub).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, DIR_MODE);
        let f = sub.join("f");
        create_new(&f).unwrap();
        let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, FILE_MODE);
    }
}
