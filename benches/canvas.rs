//! Criterion benchmarks of the FFN canvas and training step at the golden configuration
//! (`ffn_0005`: 128×256, width 104), with the bundled checkpoint of that configuration.
//!
//! - `maps/<layer>` and `maps/all_layers`: the full maps from the forward pass's activations, the
//!   counterpart of the official `compute_all_layer_mappings` (2.84 s single-threaded on the
//!   2-core reference machine, `../shared/golden/TIMINGS.md`), which also starts from the
//!   forward pass's intermediate results;
//! - `maps/all_layers_into_reused_buffers`: the same into the buffers of the previous call
//!   (`ffn_canvas_into`), without faulting in 95 MB of fresh pages;
//! - `forward_and_maps`: the same including the forward pass;
//! - `streamed_summary`: per-neuron reductions without holding the canvas;
//! - `conservative_maps/<layer>`, `conservative_maps/all_layers` (the official layer set),
//!   `conservative_streamed_summary` (every conservative layer, per channel included): the same
//!   for the conservative canvas (`Method::Conservative`, rescale-rule back-propagation);
//! - `train_20_steps`: 20 full-batch Adam steps of the fused CPU trainer plus one evaluation,
//!   from a fresh seeded model (divide by 20 for a step).

use std::hint::black_box;
use std::path::Path;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use xinc::canvas::ffn::{ffn_canvas, ffn_canvas_into, ffn_canvas_summary, FfnLayer};
use xinc::canvas::{CanvasOptions, Method};
use xinc::data::image::load_rgb_resized;
use xinc::models::ffn::Ffn;
use xinc::models::ModelDir;
use xinc::study::BUNDLED_FFN;
use xinc::train::ffn::{train_ffn, FfnTrainParams};

fn bundled_model() -> Ffn {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_FFN);
    ModelDir::new(dir).load_ffn(&Device::Cpu).unwrap().0
}

fn ffn_canvas_bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let model = bundled_model();
    let layers = FfnLayer::all(model.config(), Method::Official);
    let (official, conservative) = (
        CanvasOptions::default(),
        CanvasOptions::from(Method::Conservative),
    );
    let acts = model.forward_image(&dev).unwrap();
    let mut group = c.benchmark_group("ffn_canvas_128x256_w104");
    group.sample_size(30);
    for &layer in &layers {
        group.bench_function(format!("maps/{layer}"), |b| {
            b.iter(|| black_box(ffn_canvas(&model, &acts, &[layer], &official).unwrap()))
        });
    }
    group.bench_function("maps/all_layers", |b| {
        b.iter(|| black_box(ffn_canvas(&model, &acts, &layers, &official).unwrap()))
    });
    let mut canvas = ffn_canvas(&model, &acts, &layers, &official).unwrap();
    group.bench_function("maps/all_layers_into_reused_buffers", |b| {
        b.iter(|| {
            ffn_canvas_into(&model, &acts, &layers, &official, black_box(&mut canvas)).unwrap()
        })
    });
    group.bench_function("forward_pass", |b| {
        b.iter(|| black_box(model.forward_image(&dev).unwrap()))
    });
    group.bench_function("forward_and_maps", |b| {
        b.iter(|| {
            let acts = model.forward_image(&dev).unwrap();
            black_box(ffn_canvas(&model, &acts, &layers, &official).unwrap())
        })
    });
    group.bench_function("streamed_summary", |b| {
        b.iter(|| black_box(ffn_canvas_summary(&model, &dev, &layers, &official).unwrap()))
    });
    let exact = FfnLayer::all(model.config(), Method::Conservative);
    for &layer in &exact {
        group.bench_function(format!("conservative_maps/{layer}"), |b| {
            b.iter(|| black_box(ffn_canvas(&model, &acts, &[layer], &conservative).unwrap()))
        });
    }
    group.bench_function("conservative_maps/all_layers", |b| {
        b.iter(|| black_box(ffn_canvas(&model, &acts, &layers, &conservative).unwrap()))
    });
    group.bench_function("conservative_streamed_summary", |b| {
        b.iter(|| black_box(ffn_canvas_summary(&model, &dev, &exact, &conservative).unwrap()))
    });
    group.finish();
}

fn ffn_train_bench(c: &mut Criterion) {
    let model = bundled_model();
    let config = model.config().clone();
    let image = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/cityscapes_vps/val/img_all/frankfurt_000000_001736_leftImg8bit.png");
    let target = load_rgb_resized(&image, config.height(), config.width()).unwrap();
    let params = FfnTrainParams {
        iters: 20,
        eval_every: 20,
        progress: false,
        ..FfnTrainParams::default()
    };
    let mut group = c.benchmark_group("ffn_train_128x256_w104");
    group.sample_size(10);
    group.bench_function("train_20_steps", |b| {
        b.iter(|| black_box(train_ffn(config.clone(), &target, &params, &Device::Cpu).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, ffn_canvas_bench, ffn_train_bench);
criterion_main!(benches);
