//! The physical floor for `cargo xtask bench`: minimal programs that make only
//! the system calls a workload cannot do without, so that the benchmark can
//! print our figure beside what the machine allows in the same run.
//!
//! * `enqueue-one DIR`: one durable file per process, the MTA-pipe case:
//!   read standard input, create `DIR/NAME.tmp`, write, fdatasync, rename to
//!   `.pck`, fsync the directory.
//! * `durable-files DIR N SIZE`: the same, N times in one process (the
//!   one-durable-file-per-entry in-process floor).
//! * `fill DIR N SIZE`: N plain files of SIZE bytes, not synced (set-up only).
//! * `drain DIR`: for every file of the flat directory: rename it (the claim),
//!   read it, unlink it.
//! * `list DIR`: read every directory under DIR and count the names (what a
//!   summary of the queue needs at the least).
//!
//! Standard library only, no error recovery: a failure panics, which the
//! benchmark reports.

// A benchmark floor, not a tool: it reads the wall clock as it likes.
#![allow(clippy::disallowed_methods)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("mm-floor: missing argument {i}"))
    };
    let num = |i: usize| -> usize { arg(i).parse().expect("mm-floor: a number") };
    match arg(0) {
        "enqueue-one" => {
            let mut msg = Vec::new();
            std::io::stdin().read_to_end(&mut msg).expect("stdin");
            let name = format!("{}.{}", std::process::id(), nanos());
            durable_file(Path::new(arg(1)), &name, &msg);
        }
        "durable-files" => {
            let (dir, n, size) = (Path::new(arg(1)), num(2), num(3));
            let body = vec![b'x'; size];
            let tag = nanos();
            for i in 0..n {
                durable_file(dir, &format!("{tag}.{i}"), &body);
            }
        }
        "fill" => {
            let (dir, n, size) = (Path::new(arg(1)), num(2), num(3));
            let body = vec![b'x'; size];
            for i in 0..n {
                fs::write(dir.join(format!("{i:010}.pck")), &body).expect("write");
            }
        }
        "drain" => {
            let dir = Path::new(arg(1));
            let mut buf = Vec::new();
            for e in fs::read_dir(dir).expect("read_dir") {
                let path = e.expect("dirent").path();
                let claimed = path.with_extension("bak");
                fs::rename(&path, &claimed).expect("rename");
                buf.clear();
                File::open(&claimed)
                    .and_then(|mut f| f.read_to_end(&mut buf))
                    .expect("read");
                fs::remove_file(&claimed).expect("unlink");
            }
        }
        "list" => {
            fn walk(dir: &Path, n: &mut u64) {
                for e in fs::read_dir(dir).expect("read_dir") {
                    let e = e.expect("dirent");
                    if e.file_type().expect("file type").is_dir() {
                        walk(&e.path(), n);
                    } else {
                        *n += 1;
                    }
                }
            }
            let mut n = 0;
            walk(Path::new(arg(1)), &mut n);
            println!("{n}");
        }
        other => panic!("mm-floor: unknown mode {other}"),
    }
}

/// tmp, write, fdatasync, rename, fsync the directory: what "durable" costs.
fn durable_file(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o660)
        .open(&tmp)
        .expect("create");
    f.write_all(bytes).expect("write");
    f.sync_data().expect("fdatasync");
    drop(f);
    fs::rename(&tmp, dir.join(format!("{name}.pck"))).expect("rename");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
