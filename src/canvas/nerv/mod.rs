//! The NeRV canvas (spec A.7–A.12), computed kernel by kernel from plain data.
//!
//! A *kernel* is one (input channel i, conv output channel k) pair of a layer's 3×3 conv. Its
//! low-resolution plane is `P[i, k] = conv3x3(x[i], W[k, i]) + b[k]/Cin` (zero padding 1,
//! cross-correlation), at the layer's input resolution (h, w). The official maps are
//! - head (`head`): `P[i, c]` itself, shape `[Cin, 3, H, W]`; exact: Σ_i gives the head output
//!   before OutImg;
//! - block pre-GELU (`block{n}_pre_gelu`): `P[i, k]` placed on its PixelShuffle phase
//!   `k % s²` at (h·s, w·s), zero elsewhere; exact: GELU of the sum over i and the s² phases of
//!   output channel c gives the next block's input, channel c;
//! - block output (`block{n}`): `box3(GELU(placed))`, then for every simulated downstream block
//!   `box3(GELU(up2(·)))`, ending at the frame resolution.
//!
//! Since GELU(0) = 0, a placed map is zero off its phase lattice, so every map is a function of
//! the one h×w plane `P[i, k]`; nothing here ever holds a `[Cin, Cout, H, W]` canvas unless asked
//! to ([`nerv_layer_maps`]). [`nerv_layer_summary`] streams the kernels in parallel over output
//! channels; each kernel's map is computed by the fused path of `fused` (low-resolution GELUs,
//! full-resolution rows expanded one at a time and reduced on the fly). [`reference`] keeps the
//! literal step-by-step computation that the fused path is tested against; [`gelu`] has the
//! exact GELU in f64 (reference) and vectorised f32 (fused).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use rayon::prelude::*;

use candle_core::{Device, Tensor};

use super::conservative::nerv::{LinearisedNerv, DEFAULT_BUDGET};
use super::{CanvasFileWriter, CanvasSummary, ContributionMap, LayerSummary, Method};
use crate::error::{Result, XincError};
use crate::models::nerv::{Nerv, NervActivations};
use crate::tensor::{with_f32_slice, zeroed_buffer};

#[cfg(feature = "cuda")]
mod cuda;
pub mod device;
mod fused;
pub mod gelu;
pub mod reference;

use fused::{fused_kernel_map_into, output_channel_sums};
pub use gelu::{gelu_erf, gelu_slice};
pub use reference::{box3, conv3x3_plane, phase_place, reference_kernel_map, up2};

/// One layer of the NeRV canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NervLayer {
    /// The head conv's per-(input, RGB channel) maps: `head`.
    Head,
    /// A NeRV block (1-based `index`), its output maps (`block{index}`) or its PixelShuffle-placed
    /// pre-GELU maps (`block{index}_pre_gelu`).
    Block { index: usize, pre_gelu: bool },
}

impl fmt::Display for NervLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NervLayer::Head => write!(f, "head"),
            NervLayer::Block { index, pre_gelu } => {
                write!(
                    f,
                    "block{index}{}",
                    if *pre_gelu { "_pre_gelu" } else { "" }
                )
            }
        }
    }
}

impl FromStr for NervLayer {
    type Err = XincError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "head" {
            return Ok(NervLayer::Head);
        }
        let bad = || {
            XincError::InvalidArgument(format!(
                "`{s}` is not a NeRV layer name (head, block<n> or block<n>_pre_gelu)"
            ))
        };
        let rest = s.strip_prefix("block").ok_or_else(bad)?;
        let (digits, pre_gelu) = match rest.strip_suffix("_pre_gelu") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        let index = digits.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?;
        Ok(NervLayer::Block { index, pre_gelu })
    }
}

impl NervLayer {
    /// The layers of the official analysis of a NeRV with `blocks` upsampling blocks, from the
    /// head down: `head, block{n}, block{n}_pre_gelu, …, block1, block1_pre_gelu`.
    pub fn all(blocks: usize) -> Vec<NervLayer> {
        let mut v = vec![NervLayer::Head];
        for index in (1..=blocks).rev() {
            v.push(NervLayer::Block {
                index,
                pre_gelu: false,
            });
            v.push(NervLayer::Block {
                index,
                pre_gelu: true,
            });
        }
        v
    }
}

