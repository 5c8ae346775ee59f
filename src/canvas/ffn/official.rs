//! The official FFN canvas (spec A.2–A.5), in closed form.
//!
//! Layer k's neurons are the **inputs** of Linear layer k (the Fourier features for k = 1). With
//! x_i(p) the input unit i at pixel p, W the layer's weight `[fan_out, fan_in]` and b its bias,
//! the official maps are
//! - last layer L, per channel (`layerL_rgb`): `x_i(p)·W[c,i] + b[c]/fan_in` — exact: summed over
//!   i they give the output;
//! - last layer L, summed (`layerL`): `x_i(p)·Σ_c W[c,i] + Σ_c b[c]/fan_in` (no activation);
//! - inner layers k < L (`layerk`): `ReLU(x_i(p)·Σ_j W[j,i] + Σ_j b[j]/fan_in)` — the official
//!   ReLU is applied to the neuron's aggregate, so these maps are not an exact decomposition.
//!
//! The official code materialises `[fan_in, fan_out, P]` temporaries (4.2 GB); these closed forms
//! cost O(fan_in·P) per layer and nothing more. [`LayerRule`] writes a tile's maps on the CPU,
//! [`DeviceRule`] builds them with tensor operations on any device.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::layer::FfnLayer;
use crate::canvas::Method;
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnActivations, HiddenActivation};
use crate::tensor::{simd_fn, with_f32_slice};

/// Pixels per parallel task.
const PIXEL_RUN: usize = 1024;
/// Pixels transposed at a time: one 64-byte cache line per map row, fan_in lines in L1.
const MICRO_RUN: usize = 16;

/// The closed-form rule of one layer: `map[i, r](p) = act(x_i(p)·scale[r][i] + offset[r])`.
pub(super) struct LayerRule {
    pub(super) layer: FfnLayer,
    fan_in: usize,
    scales: Vec<Vec<f32>>,
    offsets: Vec<f32>,
    act: InnerAct,
}

/// The activation the official rule applies to an inner layer's aggregate: the model's own
/// (ReLU as in the official code; SIREN's sin(w₀·z) is xinc's official-style extension), none on
/// the last layer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum InnerAct {
    None,
    Relu,
    Sine(f32),
}

impl InnerAct {
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        match self {
            InnerAct::None => v,
            InnerAct::Relu => v.max(0.0),
            InnerAct::Sine(w0) => (w0 * v).sin(),
        }
    }
}

simd_fn! {
    /// [`LayerRule::fill_run`] compiled for AVX2 where the CPU has it (a closure handed to
    /// `with_avx2` here was left un-inlined by LLVM, so its loops ran unvectorised: measured).
    fn fill_run_simd(rule: &LayerRule, x: &[f32], segs: &mut [&mut [f32]], xt: &mut [f32]) {
        rule.fill_run(x, segs, xt)
    }
}

impl LayerRule {
    pub(super) fn new(model: &Ffn, layer: FfnLayer) -> Result<Self> {
        let config = model.config();
        let layer = layer.check(config, Method::Official)?;
        let k = layer.linear_index();
        let linear = &model.layers()[k - 1];
        let weight = linear.weight().to_dtype(DType::F64)?.to_vec2::<f64>()?; // [fan_out, fan_in]
        let bias = match linear.bias() {
            Some(b) => b.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            None => vec![0.0; weight.len()],
        };
        let fan_in = config.layer_dims(k - 1).0;
        let share = |b: f64| (b / fan_in as f64) as f32;
        let (scales, offsets) = match layer {
            FfnLayer::Summed(_) => {
                let colsum = (0..fan_in)
                    .map(|i| weight.iter().map(|row| row[i]).sum::<f64>() as f32)
                    .collect();
                (vec![colsum], vec![share(bias.iter().sum())])
            }
            FfnLayer::PerChannel(_) => (
                weight
                    .iter()
                    .map(|row| row.iter().map(|&w| w as f32).collect())
                    .collect(),
                bias.iter().map(|&b| share(b)).collect(),
            ),
        };
        Ok(LayerRule {
            layer,
            fan_in,
            scales,
            offsets,
            act: match (layer, config.activation) {
                (FfnLayer::Summed(k), HiddenActivation::Relu) if k < config.num_layers => {
                    InnerAct::Relu
                }
                (FfnLayer::Summed(k), a @ HiddenActivation::Sine { .. })
                    if k < config.num_layers =>
                {
                    InnerAct::Sine(a.w0(k - 1) as f32)
                }
                _ => InnerAct::None,
            },
        })
    }

    fn rows(&self) -> usize {
        self.offsets.len()
    }

    /// The rule's scales and offsets as tensors on `device`.
    pub(super) fn on(self, device: &Device) -> Result<(LayerRule, DeviceRule)> {
        let rows = self.rows();
        let scales: Vec<f32> = (0..self.fan_in)
            .flat_map(|i| self.scales.iter().map(move |r| r[i]))
            .collect();
        let dev = DeviceRule {
            scales: Tensor::from_vec(scales, (self.fan_in, rows, 1), device)?,
            offsets: Tensor::from_slice(&self.offsets, (1, rows, 1), device)?,
        };
        Ok((self, dev))
    }

