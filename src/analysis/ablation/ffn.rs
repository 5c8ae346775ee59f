//! Ablation of FFN units (see [`super`]).
//!
//! An FFN neuron of layer k is an input unit j of Linear layer k (the canvas's neuron). Removing
//! it sets that input to zero: the pre-activation of Linear k loses the rank-one term
//! `x_j · W_k[:, j]`, and the rest of the network runs as it is. The change is exact, with no
//! linearisation, for every layer. On the last layer the network after the unit is linear, so
//! the change equals the unit's map minus its share of the bias (a test).

use candle_core::{Module, Tensor, D};

use super::{Removal, Scene};
use crate::canvas::maps::NeuronMaps;
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnActivations};

/// The FFN's output `[P, 3]` with input unit `unit` of Linear layer `layer` (1-based) removed.
pub fn ffn_without_unit(
    model: &Ffn,
    acts: &FfnActivations,
    layer: usize,
    unit: usize,
) -> Result<Tensor> {
    let (x, pre) = layer_input(model, acts, layer)?;
    without_unit(model, layer, &x, &pre, unit)
}

/// Removes each input unit of Linear layer `layer` of `model` in turn (`acts`: the intact
/// forward pass over the image grid), measured against `scene` and the layer's `maps`.
pub fn ablate_ffn_layer(
    model: &Ffn,
    acts: &FfnActivations,
    layer: usize,
    scene: &Scene,
    maps: &[&dyn NeuronMaps],
) -> Result<Vec<Removal>> {
    let (x, pre) = layer_input(model, acts, layer)?;
    (0..x.dim(1)?)
        .map(|j| {
            let ablated = without_unit(model, layer, &x, &pre, j)?;
            let pred: Vec<f32> = ablated.flatten_all()?.to_vec1()?;
            let change: Vec<f32> = (&acts.output - &ablated)?.sum(D::Minus1)?.to_vec1()?;
            scene.removal(j, &pred, &change, maps)
        })
        .collect()
}

/// Linear layer `layer`'s input `[P, N]` and pre-activation `[P, M]`.
fn layer_input(model: &Ffn, acts: &FfnActivations, layer: usize) -> Result<(Tensor, Tensor)> {
    let layers = model.layers();
    if layer == 0 || layer > layers.len() {
        return Err(XincError::InvalidArgument(format!(
            "FFN layer {layer} does not exist (1..={})",
            layers.len()
        )));
    }
    let x = acts.layer_input(layer)?.clone();
    let pre = layers[layer - 1].forward(&x)?;
    Ok((x, pre))
}

