//! Listing a queue, or one slice of it, without opening a single entry.
//!
//! A scan reads the queue's drop-in directory and the bucket directories the
//! slice can touch, parses each name, and hands back what it found: entries
//! with their state and due time, and foreign files (anything whose name is
//! not an entry's, symbolic links, directories) which are reported and never
//! touched.

use std::ffi::OsStr;
use std::fs::FileType;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::id::FileName;
use crate::slice::Slice;
use crate::spool::Queue;

/// Where in a queue a file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In bucket directory `b` (normally the bucket of its hash).
    Bucket(u8),
    /// In the queue's top directory, where an admin dropped it.
    DropIn,
}

/// Something a scan found.
#[derive(Debug)]
pub enum Item {
    /// An entry file.
    Entry {
        /// Its parsed name.
        name: FileName,
        /// Where it is.
        place: Place,
        /// Its size, when the scan was asked for sizes (one `fstatat`, no open).
        size: Option<u64>,
    },
    /// A file that is not an entry, or an entry name that is not a regular
    /// file (a symbolic link, a directory): reported, never touched.
    Foreign {
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl Queue {
    /// The directory of a place.
    pub fn place_dir(&self, place: Place) -> PathBuf {
        match place {
            Place::Bucket(b) => self.bucket_dir(b),
            Place::DropIn => self.dir().to_path_buf(),
        }
    }

    /// The path of an entry found by a scan.
    pub fn found_path(&self, name: &FileName, place: Place) -> PathBuf {
        let mut p = self.place_dir(place);
        p.push(name.to_string());
        p
    }

    /// Lists the entries of `slice`, calling `f` for each item. Foreign files
    /// are reported by scans of the whole queue (and, in the drop-in, by every
    /// scan). A queue directory that does not exist is an empty queue.
    pub fn scan(&self, slice: Slice, f: &mut dyn FnMut(Item)) -> Result<()> {
        self.scan_with(slice, false, f)
    }

    /// [`scan`](Queue::scan), with each entry's size when `sizes` is set.
    pub fn scan_with(&self, slice: Slice, sizes: bool, f: &mut dyn FnMut(Item)) -> Result<()> {
        let top = match std::fs::read_dir(self.dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("cannot list queue", self.dir(), e)),
        };
        let mut buckets = [false; 256];
        for de in top {
            let de = de.map_err(|e| Error::io("cannot list queue", self.dir(), e))?;
            let fname = de.file_name();
            let ft = de.file_type().ok();
            if ft.is_some_and(|t| t.is_dir())
                && let Some(b) = bucket_of(fname.as_bytes())
            {
                buckets[b as usize] = true;
                continue;
            }
            let size = if sizes {
                de.metadata().ok().map(|m| m.len())
            } else {
                None
            };
            self.classify(&fname, ft, Place::DropIn, slice, size, f);
        }
        for b in slice.buckets() {
            if !buckets[b as usize] {
                continue;
            }
            let dir = self.bucket_dir(b);
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("cannot list", &dir, e)),
            };
            for de in rd {
                let de = de.map_err(|e| Error::io("cannot list", &dir, e))?;
                let size = if sizes {
                    de.metadata().ok().map(|m| m.len())
                } else {
                    None
                };
                self.classify(
                    &de.file_name(),
                    de.file_type().ok(),
                    Place::Bucket(b),
                    slice,
                    size,
                    f,
                );
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn classify(
        &self,
        fname: &OsStr,
        ft: Option<FileType>,
        place: Place,
        slice: Slice,
        size: Option<u64>,
        f: &mut dyn FnMut(Item),
    ) {
        match FileName::parse(fname.as_bytes()) {
            Some(name) => {
                if !slice.contains(name.id.hash_prefix()) {
                    return;
                }
                if ft.is_some_and(|t| t.is_file()) {
                    f(Item::Entry { name, place, size });
                } else {
                    let path = self.found_path(&name, place);
                    f(Item::Foreign {
                        path,
                        why: "an entry name on something that is not a regular file",
                    });
                }
            }
            None if slice.is_all() || place == Place::DropIn => {
                let mut path = self.place_dir(place);
                path.push(fname);
                f(Item::Foreign {
                    path,
                    why: "not an entry name",
                });
            }
            None => {}
        }
    }
}

/// The bucket a directory name is (`00` to `ff`, lowercase), if it is one.
pub fn bucket_of(b: &[u8]) -> Option<u8> {
    let h = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match b {
        [x, y] => Some(h(*x)? << 4 | h(*y)?),
        _ => None,
    }
}
