//! "The representation is distributed" (spec B.2): how many pixels each neuron meaningfully
//! contributes to, and what fraction of a layer's neurons meaningfully contributes to each pixel.
//!
//! **Pixels per neuron** (B.2a). Neuron n counts pixel p when its share of the absolute
//! contribution exceeds 1/N: `|C_n(p)| / Σ_n' |C_n'(p)| > 1/N`. The counts are the `pixels` of
//! [`stats::neuron_rows`](super::stats::neuron_rows), sorted ascending (ties by neuron index) and
//! resampled to [`CURVE_POINTS`] points for the paper figure ([`resample_linear`]).
//!
//! **Neurons per pixel** (B.2b). τ(t) is `compute_contrib_thresh_using_auc`: sort all `|C|` of the
//! layer descending, cumulate, and take the value at the first index where the cumulative sum
//! reaches `(1 − t)·Σ|C|`. [`contribution_thresholds`] finds it without holding the layer's N·P
//! values (75 M for NeRV block 3, 600 M for block 1): see its documentation. Then
//! `frac(p) = #{n : |C_n(p)| > τ} / N`.
//!
//! **Official bug.** The released MLP notebook counts layer 3 with the *layer-2* contributions
//! (`layer_2_contrib_abs > layer_3_thresh`). [`distributed`] and [`neurons_per_pixel`] use each
//! layer's own contributions; [`neurons_per_pixel_of`] takes the counted maps and the thresholded
//! maps separately, so `neurons_per_pixel_of(layer2, layer3, …)` reproduces the official numbers.
//!
//! Tables of [`Distributed::to_frame`] ([`DistributedTables`]):
//!
//! `pixels_per_neuron`, one row per neuron in ascending order of its count:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `rank` | u32 | 0-based position in the ascending order |
//! | `neuron` | u32 | the flat neuron index |
//! | `pixels` | u32 | pixels where the neuron's share exceeds 1/N |
//!
//! `curve`, the sorted counts resampled to [`CURVE_POINTS`] points (the paper figure's x axis):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `point` | u32 | 0-based point index |
//! | `pixels` | f64 | the resampled count |
//!
//! `summary`, one row per layer:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `neurons` | u32 | N |
//! | `dead` | u32 | neurons whose map is zero everywhere |
//! | `zero_pixels` | u32 | neurons that count no pixel |
//! | `median_pixels` | f64 | median count (mean of the middle two for even N, as numpy) |
//! | `mean_pixels` | f64 | mean count |
//! | `max_pixels` | u32 | largest count |
//!
//! `neurons_per_pixel`, one row per target area t:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `t` | f64 | the target area (the mass left below τ) |
//! | `tau` | f64 | τ(t), an `|C|` value of the layer |
//! | `mean_fraction` | f64 | mean over pixels of frac(p) |
//! | `min_fraction` | f64 | smallest frac(p) |
//! | `max_fraction` | f64 | largest frac(p) |
//!
//! The frac maps themselves are [`NeuronsPerPixel::fraction`] (row-major `[H, W]`), for figures.

use std::sync::{Mutex, PoisonError};

use polars::prelude::*;

use super::source::{per_neuron, per_pixel_sum};
use super::stats::{neuron_rows, NeuronRow};
use super::{mean, table_error};
use crate::canvas::maps::NeuronMaps;
use crate::error::{Result, XincError};

/// Points of the resampled pixels-per-neuron curve in the paper figure.
pub const CURVE_POINTS: usize = 60;

/// The target areas t of the paper figure (10 % and 50 %).
pub const PAPER_TARGETS: [f64; 2] = [0.1, 0.5];

