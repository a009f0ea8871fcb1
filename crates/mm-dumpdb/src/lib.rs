//! `mm-dumpdb`: one entry whole, its message and its metadata.
//!
//! An entry is named by its id (looked up in every queue and state, `.tmp`
//! included) or by a path. The file is only ever read: never renamed,
//! locked or written. A corrupt file is an error naming the file (exit 65).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use mm_core::cli::SpoolArgs;
use mm_core::report::{self, EntryView};
use mm_core::{Entry, EntryId, Error, ErrorKind, FileName, clock};

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "An entry by its id, wherever it is:",
        lines: &["mm-dumpdb 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089"],
    },
    mm_core::cli::Example {
        what: "A file, for instance one in `bad`:",
        lines: &[
            "mm-dumpdb /var/spool/mm/bad/e4/\\",
            "1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089.psv",
        ],
    },
    mm_core::cli::Example {
        what: "The exact message bytes, to another tool:",
        lines: &["mm-dumpdb --raw ID | formail -X Subject:"],
    },
    mm_core::cli::Example {
        what: "The recipients and their outcomes, as JSON:",
        lines: &["mm-dumpdb --json ID | jq .recipients"],
    },
    mm_core::cli::Example {
        what: "Every entry of `out` that waits for a retry:",
        lines: &[
            "mm-showq --json out | jq -r 'select(.state==\"deferred\") | .id' |",
            "    xargs mm-dumpdb",
        ],
    },
];

/// Exit statuses and what each means for this tool, in `--help` and in the
/// man page.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "Shown."),
    (64, mm_core::cli::USAGE_STATUS),
    (
        65,
        "The file is corrupt, is a symbolic link, or is not a regular file.",
    ),
    (66, "No entry has this id, or no file has this path."),
    (70, mm_core::cli::SOFTWARE_STATUS),
    (75, "The spool is missing (not mounted), or a read failed."),
    (77, "Permission denied."),
    (78, "`--spool` is not a directory."),
];

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str = "";

/// Show one mm queue entry whole: its message and its metadata.
#[derive(Debug, Parser)]
#[command(name = "mm-dumpdb", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// Entry ids, or paths of entry files.
    #[arg(value_name = "ENTRY", required = true)]
    pub entries: Vec<String>,
    /// One JSON object per entry (schema in docs/json.md).
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Only the message, byte for byte as received.
    #[arg(long)]
    pub raw: bool,
    /// The runner's give-up period, for the give-up deadline shown
    /// (mm-runq's --give-up-after).
    #[arg(long, value_name = "DUR", default_value = mm_core::cli::GIVE_UP_AFTER, value_parser = mm_core::cli::parse_duration)]
    pub give_up_after: std::time::Duration,
}

/// Runs mm-dumpdb.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let now = clock::now_secs();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    for arg in &cli.entries {
        let (path, name, queue) = resolve(&cli, arg)?;
        let bytes = mm_core::fsx::read_entry_file(&path)?;
        let entry = Entry::decode(&bytes)
            .map_err(|e| Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if cli.raw {
            match &entry.original {
                Some(orig) if entry.message.is_empty() => out.write_all(orig)?,
                _ => out.write_all(&entry.message)?,
            }
            continue;
        }
        let spool = mm_core::Spool::open(&cli.spool.spool).ok();
        let v = match (&spool, &name) {
            (Some(s), Some(n)) => report::view(
                s,
                &queue,
                n,
                &path,
                bytes.len() as u64,
                Ok(&entry),
                now,
                cli.give_up_after,
                true,
            ),
            _ => {
                let fallback = mm_core::Spool::open(path.parent().unwrap_or(Path::new("/")))?;
                let n = name.clone().unwrap_or_else(|| {
                    FileName::queued(
                        EntryId::parse(&entry.id).unwrap_or(EntryId::from_parts(0, [0; 20])),
                    )
                });
                report::view(
                    &fallback,
                    &queue,
                    &n,
                    &path,
                    bytes.len() as u64,
                    Ok(&entry),
                    now,
                    cli.give_up_after,
                    true,
                )
            }
        };
        if cli.json {
            let mut obj = serde_json::to_value(&v)?;
            obj["message"] =
                serde_json::Value::String(String::from_utf8_lossy(&entry.message).into_owned());
            obj["message_size"] = serde_json::Value::from(entry.message.len());
            if let Some(orig) = &entry.original {
                obj["original_size"] = serde_json::Value::from(orig.len());
            }
            mm_core::cli::json_line(&mut out, &obj)?;
        } else {
            if !first {
                out.write_all(b"\n")?;
            }
            print_entry(&mut out, &v, &entry)?;
        }
        first = false;
    }
    out.flush()?;
    Ok(0)
}

