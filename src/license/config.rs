//! The `[licenses]` config section and the per-route `license` key.
//!
//! ```toml
//! [licenses]
//! trusted_keys = ["keys/license-2026.pub", "keys/license-2027.pub"]
//! store = "/var/lib/portcullis/licenses.redb"
//! grace = "72h"          # default: none
//!
//! [[routes]]
//! name = "orders"
//! license = "required"   # default: "none"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::keys::{PublicKey, TrustedKeys};
use crate::report::Report;

/// Longest grace period accepted: a longer one is an expiry date written in the wrong place.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `[licenses]` as written.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseSection {
    /// PEM public keys of the license issuers (`portcullis license keygen` writes them).
    /// Several during a key rotation. Required, at least one.
    pub trusted_keys: Option<Vec<String>>,
    /// The redb file of activations and revocations. Required. Created (mode 0600) if
    /// missing; its folder must exist.
    pub store: Option<String>,
    /// How long after `expires_at` a license still grants, with a warning header.
    /// Default: none. At most 30 days.
    pub grace: Option<String>,
}

/// `[licenses]`, validated: the trusted keys are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseSettings {
    pub trusted_keys: TrustedKeys,
    pub store: PathBuf,
    pub grace: Duration,
}

/// A route's `license` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RouteLicense {
    /// `"none"` or absent: the license stage does not run.
    #[default]
    NotRequired,
    /// `"required"`: every request needs a license that grants.
    Required,
}

/// Validate `[licenses]`, reporting each problem at its key path (`licenses.trusted_keys[1]`).
/// Reads the key files (relative paths resolve from the config file's folder).
pub fn validate(section: &LicenseSection, r: &mut Report) -> Option<LicenseSettings> {
    let (settings, problems) = check(section, |p| r.resolve(p));
    for (key, message) in problems {
        r.error(key, message);
    }
    settings
}

/// Validate a route's `license` value, reporting at `key` (`routes[3].license`).
pub fn route_license(r: &mut Report, key: &str, value: Option<&str>) -> RouteLicense {
    parse_route_license(value).unwrap_or_else(|message| {
        r.error(key, message);
        RouteLicense::NotRequired
    })
}

fn parse_route_license(value: Option<&str>) -> Result<RouteLicense, String> {
    match value {
        None | Some("none") => Ok(RouteLicense::NotRequired),
        Some("required") => Ok(RouteLicense::Required),
        Some(other) => Err(format!(
            "\"{other}\" is not a license requirement (write \"required\" or \"none\")"
        )),
    }
}

type Problems = Vec<(String, String)>;

