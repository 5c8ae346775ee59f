//! The implicit neural canvas: one contribution map per neuron, for every output pixel.
//!
//! A layer's canvas is a [`ContributionMap`] of shape `[neuron axes…, H, W]`. The first axis indexes
//! the layer's units; further neuron axes (the RGB channel of a per-channel map) come before the
//! pixel axes. Reductions follow one rule everywhere: `sum_hw` / `abssum_hw` sum over the pixels
//! (one value per neuron), and `sum_neurons` sums over the **first** axis only, so that a map that
//! decomposes the output sums back to it (`layer3_rgb` → `[3, H, W]` = the prediction).
//!
//! The canvas is organised by model: [`ffn`] and [`nerv`] each hold their layer types, their
//! official rule and their conservative rule side by side, and a driver that reads the
//! [`Method`] once. Every entry point takes a [`CanvasOptions`] (the method, the tile, the memory
//! budget, the NeRV input channels) and, where it runs a model, a separate `&Device`. The
//! analyses read a layer's maps through [`maps::NeuronMaps`], an owned source:
//! [`Canvas::maps`] for a canvas in memory, [`nerv::NervFrameData::maps`] for a NeRV layer
//! computed kernel by kernel.
//!
//! # The two canvases
//!
//! The **official** canvas ([`Method::Official`], spec A) is the one of the paper's code, with its
//! heuristics: it splits each bias evenly, applies the activation to each neuron's share, and
//! stands in 3×3 box filters for the NeRV layers after the analysed one.
//!
//! The **conservative** canvas ([`Method::Conservative`]): every layer's maps sum exactly to the
//! model's output, pixel by pixel and channel by channel. A neuron's contribution is carried to
//! the output RGB through the real downstream network — its real convolutions or linear layers,
//! the real PixelShuffle, and the real activations — linearised at the frame by the **rescale
//! rule** (DeepLIFT-rescale with a zero reference, LRP-z): a unit with pre-activation z and
//! output σ(z) passes on the share σ(z)/z of whatever reaches z. For ReLU that multiplier is
//! 1\[z > 0\]; for the exact GELU z·Φ(z) it is Φ(z) itself, so the z → 0 limit (Φ(0) = ½) needs no
//! special case. With the multipliers fixed the network is linear, and the output is exactly
//! `y = Σ_neurons J·x_neuron + B`, where B collects the biases.
//!
//! **Bias treatment.** The analysed layer's own bias is split evenly over the fan-in of each
//! unit, as the official code does (`b[k]/Cin` goes with each kernel (i, k) of a NeRV block, and
//! `b[j]/fan_in` with each FFN input), and is carried downstream with that share. The biases of
//! the later layers, carried to the output by the same linearisation (the *downstream-bias map*
//! B_down, `[3, H, W]`), are split evenly over the layer's N neurons. So every map equals
//! `J·(neuron's share of the layer's pre-activation) + B_down/N`, and the N maps sum to the
//! output with no remainder. Two consequences:
//! - for the last layer (FFN `layer{L}_rgb`, NeRV `head`) there is nothing downstream, and the
//!   conservative maps *are* the official ones;
//! - a neuron that never fires still carries the constant `B_down/N`, as the official last layer
//!   carries `b/fan_in` (spec A.2, "oddity").
//!
//! The FFN's conservative layers are computed with candle tensor operations (any device); the
//! NeRV's conservative block outputs on the CPU, by exact local back-propagation of the
//! linearised network from every output pixel to the block's output, streamed over bands of
//! output rows. Both rules also give per-output-channel maps of every layer (`layer{k}_rgb`,
//! `block{n}_rgb`).

pub mod ffn;
pub mod maps;
pub mod nerv;

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::{Result, XincError};
use crate::io::{save_safetensors, TensorWriter};

/// Which canvas to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The official canvas of the paper's code (spec A), with its heuristics: the default, for
    /// reproducing the paper.
    #[default]
    Official,
    /// The output-conserving canvas (see the module doc): contributions carried through the real
    /// downstream network by the rescale rule; every layer's maps sum exactly to the output.
    Conservative,
}

impl Method {
    pub const ALL: [Method; 2] = [Method::Official, Method::Conservative];
}

/// Default number of FFN pixels per streamed tile.
pub const DEFAULT_TILE: usize = 4096;

/// Default bytes a streamed NeRV step may hold (a band of conservative coefficients, a chunk of
/// written maps).
pub const DEFAULT_BUDGET: usize = 128 << 20;

