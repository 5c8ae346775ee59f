//! The sections of the causal tests: which canvas predicts ablation
//! ([`crate::analysis::ablation`]: FFN units and NeRV kernels removed in turn, per layer and per
//! object), and contribution-guided pruning ([`crate::compress::prune`], its rate–distortion
//! curves).

use polars::prelude::*;

use super::page::Section;
use crate::analysis::{f64_values, str_values};
use crate::error::Result;
use crate::findings::Findings;
use crate::plot::views::{ablation_figure, pruning_quality_figure, rate_distortion_figure};

/// The ablation section, from the findings' tables `ablation`, `ablation_neurons`
/// (`None` when there is no `ablation`).
pub(super) fn section(findings: &Findings) -> Result<Option<Section>> {
    let Some(table) = findings.table("ablation") else {
        return Ok(None);
    };
    let mut sec = Section::new(
        "ablation",
        "Which canvas predicts what a neuron does",
        "A canvas claims that a neuron with a large map matters for those pixels. Here neurons \
         are removed one at a time and the real change of the output is measured: every unit of \
         every FFN layer (its input to the next Linear layer set to zero), every kernel of the \
         NeRV head, and a seeded uniform sample of the kernels of the NeRV's last block (the \
         kernel zeroed, the rest of the network run as it is; <code>xinc ablate</code> runs a \
         whole layer as a budgeted job). <b>Spearman</b>: the rank correlation, over the \
         removed neurons, between a map's total |contribution| and the drop of the official \
         PSNR its removal causes. <b>Pixel Pearson</b>: the correlation, over pixels, between a \
         neuron's map and the change its removal causes (summed over RGB), averaged over \
         neurons. <b>Object Spearman</b>: per object of frame 0 (its panoptic instances and the \
         pixels none covers), the rank correlation between the map's |contribution| inside the \
         object and the object's PSNR drop, averaged over objects. Where the network after the \
         neuron is linear (the FFN's last layer, the NeRV head) both canvases are the same and \
         the change is the map less its bias share.",
    );
    sec.table("Verdict per layer", &verdicts(table)?);
    if let Some(neurons) = findings.table("ablation_neurons") {
        for (model, layer) in model_layers(table)? {
            let one = neurons
                .clone()
                .lazy()
                .filter(col("model").eq(lit(model)).and(col("layer").eq(lit(layer))))
                .collect()
                .map_err(|e| crate::analysis::table_error("ablation_neurons", e))?;
            sec.figure(ablation_figure(&one)?);
        }
    }
    sec.table("Ablation against both canvases, per layer", table);
    Ok(Some(sec))
}

/// The pruning section, from the findings' table `pruning` (`None` when there is none).
pub(super) fn pruning_section(findings: &Findings) -> Result<Option<Section>> {
    let Some(table) = findings.table("pruning") else {
        return Ok(None);
    };
    let mut sec = Section::new(
        "pruning",
        "Pruning by contribution: bits per pixel against PSNR",
        "The kernels of the NeRV head are ranked by their total |contribution| on frame 0 (the \
         head has the same maps under both canvases), by weight norm and at random; the lowest \
         fraction is zeroed (no fine-tuning), and each pruned model is quantised (8 bits, the \
         embeddings 6) and Huffman-coded as the official training script does. Zeroed weights \
         become frequent symbols, so the bits fall with the fraction; but the head holds a few \
         hundred of the model's weights, so its rate hardly moves (the stem holds most of them, \
         block 1 most of the rest: <code>xinc prune --layer block1</code> runs the same on a \
         block). A ranking is better where its curve lies higher.",
    );
    sec.figure(pruning_quality_figure(table)?);
    sec.figure(rate_distortion_figure(table)?);
    sec.table("Rate–distortion per ranking and fraction", table);
    Ok(Some(sec))
}

/// The (model, layer) pairs of the agreement table where the canvases' scores differ (where the
/// network after the layer is linear they are the same canvas), in order.
fn model_layers(table: &DataFrame) -> Result<Vec<(String, String)>> {
    let (models, layers) = (str_values(table, "model")?, str_values(table, "layer")?);
    let rho = f64_values(table, "spearman_total_psnr_drop")?;
    let mut seen: Vec<((String, String), Vec<f64>)> = Vec::new();
    for (i, key) in models.into_iter().zip(layers).enumerate() {
        match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, scores)) => scores.push(rho[i]),
            None => seen.push((key, vec![rho[i]])),
        }
    }
    Ok(seen
        .into_iter()
        .filter(|(_, scores)| scores.windows(2).any(|w| w[0] != w[1]))
        .map(|(key, _)| key)
        .collect())
}

/// Per layer: each canvas's Spearman, pixel Pearson and object Spearman, and which canvas
/// predicts the ablation better on each (a tie where they differ by under 0.01).
fn verdicts(table: &DataFrame) -> Result<DataFrame> {
    let err = |e| crate::analysis::table_error("ablation verdicts", e);
    let (text, col) = (str_values, f64_values);
    let (models, layers, methods) = (
        text(table, "model")?,
        text(table, "layer")?,
        text(table, "method")?,
    );
    let scores = [
        col(table, "spearman_total_psnr_drop")?,
        col(table, "mean_pixel_pearson")?,
        col(table, "mean_object_spearman")?,
    ];
    let mut out: (Vec<String>, Vec<String>, [Vec<f64>; 6], [Vec<String>; 3]) = Default::default();
    for i in (0..table.height()).filter(|&i| methods[i] == "official") {
        let Some(j) = (0..table.height()).find(|&j| {
            models[j] == models[i] && layers[j] == layers[i] && methods[j] == "conservative"
        }) else {
            continue;
        };
        out.0.push(models[i].clone());
        out.1.push(layers[i].clone());
        for (k, s) in scores.iter().enumerate() {
            out.2[2 * k].push(s[i]);
            out.2[2 * k + 1].push(s[j]);
            out.3[k].push(better(s[i], s[j]).into());
        }
    }
    let [a, b, c, d, e, f] = out.2;
    let [by_rho, by_pixel, by_object] = out.3;
    polars::df!(
        "model" => out.0,
        "layer" => out.1,
        "Spearman official" => a,
        "Spearman conservative" => b,
        "pixel Pearson official" => c,
        "pixel Pearson conservative" => d,
        "object Spearman official" => e,
        "object Spearman conservative" => f,
        "better by Spearman" => by_rho,
        "better by pixel Pearson" => by_pixel,
        "better by object Spearman" => by_object,
    )
    .map_err(err)
}

fn better(official: f64, conservative: f64) -> &'static str {
    if !(official.is_finite() && conservative.is_finite()) {
        "–"
    } else if (official - conservative).abs() < 0.01 {
        "tie"
    } else if conservative > official {
        "conservative"
    } else {
        "official"
    }
}
