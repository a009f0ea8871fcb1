//! `cargo xtask man [--check]`: the section-1 man pages in `man/`.
//!
//! Each page is two halves. clap_mangen renders the title, NAME, SYNOPSIS,
//! DESCRIPTION and OPTIONS from the tool's `Cli::command()`, the same
//! definition that drives `--help`, so options cannot drift from the page.
//! The rest is hand-written, one module per tool in `man/` (a [`Page`]) plus
//! the parts every tool shares in `man/common.rs`: more DESCRIPTION, then
//! EXAMPLES, EXIT STATUS, FILES, ENVIRONMENT, SECURITY and SEE ALSO (Postfix's
//! section list). EXAMPLES and EXIT STATUS are kept with each tool
//! (`mm_TOOL::EXAMPLES`, `mm_TOOL::EXIT_STATUS`), whose `--help` shows the
//! same words.
//!
//! The pages are generated files and are committed. `--check` renders them in
//! memory and fails, one line per stale or missing file, if any differs from
//! disk; the `#[test]` at the bottom runs that check, so `cargo test -p xtask`
//! fails on stale pages (rust-analyzer's codegen check, cargo's
//! `validate-man.sh`). Output is deterministic: no date in the title.

mod common;
mod delete;
mod dumpdb;
mod enqueue;
mod flush;
mod hold;
mod recover;
mod runq;
mod showq;
mod unbad;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

use crate::{TOOLS, Tool};

/// The hand-written part of one tool's page.
pub struct Page {
    /// Paragraphs added to DESCRIPTION after clap's one-line `about`.
    pub description: &'static [Block],
    /// The EXAMPLES section.
    pub examples: &'static [Example],
    /// Exit statuses this tool uses, with what each means for it.
    pub exit: &'static [(u8, &'static str)],
    /// What this tool does in the spool, before the shared layout list.
    pub files: &'static str,
    /// Environment variables this tool reads.
    pub environment: &'static [common::Env],
    /// This tool's part of the permission model, after the shared paragraphs.
    pub security: &'static str,
    /// SEE ALSO entries besides the other mm tools, as (name, section).
    pub see_also: &'static [(&'static str, &'static str)],
}

/// A piece of hand-written text.
///
/// Text uses two inline marks: `` `code` `` is set in bold and `*name*` in
/// italics. A blank line separates paragraphs.
pub enum Block {
    /// Paragraphs.
    Text(&'static str),
    /// A tagged paragraph (`.TP`): the tag, then the text.
    Item(&'static str, &'static str),
}

/// One example: what it does, then the command lines, shown verbatim (kept
/// with each tool, which shows them in `--help` too).
pub use mm_core::cli::Example;

/// The hand-written part of `tool`'s page.
fn page(tool: &str) -> &'static Page {
    match tool {
        "mm-enqueue" => &enqueue::PAGE,
        "mm-runq" => &runq::PAGE,
        "mm-showq" => &showq::PAGE,
        "mm-dumpdb" => &dumpdb::PAGE,
        "mm-recover" => &recover::PAGE,
        "mm-unbad" => &unbad::PAGE,
        "mm-flush" => &flush::PAGE,
        "mm-hold" => &hold::HOLD,
        "mm-release" => &hold::RELEASE,
        "mm-delete" => &delete::PAGE,
        other => panic!("no man page text for {other}: add xtask/src/man/<tool>.rs"),
    }
}

/// Writes every page that changed or, with `check`, only reports the stale ones.
pub fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    if check {
        let stale = stale_pages(root)?;
        if stale.is_empty() {
            println!("man pages are up to date");
            return Ok(());
        }
        for line in &stale {
            eprintln!("{line}");
        }
        anyhow::bail!("man pages are stale: run cargo xtask man and commit");
    }
    let dir = root.join("man");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for tool in TOOLS {
        let path = page_path(root, &tool);
        let new = render(&tool)?;
        if std::fs::read(&path).ok().as_deref() == Some(&new[..]) {
            continue;
        }
        std::fs::write(&path, &new).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", relative(root, &path));
    }
    Ok(())
}

