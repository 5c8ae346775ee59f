//! The implicit neural canvas: one contribution map per neuron, for every output pixel.
//!
//! A layer's canvas is a [`ContributionMap`] of shape `[neuron axes…, H, W]`. The first axis indexes
//! the layer's units; further neuron axes (the RGB channel of a per-channel map) come before the
//! pixel axes. Reductions follow one rule everywhere: `sum_hw` / `abssum_hw` sum over the pixels
//! (one value per neuron), and `sum_neurons` sums over the **first** axis only, so that a map that
//! decomposes the output sums back to it (`layer3_rgb` → `[3, H, W]` = the prediction).
//!
//! Two canvases exist ([`Method`]): the official one of the paper's code ([`ffn`], [`nerv`]) and
//! the output-conserving one ([`conservative`]), whose every layer sums to the output.

pub mod conservative;
pub mod ffn;
pub mod nerv;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

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
    /// The output-conserving canvas of [`conservative`]: contributions carried through the real
    /// downstream network by the rescale rule; every layer's maps sum exactly to the output.
    Conservative,
}

impl Method {
    pub const ALL: [Method; 2] = [Method::Official, Method::Conservative];
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
#[derive(Clone, Debug, PartialEq)]
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
#[derive(Clone, Debug, PartialEq)]
pub struct Canvas {
    pub height: usize,
    pub width: usize,
    pub layers: Vec<ContributionMap>,
    /// The model output that the maps explain, `[C, H, W]` (before any final activation).
    pub output: Vec<f32>,
}

impl Canvas {
    pub fn layer(&self, name: &str) -> Option<&ContributionMap> {
        self.layers.iter().find(|m| m.layer == name)
    }

    /// The reductions of every layer (the same as a streamed summary, from the maps in memory).
    pub fn summary(&self) -> CanvasSummary {
        CanvasSummary {
            height: self.height,
            width: self.width,
            layers: self.layers.iter().map(ContributionMap::summarise).collect(),
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
#[derive(Clone, Debug, PartialEq)]
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
#[derive(Clone, Debug, PartialEq)]
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
pub struct SummaryAccumulator {
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
pub struct CanvasFileWriter {
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

/// Checks a layer name against the known ones.
pub(crate) fn unknown_layer(name: &str, known: &[String]) -> XincError {
    XincError::InvalidArgument(format!(
        "unknown layer `{name}`; this model has {}",
        known.join(", ")
    ))
}
