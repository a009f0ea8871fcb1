//! The selection language shared by mm-showq, mm-recover and mm-unbad, and
//! mm-showq's `--by` shape of a queue.

use std::collections::BTreeSet;

use mm_core::entry::Quarantine;
use mm_core::{Entry, EntryId, FileName};
use mm_e2e::{TestSpool, Tool};

const NOW: u64 = 1_764_010_000;

/// An entry enqueued `age` seconds before NOW, with a distinct hash.
fn entry(n: u8, age: u64, sender: &str, rcpts: &[&str], list: Option<&str>) -> (FileName, Entry) {
    let id = EntryId::from_parts(
        (NOW - age) * 1_000_000 + u64::from(n),
        [n.wrapping_mul(37); 20],
    );
    let rcpts: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
    let mut e = Entry::new(
        &id,
        sender,
        &rcpts,
        format!("Subject: {n}\n\nbody\n").into_bytes(),
        "out",
    );
    e.meta.list = list.map(str::to_string);
    (FileName::queued(id), e)
}

/// A spool with five entries in out/ and two quarantined in bad/.
fn spool() -> (TestSpool, Vec<String>) {
    let s = TestSpool::new();
    let mut ids = Vec::new();
    let mut put = |q: &str, (name, e): (FileName, Entry)| {
        ids.push(name.id.to_string());
        s.put(q, &name, &e);
    };
    put(
        "out",
        entry(1, 60, "owner@example.org", &["a@example.net"], Some("dev")),
    );
    put(
        "out",
        entry(
            2,
            7200,
            "owner@example.org",
            &["b@lists.example.net", "c@example.com"],
            None,
        ),
    );
    let (n, mut e) = entry(3, 30, "", &["d@example.com"], None);
    e.recipients[0].last_reply = Some("450 4.2.1 Mailbox busy".into());
    e.meta.last_error = Some("d@example.com: 450 4.2.1 Mailbox busy".into());
    e.meta.attempts = 1;
    put("out", (FileName::deferred(n.id, Some(NOW + 300)), e));
    let (n, mut e) = entry(
        4,
        90_000,
        "news@example.org",
        &["e@example.net"],
        Some("news"),
    );
    e.recipients[0].last_reply = Some("451 4.7.1 greylisted".into());
    e.meta.last_error = Some("e@example.net: 451 4.7.1 greylisted".into());
    put("out", (FileName::deferred(n.id, Some(NOW + 600)), e));
    put(
        "out",
        entry(5, 10, "owner@example.org", &["f@example.net"], Some("dev")),
    );
    for (n, reason) in [
        (6u8, "crashed its runner 4 times"),
        (7, "stage 1 (exec \"spamc\") failed with exit 3: spam"),
    ] {
        let (name, mut e) = entry(n, 3600, "owner@example.org", &["g@example.org"], None);
        e.meta.quarantine = Some(Quarantine {
            reason: reason.into(),
            at: NOW - 100,
            from_queue: "out".into(),
            extra: Default::default(),
        });
        put("bad", (FileName::preserved(name.id), e));
    }
    (s, ids)
}

fn listed(s: &TestSpool, args: &[&str]) -> BTreeSet<String> {
    let out = Tool::new("mm-showq")
        .spool(s)
        .now(NOW)
        .arg("--json")
        .args(args)
        .run();
    out.assert_code(0);
    out.json_lines()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[String], which: &[usize]) -> BTreeSet<String> {
    which.iter().map(|&i| ids[i - 1].clone()).collect()
}

