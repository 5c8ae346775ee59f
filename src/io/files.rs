//! Opening files that may come from strangers, and the limits every reader holds them to.
//!
//! - **Regular files only.** A FIFO, a device (`/dev/zero`), a socket or a directory is refused,
//!   also behind a symlink, before anything is read: the path's metadata is checked, the file is
//!   opened with `O_NONBLOCK` (so that a FIFO swapped in meanwhile cannot block the open), and
//!   the opened file's own metadata is checked again.
//! - **A size limit per kind of file** ([`FileLimit`]): a whole-file read never holds more than
//!   the limit, whatever the file claims. Each limit can be raised through an environment
//!   variable ([`FileLimit::env`]) where a real dataset might need more; the error says which.
//! - **Sizes from files and flags** go through [`check_size`], which names the value, the limit,
//!   the field or flag and the way to raise the limit; size arithmetic goes through
//!   [`checked_product`], which never wraps.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Result, XincError};

/// The largest accepted size of one kind of file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimit {
    /// What the file is ("configuration file"), for messages.
    pub what: &'static str,
    /// The default limit in bytes.
    pub max_bytes: u64,
    /// The environment variable that raises the limit (a number of MiB).
    pub env: &'static str,
}

const MIB: u64 = 1 << 20;

impl FileLimit {
    /// A JSON or YAML configuration (`config.json`, `exp_config.yaml`, `batch.toml`, a task record).
    pub const CONFIG: FileLimit = FileLimit {
        what: "configuration file",
        max_bytes: 4 * MIB,
        env: "XINC_MAX_CONFIG_MIB",
    };
    /// A dataset's annotation JSON (VIPSeg's `panoptic_gt_VIPSeg.json` holds every video: tens of MB).
    pub const DATASET_JSON: FileLimit = FileLimit {
        what: "dataset annotation JSON",
        max_bytes: 512 * MIB,
        env: "XINC_MAX_DATASET_JSON_MIB",
    };
    /// An encoded image (PNG, JPEG): a frame or a panoptic mask.
    pub const IMAGE: FileLimit = FileLimit {
        what: "image",
        max_bytes: 256 * MIB,
        env: "XINC_MAX_IMAGE_MIB",
    };
    /// A flow field (`.npy`, `[2, H, W]` or `[H, W, 2]` f32).
    pub const FLOW: FileLimit = FileLimit {
        what: "flow file",
        max_bytes: 512 * MIB,
        env: "XINC_MAX_FLOW_MIB",
    };
    /// The checkpoint of an ablation job (`*.ablation-state.json`): every removal so far, a few
    /// hundred bytes to a few KB each.
    pub const ABLATION_STATE: FileLimit = FileLimit {
        what: "checkpoint of an ablation job",
        max_bytes: 1024 * MIB,
        env: "XINC_MAX_ABLATION_STATE_MIB",
    };
    /// A weights file read whole (safetensors) or a checkpoint archive.
    pub const WEIGHTS: FileLimit = FileLimit {
        what: "weights file",
        max_bytes: 8 * 1024 * MIB,
        env: "XINC_MAX_WEIGHTS_MIB",
    };
    /// The `data.pkl` of a PyTorch checkpoint, inflated (the official ones are KB to a few MB;
    /// the pickle machine's memory budget is capped at 8 times this limit).
    pub const PICKLE: FileLimit = FileLimit {
        what: "checkpoint pickle (data.pkl)",
        max_bytes: 64 * MIB,
        env: "XINC_MAX_PICKLE_MIB",
    };

    /// The limit in bytes: the default, or the environment variable's MiB when set.
    pub fn bytes(&self) -> Result<u64> {
        if std::env::var_os(self.env).is_none() {
            return Ok(self.max_bytes);
        }
        let mib = env_limit(self.env, 0)?;
        mib.checked_mul(MIB).ok_or_else(|| {
            XincError::InvalidArgument(format!(
                "environment variable {}={mib}: more MiB than a byte count can hold",
                self.env
            ))
        })
    }
}

/// Refuses `path` unless it is a regular file (symlinks followed), without opening it.
pub(crate) fn check_regular(path: &Path, what: &str) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| XincError::io(path, e))?;
    if meta.is_file() {
        Ok(meta)
    } else {
        Err(not_regular(path, what, &meta))
    }
}

