//! docs/json.md says what every `--json` output holds: each of its field
//! tables is checked against what the tools print on the fixture spool, both
//! ways (a field printed but not documented, or documented but never
//! printed, fails), so the document cannot drift from the code again (issue
//! 12, item 6: it disagreed in three places).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use mm_e2e::Tool;

use crate::fixture::{self, NOW};

/// docs/json.md's field tables: heading → (fields, fields that are "only in" some rows).
fn documented() -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let text = std::fs::read_to_string(mm_e2e::crate_dir().join("../docs/json.md")).unwrap();
    let mut tables: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let mut heading = String::new();
    let mut in_fields = false;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ").or(line.strip_prefix("### ")) {
            heading = h.to_string();
            in_fields = false;
        } else if line.starts_with("| field | type |") {
            in_fields = true;
        } else if !line.starts_with('|') {
            in_fields = false;
        } else if in_fields && !line.starts_with("|---") {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cols[1].trim_matches('`').to_string();
            let (all, optional) = tables.entry(heading.clone()).or_default();
            if cols[2].starts_with("only in") || cols[3].starts_with("only in") {
                optional.insert(name.clone());
            }
            all.insert(name);
        }
    }
    tables
}

/// The fields of the table under the heading that starts with `heading`.
fn table(
    doc: &BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    heading: &str,
) -> (BTreeSet<String>, BTreeSet<String>) {
    doc.iter()
        .find(|(h, _)| h.starts_with(heading))
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| panic!("docs/json.md has no field table under {heading:?}"))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// Every row printed has only documented keys, and every documented key
/// that is not "only in" some rows is in every row.
fn agree(what: &str, rows: &[Value], (all, optional): &(BTreeSet<String>, BTreeSet<String>)) {
    assert!(!rows.is_empty(), "{what}: no rows to compare");
    for row in rows {
        let got = keys(row);
        let undocumented: Vec<_> = got.difference(all).collect();
        let missing: Vec<_> = all
            .difference(&got)
            .filter(|k| !optional.contains(*k))
            .collect();
        assert!(
            undocumented.is_empty() && missing.is_empty(),
            "{what}: printed but not in docs/json.md: {undocumented:?}; \
             documented but not printed: {missing:?}\n{row}"
        );
    }
}

fn json_rows(f: &fixture::Fixture, tool: &str, args: &[&str]) -> Vec<Value> {
    let out = Tool::new(tool).spool(&f.spool).now(NOW).args(args).run();
    assert!(
        matches!(out.status.code(), Some(0 | 75)),
        "{tool} {args:?}: {out}"
    );
    out.json_lines()
}

