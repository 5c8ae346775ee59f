//! The conservative canvas on the golden models: for every layer of the official FFN checkpoint
//! (`ffn_0005`) and of the official NeRV (`nerv_synth`, frames 0 and 3), the maps summed over the
//! neurons give the model's output (NeRV: before OutImg), channel by channel and summed over the
//! channels, within 1e-4 of its largest value.

mod common;

use candle_core::Device;
use common::*;
use xinc::canvas::ffn::{ffn_canvas, ffn_canvas_summary, FfnLayer};
use xinc::canvas::nerv::{nerv_canvas_summary, NervFrameData, NervLayer};
use xinc::canvas::{CanvasOptions, LayerSummary, Method};
use xinc::models::ffn::{Ffn, FfnConfig};
use xinc::models::nerv::{Nerv, NervConfig};

const ARGS: &str = "--conv_type convnext pshuffel --act gelu --norm none --crop_list -1 --resize_list 128_256 \
    --embed pe_1.25_80 --fc_hw 8_16 --dec_strds 4 2 2 --ks 0_3_3 --reduce 1.2 --skip_mssim --modelsize 1.0 \
    -e 100 --lower_width 6 -b 2 --lr 0.001 --loss L2";

/// Largest |Σ_neurons − output| over the largest |output|, for `[C…, P]` sums against `want`.
fn conservation_error(sum: &[f64], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
    let err = sum
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (s, w)| m.max((s - f64::from(*w)).abs()));
    err / scale
}

/// `sum_neurons` (`[K, rest…, P]` of a NeRV block, `[rest…, P]` otherwise) summed over `K`.
fn over_kernels(s: &LayerSummary, want_len: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; want_len];
    for chunk in s.sum_neurons.chunks_exact(want_len) {
        for (o, &v) in out.iter_mut().zip(chunk) {
            *o += f64::from(v);
        }
    }
    out
}

#[test]
fn every_ffn_layer_of_the_official_checkpoint_conserves_the_output() {
    let Some(dir) = golden_dir("conservative_golden::ffn") else {
        return;
    };
    let (h, w) = (128, 256);
    let model = Ffn::from_tensors(
        FfnConfig::paper(h, w),
        load(dir.join("ffn_0005/weights.safetensors")),
        "weights.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let acts = model.forward_image(&Device::Cpu).unwrap();
    let conservative = CanvasOptions::from(Method::Conservative);
    let layers = FfnLayer::all(model.config(), Method::Conservative);
    let canvas = ffn_canvas(&model, &acts, &layers, &conservative).unwrap();
    let p = h * w;
    let summed: Vec<f32> = (0..p)
        .map(|o| (0..3).map(|c| canvas.output[c * p + o]).sum())
        .collect();
    let streamed = ffn_canvas_summary(&model, &Device::Cpu, &layers, &conservative).unwrap();
    for (maps, s) in canvas.layers.iter().zip(&streamed.layers) {
        let s2 = maps.summarise();
        let want: &[f32] = if maps.neuron_shape.len() == 2 {
            &canvas.output
        } else {
            &summed
        };
        for sums in [&s2, s] {
            let err = conservation_error(&over_kernels(sums, want.len()), want);
            println!("FFN {}: conservation error {err:.2e}", maps.layer);
            assert!(err <= 1e-4, "FFN {}: {err}", maps.layer);
        }
    }
    // The official inner layers are not a decomposition of the output (spec A.3, A.4).
    let official = ffn_canvas(
        &model,
        &acts,
        &[FfnLayer::Summed(2)],
        &CanvasOptions::default(),
    )
    .unwrap();
    let err = conservation_error(&over_kernels(&official.layers[0].summarise(), p), &summed);
    assert!(err > 0.1, "official layer 2 unexpectedly conserves: {err}");
}

#[test]
fn every_nerv_layer_of_the_official_model_conserves_the_output() {
    let Some(dir) = golden_dir("conservative_golden::nerv") else {
        return;
    };
    let config = NervConfig::from_official_args(ARGS, 8).unwrap();
    let model = Nerv::from_tensors(
        config,
        load(dir.join("nerv_synth/weights.safetensors")),
        "weights.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let conservative = CanvasOptions::from(Method::Conservative);
    let summary = |frame: &NervFrameData, layer: NervLayer| -> LayerSummary {
        nerv_canvas_summary(frame, &[layer], &Device::Cpu, &conservative)
            .unwrap()
            .layers
            .remove(0)
    };
    for f in [0usize, 3] {
        let frame =
            NervFrameData::new(&model, &model.forward_frame(f, &Device::Cpu).unwrap()).unwrap();
        let p = frame.height * frame.width;
        let summed: Vec<f32> = (0..p)
            .map(|o| (0..3).map(|c| frame.output[c * p + o]).sum())
            .collect();
        for index in (1..=3).rev() {
            // Per channel on the first frame only (the summed maps are their sum).
            let variants: &[NervLayer] = if f == 0 {
                &[NervLayer::block(index), NervLayer::PerChannel(index)]
            } else {
                &[NervLayer::block(index)]
            };
            for &layer in variants {
                let per_channel = layer == NervLayer::PerChannel(index);
                let s = summary(&frame, layer);
                let want: &[f32] = if per_channel { &frame.output } else { &summed };
                let err = conservation_error(&over_kernels(&s, want.len()), want);
                println!("NeRV frame {f} {}: conservation error {err:.2e}", s.layer);
                assert!(err <= 1e-4, "frame {f} {}: {err}", s.layer);
            }
        }
        // The head: per (input, channel) maps, exact in both methods.
        let s = summary(&frame, NervLayer::Head);
        let err = conservation_error(&over_kernels(&s, 3 * p), &frame.output);
        assert!(err <= 1e-4, "frame {f} head: {err}");
    }
}