fn not_regular(path: &Path, what: &str, meta: &std::fs::Metadata) -> XincError {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    XincError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refused as a {what}: it is {kind}, not a regular file"),
        ),
    )
}

/// Opens `path` for reading if it is a regular file no larger than `limit`; returns the file and
/// its size. Never blocks on a FIFO.
pub(crate) fn open_regular(path: &Path, limit: &FileLimit) -> Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    check_regular(path, limit.what)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| XincError::io(path, e))?;
    let meta = file.metadata().map_err(|e| XincError::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, limit.what, &meta));
    }
    let max = limit.bytes()?;
    if meta.len() > max {
        return Err(too_large(path, limit, meta.len(), max));
    }
    Ok((file, meta.len()))
}

fn too_large(path: &Path, limit: &FileLimit, len: u64, max: u64) -> XincError {
    XincError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{len} bytes is more than a {} may hold ({max} bytes; set {} to a number of MiB to raise it)",
                limit.what, limit.env
            ),
        ),
    )
}

/// Reads a whole regular file of at most `limit` bytes (a file that grows while read is cut off
/// at the limit and refused).
pub(crate) fn read_bytes(path: &Path, limit: &FileLimit) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path, limit)?;
    let max = limit.bytes()?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| XincError::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(too_large(path, limit, bytes.len() as u64, max));
    }
    Ok(bytes)
}

