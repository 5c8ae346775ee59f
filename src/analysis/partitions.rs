//! What do neurons care about (spec B.6): how unevenly each neuron's absolute contribution falls
//! on the regions of four partitions of the frame (instances, RGB clusters, Gabor clusters, grid
//! cells), in the official code's conventions or the corrected ones ([`Fidelity`]).
//!
//! For neuron n and region R of a partition, with P = H·W the frame's pixel count:
//! `total_n = Σ_p |C_n(p)|`, `actual_n(R) = Σ_{p∈R} |C_n(p)|`, `expected_n(R) = total_n·|R|/P`,
//! `δ_n(R) = |actual − expected| / expected` (signed, without `|·|`, for the official grid cells),
//! and `var_n` = the unbiased variance (ddof 1) of δ_n over the partition's regions. A dead neuron
//! (`total_n = 0`) has NaN variance; summaries drop it. The paper's box plots show
//! `log_std = ln √var_n` (natural log; −∞ for a neuron spread exactly as the regions' areas).
//!
//! | | [`Fidelity::Official`] (code-faithful) | [`Fidelity::Corrected`] (intended) |
//! |---|---|---|
//! | grid cells | lattices `{(sh·i+dy, sw·j+dx)}`, the last `H mod sh` rows / `W mod sw` columns in no region | contiguous `sh×sw` cells covering the frame (sizes differ by ≤ 1 px when not divisible) |
//! | Gabor features | 6 kernels (θ = 0, σ ∈ {1, 3}, f ∈ {0.05, 0.25, 0.5}), uint8 responses | 24 kernels (θ ∈ {0, π/4, π/2, 3π/4}), f64 responses |
//! | Gabor k-means | `n_init` 10 | `n_init` 10 |
//! | RGB k-means | `n_init` 1 | `n_init` 10 (the official 1 is an arbitrary, noisy choice) |
//! | δ | signed for grid cells, `|·|` elsewhere | `|·|` everywhere |
//! | "other" | union of the masks | complement of the masks |
//!
//! Regions with no pixel (an empty k-means cluster, an empty "other") are dropped, where the
//! official code would divide by zero. Label maps are public: the neuron-groups analysis (B.8)
//! reuses [`rgb_labels`] and [`gabor_labels`].
//!
//! **Gabor responses (official).** The grey image is Pillow's `convert('L')` of the truncated
//! uint8 GT, which Pillow computes in fixed point with rounding, `(19595 R + 38470 G + 7471 B +
//! 2¹⁵) >> 16` (its documented `(299 R + 587 G + 114 B)/1000` is an approximation of that). Each
//! kernel is the real part of skimage's `gabor_kernel`, applied with `scipy.ndimage.convolve(…,
//! mode='wrap')`: kernel flipped, taps with `|w| ≤ f64::EPSILON` skipped, taps summed in f64 in
//! C order. The uint8 output is what scipy's `CASE_FILTER_OUT_SAFE` (and the older plain C cast
//! on x86, `cvttsd2si` then the low byte) produce: truncate toward zero, then wrap modulo 256
//! ([`c_uint8`]), exact for |v| < 2³¹, far beyond any response of these kernels.
//!
//! Schema of [`PartitionVariances::to_frame`] (one row per neuron and partition, dead neurons
//! included with NaN):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `frame` | u32 | the frame index |
//! | `mode` | str | `official` or `corrected` |
//! | `partition` | str | `instances`, `rgb`, `gabor`, `grid` |
//! | `neuron` | u32 | the flat neuron index |
//! | `variance` | f64 | var_n of δ over the partition's regions (NaN when dead) |
//! | `log_std` | f64 | ln √var_n |
//!
//! Schema of [`summary_frame`] (one row per layer, frame, mode and partition):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer`, `frame`, `mode`, `partition` | str, u32, str, str | as above |
//! | `regions` | u32 | non-empty regions of the partition |
//! | `neurons` | u32 | live neurons (finite variance) |
//! | `median_log_std` | f64 | median of log_std over live neurons |
//! | `q1_log_std`, `q3_log_std` | f64 | 25th / 75th percentiles (linear interpolation, as numpy) |
//! | `median_variance` | f64 | median of var_n over live neurons |
//! | `rank` | u32 | 1 = the partition with the lowest median log std in its layer, frame and mode |
//! | `lowest` | bool | `rank == 1`; the paper's "space-agnostic" reading is `grid` lowest |

use std::f64::consts::PI;

use polars::prelude::*;

use super::objects::{instance_regions, other_region};
use super::regions::Regions;
use super::source::per_neuron;
use super::{kmeans, quantile, table_error, Fidelity};
use crate::canvas::maps::NeuronMaps;
use crate::data::image::ImageTensor;
use crate::data::panoptic::PanopticFrame;
use crate::error::{Result, XincError};

// ---------------------------------------------------------------------------------------------
// Configuration.

/// The four partitions of spec B.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartitionKind {
    Instances,
    Rgb,
    Gabor,
    Grid,
}

