//! The shape of queues (`mm-showq --by`), after Postfix's qshape: entries
//! grouped by recipient domain, by error, or by age.
//!
//! Read-only, like everything in `report`: entries are opened read-only, and
//! one that moves while being counted is skipped.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::entry::{Entry, RcptState};
use crate::error::Result;
use crate::report::{self, one_line};
use crate::scan::Item;
use crate::select::Selector;
use crate::spool::Queue;

/// What the rows of a shape are keyed by; written in JSON as `domain`,
/// `error`, `age`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeBy {
    /// The domain of each pending recipient.
    Domain,
    /// The entry's deferral or quarantine reason.
    Error,
    /// The entry's age, in Postfix's buckets.
    Age,
}

impl ShapeBy {
    /// Every key, in the order `--by` lists them.
    pub const ALL: [ShapeBy; 3] = [ShapeBy::Domain, ShapeBy::Error, ShapeBy::Age];

    /// The word that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShapeBy::Domain => "domain",
            ShapeBy::Error => "error",
            ShapeBy::Age => "age",
        }
    }
}

impl std::str::FromStr for ShapeBy {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<ShapeBy> {
        ShapeBy::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| crate::Error::new(crate::ErrorKind::Usage, format!("no shape {s:?}")))
    }
}

/// One row of `--by`: a key and how many entries (and recipients) fall under it.
#[derive(Debug, Serialize)]
pub struct ShapeRow {
    /// Schema version.
    pub schema: u32,
    /// What the rows are keyed by.
    pub by: ShapeBy,
    /// The domain, the error, or the age bucket.
    pub key: String,
    /// Entries.
    pub entries: u64,
    /// Recipients (pending ones, for domain).
    pub recipients: u64,
    /// Only with `--age`: the entries of each age bucket ([`AGE_COLUMNS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries_by_age: Option<[u64; AGE_COLUMNS.len()]>,
    /// Only with `--age`: the pending recipients of each age bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients_by_age: Option<[u64; AGE_COLUMNS.len()]>,
}

/// Age buckets, in minutes, as Postfix's qshape draws them.
const AGE_BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

impl ShapeRow {
    /// What qshape's table counts of this row, in all and per age bucket:
    /// pending recipients by domain (qshape's count), entries by error.
    pub fn counted(&self, by: ShapeBy) -> (u64, [u64; AGE_COLUMNS.len()]) {
        match by {
            ShapeBy::Domain => (self.recipients, self.recipients_by_age.unwrap_or_default()),
            _ => (self.entries, self.entries_by_age.unwrap_or_default()),
        }
    }
}

/// The columns of the age buckets, as qshape heads them: younger than 5
/// minutes, 5 to 10, … 640 to 1280, older.
pub const AGE_COLUMNS: [&str; 10] = [
    "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+",
];

/// The age bucket (an index into [`AGE_COLUMNS`]) of an entry `minutes` old.
fn age_bucket(minutes: u64) -> usize {
    AGE_BUCKETS
        .iter()
        .position(|&b| minutes < b)
        .unwrap_or(AGE_BUCKETS.len())
}

fn age_key(minutes: u64) -> String {
    match AGE_BUCKETS.get(age_bucket(minutes)) {
        Some(b) => format!("< {b}m"),
        None => format!(">= {}m", AGE_BUCKETS[AGE_BUCKETS.len() - 1]),
    }
}

/// The key an error is grouped under: the reply without the recipient it was
/// about, so "a@x: 450 4.2.1 busy" and "b@y: 450 4.2.1 busy" count together.
/// Whole, on one line: the part that tells two causes apart is often at the
/// end of a long reply (the key is the last column of the text form).
fn error_key(e: &Entry) -> String {
    let Some(r) = e.reason() else {
        return "(none)".into();
    };
    let r = match r.split_once(": ") {
        Some((who, rest)) if who.contains('@') && !who.contains(' ') => rest,
        _ => r,
    };
    one_line(r)
}

