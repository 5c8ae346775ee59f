//! The causal tests of the findings (issue 21): the ablation of both models against both
//! canvases (table `ablation`: one row per layer and canvas; `ablation_objects`: per layer,
//! canvas and object; `ablation_neurons`: per removed neuron), and the contribution-guided
//! pruning of the NeRV head (table `pruning`).

use super::{FindingsOptions, Run};
use crate::analysis::ablation::{agreement_table, object_agreement_table, AblationBudget};
use crate::compress::CompressOptions;
use crate::error::Result;
use crate::study::Study;

/// The pruning fractions of the report by default (issue 21: 10–90 % of the layer).
pub const PRUNING_FRACTIONS: [f64; 6] = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9];

/// Every FFN unit, every NeRV head kernel and a seeded sample of `opts.ablation_kernels`
/// kernels of the NeRV's last block (none when it is 0), removed on frame 0.
pub(super) fn ablation(run: &mut Run, study: &Study, opts: &FindingsOptions) -> Result<()> {
    let mut layers = Vec::new();
    if study.ffn.is_some() {
        layers.extend(study.ffn_ablation()?);
    }
    if let Some(nerv) = &study.nerv {
        let last = format!("block{}", nerv.model.blocks().len());
        let mut targets = vec![("head", None)];
        if opts.ablation_kernels > 0 {
            targets.push((last.as_str(), Some(opts.ablation_kernels)));
        }
        for (layer, max) in targets {
            let budget = AblationBudget {
                max_neurons: max,
                seed: opts.seed,
                ..Default::default()
            };
            layers.push(study.nerv_ablation(layer, 0, &budget, None)?);
        }
    }
    run.add_table("ablation", agreement_table(&layers)?);
    for layer in &layers {
        run.add_table("ablation_neurons", layer.neurons_table()?);
    }
    run.add_table("ablation_objects", object_agreement_table(&layers)?);
    Ok(())
}

/// The NeRV head pruned at `opts.pruning`'s fractions by each ranking.
pub(super) fn pruning(run: &mut Run, study: &Study, opts: &FindingsOptions) -> Result<()> {
    let table = study.nerv_pruning(
        "head",
        &opts.pruning,
        opts.seed,
        (&CompressOptions::default(), None),
    )?;
    run.add_table("pruning", table);
    Ok(())
}
