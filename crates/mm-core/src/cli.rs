//! The command-line plumbing every tool shares: one `main` body, the common
//! arguments, and the mapping from errors to exit codes.
//!
//! `main` is ripgrep's shape, written once: parse (`--help`/`--version` to
//! stdout, exit 0; a usage error is one line and exit 64, not clap's 2), run,
//! and on error print exactly one line, `mm-TOOL: what: why`, and exit with
//! the sysexits code of the first [`Error`] in the chain (70 if there is none:
//! that would be a bug). A broken pipe (`mm-showq | head`) is success. A tool
//! may map its failure statuses ([`run_main_mapped`]: mm-enqueue exits 75 for
//! everything but bad data, usage errors included).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::{Error, exit};
use crate::slice::Slice;
use crate::spool::Spool;

/// `--spool DIR`, shared by every tool.
#[derive(Clone, Debug, clap::Args)]
pub struct SpoolArgs {
    /// The spool directory.
    #[arg(long, value_name = "DIR", env = "MM_SPOOL", default_value = crate::spool::DEFAULT_ROOT)]
    pub spool: PathBuf,
}

impl SpoolArgs {
    /// Opens the spool.
    pub fn open(&self) -> crate::Result<Spool> {
        Spool::open(&self.spool)
    }
}

/// The selection flags shared by mm-showq, mm-recover and mm-unbad (see select.rs).
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Selection (flags combine with AND)")]
pub struct SelectArgs {
    /// Envelope sender contains TEXT (case-insensitive; <> for the null sender).
    #[arg(long, value_name = "TEXT")]
    pub sender: Option<String>,
    /// A recipient contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub rcpt: Option<String>,
    /// A recipient is at DOMAIN or a subdomain of it.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// The entry belongs to mailing list NAME.
    #[arg(long = "list", value_name = "NAME")]
    pub list: Option<String>,
    /// Enqueued longer ago than DUR (e.g. 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Enqueued less than DUR ago.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub younger_than: Option<std::time::Duration>,
    /// In state STATE (repeatable): queued, deferred, claimed, preserved, held, writing.
    #[arg(long = "state", value_name = "STATE", value_parser = words::<crate::report::ShownState, 6>(crate::report::ShownState::ALL.map(|s| s.as_str())))]
    pub states: Vec<crate::report::ShownState>,
    /// The last error, quarantine reason or a recipient's last reply contains TEXT.
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// Only slice K of N (numbered from 1).
    #[arg(long, value_name = "K/N", value_parser = parse_slice)]
    pub slice: Option<Slice>,
}

impl SelectArgs {
    /// The selector.
    pub fn selector(&self) -> crate::select::Selector {
        crate::select::Selector {
            sender: self.sender.clone(),
            rcpt: self.rcpt.clone(),
            domain: self.domain.clone(),
            list: self.list.clone(),
            older_than: self.older_than,
            younger_than: self.younger_than,
            states: self.states.clone(),
            error: self.error.clone(),
            slice: self.slice,
        }
    }
}

/// A clap parser of one of `words` into the type they name (the possible
/// values listed in `--help` as with a plain list of strings).
pub fn words<T, const N: usize>(
    words: [&'static str; N],
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Debug,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(words)
        .map(|w: String| w.parse::<T>().expect("a possible value parses"))
}

/// One example of a tool: what it does (one sentence; `` `code` `` and
/// `*name*` marks, which the man page sets in bold and italics), then the
/// command lines, verbatim. Kept once, next to each tool's `Cli`, for its
/// `--help` ([`after_help`]) and its man page's EXAMPLES (`cargo xtask man`).
#[derive(Clone, Copy, Debug)]
pub struct Example {
    /// One sentence.
    pub what: &'static str,
    /// The lines, without marks.
    pub lines: &'static [&'static str],
}

/// What 64 means, the same for every tool ([`run_main`]).
pub const USAGE_STATUS: &str = "A usage error: an unknown option, a missing or malformed value \
    (clap's own status, 2, is never used).";

/// What 70 means, the same for every tool.
pub const SOFTWARE_STATUS: &str = "An internal error: a bug. Please report it with the message.";

/// A tool's `--help` epilogue: its examples, its exit statuses (the same
/// words as its man page, without the marks), then `notes`.
pub fn after_help(examples: &[Example], exit: &[(u8, &str)], notes: &str) -> String {
    let plain = |t: &str| t.replace(['`', '*'], "");
    let mut s = String::from("Examples:\n");
    for ex in examples {
        s.push_str(&wrap(&plain(ex.what), "  ", "  "));
        for line in ex.lines {
            s.push_str("    ");
            s.push_str(line);
            s.push('\n');
        }
    }
    s.push_str("\nExit status:\n");
    for (code, meaning) in exit {
        s.push_str(&wrap(&plain(meaning), &format!("  {code:<4}"), "      "));
    }
    if !notes.is_empty() {
        s.push('\n');
        s.push_str(notes);
    }
    s.trim_end().to_string()
}

