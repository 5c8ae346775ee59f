//! Motion vs change in contribution (spec B.5): where the canvas of a layer changes between two
//! consecutive frames, compared with the optical flow.
//!
//! For the maps of one layer at frames t−1 and t (same neurons, same order),
//!
//! ```text
//! D_t(p) = Σ_n | |C_n^t(p)| − |C_n^{t−1}(p)| |
//! ```
//!
//! streamed neuron by neuron ([`ContributionChange`] pairs the two sources, [`per_pixel_sum`] adds
//! the maps up; no layer is ever held whole). The official notebook only shows D_t next to the
//! flow magnitude, both min-max normalised; the numbers here are the agreement measures the spec
//! suggests:
//!
//! - Pearson's and Spearman's correlation of D_t and |flow| over all pixels;
//! - the IoU of the top-k % pixels of each map (k = 5, 10, 20 by default). The top-k % set of a
//!   map holds the pixels whose value reaches its ⌈k·P/100⌉-th largest value (ties all in), minus
//!   the pixels at the map's minimum, which carry no signal: a flow that is non-zero on 3 % of the
//!   pixels has a top-5 % set of those 3 %. The IoU is NaN when both sets are empty.
//!
//! The flow magnitude is clamped at 0 first: the bicubic resize of the 8-bit maps (spec D.1) rings
//! slightly below 0 next to moving things, which would otherwise make the still background, at
//! 0, a plateau above the minimum and flood the top-k % sets.
//!
//! The flow of frame t is the clip's own flow file t when it has flow (the velocity of what is
//! visible at frame t, spec D.1), else Farnebäck's flow from frame t to frame t−1
//! ([`crate::data::optical_flow`]), whose magnitude also sits on the pixels of frame t.
//!
//! Schema of [`MotionResult::to_frame`] / [`motion_table`] (one row per layer and frame):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer (`head`, `block3`, …) |
//! | `frame` | u32 | t (D_t compares frames t−1 and t) |
//! | `pearson` | f64 | Pearson's r of D_t and \|flow\| |
//! | `spearman` | f64 | Spearman's ρ of D_t and \|flow\| |
//! | `iou_top{k}` | f64 | IoU of the top-k % pixels, one column per k (default 5, 10, 20) |
//! | `flow_source` | str | `dataset` (the clip's flow files) or `farneback` (estimated) |

use std::cell::Cell;

use polars::prelude::*;

use super::source::per_pixel_sum;
use super::{min_max, pearson, spearman, table_error};
use crate::canvas::maps::NeuronMaps;
use crate::data::optical_flow::{farneback, FarnebackParams};
use crate::data::panoptic::Clip;
use crate::error::{Result, XincError};

/// Where the flow map of a comparison comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowSource {
    /// The clip's own flow files (ground truth for the synthetic clips).
    Dataset,
    /// Estimated with Farnebäck's method from the frames.
    Farneback,
}

impl FlowSource {
    pub fn name(self) -> &'static str {
        match self {
            FlowSource::Dataset => "dataset",
            FlowSource::Farneback => "farneback",
        }
    }
}

/// The top-k percentages whose IoU is reported by default.
pub const DEFAULT_TOP_PERCENTS: [f64; 3] = [5.0, 10.0, 20.0];

/// The neurons of a layer at two frames seen as one source whose map n is
/// `| |C_n^t| − |C_n^{t−1}| |`: the per-neuron change of absolute contribution.
pub struct ContributionChange<'a> {
    prev: &'a dyn NeuronMaps,
    cur: &'a dyn NeuronMaps,
}

impl<'a> ContributionChange<'a> {
    /// Pairs `prev` (frame t−1) with `cur` (frame t); an error unless both have the same layer,
    /// neuron count and map size.
    pub fn new(prev: &'a dyn NeuronMaps, cur: &'a dyn NeuronMaps) -> Result<Self> {
        if prev.layer() != cur.layer()
            || prev.num_neurons() != cur.num_neurons()
            || prev.size() != cur.size()
        {
            return Err(XincError::InvalidArgument(format!(
                "contribution change needs the same layer at two frames: `{}` ({} neurons of \
                 {:?}) vs `{}` ({} neurons of {:?})",
                prev.layer(),
                prev.num_neurons(),
                prev.size(),
                cur.layer(),
                cur.num_neurons(),
                cur.size()
            )));
        }
        Ok(ContributionChange { prev, cur })
    }
}

