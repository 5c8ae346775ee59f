//! Parity with the official compression pipeline (`train_nerv_all.py`: `quant_model`,
//! `hnerv_utils.quant_tensor`, the `dahuffman` bit count of `evaluate`), on three models the
//! official code trained (`tests/fixtures/reference/nerv_families/`): a NeRV, an HNeRV and a NeRV
//! with batch norms. The reference is `scripts/reference/compression.py`
//! (`tests/fixtures/reference/compression/`).
//!
//! Bit for bit: every quantised value, the chosen minimum and scale of every tensor, the Huffman
//! bit count, the values and overhead entries, and so bits per parameter and per pixel. The
//! quantised PSNR of every frame to 1e-4 dB.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use xinc::compress::{compress_nerv, quantise_nerv, CompressOptions};
use xinc::models::import::{import_nerv, NervImport};
use xinc::models::nerv::Nerv;
use xinc::models::ModelDir;

const FRAMES: usize = 4;
const CASES: [&str; 3] = ["nerv_pshuffel_gelu", "hnerv", "nerv_conv_relu_bn"];

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(kind)
}

/// The official model of `name`, imported as `xinc import nerv` does.
fn import(name: &str, out: &Path) -> Nerv {
    let dir = fixtures("nerv_families").join(name);
    let frames = dir.join("frames");
    let job = NervImport {
        checkpoint: dir.join("model_best.pth"),
        args: std::fs::read_to_string(dir.join("args.txt"))
            .unwrap()
            .trim()
            .to_string(),
        frames: FRAMES,
        clip: frames.is_dir().then_some(frames),
        video: None,
    };
    import_nerv(&job, &ModelDir::new(out), &Device::Cpu).unwrap()
}

fn reference(name: &str) -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = fixtures("compression").join(name);
    let tensors =
        xinc::io::load_safetensors(&dir.join("quantised.safetensors"), &Device::Cpu).unwrap();
    let meta = std::fs::read_to_string(dir.join("compression.json")).unwrap();
    (tensors, serde_json::from_str(&meta).unwrap())
}

fn bytes(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

#[test]
fn quantisation_and_bits_match_the_official_code_bit_for_bit() {
    for name in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let model = import(name, tmp.path());
        let (theirs, meta) = reference(name);
        // The official decoder inputs (the positional encodings or the encoder's embeddings).
        let inputs = &xinc::io::load_safetensors(
            &fixtures("nerv_families")
                .join(name)
                .join("reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap()["embed_input"];
        let q = quantise_nerv(&model, inputs, &CompressOptions::default(), &Device::Cpu).unwrap();
        let axes = &meta["quantised_axis"];
        let named = q
            .tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .chain([("embed", &q.inputs)]);
        let mut compared = 0;
        for (key, ours) in named {
            assert_eq!(
                ours.quant,
                bytes(&theirs[&format!("quant.{key}")]),
                "{name} {key}"
            );
            let axis = axes[key].as_u64().map(|a| a as usize);
            assert_eq!(ours.axis, axis, "{name} {key}: the chosen quantisation");
            for (what, v) in [("min", &ours.min), ("scale", &ours.scale)] {
                assert_eq!(
                    v,
                    &common::flat(&theirs[&format!("{what}.{key}")]),
                    "{name} {key} {what}"
                );
            }
            compared += 1;
        }
        // Every official tensor but the batch norms' counters, which xinc does not store.
        let counters = axes
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.ends_with("num_batches_tracked"))
            .count();
        assert_eq!(
            compared + counters,
            axes.as_object().unwrap().len(),
            "{name}"
        );
        assert_eq!(q.batch_norms, counters, "{name}");
        let (bits, values, overhead) = q.bits();
        assert_eq!(
            bits,
            meta["total_bits"].as_u64().unwrap(),
            "{name}: Huffman bits"
        );
        assert_eq!(
            values as u64,
            meta["values"].as_u64().unwrap(),
            "{name}: values"
        );
        assert_eq!(
            overhead as u64,
            meta["overhead_entries"].as_u64().unwrap(),
            "{name}: overhead"
        );
    }
}

#[test]
fn the_compression_figures_match_the_official_ones() {
    for name in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let model = import(name, tmp.path());
        let (_, meta) = reference(name);
        let frames = xinc::data::frames::nerv_frames(
            &fixtures("nerv_families").join(name).join("frames"),
            [32, 64],
            None,
            None,
        )
        .unwrap();
        let (_, c) =
            compress_nerv(&model, &frames, &CompressOptions::default(), &Device::Cpu).unwrap();
        for key in [
            "bits_per_param",
            "bits_per_param_with_overhead",
            "bits_per_pixel",
        ] {
            let want = meta[key].as_f64().unwrap();
            let got = serde_json::to_value(&c).unwrap()[key].as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "{name} {key}: {got} vs {want}");
        }
        for (i, (ours, theirs)) in c
            .quant_psnr_per_frame
            .iter()
            .zip(meta["quant_psnr"].as_array().unwrap())
            .enumerate()
        {
            let theirs = theirs.as_f64().unwrap();
            assert!(
                (ours - theirs).abs() < 1e-4,
                "{name} frame {i}: quantised PSNR {ours} vs {theirs}"
            );
        }
        for (ours, theirs) in c
            .psnr_per_frame
            .iter()
            .zip(meta["psnr"].as_array().unwrap())
        {
            assert!(
                (ours - theirs.as_f64().unwrap()).abs() < 1e-4,
                "{name}: PSNR"
            );
        }
        // 32x64 frames: MS-SSIM is not defined below 161 pixels a side.
        assert_eq!(c.quant_msssim, None);
    }
}