/// Finds the file for an id or a path: (path, parsed name, queue name).
fn resolve(cli: &Cli, arg: &str) -> anyhow::Result<(PathBuf, Option<FileName>, String)> {
    if let Ok(id) = EntryId::parse(arg) {
        let spool = cli.spool.open()?;
        let found = report::locate(&spool, id)?;
        let Some((q, name, place)) = found.into_iter().next() else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no entry {id} in spool {}", spool.root().display()),
            )
            .into());
        };
        return Ok((q.found_path(&name, place), Some(name), q.name().to_string()));
    }
    let path = PathBuf::from(arg);
    if !path.exists() && !arg.contains('/') {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{arg:?} is neither an entry id nor a file"),
        )
        .into());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| FileName::parse(n.as_bytes()));
    let queue = mm_core::spool::queue_of_path(&path).map_or_else(|| "?".into(), |q| q.to_string());
    Ok((path, name, queue))
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

fn print_entry(out: &mut impl Write, v: &EntryView, e: &Entry) -> std::io::Result<()> {
    writeln!(out, "file:         {}", v.path)?;
    writeln!(out, "id:           {}", v.id)?;
    writeln!(out, "queue:        {}", v.queue)?;
    writeln!(out, "state:        {}", v.state)?;
    writeln!(out, "format:       {}", e.format)?;
    writeln!(out, "received:     {}", v.received)?;
    writeln!(out, "sender:       <{}>", e.sender)?;
    writeln!(out, "list:         {}", opt(&e.meta.list))?;
    writeln!(out, "first queue:  {}", e.meta.queue)?;
    writeln!(out, "attempts:     {}", e.meta.attempts)?;
    writeln!(out, "next attempt: {}", opt(&v.next_attempt))?;
    writeln!(out, "first try:    {}", opt(&v.first_attempt))?;
    writeln!(out, "gives up at:  {}", opt(&v.give_up_at))?;
    writeln!(out, "recoveries:   {}", e.meta.recoveries)?;
    writeln!(out, "stage:        {}", e.stage_in(&v.queue))?;
    writeln!(out, "last error:   {}", opt(&e.meta.last_error))?;
    if let Some(h) = &v.claim_holder {
        match (&h.host, h.pid) {
            (Some(host), Some(pid)) if h.alive => writeln!(
                out,
                "claimed by:   {host} pid {pid} ({}), since {}",
                opt(&h.what),
                opt(&h.since)
            )?,
            _ => writeln!(
                out,
                "claimed by:   runner {} (dead: {})",
                h.token,
                opt(&h.dead_because)
            )?,
        }
    }
    if let Some(q) = &v.quarantine {
        writeln!(
            out,
            "quarantined:  {} (at {}, from {})",
            q.reason, q.at, q.from_queue
        )?;
    }
    if let Some(h) = &v.hold {
        writeln!(out, "held:         by {} at {}: {}", h.by, h.at, h.reason)?;
    }
    if let Some(b) = &e.meta.bounce {
        writeln!(
            out,
            "bounce of:    {} in {}: {}",
            b.original_id, b.original_queue, b.reason
        )?;
    }
    for (k, val) in &e.meta.kv {
        writeln!(out, "meta:         {k}={val}")?;
    }
    writeln!(out, "recipients:   {}", e.recipients.len())?;
    for r in &e.recipients {
        let state = format!("{:?}", r.state).to_lowercase();
        writeln!(
            out,
            "  {:<9} {}  attempts {}  {}",
            state,
            r.address,
            r.attempts,
            opt(&r.last_reply)
        )?;
    }
    if !e.meta.history.is_empty() {
        writeln!(out, "history:")?;
        for h in &e.meta.history {
            writeln!(out, "  {} {}", clock::rfc3339(h.at), h.what)?;
        }
    }
    if let Some(orig) = &e.original {
        writeln!(
            out,
            "original:     {} bytes that could not be decoded (mm-dumpdb --raw prints them)",
            orig.len()
        )?;
    }
    writeln!(out, "message:      {} bytes", e.message.len())?;
    writeln!(out)?;
    // Control bytes would drive the terminal: show them as ^X (--raw has the bytes).
    let text: String = String::from_utf8_lossy(&e.message)
        .replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if (c as u32) < 0x20 => format!("^{}", char::from(b'@' + c as u8)),
            '\u{7f}' => "^?".to_string(),
            c => c.to_string(),
        })
        .collect();
    out.write_all(text.as_bytes())?;
    if !e.message.ends_with(b"\n") && !e.message.is_empty() {
        writeln!(out)?;
    }
    Ok(())
}