thread_local! {
    /// The frame-(t−1) map of the neuron being compared, one buffer per worker thread.
    static PREV_MAP: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

impl NeuronMaps for ContributionChange<'_> {
    fn layer(&self) -> &str {
        self.cur.layer()
    }

    fn num_neurons(&self) -> usize {
        self.cur.num_neurons()
    }

    fn size(&self) -> (usize, usize) {
        self.cur.size()
    }

    fn neuron_id(&self, n: usize) -> (usize, Option<usize>) {
        self.cur.neuron_id(n)
    }

    fn map_into(&self, n: usize, out: &mut [f32]) {
        self.cur.map_into(n, out);
        // Taken out of the cell (not borrowed), so that a nested pair cannot clash over it.
        let mut prev = PREV_MAP.take();
        prev.resize(out.len(), 0.0);
        self.prev.map_into(n, &mut prev);
        out.iter_mut()
            .zip(&prev)
            .for_each(|(c, p)| *c = (c.abs() - p.abs()).abs());
        PREV_MAP.set(prev);
    }
}

/// `D_t(p) = Σ_n | |C_n^t(p)| − |C_n^{t−1}(p)| |` of one layer at frames t−1 (`prev`) and t
/// (`cur`), row-major `H·W`.
pub(crate) fn contribution_change(prev: &dyn NeuronMaps, cur: &dyn NeuronMaps) -> Result<Vec<f64>> {
    let change = ContributionChange::new(prev, cur)?;
    Ok(per_pixel_sum(&change, |_, map, out| {
        out.copy_from_slice(map)
    }))
}

