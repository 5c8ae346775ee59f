//! The FFN canvas (spec A.2–A.5), in closed form.
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
//! cost O(fan_in·P) per layer and nothing more.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::conservative::ffn::{
    layer_maps as conservative_maps, layer_maps_into as conservative_maps_into,
};
use super::{
    unknown_layer, Canvas, CanvasFileWriter, CanvasSummary, ContributionMap, Method,
    SummaryAccumulator,
};
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnActivations, FfnConfig};
use crate::tensor::{transpose, with_avx2, with_f32_slice, zeroed_buffer};

/// One layer of the FFN canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FfnLayer {
    /// The inputs of Linear layer k (1-based), each summed over the layer's outputs: `layer{k}`.
    Summed(usize),
    /// The inputs of the last Linear layer, one map per output channel: `layer{L}_rgb`.
    PerChannel(usize),
}

impl fmt::Display for FfnLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FfnLayer::Summed(k) => write!(f, "layer{k}"),
            FfnLayer::PerChannel(k) => write!(f, "layer{k}_rgb"),
        }
    }
}

impl FromStr for FfnLayer {
    type Err = XincError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            XincError::InvalidArgument(format!(
                "`{s}` is not an FFN layer name (layer<k> or layer<k>_rgb)"
            ))
        };
        let rest = s.strip_prefix("layer").ok_or_else(bad)?;
        let (digits, per_channel) = match rest.strip_suffix("_rgb") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        let k: usize = digits.parse().map_err(|_| bad())?;
        Ok(if per_channel {
            FfnLayer::PerChannel(k)
        } else {
            FfnLayer::Summed(k)
        })
    }
}

impl FfnLayer {
    /// Every layer of a model under the official method: `layer1..layerL`, then `layerL_rgb`.
    pub fn all(config: &FfnConfig) -> Vec<FfnLayer> {
        FfnLayer::all_for(config, Method::Official)
    }

    /// Every layer of a model under `method`: `layer1..layerL`, then the per-channel layers
    /// (the last one only for the official canvas; every one for the conservative canvas).
    pub fn all_for(config: &FfnConfig, method: Method) -> Vec<FfnLayer> {
        let l = config.num_layers;
        let mut v: Vec<_> = (1..=l).map(FfnLayer::Summed).collect();
        let first_rgb = if method == Method::Official { l } else { 1 };
        v.extend((first_rgb..=l).map(FfnLayer::PerChannel));
        v
    }

    /// Parses a comma-separated list and checks each name against the model (official method).
    pub fn parse_list(list: &str, config: &FfnConfig) -> Result<Vec<FfnLayer>> {
        FfnLayer::parse_list_for(list, config, Method::Official)
    }

    /// Parses a comma-separated list and checks each name against the model and `method`.
    pub fn parse_list_for(list: &str, config: &FfnConfig, method: Method) -> Result<Vec<FfnLayer>> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| FfnLayer::from_str(s).and_then(|l| l.check_for(config, method)))
            .collect()
    }

    /// Checks the layer against the model and `method`: per-channel maps exist for the last
    /// layer under the official method, for every layer under the conservative one.
    pub fn check_for(self, config: &FfnConfig, method: Method) -> Result<Self> {
        if FfnLayer::all_for(config, method).contains(&self) {
            Ok(self)
        } else {
            let known: Vec<String> = FfnLayer::all_for(config, method)
                .iter()
                .map(|l| l.to_string())
                .collect();
            Err(unknown_layer(&self.to_string(), &known))
        }
    }

    /// The Linear layer (1-based) whose inputs are this layer's neurons.
    pub fn linear_index(&self) -> usize {
        match *self {
            FfnLayer::Summed(k) | FfnLayer::PerChannel(k) => k,
        }
    }

    /// `[fan_in]` or `[fan_in, dim_out]`.
    pub fn neuron_shape(&self, config: &FfnConfig) -> Vec<usize> {
        let fan_in = config.layer_dims(self.linear_index() - 1).0;
        match self {
            FfnLayer::Summed(_) => vec![fan_in],
            FfnLayer::PerChannel(_) => vec![fan_in, config.dim_out],
        }
    }
}

/// Pixels per tile of the conservative maps' tensor operations.
const CONSERVATIVE_TILE: usize = 2048;

