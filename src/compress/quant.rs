//! Per-tensor quantisation as the official HNeRV code does it (`hnerv_utils.quant_tensor` and
//! `dequant_tensor`), value for value.
//!
//! A tensor t is quantised to `bits` bits against a minimum and a scale, q = round((t − min) /
//! scale) clamped to [0, 2^bits − 1], and restored as min + scale·q. The candidates are the
//! whole tensor (one f32 minimum and scale, scale = (max − min) / (2^bits − 1)) and, for every
//! axis longer than 50, one minimum and scale per slice along that axis (stored as f16, the
//! official overhead of 16 bits each). The candidate with the smallest mean |t − restored| wins,
//! the first one on a tie. Rounding is half to even, as `torch.round`.

use candle_core::{DType, Device, Tensor};

use crate::error::{Result, XincError};

/// The most bits a value may take: the official code stores the quantised values as `uint8`
/// (more bits would wrap there).
pub const MAX_BITS: u8 = 8;

/// One quantised tensor: its values, and the minimum and scale they are measured against.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantTensor {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// The quantised values, row-major.
    pub quant: Vec<u8>,
    /// `None`: one minimum and scale for the whole tensor; `Some(axis)`: one per position along
    /// every other axis (the reduced shape is `shape` with `shape[axis]` = 1).
    pub axis: Option<usize>,
    /// The minima (one, or one per reduced position), as stored (f16 values for an axis).
    pub min: Vec<f32>,
    /// The scales, likewise.
    pub scale: Vec<f32>,
}

impl QuantTensor {
    /// Stored minima and scales: the overhead entries of 16 bits each.
    pub fn overhead_entries(&self) -> usize {
        self.min.len() + self.scale.len()
    }

    /// The restored values, min + scale·q (f32, as the official `dequant_tensor`).
    pub fn dequantise(&self) -> Vec<f32> {
        let idx = Reduced::new(&self.shape, self.axis);
        self.quant
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let j = idx.of(i);
                self.min[j] + self.scale[j] * f32::from(q)
            })
            .collect()
    }
}

/// Maps a flat index of the tensor to the flat index of its reduced minimum/scale.
struct Reduced {
    /// Elements after the axis, the axis length.
    inner: usize,
    len: usize,
    whole: bool,
}

impl Reduced {
    fn new(shape: &[usize], axis: Option<usize>) -> Self {
        match axis {
            None => Reduced {
                inner: 1,
                len: 1,
                whole: true,
            },
            Some(a) => Reduced {
                inner: shape[a + 1..].iter().product(),
                len: shape[a],
                whole: false,
            },
        }
    }

    /// The number of minima (and scales) for a tensor of `numel` values.
    fn count(&self, numel: usize) -> usize {
        if self.whole {
            1
        } else {
            numel / self.len
        }
    }

    fn of(&self, i: usize) -> usize {
        if self.whole {
            return 0;
        }
        let (outer, inner) = (i / (self.inner * self.len), i % self.inner);
        outer * self.inner + inner
    }
}

/// Quantises `values` of `shape` to `bits` bits as `quant_tensor` does; returns the chosen
/// quantisation and the restored values.
pub fn quantise(values: &[f32], shape: &[usize], bits: u8) -> Result<(QuantTensor, Vec<f32>)> {
    if !(1..=MAX_BITS).contains(&bits) {
        return Err(XincError::InvalidArgument(format!(
            "{bits} bits: quantisation takes 1 to {MAX_BITS} bits (the official code stores \
             uint8 values)"
        )));
    }
    let numel: usize = shape.iter().product();
    if numel != values.len() || numel == 0 {
        return Err(XincError::InvalidArgument(format!(
            "a tensor of shape {shape:?} with {} values cannot be quantised",
            values.len()
        )));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(XincError::InvalidArgument(format!(
            "a tensor of shape {shape:?} holds the non-finite value {v}"
        )));
    }
    let levels = ((1u32 << bits) - 1) as f32;
    let mut best: Option<(f64, QuantTensor, Vec<f32>)> = None;
    let axes = std::iter::once(None).chain((0..shape.len()).filter(|&a| shape[a] > 50).map(Some));
    for axis in axes {
        let (min, max) = extrema(values, shape, axis);
        let scale: Vec<f32> = min
            .iter()
            .zip(&max)
            .map(|(lo, hi)| (hi - lo) / levels)
            .collect();
        let (min, scale) = match axis {
            None => (min, scale),
            Some(_) => (f16_rounded(&min)?, f16_rounded(&scale)?),
        };
        let idx = Reduced::new(shape, axis);
        let mut quant = Vec::with_capacity(numel);
        let mut restored = Vec::with_capacity(numel);
        let mut err = 0f64;
        for (i, &t) in values.iter().enumerate() {
            let j = idx.of(i);
            let q = ((t - min[j]) / scale[j])
                .round_ties_even()
                .clamp(0.0, levels);
            let q = if q.is_nan() { 0.0 } else { q };
            let r = min[j] + scale[j] * q;
            err += f64::from((t - r).abs());
            quant.push(q as u8);
            restored.push(r);
        }
        let err = err / numel as f64;
        if best.as_ref().is_none_or(|(e, ..)| err < *e) {
            let q = QuantTensor {
                shape: shape.to_vec(),
                quant,
                axis,
                min,
                scale,
            };
            best = Some((err, q, restored));
        }
    }
    let (_, q, restored) = best.expect("the whole-tensor candidate");
    Ok((q, restored))
}

