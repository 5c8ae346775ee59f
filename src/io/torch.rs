//! Reader for PyTorch checkpoints: `torch.save` zip archives (torch >= 1.6) and PyTorch Lightning
//! `.ckpt` files, which are the same format.
//!
//! The archive holds `<prefix>/data.pkl`, a pickle describing the saved object, and one entry
//! `<prefix>/data/<key>` per tensor storage (raw little-endian elements). The pickle is decoded by
//! the restricted VM of [`super::pickle`], which never executes pickle code; tensors are then
//! rebuilt from their storage with the saved offset, shape and strides, on the CPU.
//!
//! Reading is in two steps, so that a caller checks names, shapes and dtypes before any storage is
//! read ([`TorchCheckpoint::open`], then [`TorchCheckpoint::read`]). Hostile archives are bounded:
//! - the path must be a regular file within [`FileLimit::WEIGHTS`] (no `/dev/zero`, no FIFO);
//! - `data.pkl` may inflate to at most [`FileLimit::PICKLE`], and the pickle machine holds at most
//!   its budget ([`pickle::budget_for`], capped at 8 times that limit);
//! - the index is validated whole before anything else is read: unique tensor names, known storage
//!   types, a tensor dtype equal to its storage's, views inside their storage, storages shared by
//!   several tensors declared alike;
//! - each storage is read once, only up to the last element a requested tensor needs, after its
//!   declared size was checked; the bytes inflated from the archive, and the bytes of the tensors
//!   built from them, each count against [`FileLimit::WEIGHTS`] in total (before they are
//!   inflated or built); an entry that inflates beyond its declared size is refused.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use zip::ZipArchive;

use super::files::{self, FileLimit};
use super::pickle::{self, PickleErrorKind, TensorRef, Value};
use super::TensorInfo;
use crate::error::{Result, XincError};

/// Entries of a top-level dict that hold the model weights, tried in this order by
/// [`read_torch_tensors`] when no key is given.
const STATE_DICT_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];
/// Largest element count of a tensor whose strides repeat storage elements (stride 0), beyond
/// the size of the storage range it covers.
const MAX_EXPANDED_ELEMENTS: usize = 1 << 24;
/// Largest buffer allocated for an entry before its bytes are inflated.
const MAX_PREALLOCATION: usize = 64 << 20;
/// The pickle machine's budget is capped at this multiple of the `data.pkl` size limit.
const PICKLE_BUDGET_FACTOR: u64 = 8;

/// Reads the tensors of a PyTorch checkpoint onto the CPU, in the checkpoint's order.
///
/// `key` selects a dict entry of the saved object, e.g. `Some("state_dict")`; a dotted path such
/// as `Some("extra.ema")` descends into nested dicts (keys that themselves contain dots are matched
/// whole first). With `None` the first of `state_dict`, `model_state_dict`, `model` that holds
/// tensors is used, else the top-level dict itself. Entries of the selected dict that are not
/// tensors are skipped (logged at debug level); a tensor name given twice (a forged pickle) is an
/// error. Float tensors keep their dtype (F32, F64, F16, BF16); Long/Int/Short/Char tensors
/// become I64, Byte and Bool tensors U8.
pub fn read_torch_tensors(path: &Path, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    TorchCheckpoint::open(path, key)?.read_all()
}

/// Decodes the pickled object of a PyTorch checkpoint, e.g. to read `epoch` or
/// `hyper_parameters`. Tensors appear as [`Value::Tensor`] references; no data is loaded.
pub fn read_pickle_value(path: &Path) -> Result<Value> {
    Archive::open(path)?.pickle_value()
}

/// The tensors of a checkpoint, indexed and validated but not read.
pub struct TorchCheckpoint<R = File> {
    archive: Archive<R>,
    /// The selected dict's tensors, in the checkpoint's order, names unique.
    entries: Vec<Entry>,
}

/// One tensor of the selected dict.
struct Entry {
    name: String,
    tensor: TensorRef,
    kind: StorageKind,
    layout: StridedLayout,
}

impl TorchCheckpoint<File> {
    /// Opens the checkpoint at `path`, decodes its pickle and indexes the tensors of the dict that
    /// `key` selects (see [`read_torch_tensors`]). No storage is read.
    pub fn open(path: &Path, key: Option<&str>) -> Result<Self> {
        TorchCheckpoint::index(Archive::open(path)?, key)
    }
}

impl<R: Read + Seek> TorchCheckpoint<R> {
    fn index(mut archive: Archive<R>, key: Option<&str>) -> Result<Self> {
        let root = archive.pickle_value()?;
        let (label, dict) = select_dict(&root, key).map_err(|reason| archive.error(reason))?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (name, value) in dict {
            let (Value::Str(name), Value::Tensor(tensor)) = (name, value) else {
                tracing::debug!(
                    "{}: skipping non-tensor entry {:?} ({})",
                    archive.path.display(),
                    name,
                    value.kind()
                );
                continue;
            };
            if !seen.insert(name) {
                return Err(archive.error(format!(
                    "tensor `{name}` appears twice in {label} (a forged pickle: which one is meant?)"
                )));
            }
            entries.push(archive.entry(name, tensor)?);
        }
        if entries.is_empty() {
            return Err(archive.error(format!("no tensors in {label}")));
        }
        check_shared_storages(&entries).map_err(|reason| archive.error(reason))?;
        Ok(TorchCheckpoint { archive, entries })
    }