/// Pixels per parallel task.
const PIXEL_RUN: usize = 1024;
/// Pixels transposed at a time: one 64-byte cache line per map row, fan_in lines in L1.
const MICRO_RUN: usize = 16;

/// The closed-form rule of one layer: `map[i, r](p) = act(x_i(p)·scale[r][i] + offset[r])`.
struct LayerRule {
    layer: FfnLayer,
    fan_in: usize,
    scales: Vec<Vec<f32>>,
    offsets: Vec<f32>,
    relu: bool,
}

impl LayerRule {
    fn new(model: &Ffn, layer: FfnLayer) -> Result<Self> {
        let config = model.config();
        let layer = layer.check_for(config, Method::Official)?;
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
            relu: matches!(layer, FfnLayer::Summed(k) if k < config.num_layers),
        })
    }

    fn rows(&self) -> usize {
        self.offsets.len()
    }

    /// The rule's scales and offsets as tensors on `device`.
    fn on(self, device: &Device) -> Result<(LayerRule, DeviceRule)> {
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
    fn write_maps(&self, x: &[f32], t: usize, out: &mut [f32]) {
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
                with_avx2(|| self.fill_run(&x[run * PIXEL_RUN * self.fan_in..], &mut segs, xt))
            },
        );
    }

    /// Fills one run's segments (`segs[m]`: map m, the run's pixels) from `x`, which starts at
    /// the run's first pixel, micro-run by micro-run.
    #[inline(always)]
    fn fill_run(&self, x: &[f32], segs: &mut [&mut [f32]], xt: &mut [f32]) {
        let rows = self.rows();
        let len = segs[0].len();
        for q0 in (0..len).step_by(MICRO_RUN) {
            let n = MICRO_RUN.min(len - q0);
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
                if self.relu {
                    dst.iter_mut()
                        .zip(xs)
                        .for_each(|(d, &v)| *d = (v * scale + offset).max(0.0));
                } else {
                    dst.iter_mut()
                        .zip(xs)
                        .for_each(|(d, &v)| *d = v * scale + offset);
                }
            }
        }
    }
}

/// A [`LayerRule`]'s coefficients on a device: `scales` `[fan_in, rows, 1]`, `offsets` `[1, rows, 1]`.
struct DeviceRule {
    scales: Tensor,
    offsets: Tensor,
}

impl DeviceRule {
    /// The maps `[fan_in, rows, t]` of a tile whose layer input is `x` (`[t, fan_in]`), on `x`'s
    /// device.
    fn maps(&self, rule: &LayerRule, x: &Tensor) -> Result<Tensor> {
        let m = x
            .t()?
            .unsqueeze(1)?
            .broadcast_mul(&self.scales)?
            .broadcast_add(&self.offsets)?;
        Ok(if rule.relu { m.relu()? } else { m })
    }
}

/// How one requested layer's maps are made: the official closed form, or the conservative
/// linearisation of [`crate::canvas::conservative::ffn`].
enum TileRule {
    Official(LayerRule),
    Conservative(FfnLayer),
}

impl TileRule {
    fn new(model: &Ffn, layer: FfnLayer, method: Method) -> Result<Self> {
        Ok(match method {
            Method::Official => TileRule::Official(LayerRule::new(model, layer)?),
            Method::Conservative => {
                TileRule::Conservative(layer.check_for(model.config(), method)?)
            }
        })
    }

    fn layer(&self) -> FfnLayer {
        match self {
            TileRule::Official(rule) => rule.layer,
            TileRule::Conservative(layer) => *layer,
        }
    }

    /// Maps per pixel: fan_in · rows.
    fn maps(&self, model: &Ffn) -> usize {
        self.layer().neuron_shape(model.config()).iter().product()
    }

    /// Writes the `[maps, t]` maps of the `t` pixels whose activations are `acts` into `out`.
    fn write(&self, model: &Ffn, acts: &FfnActivations, t: usize, out: &mut [f32]) -> Result<()> {
        match self {
            TileRule::Official(rule) => {
                with_f32_slice(acts.layer_input(rule.layer.linear_index())?, |x| {
                    rule.write_maps(x, t, out)
                })
            }
            TileRule::Conservative(layer) => {
                conservative_maps_into(model, acts, *layer, CONSERVATIVE_TILE, out)
            }
        }
    }
}

