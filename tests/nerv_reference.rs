//! Parity with the official HNeRV code for every NeRV family (issue 20): small models trained by
//! the official classes (`scripts/reference/nerv_families.py`, fixtures in
//! `tests/fixtures/reference/nerv_families/`) are imported from their official `model_best.pth`
//! and flags, and xinc's forward pass reproduces the official embedding, every decoder activation
//! and the output to 1e-5, and the official per-frame PSNR to 1e-4 dB.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use xinc::models::import::{import_nerv, NervImport};
use xinc::models::nerv::Nerv;
use xinc::models::ModelDir;

const FRAMES: usize = 4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/nerv_families")
}

/// Imports case `name` through the library's importer (the CLI's `xinc import nerv`).
fn import(name: &str, out: &Path) -> (Nerv, HashMap<String, Tensor>, serde_json::Value) {
    let dir = fixtures().join(name);
    let args = std::fs::read_to_string(dir.join("args.txt")).unwrap();
    let frames = dir.join("frames");
    let job = NervImport {
        checkpoint: dir.join("model_best.pth"),
        args: args.trim().to_string(),
        frames: FRAMES,
        clip: frames.is_dir().then_some(frames),
        video: None,
    };
    let dev = Device::Cpu;
    let model = import_nerv(&job, &ModelDir::new(out), &dev).unwrap();
    let reference = xinc::io::load_safetensors(&dir.join("reference.safetensors"), &dev).unwrap();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    (model, reference, metrics)
}

#[test]
fn trained_families_match_the_official_forward_pass_and_psnr() {
    for name in [
        "nerv_pshuffel_gelu",
        "nerv_conv_relu_bn",
        "hnerv",
        "hnerv_interp_leaky01_in",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (model, reference, metrics) = import(name, tmp.path());
        assert_eq!(
            model.config().fc_dim() as u64,
            metrics["fc_dim"].as_u64().unwrap(),
            "{name}: fc_dim"
        );
        let dev = Device::Cpu;
        let t: Vec<f64> = (0..FRAMES).map(|i| model.config().time_of(i)).collect();
        let acts = model.forward(&t, &dev).unwrap();
        // The embedding: NeRV's positional encoding, or HNeRV's encoder on the frames (read
        // from the PNGs by xinc's loader).
        common::assert_close(
            &format!("{name} embedding"),
            &acts.embedding,
            &reference["embed_input"],
            1e-5,
        );
        for j in 0.. {
            let Some(theirs) = reference.get(&format!("embed_list.{j}")) else {
                assert!(j >= 2, "{name}: the fixture has decoder activations");
                break;
            };
            let ours = acts.decoder[j + 1].narrow(0, 1, 1).unwrap();
            common::assert_close(&format!("{name} embed_list.{j}"), &ours, theirs, 1e-5);
        }
        common::assert_close(
            &format!("{name} output"),
            &acts.output,
            &reference["output"],
            1e-5,
        );
        // The official PSNR of each frame against the frames the model learned.
        let frames_dir = fixtures().join(name).join("frames");
        let [h, w] = model.config().frame_size();
        let frames = xinc::data::frames::nerv_frames(&frames_dir, [h, w], None, None).unwrap();
        for (i, want) in metrics["psnr"].as_array().unwrap().iter().enumerate() {
            let gt = Tensor::from_vec(frames[i].clone(), (1, 3, h, w), &dev).unwrap();
            let out = acts.output.narrow(0, i, 1).unwrap();
            let mse = (out - gt).unwrap().sqr().unwrap().mean_all().unwrap();
            let psnr = -10.0 * (f64::from(mse.to_scalar::<f32>().unwrap()) + 1e-9).log10();
            let want = want.as_f64().unwrap();
            assert!(
                (psnr - want).abs() < 1e-4,
                "{name} frame {i}: PSNR {psnr} vs {want}"
            );
        }
    }
}

#[test]
fn every_activation_matches_the_official_layers() {
    for act in ["leaky", "relu6", "swish", "softplus", "hardswish", "sin"] {
        let name = format!("act_{act}");
        let tmp = tempfile::tempdir().unwrap();
        let (model, reference, _) = import(&name, tmp.path());
        let out = model.forward_frame(1, &Device::Cpu).unwrap().output;
        common::assert_close(&name, &out, &reference["output"], 1e-5);
    }
}