/// The plain data one layer's maps are computed from (batch element 0).
#[derive(Clone, Copy, Debug)]
pub struct NervBlockData<'a> {
    /// The layer's input activation, `[Cin, h, w]` row-major.
    pub input: &'a [f32],
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    /// The 3×3 conv weight, `[Cout, Cin, 3, 3]`.
    pub weight: &'a [f32],
    /// The conv bias, `[Cout]`.
    pub bias: &'a [f32],
    /// The PixelShuffle factor s; 1 for the head.
    pub scale: usize,
    /// Simulated blocks after this one: 0 for the last block (and the head), 1 for the one
    /// before, …; each doubles the map resolution.
    pub downstream: usize,
}

impl NervBlockData<'_> {
    /// Conv output channels, `weight.len() / (Cin·9)`.
    pub fn out_channels(&self) -> usize {
        self.weight.len() / (9 * self.in_channels).max(1)
    }

    /// The `(H, W)` of one map of `layer`.
    pub fn map_size(&self, layer: NervLayer) -> (usize, usize) {
        let f = match layer {
            NervLayer::Head => 1,
            NervLayer::Block { pre_gelu: true, .. } => self.scale,
            NervLayer::Block {
                pre_gelu: false, ..
            } => self.scale << self.downstream,
        };
        (self.height * f, self.width * f)
    }

    /// Checks the buffer lengths against the shapes, and `layer` against the scale.
    pub fn validate(&self, layer: NervLayer) -> Result<()> {
        let (cin, cout, s) = (self.in_channels, self.out_channels(), self.scale);
        let bad = |what: String| Err(XincError::InvalidArgument(format!("NeRV {layer}: {what}")));
        if cin == 0 || self.height == 0 || self.width == 0 || s == 0 {
            return bad("zero-sized input or scale".into());
        }
        if self.input.len() != cin * self.height * self.width {
            return bad(format!(
                "input has {} values, not {cin}·h·w",
                self.input.len()
            ));
        }
        if self.weight.len() != cout * cin * 9 || self.bias.len() != cout || cout == 0 {
            return bad(format!(
                "weight/bias do not match [Cout, {cin}, 3, 3] / [Cout]"
            ));
        }
        match layer {
            NervLayer::Head if s != 1 || self.downstream != 0 => {
                bad("the head has scale 1 and nothing downstream".into())
            }
            NervLayer::Block { .. } if cout % (s * s) != 0 => {
                bad(format!("Cout {cout} is not a multiple of s² = {}", s * s))
            }
            _ => Ok(()),
        }
    }

    fn check_kernels(&self, layer: NervLayer, inputs: &Range<usize>) -> Result<()> {
        self.validate(layer)?;
        if inputs.start > inputs.end || inputs.end > self.in_channels {
            return Err(XincError::InvalidArgument(format!(
                "NeRV {layer}: input channels {inputs:?} out of 0..{}",
                self.in_channels
            )));
        }
        Ok(())
    }

    /// `P[i, k]`, the kernel's plane at the input resolution.
    #[inline]
    pub(crate) fn plane(&self, i: usize, k: usize) -> Vec<f32> {
        let hw = self.height * self.width;
        let x = &self.input[i * hw..(i + 1) * hw];
        let off = (k * self.in_channels + i) * 9;
        let kernel: &[f32; 9] = self.weight[off..off + 9].try_into().expect("9 taps");
        let share = self.bias[k] / self.in_channels as f32;
        conv3x3_plane(x, self.height, self.width, kernel, share)
    }
}

