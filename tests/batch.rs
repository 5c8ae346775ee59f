//! `xinc batch` end to end on three generated clips (two Cityscapes-VPS roots, one VIPSeg root): every partition written once, a second run skips every task, a killed
//! task (record and one partition gone, a stray temporary file left) completes on rerun with no
//! duplicate, and the lazy queries see every video.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use xinc::data::panoptic::DatasetFormat;
use xinc::data::synth::dataset::{generate, SynthParams};
use xinc::dataset::{run_task, BatchConfig, Stats};
use xinc::polars::prelude::*;

const ARGS: &str = "--embed pe_1.25_8 --fc_hw 2_4 --dec_strds 4 2 2 --ks 0_3_3 --reduce 1.2 \
                    --modelsize 0.003 --lower_width 4";

fn clips(dir: &Path) -> PathBuf {
    for (seed, video) in [(1, "0001"), (2, "0002")] {
        let city = dir.join(format!("city{seed}"));
        let params = SynthParams {
            format: DatasetFormat::CityscapesVps,
            frames: 6,
            size: [64, 128],
            seed,
            vector_flow: false,
            video: Some(video.into()),
        };
        generate(&params, &city).unwrap();
    }
    let vip = dir.join("vipseg");
    let params = SynthParams {
        format: DatasetFormat::Vipseg,
        frames: 6,
        size: [64, 128],
        seed: 3,
        vector_flow: false,
        video: None,
    };
    generate(&params, &vip).unwrap();
    let manifest = dir.join("manifest.txt");
    std::fs::write(
        &manifest,
        "# two Cityscapes-VPS clips and one VIPSeg clip\ncity1\ncity2#0002\n\nvipseg\n",
    )
    .unwrap();
    manifest
}

fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn batch_tasks_are_idempotent_and_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = clips(dir.path());
    let out = dir.path().join("stats");
    let mut config = BatchConfig::default();
    config.nerv.args = ARGS.into();
    config.nerv.epochs = 2;
    config.nerv.eval_every = 1;
    config.motion_frames = vec![1];
    config.groups = 3;
    let dev = Device::Cpu;
    let mut videos = BTreeSet::new();
    for i in 0..3 {
        let r = run_task(&manifest, i, &out, &config, &dev).unwrap();
        assert!(!r.skipped && r.files > 0 && r.bytes > 0, "{r:?}");
        videos.insert((r.dataset, r.video));
    }
    assert_eq!(videos.len(), 3);
    let first = parquet_files(&out);
    let neurons: Vec<_> = first
        .iter()
        .filter(|p| p.file_name().unwrap() == "part-0.parquet")
        .collect();
    // head, block3 (the paper's layers) and blocks 2, 1 (inner-block table) for each video.
    assert_eq!(neurons.len(), 3 * 4, "{neurons:?}");
    for p in &neurons {
        let s = p.to_string_lossy();
        assert!(
            s.contains("/dataset=") && s.contains("/layer=") && s.contains("/video="),
            "{s}"
        );
    }

    // The causal tests per video: the ablation of the head and the last block (both canvases),
    // and the pruning of the head.
    let named = |name: &str, layer: &str| {
        first
            .iter()
            .filter(|p| p.file_name().unwrap() == name)
            .filter(|p| p.to_string_lossy().contains(&format!("/layer={layer}/")))
            .count()
    };
    for layer in ["head", "block3"] {
        assert_eq!(named("ablation.parquet", layer), 3, "{layer}");
        assert_eq!(named("ablation_neurons.parquet", layer), 3, "{layer}");
    }
    assert_eq!(named("pruning.parquet", "head"), 3);

    // A second run skips every task and writes nothing.
    for i in 0..3 {
        assert!(run_task(&manifest, i, &out, &config, &dev).unwrap().skipped);
    }
    assert_eq!(parquet_files(&out), first);

    // A task killed mid-write: its record and one partition are gone, a temporary file is left.
    let (dataset, video) = videos.iter().next().unwrap().clone();
    std::fs::remove_file(out.join(format!("_done/dataset={dataset}/video={video}.json"))).unwrap();
    let victim = neurons
        .iter()
        .find(|p| p.to_string_lossy().contains(&format!("video={video}/")))
        .unwrap();
    std::fs::remove_file(victim).unwrap();
    let stray = victim.with_file_name(".part-0.parquet.4242.tmp");
    std::fs::write(&stray, b"partial").unwrap();
    let index = match video.as_str() {
        "0001" => 0,
        "0002" => 1,
        _ => 2,
    };
    let r = run_task(&manifest, index, &out, &config, &dev).unwrap();
    assert!(!r.skipped);
    assert_eq!(
        parquet_files(&out),
        first,
        "same partitions, none missing or duplicated"
    );

    // Lazy queries over every partition.
    let all = Stats::scan(&out).unwrap().collect().unwrap();
    let n_videos = all.column("video").unwrap().n_unique().unwrap();
    assert_eq!(n_videos, 3);
    let head_only = Stats::scan(&out)
        .unwrap()
        .filter(col("layer").eq(lit("head")))
        .select([col("video"), col("abs_sum")])
        .collect()
        .unwrap();
    assert!(head_only.height() > 0 && head_only.width() == 2);
    let stats = Stats::new(&out);
    let headline = stats.headline_by_layer().unwrap();
    let videos_col = headline.column("videos").unwrap().u32().unwrap();
    assert!((0..videos_col.len()).all(|i| videos_col.get(i).is_some_and(|v| v >= 1)));
    assert!(headline.column("dead_fraction_ci95").is_ok());
    let motion = stats.motion_by_layer().unwrap();
    assert!(motion.height() >= 2, "{motion}");
    let lowest = stats.lowest_partition_by_layer().unwrap();
    assert!(lowest.height() > 0, "{lowest}");
}
