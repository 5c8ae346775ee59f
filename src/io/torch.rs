//! Reader for PyTorch checkpoints: `torch.save` zip archives (torch >= 1.6) and PyTorch Lightning
//! `.ckpt` files, which are the same format.
//!
//! The archive holds `<prefix>/data.pkl`, a pickle describing the saved object, and one entry
//! `<prefix>/data/<key>` per tensor storage (raw little-endian elements). The pickle is decoded by
//! the restricted VM of [`super::pickle`], which never executes pickle code; tensors are then
//! rebuilt from their storage with the saved offset, shape and strides, on the CPU.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use zip::ZipArchive;

use super::pickle::{self, TensorRef, Value};
use crate::error::{Result, XincError};

/// Entries of a top-level dict that hold the model weights, tried in this order by
/// [`read_torch_tensors`] when no key is given.
const STATE_DICT_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];
/// Largest `data.pkl` that is read.
const MAX_PICKLE_BYTES: u64 = 1 << 30;
/// Largest element count of a tensor whose strides repeat storage elements (stride 0), beyond
/// the size of the storage range it covers.
const MAX_EXPANDED_ELEMENTS: usize = 1 << 24;

/// Reads the tensors of a PyTorch checkpoint onto the CPU, in the checkpoint's order.
///
/// `key` selects a dict entry of the saved object, e.g. `Some("state_dict")`; a dotted path such
/// as `Some("extra.ema")` descends into nested dicts (keys that themselves contain dots are matched
/// whole first). With `None` the first of `state_dict`, `model_state_dict`, `model` that holds
/// tensors is used, else the top-level dict itself. Entries of the selected dict that are not
/// tensors are skipped (logged at debug level). Float tensors keep their dtype (F32, F64, F16,
/// BF16); Long/Int/Short/Char tensors become I64, Byte and Bool tensors U8.
pub fn read_torch_tensors(path: &Path, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    Checkpoint::open(path)?.tensors(key)
}

/// Decodes the pickled object of a PyTorch checkpoint, e.g. to read `epoch` or
/// `hyper_parameters`. Tensors appear as [`Value::Tensor`] references; no data is loaded.
pub fn read_pickle_value(path: &Path) -> Result<Value> {
    Checkpoint::open(path)?.pickle_value()
}

/// An open checkpoint archive.
struct Checkpoint<R> {
    path: PathBuf,
    zip: ZipArchive<R>,
    /// Entry-name prefix of the archive, e.g. `archive/` (may be empty).
    prefix: String,
    /// Whether the archive declares big-endian storages (`<prefix>/byteorder` is `big`).
    big_endian: bool,
}

impl Checkpoint<File> {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| XincError::io(path, e))?;
        Checkpoint::from_reader(path, file)
    }
}

impl<R: Read + Seek> Checkpoint<R> {
    /// Opens the archive read from `reader`; `path` only names it in errors.
    fn from_reader(path: &Path, reader: R) -> Result<Self> {
        let zip = ZipArchive::new(reader).map_err(|e| {
            XincError::checkpoint(
                path,
                format!(
                    "not a zip archive: legacy torch.save format (torch < 1.6) is not supported; \
                     re-save with a newer torch or export safetensors ({e})"
                ),
            )
        })?;
        let prefix = pickle_prefix(&zip).ok_or_else(|| {
            XincError::checkpoint(
                path,
                "no data.pkl entry in the zip archive (not a torch.save checkpoint?)",
            )
        })?;
        let mut checkpoint = Checkpoint {
            path: path.to_path_buf(),
            zip,
            prefix,
            big_endian: false,
        };
        checkpoint.big_endian = checkpoint.byteorder_is_big()?;
        Ok(checkpoint)
    }

    fn error(&self, reason: impl Into<String>) -> XincError {
        XincError::checkpoint(&self.path, reason)
    }