/// Where `tool`'s page lives.
fn page_path(root: &Path, tool: &Tool) -> PathBuf {
    root.join("man").join(format!("{}.1", tool.name))
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// One line per page that differs from what would be rendered, is missing,
/// or is not generated at all (`man/*.1` of no tool).
pub fn stale_pages(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut stale = Vec::new();
    for tool in TOOLS {
        let path = page_path(root, &tool);
        let new = render(&tool)?;
        match std::fs::read(&path) {
            Ok(old) if old == new => {}
            Ok(_) => stale.push(format!("{} is stale", relative(root, &path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                stale.push(format!("{} is missing", relative(root, &path)))
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    let dir = root.join("man");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for de in rd.flatten() {
            let name = de.file_name().to_string_lossy().into_owned();
            let ours = TOOLS.iter().any(|t| name == format!("{}.1", t.name));
            if name.ends_with(".1") && !ours {
                stale.push(format!(
                    "man/{name} is not generated by any tool (remove it)"
                ));
            }
        }
    }
    Ok(stale)
}

/// roff's definition of `\*(Aq`, which every `Roff::to_writer` call writes
/// first: kept once, at the top of the page.
const APOSTROPHE_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// The whole page of `tool`.
pub fn render(tool: &Tool) -> anyhow::Result<Vec<u8>> {
    let cmd = (tool.command)();
    anyhow::ensure!(
        cmd.get_name() == tool.name,
        "{}'s Cli is named {:?}",
        tool.name,
        cmd.get_name()
    );
    let text = page(tool.name);
    let man = Man::new(cmd)
        .title(tool.name.to_uppercase())
        .manual("mm manual");

    // Each clap_mangen part is rendered on its own so the hand-written
    // sections can go between them, and then joined with one preamble.
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut part = Vec::new();
    man.render_title(&mut part)?;
    parts.push(std::mem::take(&mut part));
    man.render_name_section(&mut part)?;
    parts.push(std::mem::take(&mut part));
    let mut built = (tool.command)();
    built.build();
    synopsis(&built).to_writer(&mut part)?;
    parts.push(std::mem::take(&mut part));
    man.render_description_section(&mut part)?;
    parts.push(std::mem::take(&mut part));
    let mut description = Roff::new();
    blocks(&mut description, text.description);
    description.to_writer(&mut part)?;
    parts.push(std::mem::take(&mut part));
    man.render_options_section(&mut part)?;
    parts.push(std::mem::take(&mut part));
    hand_written(tool.name, text).to_writer(&mut part)?;
    parts.push(part);

    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let body = match p.strip_prefix(APOSTROPHE_PREAMBLE.as_bytes()) {
            Some(rest) if i > 0 => rest,
            _ => &p[..],
        };
        out.extend_from_slice(body);
    }
    Ok(ascii(&String::from_utf8(out)?).into_bytes())
}

/// SYNOPSIS, with each option's value name (`[-q|--queue QUEUE]`), which
/// clap_mangen's own leaves out.
fn synopsis(cmd: &clap::Command) -> Roff {
    let mut line: Vec<Inline> = vec![bold(cmd.get_name().to_string())];
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let values: Vec<String> = arg
            .get_value_names()
            .map(|v| v.iter().map(|n| n.to_string()).collect())
            .unwrap_or_else(|| vec![arg.get_id().as_str().to_uppercase()]);
        let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || matches!(arg.get_action(), clap::ArgAction::Append);
        let (open, close) = if arg.is_required_set() {
            ("", "")
        } else {
            ("[", "]")
        };
        line.push(roman(format!(" {open}")));
        if arg.is_positional() {
            line.push(italic(values.join(" ")));
        } else {
            let mut first = true;
            for flag in arg
                .get_short()
                .map(|c| format!("-{c}"))
                .into_iter()
                .chain(arg.get_long().map(|l| format!("--{l}")))
            {
                if !first {
                    line.push(roman("|"));
                }
                line.push(bold(flag));
                first = false;
            }
            if arg.get_action().takes_values() {
                line.push(roman(" "));
                line.push(italic(values.join(" ")));
            }
        }
        line.push(roman(close.to_string()));
        if many {
            line.push(roman("..."));
        }
    }
    let mut r = Roff::new();
    r.control("SH", ["SYNOPSIS"]);
    r.text(line);
    r
}

/// The page with every non-ASCII character (an ellipsis in a help text, say)
/// as a groff `\[uXXXX]` escape: troff reads bytes, and without *preconv*(1)
/// in front it rejects UTF-8 ("invalid input character").
fn ascii(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for c in page.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let _ = write!(out, "\\[u{:04X}]", u32::from(c));
        }
    }
    out
}

/// EXAMPLES to SEE ALSO.
fn hand_written(name: &str, page: &Page) -> Roff {
    let mut r = Roff::new();

    r.control("SH", ["EXAMPLES"]);
    for ex in page.examples {
        r.control("PP", []);
        r.text(inline(ex.what));
        r.control("PP", []);
        r.control("RS", ["4"]);
        r.control("nf", []);
        for line in ex.lines {
            r.text([roman(*line)]);
        }
        r.control("fi", []);
        r.control("RE", []);
    }

    r.control("SH", ["EXIT STATUS"]);
    r.text(inline(&format!(
        "Errors are reported as one line on standard error, `{name}: what: why`. \
         The exit status follows *sysexits*(3):"
    )));
    for (code, meaning) in page.exit {
        r.control("TP", []);
        let mut tag = vec![bold(code.to_string())];
        if let Some(sym) = common::sysexits_name(*code) {
            tag.push(roman(format!(" ({sym})")));
        }
        r.text(tag);
        r.text(inline(meaning));
    }

    r.control("SH", ["FILES"]);
    paragraphs(&mut r, page.files);
    blocks(&mut r, common::FILES);

    r.control("SH", ["ENVIRONMENT"]);
    for env in page.environment {
        r.control("TP", []);
        r.text([bold(env.name())]);
        r.text(inline(env.text()));
    }

    r.control("SH", ["SECURITY"]);
    blocks(&mut r, common::SECURITY);
    paragraphs(&mut r, page.security);

    r.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<(&str, &str)> = TOOLS
        .iter()
        .filter(|t| t.name != name)
        .map(|t| (t.name, "1"))
        .collect();
    refs.extend(page.see_also.iter().copied());
    for (i, (other, section)) in refs.iter().enumerate() {
        let sep = if i + 1 < refs.len() { ")," } else { ")" };
        r.control("BR", [*other, &format!("({section}{sep}")]);
    }
    r.control("PP", []);
    r.text(inline(
        "`docs/operations.md` in the mm sources: procedures for backlogs, stuck claims, \
         quarantine, cron and systemd, Postfix and Exim; `docs/on-disk-format.md`: the \
         spool layout and the entry format; `docs/json.md`: the `--json` schema.",
    ));
    r
}

fn blocks(r: &mut Roff, blocks: &[Block]) {
    for b in blocks {
        match b {
            Block::Text(t) => paragraphs(r, t),
            Block::Item(tag, t) => {
                r.control("TP", []);
                r.text(inline(tag));
                r.text(inline(t));
            }
        }
    }
}

/// `.PP` paragraphs from text with blank lines between them; a paragraph's
/// lines are joined, so the sources can wrap freely.
fn paragraphs(r: &mut Roff, text: &str) {
    for p in text.split("\n\n") {
        let joined = p.split_whitespace().collect::<Vec<_>>().join(" ");
        if joined.is_empty() {
            continue;
        }
        r.control("PP", []);
        r.text(inline(&joined));
    }
}

/// Text with `` `bold` `` and `*italic*` marks as roff inlines (escaping is roff's).
fn inline(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['`', '*']) {
        let mark = rest.as_bytes()[i] as char;
        let Some(len) = rest[i + 1..].find(mark) else {
            break;
        };
        if i > 0 {
            out.push(roman(&rest[..i]));
        }
        let inner = &rest[i + 1..i + 1 + len];
        out.push(if mark == '`' {
            bold(inner)
        } else {
            italic(inner)
        });
        rest = &rest[i + 2 + len..];
    }
    if !rest.is_empty() {
        out.push(roman(rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_man_pages_are_fresh() {
        let stale = stale_pages(&crate::project_root()).unwrap();
        assert!(
            stale.is_empty(),
            "{}\nrun cargo xtask man and commit",
            stale.join("\n")
        );
    }

    /// The options an example passes to an mm tool, per tool: after a word
    /// naming a tool (also `argv=/usr/bin/mm-enqueue`), up to a pipe, a `;`,
    /// another tool or `--`.
    fn options_in(line: &str) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        let mut current: Option<&'static str> = None;
        for word in line.split_whitespace() {
            let last = word.rsplit(['/', '=']).next().unwrap_or(word);
            if let Some(t) = TOOLS.iter().find(|t| t.name == last) {
                current = Some(t.name);
                continue;
            }
            if matches!(word, "|" | ";" | "&&" | "--") {
                current = None;
                continue;
            }
            if let Some(tool) = current
                && word.starts_with('-')
                && word.len() > 1
            {
                let opt = word.split('=').next().unwrap_or(word);
                found.push((tool, opt.to_string()));
            }
        }
        found
    }

    #[test]
    fn examples_use_only_options_the_tools_accept() {
        let mut wrong = Vec::new();
        for tool in TOOLS {
            for ex in page(tool.name).examples {
                // A line ending in a backslash goes on in the next, as in sh.
                let script = ex.lines.join("\n").replace("\\\n", "");
                for line in script.lines() {
                    for (name, opt) in options_in(line) {
                        let t = TOOLS.iter().find(|t| t.name == name).unwrap();
                        let cmd = (t.command)();
                        let known = cmd.get_arguments().any(|a| {
                            opt.strip_prefix("--")
                                .map(|l| a.get_long() == Some(l))
                                .unwrap_or_else(|| {
                                    opt.len() == 2 && a.get_short() == opt[1..].chars().next()
                                })
                        });
                        if !known && opt != "--help" && opt != "--version" {
                            wrong.push(format!("{}'s page: {name} has no {opt}", tool.name));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn non_ascii_becomes_a_groff_escape() {
        assert_eq!(
            ascii("smtp://\u{2026} caf\u{e9}"),
            "smtp://\\[u2026] caf\\[u00E9]"
        );
    }

    #[test]
    fn inline_marks() {
        assert_eq!(
            inline("a `b` c *d*"),
            vec![roman("a "), bold("b"), roman(" c "), italic("d")]
        );
        assert_eq!(inline("no `end"), vec![roman("no `end")]);
    }

    #[test]
    fn every_page_has_its_sections_and_one_preamble() {
        for tool in TOOLS {
            let page = String::from_utf8(render(&tool).unwrap()).unwrap();
            assert_eq!(page.matches(".ds Aq \\(aq").count(), 1, "{}", tool.name);
            for sh in [
                "NAME",
                "SYNOPSIS",
                "DESCRIPTION",
                "OPTIONS",
                "EXAMPLES",
                "\"EXIT STATUS\"",
                "FILES",
                "ENVIRONMENT",
                "SECURITY",
                "\"SEE ALSO\"",
            ] {
                assert!(
                    page.contains(&format!("\n.SH {sh}\n")),
                    "{}: no {sh}",
                    tool.name
                );
            }
        }
    }
}
