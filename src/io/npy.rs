//! NumPy `.npy` files: a reader that checks before it reads, and an atomic writer.
//!
//! [`read_npy`] reads the header first and checks it before NumPy's parser sees it (length,
//! nesting, shape product), then the shape against what the caller expects ([`NpyRules`]), then
//! the file's length against the shape and dtype: only then is the data read, so that a corrupt
//! file is an error naming it ([`XincError::Dataset`]), never a huge allocation or an overflow.
//! The file must be a regular file within the caller's [`FileLimit`]; every plain integer or
//! float dtype is read, converted to f64 in C order, and every value must be a finite f32.

use std::io::Read;
use std::path::Path;

use npyz::{DType, NpyFile, TypeChar, WriterBuilder};

use crate::error::{Result, XincError};
use crate::io::files::{open_regular, FileLimit};
use crate::io::write_atomic;

/// What a reader asks of a `.npy` file besides being well-formed.
pub struct NpyRules<'a> {
    /// The largest accepted file.
    pub limit: FileLimit,
    /// Accepts the header's shape, or says why not; checked before any data is read.
    pub shape: &'a dyn Fn(&[usize]) -> std::result::Result<(), String>,
    /// What the values are, for the message when one is not a finite f32 (`"flow"`).
    pub values: &'a str,
}

/// A numeric `.npy` array, values converted to f64 in C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    /// The values, converted to f64, in C order.
    pub values: Vec<f64>,
    /// Whether the stored dtype is a float (else an integer).
    pub is_float: bool,
}

/// A `.npy` file whose header has been read and checked: the open file, the bytes read so far
/// (the header and perhaps some data), the file's length, the shape and the dtype.
struct NpyHeader {
    file: std::fs::File,
    bytes: Vec<u8>,
    len: u64,
    shape: Vec<usize>,
    ty: npyz::TypeStr,
}

/// Reads and checks the header of the `.npy` file `path`: a regular file within `rules.limit`, a
/// plain dtype, a shape that `rules.shape` accepts, and exactly the data bytes that shape needs.
/// Reads the header only.
fn read_header(path: &Path, rules: &NpyRules) -> Result<NpyHeader> {
    let bad = |reason: String| XincError::dataset(path, reason);
    let (mut file, len) = open_regular(path, &rules.limit)?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_HEADER as u64 + 12)
        .read_to_end(&mut bytes)
        .map_err(|e| XincError::io(path, e))?;
    let (data_start, shape) = check_header(&bytes).map_err(bad)?;
    (rules.shape)(&shape).map_err(bad)?;
    let npy = NpyFile::new(&bytes[..]).map_err(|e| bad(format!("invalid .npy header: {e}")))?;
    let declared: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    if npy.shape() != declared.as_slice() {
        return Err(bad(format!("ambiguous .npy shape {:?}", npy.shape())));
    }
    let DType::Plain(ty) = npy.dtype() else {
        return Err(bad(format!("unsupported dtype {}", npy.dtype().descr())));
    };
    let present = len.saturating_sub(data_start as u64);
    let needed = shape
        .iter()
        .product::<usize>()
        .checked_mul(ty.size_field() as usize);
    match needed {
        Some(n) if n as u64 == present => {}
        Some(n) if (n as u64) < present => {
            return Err(bad(format!(
                "shape {shape:?} of {ty} needs {n} data bytes, but {present} follow the header"
            )))
        }
        _ => {
            let needed = needed.map_or("more".into(), |n| n.to_string());
            return Err(bad(format!(
                "truncated: shape {shape:?} of {ty} needs {needed} data bytes, {present} present"
            )));
        }
    }
    Ok(NpyHeader {
        file,
        bytes,
        len,
        shape,
        ty,
    })
}

