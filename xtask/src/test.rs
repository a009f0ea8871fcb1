//! `cargo xtask test`: the README's test command, and CI's.
//!
//! 1. What the tests need from the system (Postfix's smtp-sink, strace, the
//!    account tools, setpriv and mount, groff and man): installed with
//!    apt-get when we are root and it is missing; otherwise the missing
//!    programs are named with the Debian package and the command that
//!    installs them, and the run stops if the suite cannot pass without them.
//! 2. `cargo build --workspace`, then `cargo test --workspace`.
//! 3. The tests that need root or strace are `#[ignore = "needs root: …"]`
//!    or `#[ignore = "needs strace: …"]` in `tests/e2e`, so that a plain
//!    `cargo test` shows them as not run rather than passing. Here they run
//!    (`--include-ignored`) where they can, and the closing lines say how
//!    many ran and why the others did not.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

/// A program the tests run, and where it comes from.
struct Need {
    program: &'static str,
    package: &'static str,
    /// Whether the suite fails without it even when not root.
    always: bool,
    why: &'static str,
}

/// Keep in step with what the tests start (and .ci/run's own extra lines).
const NEEDS: &[Need] = &[
    Need {
        program: "smtp-sink",
        package: "postfix",
        always: true,
        why: "the SMTP server of the runner tests",
    },
    Need {
        program: "strace",
        package: "strace",
        always: false,
        why: "the injected-EIO tests",
    },
    Need {
        program: "useradd",
        package: "passwd",
        always: false,
        why: "the permission model test's users",
    },
    Need {
        program: "setpriv",
        package: "util-linux",
        always: false,
        why: "running the tools as other users",
    },
    Need {
        program: "mount",
        package: "mount",
        always: false,
        why: "the full and read-only file system tests (tmpfs)",
    },
    Need {
        program: "pflogsumm",
        package: "pflogsumm",
        always: true,
        why: "the log analyser that reads the runner's log (tests/e2e/maillog.rs)",
    },
    Need {
        program: "script",
        package: "bsdutils",
        always: true,
        why: "a pseudo-terminal for mm-runq's progress bar (tests/e2e/runq.rs)",
    },
    Need {
        program: "python3",
        package: "python3",
        always: true,
        why: "Python's email package, the MIME parser that reads the DSNs (tests/e2e/dsn.rs)",
    },
    Need {
        program: "promtool",
        package: "prometheus",
        always: true,
        why: "Prometheus' own parser of the metrics (`promtool check metrics`, tests/e2e/watch.rs)",
    },
    Need {
        program: "groff",
        package: "groff-base",
        always: false,
        why: "reading the man pages",
    },
    Need {
        program: "man",
        package: "man-db",
        always: false,
        why: "reading the man pages",
    },
];

/// Why a group of ignored tests is ignored: the prefix of its reason.
const ROOT: &str = "needs root";
const STRACE: &str = "needs strace";

