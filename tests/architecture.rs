//! Proves the house stays layered (`../shared/design.md`): every file in `src/` imports only
//! its own floor and the floors below. Reads the sources as text: each `crate::NAME` a file
//! names (in `use`, or inline) is looked up in the floor table below; an import up a floor
//! fails the test with the file and the import. Test code (`#[cfg(test)]` onwards, files in
//! a `tests/` folder) may reach anywhere.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The floors, by top-level module (a file `src/NAME.rs` or a folder `src/NAME/`).
const FLOORS: &[(&str, u8)] = &[
    // 0. vocabulary
    ("request_id", 0),
    ("clock", 0),
    ("report", 0),
    ("denial", 0),
    // 1. pure stages
    ("tls", 1),
    ("identity", 1),
    ("ip_filter", 1),
    ("routing", 1),
    ("license", 1),
    ("token", 1),
    ("limits", 1),
    ("framing", 1),
    ("trace_context", 1),
    // 2. stores
    ("state", 2),
    ("vault", 2),
    // 3. config
    ("config", 3),
    // 4. the request path
    ("generation", 4),
    ("context", 4),
    ("pipeline", 4),
    ("upstream", 4),
    ("issuer", 4),
    ("enrollment", 4),
    ("record", 4),
    ("usage", 4),
    ("metrics", 4),
    ("telemetry", 4),
    // 5. the server
    ("server", 5),
    // 6. entry points
    ("main", 6),
    ("cli", 6),
    ("demo", 6),
    // the fuzz targets' way in (`fuzz/`): an entry point, like the command line
    ("fuzzing", 6),
    ("lib", 6),
];

fn floor_of_module(name: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == name).map(|(_, f)| *f)
}

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            // Unit-test folders inside src/ may import anything.
            if p.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file before its test module, without line comments.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every top-level module named after `crate::`, including inside `crate::{a, b::c}`.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `$crate::` in macros and `other_crate::` are not this crate's modules.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 1 => {
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            found.insert(name);
                        }
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// Every `file -> module` import that runs up a floor, and files of no known floor.
fn upward_imports(src: &Path) -> (Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut unplaced = Vec::new();
    for file in files {
        let module = module_of(src, &file);
        let rel = file
            .strip_prefix(src)
            .unwrap_or(&file)
            .display()
            .to_string();
        let Some(floor) = floor_of_module(&module) else {
            unplaced.push(rel);
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for imported in imported_modules(&production_code(&text)) {
            match floor_of_module(&imported) {
                Some(f) if f > floor => upward.push(format!("{rel} -> crate::{imported}")),
                Some(_) => {}
                None => unplaced.push(format!("{rel} imports crate::{imported}")),
            }
        }
    }
    (upward, unplaced)
}

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_file_imports_a_floor_above_its_own() {
    let (upward, unplaced) = upward_imports(&src_dir());
    assert!(
        unplaced.is_empty(),
        "files or modules with no floor in tests/architecture.rs (place them as in design.md):\n  {}",
        unplaced.join("\n  ")
    );
    assert!(
        upward.is_empty(),
        "imports that run up a floor (each file may import its own floor and those below):\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn a_planted_upward_import_is_caught_with_its_file_and_module() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("routing")).expect("mkdir");
    std::fs::write(
        src.join("routing/mod.rs"),
        "use crate::denial::Denial;\nuse crate::{clock, server::Gateway};\n\
         fn f() { crate::metrics::bump(); }\n// crate::cli in a comment\n\
         #[cfg(test)]\nmod tests { use crate::main; }\n",
    )
    .expect("write");
    let (upward, unplaced) = upward_imports(src);
    assert!(unplaced.is_empty(), "{unplaced:?}");
    assert_eq!(
        upward,
        [
            "routing/mod.rs -> crate::metrics",
            "routing/mod.rs -> crate::server"
        ]
    );
}