/// The official canvas of the requested layers from a forward pass over the model's whole
/// image. The maps are computed in parallel straight from the activations (no temporaries).
pub fn ffn_canvas(model: &Ffn, acts: &FfnActivations, layers: &[FfnLayer]) -> Result<Canvas> {
    ffn_canvas_with(model, acts, layers, Method::Official)
}

/// [`ffn_canvas`] under `method`.
pub fn ffn_canvas_with(
    model: &Ffn,
    acts: &FfnActivations,
    layers: &[FfnLayer],
    method: Method,
) -> Result<Canvas> {
    let mut canvas = Canvas {
        height: 0,
        width: 0,
        layers: Vec::new(),
        output: Vec::new(),
    };
    ffn_canvas_into_with(model, acts, layers, method, &mut canvas)?;
    Ok(canvas)
}

/// [`ffn_canvas`] written into `canvas`, reusing its buffers where they have the right size: a
/// loop over many images or models then pays for the maps' memory (95 MB at the paper's size)
/// once instead of faulting fresh pages in every time.
pub fn ffn_canvas_into(
    model: &Ffn,
    acts: &FfnActivations,
    layers: &[FfnLayer],
    canvas: &mut Canvas,
) -> Result<()> {
    ffn_canvas_into_with(model, acts, layers, Method::Official, canvas)
}

/// [`ffn_canvas_into`] under `method`.
pub fn ffn_canvas_into_with(
    model: &Ffn,
    acts: &FfnActivations,
    layers: &[FfnLayer],
    method: Method,
    canvas: &mut Canvas,
) -> Result<()> {
    let config = model.config();
    let [height, width] = config.data_shape;
    let p = config.num_pixels();
    if acts.features.dims()[0] != p {
        return Err(XincError::InvalidArgument(format!(
            "activations cover {} pixels, the model's image has {p}",
            acts.features.dims()[0]
        )));
    }
    let mut old = std::mem::take(&mut canvas.layers).into_iter();
    for &layer in layers {
        let rule = TileRule::new(model, layer, method)?;
        let len = rule.maps(model) * p;
        let mut data = match old.next() {
            Some(m) if m.data.len() == len => m.data,
            _ => zeroed_buffer(len),
        };
        rule.write(model, acts, p, &mut data)?;
        canvas.layers.push(ContributionMap {
            layer: layer.to_string(),
            neuron_shape: layer.neuron_shape(config),
            height,
            width,
            data,
        });
    }
    canvas.output = with_f32_slice(&acts.pre_output, |y| transpose(y, p, config.dim_out))?;
    (canvas.height, canvas.width) = (height, width);
    Ok(())
}

/// One tile of a streamed canvas: pixels `p0..p0 + len`.
pub struct CanvasTile<'a> {
    pub p0: usize,
    pub len: usize,
    /// The output the maps explain, `[C, len]`.
    pub output: &'a [f32],
    /// Per requested layer, its maps `[maps, len]`.
    pub maps: &'a [Vec<f32>],
}

/// Default number of pixels per streamed tile.
pub const DEFAULT_TILE: usize = 4096;

/// Streams the canvas over pixel tiles: each tile runs the forward pass on its own coordinates
/// and computes every requested layer's maps under `method`, so memory stays at one tile
/// whatever the image size. `sink` sees the tiles in pixel order.
pub fn for_each_ffn_tile(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    method: Method,
    tile: usize,
    mut sink: impl FnMut(&CanvasTile) -> Result<()>,
) -> Result<()> {
    let config = model.config();
    let rules = layers
        .iter()
        .map(|&l| TileRule::new(model, l, method))
        .collect::<Result<Vec<_>>>()?;
    let tile = tile.max(1);
    let mut buffers: Vec<Vec<f32>> = rules
        .iter()
        .map(|r| vec![0.0; r.maps(model) * tile])
        .collect();
    for_each_forward(model, device, tile, |p0, t, acts| {
        for (rule, buf) in rules.iter().zip(buffers.iter_mut()) {
            buf.truncate(rule.maps(model) * t);
            rule.write(model, acts, t, buf)?;
        }
        let output = with_f32_slice(&acts.pre_output, |y| transpose(y, t, config.dim_out))?;
        sink(&CanvasTile {
            p0,
            len: t,
            output: &output,
            maps: &buffers,
        })
    })
}