    /// Name, dtype and shape of every tensor, in the checkpoint's order.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        self.entries
            .iter()
            .map(|e| TensorInfo {
                name: e.name.clone(),
                dtype: e.kind.dtype(),
                stored_as: e.tensor.storage_type.clone(),
                shape: e.tensor.shape.clone(),
            })
            .collect()
    }

    /// Reads the tensors named `names` (in that order), each storage once.
    pub fn read(&mut self, names: &[&str]) -> Result<Vec<(String, Tensor)>> {
        let position: HashMap<&str, usize> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        let wanted = names
            .iter()
            .map(|name| {
                position.get(name).copied().ok_or_else(|| {
                    self.archive
                        .error(format!("no tensor `{name}` in the checkpoint"))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let tensors = self.load(&wanted)?;
        Ok(names.iter().map(|n| n.to_string()).zip(tensors).collect())
    }

    /// Reads every tensor, in the checkpoint's order.
    pub fn read_all(&mut self) -> Result<Vec<(String, Tensor)>> {
        let all: Vec<usize> = (0..self.entries.len()).collect();
        let tensors = self.load(&all)?;
        Ok(self
            .entries
            .iter()
            .map(|e| e.name.clone())
            .zip(tensors)
            .collect())
    }

    /// Builds the tensors `wanted` (indices into `entries`), reading each storage they use once,
    /// up to the last element any of them needs, and dropping it before the next is read.
    fn load(&mut self, wanted: &[usize]) -> Result<Vec<Tensor>> {
        let mut by_storage: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (slot, &i) in wanted.iter().enumerate() {
            if let Some(e) = self.entries.get(i) {
                by_storage
                    .entry(&e.tensor.storage_key)
                    .or_default()
                    .push(slot);
            }
        }
        let mut out: Vec<Option<Tensor>> = vec![None; wanted.len()];
        for (key, slots) in by_storage {
            let users: Vec<&Entry> = slots
                .iter()
                .filter_map(|&s| wanted.get(s).and_then(|&i| self.entries.get(i)))
                .collect();
            let built = self.archive.build_from_storage(key, &users)?;
            for (slot, tensor) in slots.into_iter().zip(built) {
                if let Some(place) = out.get_mut(slot) {
                    *place = Some(tensor);
                }
            }
        }
        out.into_iter()
            .map(|t| t.ok_or_else(|| self.archive.error("internal: a tensor was not built")))
            .collect()
    }
}

/// Refuses storages that different tensors declare differently (type or size).
fn check_shared_storages(entries: &[Entry]) -> std::result::Result<(), String> {
    let mut first: HashMap<&str, &Entry> = HashMap::new();
    for e in entries {
        let seen = *first.entry(&e.tensor.storage_key).or_insert(e);
        let (a, b) = (&seen.tensor, &e.tensor);
        if a.storage_type != b.storage_type || a.storage_numel != b.storage_numel {
            return Err(format!(
                "storage `{}` is declared as {} of {} elements by tensor `{}` and as {} of {} \
                 elements by tensor `{}`",
                a.storage_key,
                a.storage_type,
                a.storage_numel,
                seen.name,
                b.storage_type,
                b.storage_numel,
                e.name
            ));
        }
    }
    Ok(())
}

/// An open checkpoint archive.
struct Archive<R> {
    path: PathBuf,
    zip: ZipArchive<R>,
    /// Entry-name prefix of the archive, e.g. `archive/` (may be empty).
    prefix: String,
    /// Whether the archive declares big-endian storages (`<prefix>/byteorder` is `big`).
    big_endian: bool,
    /// Bytes inflated from the archive so far.
    inflated: u64,
    /// Bytes of the tensors built so far.
    built: u64,
    /// The limit of each ([`FileLimit::WEIGHTS`]).
    limit: u64,
}

impl Archive<File> {
    fn open(path: &Path) -> Result<Self> {
        let (file, _) = files::open_regular(path, &FileLimit::WEIGHTS)?;
        Archive::from_reader(path, file)
    }
}

impl<R: Read + Seek> Archive<R> {
    /// Opens the archive read from `reader`; `path` only names it in errors.
    fn from_reader(path: &Path, mut reader: R) -> Result<Self> {
        let head = read_head(&mut reader).map_err(|e| XincError::io(path, e))?;
        let zip = ZipArchive::new(reader)
            .map_err(|e| XincError::checkpoint(path, not_an_archive(&head, &e)))?;
        let prefix = pickle_prefix(&zip).ok_or_else(|| {
            XincError::checkpoint(
                path,
                "no data.pkl entry in the zip archive (not a torch.save checkpoint?)",
            )
        })?;
        let mut archive = Archive {
            path: path.to_path_buf(),
            zip,
            prefix,
            big_endian: false,
            inflated: 0,
            built: 0,
            limit: FileLimit::WEIGHTS.bytes()?,
        };
        archive.big_endian = archive.byteorder_is_big()?;
        Ok(archive)
    }

    fn error(&self, reason: impl Into<String>) -> XincError {
        XincError::checkpoint(&self.path, reason)
    }

    fn byteorder_is_big(&mut self) -> Result<bool> {
        let name = format!("{}byteorder", self.prefix);
        if self.zip.index_for_name(&name).is_none() {
            return Ok(false);
        }
        let order = self.read_whole_entry(&name, 16)?;
        match order.trim_ascii() {
            b"little" => Ok(false),
            b"big" => Ok(true),
            other => Err(self.error(format!(
                "unknown byteorder {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// Counts `bytes` more to inflate from entry `what`, before they are inflated.
    fn count_inflated(&mut self, bytes: u64, what: &str) -> Result<()> {
        self.inflated = self.inflated.saturating_add(bytes);
        let (total, limit) = (self.inflated, self.limit);
        self.within(total, limit, what, "inflate", "a decompression bomb?")
    }

    /// Counts `bytes` more of tensors to build, before they are built.
    fn count_built(&mut self, bytes: u64, what: &str) -> Result<()> {
        self.built = self.built.saturating_add(bytes);
        let (total, limit) = (self.built, self.limit);
        self.within(total, limit, what, "build", "many views of one storage?")
    }

    fn within(&self, total: u64, limit: u64, what: &str, verb: &str, hint: &str) -> Result<()> {
        if total <= limit {
            return Ok(());
        }
        Err(self.error(format!(
            "{what}: the archive's tensors would {verb} more than {limit} bytes ({hint} set {} \
             to a number of MiB to raise the limit)",
            FileLimit::WEIGHTS.env
        )))
    }

    /// Reads the whole entry `name`, whose declared size must be at most `limit` bytes; refuses an
    /// entry that inflates beyond its declared size.
    fn read_whole_entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let declared = self.declared_size(name)?;
        if declared > limit {
            return Err(self.error(format!(
                "{name}: entry of {declared} bytes exceeds the {limit}-byte limit"
            )));
        }
        self.read_entry(name, declared, true)
    }

    /// The uncompressed size that the archive declares for entry `name`.
    fn declared_size(&mut self, name: &str) -> Result<u64> {
        let entry = self.zip.by_name(name);
        entry
            .map(|e| e.size())
            .map_err(|e| XincError::checkpoint(&self.path, format!("{name}: {e}")))
    }

    /// Reads the first `len` bytes of entry `name` (which declares at least that many), counting
    /// them against the limit before inflating them. With `whole`, also checks that nothing
    /// follows (the declared size can lie; counting what comes out cannot).
    fn read_entry(&mut self, name: &str, len: u64, whole: bool) -> Result<Vec<u8>> {
        self.count_inflated(len, name)?;
        let path = self.path.clone();
        let fail = |e: std::io::Error| XincError::checkpoint(&path, format!("{name}: {e}"));
        let entry = self
            .zip
            .by_name(name)
            .map_err(|e| XincError::checkpoint(&path, format!("{name}: {e}")))?;
        let capacity = usize::try_from(len).map_err(|_| {
            XincError::checkpoint(&path, format!("{name}: {len} bytes do not fit in memory"))
        })?;
        // A declared size can lie: memory grows with what really comes out.
        let mut bytes = Vec::with_capacity(capacity.min(MAX_PREALLOCATION));
        let mut reader = entry.take(len.saturating_add(u64::from(whole)));
        (&mut reader)
            .take(len)
            .read_to_end(&mut bytes)
            .map_err(fail)?;
        if (bytes.len() as u64) < len {
            return Err(XincError::checkpoint(
                &path,
                format!("{name}: the entry ends after {} of its {len} bytes (truncated or corrupt archive)", bytes.len()),
            ));
        }
        if whole && reader.read(&mut [0u8]).map_err(fail)? > 0 {
            return Err(XincError::checkpoint(
                &path,
                format!("{name}: the entry inflates beyond its declared size of {len} bytes (a forged archive)"),
            ));
        }
        Ok(bytes)
    }

    fn pickle_value(&mut self) -> Result<Value> {
        let name = format!("{}data.pkl", self.prefix);
        let limit = FileLimit::PICKLE.bytes()?;
        let declared = self.declared_size(&name)?;
        if declared > limit {
            return Err(self.error(format!(
                "{name}: the pickle inflates to {declared} bytes, more than a {} may hold ({limit} \
                 bytes; set {} to a number of MiB to raise it)",
                FileLimit::PICKLE.what,
                FileLimit::PICKLE.env
            )));
        }
        let bytes = self.read_entry(&name, declared, true)?;
        let cap = usize::try_from(limit.saturating_mul(PICKLE_BUDGET_FACTOR)).unwrap_or(usize::MAX);
        let (value, _) = pickle::parse_with_budget(&bytes, pickle::budget_for(bytes.len(), cap));
        value.map_err(|e| {
            let hint = match e.kind {
                PickleErrorKind::OverBudget => format!(
                    " (the budget is {} MiB + {} bytes per pickle byte, at most {PICKLE_BUDGET_FACTOR} \
                     times the data.pkl limit; set {} to a number of MiB to raise it)",
                    pickle::BUDGET_BASE >> 20,
                    pickle::BUDGET_PER_BYTE,
                    FileLimit::PICKLE.env
                ),
                PickleErrorKind::Malformed => String::new(),
            };
            self.error(format!("{name}: {e}{hint}"))
        })
    }

    /// Validates one tensor of the selected dict (no data read).
    fn entry(&self, name: &str, tensor: &TensorRef) -> Result<Entry> {
        let fail = |reason: String| self.error(format!("tensor `{name}`: {reason}"));
        let kind = StorageKind::from_name(&tensor.storage_type)
            .ok_or_else(|| fail(format!("unsupported storage type {}", tensor.storage_type)))?;
        if let Some(dtype) = &tensor.dtype {
            if dtype != kind.torch_dtype() {
                return Err(fail(format!(
                    "its dtype torch.{dtype} differs from its storage's ({}, torch.{})",
                    tensor.storage_type,
                    kind.torch_dtype()
                )));
            }
        }
        let layout = StridedLayout::new(tensor).map_err(fail)?;
        if layout.extent > tensor.storage_numel {
            return Err(fail(format!(
                "it reaches element {} of storage `{}data/{}`, which has {} elements",
                layout.extent, self.prefix, tensor.storage_key, tensor.storage_numel
            )));
        }
        Ok(Entry {
            name: name.to_string(),
            tensor: tensor.clone(),
            kind,
            layout,
        })
    }

    /// Reads storage `key` once, up to the last element that `users` need, and builds their
    /// tensors from it.
    fn build_from_storage(&mut self, key: &str, users: &[&Entry]) -> Result<Vec<Tensor>> {
        let Some(first) = users.first() else {
            return Ok(Vec::new());
        };
        let (kind, width) = (first.kind, first.kind.size());
        let entry_name = format!("{}data/{key}", self.prefix);
        let extent = users.iter().map(|e| e.layout.extent).max().unwrap_or(0);
        let needed = extent
            .checked_mul(width)
            .ok_or_else(|| self.error(format!("storage `{entry_name}`: size overflows")))?
            as u64;
        let declared = self.zip.by_name(&entry_name).map(|e| e.size());
        let declared = declared.map_err(|e| {
            self.error(format!(
                "tensor `{}`: storage entry `{entry_name}` is missing ({e})",
                first.name
            ))
        })?;
        if declared < needed {
            // the first of the tensors that reach furthest
            let widest = users
                .iter()
                .rev()
                .max_by_key(|e| e.layout.extent)
                .unwrap_or(first);
            return Err(self.error(format!(
                "tensor `{}` needs {} bytes of storage `{entry_name}`, which holds {declared}",
                widest.name,
                widest.layout.extent.saturating_mul(width)
            )));
        }
        let mut storage = self.read_entry(&entry_name, needed, false)?;
        if self.big_endian {
            storage.chunks_exact_mut(width).for_each(<[u8]>::reverse);
        }
        users
            .iter()
            .map(|e| {
                let bytes = e
                    .layout
                    .numel
                    .saturating_mul(e.kind.dtype().size_in_bytes());
                self.count_built(bytes as u64, &format!("tensor `{}`", e.name))?;
                let data = gather(&storage, &e.tensor, e.layout.numel, width).ok_or_else(|| {
                    self.error(format!("tensor `{}`: view outside its storage", e.name))
                })?;
                kind.to_tensor(&data, &e.tensor.shape)
                    .map_err(|err| self.error(format!("tensor `{}`: {err}", e.name)))
            })
            .collect()
    }
}

/// The first bytes of `reader` (to tell what a file that is not a zip archive is), rewound.
fn read_head(reader: &mut (impl Read + Seek)) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4);
    reader.by_ref().take(4).read_to_end(&mut head)?;
    reader.seek(SeekFrom::Start(0))?;
    Ok(head)
}

/// Why a file that starts with `head` is not a readable zip archive.
fn not_an_archive(head: &[u8], e: &zip::result::ZipError) -> String {
    match head {
        [] => "the file is empty".to_string(),
        [b'P', b'K', ..] => format!("truncated or corrupt zip archive ({e})"),
        [0x80, ..] => format!(
            "not a zip archive: legacy torch.save format (torch < 1.6) is not supported; \
             re-save with a newer torch or export safetensors ({e})"
        ),
        _ => format!("not a zip archive, so not a torch.save checkpoint ({e})"),
    }
}

/// The prefix of the shortest entry name that is `data.pkl` or ends in `/data.pkl`.
fn pickle_prefix<R: Read + Seek>(zip: &ZipArchive<R>) -> Option<String> {
    zip.file_names()
        .filter_map(|name| name.ok())
        .filter_map(|name| {
            let prefix = name.strip_suffix("data.pkl")?;
            (prefix.is_empty() || prefix.ends_with('/')).then(|| prefix.to_string())
        })
        .min_by_key(String::len)
}

/// A dict chosen by [`select_dict`]: a label for messages and its entries.
type Selection<'v> = (String, &'v [(Value, Value)]);

/// Picks the dict of tensors in the decoded checkpoint; see [`read_torch_tensors`].
fn select_dict<'v>(
    root: &'v Value,
    key: Option<&str>,
) -> std::result::Result<Selection<'v>, String> {
    let top = root
        .as_dict()
        .ok_or_else(|| format!("the checkpoint holds {} instead of a dict", root.kind()))?;
    let Some(key) = key else {
        let nested = STATE_DICT_KEYS.iter().find_map(|k| {
            let entries = root.get(k)?.as_dict()?;
            holds_tensors(entries).then(|| (format!("`{k}`"), entries))
        });
        return Ok(nested.unwrap_or_else(|| ("the top-level dict".to_string(), top)));
    };
    let value = lookup_path(root, key).ok_or_else(|| {
        let keys: Vec<&str> = top
            .iter()
            .filter_map(|(k, _)| k.as_str())
            .take(20)
            .collect();
        format!("key `{key}` not found; top-level keys: {keys:?}")
    })?;
    let entries = value
        .as_dict()
        .ok_or_else(|| format!("`{key}` holds {}, not a dict of tensors", value.kind()))?;
    Ok((format!("`{key}`"), entries))
}

fn holds_tensors(entries: &[(Value, Value)]) -> bool {
    entries.iter().any(|(_, v)| matches!(v, Value::Tensor(_)))
}

/// Looks up a dotted path: a whole key first, else the first `head.rest` split whose head is a key.
fn lookup_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(found) = value.get(path) {
        return Some(found);
    }
    path.match_indices('.').find_map(|(i, _)| {
        let (head, rest) = path.split_at(i);
        lookup_path(value.get(head)?, rest.get(1..)?)
    })
}

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageKind {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageKind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => StorageKind::F32,
            "DoubleStorage" => StorageKind::F64,
            "HalfStorage" => StorageKind::F16,
            "BFloat16Storage" => StorageKind::BF16,
            "LongStorage" => StorageKind::I64,
            "IntStorage" => StorageKind::I32,
            "ShortStorage" => StorageKind::I16,
            "CharStorage" => StorageKind::I8,
            "ByteStorage" | "UntypedStorage" => StorageKind::U8,
            "BoolStorage" => StorageKind::Bool,
            _ => return None,
        })
    }

    /// The `torch` dtype of the storage's elements, as `_rebuild_tensor_v3` names it.
    fn torch_dtype(self) -> &'static str {
        match self {
            StorageKind::F32 => "float32",
            StorageKind::F64 => "float64",
            StorageKind::F16 => "float16",
            StorageKind::BF16 => "bfloat16",
            StorageKind::I64 => "int64",
            StorageKind::I32 => "int32",
            StorageKind::I16 => "int16",
            StorageKind::I8 => "int8",
            StorageKind::U8 => "uint8",
            StorageKind::Bool => "bool",
        }
    }

    /// The dtype of the tensors built from the storage (narrow integers are widened to I64).
    fn dtype(self) -> DType {
        match self {
            StorageKind::F32 => DType::F32,
            StorageKind::F64 => DType::F64,
            StorageKind::F16 => DType::F16,
            StorageKind::BF16 => DType::BF16,
            StorageKind::I64 | StorageKind::I32 | StorageKind::I16 | StorageKind::I8 => DType::I64,
            StorageKind::U8 | StorageKind::Bool => DType::U8,
        }
    }

    /// Bytes per element.
    fn size(self) -> usize {
        match self {
            StorageKind::F64 | StorageKind::I64 => 8,
            StorageKind::F32 | StorageKind::I32 => 4,
            StorageKind::F16 | StorageKind::BF16 | StorageKind::I16 => 2,
            StorageKind::I8 | StorageKind::U8 | StorageKind::Bool => 1,
        }
    }

    /// Builds a CPU tensor from contiguous little-endian elements.
    fn to_tensor(self, bytes: &[u8], shape: &[usize]) -> candle_core::Result<Tensor> {
        if let StorageKind::I32 | StorageKind::I16 | StorageKind::I8 = self {
            return Tensor::from_vec(widen_ints(bytes, self.size()), shape, &Device::Cpu);
        }
        let native = if cfg!(target_endian = "big") {
            let mut swapped = bytes.to_vec();
            swapped
                .chunks_exact_mut(self.size())
                .for_each(<[u8]>::reverse);
            Cow::Owned(swapped)
        } else {
            Cow::Borrowed(bytes)
        };
        Tensor::from_raw_buffer(&native, self.dtype(), shape, &Device::Cpu)
    }
}

