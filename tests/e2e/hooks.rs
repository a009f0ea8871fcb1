//! The test hooks (`MM_TEST_NOW`, `MM_TEST_CLOCK_OFFSET`, `MM_TEST_CRASH_AT`)
//! exist only with mm-core's `test-hooks` feature. The tests crate turns it
//! on, so the workspace build the tests run has them; a build of the tools
//! alone (`cargo build --release -p mm-runq`, what a package or an install
//! ships) must not. This is checked on cargo's own feature resolution, which
//! costs no compilation; mm-core's unit test
//! `clock::tests::mm_test_now_works_only_with_the_feature` shows that
//! without the feature the variable is ignored.

use std::process::Command;

/// `cargo tree -e features` of `packages`, each selected with `-p`.
/// (Features do not depend on the profile: this is also the release build's.)
fn feature_tree(packages: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = mm_e2e::crate_dir()
        .parent()
        .expect("tests/ has a parent")
        .join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "tree",
        "--quiet",
        "--offline",
        "-e",
        "features",
        "--prefix",
        "none",
    ])
    .arg("--manifest-path")
    .arg(&manifest);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let out = cmd.output().expect("cannot run cargo tree");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_tools_built_alone_have_no_test_hooks_and_the_test_build_has_them() {
    for &tool in mm_e2e::TOOLS {
        let tree = feature_tree(&[tool]);
        assert!(
            tree.contains("mm-core"),
            "{tool}: cargo tree shows no mm-core:\n{tree}"
        );
        assert!(
            !tree.contains("test-hooks"),
            "{tool} built alone has the test hooks:\n{tree}"
        );
    }
    let all: Vec<&str> = mm_e2e::TOOLS.to_vec();
    assert!(
        !feature_tree(&all).contains("test-hooks"),
        "the tools built together have the test hooks"
    );
    // Not vacuous: with the tests crate in the build, mm-core has them.
    let tree = feature_tree(&["mm-e2e"]);
    assert!(
        tree.contains("mm-core feature \"test-hooks\""),
        "the tests' build lacks the test hooks:\n{tree}"
    );
}