/// The shape of `queues` by `by`: one row per key, the most entries first
/// (for age: youngest bucket first). Only the age shape of name-only
/// selections works from file names alone. With `ages` (qshape's table,
/// `--by domain --age`), each row also counts per age bucket, and the rows
/// come the most recipients first; `--by age` has no such crossing.
pub fn shape(
    queues: &[Queue],
    sel: &Selector,
    by: ShapeBy,
    ages: bool,
    now: u64,
) -> Result<Vec<ShapeRow>> {
    if ages && by == ShapeBy::Age {
        return Err(crate::Error::new(
            crate::ErrorKind::Usage,
            "--age crosses --by domain or --by error with the age buckets; --by age is them",
        ));
    }
    let mut rows: BTreeMap<String, ShapeRow> = BTreeMap::new();
    let mut add = |key: String, rcpts: u64, bucket: usize| {
        let r = rows.entry(key.clone()).or_insert_with(|| ShapeRow {
            schema: report::SCHEMA,
            by,
            key,
            entries: 0,
            recipients: 0,
            entries_by_age: ages.then_some([0; AGE_COLUMNS.len()]),
            recipients_by_age: ages.then_some([0; AGE_COLUMNS.len()]),
        });
        r.entries += 1;
        r.recipients += rcpts;
        if let (Some(e), Some(n)) = (&mut r.entries_by_age, &mut r.recipients_by_age) {
            e[bucket] += 1;
            n[bucket] += rcpts;
        }
    };
    let minutes = |name: &crate::id::FileName| now.saturating_sub(name.id.secs()) / 60;
    for q in queues {
        if by == ShapeBy::Age && !sel.needs_content() {
            // Names alone: no entry is opened.
            q.scan(sel.slice(), &mut |item| {
                if let Item::Entry { name, .. } = item
                    && sel.matches_name(&name, now)
                {
                    let m = minutes(&name);
                    add(age_key(m), 0, age_bucket(m));
                }
            })?;
            continue;
        }
        for found in report::select_entries(q, sel, now)? {
            let bucket = age_bucket(minutes(&found.name));
            let Ok(e) = &found.entry else {
                add("(unreadable)".into(), 0, bucket);
                continue;
            };
            match by {
                ShapeBy::Domain => {
                    let mut per: BTreeMap<String, u64> = BTreeMap::new();
                    for r in e
                        .recipients
                        .iter()
                        .filter(|r| r.state == RcptState::Pending)
                    {
                        let d = r
                            .address
                            .rsplit_once('@')
                            .map(|(_, d)| d.to_ascii_lowercase())
                            .unwrap_or_else(|| "(local)".into());
                        *per.entry(d).or_default() += 1;
                    }
                    for (d, n) in per {
                        add(d, n, bucket);
                    }
                }
                ShapeBy::Error => add(error_key(e), e.pending().count() as u64, bucket),
                // The age shape counts entries only, with or without content flags.
                ShapeBy::Age => add(age_key(minutes(&found.name)), 0, bucket),
            }
        }
    }
    let mut v: Vec<ShapeRow> = rows.into_values().collect();
    if by == ShapeBy::Age {
        v.sort_by_key(|r| {
            AGE_BUCKETS
                .iter()
                .position(|b| r.key == format!("< {b}m"))
                .unwrap_or(AGE_BUCKETS.len())
        });
    } else if ages {
        // qshape's order: the most of what the table counts first.
        let count = |r: &ShapeRow| (r.counted(by).0, r.entries, r.recipients);
        v.sort_by(|a, b| count(b).cmp(&count(a)).then_with(|| a.key.cmp(&b.key)));
    } else {
        v.sort_by(|a, b| b.entries.cmp(&a.entries).then_with(|| a.key.cmp(&b.key)));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::EntryId;

    fn failed_with(reply: &str) -> Entry {
        let id = EntryId::from_parts(1_764_004_260_000_001, [7; 20]);
        let mut e = Entry::new(
            &id,
            "s@example.org",
            &["a@example.net".to_string()],
            b"Subject: x\n\nx\n".to_vec(),
            "out",
        );
        e.meta.last_error = Some(reply.into());
        e
    }

    #[test]
    fn age_buckets_are_qshapes_each_bound_excluded() {
        let cols: Vec<&str> = [0, 4, 5, 9, 10, 639, 640, 1279, 1280, 100_000]
            .map(|m| AGE_COLUMNS[age_bucket(m)])
            .to_vec();
        assert_eq!(
            cols,
            [
                "5", "5", "10", "10", "20", "640", "1280", "1280", "1280+", "1280+"
            ]
        );
        assert_eq!(age_key(1280), ">= 1280m");
        assert_eq!(age_key(4), "< 5m");
    }

    #[test]
    fn a_long_reply_is_grouped_whole_so_causes_that_differ_at_the_end_stay_apart() {
        let head = "a@example.net: 550 5.7.1 Service unavailable; client host [192.0.2.1] \
                    blocked using";
        let spamhaus = error_key(&failed_with(&format!("{head} zen.spamhaus.org")));
        let barracuda = error_key(&failed_with(&format!("{head} b.barracudacentral.org")));
        assert!(spamhaus.ends_with("zen.spamhaus.org"), "{spamhaus}");
        assert!(barracuda.ends_with("b.barracudacentral.org"), "{barracuda}");
        assert_ne!(spamhaus, barracuda);
        assert!(
            spamhaus.starts_with("550 5.7.1 "),
            "the recipient is not part of the key"
        );
    }
}
