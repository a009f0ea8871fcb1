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
    // Two hosts making one directory at once through a network file system
    // can see "exists" and then no such directory, or a stale handle, for a
    // moment (measured on GlusterFS: a few in 400 races): look again.
    let mut tries = 0;
    loop {
        match create_dir_once(path) {
            Err(e) if tries < 5 && e.io_error().is_some_and(is_transient_race) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 << tries));
            }
            r => return r,
        }
    }
}

fn is_transient_race(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESTALE)
}

fn create_dir_once(path: &Path) -> Result<()> {
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
                Err(e) if is_transient_race(&e) => Err(Error::io("cannot stat", path, e)),
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

/// Time since boot, suspend and pauses included (`CLOCK_BOOTTIME`): what a
/// lease gap is measured with. Not the wall clock, which an admin or NTP can
/// step, and which `MM_TEST_*` moves.
pub fn boottime() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    std::time::Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Sets a file's modification time to "now" as the file system sees it
/// (`futimens` with `UTIME_NOW`): on NFS the server's clock, so that ages
/// compared between two such stamps do not depend on any client's clock.
pub fn touch_now(file: &File) -> io::Result<()> {
    let now = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    rustix::fs::futimens(
        file,
        &rustix::fs::Timestamps {
            last_access: now,
            last_modification: now,
        },
    )
    .map_err(io::Error::from)
}

/// What [`exchange`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Exchanged {
    /// The two names swapped their files: `dest` has the new content, `src`
    /// the old file (kept as the next write's preallocated spare).
    Swapped,
    /// The file system cannot exchange; `dest` existed and was replaced by a
    /// plain rename (a narrow window: see docs/shared-fs.md).
    Replaced,
    /// `dest` does not exist: nothing was written under its name.
    Gone,
}

/// Replaces `dest` with `src` only if `dest` exists: `renameat2(2)` with
/// `RENAME_EXCHANGE`, which fails with `ENOENT` rather than recreate a name
/// that another process moved away. Where the file system does not support
/// it (`EINVAL`), falls back to checking that `dest` exists, then `rename`.
pub fn exchange(src: &Path, dest: &Path) -> io::Result<Exchanged> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, src, CWD, dest, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(Exchanged::Swapped),
        Err(rustix::io::Errno::NOENT) => {
            if fs::symlink_metadata(src).is_err() {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            Ok(Exchanged::Gone)
        }
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            match fs::symlink_metadata(dest) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Exchanged::Gone),
                Err(e) => Err(e),
                Ok(_) => fs::rename(src, dest).map(|()| Exchanged::Replaced),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Preallocates `len` bytes for `file` without changing its size, so a later
/// write of up to `len` bytes needs no new block from a file system that is
/// full by then. Unsupported (`EOPNOTSUPP`): a no-op.
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The free blocks and inodes a runner keeps in hand before it claims an
/// entry: below either, it claims nothing and says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Floor {
    /// Free bytes.
    pub bytes: u64,
    /// Free inodes (ignored where the file system reports none at all).
    pub inodes: u64,
}

impl Default for Floor {
    fn default() -> Floor {
        Floor {
            bytes: 1 << 20,
            inodes: 64,
        }
    }
}

/// Whether the file system holding `path` has at least `floor` free; the
/// reason when not.
pub fn below_floor(path: &Path, floor: Floor) -> Result<Option<String>> {
    let st = rustix::fs::statvfs(path)
        .map_err(|e| Error::io("cannot statvfs", path, io::Error::from(e)))?;
    let bytes = st.f_bavail.saturating_mul(st.f_frsize);
    if bytes < floor.bytes {
        return Ok(Some(format!(
            "the spool's file system has {} KiB free, below the floor of {} KiB",
            bytes / 1024,
            floor.bytes / 1024
        )));
    }
    if st.f_files > 0 && st.f_favail < floor.inodes {
        return Ok(Some(format!(
            "the spool's file system has {} free inodes, below the floor of {}",
            st.f_favail, floor.inodes
        )));
    }
    Ok(None)
}

/// File systems where `syncfs(2)` is not known to reach stable storage:
/// FUSE (GlusterFS, and others), NFS, SMB/CIFS, Ceph, AFS, 9p, Lustre. There,
/// durability needs `fdatasync` of each file and `fsync` of the directory.
pub fn syncfs_is_durable(path: &Path) -> bool {
    const NOT_DURABLE: &[u64] = &[
        0x6573_5546, // FUSE_SUPER_MAGIC (glusterfs, sshfs, ...)
        0x0000_6969, // NFS_SUPER_MAGIC
        0xFF53_4D42, // CIFS_MAGIC_NUMBER
        0xFE53_4D42, // SMB2_MAGIC_NUMBER
        0x0000_517B, // SMB_SUPER_MAGIC
        0x00C3_6400, // CEPH_SUPER_MAGIC
        0x5346_414F, // AFS_SUPER_MAGIC
        0x0102_1997, // V9FS_MAGIC
        0x0BD0_0BD0, // LL_SUPER_MAGIC (Lustre)
    ];
    match rustix::fs::statfs(path) {
        Ok(st) => !NOT_DURABLE.contains(&(st.f_type as u64 & 0xFFFF_FFFF)),
        Err(_) => false,
    }
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