fn without_unit(
    model: &Ffn,
    layer: usize,
    x: &Tensor,
    pre: &Tensor,
    unit: usize,
) -> Result<Tensor> {
    if unit >= x.dim(1)? {
        return Err(XincError::InvalidArgument(format!(
            "FFN layer {layer} has no unit {unit}"
        )));
    }
    let weight = model.layers()[layer - 1].weight(); // [M, N]
    let term = x
        .narrow(1, unit, 1)?
        .matmul(&weight.narrow(1, unit, 1)?.t()?)?; // [P, M]
    downstream(model, layer, &(pre - term)?)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use std::sync::Arc;

    use super::*;
    use crate::analysis::ablation::{agreement_table, LayerAblation, Layout};
    use crate::analysis::regions::Regions;
    use crate::canvas::ffn::{ffn_canvas, FfnLayer};
    use crate::canvas::maps::InMemoryMaps;
    use crate::canvas::{CanvasOptions, Method};
    use crate::models::ffn::FfnConfig;
    use crate::train::psnr_quantised;

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

    fn scene(acts: &FfnActivations, target: &[f32]) -> Scene {
        let mut regions = Regions::default();
        regions.push("left".into(), (0..60).filter(|p| p % 10 < 5).collect());
        regions.push("right".into(), (0..60).filter(|p| p % 10 >= 5).collect());
        let intact: Vec<f32> = acts.output.flatten_all().unwrap().to_vec1().unwrap();
        Scene::new(target.to_vec(), Layout::PixelMajor, regions, &intact).unwrap()
    }

    fn canvas(model: &Ffn, acts: &FfnActivations, layer: FfnLayer, method: Method) -> InMemoryMaps {
        let opts = CanvasOptions {
            method,
            ..Default::default()
        };
        let c = ffn_canvas(model, acts, &[layer], &opts).unwrap();
        InMemoryMaps::new(Arc::clone(&c.layers[0]))
    }

    #[test]
    fn on_the_last_layer_the_change_is_the_map_less_its_bias_share() {
        let (model, acts, target) = tiny();
        let map = canvas(&model, &acts, FfnLayer::Summed(3), Method::Official);
        let bias: f32 = model.layers()[2]
            .bias()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let share = bias / 8.0;
        for j in 0..8 {
            let ablated = ffn_without_unit(&model, &acts, 3, j).unwrap();
            let change: Vec<f32> = (&acts.output - &ablated)
                .unwrap()
                .sum(D::Minus1)
                .unwrap()
                .to_vec1()
                .unwrap();
            for (p, (c, m)) in change.iter().zip(map.map(j)).enumerate() {
                assert!(
                    (c - (m - share)).abs() < 1e-5,
                    "unit {j} pixel {p}: {c} vs {m} − {share}"
                );
            }
        }
        // On the last layer both canvases are the same, so they agree equally, and each map
        // correlates with its change (the bias share is a constant).
        let exact = canvas(&model, &acts, FfnLayer::Summed(3), Method::Conservative);
        let scene = scene(&acts, &target);
        let removals = ablate_ffn_layer(&model, &acts, 3, &scene, &[&map, &exact]).unwrap();
        let layer = LayerAblation {
            model: "tiny".into(),
            layer: "layer3".into(),
            methods: vec![Method::Official, Method::Conservative],
            objects: scene.object_names().to_vec(),
            neurons: 8,
            kernel_outputs: None,
            psnr: scene.psnr(),
            removals,
        };
        let (a, b) = (layer.agreement(0), layer.agreement(1));
        assert_eq!(a, b);
        assert!(a.mean_pixel_pearson > 0.999, "{a:?}");
        assert_eq!(a.units, 8);
        let table = agreement_table(&[layer.clone()]).unwrap();
        assert_eq!(table.height(), 2);
        assert_eq!(layer.neurons_table().unwrap().height(), 8);
        assert_eq!(layer.objects_table().unwrap().height(), 16);
    }

    #[test]
    fn an_inner_unit_is_removed_through_the_rest_of_the_network() {
        // Removing unit j of layer 2 by hand: zero that input column of the hidden activations
        // and rerun the last layer.
        let (model, acts, target) = tiny();
        let scene = scene(&acts, &target);
        let map = canvas(&model, &acts, FfnLayer::Summed(2), Method::Official);
        let removals = ablate_ffn_layer(&model, &acts, 2, &scene, &[&map]).unwrap();
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
        let got: Vec<f32> = (&acts.output - &ffn_without_unit(&model, &acts, 2, j).unwrap())
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // The PSNR drops, whole and per object, by hand.
        let values: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        let intact: Vec<f32> = acts.output.flatten_all().unwrap().to_vec1().unwrap();
        let drop = psnr_quantised(&intact, &target) - psnr_quantised(&values, &target);
        assert!((removals[j].psnr_drop - drop).abs() < 1e-9);
        let left = |v: &[f32]| -> Vec<f32> {
            (0..60)
                .filter(|p| p % 10 < 5)
                .flat_map(|p| v[3 * p..3 * p + 3].to_vec())
                .collect()
        };
        let object = psnr_quantised(&left(&intact), &left(&target))
            - psnr_quantised(&left(&values), &left(&target));
        assert!((removals[j].object_drops[0] - object).abs() < 1e-9);
        let m = map.map(j);
        let abs_left: f64 = (0..60)
            .filter(|p| p % 10 < 5)
            .map(|p| m[p].abs() as f64)
            .sum();
        assert!((removals[j].views[0].object_abs[0] - abs_left).abs() < 1e-9);
        assert!(ffn_without_unit(&model, &acts, 4, 0).is_err());
        assert!(ffn_without_unit(&model, &acts, 2, 8).is_err());
    }
}