/// Reads a `.npy` file of a plain integer or float dtype, with no zero-sized dimension, of a shape
/// that `rules` accepts. The header is read and checked first; the data only when the file's
/// length is what the shape and dtype need. Every value must be a finite f32.
pub fn read_npy(path: &Path, rules: &NpyRules) -> Result<NpyArray> {
    let bad = |reason: String| XincError::dataset(path, reason);
    let NpyHeader {
        mut file,
        mut bytes,
        len,
        shape,
        ty,
    } = read_header(path, rules)?;
    file.read_to_end(&mut bytes)
        .map_err(|e| XincError::io(path, e))?;
    if bytes.len() as u64 != len {
        return Err(bad(format!(
            "the file changed while read ({} bytes read, {len} expected)",
            bytes.len()
        )));
    }
    let npy = NpyFile::new(&bytes[..]).map_err(|e| bad(format!("invalid .npy header: {e}")))?;
    let strides: Vec<usize> = npy.strides().iter().map(|&s| s as usize).collect();
    let is_float = ty.type_char() == TypeChar::Float;
    let stored = read_values(npy, &ty).map_err(bad)?;
    check_finite(&stored, &shape, rules.values).map_err(bad)?;
    Ok(NpyArray {
        values: to_c_order(&stored, &shape, &strides),
        shape,
        is_float,
    })
}

/// An error naming the first value that is not finite or is beyond f32's range.
fn check_finite(values: &[f64], shape: &[usize], name: &str) -> std::result::Result<(), String> {
    let Some(at) = values
        .iter()
        .position(|x| !x.is_finite() || x.abs() > f32::MAX as f64)
    else {
        return Ok(());
    };
    Err(format!(
        "value {:?} at storage index {at} (shape {shape:?}): {name} values must be finite f32",
        values[at]
    ))
}

/// The values of an npy file of a plain numeric dtype, converted to f64, in storage order.
fn read_values(npy: NpyFile<&[u8]>, ty: &npyz::TypeStr) -> std::result::Result<Vec<f64>, String> {
    fn all<T: npyz::Deserialize>(
        npy: NpyFile<&[u8]>,
        cast: fn(T) -> f64,
    ) -> std::result::Result<Vec<f64>, String> {
        let values: Vec<T> = npy.into_vec().map_err(|e| e.to_string())?;
        Ok(values.into_iter().map(cast).collect())
    }
    match (ty.type_char(), ty.size_field()) {
        (TypeChar::Float, 4) => all::<f32>(npy, f64::from),
        (TypeChar::Float, 8) => all::<f64>(npy, |x| x),
        (TypeChar::Int, 1) => all::<i8>(npy, f64::from),
        (TypeChar::Int, 2) => all::<i16>(npy, f64::from),
        (TypeChar::Int, 4) => all::<i32>(npy, f64::from),
        (TypeChar::Int, 8) => all::<i64>(npy, |x| x as f64),
        (TypeChar::Uint, 1) => all::<u8>(npy, f64::from),
        (TypeChar::Uint, 2) => all::<u16>(npy, f64::from),
        (TypeChar::Uint, 4) => all::<u32>(npy, f64::from),
        (TypeChar::Uint, 8) => all::<u64>(npy, |x| x as f64),
        _ => Err(format!(
            "unsupported dtype {ty} (expected an integer or a 32/64-bit float)"
        )),
    }
}