/// `text` folded at 80 columns, the first line after `first`, the others
/// after `rest`; ends with a newline.
fn wrap(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > 80 {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// Parses `--slice K/N`.
pub fn parse_slice(s: &str) -> Result<Slice, String> {
    s.parse::<Slice>().map_err(|e| e.to_string())
}

/// `--give-up-after`'s default, the same in mm-runq (which gives up) and in
/// mm-showq and mm-dumpdb (which show when it will): the default
/// [`RetryPolicy`](crate::retry::RetryPolicy)'s.
pub const GIVE_UP_AFTER: &str = "5d";

/// Parses a humantime duration (`5m`, `4h`, `5days`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (want e.g. 30s, 5m, 4h, 5d)"))
}

/// Parses a size: bytes, or with a K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size {s:?}: want bytes or a number with K, M or G"))
}

/// The exit code for an error chain.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return e.kind().exit_code();
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            return crate::ErrorKind::of_io(e.kind()).exit_code();
        }
    }
    exit::SOFTWARE
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<Error>()
                .and_then(|e| e.io_error())
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The whole `main` of a tool: parse `C`, call `run`, map the outcome to an exit status.
pub fn run_main<C: clap::Parser>(name: &str, run: fn(C) -> anyhow::Result<u8>) -> ExitCode {
    main_body(name, run, |code| code)
}

/// [`run_main`] for a tool with its own exit statuses, given here once:
/// every failure's status (a usage error's 64 included, not `--help`'s or
/// `--version`'s 0) is passed through `map`, and so is a panic's (a bug:
/// 70, not Rust's 101). mm-enqueue turns all but bad data into 75, so that
/// an MTA defers rather than bounces.
pub fn run_main_mapped<C: clap::Parser>(
    name: &str,
    run: fn(C) -> anyhow::Result<u8>,
    map: fn(u8) -> u8,
) -> ExitCode {
    std::panic::catch_unwind(|| main_body(name, run, map))
        .unwrap_or_else(|_| ExitCode::from(map(exit::SOFTWARE)))
}

/// The parsed command line of this process, kept by the shared main for
/// what the derived `Cli` does not carry (the positions of values: see
/// [`matches`]).
static MATCHES: std::sync::OnceLock<clap::ArgMatches> = std::sync::OnceLock::new();

/// The command line as clap parsed it in the shared main, for a tool that
/// needs more than its `Cli` (mm-runq: the order of `--exec` and `--filter`,
/// from `indices_of`); `None` for a `Cli` built otherwise (a unit test).
pub fn matches() -> Option<&'static clap::ArgMatches> {
    MATCHES.get()
}

/// `C::try_parse`, keeping the matches for [`matches`].
fn parse<C: clap::Parser>() -> Result<C, clap::Error> {
    let matches = C::command().try_get_matches()?;
    let cli = C::from_arg_matches(&matches).map_err(|e| e.format(&mut C::command()))?;
    let _ = MATCHES.set(matches);
    Ok(cli)
}

fn main_body<C: clap::Parser>(
    name: &str,
    run: fn(C) -> anyhow::Result<u8>,
    map: fn(u8) -> u8,
) -> ExitCode {
    let cli = match parse::<C>() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(
                e.kind(),
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
                        map(exit::USAGE)
                    } else {
                        0
                    },
                );
            }
            // clap's message spans lines (the missing arguments come on the
            // next ones); keep everything before the usage, on one line.
            let text = e.to_string();
            let body: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            let joined = body.join(" ");
            let first = joined.strip_prefix("error: ").unwrap_or(&joined);
            say(&format!("{name}: {first} (see {name} --help)"));
            return ExitCode::from(map(exit::USAGE));
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("{name}: {}", one_line(&format!("{e:#}"))));
            ExitCode::from(map(exit_code(&e)))
        }
    }
}

/// Writes one line to standard error. Unlike `eprintln!` it never panics: a
/// closed or full stderr must not turn a "try again later" (75) into a crash
/// (101), which an MTA would take as a bounce.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

pub use crate::report::one_line;
/// Writes `value` as one JSON line. Encoded first, then written, so that a
/// closed pipe (`mm-showq --json | head -1`) is an `io::Error` of kind
/// `BrokenPipe` in the error chain, which [`run_main`] treats as success;
/// serde_json's own writer error hides it.
pub fn json_line<W: std::io::Write + ?Sized>(
    out: &mut W,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    let mut buf = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    buf.push(b'\n');
    out.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_give_up_default_is_the_runners() {
        assert_eq!(
            parse_duration(GIVE_UP_AFTER),
            Ok(crate::retry::RetryPolicy::default().give_up)
        );
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("ten").is_err());
    }

    #[test]
    fn help_text_is_folded_at_80_columns_under_its_tag() {
        let s = wrap(&"word ".repeat(30), "  75  ", "      ");
        assert!(s.lines().all(|l| l.chars().count() <= 80), "{s}");
        assert!(s.starts_with("  75  word") && s.lines().skip(1).all(|l| l.starts_with("      w")));
        let h = after_help(
            &[Example {
                what: "A `thing`:",
                lines: &["mm-x --y"],
            }],
            &[(0, "Done.")],
            "More.",
        );
        assert_eq!(
            h,
            "Examples:\n  A thing:\n    mm-x --y\n\nExit status:\n  0   Done.\n\nMore."
        );
    }

    #[test]
    fn errors_map_to_sysexits() {
        let e = anyhow::Error::new(Error::new(crate::ErrorKind::Temporary, "x")).context("enqueue");
        assert_eq!(exit_code(&e), 75);
        assert_eq!(exit_code(&anyhow::anyhow!("bug")), 70);
    }
}