/// [`read_bytes`] as UTF-8 text.
pub(crate) fn read_text(path: &Path, limit: &FileLimit) -> Result<String> {
    String::from_utf8(read_bytes(path, limit)?).map_err(|e| {
        XincError::config(
            path,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// `default`, or the positive integer that environment variable `env` holds when it is set (a
/// limit that a real user may need to raise, such as [`crate::data::image::MAX_IMAGE_PIXELS`]).
pub(crate) fn env_limit(env: &str, default: u64) -> Result<u64> {
    match std::env::var(env) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                XincError::InvalidArgument(format!(
                    "environment variable {env}={v:?}: expected a positive integer"
                ))
            }),
    }
}

/// Longest name accepted as one path component: the usual file-system limit on a file name.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why `name` cannot be one path component, or `None` when it can: it must be non-empty, at most
/// [`MAX_COMPONENT_BYTES`] long, not `.` or `..`, and hold no `/`, `\`, NUL or other control
/// character. Such a name joined to a folder names an entry of that folder, never a path
/// elsewhere (an absolute name would replace the folder, `..` would leave it).
pub(crate) fn component_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > MAX_COMPONENT_BYTES {
        return Some(format!(
            "it is {} bytes long, more than the {MAX_COMPONENT_BYTES} a file name may have",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` names a folder, not an entry of it"));
    }
    if name.starts_with('/') {
        return Some("it is an absolute path".into());
    }
    if let Some(c) = name.chars().find(|&c| c == '/' || c == '\\') {
        return Some(format!("it contains the path separator `{c}`"));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!("it contains the control character {c:?}"));
    }
    None
}

/// Refuses a name that becomes one path component (a dataset name, a video or image id): the
/// message names `field` (`batch.toml: dataset`), the name and the cause ([`component_problem`]).
pub(crate) fn check_component(field: &str, name: &str) -> Result<()> {
    match component_problem(name) {
        None => Ok(()),
        Some(why) => Err(XincError::InvalidArgument(format!(
            "{field} {name:?} cannot name a file or folder: {why}"
        ))),
    }
}

/// Refuses `path` unless it resolves (symlinks followed) to a path inside `root`; returns the
/// resolved path. Reads of a dataset stay under its root: a symlink that leads out of it is
/// refused, one that stays inside is followed.
pub(crate) fn check_within(root: &Path, path: &Path, what: &str) -> Result<std::path::PathBuf> {
    let real_root = root.canonicalize().map_err(|e| XincError::io(root, e))?;
    let real = path.canonicalize().map_err(|e| XincError::io(path, e))?;
    if real.starts_with(&real_root) {
        return Ok(real);
    }
    Err(XincError::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "refused as a {what}: it resolves to {}, outside the root {} (a symlink may only \
                 lead to a file inside the root)",
                real.display(),
                real_root.display()
            ),
        ),
    ))
}

/// Refuses a size read from a file or a flag that exceeds `max`: the message names `field`
/// (a flag such as `--size`, or `config.json: data_shape`), the value, the limit and `raise`
/// (how to raise it, or why it is fixed).
pub(crate) fn check_size(field: &str, value: u64, max: u64, raise: &str) -> Result<()> {
    if value <= max {
        return Ok(());
    }
    Err(XincError::InvalidArgument(format!(
        "{field} = {value} is more than the limit {max} ({raise})"
    )))
}

/// The product of `factors`, or an error naming `what` when it overflows `usize`.
pub(crate) fn checked_product(what: &str, factors: &[usize]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| {
            XincError::InvalidArgument(format!(
                "{what}: the size {} overflows",
                factors
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(" × ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: FileLimit = FileLimit {
        what: "test file",
        max_bytes: 8,
        env: "XINC_TEST_NEVER_SET_MIB",
    };

    #[test]
    fn reads_a_regular_file_within_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"12345678").unwrap();
        assert_eq!(read_bytes(&p, &SMALL).unwrap(), b"12345678");
        assert_eq!(read_text(&p, &SMALL).unwrap(), "12345678");
        std::fs::write(&p, b"123456789").unwrap();
        let e = read_bytes(&p, &SMALL).unwrap_err().to_string();
        assert!(
            e.contains("9 bytes is more than a test file may hold (8 bytes"),
            "{e}"
        );
        assert!(e.contains("XINC_TEST_NEVER_SET_MIB"), "{e}");
    }

    #[test]
    fn refuses_devices_fifos_directories_and_symlinks_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for (path, kind) in [
            (Path::new("/dev/zero"), "a device"),
            (link.as_path(), "a device"),
            (dir.path(), "a directory"),
        ] {
            let e = read_bytes(path, &SMALL).unwrap_err().to_string();
            assert!(
                e.contains(kind) && e.contains("refused as a test file"),
                "{e}"
            );
        }
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Returns at once (no writer ever opens the pipe): refused before open.
        let e = read_text(&fifo, &SMALL).unwrap_err().to_string();
        assert!(e.contains("a named pipe"), "{e}");
    }

    #[test]
    fn path_components_cannot_leave_their_folder() {
        for ok in ["0005", "26_cblDl5vCZnw", "city.v2", "..x", "a b"] {
            assert!(check_component("video id", ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "names a folder"),
            ("..", "names a folder"),
            ("x/../../elsewhere", "separator `/`"),
            ("/etc", "absolute"),
            ("a\\b", "separator `\\`"),
            ("a\0b", "control character"),
            ("a\nb", "control character"),
        ] {
            let e = check_component("batch.toml: dataset", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("batch.toml: dataset") && e.contains(why),
                "{bad:?}: {e}"
            );
        }
        let long = "v".repeat(256);
        let e = check_component("video id", &long).unwrap_err().to_string();
        assert!(e.contains("256 bytes long"), "{e}");
    }

    #[test]
    fn paths_are_kept_within_their_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.png"), b"x").unwrap();
        std::fs::write(outer.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink("sub/a.png", root.join("inside")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("outside")).unwrap();
        assert!(check_within(&root, &root.join("sub/a.png"), "frame").is_ok());
        assert!(check_within(&root, &root.join("inside"), "frame").is_ok());
        assert!(check_within(&root, &root.join("sub/../sub/a.png"), "frame").is_ok());
        for p in [root.join("outside"), root.join("sub/../../secret")] {
            let e = check_within(&root, &p, "frame").unwrap_err().to_string();
            assert!(
                e.contains("outside the root") && e.contains("secret"),
                "{e}"
            );
        }
    }

    #[test]
    fn env_limits_default_or_parse() {
        assert_eq!(env_limit("XINC_TEST_NEVER_SET_LIMIT", 7).unwrap(), 7);
    }

    #[test]
    fn sizes_are_checked_and_never_wrap() {
        assert!(check_size("--size", 4096, 4096, "fixed").is_ok());
        let e = check_size("--size", 4097, 4096, "fixed")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--size = 4097 is more than the limit 4096 (fixed)"),
            "{e}"
        );
        assert_eq!(checked_product("frame", &[3, 4, 5]).unwrap(), 60);
        let e = checked_product("frame", &[usize::MAX, 2])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("frame: the size") && e.contains("overflows"),
            "{e}"
        );
    }
}
