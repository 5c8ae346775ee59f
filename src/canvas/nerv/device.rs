//! The NeRV canvas as candle tensor operations, for any candle device (CUDA above all).
//!
//! The same maps as the fused CPU path (`fused`), built from whole-layer tensor operations so
//! that a GPU runs them:
//! - every kernel plane `P[i, k]` of a chunk of input channels in one batched matmul: the 9 taps
//!   of each input channel (`[n, 9, h·w]`) times the channel's slice of the weight (`[n, Cout, 9]`);
//! - GELU on the low-resolution planes, then the PixelShuffle placement as a reshape of
//!   `P ⊗ I_{s²}` (each kernel on its own phase), the 3×3 box as two separable shifted sums, and
//!   nearest ×2 upsampling, for each simulated downstream block;
//! - the reductions (`sum_hw`, `abssum_hw`, the sum over input channels) on the device:
//!   [`layer_summary_tensors_on`] leaves them there, [`layer_summary_on`] copies them to the host.
//!
//! Input channels are processed in chunks whose full-resolution maps fit `budget` bytes, so
//! block 1 (2.4 GB of maps per frame) streams through a bounded buffer on any card. With the
//! `cuda` feature, the blocks' output maps skip the tensor operations: xinc's kernel
//! (`block_sums.cu`) reduces them without materialising them, 7–11× faster on an H200.

use std::ops::Range;

use candle_core::{Device, Tensor, D};

use super::device_layer::DeviceLayer;
use super::layer::{NervBlockData, NervLayer};
use crate::canvas::LayerSummary;
use crate::error::Result;
use crate::tensor::with_f32_slice;

/// How the device path runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Bytes of full-resolution maps per chunk of input channels.
    pub budget: usize,
    /// Use xinc's own CUDA kernels where they apply (the `cuda` feature; see `cuda`), else
    /// candle's tensor operations only.
    pub custom_kernels: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            budget: 1 << 30,
            custom_kernels: true,
        }
    }
}

impl DeviceLayer<'_> {
    /// `P[i, k]` for the input channels `inputs`: `[n, Cout, h, w]`.
    fn planes(&self, inputs: Range<usize>) -> Result<Tensor> {
        let d = self.data;
        let (h, w, n) = (d.height, d.width, inputs.len());
        let x = self.input(inputs.clone())?;
        let xp = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let taps = (0..9)
            .map(|t| xp.narrow(1, t / 3, h)?.narrow(2, t % 3, w))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let cols = Tensor::stack(&taps, 1)?.reshape((n, 9, h * w))?;
        let weight = self.weight.narrow(0, inputs.start, n)?;
        let p = weight.matmul(&cols)?.broadcast_add(&self.bias_share)?;
        Ok(p.reshape((n, d.out_channels(), h, w))?)
    }

    /// The last plane of `layer`'s maps for `inputs` before their last, linear step, and that
    /// step: `maps = step(plane)`. The GELU chain runs here, on the smallest planes that hold it.
    fn final_plane(&self, layer: NervLayer, inputs: Range<usize>) -> Result<(Tensor, LastStep)> {
        let s = self.data.scale;
        let p = self.planes(inputs)?;
        Ok(match layer {
            NervLayer::Head => (p, LastStep::Identity),
            NervLayer::Block { pre_gelu: true, .. } => (p, LastStep::Place(s)),
            _ => {
                let (mut plane, mut step) = (p.gelu_erf()?, LastStep::BoxPlace(s));
                for _ in 0..self.data.downstream {
                    plane = step.apply(&plane)?.gelu_erf()?;
                    step = LastStep::BoxUp2;
                }
                (plane, step)
            }
        })
    }

    /// The full maps of `layer` for `inputs`: `[n, Cout, H, W]`.
    fn maps(&self, layer: NervLayer, inputs: Range<usize>) -> Result<Tensor> {
        let (plane, step) = self.final_plane(layer, inputs)?;
        step.apply(&plane)
    }
}

/// The linear step that turns a kernel's last plane into its map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LastStep {
    Identity,
    /// PixelShuffle placement with factor s.
    Place(usize),
    /// 3×3 mean of the placement.
    BoxPlace(usize),
    /// 3×3 mean of the nearest ×2 upsampling.
    BoxUp2,
}

impl LastStep {
    /// The last step of `layer`'s maps.
    pub(super) fn of(data: &NervBlockData, layer: NervLayer) -> Self {
        match layer {
            NervLayer::Head => LastStep::Identity,
            NervLayer::Block { pre_gelu: true, .. } => LastStep::Place(data.scale),
            NervLayer::Block { .. } if data.downstream == 0 => LastStep::BoxPlace(data.scale),
            _ => LastStep::BoxUp2,
        }
    }

    fn apply(self, t: &Tensor) -> Result<Tensor> {
        match self {
            LastStep::Identity => Ok(t.clone()),
            LastStep::Place(s) => place(t, s),
            LastStep::BoxPlace(s) => box3(&place(t, s)?),
            LastStep::BoxUp2 => {
                let (_, _, h, w) = t.dims4()?;
                box3(&t.upsample_nearest2d(2 * h, 2 * w)?)
            }
        }
    }

