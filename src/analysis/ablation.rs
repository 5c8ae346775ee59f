//! Ablation: remove a neuron and measure what the model's output really loses, then ask which
//! canvas predicted it (issue 21, items 2 and 3; FFN layers so far).
//!
//! An FFN neuron of layer k is an input unit j of Linear layer k (the canvas's neuron). Removing
//! it sets that input to zero: the pre-activation of Linear k loses the rank-one term
//! `x_j · W_k[:, j]`, and the rest of the network runs as it is. The change is exact, with no
//! linearisation, for every layer. On the last layer the network after the unit is linear, so
//! the change equals the unit's map minus its share of the bias (a test).
//!
//! What is measured per unit: the per-pixel change of the output (summed over the RGB channels,
//! as the summed maps `layer{k}` are), and the drop of the official PSNR (prediction clamped
//! and rounded to 8 bits). [`Agreement`] then compares a canvas's maps with them: the Spearman
//! correlation, over the layer's units, between a map's total |contribution| and the PSNR drop,
//! and the mean over units of the Pearson correlation, over pixels, between map and change.

use candle_core::{Module, Tensor, D};
use polars::prelude::*;

use super::{mean, pearson, spearman, table_error};
use crate::canvas::maps::NeuronMaps;
use crate::canvas::Method;
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnActivations};
use crate::train::psnr_quantised;

/// What removing each unit of one FFN layer does.
#[derive(Clone, Debug)]
pub struct FfnAblation {
    /// Linear layer k (1-based) whose input units were removed one at a time.
    pub layer: usize,
    /// The official PSNR of the intact model against the target.
    pub psnr: f64,
    /// Per unit: the PSNR drop (intact − ablated), in dB.
    pub psnr_drop: Vec<f64>,
    /// Per unit: the output minus the ablated output, summed over the channels, `[P]` per unit.
    pub change: Vec<Vec<f32>>,
}

/// Removes each input unit of Linear layer `layer` of `model` in turn (`acts`: the intact
/// forward pass over the image grid; `target`: the image, `[P, 3]` row-major like the output).
pub fn ablate_ffn_layer(
    model: &Ffn,
    acts: &FfnActivations,
    layer: usize,
    target: &[f32],
) -> Result<FfnAblation> {
    let layers = model.layers();
    if layer == 0 || layer > layers.len() {
        return Err(XincError::InvalidArgument(format!(
            "FFN layer {layer} does not exist (1..={})",
            layers.len()
        )));
    }
    let x = acts.layer_input(layer)?;
    let output: Vec<f32> = acts.output.flatten_all()?.to_vec1()?;
    if target.len() != output.len() {
        return Err(XincError::InvalidArgument(format!(
            "the target has {} values, the FFN output {}",
            target.len(),
            output.len()
        )));
    }
    let psnr = psnr_quantised(&output, target);
    let weight = layers[layer - 1].weight(); // [M, N]
    let pre = layers[layer - 1].forward(x)?; // [P, M]
    let units = x.dim(1)?;
    let mut psnr_drop = Vec::with_capacity(units);
    let mut change = Vec::with_capacity(units);
    for j in 0..units {
        let term = x.narrow(1, j, 1)?.matmul(&weight.narrow(1, j, 1)?.t()?)?; // [P, M]
        let ablated = downstream(model, layer, &(&pre - term)?)?;
        let values: Vec<f32> = ablated.flatten_all()?.to_vec1()?;
        psnr_drop.push(psnr - psnr_quantised(&values, target));
        let diff = (&acts.output - &ablated)?.sum(D::Minus1)?;
        change.push(diff.to_vec1()?);
    }
    Ok(FfnAblation {
        layer,
        psnr,
        psnr_drop,
        change,
    })
}

/// The output from the pre-activation `pre` of Linear layer `layer` (1-based) on.
fn downstream(model: &Ffn, layer: usize, pre: &Tensor) -> Result<Tensor> {
    let layers = model.layers();
    let act = model.config().activation;
    let mut z = pre.clone();
    for (i, next) in layers.iter().enumerate().skip(layer) {
        z = next.forward(&act.apply(i - 1, &z)?)?;
    }
    model.final_activation(&z)
}

/// How well one canvas layer predicts the ablation of its units.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    pub units: usize,
    /// Spearman, over units, of Σ|map| against the PSNR drop.
    pub spearman_total_psnr_drop: f64,
    /// Mean over units of the Pearson correlation, over pixels, of map and change (units whose
    /// map or change is constant are left out, as a correlation is not defined there).
    pub mean_pixel_pearson: f64,
}

impl Agreement {
    /// Compares `maps` (the summed maps of the ablated layer, one per unit) with `ablation`.
    pub fn of(maps: &dyn NeuronMaps, ablation: &FfnAblation) -> Result<Agreement> {
        let units = maps.num_neurons();
        if units != ablation.change.len() {
            return Err(XincError::InvalidArgument(format!(
                "{}: {units} maps for {} ablated units",
                maps.layer(),
                ablation.change.len()
            )));
        }
        let mut totals = Vec::with_capacity(units);
        let mut pixel = Vec::new();
        for (n, change) in ablation.change.iter().enumerate() {
            let map: Vec<f64> = maps.map(n).iter().map(|&v| f64::from(v)).collect();
            totals.push(map.iter().map(|v| v.abs()).sum::<f64>());
            let change: Vec<f64> = change.iter().map(|&v| f64::from(v)).collect();
            let r = pearson(&map, &change);
            if r.is_finite() {
                pixel.push(r);
            }
        }
        Ok(Agreement {
            units,
            spearman_total_psnr_drop: spearman(&totals, &ablation.psnr_drop),
            mean_pixel_pearson: mean(&pixel),
        })
    }
}

