//! Config loading (src/config: FileConfig -> validate -> Snapshot): any bytes as the config
//! file's text give a snapshot or a list of problems, never a panic; every problem says
//! something. Paths resolve from a folder that does not exist; inputs naming device or
//! kernel files are skipped (an operator's config may read them, a fuzzer's must not hang on
//! /dev/zero).
#![no_main]

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["dev/", "proc/", "sys/", "/dev", "/proc", "/sys", "fd/"]
        .iter()
        .any(|p| text.contains(p))
    {
        return;
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let path = Path::new("/nonexistent/portcullis-fuzz/portcullis.toml");
    match portcullis::config::load_str(path, text, now) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                assert!(!w.to_string().is_empty());
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without a reason");
            for e in &errors.0 {
                assert!(!e.to_string().is_empty());
            }
        }
    }
});
