//! Contribution vs intensity (spec B.1): does a layer's absolute contribution per pixel follow the
//! frame's intensity, and where does it deviate (the paper: along edges)?
//!
//! For one layer and its ground-truth frame (planar `[3, H, W]` f32 in [0, 1]):
//! - heat(p) = Σ_n |C_n(p)| ([`abs_heat`]);
//! - intensity I(p) = Σ_c GTn_c(p), GTn = (GT − min GT)/(max GT − min GT) over the whole frame;
//! - h̃ and Ĩ: heat and intensity min-max normalised to [0, 1]; diff = h̃ − Ĩ ∈ [−1, 1] (positive:
//!   more contribution than intensity);
//! - edges: the Sobel magnitude of the frame's grey level ([`edge_map`]: skimage `rgb2gray`, then
//!   `scipy.ndimage.sobel` along both axes, mode `reflect`).
//!
//! The paper only draws these maps. The numbers are the spec's suggestion: Pearson's and
//! Spearman's correlation of h̃ with Ĩ, and Spearman's correlation of |diff| with the edge
//! magnitude (positive when the deviations sit on edges). A constant map makes them NaN.
//!
//! Schema of [`Intensity::to_frame`] (one row per layer):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `pearson_intensity` | f64 | Pearson(h̃, Ĩ) |
//! | `spearman_intensity` | f64 | Spearman(h̃, Ĩ) |
//! | `spearman_absdiff_edges` | f64 | Spearman(\|h̃ − Ĩ\|, Sobel magnitude) |
//! | `heat_min` | f64 | min_p heat(p) (before normalisation) |
//! | `heat_max` | f64 | max_p heat(p) |
//!
//! The maps are fields of [`Intensity`] (row-major `[H, W]` f32), for figures.

use polars::prelude::*;

use super::source::abs_heat;
use super::{min_max, pearson, spearman, table_error};
use crate::canvas::maps::NeuronMaps;
use crate::error::{Result, XincError};

/// skimage `rgb2gray` weights of R, G and B.
pub const GRAY_WEIGHTS: [f64; 3] = [0.2125, 0.7154, 0.0721];

/// Spec B.1 for one layer: the maps and the numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Intensity {
    pub layer: String,
    /// `(H, W)` of every map.
    pub size: (usize, usize),
    /// heat(p) = Σ_n |C_n(p)|.
    pub heat: Vec<f32>,
    /// h̃: heat min-max normalised.
    pub heat_norm: Vec<f32>,
    /// Ĩ: intensity min-max normalised.
    pub intensity_norm: Vec<f32>,
    /// h̃ − Ĩ.
    pub diff: Vec<f32>,
    /// Sobel magnitude of the grey frame.
    pub edges: Vec<f32>,
    pub pearson_intensity: f64,
    pub spearman_intensity: f64,
    pub spearman_absdiff_edges: f64,
    pub heat_min: f64,
    pub heat_max: f64,
}