/// Reorders values stored with `strides` (C or Fortran order) into C order.
fn to_c_order(stored: &[f64], shape: &[usize], strides: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(stored.len());
    let mut index = vec![0usize; shape.len()];
    for _ in 0..stored.len() {
        let at: usize = index.iter().zip(strides).map(|(i, s)| i * s).sum();
        out.push(stored.get(at).copied().unwrap_or(0.0));
        for (i, &d) in index.iter_mut().zip(shape).rev() {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// Longest header accepted (NumPy writes well under 1 KiB).
const MAX_HEADER: usize = 1 << 16;
/// Deepest bracket nesting accepted in the header (NumPy writes 2).
const MAX_NESTING: usize = 8;

/// Checks the pre-header and header text of an npy file, returning the offset of the data and
/// the array shape (each dimension positive, their product within `usize`).
fn check_header(bytes: &[u8]) -> std::result::Result<(usize, Vec<usize>), String> {
    if bytes.len() < 10 || !bytes.starts_with(b"\x93NUMPY") {
        return Err("not a .npy file (magic `\\x93NUMPY` missing)".into());
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if len > MAX_HEADER || start + len > bytes.len() {
        return Err(format!("header of {len} bytes is longer than the file"));
    }
    let text = String::from_utf8_lossy(&bytes[start..start + len]);
    check_nesting(&text)?;
    let shape = parse_shape(&text)?;
    Ok((start + len, shape))
}

fn check_nesting(text: &str) -> std::result::Result<(), String> {
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            return Err("header nests too deeply".into());
        }
    }
    Ok(())
}

/// The `'shape': (…)` entry of the header dict: positive dimensions whose product fits.
fn parse_shape(text: &str) -> std::result::Result<Vec<usize>, String> {
    let keys: Vec<usize> = ["'shape'", "\"shape\""]
        .iter()
        .flat_map(|k| text.match_indices(k).map(|(i, k)| i + k.len()))
        .filter(|&i| text[i..].trim_start().starts_with(':'))
        .collect();
    let [after] = keys.as_slice() else {
        return Err("header has no single `shape` entry".into());
    };
    let rest = text[*after..].trim_start()[1..].trim_start();
    let inner = rest
        .strip_prefix(['(', '['])
        .and_then(|r| r.split_once([')', ']']))
        .map(|(inner, _)| inner)
        .ok_or("header `shape` is not a tuple")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| format!("header `shape` ({inner}) is not a tuple of sizes"))?;
    if shape.contains(&0) {
        return Err(format!("empty array of shape {shape:?}"));
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    Ok(shape)
}

/// Writes a C-order `.npy` array of `shape`, atomically.
pub fn write_npy<T: npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[u64],
    data: &[T],
) -> Result<()> {
    write_atomic(path, |w| {
        let mut npy = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(shape)
            .writer(w)
            .begin_nd()?;
        npy.extend(data.iter().copied())?;
        npy.finish()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_parsed_and_checked() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4, 2), }";
        assert_eq!(parse_shape(h).unwrap(), vec![3, 4, 2]);
        assert!(parse_shape("{'shape': (0, 4), }").is_err());
        assert!(parse_shape("{'shape': (4294967296, 4294967296, 4294967296), }").is_err());
        assert!(parse_shape("{'descr': '<f4', }").is_err());
        assert!(check_nesting(&"(".repeat(100)).is_err());
    }

    #[test]
    fn values_must_be_finite_f32() {
        assert!(check_finite(&[0.0, -1.5, 1e30], &[3], "flow").is_ok());
        for (bad, shown) in [(f64::NAN, "NaN"), (f64::INFINITY, "inf"), (1e300, "1e300")] {
            let e = check_finite(&[0.0, bad], &[2], "flow").unwrap_err();
            assert!(e.contains(shown) && e.contains("storage index 1"), "{e}");
            assert!(e.contains("flow values must be finite f32"), "{e}");
        }
    }

    #[test]
    fn fortran_order_is_reordered() {
        // [2, 3] stored column-major: strides (1, 2).
        let stored = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0];
        assert_eq!(
            to_c_order(&stored, &[2, 3], &[1, 2]),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
    }

    #[test]
    fn written_arrays_read_back_in_c_order_and_rules_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write_npy(&path, &[2, 3], &[0u8, 1, 2, 3, 4, 255]).unwrap();
        let any = |_: &[usize]| Ok(());
        let rules = NpyRules {
            limit: FileLimit::FLOW,
            shape: &any,
            values: "test",
        };
        let a = read_npy(&path, &rules).unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.values, [0.0, 1.0, 2.0, 3.0, 4.0, 255.0]);
        assert!(!a.is_float);
        write_npy(&path, &[2], &[0.5f32, f32::NAN]).unwrap();
        let e = read_npy(&path, &rules).unwrap_err().to_string();
        assert!(
            e.contains("a.npy") && e.contains("test values must be finite"),
            "{e}"
        );
        let square = |s: &[usize]| match s {
            [a, b] if a == b => Ok(()),
            _ => Err(format!("{s:?} is not square")),
        };
        let e = read_npy(
            &path,
            &NpyRules {
                shape: &square,
                ..rules
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("[2] is not square"), "{e}");
    }
}
