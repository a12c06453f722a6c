//! Restoring a selection of one snapshot for the API: files and directories picked by
//! path, either in place (back where they were) or as a copy into a directory the policy
//! allows (`[server] restore_dirs`).
//!
//! Key decisions:
//! - A copy's target is confined *before* anything is written: absolute, no `.`/`..`,
//!   lexically inside an allowed directory, and no existing component below that directory
//!   a symlink or a non-directory (the missing ones are created one by one, never through a
//!   link). The restore itself never follows a symlink inside the target (the engine's
//!   `Destination` contract), so a snapshot cannot steer it out either.
//! - Each selected path is restored as an entry of its parent directory with a filter that
//!   keeps only it and what is below it: the copy of `/srv/a/report.txt` is
//!   `TARGET/report.txt`, and in place it is `/srv/a/report.txt` again.
//! - In place restores what grants privilege (it puts the system back as it was); a copy
//!   never does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_engine::{Overwrite, RestoreOptions, Restorer};
use cairn_format::snapshot::Snapshot;
use cairn_format::tree::NodeKind;
use cairn_fs::FsDestination;

use crate::browse::{clean_path, View};
use crate::{Error, Result};

/// Where a selection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Into this directory (already confined by [`confine`]).
    Copy(PathBuf),
    InPlace,
}

/// How far a restore is, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub specials: u64,
    pub bytes_written: u64,
    pub warnings: Vec<String>,
}

/// The directory a copy may be restored into: `target` checked against `allowed` (see the
/// module notes), created if missing. Returns the real path to write to.
pub fn confine(target: &str, allowed: &[PathBuf]) -> Result<PathBuf> {
    if allowed.is_empty() {
        return Err(Error::Refused("restoring as a copy is off: the policy's [server] has no restore_dirs".into()));
    }
    let t = Path::new(target);
    if !t.is_absolute() || target.contains('\0') {
        return Err(Error::Refused(format!("restore target {target:?}: an absolute path is needed")));
    }
    // On the text: `Path::components` drops inner `.` silently.
    if target.split('/').any(|c| c == "." || c == "..") {
        return Err(Error::Refused(format!("restore target {target:?}: no '.' or '..' components")));
    }
    let names = || allowed.iter().map(|a| a.display().to_string()).collect::<Vec<_>>().join(", ");
    let Some((base, rest)) = allowed.iter().find_map(|a| t.strip_prefix(a).ok().map(|r| (a, r))) else {
        return Err(Error::Refused(format!(
            "restore target {target} is not inside the allowed directories ({})",
            names()
        )));
    };
    let mut p = std::fs::canonicalize(base)
        .map_err(|e| Error::io(format!("allowed restore directory {}", base.display()), e))?;
    for c in rest.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Refused(format!(
                    "restore target {target}: {} is a symlink (a target must not lead out of {})",
                    p.display(),
                    base.display()
                )))
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::Refused(format!("restore target {target}: {} is not a directory", p.display())))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Someone made it in between: look at what it is again.
                    let m = std::fs::symlink_metadata(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
                    if !m.is_dir() || m.file_type().is_symlink() {
                        return Err(Error::Refused(format!(
                            "restore target {target}: {} changed under us",
                            p.display()
                        )));
                    }
                }
                Err(e) => return Err(Error::io(format!("creating {}", p.display()), e)),
            },
            Err(e) => return Err(Error::io(p.display().to_string(), e)),
        }
    }
    Ok(p)
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// What restoring `paths` in place would do: the regular files it would overwrite (at most
/// `limit` named) and how many entries it would create.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Preview {
    pub overwrite: Vec<String>,
    pub overwrite_more: u64,
    pub create: u64,
    pub bytes: u64,
}