/// Runs the forward pass on `device` over pixel tiles of the model's image, in pixel order:
/// `f(p0, len, activations)`.
fn for_each_forward(
    model: &Ffn,
    device: &Device,
    tile: usize,
    mut f: impl FnMut(usize, usize, &FfnActivations) -> Result<()>,
) -> Result<()> {
    let config = model.config();
    let coords = crate::data::coords::coordinate_grid(config.height(), config.width());
    let p = config.num_pixels();
    let tile = tile.max(1);
    for p0 in (0..p).step_by(tile) {
        let t = tile.min(p - p0);
        let xy = Tensor::from_slice(&coords[2 * p0..2 * (p0 + t)], (t, 2), device)?;
        f(p0, t, &model.forward(&xy)?)?;
    }
    Ok(())
}

/// Per-layer reductions (`sum_hw`, `abssum_hw`, `sum_neurons`) and the output of the official
/// canvas, streamed tile by tile: the canvas itself is never held. On the CPU each tile's maps
/// are written by the fused rule and reduced; on any other device (CUDA) they are built and
/// reduced there with tensor operations, and only the reductions come back.
pub fn ffn_canvas_summary(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    tile: usize,
) -> Result<CanvasSummary> {
    ffn_canvas_summary_with(model, device, layers, Method::Official, tile)
}

/// [`ffn_canvas_summary`] under `method`.
pub fn ffn_canvas_summary_with(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    method: Method,
    tile: usize,
) -> Result<CanvasSummary> {
    let config = model.config();
    let [height, width] = config.data_shape;
    let p = config.num_pixels();
    let mut accs: Vec<_> = layers
        .iter()
        .map(|l| SummaryAccumulator::new(&l.to_string(), &l.neuron_shape(config), height, width))
        .collect();
    let mut output = vec![0.0f32; config.dim_out * p];
    if device.is_cpu() {
        for_each_ffn_tile(model, device, layers, method, tile, |tile| {
            for (acc, maps) in accs.iter_mut().zip(tile.maps) {
                acc.add_tile(tile.p0, tile.len, maps);
            }
            scatter_rows(&mut output, p, tile.p0, tile.len, tile.output);
            Ok(())
        })?;
    } else {
        reduce_with_tensor_ops(model, device, layers, method, tile, &mut accs, &mut output)?;
    }
    Ok(CanvasSummary {
        height,
        width,
        layers: accs.into_iter().map(SummaryAccumulator::finish).collect(),
        output,
    })
}

