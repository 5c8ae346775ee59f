//! Criterion benchmarks of the NeRV canvas and training step at the golden configuration
//! (`nerv_synth`: the paper's 978,557-parameter model, 128×256), with the bundled checkpoint of
//! that configuration, frame 0.
//!
//! - `summary/<layer>`: the streamed per-kernel reductions (`sum_hw`, `abssum_hw`, the sum over
//!   input channels), all input channels; `summary/block<n>_and_pre_gelu`: a block's output and
//!   pre-GELU layers in one call (what the official block call computes), which shares their
//!   conv planes;
//! - `maps/<layer>`: the full maps in memory (block 1: 2.4 GB), the counterpart of the official
//!   `compute_*_mappings` (single thread on the 2-core reference machine: head 0.007 s, block 3
//!   1.37 s, block 2 1.84 s, block 1 14.4 s, `../shared/golden/TIMINGS.md`);
//! - `conservative_summary/<layer>`, `conservative_maps/<layer>`: the same for the conservative
//!   canvas (`Method::Conservative`: exact back-propagation through the real downstream blocks),
//!   block outputs only (the head and the pre-GELU layers are the official ones);
//!   `conservative_summary_rgb/<layer>` adds the per-output-channel reductions;
//! - `forward`: one frame's forward pass (the fused CPU network); `forward_candle`: the same with
//!   candle's operations;
//! - `step`: one Adam step of the fused CPU trainer, batch 2;
//! - `train_10_steps`: 10 Adam steps (batch 2) on 4 frames plus one evaluation, from a fresh
//!   seeded model (divide by 10 for a step).

use std::hint::black_box;
use std::path::Path;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use xinc::canvas::nerv::{
    nerv_canvas_summary, nerv_layer_maps, LinearisedNerv, NervFrameData, NervLayer,
};
use xinc::canvas::{CanvasOptions, Method};
use xinc::models::nerv::{Nerv, NervConfig};
use xinc::models::ModelDir;
use xinc::study::{Study, BUNDLED_NERV};
use xinc::train::loss::Loss;
use xinc::train::nerv::{train_nerv, NervTrainParams};
use xinc::train::nerv_fused::FusedNervTrainer;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn bundled_model() -> Nerv {
    ModelDir::new(repo().join(BUNDLED_NERV))
        .load_nerv(&Device::Cpu)
        .unwrap()
        .0
}

fn nerv_canvas_bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let model = bundled_model();
    let frame = NervFrameData::new(&model, &model.forward_frame(0, &dev).unwrap()).unwrap();
    let mut group = c.benchmark_group("nerv_canvas_128x256");
    group.sample_size(10);
    group.bench_function("forward", |b| {
        b.iter(|| black_box(model.forward_frame(0, &dev).unwrap()))
    });
    let embedding = model.embed(&[0.0], &dev).unwrap();
    group.bench_function("forward_candle", |b| {
        b.iter(|| {
            black_box(
                model
                    .decode_with_candle(embedding.clone(), vec![0.0], false)
                    .unwrap(),
            )
        })
    });
    let (official, conservative) = (
        CanvasOptions::default(),
        CanvasOptions::from(Method::Conservative),
    );
    for layer in NervLayer::all(model.blocks().len(), Method::Official) {
        group.bench_function(format!("summary/{layer}"), |b| {
            b.iter(|| black_box(nerv_canvas_summary(&frame, &[layer], &dev, &official).unwrap()))
        });
        let data = frame.layer(layer).unwrap();
        group.bench_function(format!("maps/{layer}"), |b| {
            b.iter(|| black_box(nerv_layer_maps(&data, layer, 0..data.in_channels).unwrap()))
        });
        let Some(index) = layer.index().filter(|_| layer.is_block_output()) else {
            continue;
        };
        // What the official block call computes: the output and the pre-GELU maps, in one pass.
        let both = [
            layer,
            NervLayer::Block {
                index,
                pre_gelu: true,
            },
        ];
        group.bench_function(format!("summary/{layer}_and_pre_gelu"), |b| {
            b.iter(|| black_box(nerv_canvas_summary(&frame, &both, &dev, &official).unwrap()))
        });
        // The summed maps, then the summed and the per-channel ones (as `--rgb` did).
        let summary = |layers: &[NervLayer]| {
            nerv_canvas_summary(&frame, layers, &dev, &conservative).unwrap()
        };
        group.bench_function(format!("conservative_summary/{layer}"), |b| {
            b.iter(|| black_box(summary(&[layer])))
        });
        group.bench_function(format!("conservative_summary_rgb/{layer}"), |b| {
            b.iter(|| black_box(summary(&[layer, NervLayer::PerChannel(index)])))
        });
        group.bench_function(format!("conservative_maps/{layer}"), |b| {
            b.iter(|| {
                let lin = LinearisedNerv::new(&frame).unwrap();
                black_box(lin.layer_maps(&frame, layer, 0..data.in_channels).unwrap())
            })
        });
    }
    group.finish();
}

fn nerv_train_bench(c: &mut Criterion) {
    let study = Study::bundled(repo()).unwrap();
    let frames: Vec<Vec<f32>> = (0..4).map(|f| study.nerv_target(f).unwrap()).collect();
    let config = NervConfig {
        frames: frames.len(),
        ..NervConfig::default()
    };
    let params = NervTrainParams {
        epochs: 5,
        eval_every: 5,
        progress: false,
        ..NervTrainParams::default()
    };
    let mut group = c.benchmark_group("nerv_train_128x256");
    group.sample_size(10);
    // One Adam step of the fused CPU trainer, batch 2 (frames 0 and 1).
    let model = Nerv::from_tensors(
        config.clone(),
        bundled_model().named_tensors().into_iter().collect(),
        "bundled",
        &Device::Cpu,
    )
    .unwrap();
    let mut trainer = FusedNervTrainer::fresh(&model, &Loss::default())
        .unwrap()
        .unwrap();
    let embedding = model.embed(&[0.0, 0.25], &Device::Cpu).unwrap();
    let embedding = embedding.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let target: Vec<f32> = frames[..2].concat();
    group.bench_function("step", |b| {
        b.iter(|| black_box(trainer.step(&embedding, &target, 1e-4)))
    });
    group.bench_function("train_10_steps", |b| {
        b.iter(|| {
            black_box(
                train_nerv(config.clone(), &frames, &params, None, false, &Device::Cpu).unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, nerv_canvas_bench, nerv_train_bench);
criterion_main!(benches);
