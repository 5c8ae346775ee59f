//! What a command's output path held before it ran, so that a failed command leaves nothing
//! behind.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What a command's output path held before the command ran, so that a failed command removes
/// everything it created there and leaves nothing behind. Files it replaced were written
/// atomically (renamed into place when complete), so they are the old ones or complete new ones.
pub enum OutputGuard {
    /// The output did not exist: the topmost of it and its missing parent folders.
    Missing(PathBuf),
    /// An existing folder, and the names it held.
    Folder(PathBuf, HashSet<OsString>),
    /// An existing file (or a dangling link): replaced only by atomic renames, left alone.
    Existing,
}

impl OutputGuard {
    pub fn before(out: &Path) -> Self {
        match std::fs::metadata(out) {
            Ok(meta) if meta.is_dir() => {
                let names = std::fs::read_dir(out)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                return OutputGuard::Folder(out.to_path_buf(), names);
            }
            Ok(_) => return OutputGuard::Existing,
            Err(_) if std::fs::symlink_metadata(out).is_ok() => return OutputGuard::Existing,
            Err(_) => {}
        }
        let mut top = out;
        while let Some(parent) = top.parent() {
            if parent.as_os_str().is_empty() || std::fs::symlink_metadata(parent).is_ok() {
                break;
            }
            top = parent;
        }
        OutputGuard::Missing(top.to_path_buf())
    }

    /// Removes what the failed command created.
    pub fn undo(&self) {
        match self {
            OutputGuard::Missing(top) => remove_created(top),
            OutputGuard::Folder(dir, names) => {
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    if !names.contains(&entry.file_name()) {
                        remove_created(&entry.path());
                    }
                }
            }
            OutputGuard::Existing => {}
        }
    }
}

pub fn remove_created(path: &Path) {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return,
    };
    match removed {
        Ok(()) => tracing::info!("removed {} (the command failed)", path.display()),
        Err(e) => tracing::warn!("cannot remove {} after the failure: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_command_removes_only_what_it_created() {
        let dir = tempfile::tempdir().unwrap();
        // A missing output with missing parents: the topmost created folder goes.
        let out = dir.path().join("a/b/c");
        let guard = OutputGuard::before(&out);
        std::fs::create_dir_all(out.join("ffn")).unwrap();
        std::fs::write(out.join("ffn/config.json"), "{}").unwrap();
        guard.undo();
        assert!(names(dir.path()).is_empty());
        // An existing folder: its old entries stay (replaced files were renamed into place
        // whole), the new ones go.
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("train_state.safetensors"), "old").unwrap();
        let guard = OutputGuard::before(&out);
        std::fs::write(out.join("model.safetensors"), "new").unwrap();
        std::fs::create_dir(out.join("stats")).unwrap();
        std::fs::write(out.join("stats/neurons.parquet"), "new").unwrap();
        guard.undo();
        assert_eq!(names(&out), ["train_state.safetensors"]);
        // An existing file is left alone.
        let file = out.join("train_state.safetensors");
        OutputGuard::before(&file).undo();
        assert!(file.is_file());
    }
}