    /// Writes the `[fan_in·rows, t]` maps of a tile whose layer input is `x` (`[t, fan_in]`,
    /// pixel-major). Pixels are split into runs, in parallel; a run owns its segment of every map
    /// row. Within a run, micro-runs of 16 pixels are transposed into an L1-resident buffer, and
    /// each map row then receives one full cache line of vectorisable results.
    pub(super) fn write_maps(&self, x: &[f32], t: usize, out: &mut [f32]) {
        let rows = self.rows();
        let runs = t.div_ceil(PIXEL_RUN);
        // Disjoint segments p0..p0+run of every map row, handed to the runs safely.
        let mut segments: Vec<Vec<&mut [f32]>> = (0..runs)
            .map(|_| Vec::with_capacity(self.fan_in * rows))
            .collect();
        for row in out.chunks_exact_mut(t) {
            for (run, seg) in row.chunks_mut(PIXEL_RUN).enumerate() {
                segments[run].push(seg);
            }
        }
        segments.into_par_iter().enumerate().for_each_init(
            || vec![0.0f32; self.fan_in * MICRO_RUN],
            |xt, (run, mut segs)| {
                fill_run_simd(self, &x[run * PIXEL_RUN * self.fan_in..], &mut segs, xt)
            },
        );
    }

    /// Fills one run's segments (`segs[m]`: map m, the run's pixels) from `x`, which starts at
    /// the run's first pixel, micro-run by micro-run. The micro-runs start on the 64-byte lines
    /// of the first segment (after a shorter first one), so that a map row receives whole lines,
    /// streamed past the caches ([`stream_line`]): the maps are written once and not read here,
    /// and a plain store would first read every line in.
    #[inline(always)]
    fn fill_run(&self, x: &[f32], segs: &mut [&mut [f32]], xt: &mut [f32]) {
        let rows = self.rows();
        let len = segs[0].len();
        let lead = (segs[0].as_ptr() as usize).wrapping_neg() % LINE / size_of::<f32>();
        let mut q0 = 0;
        while q0 < len {
            let n = match q0 {
                0 if lead > 0 => lead,
                _ => MICRO_RUN,
            }
            .min(len - q0);
            for (p, xrow) in x[q0 * self.fan_in..(q0 + n) * self.fan_in]
                .chunks_exact(self.fan_in)
                .enumerate()
            {
                for (i, &v) in xrow.iter().enumerate() {
                    xt[i * MICRO_RUN + p] = v;
                }
            }
            for (m, seg) in segs.iter_mut().enumerate() {
                let (i, r) = (m / rows, m % rows);
                let xs = &xt[i * MICRO_RUN..i * MICRO_RUN + n];
                let (scale, offset) = (self.scales[r][i], self.offsets[r]);
                let dst = &mut seg[q0..q0 + n];
                if n == MICRO_RUN && dst.as_ptr() as usize % LINE == 0 {
                    let mut line = [0.0f32; MICRO_RUN];
                    self.act.map_into(xs, scale, offset, &mut line);
                    stream_line(dst, &line);
                } else {
                    self.act.map_into(xs, scale, offset, dst);
                }
            }
            q0 += n;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE is part of x86_64. The fence orders the streamed stores before whatever
        // the run does next (rayon's completion signal).
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
    }
}

impl InnerAct {
    /// `dst[p] = act(xs[p]·scale + offset)`.
    #[inline(always)]
    fn map_into(self, xs: &[f32], scale: f32, offset: f32, dst: &mut [f32]) {
        let pairs = dst.iter_mut().zip(xs);
        match self {
            InnerAct::Relu => pairs.for_each(|(d, &v)| *d = (v * scale + offset).max(0.0)),
            InnerAct::None => pairs.for_each(|(d, &v)| *d = v * scale + offset),
            act => pairs.for_each(|(d, &v)| *d = act.apply(v * scale + offset)),
        }
    }
}

/// Bytes per cache line: a micro-run's values of one map row fill one.
const LINE: usize = 64;
const _: () = assert!(MICRO_RUN * size_of::<f32>() == LINE);

/// Writes one 64-byte line `dst` (`dst` starts at a line) from `line` with non-temporal stores
/// on x86_64, so that the line is not first read into the cache; plainly elsewhere.
#[inline(always)]
fn stream_line(dst: &mut [f32], line: &[f32; MICRO_RUN]) {
    let dst: &mut [f32; MICRO_RUN] = dst.try_into().expect("one line");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        debug_assert_eq!(dst.as_ptr() as usize % LINE, 0);
        for k in (0..MICRO_RUN).step_by(4) {
            // SAFETY: SSE is part of x86_64; `dst[k..k + 4]` and `line[k..k + 4]` are in bounds
            // (both hold MICRO_RUN values), and `dst + k` is 16-byte aligned since `dst` starts
            // at a 64-byte line, as the caller checked.
            unsafe {
                _mm_stream_ps(dst.as_mut_ptr().add(k), _mm_loadu_ps(line.as_ptr().add(k)));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(line);
}

/// A [`LayerRule`]'s coefficients on a device: `scales` `[fan_in, rows, 1]`, `offsets` `[1, rows, 1]`.
pub(super) struct DeviceRule {
    scales: Tensor,
    offsets: Tensor,
}

impl DeviceRule {
    /// The maps `[fan_in, rows, t]` of a tile whose layer input is `x` (`[t, fan_in]`), on `x`'s
    /// device.
    pub(super) fn maps(&self, rule: &LayerRule, x: &Tensor) -> Result<Tensor> {
        let m = x
            .t()?
            .unsqueeze(1)?
            .broadcast_mul(&self.scales)?
            .broadcast_add(&self.offsets)?;
        Ok(match rule.act {
            InnerAct::None => m,
            InnerAct::Relu => m.relu()?,
            InnerAct::Sine(w0) => m.affine(f64::from(w0), 0.0)?.sin()?,
        })
    }
}

/// Pixel reductions of the official per-(input, output) contribution tensor of Linear layer `k`
/// (`layer_k_output_contrib_to_layer{k+1}infeat`): `Z[i, j, p] = x_i(p)·W[j, i] + b[j]/fan_in`.
/// Returns `(sum_hw, abssum_hw)`, each `[fan_in, fan_out]` row-major, exactly and without
/// materialising Z: with each input column sorted and prefix-summed, the absolute sum of an
/// affine function splits at its root into two same-signed partial sums.
///
/// Public for the golden test, which checks it against the official code's unit-pair tensors;
/// no canvas layer is made of unit pairs.
#[doc(hidden)]
pub fn unit_pair_reductions(
    model: &Ffn,
    acts: &FfnActivations,
    k: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (w, b, fan_in) = layer_weights(model, k)?;
    let fan_out = b.len();
    let x = with_f32_slice(acts.layer_input(k)?, |x| x.to_vec())?;
    let p = x.len() / fan_in;
    let per_input: Vec<(Vec<f32>, Vec<f32>)> = (0..fan_in)
        .into_par_iter()
        .map(|i| {
            let mut col: Vec<f64> = x
                .iter()
                .skip(i)
                .step_by(fan_in)
                .map(|&v| v as f64)
                .collect();
            col.sort_by(f64::total_cmp);
            let mut prefix = Vec::with_capacity(p + 1);
            prefix.push(0.0f64);
            for v in &col {
                prefix.push(prefix.last().unwrap() + v);
            }
            (0..fan_out)
                .map(|j| {
                    let (a, c) = (w[j][i], b[j] / fan_in as f64);
                    let n = if a == 0.0 {
                        p
                    } else {
                        col.partition_point(|&v| v < -c / a)
                    };
                    let (lo, hi) = (prefix[n], prefix[p] - prefix[n]);
                    let below = a * lo + c * n as f64;
                    let above = a * hi + c * (p - n) as f64;
                    ((below + above) as f32, (below.abs() + above.abs()) as f32)
                })
                .unzip()
        })
        .collect();
    let (sum, abs): (Vec<Vec<f32>>, Vec<Vec<f32>>) = per_input.into_iter().unzip();
    Ok((sum.concat(), abs.concat()))
}

/// The official per-pixel contribution of input unit `i` of Linear layer `k` to its output unit
/// `j`: `x_i(p)·W[j, i] + b[j]/fan_in`, `[P]`. Public for the golden test, as
/// [`unit_pair_reductions`].
#[doc(hidden)]
pub fn unit_pair_map(
    model: &Ffn,
    acts: &FfnActivations,
    k: usize,
    i: usize,
    j: usize,
) -> Result<Vec<f32>> {
    let (w, b, fan_in) = layer_weights(model, k)?;
    if i >= fan_in || j >= b.len() {
        return Err(XincError::InvalidArgument(format!(
            "unit pair ({i}, {j}) out of range for layer {k}"
        )));
    }
    let (wji, share) = (w[j][i] as f32, (b[j] / fan_in as f64) as f32);
    with_f32_slice(acts.layer_input(k)?, |x| {
        x.iter()
            .skip(i)
            .step_by(fan_in)
            .map(|&v| v * wji + share)
            .collect()
    })
}

/// Weight rows, bias and fan-in of Linear layer `k` (1-based), in f64.
fn layer_weights(model: &Ffn, k: usize) -> Result<(Vec<Vec<f64>>, Vec<f64>, usize)> {
    let linear = model
        .layers()
        .get(k.wrapping_sub(1))
        .ok_or_else(|| XincError::InvalidArgument(format!("FFN has no layer {k}")))?;
    let w = linear.weight().to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let b = match linear.bias() {
        Some(b) => b.to_dtype(DType::F64)?.to_vec1::<f64>()?,
        None => vec![0.0; w.len()],
    };
    let fan_in = w.first().map_or(0, Vec::len);
    Ok((w, b, fan_in))
}