/// One row per (layer, method): `model`, `layer`, `method`, `units`, `spearman_total_psnr_drop`,
/// `mean_pixel_pearson`, and the layer's largest and mean PSNR drop.
pub fn agreement_table(
    model: &str,
    rows: &[(&FfnAblation, Method, Agreement)],
) -> Result<DataFrame> {
    let text = |f: &dyn Fn(&(&FfnAblation, Method, Agreement)) -> String| -> Vec<String> {
        rows.iter().map(f).collect()
    };
    let num = |f: &dyn Fn(&(&FfnAblation, Method, Agreement)) -> f64| -> Vec<f64> {
        rows.iter().map(f).collect()
    };
    df!(
        "model" => text(&|_| model.to_string()),
        "layer" => text(&|r| format!("layer{}", r.0.layer)),
        "method" => text(&|r| r.1.to_string()),
        "units" => rows.iter().map(|r| r.2.units as u32).collect::<Vec<_>>(),
        "spearman_total_psnr_drop" => num(&|r| r.2.spearman_total_psnr_drop),
        "mean_pixel_pearson" => num(&|r| r.2.mean_pixel_pearson),
        "max_psnr_drop" => num(&|r| r.0.psnr_drop.iter().cloned().fold(f64::NEG_INFINITY, f64::max)),
        "mean_psnr_drop" => num(&|r| mean(&r.0.psnr_drop)),
    )
    .map_err(|e| table_error("ablation", e))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;
    use crate::canvas::ffn::{ffn_canvas, FfnLayer};
    use crate::canvas::CanvasOptions;
    use crate::models::ffn::FfnConfig;

    /// A seeded 8-wide FFN of a 6×10 image, its forward pass, and a target.
    fn tiny() -> (Ffn, FfnActivations, Vec<f32>) {
        let config = FfnConfig::with_width(8, 6, 10);
        let init: HashMap<String, Tensor> = config
            .init_tensors(3, &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
        let model = Ffn::from_tensors(config, init, "init", &Device::Cpu).unwrap();
        let acts = model.forward_image(&Device::Cpu).unwrap();
        let target: Vec<f32> = (0..180).map(|i| (i % 7) as f32 / 7.0).collect();
        (model, acts, target)
    }

    #[test]
    fn on_the_last_layer_the_change_is_the_map_less_its_bias_share() {
        let (model, acts, target) = tiny();
        let ablation = ablate_ffn_layer(&model, &acts, 3, &target).unwrap();
        let canvas = ffn_canvas(
            &model,
            &acts,
            &[FfnLayer::Summed(3)],
            &CanvasOptions::default(),
        )
        .unwrap();
        let map = canvas.layer("layer3").unwrap();
        let bias: f32 = model.layers()[2]
            .bias()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let share = bias / 8.0;
        assert_eq!(ablation.change.len(), 8);
        for (j, change) in ablation.change.iter().enumerate() {
            for (p, (c, m)) in change.iter().zip(map.map(j)).enumerate() {
                assert!(
                    (c - (m - share)).abs() < 1e-5,
                    "unit {j} pixel {p}: {c} vs {m} − {share}"
                );
            }
        }
        // On the last layer both canvases are the same, so they agree equally.
        let exact = ffn_canvas(
            &model,
            &acts,
            &[FfnLayer::Summed(3)],
            &CanvasOptions {
                method: Method::Conservative,
                ..Default::default()
            },
        )
        .unwrap();
        let maps = |c: &crate::canvas::Canvas| {
            crate::canvas::maps::InMemoryMaps::new(std::sync::Arc::clone(&c.layers[0]))
        };
        let a = Agreement::of(&maps(&canvas), &ablation).unwrap();
        let b = Agreement::of(&maps(&exact), &ablation).unwrap();
        assert_eq!(a, b);
        assert!(a.mean_pixel_pearson > 0.999, "{a:?}");
    }

    #[test]
    fn an_inner_unit_is_removed_through_the_rest_of_the_network() {
        // Removing unit j of layer 2 by hand: zero that input column of the hidden activations
        // and rerun the last layer.
        let (model, acts, target) = tiny();
        let ablation = ablate_ffn_layer(&model, &acts, 2, &target).unwrap();
        let j = 5;
        let x = acts.layer_input(2).unwrap();
        let mask: Vec<f32> = (0..8).map(|i| if i == j { 0.0 } else { 1.0 }).collect();
        let mask = Tensor::from_vec(mask, (1, 8), &Device::Cpu).unwrap();
        let relu = |t: Tensor| t.relu().unwrap();
        let hidden = relu(
            model.layers()[1]
                .forward(&x.broadcast_mul(&mask).unwrap())
                .unwrap(),
        );
        let out = model.layers()[2].forward(&hidden).unwrap();
        let want: Vec<f32> = (&acts.output - &out)
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in ablation.change[j].iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let values: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        let drop = ablation.psnr - psnr_quantised(&values, &target);
        assert!((ablation.psnr_drop[j] - drop).abs() < 1e-9);
        assert!(ablate_ffn_layer(&model, &acts, 4, &target).is_err());
    }
}