/// The device half of [`ffn_canvas_summary_with`]: each tile's maps are built and reduced on
/// `device` with tensor operations; `accs` (one per layer) and `output` (`[C, P]`) receive the
/// results.
fn reduce_with_tensor_ops(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    method: Method,
    tile: usize,
    accs: &mut [SummaryAccumulator],
    output: &mut [f32],
) -> Result<()> {
    let p = model.config().num_pixels();
    let rules = layers
        .iter()
        .map(|&l| {
            Ok(match TileRule::new(model, l, method)? {
                TileRule::Official(rule) => {
                    let (rule, dev) = rule.on(device)?;
                    (TileRule::Official(rule), Some(dev))
                }
                conservative => (conservative, None),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let sums = |m: &Tensor| -> Result<Vec<f32>> { Ok(m.sum(2)?.flatten_all()?.to_vec1::<f32>()?) };
    for_each_forward(model, device, tile, |p0, t, acts| {
        for (acc, (rule, dev_rule)) in accs.iter_mut().zip(&rules) {
            let maps = match (rule, dev_rule) {
                (TileRule::Official(rule), Some(dev)) => {
                    dev.maps(rule, acts.layer_input(rule.layer.linear_index())?)?
                }
                _ => conservative_maps(model, acts, rule.layer())?,
            };
            let neuron_sums = maps.sum(0)?.flatten_all()?.to_vec1::<f32>()?;
            acc.add_reduced(p0, t, &sums(&maps)?, &sums(&maps.abs()?)?, &neuron_sums);
        }
        let y = acts.pre_output.t()?.flatten_all()?.to_vec1::<f32>()?;
        scatter_rows(output, p, p0, t, &y);
        Ok(())
    })
}

/// Writes the full official canvas of the requested layers to a safetensors file, streamed tile
/// by tile (memory: one tile), named by layer, plus `output`.
pub fn write_ffn_canvas(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    path: &std::path::Path,
    tile: usize,
) -> Result<()> {
    write_ffn_canvas_with(model, device, layers, Method::Official, path, tile)
}

/// [`write_ffn_canvas`] under `method`.
pub fn write_ffn_canvas_with(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    method: Method,
    path: &std::path::Path,
    tile: usize,
) -> Result<()> {
    let config = model.config();
    let [height, width] = config.data_shape;
    let specs: Vec<(String, Vec<usize>)> = layers
        .iter()
        .map(|l| {
            let mut shape = l.neuron_shape(config);
            shape.extend([height, width]);
            (l.to_string(), shape)
        })
        .collect();
    let mut writer = CanvasFileWriter::create(path, &specs, config.dim_out, height, width)?;
    for_each_ffn_tile(model, device, layers, method, tile, |tile| {
        for ((name, _), maps) in specs.iter().zip(tile.maps) {
            writer.write_tile(name, tile.p0, tile.len, maps)?;
        }
        writer.write_tile("output", tile.p0, tile.len, tile.output)
    })?;
    writer.finish()
}

/// Copies a `[rows, t]` tile into columns `p0..p0+t` of a `[rows, p]` buffer.
fn scatter_rows(dst: &mut [f32], p: usize, p0: usize, t: usize, tile: &[f32]) {
    for (r, row) in tile.chunks_exact(t).enumerate() {
        dst[r * p + p0..r * p + p0 + t].copy_from_slice(row);
    }
}

/// Pixel reductions of the official per-(input, output) contribution tensor of Linear layer `k`
/// (`layer_k_output_contrib_to_layer{k+1}infeat`): `Z[i, j, p] = x_i(p)·W[j, i] + b[j]/fan_in`.
/// Returns `(sum_hw, abssum_hw)`, each `[fan_in, fan_out]` row-major, exactly and without
/// materialising Z: with each input column sorted and prefix-summed, the absolute sum of an
/// affine function splits at its root into two same-signed partial sums.
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
/// `j`: `x_i(p)·W[j, i] + b[j]/fan_in`, `[P]`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn small_model(final_act: bool) -> Ffn {
        let mut cfg = FfnConfig::with_width(20, 6, 10);
        if final_act {
            cfg.final_act = Some(crate::models::ffn::FinalActivation::Sigmoid);
        }
        let t: HashMap<_, _> = cfg
            .init_tensors(3, &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
        Ffn::from_tensors(cfg, t, "test", &Device::Cpu).unwrap()
    }

    #[test]
    fn layer_names_round_trip_and_are_checked() {
        let cfg = FfnConfig::paper(8, 8);
        let all = FfnLayer::all(&cfg);
        let names: Vec<String> = all.iter().map(|l| l.to_string()).collect();
        assert_eq!(names, ["layer1", "layer2", "layer3", "layer3_rgb"]);
        assert_eq!(
            FfnLayer::parse_list("layer3_rgb, layer1", &cfg).unwrap(),
            vec![all[3], all[0]]
        );
        assert!(FfnLayer::parse_list("layer4", &cfg).is_err());
        assert!(FfnLayer::parse_list("layer2_rgb", &cfg).is_err());
        assert!(FfnLayer::parse_list("conv1", &cfg).is_err());
    }

    #[test]
    fn rgb_maps_sum_to_the_pre_activation_output() {
        let m = small_model(true);
        let acts = m.forward_image(&Device::Cpu).unwrap();
        let c = ffn_canvas(&m, &acts, &FfnLayer::all(m.config())).unwrap();
        let rgb = c.layer("layer3_rgb").unwrap().summarise();
        let max_err = rgb
            .sum_neurons
            .iter()
            .zip(&c.output)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max_err < 1e-5, "conservation error {max_err}");
        // The summed layer-3 map is the channel sum of the per-channel maps.
        let l3 = c.layer("layer3").unwrap();
        let l3rgb = c.layer("layer3_rgb").unwrap();
        let p = 60;
        for i in [0, 7, 19] {
            for q in [0, 33, 59] {
                let s: f32 = (0..3).map(|ch| l3rgb.map(i * 3 + ch)[q]).sum();
                assert!((s - l3.map(i)[q]).abs() < 1e-5);
            }
        }
        assert_eq!(l3.data.len(), 20 * p);
        // Inner layers are ReLU'd aggregates: never negative.
        assert!(c.layer("layer1").unwrap().data.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn canvas_into_reuses_buffers_and_equals_a_fresh_canvas() {
        let m = small_model(false);
        let acts = m.forward_image(&Device::Cpu).unwrap();
        let layers = FfnLayer::all(m.config());
        let fresh = ffn_canvas(&m, &acts, &layers).unwrap();
        let mut reused = ffn_canvas(&m, &acts, &layers[..1]).unwrap();
        let first = reused.layers[0].data.as_ptr();
        reused.layers[0].data.iter_mut().for_each(|v| *v = f32::NAN);
        ffn_canvas_into(&m, &acts, &layers, &mut reused).unwrap();
        assert_eq!(reused, fresh);
        assert_eq!(reused.layers[0].data.as_ptr(), first);
    }

    #[test]
    fn tensor_ops_summary_matches_the_fused_one() {
        let m = small_model(false);
        let dev = Device::Cpu;
        let layers = FfnLayer::all(m.config());
        let fused = ffn_canvas_summary(&m, &dev, &layers, 13).unwrap();
        let cfg = m.config();
        let mut accs: Vec<_> = layers
            .iter()
            .map(|l| SummaryAccumulator::new(&l.to_string(), &l.neuron_shape(cfg), 6, 10))
            .collect();
        let mut output = vec![0.0; 3 * 60];
        reduce_with_tensor_ops(
            &m,
            &dev,
            &layers,
            Method::Official,
            13,
            &mut accs,
            &mut output,
        )
        .unwrap();
        assert_eq!(output, fused.output);
        for (acc, f) in accs.into_iter().zip(&fused.layers) {
            let t = acc.finish();
            assert_eq!(t.neuron_shape, f.neuron_shape);
            for (a, b) in [
                (&t.sum_hw, &f.sum_hw),
                (&t.abssum_hw, &f.abssum_hw),
                (&t.sum_neurons, &f.sum_neurons),
            ] {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                        "{}: {x} vs {y}",
                        t.layer
                    );
                }
            }
        }
    }

    #[test]
    fn streamed_summary_and_file_match_the_in_memory_canvas() {
        let m = small_model(false);
        let dev = Device::Cpu;
        let layers = FfnLayer::all(m.config());
        let c = ffn_canvas(&m, &m.forward_image(&dev).unwrap(), &layers).unwrap();
        let s = ffn_canvas_summary(&m, &dev, &layers, 7).unwrap();
        for (full, streamed) in c.layers.iter().zip(&s.layers) {
            let direct = full.summarise();
            for (a, b) in direct.abssum_hw.iter().zip(&streamed.abssum_hw) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{} {a} vs {b}",
                    full.layer
                );
            }
            for (a, b) in direct.sum_neurons.iter().zip(&streamed.sum_neurons) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        write_ffn_canvas(&m, &dev, &layers, &path, 13).unwrap();
        let t = crate::io::load_safetensors(&path, &dev).unwrap();
        let l2 = t["layer2"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max_err = l2
            .iter()
            .zip(&c.layer("layer2").unwrap().data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max_err < 1e-5);
        assert_eq!(t["layer3_rgb"].dims(), &[20, 3, 6, 10]);
        assert_eq!(t["output"].dims(), &[3, 6, 10]);
    }

    #[test]
    fn unit_pair_reductions_match_brute_force() {
        let m = small_model(false);
        let acts = m.forward_image(&Device::Cpu).unwrap();
        let (sum, abs) = unit_pair_reductions(&m, &acts, 2).unwrap();
        for (i, j) in [(0, 0), (3, 17), (19, 5)] {
            let z = unit_pair_map(&m, &acts, 2, i, j).unwrap();
            let s: f32 = z.iter().sum();
            let a: f32 = z.iter().map(|v| v.abs()).sum();
            assert!(
                (sum[i * 20 + j] - s).abs() < 1e-4,
                "{} vs {s}",
                sum[i * 20 + j]
            );
            assert!(
                (abs[i * 20 + j] - a).abs() < 1e-4,
                "{} vs {a}",
                abs[i * 20 + j]
            );
        }
    }
}
