//! File formats below the model layer: atomic writes, safetensors files, NumPy `.npy` arrays
//! ([`npy`]), and a safe reader for PyTorch checkpoints (zip + restricted pickle) that never
//! executes pickle code.

pub mod files;
pub mod npy;
pub mod pickle;
pub mod safetensors_file;
pub mod torch;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Result, XincError};

/// Writes a file atomically: the content goes to a temporary file in the same folder, which is
/// flushed and then renamed over `path`. A reader never sees a half-written file, and a killed job
/// leaves at most a stray `*.tmp` file behind.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| XincError::io(&dir, e))?;
    let file_name = path.file_name().ok_or_else(|| {
        XincError::InvalidArgument(format!("{} is not a file path", path.display()))
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut buf = std::io::BufWriter::new(file);
        write(&mut buf)?;
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        XincError::io(path, e)
    })
}

/// Saves named tensors as one safetensors file, atomically.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    let bytes = safetensors::serialize(map.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| XincError::checkpoint(path, e.to_string()))?;
    write_atomic(path, |w| w.write_all(&bytes))
}

/// One tensor of a weights file, located but not read: what a caller checks (names, shapes,
/// dtypes) before any tensor data is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The name in the file.
    pub name: String,
    /// The dtype of the tensor once read.
    pub dtype: DType,
    /// How the file stores it (`FloatStorage`, `F32`, …), for messages.
    pub stored_as: String,
    pub shape: Vec<usize>,
}

/// Loads every tensor of a safetensors file onto `device` (the header is validated first: see
/// [`safetensors_file`]).
pub fn load_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    Ok(safetensors_file::SafetensorsFile::open(path)?
        .read_all(device)?
        .into_iter()
        .collect())
}

/// Writes f32 tensors into a safetensors file at arbitrary element offsets, so that a large
/// tensor can be produced tile by tile without ever being whole in memory. The layout (header,
/// offsets) is fixed up front from the shapes; the file is written under a temporary name and
/// renamed by [`TensorWriter::finish`]. Dropping an unfinished writer removes the temporary file.
pub struct TensorWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
    /// name -> (byte offset of the tensor in the file, number of elements)
    offsets: HashMap<String, (u64, usize)>,
    buf: Vec<u8>,
}

impl TensorWriter {
    /// Lays out a file holding f32 tensors of the given names and shapes, in that order.
    pub fn create(path: &Path, specs: &[(String, Vec<usize>)]) -> Result<Self> {
        let mut header = serde_json::Map::new();
        let mut begin = 0usize;
        let mut spans = Vec::with_capacity(specs.len());
        for (name, shape) in specs {
            let end = begin + 4 * shape.iter().product::<usize>();
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}),
            );
            spans.push((name.clone(), begin, (end - begin) / 4));
            begin = end;
        }
        let mut text = serde_json::Value::Object(header).to_string().into_bytes();
        while text.len() % 8 != 0 {
            text.push(b' ');
        }
        let data_start = 8 + text.len() as u64;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| XincError::io(dir, e))?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let mut file = std::fs::File::create(&tmp).map_err(|e| XincError::io(&tmp, e))?;
        let init = (|| {
            file.set_len(data_start + begin as u64)?;
            file.write_all(&(text.len() as u64).to_le_bytes())?;
            file.write_all(&text)
        })();
        if let Err(e) = init {
            let _ = std::fs::remove_file(&tmp);
            return Err(XincError::io(path, e));
        }
        let offsets = spans
            .into_iter()
            .map(|(name, b, n)| (name, (data_start + b as u64, n)))
            .collect();
        Ok(TensorWriter {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            offsets,
            buf: Vec::new(),
        })
    }

    /// Writes `values` into tensor `name` starting at flat element index `start`.
    pub fn write_at(&mut self, name: &str, start: usize, values: &[f32]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let &(base, len) = self.offsets.get(name).ok_or_else(|| {
            XincError::InvalidArgument(format!("no tensor `{name}` in {}", self.path.display()))
        })?;
        if start + values.len() > len {
            return Err(XincError::InvalidArgument(format!(
                "write of {} values at {start} overflows tensor `{name}` of {len}",
                values.len()
            )));
        }
        let file = self.file.as_mut().expect("file is open until finish");
        let mut res = file
            .seek(SeekFrom::Start(base + 4 * start as u64))
            .map(|_| ());
        // In pieces, so that the byte buffer stays small whatever the size of `values`.
        for piece in values.chunks(1 << 16) {
            self.buf.clear();
            self.buf.extend(piece.iter().flat_map(|v| v.to_le_bytes()));
            res = res.and_then(|_| file.write_all(&self.buf));
        }
        res.map_err(|e| XincError::io(&self.tmp, e))
    }

    /// Flushes the file and moves it to its final name.
    pub fn finish(mut self) -> Result<()> {
        let file = self.file.take().expect("file is open until finish");
        file.sync_all().map_err(|e| XincError::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| XincError::io(&self.path, e))
    }
}

impl Drop for TensorWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a value as pretty JSON, atomically.
pub(crate) fn save_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| XincError::config(path, e.to_string()))?;
    write_atomic(path, |w| w.write_all(text.as_bytes()))
}

/// Reads a JSON configuration file into `T`, naming the file and the offending field on failure.
/// The file must be a regular file within [`files::FileLimit::CONFIG`] (a FIFO or `/dev/zero` is
/// refused before it is read); serde_json refuses nesting deeper than 128 levels and numbers out
/// of the f64 range (`1e400`).
pub(crate) fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = files::read_text(path, &files::FileLimit::CONFIG)?;
    serde_json::from_str(&text).map_err(|e| XincError::config(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_writer_output_reads_back_as_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let specs = vec![("a".to_string(), vec![2, 3]), ("b".to_string(), vec![1])];
        let mut w = TensorWriter::create(&path, &specs).unwrap();
        w.write_at("a", 3, &[4.0, 5.0, 6.0]).unwrap();
        w.write_at("a", 0, &[1.0, 2.0, 3.0]).unwrap();
        w.write_at("b", 0, &[-1.5]).unwrap();
        assert!(w.write_at("b", 1, &[0.0]).is_err());
        assert!(!path.exists(), "the file appears only when finished");
        w.finish().unwrap();
        let t = load_safetensors(&path, &Device::Cpu).unwrap();
        assert_eq!(
            t["a"].to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]
        );
        assert_eq!(t["b"].to_vec1::<f32>().unwrap(), vec![-1.5]);
    }

    #[test]
    fn dropped_writer_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        drop(TensorWriter::create(&path, &[("a".to_string(), vec![4])]).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
