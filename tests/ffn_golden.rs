//! Parity with the official XINC code on the released FFN checkpoint (`../shared/golden/ffn_0005`):
//! forward pass, every stored reduction of the canvas, and the decomposition checks of spec A.13.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::*;
use xinc::canvas::ffn::{
    ffn_canvas, ffn_canvas_summary, unit_pair_map, unit_pair_reductions, FfnLayer,
};
use xinc::canvas::{Canvas, CanvasOptions, Method};
use xinc::models::ffn::{Ffn, FfnActivations, FfnConfig};

const H: usize = 128;
const W: usize = 256;
const P: usize = H * W;

struct Golden {
    model: Ffn,
    acts: FfnActivations,
    io: HashMap<String, Tensor>,
    maps: HashMap<String, Tensor>,
}

fn golden(test: &str) -> Option<Golden> {
    let dir = golden_dir(test)?.join("ffn_0005");
    let weights = load(dir.join("weights.safetensors"));
    let model = Ffn::from_tensors(
        FfnConfig::paper(H, W),
        weights,
        "weights.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let acts = model.forward_image(&Device::Cpu).unwrap();
    Some(Golden {
        model,
        acts,
        io: load(dir.join("io.safetensors")),
        maps: load(dir.join("maps.safetensors")),
    })
}

/// Columns `idx` of a `[P, F]` activation.
fn columns(t: &Tensor, idx: &[i64]) -> Vec<f32> {
    let f = t.dims()[1];
    let all = flat(t);
    (0..P)
        .flat_map(|p| idx.iter().map(move |&i| (p, i as usize)))
        .map(|(p, i)| all[p * f + i])
        .collect()
}

/// A `[P, F]` activation on the grid4 subset, as `[32, 64, F]`.
fn act_grid4(t: &Tensor) -> Vec<f32> {
    let f = t.dims()[1];
    let all = flat(t);
    (0..H)
        .step_by(4)
        .flat_map(|h| (0..W).step_by(4).map(move |w| h * W + w))
        .flat_map(|p| all[p * f..(p + 1) * f].to_vec())
        .collect()
}

#[test]
fn forward_pass_matches_the_official_intermediates() {
    let Some(g) = golden("forward_pass_matches_the_official_intermediates") else {
        return;
    };
    assert_eq!(
        flat(&g.acts.coords),
        flat(&g.io["coords"]),
        "coordinates must be bit-exact"
    );
    let checks: [(&str, &Tensor); 3] = [
        ("fourier_features", &g.acts.features),
        ("layer1_out", &g.acts.hidden[0]),
        ("layer2_out", &g.acts.hidden[1]),
    ];
    for (name, ours) in checks {
        let err = max_abs_diff(&act_grid4(ours), &flat(&g.io[&format!("{name}.grid4")]));
        assert!(err < 1e-5, "{name}.grid4: max abs diff {err}");
        let idx = g.io[&format!("{name}.sel_index")].to_vec1::<i64>().unwrap();
        let err = max_abs_diff(&columns(ours, &idx), &flat(&g.io[&format!("{name}.sel")]));
        assert!(err < 1e-5, "{name}.sel: max abs diff {err}");
    }
    let err = max_abs_diff(&flat(&g.acts.output), &flat(&g.io["predicted"]));
    assert!(err < 1e-5, "predicted: max abs diff {err}");
    // Spec A.13 point values.
    let y = flat(&g.acts.output);
    for (p, expect) in [
        (0, [0.11215f32, 0.13677, 0.10698]),
        (64 * W + 128, [0.49979, 0.50889, 0.46708]),
    ] {
        for c in 0..3 {
            assert!(
                (y[3 * p + c] - expect[c]).abs() < 1e-4,
                "y({p})[{c}] = {}",
                y[3 * p + c]
            );
        }
    }
}

fn official_name(layer: &str) -> String {
    match layer.strip_suffix("_rgb") {
        Some(l) => format!("{}_output_contrib_to_rgb", l.replace("layer", "layer_")),
        None => format!("{}_output_contrib", layer.replace("layer", "layer_")),
    }
}

fn check_canvas_maps(g: &Golden, canvas: &Canvas) {
    for map in &canvas.layers {
        let name = official_name(&map.layer);
        let per_unit: usize = map.neuron_shape[1..].iter().product();
        // Full-resolution maps of the selected units.
        let sel = g.maps[&format!("{name}.sel_index")]
            .to_vec1::<i64>()
            .unwrap();
        let ours: Vec<f32> = sel
            .iter()
            .flat_map(|&i| {
                (0..per_unit).flat_map(move |c| map.map(i as usize * per_unit + c).to_vec())
            })
            .collect();
        let err = max_abs_diff(&ours, &flat(&g.maps[&format!("{name}.sel")]));
        assert!(err < 1e-5, "{name}.sel: max abs diff {err}");
        let err = max_abs_diff(
            &grid(&map.data, H, W, 4),
            &flat(&g.maps[&format!("{name}.grid4")]),
        );
        assert!(err < 1e-5, "{name}.grid4: max abs diff {err}");
        let s = map.summarise();
        for (key, ours) in [
            ("sum_hw", &s.sum_hw),
            ("abssum_hw", &s.abssum_hw),
            ("sum_f", &s.sum_neurons),
        ] {
            let err = max_rel_diff(ours, &flat(&g.maps[&format!("{name}.{key}")]));
            assert!(err < 1e-4, "{name}.{key}: max relative diff {err}");
        }
    }
}

#[test]
fn canvas_matches_every_official_map_reduction() {
    let Some(g) = golden("canvas_matches_every_official_map_reduction") else {
        return;
    };
    let layers = FfnLayer::all(g.model.config(), Method::Official);
    let canvas = ffn_canvas(&g.model, &g.acts, &layers, &CanvasOptions::default()).unwrap();
    assert_eq!(canvas.layers.len(), 4);
    check_canvas_maps(&g, &canvas);
}

#[test]
fn streamed_summary_matches_the_official_reductions() {
    let Some(g) = golden("streamed_summary_matches_the_official_reductions") else {
        return;
    };
    let summary = ffn_canvas_summary(
        &g.model,
        &Device::Cpu,
        &FfnLayer::all(g.model.config(), Method::Official),
        &CanvasOptions::default(),
    )
    .unwrap();
    for s in &summary.layers {
        let name = official_name(&s.layer);
        for (key, ours) in [
            ("sum_hw", &s.sum_hw),
            ("abssum_hw", &s.abssum_hw),
            ("sum_f", &s.sum_neurons),
        ] {
            let err = max_rel_diff(ours, &flat(&g.maps[&format!("{name}.{key}")]));
            assert!(err < 1e-4, "{name}.{key}: max relative diff {err}");
        }
    }
    let err = max_abs_diff(
        &summary.output,
        &flat(&g.maps["layer_3_output_contrib_to_rgb.sum_f"]),
    );
    assert!(err < 1e-5, "output vs official prediction: {err}");
}

#[test]
fn unit_pair_tensors_match_without_being_materialised() {
    let Some(g) = golden("unit_pair_tensors_match_without_being_materialised") else {
        return;
    };
    for k in [1usize, 2] {
        let name = format!("layer_{k}_output_contrib_to_layer{}infeat", k + 1);
        let (sum, abs) = unit_pair_reductions(&g.model, &g.acts, k).unwrap();
        // These sums cancel (sin/cos features): their error is relative to the summed magnitudes.
        let gold = flat(&g.maps[&format!("{name}.sum_hw")]);
        let err = sum
            .iter()
            .zip(&gold)
            .zip(&abs)
            .map(|((a, b), s)| (a - b).abs() / b.abs().max(*s))
            .fold(0.0, f32::max);
        assert!(err < 1e-4, "{name}.sum_hw: {err}");
        let err = max_rel_diff(&abs, &flat(&g.maps[&format!("{name}.abssum_hw")]));
        assert!(err < 1e-4, "{name}.abssum_hw: {err}");
        // The first four inputs' maps on the grid8 subset, [4, 104, 16, 32].
        let ours: Vec<f32> = (0..4)
            .flat_map(|i| (0..104).map(move |j| (i, j)))
            .flat_map(|(i, j)| grid(&unit_pair_map(&g.model, &g.acts, k, i, j).unwrap(), H, W, 8))
            .collect();
        let err = max_abs_diff(&ours, &flat(&g.maps[&format!("{name}.first4.grid8")]));
        assert!(err < 1e-5, "{name}.first4.grid8: {err}");
        // Summed over inputs: the next layer's pre-activation (whose ReLU is the next activation).
        let pre = g.model.layers()[k - 1].forward_pre(&g.acts, k);
        let err = max_abs_diff(
            &grid(&pre, H, W, 4),
            &flat(&g.maps[&format!("{name}.sum_f.grid4")]),
        );
        assert!(err < 1e-5, "{name}.sum_f.grid4: {err}");
    }
}

/// The pre-activation of a Linear layer as `[fan_out, P]`.
trait PreActivation {
    fn forward_pre(&self, acts: &FfnActivations, k: usize) -> Vec<f32>;
}

impl PreActivation for candle_nn::Linear {
    fn forward_pre(&self, acts: &FfnActivations, k: usize) -> Vec<f32> {
        use candle_core::Module;
        let z = self.forward(acts.layer_input(k).unwrap()).unwrap();
        flat(&z.t().unwrap().contiguous().unwrap())
    }
}

#[test]
fn canvas_statistics_match_spec_a13() {
    let Some(g) = golden("canvas_statistics_match_spec_a13") else {
        return;
    };
    let layers = FfnLayer::all(g.model.config(), Method::Official);
    let canvas = ffn_canvas(&g.model, &g.acts, &layers, &CanvasOptions::default()).unwrap();
    // (layer, all-zero neurons, Σ|C|) from spec A.13.
    for (layer, dead, abs_total) in [
        ("layer1", 1, 911_235.0f64),
        ("layer2", 47, 189_909.0),
        ("layer3", 0, 37_905.7),
    ] {
        let s = canvas.layer(layer).unwrap().summarise();
        assert_eq!(
            s.abssum_hw.iter().filter(|&&v| v == 0.0).count(),
            dead,
            "{layer} dead neurons"
        );
        let total: f64 = s.abssum_hw.iter().map(|&v| v as f64).sum();
        assert!(
            (total - abs_total).abs() / abs_total < 1e-4,
            "{layer} Σ|C| = {total}"
        );
    }
    let l3 = canvas.layer("layer3").unwrap();
    assert!((l3.map(0)[0] - -0.004021).abs() < 1e-6);
    assert!((l3.map(5)[64 * W + 128] - -0.008581).abs() < 1e-6);
    // Conservation: the per-channel layer-3 maps sum to the prediction.
    let rgb = canvas.layer("layer3_rgb").unwrap().summarise();
    let err = max_abs_diff(&rgb.sum_neurons, &canvas.output);
    assert!(err < 1e-5, "conservation error {err}");
}
