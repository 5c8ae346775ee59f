//! B.5: the NeRV's contribution change D_t (frame t−1 → t) of the head and the last block against
//! the flow magnitude of frame t, at the frames of [`FindingsOptions::motion_frames`].

use crate::analysis::motion::DEFAULT_TOP_PERCENTS;
use crate::analysis::motion::{frame_flow, motion_table, motion_vs_flow, MotionResult};
use crate::data::optical_flow::FarnebackParams;
use crate::error::Result;
use crate::study::Study;

use super::headlines::MotionHeadline;
use super::units::{nerv_frame_data, nerv_source};
use super::{FindingsOptions, Run};

/// The motion finding of one frame t.
#[derive(Clone, Debug)]
pub struct MotionFinding {
    pub model: String,
    /// t: D_t compares frames t−1 and t.
    pub frame: usize,
    /// One comparison per paper layer (head, last block), each with its D_t and flow maps.
    pub layers: Vec<MotionResult>,
}

impl MotionFinding {
    /// The headline of each layer's comparison.
    pub fn headlines(&self) -> Vec<MotionHeadline> {
        self.layers
            .iter()
            .map(|m| MotionHeadline {
                model: self.model.clone(),
                layer: m.layer.clone(),
                frame: m.frame,
                pearson: m.pearson,
                spearman: m.spearman,
                iou_top10: m
                    .iou
                    .iter()
                    .find(|(k, _)| *k == 10.0)
                    .map_or(f64::NAN, |x| x.1),
                flow_source: m.flow_source.name().to_string(),
            })
            .collect()
    }
}

/// Every motion frame t of `opts` inside the clip and the NeRV (t ≥ 1); table `motion`.
pub(super) fn motion(
    run: &mut Run,
    study: &Study,
    opts: &FindingsOptions,
) -> Result<Vec<MotionFinding>> {
    let (clip, nerv) = (&study.clip, study.nerv()?);
    let model = study.nerv.as_ref().map_or("", |n| n.name.as_str());
    let limit = nerv.config().frames.min(clip.frames.len());
    let mut out = Vec::new();
    for &t in opts.motion_frames.iter().filter(|&&t| t >= 1 && t < limit) {
        let data = nerv_frame_data(study, &[t - 1, t])?;
        let (flow, source) = frame_flow(clip, t, &FarnebackParams::default())?;
        let mut layers = Vec::new();
        for layer in study.paper_layers()? {
            let (prev, cur) = (
                nerv_source(&data[0].1, layer, opts.method)?,
                nerv_source(&data[1].1, layer, opts.method)?,
            );
            layers.push(motion_vs_flow(
                prev.as_ref(),
                cur.as_ref(),
                t,
                &flow,
                source,
                &DEFAULT_TOP_PERCENTS,
            )?);
        }
        out.push(MotionFinding {
            model: model.to_string(),
            frame: t,
            layers,
        });
    }
    let results: Vec<MotionResult> = out.iter().flat_map(|m| m.layers.clone()).collect();
    if !results.is_empty() {
        run.add_table("motion", motion_table(&results)?);
    }
    Ok(out)
}