/// How to compute a canvas: every entry point of [`ffn`] and [`nerv`] takes one.
///
/// ```
/// use xinc::canvas::{CanvasOptions, Method};
/// let opts = CanvasOptions { method: Method::Conservative, ..Default::default() };
/// assert_eq!(opts.tile, xinc::canvas::DEFAULT_TILE);
/// assert_eq!(CanvasOptions::from(Method::Conservative).method, opts.method);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanvasOptions {
    /// The official canvas (the default) or the conservative one.
    pub method: Method,
    /// FFN pixels per streamed tile ([`DEFAULT_TILE`]); the maps do not depend on it.
    pub tile: usize,
    /// Bytes a streamed NeRV step may hold ([`DEFAULT_BUDGET`]): the bands of a conservative
    /// summary's coefficients, the input-channel chunks of a written canvas. The maps do not
    /// depend on it.
    pub budget: usize,
    /// NeRV: the input channels whose kernels are computed (`None`: all of them). The FFN
    /// ignores it.
    pub inputs: Option<Range<usize>>,
}

impl Default for CanvasOptions {
    fn default() -> Self {
        CanvasOptions {
            method: Method::Official,
            tile: DEFAULT_TILE,
            budget: DEFAULT_BUDGET,
            inputs: None,
        }
    }
}

impl From<Method> for CanvasOptions {
    fn from(method: Method) -> Self {
        CanvasOptions {
            method,
            ..Default::default()
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Official => "official",
            Method::Conservative => "conservative",
        })
    }
}

impl FromStr for Method {
    type Err = XincError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "official" => Ok(Method::Official),
            "conservative" => Ok(Method::Conservative),
            _ => Err(XincError::InvalidArgument(format!(
                "`{s}` is not a canvas method (official or conservative)"
            ))),
        }
    }
}

/// The contribution maps of one layer.
#[derive(Clone, PartialEq)]
pub struct ContributionMap {
    /// Layer name, e.g. `layer2` or `layer3_rgb`.
    pub layer: String,
    /// Leading (neuron) axes, e.g. `[104]` or `[104, 3]`.
    pub neuron_shape: Vec<usize>,
    pub height: usize,
    pub width: usize,
    /// Row-major values, pixel axes last.
    pub data: Vec<f32>,
}

impl ContributionMap {
    /// The full shape `[neuron axes…, H, W]`.
    pub fn shape(&self) -> Vec<usize> {
        let mut s = self.neuron_shape.clone();
        s.extend([self.height, self.width]);
        s
    }

    /// Number of maps (product of the neuron axes).
    pub fn num_maps(&self) -> usize {
        self.neuron_shape.iter().product()
    }

    pub fn num_pixels(&self) -> usize {
        self.height * self.width
    }

    /// The `[H·W]` map with flat neuron index `m`.
    pub fn map(&self, m: usize) -> &[f32] {
        let p = self.num_pixels();
        &self.data[m * p..(m + 1) * p]
    }

    /// Per-map sums and absolute sums over the pixels.
    pub fn summarise(&self) -> LayerSummary {
        let mut acc =
            SummaryAccumulator::new(&self.layer, &self.neuron_shape, self.height, self.width);
        acc.add_tile(0, self.num_pixels(), &self.data);
        acc.finish()
    }

    /// The maps as a candle tensor of [`ContributionMap::shape`].
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.data, self.shape(), device)?)
    }
}

/// The canvas of a model for one image or frame: the requested layers plus the output they explain.
/// The layers are shared (`Arc`): cloning a canvas or handing out a layer's [`Canvas::maps`] copies
/// no maps.
#[derive(Clone, Default, PartialEq)]
pub struct Canvas {
    pub height: usize,
    pub width: usize,
    pub layers: Vec<Arc<ContributionMap>>,
    /// The model output that the maps explain, `[C, H, W]` (before any final activation).
    pub output: Vec<f32>,
}

impl Canvas {
    pub fn layer(&self, name: &str) -> Option<&ContributionMap> {
        self.layers
            .iter()
            .find(|m| m.layer == name)
            .map(Arc::as_ref)
    }

    /// The reductions of every layer (the same as a streamed summary, from the maps in memory).
    pub fn summary(&self) -> CanvasSummary {
        CanvasSummary {
            height: self.height,
            width: self.width,
            layers: self.layers.iter().map(|m| m.summarise()).collect(),
            output: self.output.clone(),
        }
    }

