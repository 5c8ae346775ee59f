//! Criterion benchmarks of the FFN canvas at the paper's size (128×256, width 104).
//!
//! `maps_from_activations` is the counterpart of the official `compute_all_layer_mappings`, which
//! also starts from the forward pass's intermediate results (2.8 s single-threaded on the 2-core
//! reference machine, `../shared/golden/TIMINGS.md`).

use std::collections::HashMap;
use std::hint::black_box;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use xinc::canvas::ffn::{ffn_canvas, ffn_canvas_summary, FfnLayer, DEFAULT_TILE};
use xinc::models::ffn::{Ffn, FfnConfig};

fn paper_model() -> Ffn {
    let config = FfnConfig::paper(128, 256);
    let tensors: HashMap<_, _> = config
        .init_tensors(0, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    Ffn::from_tensors(config, tensors, "bench", &Device::Cpu).unwrap()
}

fn ffn_canvas_bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let model = paper_model();
    let layers = FfnLayer::all(model.config());
    let acts = model.forward_image(&dev).unwrap();
    let mut group = c.benchmark_group("ffn_canvas_128x256_w104");
    group.sample_size(30);
    group.bench_function("maps_from_activations", |b| {
        b.iter(|| black_box(ffn_canvas(&model, &acts, &layers).unwrap()))
    });
    group.bench_function("forward_pass", |b| {
        b.iter(|| black_box(model.forward_image(&dev).unwrap()))
    });
    group.bench_function("forward_and_maps", |b| {
        b.iter(|| {
            let acts = model.forward_image(&dev).unwrap();
            black_box(ffn_canvas(&model, &acts, &layers).unwrap())
        })
    });
    group.bench_function("streamed_summary", |b| {
        b.iter(|| black_box(ffn_canvas_summary(&model, &dev, &layers, DEFAULT_TILE).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, ffn_canvas_bench);
criterion_main!(benches);