/// Sign-extends little-endian integers of `width` bytes (at most 8) to i64.
fn widen_ints(bytes: &[u8], width: usize) -> Vec<i64> {
    bytes
        .chunks_exact(width)
        .map(|chunk| {
            let negative = chunk.last().is_some_and(|b| b & 0x80 != 0);
            let mut raw = [if negative { 0xff } else { 0 }; 8];
            raw.iter_mut().zip(chunk).for_each(|(dst, src)| *dst = *src);
            i64::from_le_bytes(raw)
        })
        .collect()
}

/// Validated size facts of a strided view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StridedLayout {
    /// Elements of the tensor.
    numel: usize,
    /// One past the highest storage element the view touches (0 for an empty tensor).
    extent: usize,
}

impl StridedLayout {
    fn new(tensor: &TensorRef) -> std::result::Result<Self, String> {
        let (shape, stride) = (&tensor.shape, &tensor.stride);
        if shape.len() != stride.len() {
            return Err("shape and stride differ in length".into());
        }
        let overflow = || format!("shape {shape:?} / stride {stride:?} overflows");
        // candle multiplies the non-zero dimensions even for an empty tensor
        shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        let numel = shape.iter().product::<usize>();
        if numel == 0 {
            return Ok(StridedLayout { numel, extent: 0 });
        }
        let last = shape
            .iter()
            .zip(stride)
            .try_fold(tensor.storage_offset, |acc, (&d, &s)| {
                (d - 1)
                    .checked_mul(s)
                    .and_then(|span| acc.checked_add(span))
            })
            .ok_or_else(overflow)?;
        let extent = last.checked_add(1).ok_or_else(overflow)?;
        if numel > extent.max(MAX_EXPANDED_ELEMENTS) {
            return Err(format!(
                "{numel} elements repeat {extent} storage elements (stride 0); refusing to expand beyond {MAX_EXPANDED_ELEMENTS}"
            ));
        }
        Ok(StridedLayout { numel, extent })
    }
}