impl Intensity {
    /// The four maps that show B.1 side by side, titled: Ĩ, the Sobel edges min-max normalised
    /// (so that the three unsigned maps share [0, 1]), h̃ and the signed h̃ − Ĩ.
    pub fn panels(&self) -> [(&'static str, Vec<f32>); 4] {
        let edges = min_max(
            &self
                .edges
                .iter()
                .map(|&v| f64::from(v))
                .collect::<Vec<f64>>(),
        );
        [
            ("intensity", self.intensity_norm.clone()),
            ("Sobel edges", to_f32(&edges)),
            ("heat Σ|C_n|", self.heat_norm.clone()),
            ("heat − intensity", self.diff.clone()),
        ]
    }
}

/// Spec B.1 for the layer `src` and its frame `gt` (planar `[3, H, W]`, the maps' size).
pub fn intensity(src: &dyn NeuronMaps, gt: &[f32]) -> Result<Intensity> {
    check_frame(gt, src.size())?;
    intensity_from_heat(src.layer(), &abs_heat(src), src.size(), gt)
}

/// Spec B.1 from an already computed heat (e.g. the second result of
/// [`neuron_rows`](super::stats::neuron_rows)), `[H, W]` with `size = (H, W)`.
pub(crate) fn intensity_from_heat(
    layer: &str,
    heat: &[f64],
    size: (usize, usize),
    gt: &[f32],
) -> Result<Intensity> {
    check_frame(gt, size)?;
    if heat.len() != size.0 * size.1 {
        return Err(XincError::InvalidArgument(format!(
            "{layer}: heat of {} pixels for {}×{} maps",
            heat.len(),
            size.0,
            size.1
        )));
    }
    let heat_norm = min_max(heat);
    let intensity_norm = min_max(&frame_intensity(gt, size)?);
    let diff: Vec<f64> = heat_norm
        .iter()
        .zip(&intensity_norm)
        .map(|(h, i)| h - i)
        .collect();
    let abs_diff: Vec<f64> = diff.iter().map(|d| d.abs()).collect();
    let edges = edge_map(gt, size)?;
    Ok(Intensity {
        layer: layer.to_string(),
        size,
        pearson_intensity: pearson(&heat_norm, &intensity_norm),
        spearman_intensity: spearman(&heat_norm, &intensity_norm),
        spearman_absdiff_edges: spearman(&abs_diff, &edges),
        heat_min: heat.iter().copied().fold(f64::INFINITY, f64::min),
        heat_max: heat.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        heat: to_f32(heat),
        heat_norm: to_f32(&heat_norm),
        intensity_norm: to_f32(&intensity_norm),
        diff: to_f32(&diff),
        edges: to_f32(&edges),
    })
}

/// I(p) = Σ_c GTn_c(p), GTn the frame min-max normalised over all of `[3, H, W]`.
pub(crate) fn frame_intensity(gt: &[f32], size: (usize, usize)) -> Result<Vec<f64>> {
    check_frame(gt, size)?;
    let p = size.0 * size.1;
    let gtn = min_max(&gt.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>());
    Ok((0..p)
        .map(|i| gtn[i] + gtn[p + i] + gtn[2 * p + i])
        .collect())
}

/// The frame's grey level as skimage `rgb2gray` (0.2125 R + 0.7154 G + 0.0721 B, no rescaling).
pub fn rgb_to_gray(gt: &[f32], size: (usize, usize)) -> Result<Vec<f64>> {
    check_frame(gt, size)?;
    let p = size.0 * size.1;
    Ok((0..p)
        .map(|i| {
            (0..3)
                .map(|c| GRAY_WEIGHTS[c] * f64::from(gt[c * p + i]))
                .sum()
        })
        .collect())
}

/// The edge map of spec B.1: `√(S₀² + S₁²)` of the grey frame, S_a = [`sobel`] along axis a.
pub fn edge_map(gt: &[f32], size: (usize, usize)) -> Result<Vec<f64>> {
    let gray = rgb_to_gray(gt, size)?;
    let (s0, s1) = (sobel(&gray, size, 0)?, sobel(&gray, size, 1)?);
    Ok(s0.iter().zip(&s1).map(|(a, b)| a.hypot(*b)).collect())
}

/// `scipy.ndimage.sobel(img, axis, mode='reflect')` of a row-major `[H, W]` image (axis 0: rows,
/// 1: columns): the correlation with `[−1, 0, 1]` along `axis` (`x[i+1] − x[i−1]`, unnormalised)
/// and with `[1, 2, 1]` along the other axis. scipy's `reflect` repeats the edge sample
/// (`d c b a | a b c d | d c b a`), so a ramp's derivative halves on its first and last line.
pub fn sobel(img: &[f64], size: (usize, usize), axis: usize) -> Result<Vec<f64>> {
    let (h, w) = size;
    if img.len() != h * w || axis > 1 {
        return Err(XincError::InvalidArgument(format!(
            "Sobel along axis {axis} of {} values as {h}×{w}",
            img.len()
        )));
    }
    let at =
        |r: usize, dr: isize, c: usize, dc: isize| img[reflect(r, dr, h) * w + reflect(c, dc, w)];
    const SMOOTH: [(isize, f64); 3] = [(-1, 1.0), (0, 2.0), (1, 1.0)];
    Ok((0..h * w)
        .map(|i| {
            let (r, c) = (i / w, i % w);
            SMOOTH
                .iter()
                .map(|&(o, s)| match axis {
                    0 => s * (at(r, 1, c, o) - at(r, -1, c, o)),
                    _ => s * (at(r, o, c, 1) - at(r, o, c, -1)),
                })
                .sum()
        })
        .collect())
}

/// The index `i + d` (|d| ≤ 1) of an axis of length `n`, reflected at the ends as scipy's
/// `reflect` (−1 → 0, n → n − 1).
fn reflect(i: usize, d: isize, n: usize) -> usize {
    match i.checked_add_signed(d) {
        None => 0,
        Some(j) if j >= n => n - 1,
        Some(j) => j,
    }
}

fn check_frame(gt: &[f32], (h, w): (usize, usize)) -> Result<()> {
    if gt.len() != 3 * h * w {
        return Err(XincError::InvalidArgument(format!(
            "ground-truth frame of {} values, expected [3, {h}, {w}] = {}",
            gt.len(),
            3 * h * w
        )));
    }
    if let Some(v) = gt.iter().find(|v| !v.is_finite()) {
        return Err(XincError::InvalidArgument(format!(
            "ground-truth frame holds a non-finite value ({v})"
        )));
    }
    Ok(())
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

impl Intensity {
    /// The one-row table of this layer (schema in the module docs).
    pub fn to_frame(&self) -> Result<DataFrame> {
        df!(
            "layer" => [self.layer.as_str()],
            "pearson_intensity" => [self.pearson_intensity],
            "spearman_intensity" => [self.spearman_intensity],
            "spearman_absdiff_edges" => [self.spearman_absdiff_edges],
            "heat_min" => [self.heat_min],
            "heat_max" => [self.heat_max],
        )
        .map_err(|e| table_error("contribution-vs-intensity", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::maps::InMemoryMaps;
    use crate::canvas::ContributionMap;

    #[test]
    fn sobel_of_a_ramp_and_of_an_impulse() {
        // Horizontal ramp x[r][c] = c on 3×4: interior derivative (c+1 − (c−1))·(1+2+1) = 8; on the
        // first and last column reflect repeats the edge, so 1·4 = 4. Along axis 0: nothing.
        let ramp: Vec<f64> = (0..12).map(|i| f64::from(i % 4)).collect();
        let s1 = sobel(&ramp, (3, 4), 1).unwrap();
        assert_eq!(&s1[..4], &[4.0, 8.0, 8.0, 4.0]);
        assert_eq!(s1[..4], s1[8..]);
        assert!(sobel(&ramp, (3, 4), 0).unwrap().iter().all(|&v| v == 0.0));
        // An impulse at (2, 2) of a 5×5: S₀(1, 2) = 2·x(2,2) = 2, S₀(3, 2) = −2, S₀(1, 1) = 1,
        // S₁(2, 1) = 2, S₁(1, 1) = 1; magnitude at (1, 1) = √2.
        let mut imp = vec![0.0; 25];
        imp[12] = 1.0;
        let s0 = sobel(&imp, (5, 5), 0).unwrap();
        let s1 = sobel(&imp, (5, 5), 1).unwrap();
        assert_eq!((s0[7], s0[17], s0[6], s0[12]), (2.0, -2.0, 1.0, 0.0));
        assert_eq!((s1[11], s1[13], s1[6]), (2.0, -2.0, 1.0));
        assert!(sobel(&imp, (4, 5), 0).is_err());
        assert!(sobel(&imp, (5, 5), 2).is_err());
    }

    #[test]
    fn edge_map_uses_rgb2gray_weights() {
        // Red ramp along the columns only: gray = 0.2125·c, so the interior magnitude is 8·0.2125.
        let (h, w) = (2, 3);
        let mut gt = vec![0.0f32; 3 * h * w];
        for (i, v) in gt[..h * w].iter_mut().enumerate() {
            *v = (i % w) as f32;
        }
        let gray = rgb_to_gray(&gt, (h, w)).unwrap();
        assert_eq!(gray[2], 2.0 * 0.2125);
        let edges = edge_map(&gt, (h, w)).unwrap();
        assert!((edges[1] - 8.0 * 0.2125).abs() < 1e-12);
        assert!((edges[0] - 4.0 * 0.2125).abs() < 1e-12);
    }

    /// A frame of multiples of 1/8 spanning exactly [0, 1], so that GTn = GT and every sum is exact.
    fn frame(h: usize, w: usize) -> Vec<f32> {
        let mut gt: Vec<f32> = (0..3 * h * w)
            .map(|i| ((i * 5 + i / 7) % 9) as f32 / 8.0)
            .collect();
        (gt[0], gt[1]) = (0.0, 1.0);
        gt
    }

    /// Three neurons whose |C| are 2·R, 2·G and 2·B (signs mixed): heat = 2·Σ_c GT.
    fn canvas_following(gt: &[f32], h: usize, w: usize) -> ContributionMap {
        let data = gt
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 2 == 0 { 2.0 * v } else { -2.0 * v })
            .collect();
        ContributionMap {
            layer: "toy".into(),
            neuron_shape: vec![3],
            height: h,
            width: w,
            data,
        }
    }

    #[test]
    fn heat_equal_to_intensity_correlates_perfectly() {
        let (h, w) = (4, 6);
        let gt = frame(h, w);
        let maps = canvas_following(&gt, h, w);
        let r = intensity(&InMemoryMaps::new(maps.clone()), &gt).unwrap();
        assert!((r.pearson_intensity - 1.0).abs() < 1e-12);
        assert!((r.spearman_intensity - 1.0).abs() < 1e-12);
        assert!(r.diff.iter().all(|&d| d == 0.0));
        // |diff| is constant, so its rank correlation with the edges is undefined.
        assert!(r.spearman_absdiff_edges.is_nan());
        // The panels: Ĩ, the edges rescaled to [0, 1] (their largest value becomes 1), h̃, h̃ − Ĩ.
        let [(ti, i), (te, e), (th, heat), (td, d)] = r.panels();
        assert_eq!(
            [ti, te, th, td],
            [
                "intensity",
                "Sobel edges",
                "heat Σ|C_n|",
                "heat − intensity"
            ]
        );
        assert_eq!(
            (i, heat, d),
            (
                r.intensity_norm.clone(),
                r.heat_norm.clone(),
                r.diff.clone()
            )
        );
        let top = r.edges.iter().copied().fold(f32::MIN, f32::max);
        let k = r.edges.iter().position(|&v| v == top).unwrap();
        assert_eq!(e[k], 1.0);
        assert_eq!(e.iter().copied().fold(f32::MAX, f32::min), 0.0);
        let sums: Vec<f64> = (0..h * w)
            .map(|p| (0..3).map(|c| 2.0 * f64::from(gt[c * h * w + p])).sum())
            .collect();
        assert_eq!(
            r.heat_min,
            sums.iter().copied().fold(f64::INFINITY, f64::min)
        );
        assert_eq!(
            r.heat_max,
            sums.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        );
        let df = r.to_frame().unwrap();
        assert_eq!(df.shape(), (1, 6));
        assert_eq!(
            df.column("heat_max").unwrap().f64().unwrap().get(0),
            Some(r.heat_max)
        );
    }

    #[test]
    fn inverted_heat_gives_minus_one_and_known_diff() {
        let (h, w) = (3, 5);
        let gt = frame(h, w);
        let i_norm = min_max(&frame_intensity(&gt, (h, w)).unwrap());
        let heat: Vec<f64> = i_norm.iter().map(|i| 7.0 - 3.0 * i).collect();
        let r = intensity_from_heat("inv", &heat, (h, w), &gt).unwrap();
        assert!((r.pearson_intensity + 1.0).abs() < 1e-12);
        assert!((r.spearman_intensity + 1.0).abs() < 1e-12);
        for (d, i) in r.diff.iter().zip(&i_norm) {
            assert!((f64::from(*d) - (1.0 - 2.0 * i)).abs() < 1e-6);
        }
        assert_eq!((r.heat_min, r.heat_max), (4.0, 7.0));
    }

    #[test]
    fn intensity_normalises_over_the_whole_frame() {
        // One pixel, channels 0.2, 0.6, 1.0 → GTn = 0, 0.5, 1 → I = 1.5; a second pixel all 0.2 → 0.
        let gt = [0.2f32, 0.2, 0.6, 0.2, 1.0, 0.2];
        let i = frame_intensity(&gt, (1, 2)).unwrap();
        assert!((i[0] - 1.5).abs() < 1e-7 && i[1] == 0.0);
    }

    #[test]
    fn bad_frames_are_rejected() {
        let maps = canvas_following(&frame(2, 2), 2, 2);
        let src = InMemoryMaps::new(maps.clone());
        assert!(intensity(&src, &[0.5; 11]).is_err());
        let mut gt = frame(2, 2);
        gt[3] = f32::NAN;
        assert!(intensity(&src, &gt).is_err());
        assert!(intensity_from_heat("x", &[1.0; 3], (2, 2), &frame(2, 2)).is_err());
    }
}
