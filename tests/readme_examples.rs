//! Proves that every TOML example in README.md is a valid config fragment: known keys only,
//! values that validate; the only problems allowed are the certificate files an operator
//! supplies, which do not exist here.

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
                assert!(
                    issue.message.contains("cannot read")
                        && (issue.key.contains("certificates") || issue.key.ends_with("client_ca")),
                    "README example problem: {issue}\n---\n{block}"
                );
            }
        }
    }
}
