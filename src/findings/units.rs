//! What the analyses read: the FFN canvas and the NeRV's frames, computed once, and from them the
//! analysed layers of each model on each analysed frame ([`Analysed`]).

use std::sync::Arc;

use crate::canvas::maps::{InMemoryMaps, NeuronMaps};
use crate::canvas::nerv::{NervFrameData, NervLayer};
use crate::canvas::{ContributionMap, Method};
use crate::data::panoptic::PanopticFrame;
use crate::error::Result;
use crate::study::Study;

use super::{FindingsOptions, Run};

/// The FFN's layer maps and the NeRV's analysed frames.
pub(super) struct Units {
    ffn_maps: Option<Vec<Arc<ContributionMap>>>,
    /// `(frame, its activations)`, the analysed frames in order.
    pub(super) nerv_frames: Vec<(usize, NervFrameData)>,
}

/// The analysed layers of one model on one frame.
pub(super) struct Analysed<'a> {
    pub(super) model: String,
    pub(super) frame: usize,
    /// What the model learned of the frame, planar `[3, H, W]`.
    pub(super) gt: Vec<f32>,
    pub(super) annotation: Option<&'a PanopticFrame>,
    pub(super) layers: Vec<Box<dyn NeuronMaps + 'a>>,
}

impl Units {
    /// The FFN canvas under `opts.method` and the NeRV forward passes of the analysed frames.
    pub(super) fn compute(run: &mut Run, study: &Study, opts: &FindingsOptions) -> Result<Units> {
        let ffn_maps = match &study.ffn {
            Some(_) => Some(run.timed("FFN canvas", |_| study.ffn_canvas_by(opts.method))?),
            None => None,
        };
        let nerv_frames = match &study.nerv {
            Some(_) => run.timed("NeRV forward passes", |_| {
                let frames = evenly_spaced(&study.analysed_frames(), opts.max_frames);
                nerv_frame_data(study, &frames)
            })?,
            None => Vec::new(),
        };
        Ok(Units {
            ffn_maps,
            nerv_frames,
        })
    }

    /// The FFN's layers on frame 0, then the NeRV's paper layers on each analysed frame.
    pub(super) fn analysed<'a>(
        &'a self,
        study: &'a Study,
        method: Method,
    ) -> Result<Vec<Analysed<'a>>> {
        let mut units = Vec::new();
        if let (Some(ffn), Some(maps)) = (&study.ffn, &self.ffn_maps) {
            units.push(Analysed {
                model: ffn.name.clone(),
                frame: 0,
                gt: study.ffn_target()?,
                annotation: study.annotation(0),
                layers: maps
                    .iter()
                    .map(|m| Box::new(InMemoryMaps::new(Arc::clone(m))) as Box<dyn NeuronMaps>)
                    .collect(),
            });
        }
        if let Some(nerv) = &study.nerv {
            for (f, data) in &self.nerv_frames {
                units.push(Analysed {
                    model: nerv.name.clone(),
                    frame: *f,
                    gt: study.nerv_target(*f)?,
                    annotation: study.annotation(*f),
                    layers: study
                        .paper_layers()?
                        .into_iter()
                        .map(|l| nerv_source(data, l, method))
                        .collect::<Result<_>>()?,
                });
            }
        }
        Ok(units)
    }
}

/// The first analysed frame of each model (indices into `units`).
pub(super) fn first_units(units: &[Analysed]) -> Vec<usize> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (i, u) in units.iter().enumerate() {
        if !seen.contains(&u.model.as_str()) {
            seen.push(&u.model);
            out.push(i);
        }
    }
    out
}

/// At most `max` of `frames`, evenly spaced, the first and the last included.
pub(super) fn evenly_spaced(frames: &[usize], max: Option<usize>) -> Vec<usize> {
    match max {
        Some(k) if k < frames.len() => {
            let n = frames.len();
            (0..k.max(1))
                .map(|i| {
                    frames[if k <= 1 {
                        0
                    } else {
                        (i * (n - 1) + (k - 1) / 2) / (k - 1)
                    }]
                })
                .collect()
        }
        _ => frames.to_vec(),
    }
}

/// The NeRV's activations of each of `frames`.
pub(super) fn nerv_frame_data(
    study: &Study,
    frames: &[usize],
) -> Result<Vec<(usize, NervFrameData)>> {
    frames
        .iter()
        .map(|&f| Ok((f, study.nerv_frame(f)?)))
        .collect()
}

/// One NeRV layer of a frame under `method`, streamed.
pub(super) fn nerv_source(
    data: &NervFrameData,
    layer: NervLayer,
    method: Method,
) -> Result<Box<dyn NeuronMaps + '_>> {
    data.maps(layer, &method.into())
}

#[cfg(test)]
mod tests {
    use super::evenly_spaced;

    #[test]
    fn frame_subsets_are_evenly_spaced_with_both_ends() {
        let frames: Vec<usize> = (0..24).map(|i| i * 5).collect();
        assert_eq!(evenly_spaced(&frames, None), frames);
        assert_eq!(evenly_spaced(&frames, Some(30)), frames);
        assert_eq!(evenly_spaced(&frames, Some(1)), vec![0]);
        assert_eq!(evenly_spaced(&frames, Some(2)), vec![0, 115]);
        let six = evenly_spaced(&frames, Some(6));
        assert_eq!(six.len(), 6);
        assert_eq!((six[0], six[5]), (0, 115));
        assert!(six.windows(2).all(|w| w[1] > w[0]));
    }
}
