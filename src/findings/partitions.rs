//! B.6 in both fidelity modes: the variance of δ per partition (instances, RGB and Gabor
//! clusters, grid cells) of each analysed layer, first annotated analysed frame of each model.

use polars::prelude::DataFrame;

use crate::analysis::partitions::{
    frame_partitions, gt_from_planar, neuron_variances, summary_frame, PartitionConfig,
    PartitionVariances,
};
use crate::analysis::Fidelity;
use crate::canvas::maps::NeuronMaps;
use crate::data::panoptic::Clip;
use crate::error::Result;

use super::units::Analysed;
use super::Run;

/// The partition finding of one fidelity mode.
#[derive(Clone, Debug)]
pub struct PartitionFinding {
    pub fidelity: Fidelity,
    /// `(model, variances)` of each analysed layer.
    pub layers: Vec<(String, PartitionVariances)>,
    /// Median log std per partition and layer (a part of the table `partitions_summary`).
    pub summary: DataFrame,
}

/// Both fidelity modes (those with an annotated first frame); tables `partition_variances` and
/// `partitions_summary`. `seed` seeds the RGB and Gabor k-means.
pub(super) fn partitions(
    run: &mut Run,
    clip: &Clip,
    units: &[Analysed],
    firsts: &[usize],
    seed: u64,
) -> Result<Vec<PartitionFinding>> {
    let mut out = Vec::new();
    for fidelity in [Fidelity::Official, Fidelity::Corrected] {
        let mut layers = Vec::new();
        for u in firsts.iter().map(|&i| &units[i]) {
            let Some(ann) = u.annotation else { continue };
            let (h, w) = (clip.size[0], clip.size[1]);
            let mut cfg = PartitionConfig::for_video(&clip.video, fidelity);
            cfg.seed = seed;
            let parts = frame_partitions(&gt_from_planar(&u.gt, h, w)?, ann, &cfg)?;
            for src in &u.layers {
                let v = neuron_variances(src.as_ref(), &parts)?;
                fill_headline(run, &u.model, src.as_ref(), &v);
                run.add_table("partition_variances", v.to_frame()?);
                layers.push((u.model.clone(), v));
            }
        }
        if layers.is_empty() {
            continue;
        }
        let results: Vec<PartitionVariances> = layers.iter().map(|(_, v)| v.clone()).collect();
        let summary = summary_frame(&results)?;
        run.add_table("partitions_summary", summary.clone());
        out.push(PartitionFinding {
            fidelity,
            layers,
            summary,
        });
    }
    Ok(out)
}

/// The lowest partition of `v`'s mode and, in official mode, the median log std per partition.
fn fill_headline(run: &mut Run, model: &str, src: &dyn NeuronMaps, v: &PartitionVariances) {
    let summary = v.summary();
    let lowest = summary
        .iter()
        .find(|s| s.rank == 1)
        .map_or("none", |s| s.kind.name())
        .to_string();
    let h = run.heads.of(model, src);
    match v.fidelity {
        Fidelity::Official => {
            h.lowest_partition_official = lowest;
            h.median_log_std = summary
                .iter()
                .map(|s| (s.kind.name().to_string(), s.median_log_std))
                .collect();
        }
        Fidelity::Corrected => h.lowest_partition_corrected = lowest,
    }
}