pub fn preview_in_place(v: &View, snap: &Snapshot, paths: &[String], limit: usize) -> Result<Preview> {
    let mut p = Preview::default();
    for sel in paths {
        let sel = clean_path(sel)?;
        let root = crate::browse::node(v, snap, &sel)?;
        let mut visit = |path: &str, n: &cairn_format::tree::Node| {
            p.bytes += n.size;
            match std::fs::symlink_metadata(path) {
                Ok(m) if !m.is_dir() && n.kind != NodeKind::Dir => {
                    if p.overwrite.len() < limit {
                        p.overwrite.push(path.to_string());
                    } else {
                        p.overwrite_more += 1;
                    }
                }
                Ok(_) => {}
                Err(_) => p.create += 1,
            }
            true
        };
        visit(&sel, &root);
        if let (NodeKind::Dir, Some(st)) = (root.kind, root.subtree) {
            let mut budget = cairn_engine::browse::Budget::for_snapshot(&snap.summary);
            cairn_engine::browse::walk(&v.repo, &v.index, st, &sel, &mut budget, &mut visit)?;
        }
    }
    Ok(p)
}

/// Restores `paths` of `snap` (absolute paths in the snapshot) in place or into a copy
/// target. Every path is checked to exist before anything is written.
pub fn restore(v: &View, snap: &Snapshot, paths: &[String], mode: &Mode, progress: &Progress) -> Result<Summary> {
    if paths.is_empty() {
        return Err(Error::Source("nothing selected to restore".into()));
    }
    let mut sels = Vec::new();
    for sel in paths {
        let sel = clean_path(sel)?;
        if sel == "/" {
            return Err(Error::Refused("restoring the whole root through the API is refused: pick directories".into()));
        }
        crate::browse::node(v, snap, &sel)?;
        sels.push(sel);
    }
    let restorer = Restorer::new(&v.repo, &v.index);
    let mut sum = Summary::default();
    let threads = cairn_engine::restore::default_threads(2);
    for sel in &sels {
        let parent = parent_of(sel);
        let root = cairn_engine::browse::subtree(&v.repo, &v.index, snap.tree, parent)?;
        let below = format!("{sel}/");
        let filter = |path: &str, _is_dir: bool| path == sel || path.starts_with(&below);
        let opts = RestoreOptions {
            overwrite: Overwrite::Always,
            verify: false,
            threads,
            filter: &filter,
            privileged: *mode == Mode::InPlace,
        };
        let dest_dir = match mode {
            Mode::Copy(t) => t.clone(),
            Mode::InPlace => PathBuf::from(parent),
        };
        let dest = FsDestination::new(&dest_dir).map_err(|e| Error::io(dest_dir.display().to_string(), e))?;
        let mut budget = cairn_engine::browse::Budget::for_snapshot(&snap.summary);
        let plan = restorer.plan(root, if parent == "/" { "" } else { parent }, &dest, &opts, &mut budget)?;
        progress.bytes_total.fetch_add(plan.bytes_total, Ordering::Relaxed);
        let s = restorer.execute(plan, &dest, &opts, &progress.bytes_done)?;
        sum.files += s.files;
        sum.dirs += s.dirs;
        sum.specials += s.specials;
        sum.bytes_written += s.bytes_written;
        sum.warnings.extend(s.warnings.lines);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_targets_stay_inside_the_allowed_directories() {
        let dir = tempfile::tempdir().expect("tmp");
        let allowed = dir.path().join("restores");
        std::fs::create_dir(&allowed).expect("mkdir");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, allowed.join("link")).expect("symlink");
        std::fs::write(allowed.join("file"), b"x").expect("file");
        let a = [allowed.clone()];
        let s = |p: &Path| p.display().to_string();
        let ok = confine(&s(&allowed.join("job1/sub")), &a).expect("inside");
        assert!(ok.is_dir() && ok.ends_with("job1/sub"));
        for bad in [
            s(&allowed.join("../outside")),
            s(&allowed.join("link")),
            s(&allowed.join("link/deeper")),
            s(&allowed.join("file/x")),
            s(&outside),
            "relative/path".into(),
            format!("{}/./x", s(&allowed)),
        ] {
            let e = confine(&bad, &a).expect_err(&bad);
            assert!(matches!(e, Error::Refused(_)), "{bad}: {e}");
        }
        assert!(std::fs::read_dir(&outside).expect("ls").next().is_none(), "nothing was created outside");
        assert!(matches!(confine(&s(&allowed), &[]), Err(Error::Refused(_))));
    }
}