    /// Writes the maps (named by layer) and `output` `[C, H, W]` to a safetensors file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dev = Device::Cpu;
        let mut tensors = Vec::with_capacity(self.layers.len() + 1);
        for m in &self.layers {
            tensors.push((m.layer.clone(), m.to_tensor(&dev)?));
        }
        tensors.push((
            "output".to_string(),
            output_tensor(&self.output, self.height, self.width)?,
        ));
        save_safetensors(path, &tensors)
    }
}

fn output_tensor(output: &[f32], height: usize, width: usize) -> Result<Tensor> {
    let c = output.len() / (height * width).max(1);
    Ok(Tensor::from_slice(
        output,
        (c, height, width),
        &Device::Cpu,
    )?)
}

/// Reductions of one layer's canvas, computed without holding the canvas.
#[derive(Clone, PartialEq)]
pub struct LayerSummary {
    pub layer: String,
    pub neuron_shape: Vec<usize>,
    pub height: usize,
    pub width: usize,
    /// Per map, the sum over pixels (`[neuron axes…]`).
    pub sum_hw: Vec<f32>,
    /// Per map, the sum of absolute values over pixels.
    pub abssum_hw: Vec<f32>,
    /// Sum over the first neuron axis: `[remaining neuron axes…, H, W]`.
    pub sum_neurons: Vec<f32>,
}

impl LayerSummary {
    /// The shape of `sum_neurons`.
    pub fn sum_neurons_shape(&self) -> Vec<usize> {
        let mut s = self.neuron_shape[1..].to_vec();
        s.extend([self.height, self.width]);
        s
    }
}

/// All layer summaries of a canvas, and the output they explain.
#[derive(Clone, PartialEq)]
pub struct CanvasSummary {
    pub height: usize,
    pub width: usize,
    pub layers: Vec<LayerSummary>,
    /// `[C, H, W]`, as in [`Canvas::output`].
    pub output: Vec<f32>,
}

impl CanvasSummary {
    pub fn layer(&self, name: &str) -> Option<&LayerSummary> {
        self.layers.iter().find(|s| s.layer == name)
    }

    /// Writes `<layer>.sum_hw`, `<layer>.abssum_hw`, `<layer>.sum_neurons` and `output`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dev = Device::Cpu;
        let mut tensors = Vec::with_capacity(3 * self.layers.len() + 1);
        for s in &self.layers {
            let l = &s.layer;
            tensors.push((
                format!("{l}.sum_hw"),
                Tensor::from_slice(&s.sum_hw, s.neuron_shape.as_slice(), &dev)?,
            ));
            tensors.push((
                format!("{l}.abssum_hw"),
                Tensor::from_slice(&s.abssum_hw, s.neuron_shape.as_slice(), &dev)?,
            ));
            tensors.push((
                format!("{l}.sum_neurons"),
                Tensor::from_slice(&s.sum_neurons, s.sum_neurons_shape(), &dev)?,
            ));
        }
        tensors.push((
            "output".to_string(),
            output_tensor(&self.output, self.height, self.width)?,
        ));
        save_safetensors(path, &tensors)
    }
}

/// Accumulates a [`LayerSummary`] from pixel tiles, in f64.
#[derive(Clone, Debug)]
pub(crate) struct SummaryAccumulator {
    layer: String,
    neuron_shape: Vec<usize>,
    height: usize,
    width: usize,
    sum_hw: Vec<f64>,
    abssum_hw: Vec<f64>,
    sum_neurons: Vec<f64>,
}

impl SummaryAccumulator {
    pub fn new(layer: &str, neuron_shape: &[usize], height: usize, width: usize) -> Self {
        let maps: usize = neuron_shape.iter().product();
        let rest: usize = neuron_shape[1..].iter().product();
        SummaryAccumulator {
            layer: layer.to_string(),
            neuron_shape: neuron_shape.to_vec(),
            height,
            width,
            sum_hw: vec![0.0; maps],
            abssum_hw: vec![0.0; maps],
            sum_neurons: vec![0.0; rest * height * width],
        }
    }

    /// Adds the maps of pixels `p0..p0 + t`, laid out `[maps, t]`.
    pub fn add_tile(&mut self, p0: usize, t: usize, tile: &[f32]) {
        let rest = self.sum_neurons.len() / (self.height * self.width);
        let p = self.height * self.width;
        for (m, row) in tile.chunks_exact(t).enumerate() {
            let (s, a) = row.iter().fold((0.0f64, 0.0f64), |(s, a), &v| {
                (s + v as f64, a + v.abs() as f64)
            });
            self.sum_hw[m] += s;
            self.abssum_hw[m] += a;
            let dst = &mut self.sum_neurons[(m % rest) * p + p0..][..t];
            for (d, &v) in dst.iter_mut().zip(row) {
                *d += v as f64;
            }
        }
    }