    fn byteorder_is_big(&mut self) -> Result<bool> {
        let name = format!("{}byteorder", self.prefix);
        if self.zip.index_for_name(&name).is_none() {
            return Ok(false);
        }
        let order = self.read_entry(&name, 16)?;
        match order.trim_ascii() {
            b"little" => Ok(false),
            b"big" => Ok(true),
            other => Err(self.error(format!(
                "unknown byteorder {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// Reads the whole entry `name`, refusing entries larger than `limit` bytes.
    fn read_entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let entry = self
            .zip
            .by_name(name)
            .map_err(|e| XincError::checkpoint(&self.path, format!("{name}: {e}")))?;
        if entry.size() > limit {
            let reason = format!(
                "{name}: entry of {} bytes exceeds the {limit}-byte limit",
                entry.size()
            );
            return Err(XincError::checkpoint(&self.path, reason));
        }
        let mut bytes = Vec::new();
        let read = entry.take(limit).read_to_end(&mut bytes);
        read.map_err(|e| self.error(format!("{name}: {e}")))?;
        Ok(bytes)
    }

    fn pickle_value(&mut self) -> Result<Value> {
        let name = format!("{}data.pkl", self.prefix);
        let bytes = self.read_entry(&name, MAX_PICKLE_BYTES)?;
        pickle::parse(&bytes).map_err(|e| self.error(format!("{name}: {e}")))
    }

    fn tensors(&mut self, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
        let root = self.pickle_value()?;
        let (label, entries) = select_dict(&root, key).map_err(|reason| self.error(reason))?;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (name, value) in entries {
            let (Value::Str(name), Value::Tensor(tensor)) = (name, value) else {
                tracing::debug!(
                    "{}: skipping non-tensor entry {:?} ({})",
                    self.path.display(),
                    name,
                    value.kind()
                );
                continue;
            };
            let loaded = self.load_tensor(name, tensor)?;
            match index.get(name) {
                Some(&i) => {
                    if let Some(slot) = tensors.get_mut(i) {
                        slot.1 = loaded;
                    }
                }
                None => {
                    index.insert(name.clone(), tensors.len());
                    tensors.push((name.clone(), loaded));
                }
            }
        }
        if tensors.is_empty() {
            return Err(self.error(format!("no tensors in {label}")));
        }
        Ok(tensors)
    }

    /// Rebuilds one tensor from its storage entry.
    fn load_tensor(&mut self, name: &str, tensor: &TensorRef) -> Result<Tensor> {
        let kind = StorageKind::from_name(&tensor.storage_type).ok_or_else(|| {
            self.error(format!(
                "tensor `{name}`: unsupported storage type {}",
                tensor.storage_type
            ))
        })?;
        let layout =
            StridedLayout::new(tensor).map_err(|e| self.error(format!("tensor `{name}`: {e}")))?;
        let storage = self.read_storage(name, tensor, layout.extent, kind.size())?;
        let mut bytes = gather(&storage, tensor, layout.numel, kind.size())
            .ok_or_else(|| self.error(format!("tensor `{name}`: view outside its storage")))?;
        if self.big_endian {
            bytes
                .chunks_exact_mut(kind.size())
                .for_each(<[u8]>::reverse);
        }
        kind.to_tensor(bytes, &tensor.shape)
            .map_err(|e| self.error(format!("tensor `{name}`: {e}")))
    }

    /// Reads the first `extent` elements (`width` bytes each) of the storage of tensor `name`.
    fn read_storage(
        &mut self,
        name: &str,
        tensor: &TensorRef,
        extent: usize,
        width: usize,
    ) -> Result<Vec<u8>> {
        let entry_name = format!("{}data/{}", self.prefix, tensor.storage_key);
        if extent > tensor.storage_numel {
            return Err(self.error(format!(
                "tensor `{name}` reaches element {extent} of storage `{entry_name}`, which has {} elements",
                tensor.storage_numel
            )));
        }
        let needed = extent
            .checked_mul(width)
            .ok_or_else(|| self.error(format!("tensor `{name}`: storage size overflows")))?;
        let missing = |e| format!("tensor `{name}`: storage entry `{entry_name}` is missing ({e})");
        let entry = self
            .zip
            .by_name(&entry_name)
            .map_err(|e| XincError::checkpoint(&self.path, missing(e)))?;
        let short = |have: u64| {
            format!("tensor `{name}` needs {needed} bytes of storage `{entry_name}`, which holds {have}")
        };
        if entry.size() < needed as u64 {
            return Err(XincError::checkpoint(&self.path, short(entry.size())));
        }
        let mut bytes = Vec::new();
        let read = entry.take(needed as u64).read_to_end(&mut bytes);
        read.map_err(|e| XincError::checkpoint(&self.path, format!("{entry_name}: {e}")))?;
        if bytes.len() != needed {
            return Err(self.error(short(bytes.len() as u64)));
        }
        Ok(bytes)
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
        let keys: Vec<&str> = top.iter().filter_map(|(k, _)| k.as_str()).collect();
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
    fn to_tensor(self, bytes: Vec<u8>, shape: &[usize]) -> candle_core::Result<Tensor> {
        let dtype = match self {
            StorageKind::F32 => DType::F32,
            StorageKind::F64 => DType::F64,
            StorageKind::F16 => DType::F16,
            StorageKind::BF16 => DType::BF16,
            StorageKind::I64 => DType::I64,
            StorageKind::U8 | StorageKind::Bool => DType::U8,
            StorageKind::I32 | StorageKind::I16 | StorageKind::I8 => {
                return Tensor::from_vec(widen_ints(&bytes, self.size()), shape, &Device::Cpu);
            }
        };
        let native = if cfg!(target_endian = "big") {
            let mut swapped = bytes;
            swapped
                .chunks_exact_mut(self.size())
                .for_each(<[u8]>::reverse);
            swapped
        } else {
            bytes
        };
        Tensor::from_raw_buffer(&native, dtype, shape, &Device::Cpu)
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

/// Copies the `numel` elements (`width` bytes each) of a strided view of `storage` into row-major
/// order. `None` if the view leaves the storage.
fn gather(storage: &[u8], tensor: &TensorRef, numel: usize, width: usize) -> Option<Vec<u8>> {
    let (shape, stride) = (&tensor.shape, &tensor.stride);
    let byte = |element: usize| element.checked_mul(width);
    if is_contiguous(shape, stride) {
        let start = byte(tensor.storage_offset)?;
        let end = start.checked_add(byte(numel)?)?;
        return storage.get(start..end).map(<[u8]>::to_vec);
    }
    let mut out = Vec::with_capacity(byte(numel)?);
    let mut index = vec![0usize; shape.len()];
    let mut element = tensor.storage_offset;
    for _ in 0..numel {
        let start = byte(element)?;
        out.extend_from_slice(storage.get(start..start.checked_add(width)?)?);
        element = next_element(&mut index, shape, stride, element);
    }
    Some(out)
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
        Checkpoint::from_reader(Path::new("memory.pt"), Cursor::new(bytes))?.tensors(key)
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
        assert!(reason.contains("not a zip archive"), "{reason}");
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