/// Whether `stride` is the row-major stride of `shape` (dimensions of size 1 may have any stride).
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&dim, &step) in shape.iter().zip(stride).rev() {
        if dim != 1 && step != expected {
            return false;
        }
        expected = expected.saturating_mul(dim);
    }
    true
}

/// The `numel` elements (`width` bytes each) of a strided view of `storage` in row-major order:
/// borrowed when the view is contiguous, else copied. `None` if the view leaves the storage.
fn gather<'s>(
    storage: &'s [u8],
    tensor: &TensorRef,
    numel: usize,
    width: usize,
) -> Option<Cow<'s, [u8]>> {
    let (shape, stride) = (&tensor.shape, &tensor.stride);
    let byte = |element: usize| element.checked_mul(width);
    if is_contiguous(shape, stride) {
        let start = byte(tensor.storage_offset)?;
        let end = start.checked_add(byte(numel)?)?;
        return storage.get(start..end).map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(byte(numel)?);
    let mut index = vec![0usize; shape.len()];
    let mut element = tensor.storage_offset;
    for _ in 0..numel {
        let start = byte(element)?;
        out.extend_from_slice(storage.get(start..start.checked_add(width)?)?);
        element = next_element(&mut index, shape, stride, element);
    }
    Some(Cow::Owned(out))
}

