//! Parity with the official `image_inr` code for the image families of issue 20: an FFN with the
//! `nerf` positional encoding and a SIREN, trained by the official classes
//! (`scripts/reference/image_families.py`, fixtures in `tests/fixtures/reference/image_families/`),
//! are imported from their `best_model.ckpt` and `exp_config.yaml` (the config's `model_name` and
//! `pos_encoding` decide the family), and xinc's forward pass reproduces the official encoding,
//! hidden layers and output to 1e-5, and the official PSNR to 1e-4 dB. The FFN's official maps
//! (`get_mlp_mappings`, the official analysis) of every layer match xinc's `--method official`
//! maps to 1e-4 relative.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use xinc::canvas::ffn::{ffn_canvas, FfnLayer};
use xinc::canvas::CanvasOptions;
use xinc::models::ffn::{Ffn, HiddenActivation, PosEncoding};
use xinc::models::import::{import_ffn_as, FfnImport};
use xinc::models::ModelDir;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/image_families")
        .join(name)
}

fn import(name: &str, verb: &'static str, out: &Path) -> xinc::Result<Ffn> {
    let dir = case(name);
    let job = FfnImport {
        checkpoint: dir.join("best_model.ckpt"),
        config: Some(dir.join("exp_config.yaml")),
        size: [32, 64],
    };
    import_ffn_as(&job, Some(verb), &ModelDir::new(out), &Device::Cpu)
}

fn check(name: &str, verb: &'static str) -> Ffn {
    let tmp = tempfile::tempdir().unwrap();
    let model = import(name, verb, tmp.path()).unwrap();
    let dev = Device::Cpu;
    let reference: HashMap<String, Tensor> =
        xinc::io::load_safetensors(&case(name).join("reference.safetensors"), &dev).unwrap();
    let acts = model.forward_image(&dev).unwrap();
    common::assert_close(
        &format!("{name} coords"),
        &acts.coords,
        &reference["coords"],
        1e-6,
    );
    let keep = reference["encoding"].dim(0).unwrap();
    common::assert_close(
        &format!("{name} encoding"),
        &acts.features.narrow(0, 0, keep).unwrap(),
        &reference["encoding"],
        1e-5,
    );
    for (i, h) in acts.hidden.iter().enumerate() {
        let ours = h.narrow(0, 0, keep).unwrap();
        common::assert_close(
            &format!("{name} layer {i}"),
            &ours,
            &reference[&format!("layer.{i}")],
            1e-5,
        );
    }
    common::assert_close(
        &format!("{name} output"),
        &acts.output,
        &reference["output"],
        1e-5,
    );
    // The official PSNR (prediction clamped and rounded to 8 bits) against the image it learned.
    let image = xinc::data::image::load_rgb_resized(&case(name).join("image.png"), 32, 64).unwrap();
    let psnr = xinc::train::psnr_quantised(&common::flat(&acts.output), &image.data);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case(name).join("metrics.json")).unwrap())
            .unwrap();
    let want = metrics["psnr"].as_f64().unwrap();
    assert!((psnr - want).abs() < 1e-4, "{name}: PSNR {psnr} vs {want}");
    model
}

#[test]
fn nerf_ffn_matches_the_official_forward_pass_and_psnr() {
    let model = check("ffn_nerf", "ffn");
    // `num_frequencies: null` with `sidelength: 64`: the Nyquist rule gives ⌊log₂ 16⌋ = 4.
    assert_eq!(
        model.config().encoding,
        PosEncoding::Nerf { num_frequencies: 4 }
    );
}

#[test]
fn nerf_ffn_official_maps_match_the_official_analysis() {
    let tmp = tempfile::tempdir().unwrap();
    let model = import("ffn_nerf", "ffn", tmp.path()).unwrap();
    let acts = model.forward_image(&Device::Cpu).unwrap();
    let layers = [
        FfnLayer::Summed(1),
        FfnLayer::Summed(2),
        FfnLayer::Summed(3),
        FfnLayer::PerChannel(3),
    ];
    let canvas = ffn_canvas(&model, &acts, &layers, &CanvasOptions::default()).unwrap();
    let official: HashMap<String, Tensor> = xinc::io::load_safetensors(
        &case("ffn_nerf").join("official_maps.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for layer in &layers {
        let name = layer.to_string();
        let theirs = &official[&name];
        let keep = theirs.dim(theirs.rank() - 1).unwrap();
        let map = canvas.layer(&name).unwrap();
        // Ours: [maps…, 32·64]; the official file keeps the first `keep` pixels of each map.
        let ours = map.to_tensor(&Device::Cpu).unwrap();
        let ours = ours
            .reshape((map.num_maps(), 32 * 64))
            .unwrap()
            .narrow(1, 0, keep)
            .unwrap()
            .reshape(theirs.dims())
            .unwrap();
        common::assert_close(&format!("ffn_nerf official {name}"), &ours, theirs, 1e-4);
    }
}

#[test]
fn siren_matches_the_official_forward_pass_and_psnr() {
    let model = check("siren", "siren");
    assert_eq!(
        model.config().activation,
        HiddenActivation::Sine {
            w0: 30.0,
            w0_initial: 30.0
        }
    );
    // The verb must match the config's model_name, and nothing is written otherwise.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let err = import("siren", "ffn", &out).unwrap_err().to_string();
    assert!(
        err.contains("model_name is `siren`") && err.contains("xinc import siren"),
        "{err}"
    );
    assert!(!out.exists());
}
