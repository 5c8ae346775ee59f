//! B.8: each live neuron's Gabor-cluster vector, k-means groups, their PCA embedding and their
//! stability over seeds, per analysed layer on the first analysed frame of each model.

use crate::analysis::groups::{neuron_groups, neuron_vectors, Features, GroupOptions, THUMBNAIL};
use crate::analysis::groups::{NeuronGroups, NeuronVectors};
use crate::analysis::partitions::{gabor_labels, gt_from_planar};
use crate::analysis::Fidelity;
use crate::error::Result;

use super::units::Analysed;
use super::{FindingsOptions, Run};

/// The neuron groups of one layer.
#[derive(Clone, Debug)]
pub struct GroupFinding {
    pub model: String,
    pub layer: String,
    /// Groups, embedding and stability.
    pub groups: NeuronGroups,
    /// The neurons' vectors and thumbnails the groups were found in.
    pub vectors: NeuronVectors,
}

/// Every analysed layer of the first frames (`firsts`) with at least `opts.groups` live
/// neurons; tables `neuron_groups` and `groups_summary`.
pub(super) fn groups(
    run: &mut Run,
    units: &[Analysed],
    firsts: &[usize],
    opts: &FindingsOptions,
) -> Result<Vec<GroupFinding>> {
    let group_opts = GroupOptions {
        k: opts.groups,
        seed: opts.seed,
        ..GroupOptions::default()
    };
    let mut out = Vec::new();
    for u in firsts.iter().map(|&i| &units[i]) {
        let (h, w) = u.layers[0].size();
        let frame = gt_from_planar(&u.gt, h, w)?;
        let labels = gabor_labels(&frame, 32, opts.seed, Fidelity::Official)?;
        for src in &u.layers {
            let features = Features::Labels {
                name: "gabor",
                labels: &labels,
            };
            let vectors = neuron_vectors(src.as_ref(), &features, THUMBNAIL)?;
            if vectors.neurons.len() < group_opts.k {
                continue;
            }
            let groups = neuron_groups(&vectors, &group_opts)?;
            run.heads.of(&u.model, src.as_ref()).group_ari = groups.ari_mean;
            run.add_table("neuron_groups", groups.to_frame()?);
            run.add_table("groups_summary", groups.summary()?);
            out.push(GroupFinding {
                model: u.model.clone(),
                layer: src.layer().to_string(),
                groups,
                vectors,
            });
        }
    }
    Ok(out)
}