    /// Whether the map holds exactly the plane's values (plus zeros), so that its pixel sums
    /// and absolute sums are the plane's.
    fn keeps_values(self) -> bool {
        matches!(self, LastStep::Identity | LastStep::Place(_))
    }
}

/// PixelShuffle placement of each kernel plane on its phase `k % s²`, zero elsewhere:
/// `[n, Cout, h, w]` → `[n, Cout, h·s, w·s]`.
pub fn place(p: &Tensor, s: usize) -> Result<Tensor> {
    if s == 1 {
        return Ok(p.clone());
    }
    let (n, cout, h, w) = p.dims4()?;
    let eye = Tensor::eye(s * s, p.dtype(), p.device())?.reshape(vec![1, 1, s * s, s, s, 1, 1])?;
    let spread = p
        .reshape(vec![n, cout / (s * s), s * s, 1, 1, h, w])?
        .broadcast_mul(&eye)?; // [n, q, phase, dy, dx, h, w]
    Ok(spread
        .permute(vec![0, 1, 2, 5, 3, 6, 4])? // [n, q, phase, h, dy, w, dx]
        .reshape((n, cout, h * s, w * s))?)
}

/// The 3×3 mean with zero padding 1 over the last two axes, as two separable shifted sums.
fn box3(t: &Tensor) -> Result<Tensor> {
    let sum3 = |t: &Tensor, dim: usize| -> candle_core::Result<Tensor> {
        let len = t.dim(dim)?;
        let tp = t.pad_with_zeros(dim, 1, 1)?;
        (tp.narrow(dim, 0, len)? + tp.narrow(dim, 1, len)?)? + tp.narrow(dim, 2, len)?
    };
    let r = t.rank();
    Ok((sum3(&sum3(t, r - 2)?, r - 1)? * (1.0 / 9.0))?)
}

/// A layer summary whose arrays stay on the device (see [`LayerSummary`] for their meaning).
#[derive(Clone, Debug)]
pub(crate) struct DeviceLayerSummary {
    pub layer: NervLayer,
    pub neuron_shape: Vec<usize>,
    pub height: usize,
    pub width: usize,
    /// `[n·Cout]`.
    pub sum_hw: Tensor,
    /// `[n·Cout]`.
    pub abssum_hw: Tensor,
    /// `[Cout, H, W]`.
    pub sum_neurons: Tensor,
}

impl DeviceLayerSummary {
    /// Copies the arrays to the host.
    pub fn to_host(&self) -> Result<LayerSummary> {
        let host = |t: &Tensor| with_f32_slice(t, <[f32]>::to_vec);
        Ok(LayerSummary {
            layer: self.layer.to_string(),
            neuron_shape: self.neuron_shape.clone(),
            height: self.height,
            width: self.width,
            sum_hw: host(&self.sum_hw)?,
            abssum_hw: host(&self.abssum_hw)?,
            sum_neurons: host(&self.sum_neurons)?,
        })
    }
}

/// [`super::official::nerv_layer_summary`] computed on `device` ([`layer_summary_tensors_on`]) and copied
/// to the host.
pub(crate) fn layer_summary_on(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
    device: &Device,
    opts: &DeviceOptions,
) -> Result<LayerSummary> {
    layer_summary_tensors_on(data, layer, inputs, device, opts)?.to_host()
}

/// The summary of `layer` over `inputs`, computed on `device` and left there: by xinc's CUDA
/// kernel where it applies and `opts.custom_kernels` is set (one pass, no map materialised),
/// else with tensor operations in chunks of input channels whose full-resolution maps fit
/// `opts.budget` bytes.
pub(crate) fn layer_summary_tensors_on(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
    device: &Device,
    opts: &DeviceOptions,
) -> Result<DeviceLayerSummary> {
    data.check_kernels(layer, &inputs)?;
    let (cout, (h, w)) = (data.out_channels(), data.map_size(layer));
    let dl = DeviceLayer::new(data, device)?;
    let (sums, abssums, plane_sum) = match custom_kernel(&dl, layer, inputs.clone(), opts)? {
        Some(r) => r,
        None => tensor_op_reductions(&dl, layer, inputs.clone(), opts.budget)?,
    };
    // The last step is linear: the maps' sum over input channels is the expansion of the
    // planes' sum.
    let sum_neurons = LastStep::of(data, layer)
        .apply(&plane_sum)?
        .reshape((cout, h, w))?;
    Ok(DeviceLayerSummary {
        layer,
        neuron_shape: vec![inputs.len(), cout],
        height: h,
        width: w,
        sum_hw: sums,
        abssum_hw: abssums,
        sum_neurons,
    })
}

/// Pixel sums `[n·Cout]`, absolute sums `[n·Cout]` and the last planes' sum over the input
/// channels `[1, Cout, h', w']`.
type Reductions = (Tensor, Tensor, Tensor);