/// The map of kernel (input channel `i`, conv output channel `k`) of `layer`, `[H, W]` with
/// `(H, W)` = [`NervBlockData::map_size`]. For the head, `k` is the RGB channel.
pub fn kernel_map(data: &NervBlockData, layer: NervLayer, i: usize, k: usize) -> Result<Vec<f32>> {
    let (h, w) = data.map_size(layer);
    let mut out = vec![0.0; h * w];
    kernel_map_into(data, layer, i, k, &mut out)?;
    Ok(out)
}

/// [`kernel_map`] written into `out`, which must hold exactly the map's `H·W` values.
pub fn kernel_map_into(
    data: &NervBlockData,
    layer: NervLayer,
    i: usize,
    k: usize,
    out: &mut [f32],
) -> Result<()> {
    data.check_kernels(layer, &(i..i + 1))?;
    let (h, w) = data.map_size(layer);
    if k >= data.out_channels() || out.len() != h * w {
        return Err(XincError::InvalidArgument(format!(
            "NeRV {layer}: output channel {k} out of 0..{}, or a buffer of {} values for a {h}×{w} map",
            data.out_channels(),
            out.len()
        )));
    }
    fused_kernel_map_into(data, layer, i, k, out);
    Ok(())
}

/// The reductions of `layer`'s canvas restricted to the input channels `inputs`, neuron shape
/// `[inputs.len(), Cout]`: `sum_hw` / `abssum_hw` per kernel, and `sum_neurons` = the sum over
/// the input channels, `[Cout, H, W]` (for the head: the head output before OutImg when
/// `inputs` covers every channel). The kernels are streamed in parallel over output channels,
/// each summed over its inputs in a fixed order (deterministic for any thread count); memory is
/// one map per thread plus the result. See [`sum_over_kernels`] for the `[H, W]` total.
pub fn nerv_layer_summary(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
) -> Result<LayerSummary> {
    data.check_kernels(layer, &inputs)?;
    let (cout, (h, w)) = (data.out_channels(), data.map_size(layer));
    let mut sum_neurons = zeroed_buffer(cout * h * w);
    let per_k: Vec<Vec<(f64, f64)>> = sum_neurons
        .par_chunks_mut(h * w)
        .enumerate()
        .map(|(k, dst)| output_channel_sums(data, layer, inputs.clone(), k, dst))
        .collect();
    let n = inputs.len();
    let (mut sum_hw, mut abssum_hw) = (vec![0.0; n * cout], vec![0.0; n * cout]);
    for (k, col) in per_k.iter().enumerate() {
        for (m, &(s, a)) in col.iter().enumerate() {
            sum_hw[m * cout + k] = s as f32;
            abssum_hw[m * cout + k] = a as f32;
        }
    }
    Ok(LayerSummary {
        layer: layer.to_string(),
        neuron_shape: vec![n, cout],
        height: h,
        width: w,
        sum_hw,
        abssum_hw,
        sum_neurons,
    })
}

