//! Import of official FFN weights: the released Lightning checkpoint (when the golden folder is
//! present), typed errors for every kind of bad weights file (always), and the model folders that
//! `import_ffn` and `import_nerv` write.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::*;
use xinc::models::ffn::{Ffn, FfnConfig};
use xinc::models::import::{ffn_config_from_yaml, read_official_tensors};
use xinc::XincError;

fn write_weights(path: &Path, tensors: &HashMap<String, Tensor>, prefix: &str) {
    let named: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect();
    xinc::io::save_safetensors(path, &named).unwrap();
}

fn small() -> (FfnConfig, HashMap<String, Tensor>) {
    let cfg = FfnConfig::with_width(8, 4, 8);
    let t = cfg
        .init_tensors(0, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    (cfg, t)
}

fn import(cfg: &FfnConfig, path: &Path) -> Result<Ffn, XincError> {
    let tensors = read_official_tensors(path, &Device::Cpu)?;
    Ffn::from_tensors(
        cfg.clone(),
        tensors,
        &path.display().to_string(),
        &Device::Cpu,
    )
}

#[test]
fn safetensors_with_or_without_the_lightning_prefix_import() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, t) = small();
    for prefix in ["", "model."] {
        let path = dir.path().join(format!("w{prefix}safetensors"));
        write_weights(&path, &t, prefix);
        let m = import(&cfg, &path).unwrap();
        let b = m
            .named_tensors()
            .into_iter()
            .find(|(n, _)| n == "net.1.linear.bias")
            .unwrap()
            .1;
        assert_eq!(flat(&b), flat(&t["net.1.linear.bias"]));
    }
}

#[test]
fn bad_weights_are_typed_errors_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, t) = small();
    let path = dir.path().join("bad.safetensors");

    let mut missing = t.clone();
    missing.remove("net.2.linear.bias");
    write_weights(&path, &missing, "model.");
    match import(&cfg, &path) {
        Err(XincError::MissingTensor { name, origin }) => {
            assert_eq!(name, "net.2.linear.bias");
            assert!(origin.contains("bad.safetensors"));
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }

    let mut extra = t.clone();
    extra.insert(
        "net.9.linear.weight".into(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    write_weights(&path, &extra, "");
    assert!(
        matches!(import(&cfg, &path), Err(XincError::UnexpectedTensors { names, .. }) if names == ["net.9.linear.weight"])
    );

    let mut wrong = t.clone();
    wrong.insert(
        "net.0.linear.weight".into(),
        Tensor::zeros((8, 15), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    write_weights(&path, &wrong, "");
    assert!(
        matches!(import(&cfg, &path), Err(XincError::ShapeMismatch { found, .. }) if found == [8, 15])
    );

    let mut nan = t.clone();
    let mut v = flat(&t["net.1.linear.weight"]);
    v[3] = f32::NAN;
    v[5] = f32::INFINITY;
    nan.insert(
        "net.1.linear.weight".into(),
        Tensor::from_vec(v, (8, 8), &Device::Cpu).unwrap(),
    );
    write_weights(&path, &nan, "");
    assert!(
        matches!(import(&cfg, &path), Err(XincError::NonFinite { count: 2, name, .. }) if name == "net.1.linear.weight")
    );

    std::fs::write(&path, b"garbage that is no checkpoint").unwrap();
    assert!(matches!(
        import(&cfg, &path),
        Err(XincError::Checkpoint { .. })
    ));
}

#[test]
fn released_lightning_checkpoint_imports_bit_exactly() {
    let Some(dir) = golden_dir("released_lightning_checkpoint_imports_bit_exactly") else {
        return;
    };
    let dir = dir.join("ffn_0005");
    let cfg = ffn_config_from_yaml(&dir.join("exp_config.yaml")).unwrap();
    assert_eq!(cfg, FfnConfig::paper(128, 256));
    let model = import(&cfg, &dir.join("best_model.ckpt")).unwrap();
    let reference = load(dir.join("weights.safetensors"));
    for (name, t) in model.named_tensors() {
        assert_eq!(flat(&t), flat(&reference[&name]), "{name}");
    }
}

#[test]
fn checkpoint_with_a_missing_tensor_fails_with_a_typed_error() {
    let Some(dir) = golden_dir("checkpoint_with_a_missing_tensor_fails_with_a_typed_error") else {
        return;
    };
    let mut t = read_official_tensors(&dir.join("ffn_0005/best_model.ckpt"), &Device::Cpu).unwrap();
    t.remove("positional_encoding.B");
    let err = Ffn::from_tensors(
        FfnConfig::paper(128, 256),
        t,
        "best_model.ckpt",
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(
        matches!(&err, XincError::MissingTensor { name, .. } if name == "positional_encoding.B"),
        "{err}"
    );
}

/// `import_ffn` and `import_nerv` write model folders that load back to the same models and
/// record the checkpoint; the bundled folders' weights carry the official names, so they import
/// as official safetensors files.
#[test]
fn imports_write_model_folders_that_record_the_checkpoint() {
    use xinc::models::import::{import_ffn, import_nerv, FfnImport, NervImport};
    use xinc::models::nerv::NervConfig;
    use xinc::models::{ModelDir, Provenance};

    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints");

    let bundled = ModelDir::new(root.join("ffn_cityscapes_vps_0005"));
    let (ffn, _) = bundled.load_ffn(&dev).unwrap();
    let job = FfnImport {
        checkpoint: bundled.weights_path(),
        config: None,
        size: ffn.config().data_shape,
    };
    let out = ModelDir::new(dir.path().join("ffn"));
    let imported = import_ffn(&job, &out, &dev).unwrap();
    let (loaded, cfg) = out.load_ffn(&dev).unwrap();
    assert_eq!(
        cfg.provenance,
        Provenance::Imported {
            checkpoint: job.checkpoint.clone(),
            config: None
        }
    );
    let image = ffn.render(&dev).unwrap();
    assert_eq!(image.data.len(), 128 * 256 * 3);
    assert_eq!(imported.render(&dev).unwrap(), image);
    assert_eq!(loaded.render(&dev).unwrap(), image);
    let output = ffn.forward_image(&dev).unwrap().output;
    assert_eq!(image.data, flat(&output));

    let bundled = ModelDir::new(root.join("nerv_cityscapes_vps_0005"));
    let (nerv, _) = bundled.load_nerv(&dev).unwrap();
    let job = NervImport {
        checkpoint: bundled.weights_path(),
        args: NervConfig::PAPER_ARGS.to_string(),
        frames: nerv.config().frames,
        clip: None,
        video: None,
    };
    let out = ModelDir::new(dir.path().join("nerv"));
    import_nerv(&job, &out, &dev).unwrap();
    let (loaded, cfg) = out.load_nerv(&dev).unwrap();
    assert!(matches!(
        cfg.provenance,
        Provenance::Imported { config: None, .. }
    ));
    let frame = nerv.render_frame(3, &dev).unwrap();
    assert_eq!(loaded.render_frame(3, &dev).unwrap(), frame);
    // The image is the decoder's planar [3, H, W] output, pixel-interleaved.
    let planar = flat(&nerv.forward_frame(3, &dev).unwrap().output);
    let p = frame.height * frame.width;
    assert_eq!([frame.height, frame.width], [128, 256]);
    for i in [0, 1, 257, p - 1] {
        for c in 0..3 {
            assert_eq!(frame.data[3 * i + c], planar[c * p + i]);
        }
    }
}