/// The checks, apart from `Report` so they can be tested alone.
fn check(
    section: &LicenseSection,
    resolve: impl Fn(&str) -> PathBuf,
) -> (Option<LicenseSettings>, Problems) {
    let mut problems: Problems = Vec::new();
    let mut keys: Vec<PublicKey> = Vec::new();
    match section.trusted_keys.as_deref() {
        None | Some([]) => problems.push((
            "licenses.trusted_keys".into(),
            "at least one trusted issuer public key is required (`portcullis license keygen` makes one)".into(),
        )),
        Some(paths) => {
            for (i, p) in paths.iter().enumerate() {
                let key = format!("licenses.trusted_keys[{i}]");
                match PublicKey::load(&resolve(p)) {
                    Ok(k) => match keys.iter().position(|o| *o == k) {
                        Some(j) => problems.push((
                            key,
                            format!("same key as trusted_keys[{j}] (key id {})", k.kid()),
                        )),
                        None => keys.push(k),
                    },
                    Err(e) => problems.push((key, e.to_string())),
                }
            }
        }
    }
    let store = match section.store.as_deref() {
        None | Some("") => {
            problems.push((
                "licenses.store".into(),
                "the license store file is required (e.g. \"/var/lib/portcullis/licenses.redb\")"
                    .into(),
            ));
            None
        }
        Some(s) => {
            let path = resolve(s);
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let problem = if path.is_dir() {
                Some(format!("{} is a folder; name a file in it", path.display()))
            } else {
                dir.filter(|d| !d.is_dir())
                    .map(|d| format!("the folder {} does not exist", d.display()))
            };
            match problem {
                Some(p) => {
                    problems.push(("licenses.store".into(), p));
                    None
                }
                None => Some(path),
            }
        }
    };
    let grace = match section.grace.as_deref() {
        None => Some(Duration::ZERO),
        Some(g) => match humantime::parse_duration(g) {
            Ok(d) if d > MAX_GRACE => {
                problems.push((
                    "licenses.grace".into(),
                    format!("\"{g}\" is longer than 30 days"),
                ));
                None
            }
            Ok(d) => Some(d),
            Err(_) => {
                problems.push((
                    "licenses.grace".into(),
                    format!("\"{g}\" is not a duration (write e.g. \"72h\", \"3days\" or \"0s\")"),
                ));
                None
            }
        },
    };
    let settings = match (store, grace) {
        (Some(store), Some(grace)) if problems.is_empty() => Some(LicenseSettings {
            trusted_keys: TrustedKeys::new(keys),
            store,
            grace,
        }),
        _ => None,
    };
    (settings, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::keys::keygen;

    fn section(keys: &[&str], store: Option<&str>, grace: Option<&str>) -> LicenseSection {
        LicenseSection {
            trusted_keys: Some(keys.iter().map(|s| s.to_string()).collect()),
            store: store.map(str::to_owned),
            grace: grace.map(str::to_owned),
        }
    }

    #[test]
    fn a_valid_section_loads_its_keys_and_defaults_to_no_grace() {
        let dir = tempfile::tempdir().expect("dir");
        let a = keygen(dir.path(), "a").expect("a");
        let b = keygen(dir.path(), "b").expect("b");
        let s = section(&["a.pub", "b.pub"], Some("licenses.redb"), None);
        let (settings, problems) = check(&s, |p| dir.path().join(p));
        assert!(problems.is_empty(), "{problems:?}");
        let settings = settings.expect("settings");
        assert_eq!(settings.grace, Duration::ZERO);
        assert_eq!(settings.store, dir.path().join("licenses.redb"));
        assert!(settings.trusted_keys.get(&a.kid).is_some());
        assert!(settings.trusted_keys.get(&b.kid).is_some());
    }

    #[test]
    fn each_bad_value_is_reported_at_its_key_path() {
        let dir = tempfile::tempdir().expect("dir");
        keygen(dir.path(), "a").expect("a");
        std::fs::write(dir.path().join("junk.pub"), "hello").expect("write");
        let cases: Vec<(LicenseSection, &str, &str)> = vec![
            (
                LicenseSection::default(),
                "licenses.trusted_keys",
                "at least one",
            ),
            (
                section(&["a.pub", "missing.pub"], Some("s.redb"), None),
                "licenses.trusted_keys[1]",
                "cannot read",
            ),
            (
                section(&["junk.pub"], Some("s.redb"), None),
                "licenses.trusted_keys[0]",
                "not an Ed25519 public key",
            ),
            (
                section(&["a.pub", "a.pub"], Some("s.redb"), None),
                "licenses.trusted_keys[1]",
                "same key as trusted_keys[0]",
            ),
            (
                section(&["a.key"], Some("s.redb"), None),
                "licenses.trusted_keys[0]",
                "not an Ed25519 public key",
            ),
            (
                section(&["a.pub"], None, None),
                "licenses.store",
                "required",
            ),
            (
                section(&["a.pub"], Some("nowhere/s.redb"), None),
                "licenses.store",
                "does not exist",
            ),
            (
                section(&["a.pub"], Some("."), None),
                "licenses.store",
                "is a folder",
            ),
            (
                section(&["a.pub"], Some("s.redb"), Some("soon")),
                "licenses.grace",
                "not a duration",
            ),
            (
                section(&["a.pub"], Some("s.redb"), Some("365days")),
                "licenses.grace",
                "longer than 30 days",
            ),
        ];
        for (s, key, needle) in cases {
            let (settings, problems) = check(&s, |p| dir.path().join(p));
            assert!(settings.is_none(), "{key}");
            assert!(
                problems.iter().any(|(k, m)| k == key && m.contains(needle)),
                "expected {key}: {needle}, got {problems:?}"
            );
        }
    }

    #[test]
    fn a_route_license_is_required_or_none() {
        assert_eq!(parse_route_license(None), Ok(RouteLicense::NotRequired));
        assert_eq!(
            parse_route_license(Some("none")),
            Ok(RouteLicense::NotRequired)
        );
        assert_eq!(
            parse_route_license(Some("required")),
            Ok(RouteLicense::Required)
        );
        assert!(parse_route_license(Some("yes")).is_err());
    }

    #[test]
    fn the_section_and_the_route_key_parse_from_toml_and_misspellings_are_errors() {
        let path = std::path::Path::new("portcullis.toml");
        let text = "[licenses]\ntrusted_keys = [\"a.pub\"]\nstore = \"l.redb\"\ngrace = \"72h\"\n\n\
                    [[routes]]\nname = \"orders\"\nlicense = \"required\"\n";
        let file = crate::config::parse_file_config(path, text).expect("parses");
        let l = file.licenses.expect("section");
        assert_eq!(l.trusted_keys, Some(vec!["a.pub".to_owned()]));
        assert_eq!(l.grace.as_deref(), Some("72h"));
        assert_eq!(file.routes[0].license.as_deref(), Some("required"));
        let e = crate::config::parse_file_config(path, "[licenses]\ngrase = \"1h\"\n")
            .expect_err("misspelt");
        assert_eq!(e.0[0].key, "licenses.grase");
        assert!(e.0[0].message.contains("grase"), "{e}");
    }
}
