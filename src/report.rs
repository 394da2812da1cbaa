//! Config problems: which file, which key path, what is wrong. Every validator (config and
//! the policy modules' own sections) reports through one [`Report`], so all problems of a
//! file come out together.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a config file: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: PathBuf,
    /// Key path such as `routes[2].upstream[0]`; empty for whole-file problems.
    pub key: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            file: file.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every problem found in a config, not only the first. Displays one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Collects errors and warnings for one file; every policy module's validation reports
/// through it so all problems come out together.
pub struct Report<'a> {
    file: &'a Path,
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<ConfigIssue>,
}

impl<'a> Report<'a> {
    pub fn new(file: &'a Path) -> Self {
        Report {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }
    pub fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigIssue::new(self.file, key, message));
    }
    pub fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings
            .push(ConfigIssue::new(self.file, key, message));
    }
    /// Report each of `fields` (name, whether it is set) that is set where it does not
    /// apply, as `{key}.{name}` with `why(name)`; whether any was.
    pub fn misplaced(
        &mut self,
        key: &str,
        fields: &[(&str, bool)],
        why: impl Fn(&str) -> String,
    ) -> bool {
        let mut any = false;
        for &(field, set) in fields {
            if set {
                self.error(format!("{key}.{field}"), why(field));
                any = true;
            }
        }
        any
    }
    /// Resolve a path from the config relative to the config file's folder.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file
                .parent()
                .map(|d| d.join(p))
                .unwrap_or_else(|| p.to_path_buf())
        }
    }
}