/// Pixels per neuron of one layer (spec B.2a).
#[derive(Clone, Debug, PartialEq)]
pub struct PixelsPerNeuron {
    /// Neuron indices in ascending order of their count, ties in neuron order.
    pub order: Vec<usize>,
    /// The counts in that order: `sorted[r]` is the count of neuron `order[r]`.
    pub sorted: Vec<u32>,
    /// Neurons whose map is zero everywhere.
    pub dead: usize,
    /// Neurons that count no pixel.
    pub zero_pixels: usize,
    /// Median count (mean of the two middle counts for an even N; NaN for no neuron).
    pub median: f64,
    /// Mean count (NaN for no neuron).
    pub mean: f64,
    /// Largest count (0 for no neuron).
    pub max: u32,
    /// The sorted counts resampled to [`CURVE_POINTS`] points ([`resample_linear`]).
    pub curve: Vec<f64>,
}

/// Neurons per pixel of one layer at one target area (spec B.2b).
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronsPerPixel {
    /// The target area t.
    pub t: f64,
    /// τ(t).
    pub tau: f64,
    /// frac(p) = #{n : |C_n(p)| > τ} / N, row-major `[H, W]`.
    pub fraction: Vec<f32>,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// Both halves of spec B.2 for one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Distributed {
    pub layer: String,
    pub num_neurons: usize,
    /// `(H, W)` of the maps.
    pub size: (usize, usize),
    pub pixels: PixelsPerNeuron,
    /// One entry per requested target area, in the order asked.
    pub per_pixel: Vec<NeuronsPerPixel>,
}

/// The tables of a [`Distributed`] (schemas in the module docs).
#[derive(Clone, Debug)]
pub struct DistributedTables {
    pub pixels_per_neuron: DataFrame,
    pub curve: DataFrame,
    pub summary: DataFrame,
    pub neurons_per_pixel: DataFrame,
}

/// Spec B.2 for the layer `src` at the target areas `targets` (each in [0, 1]); computes the
/// per-neuron statistics itself. Use [`distributed_from_rows`] when they are already at hand.
pub fn distributed(src: &dyn NeuronMaps, targets: &[f64]) -> Result<Distributed> {
    let (rows, _) = neuron_rows(src);
    distributed_from_rows(src, &rows, targets)
}

/// Spec B.2 for `src`, whose per-neuron statistics `rows` ([`neuron_rows`]) are already computed.
pub(crate) fn distributed_from_rows(
    src: &dyn NeuronMaps,
    rows: &[NeuronRow],
    targets: &[f64],
) -> Result<Distributed> {
    if rows.len() != src.num_neurons() {
        return Err(XincError::InvalidArgument(format!(
            "{}: {} per-neuron rows for {} neurons",
            src.layer(),
            rows.len(),
            src.num_neurons()
        )));
    }
    Ok(Distributed {
        layer: src.layer().to_string(),
        num_neurons: src.num_neurons(),
        size: src.size(),
        pixels: pixels_per_neuron(rows),
        per_pixel: neurons_per_pixel(src, targets)?,
    })
}

/// Sorts the `pixels` counts of `rows` and summarises them (spec B.2a).
pub(crate) fn pixels_per_neuron(rows: &[NeuronRow]) -> PixelsPerNeuron {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&n| rows[n].pixels); // stable: ties stay in neuron order
    let sorted: Vec<u32> = order.iter().map(|&n| rows[n].pixels).collect();
    let as_f64: Vec<f64> = sorted.iter().map(|&c| f64::from(c)).collect();
    PixelsPerNeuron {
        dead: rows.iter().filter(|r| r.abs_sum == 0.0).count(),
        zero_pixels: sorted.iter().take_while(|&&c| c == 0).count(),
        median: median_of_sorted(&as_f64),
        mean: mean(&as_f64),
        max: sorted.last().copied().unwrap_or(0),
        curve: resample_linear(&as_f64, CURVE_POINTS),
        order,
        sorted,
    }
}