/// The top-`percent` % set of `v` (module docs): the pixels at or above the ⌈percent·P/100⌉-th
/// largest value, excluding those at the minimum.
pub(crate) fn top_percent_mask(v: &[f64], percent: f64) -> Vec<bool> {
    if v.is_empty() {
        return Vec::new();
    }
    let count = ((percent / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    let mut sorted = v.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let (threshold, min) = (sorted[count - 1], sorted[v.len() - 1]);
    v.iter().map(|&x| x >= threshold && x > min).collect()
}

/// The IoU of the top-`percent` % sets of `a` and `b` (NaN when both are empty).
pub(crate) fn top_percent_iou(a: &[f64], b: &[f64], percent: f64) -> f64 {
    let (ma, mb) = (top_percent_mask(a, percent), top_percent_mask(b, percent));
    let inter = ma.iter().zip(&mb).filter(|(x, y)| **x && **y).count();
    let union = ma.iter().zip(&mb).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        f64::NAN
    } else {
        inter as f64 / union as f64
    }
}

/// The comparison of one layer's contribution change with the flow at frame t.
#[derive(Clone, Debug, PartialEq)]
pub struct MotionResult {
    pub layer: String,
    /// t: D_t compares frames t−1 and t.
    pub frame: usize,
    pub height: usize,
    pub width: usize,
    /// D_t, row-major.
    pub change: Vec<f64>,
    /// D_t min-max normalised to [0, 1], for figures.
    pub change_norm: Vec<f32>,
    /// The flow magnitude min-max normalised to [0, 1], for figures.
    pub flow_norm: Vec<f32>,
    pub pearson: f64,
    pub spearman: f64,
    /// `(k, IoU of the top-k % pixels)`, in the order asked for.
    pub iou: Vec<(f64, f64)>,
    pub flow_source: FlowSource,
}

/// Compares the change of `prev` → `cur` (frames t−1, t of one layer) with the flow magnitude
/// `flow` (`H·W`, same size as the maps, clamped at 0) at the `top_percents` (e.g.
/// [`DEFAULT_TOP_PERCENTS`]).
pub(crate) fn motion_vs_flow(
    prev: &dyn NeuronMaps,
    cur: &dyn NeuronMaps,
    frame: usize,
    flow: &[f32],
    flow_source: FlowSource,
    top_percents: &[f64],
) -> Result<MotionResult> {
    let (h, w) = cur.size();
    if flow.len() != h * w {
        return Err(XincError::InvalidArgument(format!(
            "flow map of {} values for {}×{} contribution maps of `{}`",
            flow.len(),
            h,
            w,
            cur.layer()
        )));
    }
    if let Some(bad) = top_percents.iter().find(|k| !(**k > 0.0 && **k <= 100.0)) {
        return Err(XincError::InvalidArgument(format!(
            "top-k percentage {bad} outside (0, 100]"
        )));
    }
    if flow.iter().any(|v| !v.is_finite()) {
        return Err(XincError::InvalidArgument(
            "the flow map holds non-finite values".into(),
        ));
    }
    let change = contribution_change(prev, cur)?;
    let flow: Vec<f64> = flow.iter().map(|&v| f64::from(v.max(0.0))).collect();
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    Ok(MotionResult {
        layer: cur.layer().to_string(),
        frame,
        height: h,
        width: w,
        pearson: pearson(&change, &flow),
        spearman: spearman(&change, &flow),
        iou: top_percents
            .iter()
            .map(|&k| (k, top_percent_iou(&change, &flow, k)))
            .collect(),
        change_norm: to_f32(min_max(&change)),
        flow_norm: to_f32(min_max(&flow)),
        change,
        flow_source,
    })
}

/// The column name of the IoU at `k` % (`iou_top5`, `iou_top2.5`).
fn iou_column(k: f64) -> String {
    format!("iou_top{k}")
}

impl MotionResult {
    /// This result as a one-row table (schema in the module docs).
    pub fn to_frame(&self) -> Result<DataFrame> {
        motion_table(std::slice::from_ref(self))
    }
}

/// One row per result (schema in the module docs); every result must report the same top-k
/// percentages.
pub fn motion_table(results: &[MotionResult]) -> Result<DataFrame> {
    let ks: Vec<f64> = results.first().map_or(DEFAULT_TOP_PERCENTS.to_vec(), |r| {
        r.iou.iter().map(|(k, _)| *k).collect()
    });
    if results
        .iter()
        .any(|r| r.iou.iter().map(|(k, _)| *k).ne(ks.iter().copied()))
    {
        return Err(XincError::InvalidArgument(
            "motion results with different top-k percentages cannot share a table".into(),
        ));
    }
    let mut columns = vec![
        Column::new(
            "layer".into(),
            results.iter().map(|r| r.layer.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "frame".into(),
            results.iter().map(|r| r.frame as u32).collect::<Vec<_>>(),
        ),
        Column::new(
            "pearson".into(),
            results.iter().map(|r| r.pearson).collect::<Vec<_>>(),
        ),
        Column::new(
            "spearman".into(),
            results.iter().map(|r| r.spearman).collect::<Vec<_>>(),
        ),
    ];
    for (i, &k) in ks.iter().enumerate() {
        let values: Vec<f64> = results.iter().map(|r| r.iou[i].1).collect();
        columns.push(Column::new(iou_column(k).into(), values));
    }
    columns.push(Column::new(
        "flow_source".into(),
        results
            .iter()
            .map(|r| r.flow_source.name())
            .collect::<Vec<_>>(),
    ));
    DataFrame::new_infer_height(columns).map_err(|e| table_error("motion", e))
}

/// The flow magnitude of frame `t` of `clip` at its working size: the clip's flow file `t` when
/// it has flows, else Farnebäck's flow from frame t to frame t−1 (`t ≥ 1`).
pub(crate) fn frame_flow(
    clip: &Clip,
    t: usize,
    params: &FarnebackParams,
) -> Result<(Vec<f32>, FlowSource)> {
    if let Some(flow) = clip.flow(t)? {
        return Ok((flow.magnitude(), FlowSource::Dataset));
    }
    if t == 0 {
        return Err(XincError::InvalidArgument(format!(
            "video {} has no flow files, and frame 0 has no previous frame to estimate one from",
            clip.video
        )));
    }
    let [h, w] = clip.size;
    let flow = farneback(&clip.frame_nerv(t)?, &clip.frame_nerv(t - 1)?, h, w, params)?;
    Ok((flow.magnitude(), FlowSource::Farneback))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::maps::InMemoryMaps;
    use crate::canvas::ContributionMap;

    const H: usize = 16;
    const W: usize = 16;

    /// A 3×3 square with its top-left corner at `(y, x)`.
    fn square(y: usize, x: usize) -> Vec<bool> {
        (0..H * W)
            .map(|p| (y..y + 3).contains(&(p / W)) && (x..x + 3).contains(&(p % W)))
            .collect()
    }

    /// Three neurons: 0 follows a square (−2 at t−1, +2 at t), 1 is static, 2 flips its sign
    /// (same |C|). Only neuron 0 changes |C|.
    fn frame(square_at: (usize, usize), sign: f32) -> ContributionMap {
        let sq = square(square_at.0, square_at.1);
        let mut data: Vec<f32> = sq
            .iter()
            .map(|&s| if s { 2.0 * sign } else { 0.0 })
            .collect();
        data.extend((0..H * W).map(|p| (p as f32 * 0.3).sin()));
        data.extend((0..H * W).map(|p| sign * (1.0 + (p % 5) as f32)));
        ContributionMap {
            layer: "toy".into(),
            neuron_shape: vec![3],
            height: H,
            width: W,
            data,
        }
    }

    fn moved_region() -> Vec<bool> {
        let (a, b) = (square(4, 3), square(5, 8));
        a.iter().zip(&b).map(|(x, y)| x ^ y).collect()
    }

    #[test]
    fn change_is_the_region_the_square_left_and_entered() {
        let (prev, cur) = (frame((4, 3), -1.0), frame((5, 8), 1.0));
        let (p, c) = (
            InMemoryMaps::new(prev.clone()),
            InMemoryMaps::new(cur.clone()),
        );
        let d = contribution_change(&p, &c).unwrap();
        for (v, moved) in d.iter().zip(moved_region()) {
            assert_eq!(*v, if moved { 2.0 } else { 0.0 });
        }
        // Pairs nest (each worker's buffer is taken, not borrowed): a change against itself is 0.
        let change = ContributionChange::new(&p, &c).unwrap();
        let nested = contribution_change(&change, &change).unwrap();
        assert!(nested.iter().all(|&v| v == 0.0));
        // Overlapping squares: the shared pixels do not change.
        let d = contribution_change(&p, &InMemoryMaps::new(frame((5, 5), 1.0))).unwrap();
        assert_eq!(d[5 * W + 5], 0.0);
        assert_eq!(d[4 * W + 3], 2.0);
        // Squares at rows 4..7 × columns 3..6 and 5..8 × 5..8 share 2 pixels.
        assert_eq!(d.iter().filter(|&&v| v > 0.0).count(), 2 * (9 - 2));
    }

    #[test]
    fn flow_marking_exactly_the_change_agrees_perfectly() {
        let (prev, cur) = (frame((4, 3), -1.0), frame((5, 8), 1.0));
        let (p, c) = (
            InMemoryMaps::new(prev.clone()),
            InMemoryMaps::new(cur.clone()),
        );
        let flow: Vec<f32> = moved_region()
            .iter()
            .map(|&m| f32::from(u8::from(m)) * 3.0)
            .collect();
        let r =
            motion_vs_flow(&p, &c, 1, &flow, FlowSource::Dataset, &DEFAULT_TOP_PERCENTS).unwrap();
        assert!((r.pearson - 1.0).abs() < 1e-12);
        assert!((r.spearman - 1.0).abs() < 1e-12);
        assert_eq!(r.iou, vec![(5.0, 1.0), (10.0, 1.0), (20.0, 1.0)]);
        assert_eq!(
            r.change_norm,
            flow.iter().map(|v| v / 3.0).collect::<Vec<_>>()
        );
        assert_eq!(r.flow_norm, r.change_norm);

        // A flow on the square's new position only: half of the changed pixels.
        let new_only: Vec<f32> = square(5, 8)
            .iter()
            .map(|&m| f32::from(u8::from(m)))
            .collect();
        let r = motion_vs_flow(&p, &c, 1, &new_only, FlowSource::Farneback, &[5.0, 50.0]).unwrap();
        assert_eq!(r.iou, vec![(5.0, 0.5), (50.0, 0.5)]);
        // Pearson of two indicators: (both·N − a·b) / √(a(N−a)·b(N−b)), a = 18, b = both = 9.
        let n = (H * W) as f64;
        let want = (9.0 * n - 18.0 * 9.0) / (18.0 * (n - 18.0) * 9.0 * (n - 9.0)).sqrt();
        assert!((r.pearson - want).abs() < 1e-12, "{} vs {want}", r.pearson);

        let df = r.to_frame().unwrap();
        let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "layer",
                "frame",
                "pearson",
                "spearman",
                "iou_top5",
                "iou_top50",
                "flow_source"
            ]
        );
        let source = df.column("flow_source").unwrap().str().unwrap().get(0);
        assert_eq!(source, Some("farneback"));
    }

    #[test]
    fn top_percent_sets_include_ties_and_skip_the_minimum() {
        let v: Vec<f64> = (0..20).map(f64::from).collect();
        let top = top_percent_mask(&v, 10.0);
        assert_eq!(top.iter().filter(|&&b| b).count(), 2);
        assert!(top[19] && top[18]);
        // 3 of 20 tied at the top: a 5 % set takes all three; a flat map has no top set.
        let mut tied = vec![0.0; 20];
        tied[2..5].iter_mut().for_each(|v| *v = 7.0);
        assert_eq!(
            top_percent_mask(&tied, 5.0).iter().filter(|&&b| b).count(),
            3
        );
        assert_eq!(
            top_percent_mask(&tied, 50.0).iter().filter(|&&b| b).count(),
            3
        );
        assert!(top_percent_iou(&[1.0; 4], &[2.0; 4], 10.0).is_nan());
    }

    #[test]
    fn bundled_nerv_head_changes_where_things_move() {
        use crate::canvas::nerv::{NervFrameData, NervLayer};
        use crate::canvas::CanvasOptions;
        use crate::data::clip::{open_clip, ClipOptions};
        use crate::models::ModelDir;

        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dev = candle_core::Device::Cpu;
        let dir = ModelDir::new(root.join("checkpoints/nerv_cityscapes_vps_0005"));
        let (model, _) = dir.load_nerv(&dev).unwrap();
        let clip = open_clip(&root.join("data/cityscapes_vps"), &ClipOptions::default()).unwrap();
        let params = FarnebackParams::default();
        let (flow, source) = frame_flow(&clip, 1, &params).unwrap();
        assert_eq!(source, FlowSource::Dataset);
        let data = [0, 1].map(|t| {
            let acts = model.forward_frame(t, &dev).unwrap();
            NervFrameData::new(&model, &acts).unwrap()
        });
        let layer = NervLayer::Head;
        let [prev, cur] = [0, 1].map(|i| data[i].maps(layer, &CanvasOptions::default()).unwrap());
        let (prev, cur) = (prev.as_ref(), cur.as_ref());
        let r = motion_vs_flow(prev, cur, 1, &flow, source, &DEFAULT_TOP_PERCENTS).unwrap();
        // Measured: Pearson 0.531, Spearman 0.403, IoU 0.387 / 0.498 / 0.315 (top 5/10/20 %).
        assert!(r.pearson > 0.45 && r.spearman > 0.3, "{r:?}");
        assert!(r.iou[0].1 > 0.3 && r.iou[1].1 > 0.4, "{:?}", r.iou);

        // The estimated flow of the same frame (t → t−1) finds the same movers.
        let [h, w] = clip.size;
        let (f1, f0) = (clip.frame_nerv(1).unwrap(), clip.frame_nerv(0).unwrap());
        let est = farneback(&f1, &f0, h, w, &params).unwrap().magnitude();
        let to_f64 = |v: &[f32]| v.iter().map(|&x| f64::from(x.max(0.0))).collect::<Vec<_>>();
        let agreement = pearson(&to_f64(&est), &to_f64(&flow));
        assert!(
            agreement > 0.3,
            "Farnebäck vs the dataset flow: {agreement}"
        );
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let (prev, cur) = (frame((4, 3), -1.0), frame((5, 8), 1.0));
        let (p, c) = (
            InMemoryMaps::new(prev.clone()),
            InMemoryMaps::new(cur.clone()),
        );
        let mut other = frame((0, 0), 1.0);
        other.layer = "other".into();
        assert!(contribution_change(&p, &InMemoryMaps::new(other.clone())).is_err());
        let flow = vec![0.0; H * W];
        assert!(motion_vs_flow(&p, &c, 1, &flow[1..], FlowSource::Dataset, &[5.0]).is_err());
        assert!(motion_vs_flow(&p, &c, 1, &flow, FlowSource::Dataset, &[0.0]).is_err());
        let mut nan = flow.clone();
        nan[3] = f32::NAN;
        assert!(motion_vs_flow(&p, &c, 1, &nan, FlowSource::Dataset, &[5.0]).is_err());
        let a = motion_vs_flow(&p, &c, 1, &flow, FlowSource::Dataset, &[5.0]).unwrap();
        let b = motion_vs_flow(&p, &c, 2, &flow, FlowSource::Dataset, &[10.0]).unwrap();
        assert!(motion_table(&[a.clone(), b]).is_err());
        assert_eq!(motion_table(&[a.clone(), a]).unwrap().height(), 2);
    }
}
