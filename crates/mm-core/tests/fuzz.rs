//! Property-based fuzzing of everything that reads untrusted bytes: the entry
//! decoder (a file in a queue can hold anything), the id, file-name, slice and
//! queue-name parsers (what admins type and what a directory listing returns),
//! envelope addresses (what the Internet sends through the MTA), and the SMTP
//! wire form of a message.
//!
//! proptest runs each property on `MM_FUZZ_CASES` random inputs (default
//! 2,000, about ten seconds in a debug build; CI's run is bounded by that),
//! shrinks any failure to a minimal case and records its seed in proptest's
//! regressions file next to this crate (`proptest-regressions/`), which is to
//! be committed: a crash found once is replayed first on every later run, and
//! gets a plain regression test of its own here.
//!
//! Deeper runs: `MM_FUZZ_CASES=200000 cargo test --release -p mm-core --test fuzz`.

use mm_core::delivery::wire::to_smtp_data;
use mm_core::{Entry, EntryId, FileName, QueueName, Slice, address};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("MM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn valid_entry_bytes() -> Vec<u8> {
    let id = EntryId::from_parts(1_764_000_000_000_000, [0x5a; 20]);
    let mut e = Entry::new(
        &id,
        "s@example.org",
        &["a@example.org".into(), "b@example.net".into()],
        b"Subject: x\n\n.\nbody\n".to_vec(),
        "out",
    );
    e.meta.kv.insert("k".into(), "v".into());
    e.encode().unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_entry_decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Entry::decode(&bytes);
    }

    #[test]
    fn the_entry_decoder_survives_mutations_of_a_valid_entry(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = valid_entry_bytes();
        for (pos, val) in flips {
            let i = pos % bytes.len();
            bytes[i] = val;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(e) = Entry::decode(&bytes) {
            // What decodes re-encodes and decodes to the same thing.
            let again = Entry::decode(&e.encode().unwrap()).unwrap();
            prop_assert_eq!(again, e);
        }
    }

    #[test]
    fn ids_and_file_names_parse_only_what_they_print(s in "\\PC{0,80}", raw in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(id) = EntryId::parse(&s) {
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert!(!s.contains('/') && !s.contains(".."));
        }
        for name in [s.as_bytes(), &raw[..]] {
            if let Some(n) = FileName::parse(name) {
                let printed = n.to_string();
                prop_assert_eq!(printed.as_bytes(), name);
                prop_assert!(!name.contains(&b'/') && !name.contains(&0));
            }
        }
    }

    #[test]
    fn generated_ids_round_trip(micros in 0u64..9_999_999_999_999_999, hash in any::<[u8; 20]>(), due in proptest::option::of(0u64..999_999_999_999)) {
        let id = EntryId::from_parts(micros, hash);
        prop_assert_eq!(EntryId::parse(&id.to_string()).unwrap(), id);
        let n = FileName::deferred(id, due);
        prop_assert_eq!(FileName::parse(n.to_string().as_bytes()), Some(n));
    }

    #[test]
    fn queue_names_never_escape_the_spool(s in "\\PC{0,40}") {
        if let Ok(q) = QueueName::new(&s) {
            prop_assert!(!q.as_str().contains('/') && !q.as_str().starts_with('.') && !q.as_str().is_empty());
        }
    }

    #[test]
    fn any_parsed_slice_partitions_the_hash_space(k in 0u32..40, n in 0u32..40, prefix in any::<u64>()) {
        let text = format!("{k}/{n}");
        if let Ok(s) = text.parse::<Slice>() {
            let owners = (1..=s.n()).filter(|&j| Slice::new(j, s.n()).unwrap().contains(prefix)).count();
            prop_assert_eq!(owners, 1);
            prop_assert!(s.buckets().contains(&((prefix >> 56) as u8)) || !s.contains(prefix));
        } else {
            prop_assert!(k == 0 || n == 0 || k > n);
        }
    }

    #[test]
    fn accepted_addresses_cannot_inject_smtp(s in "\\PC{0,300}|[a-z<>@. \\r\\n\\x00\"]{0,40}") {
        for a in [address::recipient(&s), address::sender(&s)].into_iter().flatten() {
            prop_assert!(!a.bytes().any(|c| c < 0x20 || c == 0x7f), "control character in {:?}", a);
            prop_assert!(a.len() <= 254);
            prop_assert!(!a.contains('<') && !a.contains('>') || a.starts_with('"'), "{:?}", a);
        }
    }

    #[test]
    fn the_wire_form_has_only_crlf_line_ends_and_keeps_every_line(msg in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'.'), Just(0u8), any::<u8>()], 0..600)) {
        let out = to_smtp_data(&msg);
        for (i, &c) in out.iter().enumerate() {
            if c == b'\n' {
                prop_assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {}", i);
            }
            if c == b'\r' {
                prop_assert!(out.get(i + 1) == Some(&b'\n'), "bare CR at {}", i);
            }
        }
        // Undo CRLF: the lines (and their bytes) are the input's, line ends aside.
        let norm = |b: &[u8]| -> Vec<Vec<u8>> {
            let t: Vec<u8> = b.to_vec();
            let t = String::from_utf8_lossy(&t).replace("\r\n", "\n").replace('\r', "\n");
            let mut lines: Vec<Vec<u8>> = t.split('\n').map(|l| l.as_bytes().to_vec()).collect();
            while lines.last().is_some_and(|l| l.is_empty()) {
                lines.pop();
            }
            lines
        };
        prop_assert_eq!(norm(&out), norm(&msg));
    }
}

/// The committed corpus (`tests/corpus/`): hostile entry files found or
/// crafted once, replayed on every run. `ok-*` must decode (and keep what
/// they carry through a rewrite), `err-*` must be refused with an error,
/// never a panic, an abort or an allocation of what the bytes merely claim.
#[test]
fn the_corpus_decodes_or_is_refused_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seen = 0;
    for f in std::fs::read_dir(&dir).expect("tests/corpus") {
        let path = f.expect("corpus entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).expect("read corpus file");
        let decoded = Entry::decode(&bytes);
        if name.starts_with("ok-") {
            let e = decoded.unwrap_or_else(|err| panic!("{name}: {err}"));
            let again = Entry::decode(&e.encode().expect("encode")).expect("decode the rewrite");
            assert_eq!(again, e, "{name}: a rewrite changed it");
        } else {
            assert!(name.starts_with("err-"), "{name}: name it ok-* or err-*");
            assert!(decoded.is_err(), "{name}: decoded, should be refused");
        }
        seen += 1;
    }
    assert!(seen >= 10, "the corpus is missing files ({seen})");
}

#[test]
fn an_unknown_field_from_a_newer_writer_survives_a_rewrite() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/ok-unknown-field.pck");
    let e = Entry::decode(&std::fs::read(path).unwrap()).unwrap();
    let out = e.encode().unwrap();
    let needle = b"\xa9from-2030\x92\x01\xa3new";
    assert!(
        out.windows(needle.len()).any(|w| w == needle),
        "the unknown field was dropped"
    );
}