/// numpy's median of ascending values: the middle one, or the mean of the middle two.
fn median_of_sorted(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `F.interpolate(x[None, None], size=len, mode='linear', align_corners=False)` of a 1-D signal.
///
/// PyTorch's rule: with `scale = in/len`, output i reads the source position
/// `s = max(scale·(i + 0.5) − 0.5, 0)`, interpolating between `x[⌊s⌋]` and `x[min(⌊s⌋ + 1, in − 1)]`
/// with weight `s − ⌊s⌋` on the latter. Upsampling repeats the end values over the first and last
/// half step; downsampling reads between neighbours, so its ends are not the first and last
/// values (208 → 60 points: ranks 1.23 … 205.77). Computed in f64 (torch: f32).
/// An empty input gives an empty output.
pub(crate) fn resample_linear(x: &[f64], len: usize) -> Vec<f64> {
    let Some(&last) = x.last() else {
        return Vec::new();
    };
    let scale = x.len() as f64 / len as f64;
    (0..len)
        .map(|i| {
            let s = (scale * (i as f64 + 0.5) - 0.5).max(0.0);
            let i0 = (s as usize).min(x.len() - 1);
            let x1 = x.get(i0 + 1).copied().unwrap_or(last);
            let w = s - i0 as f64;
            (1.0 - w) * x[i0] + w * x1
        })
        .collect()
}

/// τ(t) and frac(p) for every target area, both from `src` (spec B.2b).
pub fn neurons_per_pixel(src: &dyn NeuronMaps, targets: &[f64]) -> Result<Vec<NeuronsPerPixel>> {
    neurons_per_pixel_of(src, src, targets)
}

/// τ(t) from the maps of `thresholded`, frac(p) counted over the neurons of `counted`. With the
/// same layer for both it is [`neurons_per_pixel`]; `(layer2, layer3)` reproduces the official
/// MLP notebook's layer-3 numbers (bug B.2).
pub fn neurons_per_pixel_of(
    counted: &dyn NeuronMaps,
    thresholded: &dyn NeuronMaps,
    targets: &[f64],
) -> Result<Vec<NeuronsPerPixel>> {
    if counted.size() != thresholded.size() {
        return Err(XincError::InvalidArgument(format!(
            "neurons per pixel: {} maps are {:?}, {} maps {:?}",
            counted.layer(),
            counted.size(),
            thresholded.layer(),
            thresholded.size()
        )));
    }
    let taus = contribution_thresholds(thresholded, targets)?;
    let fractions = fractions_above(counted, &taus)?;
    Ok(targets
        .iter()
        .zip(taus)
        .zip(fractions)
        .map(|((&t, tau), fraction)| {
            let v: Vec<f64> = fraction.iter().map(|&f| f64::from(f)).collect();
            NeuronsPerPixel {
                t,
                tau,
                mean: mean(&v),
                min: v.iter().copied().fold(f64::INFINITY, f64::min),
                max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                fraction,
            }
        })
        .collect())
}

/// `frac_j(p) = #{n : |C_n(p)| > taus[j]} / N` for every threshold, row-major `[H, W]` each.
///
/// Several thresholds share a pass over the maps: a neuron writes `Σ_j [|C_n(p)| > τ_j]·B^j` with
/// `B = N + 1`, so the per-pixel sum holds every count as a base-B digit. A group of g thresholds
/// needs `B^g ≤ 2^24`, where f32 (and the driver's f64 sum) still holds integers exactly; more
/// thresholds than that take further passes.
pub(crate) fn fractions_above(src: &dyn NeuronMaps, taus: &[f64]) -> Result<Vec<Vec<f32>>> {
    let n = src.num_neurons();
    if n == 0 {
        return Err(XincError::InvalidArgument(format!(
            "{}: neurons per pixel of a layer without neurons",
            src.layer()
        )));
    }
    let base = n as u64 + 1;
    let mut out = Vec::with_capacity(taus.len());
    for group in taus.chunks(digits_per_pass(base)) {
        let sums = per_pixel_sum(src, |_, map, val| {
            for (o, &v) in val.iter_mut().zip(map) {
                let a = f64::from(v.abs());
                let mut digit = 1.0f32;
                *o = 0.0;
                for &tau in group {
                    *o += if a > tau { digit } else { 0.0 };
                    digit *= base as f32;
                }
            }
        });
        for j in 0..group.len() {
            let place = base.pow(j as u32);
            out.push(
                sums.iter()
                    .map(|&s| ((s as u64 / place) % base) as f32 / n as f32)
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// How many base-`base` digits fit in an exactly represented f32 integer (at least one).
fn digits_per_pass(base: u64) -> usize {
    let mut g = 1u32;
    while base.checked_pow(g + 1).is_some_and(|v| v <= 1 << 24) {
        g += 1;
    }
    g as usize
}

/// τ(t) of `compute_contrib_thresh_using_auc` for each target area t of `targets`, streamed.
///
/// Exact method in two passes over the maps, holding neither the N·P values nor a sort of them:
/// 1. A histogram of all `|C|` binned by the high bits of their f32 bit pattern (monotone in the
///    value for non-negative floats; each bin spans one exponent and 2^-9 of its range), with each
///    bin's count and its exact sum (the integer sum of the significands, the exponent being
///    common to the bin). From the bins, in descending order and in f64, the bin where the
///    cumulative sum crosses `(1 − t)·total` (total = the sum of all bins).
/// 2. The values of the crossing bins only; each bin's values sorted descending and cumulated in
///    f64 from the sum of all higher bins, giving the first value whose cumulative sum reaches the
///    target. Should rounding leave the in-bin sum short of the target (the bin sum being exact),
///    the bin's smallest value is taken; when no bin reaches it (t = 0), the layer's smallest value.
///
/// The result equals a full descending sort with an f64 cumsum ([`threshold_by_sorting`]) unless
/// the target falls within f64 rounding of a partial sum. The bin sums are exact integers, so the
/// result does not depend on the thread count. Errors on a target outside [0, 1], an empty layer,
/// or a non-finite contribution.
pub fn contribution_thresholds(src: &dyn NeuronMaps, targets: &[f64]) -> Result<Vec<f64>> {
    if let Some(t) = targets.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        return Err(XincError::InvalidArgument(format!(
            "target area {t} outside [0, 1]"
        )));
    }
    if src.num_neurons() == 0 || src.num_pixels() == 0 {
        return Err(XincError::InvalidArgument(format!(
            "{}: thresholds of an empty layer",
            src.layer()
        )));
    }
    let hist = histogram(src);
    if hist.non_finite > 0 {
        return Err(XincError::NonFinite {
            origin: src.layer().to_string(),
            name: "contribution maps".into(),
            count: hist.non_finite as usize,
        });
    }
    let crossings: Vec<Crossing> = targets.iter().map(|&t| hist.crossing(t)).collect();
    let bins: Vec<usize> = crossings.iter().map(|c| c.bin).collect();
    let values = values_in_bins(src, &bins);
    Ok(crossings.iter().map(|c| c.resolve(&values)).collect())
}

/// τ(t) by a full sort (the reference for [`contribution_thresholds`]): `|values|` sorted
/// descending, cumulated in f64, the first value whose cumulative sum reaches `(1 − t)·total`,
/// where total is the final cumulative sum; the smallest value when none does. NaN if empty.
pub fn threshold_by_sorting(values: &[f32], t: f64) -> f64 {
    let mut v: Vec<f32> = values.iter().map(|x| x.abs()).collect();
    v.sort_unstable_by(|a, b| b.total_cmp(a));
    let target = (1.0 - t) * v.iter().map(|&x| f64::from(x)).sum::<f64>();
    let mut cum = 0.0;
    for &x in &v {
        cum += f64::from(x);
        if cum >= target {
            return f64::from(x);
        }
    }
    v.last().map_or(f64::NAN, |&x| f64::from(x))
}

/// Low bits of the f32 pattern dropped to form a bin: bins of 2^(23 − 14) = 512 steps per exponent.
const SHIFT: u32 = 14;
/// Bins of the finite non-negative f32 values (`+inf` is the first pattern past them).
const BINS: usize = (0x7F80_0000u32 >> SHIFT) as usize;

/// Counts and exact significand sums of `|C|` per bin of the f32 bit pattern.
struct Histogram {
    count: Vec<u64>,
    significands: Vec<u64>,
    non_finite: u64,
}

/// Where a target's cumulative sum crosses: in `bin`, after `before` (the sum of higher bins).
struct Crossing {
    bin: usize,
    before: f64,
    target: f64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            count: vec![0; BINS],
            significands: vec![0; BINS],
            non_finite: 0,
        }
    }

    fn add(&mut self, map: &[f32]) {
        for &v in map {
            let bits = v.abs().to_bits();
            let bin = (bits >> SHIFT) as usize;
            if bin >= BINS {
                self.non_finite += 1;
                continue;
            }
            self.count[bin] += 1;
            self.significands[bin] += significand(bits);
        }
    }

    fn merge(mut self, other: Histogram) -> Self {
        let add = |a: &mut Vec<u64>, b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.count, &other.count);
        add(&mut self.significands, &other.significands);
        self.non_finite += other.non_finite;
        self
    }

    /// The bin's sum, exact up to the final rounding to f64.
    fn sum(&self, bin: usize) -> f64 {
        self.significands[bin] as f64 * unit(bin)
    }

    /// The non-empty bin where the descending cumulative sum first reaches `(1 − t)·total`, or
    /// the lowest non-empty bin when rounding keeps it short.
    fn crossing(&self, t: f64) -> Crossing {
        let total: f64 = (0..BINS).rev().map(|b| self.sum(b)).sum();
        let target = (1.0 - t) * total;
        let mut before = 0.0;
        let mut last = Crossing {
            bin: 0,
            before: 0.0,
            target,
        };
        for bin in (0..BINS).rev().filter(|&b| self.count[b] > 0) {
            last = Crossing {
                bin,
                before,
                target,
            };
            before += self.sum(bin);
            if before >= target {
                break;
            }
        }
        last
    }
}

impl Crossing {
    /// τ from the values of this crossing's bin (`values` holds those of every crossing bin).
    fn resolve(&self, values: &[f32]) -> f64 {
        let mut v: Vec<f32> = values
            .iter()
            .copied()
            .filter(|x| bin_of(*x) == self.bin)
            .collect();
        v.sort_unstable_by(|a, b| b.total_cmp(a));
        let mut cum = self.before;
        for &x in &v {
            cum += f64::from(x);
            if cum >= self.target {
                return f64::from(x);
            }
        }
        v.last().map_or(0.0, |&x| f64::from(x))
    }
}

fn bin_of(abs: f32) -> usize {
    (abs.to_bits() >> SHIFT) as usize
}

/// The integer significand of a non-negative finite f32 pattern (implicit bit included).
fn significand(bits: u32) -> u64 {
    let m = bits & 0x7F_FFFF;
    u64::from(if bits >> 23 == 0 { m } else { m | 0x80_0000 })
}

/// The value of one significand unit in `bin`: 2^(e − 150) for biased exponent e (1 for subnormals).
fn unit(bin: usize) -> f64 {
    let e = ((bin as u32) << SHIFT >> 23).max(1) as i64 - 150;
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// The histogram of every `|C|` of `src`: one histogram per concurrently running task, reused
/// across neurons through a pool, merged at the end (integer sums, so in any order).
fn histogram(src: &dyn NeuronMaps) -> Histogram {
    let pool: Mutex<Vec<Histogram>> = Mutex::new(Vec::new());
    let take = || pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
    per_neuron(src, |_, map| {
        let mut h = take().unwrap_or_else(Histogram::new);
        h.add(map);
        pool.lock().unwrap_or_else(PoisonError::into_inner).push(h);
    });
    let parts = pool.into_inner().unwrap_or_else(PoisonError::into_inner);
    parts
        .into_iter()
        .reduce(Histogram::merge)
        .unwrap_or_else(Histogram::new)
}

/// Every `|C|` of `src` that falls in one of `bins`.
fn values_in_bins(src: &dyn NeuronMaps, bins: &[usize]) -> Vec<f32> {
    per_neuron(src, |_, map| {
        map.iter()
            .map(|v| v.abs())
            .filter(|&a| bins.contains(&bin_of(a)))
            .collect::<Vec<f32>>()
    })
    .concat()
}

impl Distributed {
    /// The four tables of this layer (schemas in the module docs).
    pub fn to_frame(&self) -> Result<DistributedTables> {
        let p = &self.pixels;
        let n = p.sorted.len();
        let layer = self.layer.as_str();
        let index = |len: usize| (0..len as u32).collect::<Vec<u32>>();
        let pixels_per_neuron = df!(
            "layer" => vec![layer; n],
            "rank" => index(n),
            "neuron" => p.order.iter().map(|&x| x as u32).collect::<Vec<u32>>(),
            "pixels" => p.sorted.clone(),
        )
        .map_err(|e| table_error("pixels-per-neuron", e))?;
        let curve = df!(
            "layer" => vec![layer; p.curve.len()],
            "point" => index(p.curve.len()),
            "pixels" => p.curve.clone(),
        )
        .map_err(|e| table_error("pixels-per-neuron curve", e))?;
        let summary = df!(
            "layer" => [layer],
            "neurons" => [self.num_neurons as u32],
            "dead" => [p.dead as u32],
            "zero_pixels" => [p.zero_pixels as u32],
            "median_pixels" => [p.median],
            "mean_pixels" => [p.mean],
            "max_pixels" => [p.max],
        )
        .map_err(|e| table_error("pixels-per-neuron summary", e))?;
        let rows = &self.per_pixel;
        let col = |f: fn(&NeuronsPerPixel) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
        let neurons_per_pixel = df!(
            "layer" => vec![layer; rows.len()],
            "t" => col(|r| r.t),
            "tau" => col(|r| r.tau),
            "mean_fraction" => col(|r| r.mean),
            "min_fraction" => col(|r| r.min),
            "max_fraction" => col(|r| r.max),
        )
        .map_err(|e| table_error("neurons-per-pixel", e))?;
        Ok(DistributedTables {
            pixels_per_neuron,
            curve,
            summary,
            neurons_per_pixel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::maps::InMemoryMaps;
    use crate::canvas::ContributionMap;

    fn canvas(n: usize, h: usize, w: usize, data: Vec<f32>) -> ContributionMap {
        ContributionMap {
            layer: "toy".into(),
            neuron_shape: vec![n],
            height: h,
            width: w,
            data,
        }
    }

    /// Pseudo-random signed values spanning several binades, with exact ties and zeros.
    fn noisy(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = ((i as f32 * 12.9898).sin() * 43_758.547).fract();
                match i % 11 {
                    0 => 0.0,
                    1 => 0.25,
                    _ => x * x * x * 3.0,
                }
            })
            .collect()
    }

    #[test]
    fn resample_follows_torch_linear_align_corners_false() {
        // torch: interpolate([0,1,2,3], size=8, mode='linear') = [0,.25,.75,1.25,1.75,2.25,2.75,3]
        let up = resample_linear(&[0.0, 1.0, 2.0, 3.0], 8);
        assert_eq!(up, vec![0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]);
        // Downsampling [0..8) to 4 averages neighbours: source positions 0.5, 2.5, 4.5, 6.5.
        let down = resample_linear(&(0..8).map(f64::from).collect::<Vec<_>>(), 4);
        assert_eq!(down, vec![0.5, 2.5, 4.5, 6.5]);
        assert_eq!(resample_linear(&[7.0], 3), vec![7.0; 3]);
        assert!(resample_linear(&[], 60).is_empty());
    }

    #[test]
    fn pixels_per_neuron_sorts_and_summarises() {
        let row = |pixels, abs_sum| NeuronRow {
            sum: 0.0,
            abs_sum,
            max: 0.0,
            max_abs: 0.0,
            pixels,
        };
        let rows = [row(5, 1.0), row(0, 0.0), row(9, 2.0), row(0, 1.0)];
        let p = pixels_per_neuron(&rows);
        assert_eq!(p.sorted, vec![0, 0, 5, 9]);
        assert_eq!(p.order, vec![1, 3, 0, 2]);
        assert_eq!((p.dead, p.zero_pixels, p.max), (1, 2, 9));
        assert_eq!((p.median, p.mean), (2.5, 3.5));
        assert_eq!(p.curve.len(), CURVE_POINTS);
        assert_eq!((p.curve[0], p.curve[59]), (0.0, 9.0));
        assert_eq!(median_of_sorted(&[1.0, 4.0, 8.0]), 4.0);
    }

    #[test]
    fn thresholds_follow_the_official_definition_on_a_hand_example() {
        // |C| = 4, 3, 2, 1 (total 10). t = 0.5: target 5, cumsum 4, 7 → τ = 3.
        // t = 0.1: target 9, cumsum 4, 7, 9 → τ = 2. t = 1: τ = max. t = 0: τ = min.
        let maps = canvas(2, 1, 2, vec![-4.0, 1.0, 2.0, -3.0]);
        let src = InMemoryMaps::new(maps.clone());
        let taus = contribution_thresholds(&src, &[0.5, 0.1, 1.0, 0.0]).unwrap();
        assert_eq!(taus, vec![3.0, 2.0, 4.0, 1.0]);
        for (t, tau) in [(0.5, 3.0), (0.1, 2.0), (1.0, 4.0), (0.0, 1.0)] {
            assert_eq!(threshold_by_sorting(&maps.data, t), tau);
        }
        assert!(contribution_thresholds(&src, &[1.5]).is_err());
        let bad = canvas(1, 1, 2, vec![1.0, f32::NAN]);
        assert!(contribution_thresholds(&InMemoryMaps::new(bad.clone()), &[0.1]).is_err());
    }

    #[test]
    fn streamed_thresholds_equal_a_full_sort() {
        let maps = canvas(37, 16, 24, noisy(37 * 16 * 24));
        let src = InMemoryMaps::new(maps.clone());
        let targets = [0.0, 0.01, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0];
        let taus = contribution_thresholds(&src, &targets).unwrap();
        for (&t, &tau) in targets.iter().zip(&taus) {
            assert_eq!(tau, threshold_by_sorting(&maps.data, t), "t = {t}");
        }
        // All zeros: every τ is 0.
        let zeros = canvas(2, 2, 2, vec![0.0; 8]);
        let taus = contribution_thresholds(&InMemoryMaps::new(zeros.clone()), &[0.1, 0.5]).unwrap();
        assert_eq!(taus, vec![0.0, 0.0]);
    }

    #[test]
    fn histogram_bins_sum_exactly() {
        let values = [1.0f32, 1.5, 3.0, 1e-40, 0.0, 7.25];
        let mut h = Histogram::new();
        h.add(&values);
        for v in values {
            let b = bin_of(v);
            assert_eq!(
                h.sum(b),
                values
                    .iter()
                    .filter(|x| bin_of(**x) == b)
                    .map(|&x| f64::from(x))
                    .sum::<f64>()
            );
        }
        assert!(bin_of(1.0) < bin_of(1.5) && bin_of(1.5) < bin_of(3.0));
        assert_eq!(h.count.iter().sum::<u64>(), 6);
    }

    #[test]
    fn neurons_per_pixel_counts_strictly_above_tau() {
        // Three neurons on two pixels; |C| = pixel 0: 4, 1, 3; pixel 1: 2, 0, 2 (total 12).
        // t = 0.5: target 6, sorted 4, 3, 2, 2, … → cumsum 4, 7 → τ = 3; above 3: pixel 0 only n0.
        // t = 0.1: target 10.8, cumsum 4, 7, 9, 11 → τ = 2; above 2: pixel 0 n0, n2; pixel 1 none.
        let maps = canvas(3, 1, 2, vec![4.0, -2.0, 1.0, 0.0, -3.0, 2.0]);
        let src = InMemoryMaps::new(maps.clone());
        let r = neurons_per_pixel(&src, &[0.5, 0.1]).unwrap();
        assert_eq!((r[0].tau, r[1].tau), (3.0, 2.0));
        assert_eq!(r[0].fraction, vec![1.0 / 3.0, 0.0]);
        assert_eq!(r[1].fraction, vec![2.0 / 3.0, 0.0]);
        assert_eq!((r[1].min, r[1].max), (0.0, f64::from(2.0f32 / 3.0)));
        assert!((r[1].mean - 1.0 / 3.0).abs() < 1e-7);
        // The official bug: count another layer's maps against this layer's τ.
        let other = canvas(3, 1, 2, vec![5.0, 5.0, 5.0, 5.0, 0.0, 0.0]);
        let bug = neurons_per_pixel_of(&InMemoryMaps::new(other.clone()), &src, &[0.5]).unwrap();
        assert_eq!(bug[0].tau, 3.0);
        assert_eq!(bug[0].fraction, vec![2.0 / 3.0, 2.0 / 3.0]);
        let small = canvas(1, 1, 1, vec![1.0]);
        assert!(neurons_per_pixel_of(&InMemoryMaps::new(small.clone()), &src, &[0.5]).is_err());
    }

    #[test]
    fn many_thresholds_split_into_exact_passes() {
        assert_eq!(digits_per_pass(105), 3); // 105^3 ≈ 1.16e6 ≤ 2^24 < 105^4
        assert_eq!(digits_per_pass(2289), 2);
        assert_eq!(digits_per_pass(18_353), 1);
        let maps = canvas(300, 4, 5, noisy(300 * 20));
        let src = InMemoryMaps::new(maps.clone());
        let taus = [0.0, 0.1, 0.3, 0.5, 1.0, 2.0];
        let fractions = fractions_above(&src, &taus).unwrap();
        for (tau, frac) in taus.iter().zip(&fractions) {
            for (p, &f) in frac.iter().enumerate() {
                let count = (0..300)
                    .filter(|&n| f64::from(maps.map(n)[p].abs()) > *tau)
                    .count();
                assert_eq!(f, count as f32 / 300.0, "τ = {tau}, pixel {p}");
            }
        }
    }

    #[test]
    fn tables_follow_the_schemas() {
        let maps = canvas(3, 1, 2, vec![4.0, -2.0, 1.0, 0.0, -3.0, 2.0]);
        let src = InMemoryMaps::new(maps.clone());
        let d = distributed(&src, &PAPER_TARGETS).unwrap();
        let tables = d.to_frame().unwrap();
        assert_eq!(tables.pixels_per_neuron.shape(), (3, 4));
        assert_eq!(tables.curve.shape(), (CURVE_POINTS, 3));
        assert_eq!(tables.summary.shape(), (1, 7));
        assert_eq!(tables.neurons_per_pixel.shape(), (2, 6));
        let taus: Vec<f64> = tables
            .neurons_per_pixel
            .column("tau")
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(taus, vec![2.0, 3.0]);
        // Shares: pixel 0 = 4/8, 1/8, 3/8 (> 1/3: n0, n2); pixel 1 = 2/4, 0, 2/4 (n0, n2).
        let pixels: Vec<u32> = tables
            .pixels_per_neuron
            .column("pixels")
            .unwrap()
            .u32()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(pixels, vec![0, 2, 2]);
        assert!(distributed_from_rows(&src, &[], &[0.1]).is_err());
    }
}