/// The minima and maxima over `axis` (keepdim, flattened), or over everything.
fn extrema(values: &[f32], shape: &[usize], axis: Option<usize>) -> (Vec<f32>, Vec<f32>) {
    let idx = Reduced::new(shape, axis);
    let reduced = idx.count(values.len());
    let mut min = vec![f32::INFINITY; reduced];
    let mut max = vec![f32::NEG_INFINITY; reduced];
    for (i, &v) in values.iter().enumerate() {
        let j = idx.of(i);
        min[j] = min[j].min(v);
        max[j] = max[j].max(v);
    }
    (min, max)
}

/// The values rounded to f16 and back (round to nearest even), as `.to(torch.float16)`.
fn f16_rounded(v: &[f32]) -> Result<Vec<f32>> {
    Ok(Tensor::from_slice(v, v.len(), &Device::Cpu)?
        .to_dtype(DType::F16)?
        .to_dtype(DType::F32)?
        .to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_tensor_is_quantised_as_a_whole_by_hand() {
        // min 0, max 3, 2 bits: scale 1, values round half to even (0.5 → 0, 2.5 → 2).
        let (q, r) = quantise(&[0.0, 0.5, 1.2, 2.5, 3.0], &[5], 2).unwrap();
        assert_eq!(
            (q.axis, q.min.clone(), q.scale.clone()),
            (None, vec![0.0], vec![1.0])
        );
        assert_eq!(q.quant, [0, 0, 1, 2, 3]);
        assert_eq!(r, [0.0, 0.0, 1.0, 2.0, 3.0]);
        assert_eq!(q.dequantise(), r);
        assert_eq!(q.overhead_entries(), 2);
    }

    #[test]
    fn rows_of_different_ranges_are_quantised_per_row() {
        // Two rows of 60 with ranges 1e4 apart: the candidate along axis 1 (length 60 > 50) has
        // one minimum and scale per row and fits far better than one for the whole tensor.
        let values: Vec<f32> = (0..120)
            .map(|i| {
                if i < 60 {
                    0.1 + i as f32 * 1e-4
                } else {
                    (i - 60) as f32 * 1.7
                }
            })
            .collect();
        let (q, r) = quantise(&values, &[2, 60], 8).unwrap();
        assert_eq!(q.axis, Some(1));
        // Stored as f16: 0.1 is not an f16 value.
        assert_eq!(q.min, [half_of(0.1), 0.0]);
        let worst = values[..60]
            .iter()
            .zip(&r)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{worst}");
        assert_eq!(q.dequantise(), r);
        // Axis 0 has length 2: never a candidate.
        let (q, _) = quantise(&values, &[60, 2], 8).unwrap();
        assert_ne!(q.axis, Some(1));
    }

    fn half_of(v: f32) -> f32 {
        f16_rounded(&[v]).unwrap()[0]
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(quantise(&[1.0], &[1], 9)
            .unwrap_err()
            .to_string()
            .contains("1 to 8 bits"));
        assert!(quantise(&[1.0, f32::NAN], &[2], 8).is_err());
        assert!(quantise(&[1.0], &[2], 8).is_err());
    }
}