#[test]
fn each_selection_flag_chooses_what_its_name_says_and_flags_combine_with_and() {
    let (s, ids) = spool();
    assert_eq!(listed(&s, &["out"]), set(&ids, &[1, 2, 3, 4, 5]));
    assert_eq!(
        listed(&s, &["--sender", "OWNER@", "out"]),
        set(&ids, &[1, 2, 5])
    );
    assert_eq!(listed(&s, &["--sender", "<>", "out"]), set(&ids, &[3]));
    assert_eq!(
        listed(&s, &["--domain", "example.net", "out"]),
        set(&ids, &[1, 2, 4, 5]),
        "subdomains count"
    );
    assert_eq!(
        listed(&s, &["--domain", "lists.example.net", "out"]),
        set(&ids, &[2])
    );
    assert_eq!(listed(&s, &["--rcpt", "c@example", "out"]), set(&ids, &[2]));
    assert_eq!(listed(&s, &["--list", "dev", "out"]), set(&ids, &[1, 5]));
    assert_eq!(
        listed(&s, &["--state", "deferred", "out"]),
        set(&ids, &[3, 4])
    );
    assert_eq!(
        listed(&s, &["--older-than", "1h", "out"]),
        set(&ids, &[2, 4])
    );
    assert_eq!(
        listed(&s, &["--younger-than", "1m", "out"]),
        set(&ids, &[3, 5])
    );
    assert_eq!(listed(&s, &["--error", "greylist", "out"]), set(&ids, &[4]));
    assert_eq!(listed(&s, &["--error", "crashed", "bad"]), set(&ids, &[6]));
    assert_eq!(
        listed(&s, &["--list", "dev", "--younger-than", "30s", "out"]),
        set(&ids, &[5]),
        "AND"
    );
    // The summary counts only what is selected.
    let out = Tool::new("mm-showq")
        .spool(&s)
        .now(NOW)
        .args(["--json", "--domain", "example.com"])
        .run();
    let rows = out.json_lines();
    let outq = rows.iter().find(|r| r["queue"] == "out").unwrap();
    assert_eq!(
        (outq["queued"].as_u64(), outq["deferred"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn by_domain_error_and_age_show_the_shape_of_a_queue() {
    let (s, _) = spool();
    let rows = |by: &str| {
        let out = Tool::new("mm-showq")
            .spool(&s)
            .now(NOW)
            .args(["--json", "--by", by, "out"])
            .run();
        out.assert_code(0);
        out.json_lines()
            .iter()
            .map(|v| {
                (
                    v["key"].as_str().unwrap().to_string(),
                    v["entries"].as_u64().unwrap(),
                    v["recipients"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let d = rows("domain");
    assert_eq!(d[0], ("example.net".to_string(), 3, 3), "{d:?}");
    assert!(d.contains(&("example.com".into(), 2, 2)), "{d:?}");
    assert!(d.contains(&("lists.example.net".into(), 1, 1)), "{d:?}");
    let e = rows("error");
    assert!(
        e.contains(&("450 4.2.1 Mailbox busy".into(), 1, 1)),
        "the recipient is not part of the key: {e:?}"
    );
    assert!(e.contains(&("451 4.7.1 greylisted".into(), 1, 1)), "{e:?}");
    assert!(e.contains(&("(none)".into(), 3, 4)), "{e:?}");
    let a = rows("age");
    let keys: Vec<&str> = a.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(keys, ["< 5m", "< 160m", ">= 1280m"], "{a:?}");
    // Human output has a header and one line per key.
    let out = Tool::new("mm-showq")
        .spool(&s)
        .now(NOW)
        .args(["--by", "domain", "out"])
        .run();
    let text = out.stdout_str();
    assert!(text.starts_with(" ENTRIES    PENDING  DOMAIN\n"), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn mm_unbad_releases_only_the_selected_quarantined_entries() {
    let (s, ids) = spool();
    let out = Tool::new("mm-unbad")
        .spool(&s)
        .now(NOW)
        .args(["--all", "--error", "spam", "--dry-run"])
        .run();
    out.assert_code(0);
    assert_eq!(out.stdout_str().lines().count(), 1, "{}", out.stdout_str());
    assert!(
        out.stdout_str()
            .starts_with(&format!("released {} out", ids[6])),
        "{}",
        out.stdout_str()
    );
    let out = Tool::new("mm-unbad")
        .spool(&s)
        .now(NOW)
        .args(["--all", "--error", "spam"])
        .run();
    out.assert_code(0);
    assert_eq!(
        listed(&s, &["bad"]),
        set(&ids, &[6]),
        "the other stays quarantined"
    );
    assert!(listed(&s, &["out"]).contains(&ids[6]));
}
