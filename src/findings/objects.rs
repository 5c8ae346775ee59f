//! B.3 / B.4 / B.7: instance shares, semantics, thing vs stuff, area vs neurons, per analysed
//! layer of each model over its annotated analysed frames.

use crate::analysis::objects::{
    area_vs_neurons, object_shares, other_region, AreaNeurons, ObjectShares,
};
use crate::analysis::Fidelity;
use crate::canvas::maps::NeuronMaps;
use crate::data::panoptic::PanopticFrame;
use crate::error::Result;

use super::units::Analysed;
use super::Run;

/// The objects finding of one layer.
#[derive(Clone, Debug)]
pub struct ObjectFinding {
    pub model: String,
    pub layer: String,
    /// A[n, instance] over the model's annotated analysed frames (official "other" region).
    pub shares: ObjectShares,
    /// Area vs contributing neurons on the first annotated analysed frame.
    pub area: AreaNeurons,
}

/// The objects finding of every analysed layer of every model with an annotated frame, by model
/// then layer; tables `object_shares`, `semantics`, `thing_stuff`, `area_neurons`.
pub(super) fn objects(run: &mut Run, units: &[Analysed]) -> Result<Vec<ObjectFinding>> {
    let other = other_region(Fidelity::Official);
    let mut out = Vec::new();
    for model in models(units) {
        let frames: Vec<&Analysed> = units
            .iter()
            .filter(|u| u.model == model && u.annotation.is_some())
            .collect();
        let Some(first) = frames.first() else {
            continue;
        };
        for (l, src0) in first.layers.iter().enumerate() {
            let pairs: Vec<(&dyn NeuronMaps, &PanopticFrame)> = frames
                .iter()
                .filter_map(|u| Some((u.layers[l].as_ref(), u.annotation?)))
                .collect();
            let shares = object_shares(&pairs, other)?;
            run.add_table("object_shares", shares.to_frame()?);
            run.add_table("semantics", shares.semantics_frame()?);
            run.add_table("thing_stuff", shares.thing_vs_stuff().summary_frame()?);
            let area = area_vs_neurons(src0.as_ref(), pairs[0].1)?;
            let h = run.heads.of(model, src0.as_ref());
            h.semantics_gap = shares.semantics(0).gap();
            h.area_spearman = area.spearman;
            run.add_table("area_neurons", area.to_frame()?);
            out.push(ObjectFinding {
                model: model.to_string(),
                layer: src0.layer().to_string(),
                shares,
                area,
            });
        }
    }
    Ok(out)
}

/// The models of `units`, in order of first appearance.
fn models<'a>(units: &'a [Analysed]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for u in units {
        if !out.contains(&u.model.as_str()) {
            out.push(&u.model);
        }
    }
    out
}
