//! gitignore-syntax patterns over snapshot paths (restore `--include`/`--exclude`).

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

pub struct PathMatcher {
    gi: Gitignore,
    empty: bool,
}

impl PathMatcher {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut b = GitignoreBuilder::new("/");
        for p in patterns {
            b.add_line(None, p).map_err(|e| format!("bad pattern {p:?}: {e}"))?;
        }
        Ok(PathMatcher { gi: b.build().map_err(|e| format!("bad patterns: {e}"))?, empty: patterns.is_empty() })
    }
    pub fn is_empty(&self) -> bool {
        self.empty
    }
    /// Whether `path` itself matches (not through a parent): what a search wants, where a
    /// matching directory is one hit, not every entry below it.
    pub fn matches_self(&self, path: &str, is_dir: bool) -> bool {
        !self.empty && self.gi.matched(Path::new(path), is_dir).is_ignore()
    }
    /// Whether `path` (absolute, as in the snapshot) or one of its parents matches.
    pub fn matches(&self, path: &str, is_dir: bool) -> bool {
        !self.empty && self.gi.matched_path_or_any_parents(Path::new(path), is_dir).is_ignore()
    }
}

/// An absolute path as a gitignore pattern matching exactly it.
pub fn gitignore_literal(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '!' | '#' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