/// The sum of a layer's maps over all its kernels, `[H, W]`: `summary.sum_neurons`
/// (`[Cout, H, W]`) summed over the output channels, in f64.
pub fn sum_over_kernels(summary: &LayerSummary) -> Vec<f32> {
    let p = summary.height * summary.width;
    let mut acc = vec![0.0f64; p];
    for plane in summary.sum_neurons.chunks_exact(p) {
        for (a, &v) in acc.iter_mut().zip(plane) {
            *a += v as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// The full maps of `layer` for the input channels `inputs`, `[inputs.len(), Cout, H, W]`
/// (neuron index `(i − inputs.start)·Cout + k`). Block 1's full canvas is 2.4 GB: prefer
/// [`nerv_layer_summary`], or a few input channels at a time.
pub fn nerv_layer_maps(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
) -> Result<ContributionMap> {
    data.check_kernels(layer, &inputs)?;
    let (cout, (h, w)) = (data.out_channels(), data.map_size(layer));
    let mut out = zeroed_buffer(inputs.len() * cout * h * w);
    out.par_chunks_mut(h * w).enumerate().for_each(|(m, dst)| {
        fused_kernel_map_into(data, layer, inputs.start + m / cout, m % cout, dst);
    });
    Ok(ContributionMap {
        layer: layer.to_string(),
        neuron_shape: vec![inputs.len(), cout],
        height: h,
        width: w,
        data: out,
    })
}

/// One layer's input activation and conv weights, owned.
struct OwnedLayer {
    input: Vec<f32>,
    in_channels: usize,
    height: usize,
    width: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    scale: usize,
}

/// Owned layer inputs and weights of one NeRV frame: what every [`NervBlockData`] borrows.
pub struct NervFrameData {
    /// Blocks 1..=B, then the head.
    layers: Vec<OwnedLayer>,
    /// The head output before OutImg, `[3, H, W]`: what the head maps sum to.
    pub output: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

impl NervFrameData {
    /// Extracts batch element 0 of a forward pass, with the model's weights.
    pub fn new(model: &Nerv, acts: &NervActivations) -> Result<Self> {
        let plane = |t: &Tensor| -> Result<(Vec<f32>, usize, usize, usize)> {
            let (_, c, h, w) = t.dims4()?;
            Ok((with_f32_slice(&t.get(0)?, <[f32]>::to_vec)?, c, h, w))
        };
        let conv = |c: &candle_nn::Conv2d| -> Result<(Vec<f32>, Vec<f32>)> {
            let bias = c.bias().ok_or_else(|| {
                XincError::InvalidArgument("NeRV convolutions have biases".into())
            })?;
            Ok((
                with_f32_slice(c.weight(), <[f32]>::to_vec)?,
                with_f32_slice(bias, <[f32]>::to_vec)?,
            ))
        };
        let layer = |x: &Tensor, c: &candle_nn::Conv2d, scale: usize| -> Result<OwnedLayer> {
            let (input, in_channels, height, width) = plane(x)?;
            let (weight, bias) = conv(c)?;
            Ok(OwnedLayer {
                input,
                in_channels,
                height,
                width,
                weight,
                bias,
                scale,
            })
        };
        let mut layers = Vec::new();
        for (b, block) in model.blocks().iter().enumerate() {
            layers.push(layer(&acts.decoder[b + 1], block.conv(), block.scale())?);
        }
        layers.push(layer(
            acts.decoder.last().expect("decoder results"),
            model.head(),
            1,
        )?);
        let (output, _, height, width) = plane(&acts.head_output)?;
        Ok(NervFrameData {
            layers,
            output,
            height,
            width,
        })
    }

    /// Number of NeRV blocks.
    pub fn blocks(&self) -> usize {
        self.layers.len() - 1
    }

    /// The data of `layer` (block indices are 1-based).
    pub fn layer(&self, layer: NervLayer) -> Result<NervBlockData<'_>> {
        let blocks = self.layers.len() - 1;
        let (slot, downstream) = match layer {
            NervLayer::Head => (blocks, 0),
            NervLayer::Block { index, .. } if (1..=blocks).contains(&index) => {
                (index - 1, blocks - index)
            }
            NervLayer::Block { index, .. } => {
                return Err(XincError::InvalidArgument(format!(
                    "this NeRV has no block {index}"
                )))
            }
        };
        let l = &self.layers[slot];
        Ok(NervBlockData {
            input: &l.input,
            in_channels: l.in_channels,
            height: l.height,
            width: l.width,
            weight: &l.weight,
            bias: &l.bias,
            scale: l.scale,
            downstream,
        })
    }

    /// The input-channel range of `layer`: all of them, or `only` when it fits.
    pub fn inputs(&self, layer: NervLayer, only: Option<Range<usize>>) -> Result<Range<usize>> {
        let cin = self.layer(layer)?.in_channels;
        match only {
            None => Ok(0..cin),
            Some(r) if r.start < r.end && r.end <= cin => Ok(r),
            Some(r) => Err(XincError::InvalidArgument(format!(
                "input channels {r:?} outside 0..{cin} of {layer}"
            ))),
        }
    }
}

/// Per-layer reductions of a frame's official canvas, streamed kernel by kernel: on the CPU by
/// the fused path ([`nerv_layer_summary`]), on any other device by tensor operations
/// ([`device::layer_summary_on`]).
pub fn nerv_canvas_summary(
    frame: &NervFrameData,
    layers: &[NervLayer],
    only: Option<Range<usize>>,
    device: &Device,
) -> Result<CanvasSummary> {
    nerv_canvas_summary_with(frame, layers, only, device, Method::Official, false)
}

/// [`nerv_canvas_summary`] under `method`. The conservative block outputs are computed on the
/// CPU by [`LinearisedNerv`] (one linearisation for every layer); with `per_channel`, each of
/// them also gets its per-output-channel reductions, `<layer>_rgb`.
pub fn nerv_canvas_summary_with(
    frame: &NervFrameData,
    layers: &[NervLayer],
    only: Option<Range<usize>>,
    device: &Device,
    method: Method,
    per_channel: bool,
) -> Result<CanvasSummary> {
    let lin = match method {
        Method::Conservative => Some(LinearisedNerv::new(frame)?),
        Method::Official => None,
    };
    let mut summaries = Vec::new();
    for &l in layers {
        let (data, inputs) = (frame.layer(l)?, frame.inputs(l, only.clone())?);
        match (&lin, l) {
            (
                Some(lin),
                NervLayer::Block {
                    pre_gelu: false, ..
                },
            ) => {
                for rgb in [false, true].into_iter().take(1 + usize::from(per_channel)) {
                    summaries.push(lin.layer_summary(
                        &data,
                        l,
                        inputs.clone(),
                        rgb,
                        DEFAULT_BUDGET,
                    )?);
                }
            }
            _ if device.is_cpu() => summaries.push(nerv_layer_summary(&data, l, inputs)?),
            _ => summaries.push(device::layer_summary_on(
                &data,
                l,
                inputs,
                device,
                &Default::default(),
            )?),
        }
    }
    Ok(CanvasSummary {
        height: frame.height,
        width: frame.width,
        layers: summaries,
        output: frame.output.clone(),
    })
}

/// Writes a frame's full official canvas of `layers` to a safetensors file (`[Cin, Cout, h, w]`
/// per layer, plus `output`), a few input channels at a time so that memory stays near `budget`
/// bytes whatever the layer's size (block 1 is 2.4 GB). The maps are computed on `device`.
pub fn write_nerv_canvas(
    frame: &NervFrameData,
    layers: &[NervLayer],
    only: Option<Range<usize>>,
    path: &std::path::Path,
    budget: usize,
    device: &Device,
) -> Result<()> {
    write_nerv_canvas_with(
        frame,
        layers,
        only,
        path,
        budget,
        device,
        Method::Official,
        false,
    )
}

/// One tensor of a written canvas: a layer's maps, summed or per output channel.
struct MapSpec {
    layer: NervLayer,
    rgb: bool,
    name: String,
    shape: Vec<usize>,
}

/// [`write_nerv_canvas`] under `method`; with `per_channel`, each conservative block output also
/// gets its per-output-channel maps `<layer>_rgb`, `[Cin, Cout, 3, H, W]`.
#[allow(clippy::too_many_arguments)]
pub fn write_nerv_canvas_with(
    frame: &NervFrameData,
    layers: &[NervLayer],
    only: Option<Range<usize>>,
    path: &std::path::Path,
    budget: usize,
    device: &Device,
    method: Method,
    per_channel: bool,
) -> Result<()> {
    let conservative = method == Method::Conservative;
    let mut specs = Vec::new();
    for &l in layers {
        let data = frame.layer(l)?;
        let (h, w) = data.map_size(l);
        let n = frame.inputs(l, only.clone())?.len();
        let linearised = conservative
            && matches!(
                l,
                NervLayer::Block {
                    pre_gelu: false,
                    ..
                }
            );
        for rgb in [false, true]
            .into_iter()
            .take(1 + usize::from(linearised && per_channel))
        {
            let mut shape = vec![n, data.out_channels()];
            if rgb {
                shape.push(3);
            }
            shape.extend([h, w]);
            let name = if rgb {
                format!("{l}_rgb")
            } else {
                l.to_string()
            };
            specs.push(MapSpec {
                layer: l,
                rgb,
                name,
                shape,
            });
        }
    }
    let named: Vec<(String, Vec<usize>)> = specs
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    let mut writer = CanvasFileWriter::create(path, &named, 3, frame.height, frame.width)?;
    let lin = if conservative {
        Some(LinearisedNerv::new(frame)?)
    } else {
        None
    };
    for spec in &specs {
        let l = spec.layer;
        let data = frame.layer(l)?;
        let inputs = frame.inputs(l, only.clone())?;
        let per_input: usize = spec.shape[1..].iter().product();
        let chunk = (budget / (4 * per_input).max(1)).max(1);
        let prepared = match (&lin, l) {
            (
                Some(lin),
                NervLayer::Block {
                    pre_gelu: false, ..
                },
            ) => Some(lin.prepare(&data, l, inputs.clone(), spec.rgb)?),
            _ => None,
        };
        for start in inputs.clone().step_by(chunk) {
            let part = start..(start + chunk).min(inputs.end);
            let values = match &prepared {
                Some(p) => p.maps(part)?,
                None if device.is_cpu() => nerv_layer_maps(&data, l, part)?.data,
                None => device::layer_maps_on(&data, l, part, device)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            };
            writer.write_at(&spec.name, (start - inputs.start) * per_input, &values)?;
        }
    }
    writer.write_at("output", 0, &frame.output)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_round_trip() {
        let names: Vec<String> = NervLayer::all(3).iter().map(|l| l.to_string()).collect();
        assert_eq!(
            names,
            [
                "head",
                "block3",
                "block3_pre_gelu",
                "block2",
                "block2_pre_gelu",
                "block1",
                "block1_pre_gelu"
            ]
        );
        for n in &names {
            assert_eq!(&n.parse::<NervLayer>().unwrap().to_string(), n);
        }
        for bad in ["block0", "block", "blockx_pre_gelu", "layer1"] {
            assert!(bad.parse::<NervLayer>().is_err());
        }
    }

    #[test]
    fn summary_matches_full_maps_and_checks_arguments() {
        let input: Vec<f32> = (0..2 * 3 * 4).map(|v| (v as f32 * 0.37).sin()).collect();
        let weight: Vec<f32> = (0..8 * 2 * 9)
            .map(|v| (v as f32 * 0.11).cos() * 0.3)
            .collect();
        let bias: Vec<f32> = (0..8).map(|v| v as f32 * 0.01).collect();
        let data = NervBlockData {
            input: &input,
            in_channels: 2,
            height: 3,
            width: 4,
            weight: &weight,
            bias: &bias,
            scale: 2,
            downstream: 1,
        };
        for layer in [
            NervLayer::Block {
                index: 2,
                pre_gelu: false,
            },
            NervLayer::Block {
                index: 2,
                pre_gelu: true,
            },
        ] {
            let full = nerv_layer_maps(&data, layer, 0..2).unwrap().summarise();
            let streamed = nerv_layer_summary(&data, layer, 0..2).unwrap();
            assert_eq!(full.neuron_shape, streamed.neuron_shape);
            for (a, b) in full.sum_hw.iter().zip(&streamed.sum_hw) {
                assert!((a - b).abs() < 1e-5);
            }
            for (a, b) in full.sum_neurons.iter().zip(&streamed.sum_neurons) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        assert_eq!(
            data.map_size(NervLayer::Block {
                index: 2,
                pre_gelu: false
            }),
            (12, 16)
        );
        assert!(kernel_map(&data, NervLayer::Head, 0, 0).is_err());
        assert!(kernel_map(
            &data,
            NervLayer::Block {
                index: 2,
                pre_gelu: true
            },
            2,
            0
        )
        .is_err());
        assert!(kernel_map(
            &data,
            NervLayer::Block {
                index: 2,
                pre_gelu: true
            },
            0,
            8
        )
        .is_err());
    }
}