/// Advances the row-major multi-index `index` by one and returns the matching storage element.
fn next_element(index: &mut [usize], shape: &[usize], stride: &[usize], element: usize) -> usize {
    let mut element = element;
    for ((i, &dim), &step) in index.iter_mut().zip(shape).zip(stride).rev() {
        if *i + 1 < dim {
            *i += 1;
            return element.saturating_add(step);
        }
        element = element.saturating_sub(step.saturating_mul(*i));
        *i = 0;
    }
    element
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    const MARKER: &str = "/tmp/xinc_pwned";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pickles")
            .join(name)
    }

    /// The golden folder (`XINC_GOLDEN`, else `../shared/golden`), if present.
    fn golden_dir() -> Option<PathBuf> {
        let dir = std::env::var_os("XINC_GOLDEN")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden"));
        dir.is_dir().then_some(dir)
    }

    fn load(name: &str, key: Option<&str>) -> HashMap<String, Tensor> {
        read_torch_tensors(&fixture(name), key)
            .unwrap()
            .into_iter()
            .collect()
    }

    fn names(name: &str) -> Vec<String> {
        let tensors = read_torch_tensors(&fixture(name), None).unwrap();
        tensors.into_iter().map(|(n, _)| n).collect()
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn i64s(t: &Tensor) -> Vec<i64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn checkpoint_reason(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(XincError::Checkpoint { reason, .. }) => reason,
            other => panic!("expected a Checkpoint error, got {other:?}"),
        }
    }

    fn zip_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            writer.start_file(name.as_str(), options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn zip_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut zip = ZipArchive::new(File::open(path).unwrap()).unwrap();
        (0..zip.len())
            .map(|i| {
                let mut entry = zip.by_index(i).unwrap();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (entry.name().unwrap().to_string(), data)
            })
            .collect()
    }

    fn tensors_in_memory(bytes: Vec<u8>, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
        let archive = Archive::from_reader(Path::new("memory.pt"), Cursor::new(bytes))?;
        TorchCheckpoint::index(archive, key)?.read_all()
    }

    #[test]
    fn plain_state_dict_keeps_order_dtypes_and_values() {
        let expected_names = [
            "linear.weight",
            "linear.weight_t",
            "step",
            "window",
            "every_other",
            "expanded",
            "empty",
            "half",
            "bf16",
            "double",
            "int32",
            "int16",
            "int8",
            "uint8",
            "mask",
        ];
        assert_eq!(names("plain_state_dict.pt"), expected_names);
        let t = load("plain_state_dict.pt", None);
        assert_eq!(t["linear.weight"].dims(), [2, 3]);
        assert_eq!(f32s(&t["linear.weight"]), [1., 2., 3., 4., 5., 6.]);
        assert_eq!(t["step"].dims(), [] as [usize; 0]);
        assert_eq!(t["step"].dtype(), DType::I64);
        assert_eq!(t["step"].to_scalar::<i64>().unwrap(), 7);
        assert_eq!(t["empty"].dims(), [0, 3]);
        assert_eq!(t["half"].dtype(), DType::F16);
        assert_eq!(f32s(&t["half"]), [1.5, -2.0]);
        assert_eq!(t["bf16"].dtype(), DType::BF16);
        assert_eq!(f32s(&t["bf16"]), [1.0, -0.5, 3.0]);
        assert_eq!(t["double"].dtype(), DType::F64);
        assert_eq!(t["double"].to_vec1::<f64>().unwrap(), [0.1, -2.5]);
        assert_eq!(i64s(&t["int32"]), [-3, 4]);
        assert_eq!(i64s(&t["int16"]), [-300]);
        assert_eq!(i64s(&t["int8"]), [-5, 6]);
        assert_eq!(t["uint8"].to_vec1::<u8>().unwrap(), [200, 1]);
        assert_eq!(t["mask"].to_vec1::<u8>().unwrap(), [1, 0, 1]);
    }

    #[test]
    fn strided_views_are_gathered() {
        let t = load("plain_state_dict.pt", None);
        assert_eq!(t["linear.weight_t"].dims(), [3, 2]);
        assert_eq!(f32s(&t["linear.weight_t"]), [1., 4., 2., 5., 3., 6.]);
        assert_eq!(t["window"].dims(), [2, 2]);
        assert_eq!(f32s(&t["window"]), [11., 12., 14., 15.]);
        assert_eq!(f32s(&t["every_other"]), [10., 12., 14.]);
        assert_eq!(f32s(&t["expanded"]), [9., 8., 9., 8.]);
        // every returned tensor is an ordinary contiguous candle tensor
        assert!(t["linear.weight_t"].is_contiguous());
    }

    #[test]
    fn layout_checks_overflow_and_expansion() {
        let view = |offset: usize, shape: Vec<usize>, stride: Vec<usize>| TensorRef {
            storage_key: "0".into(),
            storage_type: "FloatStorage".into(),
            location: "cpu".into(),
            storage_numel: 100,
            storage_offset: offset,
            shape,
            stride,
            dtype: None,
        };
        let layout = StridedLayout::new(&view(1, vec![2, 2], vec![3, 1])).unwrap();
        assert_eq!(
            layout,
            StridedLayout {
                numel: 4,
                extent: 6
            }
        );
        assert_eq!(
            StridedLayout::new(&view(0, vec![], vec![])).unwrap(),
            StridedLayout {
                numel: 1,
                extent: 1
            }
        );
        assert_eq!(
            StridedLayout::new(&view(5, vec![0, 7], vec![7, 1]))
                .unwrap()
                .numel,
            0
        );
        assert!(StridedLayout::new(&view(0, vec![usize::MAX, 2], vec![1, 1])).is_err());
        assert!(StridedLayout::new(&view(0, vec![0, usize::MAX, 4], vec![1, 1, 1])).is_err());
        assert!(StridedLayout::new(&view(usize::MAX, vec![2], vec![1])).is_err());
        assert!(StridedLayout::new(&view(0, vec![1 << 30], vec![0])).is_err());
        assert!(StridedLayout::new(&view(0, vec![2], vec![1, 1])).is_err());
        assert!(is_contiguous(&[2, 1, 3], &[3, 99, 1]));
        assert!(!is_contiguous(&[3, 2], &[1, 3]));
    }

    #[test]
    fn lightning_checkpoint_autodetects_state_dict() {
        for name in ["lightning_p2.ckpt", "lightning_p4.ckpt"] {
            assert_eq!(
                names(name),
                ["model.net.0.weight", "model.net.0.bias", "model.B"],
                "{name}"
            );
            let t = load(name, None);
            assert_eq!(t["model.net.0.weight"].dims(), [2, 3]);
            assert_eq!(
                f32s(&t["model.net.0.weight"]),
                [0.5, -1.0, 2.0, 0.0, 0.25, -0.75]
            );
            assert_eq!(f32s(&t["model.net.0.bias"]), [0.1, -0.2]);
            assert_eq!(f32s(&t["model.B"]), [0., 1., 2., 3., 4., 5.]);
        }
    }

    #[test]
    fn protocol_4_matches_protocol_2() {
        let p2 = read_torch_tensors(&fixture("lightning_p2.ckpt"), Some("state_dict")).unwrap();
        let p4 = read_torch_tensors(&fixture("lightning_p4.ckpt"), Some("state_dict")).unwrap();
        assert_eq!(p2.len(), p4.len());
        for ((n2, t2), (n4, t4)) in p2.iter().zip(&p4) {
            assert_eq!(n2, n4);
            assert_eq!(f32s(t2), f32s(t4), "{n2}");
        }
        assert_eq!(
            read_pickle_value(&fixture("lightning_p2.ckpt")).unwrap(),
            read_pickle_value(&fixture("lightning_p4.ckpt")).unwrap()
        );
    }

    #[test]
    fn explicit_and_dotted_keys() {
        let ema = load("lightning_p2.ckpt", Some("extra.ema"));
        assert_eq!(f32s(&ema["w"]), [3.0, 4.0]);
        let reason = checkpoint_reason(read_torch_tensors(
            &fixture("lightning_p2.ckpt"),
            Some("nope"),
        ));
        assert!(
            reason.contains("key `nope` not found") && reason.contains("\"state_dict\""),
            "{reason}"
        );
        let reason = checkpoint_reason(read_torch_tensors(
            &fixture("lightning_p2.ckpt"),
            Some("epoch"),
        ));
        assert!(reason.contains("`epoch` holds int, not a dict"), "{reason}");
        let reason = checkpoint_reason(read_torch_tensors(
            &fixture("lightning_p2.ckpt"),
            Some("loops"),
        ));
        assert!(reason.contains("no tensors in `loops`"), "{reason}");
    }

    #[test]
    fn lightning_metadata_is_readable_as_data() {
        let root = read_pickle_value(&fixture("lightning_p2.ckpt")).unwrap();
        assert_eq!(root.get("epoch").and_then(Value::as_i64), Some(999));
        assert_eq!(root.get("global_step").and_then(Value::as_i64), Some(1000));
        assert_eq!(root.get("resolver_cache"), Some(&Value::Dict(vec![])));
        assert_eq!(
            root.get("tags"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Int(2),
                Value::Int(3)
            ]))
        );
        let any = Value::Global {
            module: "typing".into(),
            name: "Any".into(),
        };
        assert_eq!(root.get("any"), Some(&any));
        let cfg = root
            .get("hyper_parameters")
            .and_then(|h| h.get("cfg"))
            .unwrap();
        let Value::Object {
            class,
            state: Some(state),
            ..
        } = cfg
        else {
            panic!("{cfg:?}")
        };
        assert_eq!(
            class,
            &("omegaconf.dictconfig".to_string(), "DictConfig".to_string())
        );
        let common = state.get("_content").and_then(|c| c.get("common")).unwrap();
        let Value::Object {
            state: Some(common_state),
            ..
        } = common
        else {
            panic!("{common:?}")
        };
        assert_eq!(common_state.get("_parent"), Some(&Value::Cycle));
    }

    #[test]
    fn malicious_pickle_stays_inert() {
        let _ = std::fs::remove_file(MARKER);
        let tensors = read_torch_tensors(&fixture("malicious.pt"), None).unwrap();
        assert_eq!(tensors.len(), 1);
        assert_eq!(tensors[0].0, "weight");
        assert_eq!(f32s(&tensors[0].1), [1., 2., 3.]);
        let root = read_pickle_value(&fixture("malicious.pt")).unwrap();
        let Some(Value::Object {
            class,
            args,
            state: None,
        }) = root.get("payload")
        else {
            panic!("{root:?}")
        };
        assert_eq!(class, &("os".to_string(), "system".to_string()));
        assert_eq!(
            **args,
            Value::Tuple(vec![Value::Str(format!("touch {MARKER}"))])
        );
        let Some(Value::Object { class, .. }) = root.get("payload_eval") else {
            panic!("{root:?}")
        };
        assert_eq!(class, &("__builtin__".to_string(), "eval".to_string()));
        assert!(!Path::new(MARKER).exists(), "the pickle executed code");
    }

    #[test]
    fn truncated_and_corrupt_files_give_checkpoint_errors() {
        let reason = checkpoint_reason(read_torch_tensors(&fixture("truncated.pt"), None));
        assert!(
            reason.starts_with("truncated or corrupt zip archive ("),
            "{reason}"
        );
        let reason = checkpoint_reason(read_torch_tensors(&fixture("truncated_pickle.pt"), None));
        assert!(
            reason.contains("archive/data.pkl: pickle byte") && reason.contains("truncated"),
            "{reason}"
        );
        let reason = checkpoint_reason(read_torch_tensors(&fixture("short_storage.pt"), None));
        assert!(
            reason.contains(
                "tensor `linear.weight` needs 24 bytes of storage `archive/data/0`, which holds 8"
            ),
            "{reason}"
        );
    }

    #[test]
    fn legacy_and_random_files_are_not_zip() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("legacy.pt");
        std::fs::write(
            &legacy,
            b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.",
        )
        .unwrap();
        let reason = checkpoint_reason(read_torch_tensors(&legacy, None));
        assert!(
            reason.starts_with(
                "not a zip archive: legacy torch.save format (torch < 1.6) is not supported"
            ),
            "{reason}"
        );
        let reason = checkpoint_reason(read_pickle_value(&legacy));
        assert!(
            reason.contains("re-save with a newer torch or export safetensors"),
            "{reason}"
        );
        let missing = dir.path().join("missing.pt");
        assert!(matches!(
            read_torch_tensors(&missing, None),
            Err(XincError::Io { .. })
        ));
    }

    /// A protocol-2 pickle of `OrderedDict(name -> float tensor)`; each entry is (name, storage
    /// key, storage numel, offset, shape, `Some(dtype)` for `_rebuild_tensor_v3`).
    fn float_state_dict(entries: &[(&str, &str, usize, usize, &[usize], Option<&str>)]) -> Vec<u8> {
        let text = |s: &str| [&[b'X'][..], &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat();
        let int = |n: usize| [&[b'J'][..], &(n as i32).to_le_bytes()].concat();
        let ints = |v: &[usize]| {
            [
                vec![b'('],
                v.iter().flat_map(|&n| int(n)).collect(),
                vec![b't'],
            ]
            .concat()
        };
        let mut out = b"\x80\x02ccollections\nOrderedDict\n)R".to_vec();
        for &(name, key, numel, offset, shape, dtype) in entries {
            let mut stride = vec![1; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                stride[i] = stride[i + 1] * shape[i + 1];
            }
            let rebuild = if dtype.is_some() { "v3" } else { "v2" };
            out.extend(text(name));
            out.extend(format!("ctorch._utils\n_rebuild_tensor_{rebuild}\n((").bytes());
            out.extend(text("storage"));
            out.extend(b"ctorch\nFloatStorage\n");
            out.extend(text(key));
            out.extend(text("cpu"));
            out.extend(int(numel));
            out.extend(b"tQ");
            out.extend(int(offset));
            out.extend(ints(shape));
            out.extend(ints(&stride));
            out.extend(b"\x89ccollections\nOrderedDict\n)R");
            if let Some(dtype) = dtype {
                out.extend(format!("ctorch\n{dtype}\n").bytes());
            }
            out.extend(b"tRs");
        }
        out.push(b'.');
        out
    }

    fn floats(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values.into_iter().flat_map(f32::to_le_bytes).collect()
    }

    #[test]
    fn only_the_requested_storages_are_read() {
        // storage `2` (of `window` and `every_other`) is missing: the other tensors still read
        let entries: Vec<_> = zip_entries(&fixture("plain_state_dict.pt"))
            .into_iter()
            .filter(|(name, _)| name != "archive/data/2")
            .collect();
        let archive = Archive::from_reader(Path::new("m.pt"), Cursor::new(zip_bytes(&entries)));
        let mut checkpoint = TorchCheckpoint::index(archive.unwrap(), None).unwrap();
        let names: Vec<String> = checkpoint.tensors().into_iter().map(|i| i.name).collect();
        assert_eq!(names.len(), 15);
        let read = checkpoint.read(&["step", "linear.weight_t"]).unwrap();
        assert_eq!(read[0].0, "step");
        assert_eq!(i64s(&read[0].1), [7]);
        assert_eq!(f32s(&read[1].1), [1., 4., 2., 5., 3., 6.]);
        // storage 0 read once for its tensor, storage 1 (8 bytes), nothing else
        assert_eq!(
            checkpoint.archive.inflated,
            entries_size(&entries, &["data.pkl", "byteorder"]) + 24 + 8
        );
        let reason = checkpoint_reason(checkpoint.read_all());
        assert!(
            reason.contains("storage entry `archive/data/2` is missing"),
            "{reason}"
        );
        let reason = checkpoint_reason(checkpoint.read(&["nope"]));
        assert!(
            reason.contains("no tensor `nope` in the checkpoint"),
            "{reason}"
        );
    }

    /// Total size of the entries whose names end with one of `suffixes`.
    fn entries_size(entries: &[(String, Vec<u8>)], suffixes: &[&str]) -> u64 {
        entries
            .iter()
            .filter(|(n, _)| suffixes.iter().any(|s| n.ends_with(s)))
            .map(|(_, d)| d.len() as u64)
            .sum()
    }

    #[test]
    fn a_storage_viewed_by_many_tensors_is_inflated_once() {
        let names: Vec<String> = (0..2000).map(|i| format!("view.{i}")).collect();
        let entries: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), "0", 1000, i % 990, &[10usize][..], None))
            .collect();
        let pickle = float_state_dict(&entries);
        let storage = floats((0..1000).map(|i| i as f32));
        let bytes = zip_bytes(&[
            ("archive/data.pkl".into(), pickle.clone()),
            ("archive/data/0".into(), storage),
        ]);
        let archive = Archive::from_reader(Path::new("m.pt"), Cursor::new(bytes)).unwrap();
        let mut checkpoint = TorchCheckpoint::index(archive, None).unwrap();
        let tensors = checkpoint.read_all().unwrap();
        assert_eq!(tensors.len(), 2000);
        assert_eq!(
            f32s(&tensors[1999].1),
            (19..29).map(|i| i as f32).collect::<Vec<_>>()
        );
        // the storage up to the furthest view (999 elements), once; 2000 tensors of 10 floats
        assert_eq!(checkpoint.archive.inflated, pickle.len() as u64 + 999 * 4);
        assert_eq!(checkpoint.archive.built, 2000 * 40);
    }

    #[test]
    fn rebuild_tensor_v3_states_the_dtype_of_its_storage() {
        let pickle = float_state_dict(&[("w", "0", 2, 0, &[2], Some("float32"))]);
        let bytes = zip_bytes(&[
            ("archive/data.pkl".into(), pickle),
            ("archive/data/0".into(), floats([1.5, -2.0])),
        ]);
        let tensors = tensors_in_memory(bytes, None).unwrap();
        assert_eq!(f32s(&tensors[0].1), [1.5, -2.0]);
        let pickle = float_state_dict(&[("w", "0", 2, 0, &[2], Some("int64"))]);
        let bytes = zip_bytes(&[
            ("archive/data.pkl".into(), pickle),
            ("archive/data/0".into(), floats([1.5, -2.0])),
        ]);
        let reason = checkpoint_reason(tensors_in_memory(bytes, None));
        assert_eq!(
            reason,
            "tensor `w`: its dtype torch.int64 differs from its storage's (FloatStorage, torch.float32)"
        );
    }

    #[test]
    fn missing_pickle_and_storage_entries_are_named() {
        let reason = checkpoint_reason(tensors_in_memory(
            zip_bytes(&[("archive/version".into(), b"3\n".to_vec())]),
            None,
        ));
        assert!(reason.contains("no data.pkl entry"), "{reason}");
        let pickle_only: Vec<_> = zip_entries(&fixture("plain_state_dict.pt"))
            .into_iter()
            .filter(|(name, _)| !name.contains("/data/"))
            .collect();
        let reason = checkpoint_reason(tensors_in_memory(zip_bytes(&pickle_only), None));
        assert!(
            reason.contains("tensor `linear.weight`: storage entry `archive/data/0` is missing"),
            "{reason}"
        );
    }

    #[test]
    fn big_endian_archives_are_swapped() {
        let entries: Vec<_> = zip_entries(&fixture("plain_state_dict.pt"))
            .into_iter()
            .map(|(name, data)| match name.as_str() {
                "archive/byteorder" => (name, b"big".to_vec()),
                "archive/data/0" => (
                    name,
                    data.chunks(4)
                        .flat_map(|c| c.iter().rev().copied())
                        .collect(),
                ),
                _ => (name, data),
            })
            .collect();
        let tensors: HashMap<_, _> = tensors_in_memory(zip_bytes(&entries), None)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(f32s(&tensors["linear.weight_t"]), [1., 4., 2., 5., 3., 6.]);
    }

    /// Xorshift64: a deterministic pseudo-random sequence without a dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn mutated_checkpoints_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for name in [
            "plain_state_dict.pt",
            "lightning_p2.ckpt",
            "lightning_p4.ckpt",
        ] {
            let entries = zip_entries(&fixture(name));
            for _ in 0..150 {
                let mut mutated = entries.clone();
                let pickle = &mut mutated
                    .iter_mut()
                    .find(|(n, _)| n.ends_with("data.pkl"))
                    .unwrap()
                    .1;
                for _ in 0..1 + xorshift(&mut state) % 4 {
                    let at = (xorshift(&mut state) as usize) % pickle.len();
                    pickle[at] = xorshift(&mut state) as u8;
                }
                let _ = tensors_in_memory(zip_bytes(&mutated), None);
            }
        }
    }

    #[test]
    fn golden_lightning_checkpoint_matches_reference() {
        let Some(dir) = golden_dir() else {
            eprintln!(
                "SKIPPED: golden folder absent (set XINC_GOLDEN); golden checkpoint not checked"
            );
            return;
        };
        let dir = dir.join("ffn_0005");
        let ckpt = dir.join("best_model.ckpt");
        let tensors = read_torch_tensors(&ckpt, None).unwrap();
        let shapes: Vec<(&str, Vec<usize>)> = tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.dims().to_vec()))
            .collect();
        assert_eq!(
            shapes,
            [
                ("model.positional_encoding.B", vec![104, 2]),
                ("model.net.0.linear.weight", vec![104, 208]),
                ("model.net.0.linear.bias", vec![104]),
                ("model.net.1.linear.weight", vec![104, 104]),
                ("model.net.1.linear.bias", vec![104]),
                ("model.net.2.linear.weight", vec![3, 104]),
                ("model.net.2.linear.bias", vec![3]),
            ]
        );
        assert!(tensors.iter().all(|(_, t)| t.dtype() == DType::F32));
        let root = read_pickle_value(&ckpt).unwrap();
        assert_eq!(root.get("epoch").and_then(Value::as_i64), Some(999));
        assert_eq!(root.get("global_step").and_then(Value::as_i64), Some(1000));
        let tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
        compare_with_weights(&dir, &tensors);
        compare_forward_pass(&dir, &tensors);
    }

    /// Bit-identical comparison with `weights.safetensors` (the same tensors without `model.`).
    fn compare_with_weights(dir: &Path, tensors: &HashMap<String, Tensor>) {
        let path = dir.join("weights.safetensors");
        if !path.is_file() {
            eprintln!(
                "SKIPPED: {} absent; bit-identical weight check not run",
                path.display()
            );
            return;
        }
        let weights = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        assert_eq!(weights.len(), tensors.len());
        for (name, reference) in &weights {
            let ours = &tensors[&format!("model.{name}")];
            let bits = |t: &Tensor| f32s(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(ours.dims(), reference.dims(), "{name}");
            assert_eq!(bits(ours), bits(reference), "{name}");
        }
    }

    /// Runs the FFN of the golden README on `coords` and compares with the official `predicted`:
    /// it only matches if every tensor was read with the right values and layout.
    fn compare_forward_pass(dir: &Path, tensors: &HashMap<String, Tensor>) {
        let path = dir.join("io.safetensors");
        if !path.is_file() {
            eprintln!(
                "SKIPPED: {} absent; forward-pass check not run",
                path.display()
            );
            return;
        }
        let io = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let w = |name: &str| tensors[&format!("model.{name}")].clone();
        let linear = |x: &Tensor, layer: usize| {
            let weight = w(&format!("net.{layer}.linear.weight"))
                .t()
                .unwrap()
                .contiguous()
                .unwrap();
            x.matmul(&weight)
                .unwrap()
                .broadcast_add(&w(&format!("net.{layer}.linear.bias")))
                .unwrap()
        };
        let b = w("positional_encoding.B")
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        let projected = (&io["coords"] * (2.0 * std::f64::consts::PI))
            .unwrap()
            .matmul(&b)
            .unwrap();
        let fourier =
            Tensor::cat(&[projected.sin().unwrap(), projected.cos().unwrap()], 1).unwrap();
        let hidden = linear(&linear(&fourier, 0).relu().unwrap(), 1)
            .relu()
            .unwrap();
        let predicted = linear(&hidden, 2);
        let diff = (predicted - &io["predicted"])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(
            diff < 1e-5,
            "forward pass differs from the official output by {diff}"
        );
    }
}
