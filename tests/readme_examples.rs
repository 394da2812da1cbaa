//! Proves that every TOML example in README.md is a valid config fragment: known keys only,
//! values that validate. The only problems allowed are what an operator supplies and this
//! machine does not have: files to read (certificates, keys, CA bundles), the folder of a
//! store, and (for fragments that show only routes or a section) the listeners.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::SystemTime;

#[test]
fn every_toml_block_in_the_readme_validates_apart_from_missing_certificate_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(!blocks.is_empty(), "no ```toml blocks found");
    let path = root.join("README.md.toml");
    for block in &blocks {
        portcullis::config::parse_file_config(&path, block)
            .unwrap_or_else(|e| panic!("README example does not parse:\n{e}\n---\n{block}"));
        if let Err(errors) = portcullis::config::load_str(&path, block, SystemTime::now()) {
            for issue in &errors.0 {
                let operator_supplies = issue.message.contains("cannot read")
                    || issue.message.contains("does not exist")
                    || (issue.key == "listeners" && issue.message.contains("at least one"));
                assert!(
                    operator_supplies,
                    "README example problem: {issue}\n---\n{block}"
                );
            }
        }
    }
}