#[test]
fn docs_json_md_lists_exactly_the_fields_the_tools_print() {
    let doc = documented();
    let f = fixture::build();

    let summary = json_rows(&f, "mm-showq", &["--json"]);
    agree(
        "mm-showq summary",
        &summary,
        &table(&doc, "mm-showq --json (no queue named)"),
    );

    let entries = json_rows(&f, "mm-showq", &["--json", "in", "out", "bad"]);
    // The entry row's own table, plus the objects documented in subsections
    // that only some rows have (`hold`: only in held entries).
    let (mut all, mut optional) = table(&doc, "mm-showq --json QUEUE");
    for (h, _) in doc.iter().filter(|(h, _)| h.contains("; only in")) {
        let key = h.split('`').nth(1).unwrap().to_string();
        all.insert(key.clone());
        optional.insert(key);
    }
    agree(
        "mm-showq entry rows",
        &entries,
        &(all.clone(), optional.clone()),
    );
    let objects = |key: &str| -> Vec<Value> {
        entries
            .iter()
            .filter_map(|r| r.get(key).filter(|v| v.is_object()).cloned())
            .collect()
    };
    agree(
        "claim_holder",
        &objects("claim_holder"),
        &table(&doc, "Holder"),
    );
    agree(
        "quarantine",
        &objects("quarantine"),
        &table(&doc, "Quarantine"),
    );

    let ids = [f.due, f.deferred].map(|id| id.to_string());
    let dumped = json_rows(&f, "mm-dumpdb", &["--json", &ids[0], &ids[1]]);
    let (own, own_optional) = table(&doc, "mm-dumpdb --json");
    let dump_fields = (
        all.union(&own).cloned().collect(),
        optional
            .union(&own_optional)
            .cloned()
            .chain(["error".to_string()])
            .collect(),
    );
    agree("mm-dumpdb", &dumped, &dump_fields);
    let rcpts: Vec<Value> = dumped
        .iter()
        .flat_map(|d| d["recipients"].as_array().unwrap().clone())
        .collect();
    agree("recipients[]", &rcpts, &table(&doc, "Recipient"));

    let shape = json_rows(&f, "mm-showq", &["--json", "--by", "error", "in"]);
    agree("mm-showq --by", &shape, &table(&doc, "mm-showq --by"));
    let qshape = json_rows(&f, "mm-showq", &["--json", "--by", "domain", "--age"]);
    let (all, _) = table(&doc, "mm-showq --by");
    agree("mm-showq --by --age", &qshape, &(all, BTreeSet::new()));

    let dests = json_rows(&f, "mm-showq", &["--json", "--destinations"]);
    agree(
        "mm-showq --destinations",
        &dests,
        &table(&doc, "mm-showq --destinations"),
    );

    let recover = json_rows(&f, "mm-recover", &["--json", "--dry-run"]);
    agree("mm-recover", &recover, &table(&doc, "mm-recover --json"));

    let unbad = json_rows(&f, "mm-unbad", &["--json", "--dry-run", "--all"]);
    agree("mm-unbad", &unbad, &table(&doc, "mm-unbad --json"));

    let flush = json_rows(
        &f,
        "mm-flush",
        &["--json", "--dry-run", "-q", "in", "--all"],
    );
    agree("mm-flush", &flush, &table(&doc, "mm-flush, mm-hold"));
}

/// `mm-showq --runners --json`: a runner whose stage hangs, with an entry in
/// its hands, and a dead record (a runner killed with SIGKILL).
#[test]
fn docs_json_md_lists_exactly_the_fields_of_showq_runners() {
    let doc = documented();
    let s = mm_e2e::TestSpool::new();
    for q in ["in", "out"] {
        Tool::new("mm-enqueue")
            .spool(&s)
            .args(["-q", q, "-f", "a@example.org", "b@example.org"])
            .stdin(&b"Subject: x\n\nx\n"[..])
            .run()
            .assert_ok();
    }
    let spawn = |q: &str| {
        Tool::new("mm-runq")
            .spool(&s)
            .args(["-q", q, "--exec", "sleep 1000", "--discard"])
            .args(["--stop-timeout", "1s"])
            .spawn()
    };
    let mut live = spawn("in");
    let mut dead = spawn("out");
    let mut rows = Vec::new();
    mm_e2e::poll_until(
        "both runners with an entry in hand",
        std::time::Duration::from_secs(30),
        || {
            let out = Tool::new("mm-showq")
                .spool(&s)
                .args(["--runners", "--json"])
                .run();
            rows = out.json_lines();
            rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r["in_hand"].as_array().is_some_and(|h| h.len() == 1))
        },
    );
    dead.kill();
    let out = Tool::new("mm-showq")
        .spool(&s)
        .args(["--runners", "--json"])
        .run();
    out.assert_ok();
    let rows = out.json_lines();
    assert!(
        rows.iter().any(|r| r["state"] == "dead") && rows.iter().any(|r| r["state"] == "alive"),
        "{rows:#?}"
    );
    agree(
        "mm-showq --runners",
        &rows,
        &table(&doc, "mm-showq --runners --json"),
    );
    let in_hand: Vec<Value> = rows
        .iter()
        .flat_map(|r| r["in_hand"].as_array().cloned().unwrap_or_default())
        .collect();
    agree("in_hand[]", &in_hand, &table(&doc, "InHand"));
    live.signal("TERM");
    live.wait_within(std::time::Duration::from_secs(20));
}
