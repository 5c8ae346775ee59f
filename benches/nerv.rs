//! Criterion benchmarks of the NeRV canvas, per layer, for the paper's 978,557-parameter model at
//! 128×256 (one frame, full input-channel range, streamed summaries), and of one training step.
//! The official code (single thread, this 2-core machine, `../shared/golden/TIMINGS.md`) takes
//! 0.007 s for the head, 1.37 s for block 3, 1.84 s for block 2 and 14.4 s for block 1.

use std::hint::black_box;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use xinc::canvas::nerv::{nerv_canvas_summary, NervFrameData, NervLayer};
use xinc::models::nerv::{Nerv, NervConfig};

fn paper_model() -> Nerv {
    let config = NervConfig::default();
    let tensors = config
        .weight_specs()
        .into_iter()
        .enumerate()
        .map(|(n, spec)| {
            let len: usize = spec.shape.iter().product();
            let values: Vec<f32> = (0..len)
                .map(|i| 0.05 * ((1000 * n + i) as f32 * 0.618).sin())
                .collect();
            (
                spec.name,
                candle_core::Tensor::from_vec(values, spec.shape, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    Nerv::from_tensors(config, tensors, "bench", &Device::Cpu).unwrap()
}

fn nerv_canvas_bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let model = paper_model();
    let frame = NervFrameData::new(&model, &model.forward_frame(0, &dev).unwrap()).unwrap();
    let mut group = c.benchmark_group("nerv_canvas_128x256_summary");
    group.sample_size(10);
    group.bench_function("forward", |b| {
        b.iter(|| black_box(model.forward_frame(0, &dev).unwrap()))
    });
    for layer in ["head", "block3", "block2", "block1", "block1_pre_gelu"] {
        let l: NervLayer = layer.parse().unwrap();
        group.bench_function(layer, |b| {
            b.iter(|| black_box(nerv_canvas_summary(&frame, &[l], None).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, nerv_canvas_bench);
criterion_main!(benches);