/// The reductions by xinc's CUDA kernel, when it applies.
fn custom_kernel(
    dl: &DeviceLayer,
    layer: NervLayer,
    inputs: Range<usize>,
    opts: &DeviceOptions,
) -> Result<Option<Reductions>> {
    #[cfg(feature = "cuda")]
    if opts.custom_kernels {
        return super::cuda::block_sums(dl, layer, inputs);
    }
    let _ = (dl, layer, inputs, opts);
    Ok(None)
}

/// The reductions with candle's tensor operations, chunk by chunk of input channels.
fn tensor_op_reductions(
    dl: &DeviceLayer,
    layer: NervLayer,
    inputs: Range<usize>,
    budget: usize,
) -> Result<Reductions> {
    let d = dl.data;
    let (cout, (h, w)) = (d.out_channels(), d.map_size(layer));
    let chunk = (budget / (4 * cout * h * w).max(1)).max(1);
    let (mut sums, mut abssums) = (Vec::new(), Vec::new());
    let mut total: Option<Tensor> = None;
    for start in inputs.clone().step_by(chunk) {
        let (plane, step) = dl.final_plane(layer, start..(start + chunk).min(inputs.end))?;
        // Pixel sums: of the plane itself when the map only adds zeros, else of the full maps.
        let flat = if step.keeps_values() {
            plane.flatten_from(2)?
        } else {
            step.apply(&plane)?.flatten_from(2)?
        };
        sums.push(flat.sum(D::Minus1)?.flatten_all()?);
        abssums.push(flat.abs()?.sum(D::Minus1)?.flatten_all()?);
        let part = plane.sum_keepdim(0)?;
        total = Some(match total {
            Some(t) => (t + part)?,
            None => part,
        });
    }
    let total = total.ok_or_else(|| {
        crate::error::XincError::InvalidArgument(format!("{layer}: no input channels"))
    })?;
    Ok((Tensor::cat(&sums, 0)?, Tensor::cat(&abssums, 0)?, total))
}

/// The full maps of `layer` for `inputs` as a device tensor `[n, Cout, H, W]`, the counterpart
/// of [`super::official::nerv_layer_maps`]. Mind the size: block 1's full canvas is 2.4 GB.
pub(crate) fn layer_maps_on(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
    device: &Device,
) -> Result<Tensor> {
    data.check_kernels(layer, &inputs)?;
    DeviceLayer::new(data, device)?.maps(layer, inputs)
}

#[cfg(test)]
mod tests {
    use super::super::official::{nerv_layer_maps, nerv_layer_summary};
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * scale, "{x} vs {y} (scale {scale})");
        }
    }

    #[test]
    fn tensor_path_matches_the_fused_maps_and_summaries() {
        let (cin, h, w) = (3, 4, 5);
        for (s, downstream) in [(2, 0), (2, 1), (4, 2), (1, 0)] {
            let cout = 2 * s * s;
            let wave = |n: usize, f: f32| -> Vec<f32> {
                (0..n).map(|v| (v as f32 * f).sin() * 1.3).collect()
            };
            let (input, weight, bias) = (
                wave(cin * h * w, 0.37),
                wave(cout * cin * 9, 0.11),
                wave(cout, 0.53),
            );
            let data = NervBlockData {
                input: &input,
                in_channels: cin,
                height: h,
                width: w,
                weight: &weight,
                bias: &bias,
                scale: s,
                downstream,
            };
            let mut layers = vec![
                NervLayer::Block {
                    index: 1,
                    pre_gelu: false,
                },
                NervLayer::Block {
                    index: 1,
                    pre_gelu: true,
                },
            ];
            if s == 1 {
                layers = vec![NervLayer::Head];
            }
            for layer in layers {
                let dev = &Device::Cpu;
                let fused = nerv_layer_maps(&data, layer, 1..3).unwrap();
                let t = layer_maps_on(&data, layer, 1..3, dev).unwrap();
                assert_eq!(t.dims(), fused.shape().as_slice(), "{layer}");
                let t = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                close(&t, &fused.data, 1e-6);
                let a = nerv_layer_summary(&data, layer, 0..cin).unwrap();
                // One input channel per chunk, so the chunked accumulation is exercised.
                let opts = |budget| DeviceOptions {
                    budget,
                    custom_kernels: true,
                };
                let b = layer_summary_on(&data, layer, 0..cin, dev, &opts(1 << 20)).unwrap();
                let b1 = layer_summary_on(&data, layer, 0..cin, dev, &opts(1)).unwrap();
                for b in [b, b1] {
                    assert_eq!(a.neuron_shape, b.neuron_shape);
                    close(&b.sum_hw, &a.sum_hw, 1e-5);
                    close(&b.abssum_hw, &a.abssum_hw, 1e-5);
                    close(&b.sum_neurons, &a.sum_neurons, 1e-5);
                }
            }
        }
    }
}
