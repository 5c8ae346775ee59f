//! Reader for safetensors files that validates the whole header before it reads any tensor.
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes of JSON mapping
//! each tensor name to its dtype, shape and byte range (`data_offsets`, relative to the end of the
//! header), then the data. [`SafetensorsFile::open`] refuses anything that is not a regular file
//! within [`FileLimit::WEIGHTS`], checks `n` against the file size before allocating the header,
//! and checks every entry (a name given once, a known dtype, a shape whose byte size does not
//! overflow and equals its byte range, ranges inside the data and not overlapping) without reading
//! data. Tensors are then read one by one ([`SafetensorsFile::read`]), each its own byte range: a
//! caller that checked the names and shapes against a model reads nothing else.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::files::{self, FileLimit};
use super::TensorInfo;
use crate::error::{Result, XincError};

/// Longest header accepted: the format's own limit (the `safetensors` crate refuses longer ones);
/// real headers take about 100 bytes per tensor.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// An open safetensors file whose header has been validated.
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    /// Offset of the data section in the file.
    data_start: u64,
    /// The tensors in header order.
    entries: Vec<Entry>,
}

struct Entry {
    info: TensorInfo,
    /// Byte range in the data section.
    begin: u64,
    end: u64,
}

impl SafetensorsFile {
    /// Opens `path` and validates its header (no tensor data is read).
    pub fn open(path: &Path) -> Result<Self> {
        let (mut file, len) = files::open_regular(path, &FileLimit::WEIGHTS)?;
        let fail = |reason: String| XincError::checkpoint(path, reason);
        if len < 8 {
            return Err(fail(format!(
                "the file holds {len} bytes, fewer than the 8-byte header length of a safetensors file"
            )));
        }
        let mut prefix = [0u8; 8];
        file.read_exact(&mut prefix)
            .map_err(|e| XincError::io(path, e))?;
        let header_len = u64::from_le_bytes(prefix);
        let data_start = header_len
            .checked_add(8)
            .filter(|&end| end <= len)
            .ok_or_else(|| {
                fail(format!(
                    "the header length {header_len} is larger than the {} bytes that follow it \
                 (truncated, or not a safetensors file)",
                    len - 8
                ))
            })?;
        if header_len > MAX_HEADER_BYTES {
            return Err(fail(format!(
                "the header length {header_len} exceeds the format's limit of {MAX_HEADER_BYTES} bytes"
            )));
        }
        let mut header = Vec::with_capacity(header_len as usize);
        (&mut file)
            .take(header_len)
            .read_to_end(&mut header)
            .map_err(|e| XincError::io(path, e))?;
        let raw: Header =
            serde_json::from_slice(&header).map_err(|e| fail(format!("malformed header: {e}")))?;
        let entries = validate(raw.0, len - data_start).map_err(fail)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            file,
            data_start,
            entries,
        })
    }

    /// Name, dtype and shape of every tensor, in header order.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        self.entries.iter().map(|e| e.info.clone()).collect()
    }

    /// Reads the tensors named `names` (in that order) onto `device`.
    pub fn read(&mut self, names: &[&str], device: &Device) -> Result<Vec<(String, Tensor)>> {
        let index: std::collections::HashMap<&str, usize> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.info.name.as_str(), i))
            .collect();
        let positions = names
            .iter()
            .map(|name| {
                index
                    .get(name)
                    .copied()
                    .ok_or_else(|| self.error(format!("no tensor `{name}` in the file")))
            })
            .collect::<Result<Vec<usize>>>()?;
        names
            .iter()
            .zip(positions)
            .map(|(name, i)| Ok((name.to_string(), self.read_at(i, device)?)))
            .collect()
    }

    /// Reads every tensor onto `device`, in header order.
    pub fn read_all(&mut self, device: &Device) -> Result<Vec<(String, Tensor)>> {
        (0..self.entries.len())
            .map(|i| {
                let tensor = self.read_at(i, device)?;
                let name = self.entries.get(i).map(|e| e.info.name.clone());
                Ok((name.unwrap_or_default(), tensor))
            })
            .collect()
    }

    fn error(&self, reason: impl Into<String>) -> XincError {
        XincError::checkpoint(&self.path, reason)
    }

    fn read_at(&mut self, index: usize, device: &Device) -> Result<Tensor> {
        let Some(entry) = self.entries.get(index) else {
            return Err(self.error("internal: no such tensor"));
        };
        let (begin, len) = (entry.begin, entry.end - entry.begin);
        let mut bytes = vec![0u8; len as usize];
        let read = self
            .file
            .seek(SeekFrom::Start(self.data_start + begin))
            .and_then(|_| self.file.read_exact(&mut bytes));
        read.map_err(|e| XincError::io(&self.path, e))?;
        let info = &entry.info;
        if cfg!(target_endian = "big") {
            let width = info.dtype.size_in_bytes().max(1);
            bytes.chunks_exact_mut(width).for_each(<[u8]>::reverse);
        }
        let tensor = Tensor::from_raw_buffer(&bytes, info.dtype, &info.shape, &Device::Cpu)
            .and_then(|t| t.to_device(device));
        tensor.map_err(|e| self.error(format!("tensor `{}`: {e}", info.name)))
    }
}