/// Runs the whole suite; see the module doc.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let is_root = mm_e2e::is_root();
    install(is_root)?;

    let ignored = ignored_tests(&root.join("tests").join("e2e"))?;
    let of = |why: &str| -> BTreeSet<String> {
        ignored
            .iter()
            .filter(|(_, w)| w == why)
            .map(|(n, _)| n.clone())
            .collect()
    };
    let (need_root, need_strace) = (of(ROOT), of(STRACE));
    let strace = mm_e2e::strace_works();
    let mut skip: Vec<&String> = Vec::new();
    let mut not_run: Vec<String> = Vec::new();
    if !is_root {
        skip.extend(&need_root);
        not_run.push(format!(
            "{} tests that need root (the effective uid is not 0; run `cargo xtask test` as root)",
            need_root.len()
        ));
    }
    if let Err(why) = &strace {
        skip.extend(&need_strace);
        not_run.push(format!(
            "{} tests that need strace ({why})",
            need_strace.len()
        ));
    }

    cargo(root, &["build", "--workspace"])?;
    let mut args: Vec<String> = ["test", "--workspace", "--", "--include-ignored"]
        .map(String::from)
        .to_vec();
    if !skip.is_empty() {
        args.push("--exact".into());
        for t in &skip {
            args.push("--skip".into());
            args.push((*t).clone());
        }
    }
    let passed = cargo_test(root, &args)?;

    let ran = |set: &BTreeSet<String>| set.iter().filter(|t| passed.contains(*t)).count();
    println!(
        "\nxtask test: {} of {} tests that need root ran and passed; {} of {} that need strace",
        ran(&need_root),
        need_root.len(),
        ran(&need_strace),
        need_strace.len()
    );
    for n in &not_run {
        println!("xtask test: not run: {n}");
    }
    println!(
        "xtask test: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where a program is: `$PATH`, then the sbin directories a user's
/// `$PATH` often lacks.
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Installs what is missing (root with apt-get), or names it.
fn install(is_root: bool) -> anyhow::Result<()> {
    let missing: Vec<&Need> = NEEDS.iter().filter(|n| find(n.program).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|n| n.package).collect();
    packages.dedup();
    for n in &missing {
        println!(
            "xtask test: {} is missing (Debian package {}): {}",
            n.program, n.package, n.why
        );
    }
    if is_root && find("apt-get").is_some() {
        println!("xtask test: installing {}", packages.join(" "));
        let apt = |args: &[&str]| -> anyhow::Result<()> {
            let st = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .context("cannot run apt-get")?;
            if !st.success() {
                bail!("apt-get {} failed ({st})", args.join(" "));
            }
            Ok(())
        };
        apt(&["update", "-qq"])?;
        if packages.contains(&"postfix") {
            // No questions, and no mail system set up: the tests start
            // their own smtp-sink, the Postfix tests their own instance.
            let mut child = Command::new("debconf-set-selections")
                .stdin(Stdio::piped())
                .spawn()
                .context("cannot run debconf-set-selections")?;
            use std::io::Write;
            child
                .stdin
                .take()
                .context("debconf-set-selections' stdin")?
                .write_all(b"postfix postfix/main_mailer_type select No configuration\n")?;
            child.wait()?;
        }
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&packages);
        apt(&args)?;
        let still: Vec<&str> = missing
            .iter()
            .filter(|n| find(n.program).is_none())
            .map(|n| n.program)
            .collect();
        if !still.is_empty() {
            bail!("still missing after apt-get install: {}", still.join(" "));
        }
        return Ok(());
    }
    let how = format!(
        "{}apt-get install --no-install-recommends {}",
        if is_root { "" } else { "sudo " },
        packages.join(" ")
    );
    if missing.iter().any(|n| n.always) {
        bail!(
            "the tests cannot pass without {}; install with: {how}",
            missing
                .iter()
                .filter(|n| n.always)
                .map(|n| n.program)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!("xtask test: the tests that need these will not run; install with: {how}");
    Ok(())
}

/// The ignored tests of `tests/e2e/*.rs`, as (`module::name`, reason
/// prefix): a `#[ignore = "needs …: …"]` line, then the test's `fn`.
fn ignored_tests(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("a test file name")?
            .to_string();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut reason: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(r) = line.strip_prefix("#[ignore = \"") {
                let why = r.split(':').next().unwrap_or(r).to_string();
                if why != ROOT && why != STRACE {
                    bail!(
                        "{}: an #[ignore] whose reason is neither {ROOT:?} nor {STRACE:?}: {line}",
                        path.display()
                    );
                }
                reason = Some(why);
            } else if let Some(why) = &reason
                && let Some(rest) = line.strip_prefix("fn ")
            {
                let name = rest.split('(').next().unwrap_or(rest);
                out.push((format!("{module}::{name}"), why.clone()));
                reason = None;
            }
        }
    }
    Ok(out)
}

/// `cargo ARGS` in the workspace, failing on a failed status.
fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    println!("xtask test: cargo {}", args.join(" "));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .status()
        .context("cannot run cargo")?;
    if !st.success() {
        bail!("cargo {} failed ({st})", args.join(" "));
    }
    Ok(())
}

/// `cargo ARGS` (a `cargo test`), its standard output passed through; the
/// names of the tests that passed.
fn cargo_test(root: &Path, args: &[String]) -> anyhow::Result<BTreeSet<String>> {
    println!("xtask test: cargo {}", args.join(" "));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let mut passed = BTreeSet::new();
    let stdout = child.stdout.take().context("cargo's stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo's output")?;
        println!("{line}");
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... ok"))
        {
            passed.insert(name.to_string());
        }
    }
    let st = child.wait().context("cannot wait for cargo")?;
    if !st.success() {
        bail!("cargo {} failed ({st})", args.join(" "));
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ignored test of tests/e2e says why in a way this command reads
    /// (`ignored_tests` fails on any other reason), and both kinds are found.
    #[test]
    fn the_ignored_tests_are_found_with_their_reasons() {
        let found = ignored_tests(&crate::project_root().join("tests").join("e2e"))
            .expect("tests/e2e reads");
        let n = |why: &str| found.iter().filter(|(_, w)| w == why).count();
        assert!(n(ROOT) > 0 && n(STRACE) > 0, "{found:?}");
        assert!(
            found
                .iter()
                .any(|(t, _)| t == "hostile::injected_eio_in_mm_runq_leaves_the_entry_recoverable_and_every_recipient_gets_it"),
            "{found:?}"
        );
    }
}