    /// Adds reductions computed elsewhere (on a device) for pixels `p0..p0 + t`: per map its sum
    /// and absolute sum over the tile, and the tile's `[rest, t]` sum over the first neuron axis.
    pub fn add_reduced(
        &mut self,
        p0: usize,
        t: usize,
        sums: &[f32],
        abssums: &[f32],
        neurons: &[f32],
    ) {
        let p = self.height * self.width;
        for (acc, &v) in self.sum_hw.iter_mut().zip(sums) {
            *acc += f64::from(v);
        }
        for (acc, &v) in self.abssum_hw.iter_mut().zip(abssums) {
            *acc += f64::from(v);
        }
        for (r, row) in neurons.chunks_exact(t).enumerate() {
            for (d, &v) in self.sum_neurons[r * p + p0..][..t].iter_mut().zip(row) {
                *d += f64::from(v);
            }
        }
    }

    pub fn finish(self) -> LayerSummary {
        let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
        LayerSummary {
            layer: self.layer,
            neuron_shape: self.neuron_shape,
            height: self.height,
            width: self.width,
            sum_hw: f(self.sum_hw),
            abssum_hw: f(self.abssum_hw),
            sum_neurons: f(self.sum_neurons),
        }
    }
}

/// Streams a canvas to a safetensors file tile by tile: the file is laid out from the known
/// shapes first, then each tile's maps are written at their offsets. Only one tile is ever in
/// memory. The file appears under its final name only when complete.
pub(crate) struct CanvasFileWriter {
    writer: TensorWriter,
    pixels: usize,
}

impl CanvasFileWriter {
    /// `layers`: (name, full shape `[neuron axes…, H, W]`); `output` `[C, H, W]` is added.
    pub fn create(
        path: &Path,
        layers: &[(String, Vec<usize>)],
        output_channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        let mut specs = layers.to_vec();
        specs.push(("output".to_string(), vec![output_channels, height, width]));
        Ok(CanvasFileWriter {
            writer: TensorWriter::create(path, &specs)?,
            pixels: height * width,
        })
    }

    /// Writes the `[rows, t]` tile of pixels `p0..p0+t` of tensor `name`, whose rows are the
    /// leading axes flattened.
    pub fn write_tile(&mut self, name: &str, p0: usize, t: usize, tile: &[f32]) -> Result<()> {
        for (r, row) in tile.chunks_exact(t).enumerate() {
            self.writer.write_at(name, r * self.pixels + p0, row)?;
        }
        Ok(())
    }

    /// Writes contiguous values of tensor `name` from flat element index `start`.
    pub fn write_at(&mut self, name: &str, start: usize, values: &[f32]) -> Result<()> {
        self.writer.write_at(name, start, values)
    }

    pub fn finish(self) -> Result<()> {
        self.writer.finish()
    }
}

/// Which output channels a conservative map explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The sum over the output channels (the summed map, what the analyses read).
    Sum,
    /// One output channel.
    Channel(usize),
}

impl Probe {
    /// The weights of the output channels, `[dim_out]`.
    pub(crate) fn weights(self, dim_out: usize) -> Vec<f32> {
        (0..dim_out)
            .map(|c| match self {
                Probe::Sum => 1.0,
                Probe::Channel(k) => f32::from(u8::from(k == c)),
            })
            .collect()
    }
}

/// Checks a layer name against the known ones.
pub(crate) fn unknown_layer(name: &str, known: &[String]) -> XincError {
    XincError::InvalidArgument(format!(
        "unknown layer `{name}`; this model has {}",
        known.join(", ")
    ))
}

// Short `Debug` forms: a layer's name and shape, never its values (a canvas holds millions).

impl fmt::Debug for ContributionMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContributionMap({} {:?})", self.layer, self.shape())
    }
}

impl fmt::Debug for LayerSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LayerSummary({} {:?} of {}×{})",
            self.layer, self.neuron_shape, self.height, self.width
        )
    }
}

impl fmt::Debug for Canvas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layers: Vec<&str> = self.layers.iter().map(|m| m.layer.as_str()).collect();
        write!(
            f,
            "Canvas({}×{}, layers {layers:?})",
            self.height, self.width
        )
    }
}

impl fmt::Debug for CanvasSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layers: Vec<&str> = self.layers.iter().map(|m| m.layer.as_str()).collect();
        write!(
            f,
            "CanvasSummary({}×{}, layers {layers:?})",
            self.height, self.width
        )
    }
}