/// The header's entries in file order, `None` for `__metadata__` (duplicate keys kept, to be
/// refused).
struct Header(Vec<(String, Option<RawEntry>)>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Header;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Header, A::Error> {
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let entry = if name == "__metadata__" {
                        map.next_value::<IgnoredAny>()?;
                        None
                    } else {
                        Some(map.next_value::<RawEntry>()?)
                    };
                    entries.push((name, entry));
                }
                Ok(Header(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A safetensors dtype name as a candle dtype (those candle can hold).
fn dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

/// Checks every entry against the data section of `data_len` bytes.
fn validate(
    raw: Vec<(String, Option<RawEntry>)>,
    data_len: u64,
) -> std::result::Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut metadata = 0;
    for (name, raw) in raw {
        let Some(raw) = raw else {
            metadata += 1;
            if metadata > 1 {
                return Err("`__metadata__` appears twice in the header".into());
            }
            continue;
        };
        if !names.insert(name.clone()) {
            return Err(format!(
                "tensor `{name}` appears twice in the header (which one is meant?)"
            ));
        }
        entries.push(entry(name, raw, data_len)?);
    }
    let mut ranges: Vec<(u64, u64, &str)> = entries
        .iter()
        .filter(|e| e.end > e.begin)
        .map(|e| (e.begin, e.end, e.info.name.as_str()))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if let [(_, end, a), (begin, _, b)] = pair {
            if begin < end {
                return Err(format!("tensors `{a}` and `{b}` overlap in the data"));
            }
        }
    }
    Ok(entries)
}

/// Checks one entry: known dtype, a byte size that does not overflow and equals its range, a range
/// inside the data.
fn entry(name: String, raw: RawEntry, data_len: u64) -> std::result::Result<Entry, String> {
    let fail = |reason: String| format!("tensor `{name}`: {reason}");
    let dtype =
        dtype(&raw.dtype).ok_or_else(|| fail(format!("unsupported dtype {:?}", raw.dtype)))?;
    let shape = raw
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| fail(format!("shape {:?} does not fit in memory", raw.shape)))?;
    let bytes = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| fail(format!("shape {shape:?} of {} overflows", raw.dtype)))?;
    let (begin, end) = raw.data_offsets;
    if begin > end || end - begin != bytes as u64 {
        return Err(fail(format!(
            "shape {shape:?} of {} takes {bytes} bytes, but data_offsets [{begin}, {end}] span {}",
            raw.dtype,
            end.saturating_sub(begin)
        )));
    }
    if end > data_len {
        return Err(fail(format!(
            "data_offsets [{begin}, {end}] reach beyond the {data_len} bytes of data (truncated file?)"
        )));
    }
    Ok(Entry {
        info: TensorInfo {
            name,
            dtype,
            stored_as: raw.dtype,
            shape,
        },
        begin,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, header: &str, data: &[u8]) -> PathBuf {
        let path = dir.join("t.safetensors");
        let bytes = [
            &(header.len() as u64).to_le_bytes()[..],
            header.as_bytes(),
            data,
        ]
        .concat();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn reason(result: Result<SafetensorsFile>) -> String {
        match result {
            Err(XincError::Checkpoint { reason, .. }) => reason,
            Err(other) => panic!("expected a checkpoint error, got {other}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn reads_what_save_safetensors_writes_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[7i64, -8], &Device::Cpu).unwrap();
        let c = Tensor::new(&[200u8], &Device::Cpu).unwrap();
        let named = [("a".to_string(), a), ("b".into(), b), ("c".into(), c)];
        crate::io::save_safetensors(&path, &named).unwrap();
        let mut file = SafetensorsFile::open(&path).unwrap();
        let mut infos = file.tensors();
        infos.sort_by(|x, y| x.name.cmp(&y.name));
        let summary: Vec<_> = infos
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.dtype,
                    i.stored_as.as_str(),
                    i.shape.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a", DType::F32, "F32", vec![2, 2]),
                ("b", DType::I64, "I64", vec![2]),
                ("c", DType::U8, "U8", vec![1])
            ]
        );
        let read = file.read(&["c", "a"], &Device::Cpu).unwrap();
        assert_eq!(read[0].0, "c");
        assert_eq!(read[0].1.to_vec1::<u8>().unwrap(), [200]);
        assert_eq!(read[1].1.to_vec2::<f32>().unwrap(), [[1., 2.], [3., 4.]]);
        let all = file.read_all(&Device::Cpu).unwrap();
        assert_eq!(all.len(), 3);
        let e = file.read(&["d"], &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("no tensor `d` in the file"), "{e}");
    }

    #[test]
    fn headers_are_checked_before_any_data_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok =
            r#"{"__metadata__":{"k":"v"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut file = SafetensorsFile::open(&write(dir.path(), ok, &[0; 8])).unwrap();
        assert_eq!(file.read_all(&Device::Cpu).unwrap()[0].1.dims(), [2]);
        let cases = [
            (
                r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
                "tensor `x` appears twice in the header",
            ),
            (
                r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"dtype":"U8"}}"#,
                8,
                "malformed header: duplicate field `dtype`",
            ),
            (
                r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                8,
                "tensor `x`: data_offsets [8, 16] reach beyond the 8 bytes of data",
            ),
            (
                r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                8,
                "takes 8 bytes, but data_offsets [8, 0] span 0",
            ),
            ("[1, 2]", 0, "malformed header: invalid type: sequence"),
        ];
        for (header, data, expected) in cases {
            let why = reason(SafetensorsFile::open(&write(
                dir.path(),
                header,
                &vec![0; data],
            )));
            assert!(why.contains(expected), "{header}: {why}");
        }
        let short = dir.path().join("short");
        std::fs::write(&short, [1, 0, 0]).unwrap();
        let why = reason(SafetensorsFile::open(&short));
        assert!(
            why.contains("holds 3 bytes, fewer than the 8-byte header length"),
            "{why}"
        );
    }
}