impl PartitionKind {
    pub fn name(self) -> &'static str {
        match self {
            PartitionKind::Instances => "instances",
            PartitionKind::Rgb => "rgb",
            PartitionKind::Gabor => "gabor",
            PartitionKind::Grid => "grid",
        }
    }
}

/// The number of clusters and grid cells of B.6, the k-means seed and the conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionConfig {
    /// Clusters of the RGB and Gabor k-means.
    pub k: usize,
    /// Grid cells `(sh, sw)`: row and column strides (official) or cell counts (corrected).
    pub cells: (usize, usize),
    /// Seed of both k-means.
    pub seed: u64,
    pub fidelity: Fidelity,
}

impl Default for PartitionConfig {
    /// The 0005 setting (k = 32, 4×8 cells for 128×256 frames), official conventions, seed 0.
    fn default() -> Self {
        PartitionConfig {
            k: 32,
            cells: (4, 8),
            seed: 0,
            fidelity: Fidelity::Official,
        }
    }
}

impl PartitionConfig {
    /// The spec's k and cells for a named video (table of B.6); the 0005 setting otherwise.
    pub fn for_video(video: &str, fidelity: Fidelity) -> Self {
        let (k, cells) = match video {
            "26_cblDl5vCZnw" => (24, (4, 6)),
            "0495" | "2350_sCLtK1a2GGc" => (26, (4, 6)),
            "0065" => (27, (4, 6)),
            "127_-hIVCYO4C90" => (23, (4, 6)),
            "1327_e96s6pJ5x3Y" => (16, (4, 4)),
            _ => (32, (4, 8)),
        };
        PartitionConfig {
            k,
            cells,
            fidelity,
            ..Default::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label maps.

/// A GT image from a planar `[3, H, W]` buffer (the NeRV pipeline's frames).
pub(crate) fn gt_from_planar(planar: &[f32], height: usize, width: usize) -> Result<ImageTensor> {
    let p = height * width;
    if p == 0 || planar.len() != 3 * p {
        return Err(XincError::InvalidArgument(format!(
            "a planar RGB frame of {height}x{width} needs {} values, got {}",
            3 * p,
            planar.len()
        )));
    }
    let data = (0..3 * p).map(|i| planar[(i % 3) * p + i / 3]).collect();
    Ok(ImageTensor {
        height,
        width,
        data,
    })
}

fn check_image(gt: &ImageTensor) -> Result<()> {
    let p = gt.height * gt.width;
    if p == 0 || gt.data.len() != 3 * p {
        return Err(XincError::InvalidArgument(format!(
            "an RGB image of {}x{} needs {} values, got {}",
            gt.height,
            gt.width,
            3 * p,
            gt.data.len()
        )));
    }
    Ok(())
}

/// Per-pixel RGB k-means clusters of the GT floats (sklearn `KMeans(k, n_init=1, random_state)`
/// in the official code; `n_init` 10 when corrected). `[H·W]` labels in `0..k`.
pub fn rgb_labels(gt: &ImageTensor, k: usize, seed: u64, fidelity: Fidelity) -> Result<Vec<usize>> {
    check_image(gt)?;
    let data: Vec<f64> = gt.data.iter().map(|&v| f64::from(v)).collect();
    let n_init = match fidelity {
        Fidelity::Official => 1,
        Fidelity::Corrected => 10,
    };
    Ok(kmeans(&data, 3, k, n_init, seed)?.0)
}

/// Per-pixel k-means clusters (`n_init` 10) of the Gabor responses of the GT's grey image
/// ([`gabor_features`]). `[H·W]` labels in `0..k`.
pub fn gabor_labels(
    gt: &ImageTensor,
    k: usize,
    seed: u64,
    fidelity: Fidelity,
) -> Result<Vec<usize>> {
    check_image(gt)?;
    let bank = gabor_bank(fidelity);
    let features = gabor_features(&gray_l(gt), gt.height, gt.width, &bank, fidelity);
    Ok(kmeans(&features, bank.len(), k, 10, seed)?.0)
}

/// The grid-cell label of every pixel (`None`: in no cell). Official: lattice `(y mod sh)·sw +
/// (x mod sw)` over the first `⌊H/sh⌋·sh` rows and `⌊W/sw⌋·sw` columns (torch `unfold` drops the
/// rest). Corrected: contiguous cell `⌊y·sh/H⌋·sw + ⌊x·sw/W⌋`, covering every pixel.
pub fn grid_labels(
    height: usize,
    width: usize,
    (sh, sw): (usize, usize),
    fidelity: Fidelity,
) -> Result<Vec<Option<usize>>> {
    if sh == 0 || sw == 0 || sh > height || sw > width {
        return Err(XincError::InvalidArgument(format!(
            "{sh}x{sw} grid cells on a {height}x{width} frame"
        )));
    }
    let (rows, cols) = (height / sh * sh, width / sw * sw);
    let label = |y: usize, x: usize| match fidelity {
        Fidelity::Official => (y < rows && x < cols).then_some((y % sh) * sw + x % sw),
        Fidelity::Corrected => Some(y * sh / height * sw + x * sw / width),
    };
    Ok((0..height * width)
        .map(|p| label(p / width, p % width))
        .collect())
}

/// Pillow's `convert('L')` of the truncated uint8 GT (`clamp(0, 1)·255`, then truncation):
/// `(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`.
pub(crate) fn gray_l(gt: &ImageTensor) -> Vec<u8> {
    gt.to_rgb8()
        .as_raw()
        .chunks_exact(3)
        .map(|c| {
            let l = u32::from(c[0]) * 19595 + u32::from(c[1]) * 38470 + u32::from(c[2]) * 7471;
            ((l + 0x8000) >> 16) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Gabor features.

/// The real part of a Gabor kernel, row-major `[rows, cols]` (rows along y).
#[derive(Clone, Debug, PartialEq)]
pub struct GaborKernel {
    pub frequency: f64,
    pub theta: f64,
    pub sigma: f64,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

/// The real part of skimage's `gabor_kernel(frequency, theta, sigma_x=σ, sigma_y=σ, n_stds=3)`:
/// on the grid `x ∈ [−x0, x0]`, `y ∈ [−y0, y0]` with `x0 = ⌈max(|3σ cos θ|, |3σ sin θ|, 1)⌉`
/// (and y0 alike), `rotx = x cos θ + y sin θ`, `roty = −x sin θ + y cos θ`,
/// `g = exp(−(rotx² + roty²)/(2σ²)) / (2πσ²) · cos(2π f rotx)`. The division is numpy's complex
/// one, a multiplication by `1/(2πσ²)`.
pub fn gabor_kernel(frequency: f64, theta: f64, sigma: f64) -> GaborKernel {
    let (ct, st) = (theta.cos(), theta.sin());
    // x0 = y0 since σx = σy.
    let half = (3.0 * sigma * ct)
        .abs()
        .max((3.0 * sigma * st).abs())
        .max(1.0)
        .ceil();
    let (x0, y0) = (half, half);
    let scale = 1.0 / (2.0 * PI * sigma * sigma);
    let (rows, cols) = (2 * y0 as usize + 1, 2 * x0 as usize + 1);
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let y = r as f64 - y0;
        for c in 0..cols {
            let x = c as f64 - x0;
            let (rotx, roty) = (x * ct + y * st, -x * st + y * ct);
            let envelope =
                (-0.5 * (rotx * rotx / (sigma * sigma) + roty * roty / (sigma * sigma))).exp();
            data.push(envelope * scale * (2.0 * PI * frequency * rotx).cos());
        }
    }
    GaborKernel {
        frequency,
        theta,
        sigma,
        rows,
        cols,
        data,
    }
}

/// The Gabor bank of B.6: σ ∈ {1, 3} × f ∈ {0.05, 0.25, 0.5}, for θ = 0 only (official, the
/// early `return` bug: 6 kernels) or θ = t·π/4, t = 0..3 (corrected: 24 kernels).
pub fn gabor_bank(fidelity: Fidelity) -> Vec<GaborKernel> {
    let thetas = match fidelity {
        Fidelity::Official => 1,
        Fidelity::Corrected => 4,
    };
    let mut bank = Vec::new();
    for t in 0..thetas {
        for sigma in [1.0, 3.0] {
            for f in [0.05, 0.25, 0.5] {
                bank.push(gabor_kernel(f, t as f64 / 4.0 * PI, sigma));
            }
        }
    }
    bank
}

/// `scipy.ndimage.convolve(image, kernel, mode='wrap')` in f64: the kernel flipped and centred
/// at `(rows/2, cols/2)`, taps with `|w| ≤ f64::EPSILON` skipped, taps summed in C order.
pub(crate) fn convolve_wrap(
    image: &[f64],
    height: usize,
    width: usize,
    k: &GaborKernel,
) -> Vec<f64> {
    let (cy, cx) = ((k.rows / 2) as isize, (k.cols / 2) as isize);
    // Flipped weight (i, j) = k[rows−1−i, cols−1−j], read at input offset (i − cy, j − cx).
    let taps: Vec<(isize, isize, f64)> = (0..k.rows * k.cols)
        .map(|t| {
            let (i, j) = ((t / k.cols) as isize, (t % k.cols) as isize);
            (i - cy, j - cx, k.data[k.data.len() - 1 - t])
        })
        .filter(|&(_, _, w)| w.abs() > f64::EPSILON)
        .collect();
    let (h, w) = (height as isize, width as isize);
    let mut out = vec![0.0; height * width];
    for (p, o) in out.iter_mut().enumerate() {
        let (y, x) = ((p / width) as isize, (p % width) as isize);
        *o = taps.iter().fold(0.0, |acc, &(dy, dx, wt)| {
            let q = (y + dy).rem_euclid(h) * w + (x + dx).rem_euclid(w);
            acc + image[q as usize] * wt
        });
    }
    out
}

/// A double stored to uint8 as scipy.ndimage does on x86: truncation toward zero, then the low
/// byte (modulo 256). `−3.7 → 253`, `300.5 → 44`, NaN → 0.
pub(crate) fn c_uint8(v: f64) -> u8 {
    ((v.trunc() as i64).rem_euclid(256)) as u8
}

/// The `[H·W, kernels]` (row-major) Gabor features of a grey image: each kernel's wrapped
/// convolution, stored to uint8 ([`c_uint8`]) in the official mode and kept in f64 when
/// corrected.
pub fn gabor_features(
    gray: &[u8],
    height: usize,
    width: usize,
    bank: &[GaborKernel],
    fidelity: Fidelity,
) -> Vec<f64> {
    let image: Vec<f64> = gray.iter().map(|&v| f64::from(v)).collect();
    let mut features = vec![0.0; gray.len() * bank.len()];
    for (f, kernel) in bank.iter().enumerate() {
        for (p, v) in convolve_wrap(&image, height, width, kernel)
            .into_iter()
            .enumerate()
        {
            features[p * bank.len() + f] = match fidelity {
                Fidelity::Official => f64::from(c_uint8(v)),
                Fidelity::Corrected => v,
            };
        }
    }
    features
}

// ---------------------------------------------------------------------------------------------
// The four partitions of a frame.

/// One partition of the frame and the δ form it uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    pub kind: PartitionKind,
    pub regions: Regions,
    /// δ without `|·|` (the official grid cells).
    pub signed: bool,
}

/// The partitions of one frame, built for `(height, width)` maps.
#[derive(Clone, Debug, PartialEq)]
pub struct FramePartitions {
    pub frame: usize,
    pub fidelity: Fidelity,
    pub height: usize,
    pub width: usize,
    pub partitions: Vec<Partition>,
}

/// The four partitions of B.6 (instances, RGB, Gabor, grid, in that order) of a frame, from its
/// GT image and annotations, under `cfg`.
pub(crate) fn frame_partitions(
    gt: &ImageTensor,
    frame: &PanopticFrame,
    cfg: &PartitionConfig,
) -> Result<FramePartitions> {
    check_image(gt)?;
    let (h, w, f) = (gt.height, gt.width, cfg.fidelity);
    let some = |labels: Vec<usize>| labels.into_iter().map(Some).collect::<Vec<_>>();
    let (_, instances) = instance_regions(frame, other_region(f), h, w)?;
    let rgb = Regions::from_labels(&some(rgb_labels(gt, cfg.k, cfg.seed, f)?), "rgb");
    let gabor = Regions::from_labels(&some(gabor_labels(gt, cfg.k, cfg.seed, f)?), "gabor");
    let grid = Regions::from_labels(&grid_labels(h, w, cfg.cells, f)?, "cell");
    let part = |kind, regions| Partition {
        kind,
        regions,
        signed: kind == PartitionKind::Grid && f == Fidelity::Official,
    };
    Ok(FramePartitions {
        frame: frame.frame_index,
        fidelity: f,
        height: h,
        width: w,
        partitions: vec![
            part(PartitionKind::Instances, instances),
            part(PartitionKind::Rgb, rgb),
            part(PartitionKind::Gabor, gabor),
            part(PartitionKind::Grid, grid),
        ],
    })
}

// ---------------------------------------------------------------------------------------------
// Per-neuron variances.

/// var_n of δ per partition and neuron of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionVariances {
    pub layer: String,
    pub frame: usize,
    pub fidelity: Fidelity,
    pub kinds: Vec<PartitionKind>,
    /// Non-empty regions per partition.
    pub regions: Vec<usize>,
    /// `[partition][neuron]`, NaN for dead neurons.
    pub variance: Vec<Vec<f64>>,
}

/// The summary of one partition's variances over the live neurons.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionSummary {
    pub kind: PartitionKind,
    pub regions: usize,
    pub neurons: usize,
    pub median_log_std: f64,
    pub q1_log_std: f64,
    pub q3_log_std: f64,
    pub median_variance: f64,
    /// 1 = lowest median log std among the partitions.
    pub rank: usize,
}

/// The unbiased (ddof 1) variance; NaN for fewer than two values.
fn unbiased_variance(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    let m = super::mean(v);
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64
}

/// var_n of δ_n(R) over `part`'s regions for one neuron's map (`total` = Σ_p |map|, `pixels` = P).
fn delta_variance(part: &Partition, map: &[f32], total: f64, pixels: f64) -> f64 {
    if total == 0.0 {
        return f64::NAN;
    }
    let deltas: Vec<f64> = part
        .regions
        .abs_sums(map)
        .iter()
        .zip(part.regions.areas())
        .map(|(&actual, area)| {
            let expected = total * area as f64 / pixels;
            let d = (actual - expected) / expected;
            if part.signed {
                d
            } else {
                d.abs()
            }
        })
        .collect();
    unbiased_variance(&deltas)
}

/// var_n for every neuron of `src` and every partition of `parts`, in one pass over the maps.
pub(crate) fn neuron_variances(
    src: &dyn NeuronMaps,
    parts: &FramePartitions,
) -> Result<PartitionVariances> {
    if src.size() != (parts.height, parts.width) {
        return Err(XincError::InvalidArgument(format!(
            "layer {} has {:?} maps, the partitions were built for {}x{}",
            src.layer(),
            src.size(),
            parts.height,
            parts.width
        )));
    }
    let pixels = src.num_pixels() as f64;
    let rows = per_neuron(src, |_, map| {
        let total: f64 = map.iter().map(|v| f64::from(v.abs())).sum();
        parts
            .partitions
            .iter()
            .map(|part| delta_variance(part, map, total, pixels))
            .collect::<Vec<f64>>()
    });
    let variance = (0..parts.partitions.len())
        .map(|i| rows.iter().map(|r| r[i]).collect())
        .collect();
    Ok(PartitionVariances {
        layer: src.layer().to_string(),
        frame: parts.frame,
        fidelity: parts.fidelity,
        kinds: parts.partitions.iter().map(|p| p.kind).collect(),
        regions: parts.partitions.iter().map(|p| p.regions.len()).collect(),
        variance,
    })
}

fn log_std(variance: f64) -> f64 {
    0.5 * variance.ln()
}

impl PartitionVariances {
    /// Per-partition summaries over the live neurons, ranked by median log std.
    pub fn summary(&self) -> Vec<PartitionSummary> {
        let mut out: Vec<PartitionSummary> = self
            .kinds
            .iter()
            .zip(&self.variance)
            .zip(&self.regions)
            .map(|((&kind, var), &regions)| {
                let mut live: Vec<f64> = var.iter().copied().filter(|v| !v.is_nan()).collect();
                live.sort_by(f64::total_cmp);
                let logs: Vec<f64> = live.iter().map(|&v| log_std(v)).collect();
                PartitionSummary {
                    kind,
                    regions,
                    neurons: live.len(),
                    median_log_std: quantile(&logs, 0.5),
                    q1_log_std: quantile(&logs, 0.25),
                    q3_log_std: quantile(&logs, 0.75),
                    median_variance: quantile(&live, 0.5),
                    rank: 0,
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..out.len()).collect();
        // NaN medians (no live neuron) rank last.
        let key = |s: &PartitionSummary| {
            let m = s.median_log_std;
            if m.is_nan() {
                f64::INFINITY
            } else {
                m
            }
        };
        order.sort_by(|&a, &b| key(&out[a]).total_cmp(&key(&out[b])));
        for (r, &i) in order.iter().enumerate() {
            out[i].rank = r + 1;
        }
        out
    }

    /// The per-neuron table (schema in the module docs).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let n = self.variance.first().map_or(0, Vec::len);
        let rows = self.kinds.len() * n;
        let var: Vec<f64> = self.variance.iter().flatten().copied().collect();
        df!(
            "layer" => vec![self.layer.as_str(); rows],
            "frame" => vec![self.frame as u32; rows],
            "mode" => vec![self.fidelity.name(); rows],
            "partition" => self.kinds.iter().flat_map(|k| vec![k.name(); n]).collect::<Vec<_>>(),
            "neuron" => (0..rows).map(|i| (i % n.max(1)) as u32).collect::<Vec<_>>(),
            "log_std" => var.iter().map(|&v| log_std(v)).collect::<Vec<_>>(),
            "variance" => var,
        )
        .map_err(|e| table_error("partition variance", e))
    }
}

/// The summary table of several layers, frames and modes (schema in the module docs).
pub fn summary_frame(results: &[PartitionVariances]) -> Result<DataFrame> {
    let rows: Vec<(&PartitionVariances, PartitionSummary)> = results
        .iter()
        .flat_map(|r| r.summary().into_iter().map(move |s| (r, s)))
        .collect();
    let col = |f: fn(&PartitionSummary) -> f64| rows.iter().map(|(_, s)| f(s)).collect::<Vec<_>>();
    df!(
        "layer" => rows.iter().map(|(r, _)| r.layer.as_str()).collect::<Vec<_>>(),
        "frame" => rows.iter().map(|(r, _)| r.frame as u32).collect::<Vec<_>>(),
        "mode" => rows.iter().map(|(r, _)| r.fidelity.name()).collect::<Vec<_>>(),
        "partition" => rows.iter().map(|(_, s)| s.kind.name()).collect::<Vec<_>>(),
        "regions" => rows.iter().map(|(_, s)| s.regions as u32).collect::<Vec<_>>(),
        "neurons" => rows.iter().map(|(_, s)| s.neurons as u32).collect::<Vec<_>>(),
        "median_log_std" => col(|s| s.median_log_std),
        "q1_log_std" => col(|s| s.q1_log_std),
        "q3_log_std" => col(|s| s.q3_log_std),
        "median_variance" => col(|s| s.median_variance),
        "rank" => rows.iter().map(|(_, s)| s.rank as u32).collect::<Vec<_>>(),
        "lowest" => rows.iter().map(|(_, s)| s.rank == 1).collect::<Vec<_>>(),
    )
    .map_err(|e| table_error("partition summary", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::toy_maps as maps;
    use crate::canvas::maps::InMemoryMaps;
    use crate::data::panoptic::{Mask, Segment};

    fn segment(name: &str, height: usize, width: usize, on: &[usize]) -> Segment {
        let mask = Mask {
            height,
            width,
            data: (0..height * width).map(|p| on.contains(&p)).collect(),
        };
        Segment {
            segment_id: 1,
            category_id: 0,
            category: name.rsplit_once('_').unwrap().0.into(),
            isthing: false,
            iscrowd: false,
            instance: name.into(),
            area: mask.area(),
            bbox: mask.bbox().unwrap_or([0; 4]),
            mask,
        }
    }

    /// A `height`×`width` image of four colour quadrants (exact in f32 and in uint8).
    fn quadrants(height: usize, width: usize) -> ImageTensor {
        let colours = [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, 1.0, 1.0],
        ];
        let data = (0..height * width)
            .flat_map(|p| {
                let (y, x) = (p / width, p % width);
                colours[2 * (2 * y / height) + 2 * x / width]
            })
            .collect();
        ImageTensor {
            height,
            width,
            data,
        }
    }

    #[test]
    fn lattice_and_contiguous_grids_on_a_tiny_image() {
        // 4×6 pixels, (sh, sw) = (2, 4): the lattice keeps columns 0..4 (6 mod 4 = 2 dropped).
        let lattice = grid_labels(4, 6, (2, 4), Fidelity::Official).unwrap();
        #[rustfmt::skip]
        let want = [
            Some(0), Some(1), Some(2), Some(3), None, None,
            Some(4), Some(5), Some(6), Some(7), None, None,
            Some(0), Some(1), Some(2), Some(3), None, None,
            Some(4), Some(5), Some(6), Some(7), None, None,
        ];
        assert_eq!(lattice, want);
        // Contiguous 2×4 cells covering every pixel: columns split 0 | 1,2 | 3 | 4,5.
        let cells = grid_labels(4, 6, (2, 4), Fidelity::Corrected).unwrap();
        #[rustfmt::skip]
        let want = [
            0, 0, 1, 2, 2, 3,
            0, 0, 1, 2, 2, 3,
            4, 4, 5, 6, 6, 7,
            4, 4, 5, 6, 6, 7,
        ];
        assert_eq!(cells, want.map(Some));
        let regions = Regions::from_labels(&lattice, "cell");
        assert_eq!(regions.areas(), vec![2; 8]);
        assert_eq!(regions.pixels[5], vec![7, 19]);
        assert!(grid_labels(4, 6, (5, 1), Fidelity::Official).is_err());
        assert!(grid_labels(4, 6, (0, 1), Fidelity::Corrected).is_err());
    }

    #[test]
    fn gabor_kernels_match_the_skimage_formula() {
        // g(y, x) = exp(−(x² + y²)/(2σ²)) / (2πσ²) · cos(2πf·x) at θ = 0:
        // σ=1, f=0.25: g(0,0) = 1/(2π) = 0.15915494309189535,
        //              g(0,2) = e^−2/(2π)·cos(π) = −0.021539279301848634,
        //              g(1,0) = e^−0.5/(2π) = 0.09653235263005391;
        // σ=3, f=0.05: g(−2,3) = e^(−13/18)/(18π)·cos(0.3π) = 0.005048230561530358.
        let k = gabor_kernel(0.25, 0.0, 1.0);
        assert_eq!((k.rows, k.cols), (7, 7));
        let at = |k: &GaborKernel, y: isize, x: isize| {
            let (cy, cx) = ((k.rows / 2) as isize, (k.cols / 2) as isize);
            k.data[((y + cy) as usize) * k.cols + (x + cx) as usize]
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b.abs().max(1e-3);
        assert!(close(at(&k, 0, 0), 0.159_154_943_091_895_35));
        assert!(close(at(&k, 0, 2), -0.021_539_279_301_848_634));
        assert!(close(at(&k, 1, 0), 0.096_532_352_630_053_91));
        assert!(at(&k, 0, 1).abs() < 1e-16, "cos(π/2) rounds to ~6e-17");
        let k = gabor_kernel(0.05, 0.0, 3.0);
        assert_eq!((k.rows, k.cols), (19, 19));
        assert!(close(at(&k, -2, 3), 0.005_048_230_561_530_358));
        // θ = π/4, σ = 3: x0 = ⌈9·cos(π/4)⌉ = 7, so 15×15; rotx = (x + y)/√2, roty = (y − x)/√2:
        // g(−3, 4) = e^(−25/36)/(18π)·cos(0.5π·(1/√2)) = 0.0019578945869831083.
        let k = gabor_kernel(0.25, PI / 4.0, 3.0);
        assert_eq!((k.rows, k.cols), (15, 15));
        assert!(close(at(&k, -3, 4), 0.001_957_894_586_983_108_3));
        let official = gabor_bank(Fidelity::Official);
        assert_eq!(official.len(), 6);
        assert!(official.iter().all(|k| k.theta == 0.0));
        assert_eq!(gabor_bank(Fidelity::Corrected).len(), 24);
    }

    #[test]
    fn uint8_store_truncates_then_wraps() {
        assert_eq!(c_uint8(-3.7), 253);
        assert_eq!(c_uint8(-0.5), 0);
        assert_eq!(c_uint8(-1.0), 255);
        assert_eq!(c_uint8(255.9), 255);
        assert_eq!(c_uint8(256.0), 0);
        assert_eq!(c_uint8(300.5), 44);
        assert_eq!(c_uint8(-300.5), 212);
        assert_eq!(c_uint8(f64::NAN), 0);
    }

    #[test]
    fn convolution_flips_the_kernel_and_wraps() {
        // A 3×3 kernel with only its top-left tap: convolve gives out[y, x] = in[y+1, x+1].
        let mut data = vec![0.0; 9];
        data[0] = 1.0;
        let k = GaborKernel {
            frequency: 0.0,
            theta: 0.0,
            sigma: 1.0,
            rows: 3,
            cols: 3,
            data,
        };
        let image: Vec<f64> = (0..12).map(f64::from).collect(); // 3×4
        let out = convolve_wrap(&image, 3, 4, &k);
        assert_eq!(out, vec![5., 6., 7., 4., 9., 10., 11., 8., 1., 2., 3., 0.]);
    }

    #[test]
    fn gray_follows_pillow_fixed_point() {
        // (0,0,5): (5·7471 + 32768) >> 16 = 1, where (114·5)/1000 would give 0.
        let px = |rgb: [f32; 3]| ImageTensor {
            height: 1,
            width: 1,
            data: rgb.to_vec(),
        };
        assert_eq!(gray_l(&px([0.0, 0.0, 5.0 / 255.0])), vec![1]);
        assert_eq!(gray_l(&px([1.0, 0.0, 0.0])), vec![76]);
        assert_eq!(gray_l(&px([1.0, 1.0, 1.0])), vec![255]);
        // Truncation of the uint8 GT: 0.999 → 254.745 → 254, clamp above 1.
        assert_eq!(gray_l(&px([0.999, 0.999, 0.999])), vec![254]);
        assert_eq!(gray_l(&px([1.5, 1.5, 1.5])), vec![255]);
    }

    #[test]
    fn seeded_label_maps_are_reproducible_and_follow_colour() {
        let gt = quadrants(8, 16);
        for fidelity in [Fidelity::Official, Fidelity::Corrected] {
            let rgb = rgb_labels(&gt, 4, 3, fidelity).unwrap();
            assert_eq!(rgb, rgb_labels(&gt, 4, 3, fidelity).unwrap());
            // Each quadrant is one cluster, and the four differ.
            let corners = [rgb[0], rgb[15], rgb[8 * 16 - 16], rgb[8 * 16 - 1]];
            for (p, &l) in rgb.iter().enumerate() {
                let (y, x) = (p / 16, p % 16);
                assert_eq!(l, corners[2 * (y / 4) + x / 8]);
            }
            let mut distinct = corners.to_vec();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 4);
            let gabor = gabor_labels(&gt, 3, 5, fidelity).unwrap();
            assert_eq!(gabor.len(), 128);
            assert_eq!(gabor, gabor_labels(&gt, 3, 5, fidelity).unwrap());
            assert!(gabor.iter().all(|&l| l < 3));
        }
        assert!(rgb_labels(&gt, 200, 0, Fidelity::Official).is_err());
        let bad = ImageTensor {
            height: 2,
            width: 2,
            data: vec![0.0; 5],
        };
        assert!(gabor_labels(&bad, 2, 0, Fidelity::Official).is_err());
    }

    #[test]
    fn planar_frames_become_interleaved() {
        let planar = [1.0, 2.0, 10.0, 20.0, 100.0, 200.0]; // [3, 1, 2]
        let gt = gt_from_planar(&planar, 1, 2).unwrap();
        assert_eq!(gt.data, vec![1.0, 10.0, 100.0, 2.0, 20.0, 200.0]);
        assert!(gt_from_planar(&planar, 2, 2).is_err());
    }

    /// The partitions of a 4×8 quadrant image with two instances, by hand-made regions.
    fn toy_partitions(fidelity: Fidelity) -> FramePartitions {
        let frame = PanopticFrame {
            frame_index: 3,
            image_id: "x".into(),
            segments: vec![
                segment("road_0", 4, 8, &(16..32).collect::<Vec<_>>()),
                segment("car_0", 4, 8, &[0, 1, 8, 9]),
            ],
        };
        let cfg = PartitionConfig {
            k: 4,
            cells: (2, 4),
            seed: 1,
            fidelity,
        };
        frame_partitions(&quadrants(4, 8), &frame, &cfg).unwrap()
    }

    #[test]
    fn a_uniform_neuron_has_zero_variance_everywhere() {
        for fidelity in [Fidelity::Official, Fidelity::Corrected] {
            let parts = toy_partitions(fidelity);
            let kinds: Vec<_> = parts.partitions.iter().map(|p| p.kind.name()).collect();
            assert_eq!(kinds, ["instances", "rgb", "gabor", "grid"]);
            // Neuron 0 uniform (signed −2), neuron 1 dead.
            let mut data = vec![-2.0f32; 32];
            data.extend([0.0; 32]);
            let m = maps(4, 8, data);
            let res = neuron_variances(&InMemoryMaps::new(m.clone()), &parts).unwrap();
            assert_eq!(res.frame, 3);
            for var in &res.variance {
                assert_eq!(var[0], 0.0);
                assert!(var[1].is_nan());
            }
            let summary = res.summary();
            assert!(summary
                .iter()
                .all(|s| s.neurons == 1 && s.median_log_std == f64::NEG_INFINITY));
            let df = res.to_frame().unwrap();
            assert_eq!(df.height(), 8);
        }
        // The instance partition: road, car, other (union 20 px when official; the 12 px
        // complement when corrected).
        let inst = &toy_partitions(Fidelity::Official).partitions[0].regions;
        assert_eq!(inst.names, ["road_0", "car_0", "other_0"]);
        assert_eq!(inst.areas(), vec![16, 4, 20]);
        let inst = &toy_partitions(Fidelity::Corrected).partitions[0].regions;
        assert_eq!(inst.areas(), vec![16, 4, 12]);
        let m = maps(2, 2, vec![1.0; 4]);
        assert!(neuron_variances(
            &InMemoryMaps::new(m.clone()),
            &toy_partitions(Fidelity::Official)
        )
        .is_err());
    }

    #[test]
    fn grid_delta_is_signed_only_when_official() {
        // A 1×3 frame, three 1×1 cells, map (3, 0, 0): expected 1 per cell, δ = (2, −1, −1).
        // Signed: mean 0, var = (4 + 1 + 1)/2 = 3. Abs: (2, 1, 1), mean 4/3, var = 1/3.
        let m = maps(1, 3, vec![3.0, 0.0, 0.0]);
        for (fidelity, signed, want) in [
            (Fidelity::Official, true, 3.0),
            (Fidelity::Corrected, false, 1.0 / 3.0),
        ] {
            let grid = Regions::from_labels(&grid_labels(1, 3, (1, 3), fidelity).unwrap(), "cell");
            let parts = FramePartitions {
                frame: 0,
                fidelity,
                height: 1,
                width: 3,
                partitions: vec![Partition {
                    kind: PartitionKind::Grid,
                    regions: grid,
                    signed,
                }],
            };
            let res = neuron_variances(&InMemoryMaps::new(m.clone()), &parts).unwrap();
            assert!((res.variance[0][0] - want).abs() < 1e-12, "{fidelity:?}");
        }
    }

    #[test]
    fn summaries_rank_partitions_by_median_log_std() {
        let res = PartitionVariances {
            layer: "l".into(),
            frame: 0,
            fidelity: Fidelity::Corrected,
            kinds: vec![
                PartitionKind::Rgb,
                PartitionKind::Grid,
                PartitionKind::Gabor,
            ],
            regions: vec![4, 8, 4],
            variance: vec![
                vec![1.0, 4.0, f64::NAN, 9.0],
                vec![0.01, 0.04, f64::NAN, 0.09],
                vec![f64::NAN; 4],
            ],
        };
        let s = res.summary();
        assert_eq!(s.iter().map(|x| x.rank).collect::<Vec<_>>(), vec![2, 1, 3]);
        // log std of (1, 4, 9) = (0, ln 2, ln 3): median ln 2, q1 = ln 2 / 2.
        assert!((s[0].median_log_std - 2f64.ln()).abs() < 1e-12);
        assert!((s[0].q1_log_std - 2f64.ln() / 2.0).abs() < 1e-12);
        assert_eq!((s[0].neurons, s[0].median_variance), (3, 4.0));
        assert_eq!(s[2].neurons, 0);
        let df = summary_frame(&[res]).unwrap();
        assert_eq!(df.height(), 3);
        let lowest = df.column("lowest").unwrap().bool().unwrap().clone();
        let lowest: Vec<Option<bool>> = (0..3).map(|i| lowest.get(i)).collect();
        assert_eq!(lowest, vec![Some(false), Some(true), Some(false)]);
    }

    #[test]
    fn video_settings_follow_the_spec_table() {
        let c = PartitionConfig::for_video("26_cblDl5vCZnw", Fidelity::Corrected);
        assert_eq!(
            (c.k, c.cells, c.fidelity),
            (24, (4, 6), Fidelity::Corrected)
        );
        assert_eq!(
            PartitionConfig::for_video("0005", Fidelity::Official),
            PartitionConfig::default()
        );
        assert_eq!(
            PartitionConfig::for_video("1327_e96s6pJ5x3Y", Fidelity::Official).cells,
            (4, 4)
        );
    }
}
