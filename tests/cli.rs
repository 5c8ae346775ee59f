//! The `xinc` command line end to end: train, import, canvas (full and summary), render, and
//! clear errors for bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn xinc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xinc"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("xinc runs")
}

fn ok(args: &[&str]) -> String {
    let out = xinc(args);
    assert!(
        out.status.success(),
        "xinc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a failing command: exit 1 for a library error, 2 for a usage error (clap).
fn err_with(code: i32, args: &[&str]) -> String {
    let out = xinc(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "xinc {args:?} should fail cleanly"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn err(args: &[&str]) -> String {
    err_with(1, args)
}

fn write_summary(model: &Path, out: &Path) {
    ok(&["canvas", "--model", s(model), "--out", s(out), "--summary"]);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_canvas_render_on_a_generated_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("scene.png");
    let scene = xinc::data::synth::scene::street_scene(48, 96);
    xinc::data::image::write_png(&img, &scene, image::codecs::png::CompressionType::Fast).unwrap();
    let model = dir.path().join("m");
    let out = ok(&[
        "train",
        "ffn",
        "--image",
        s(&img),
        "--size",
        "16x32",
        "--width",
        "8",
        "--iters",
        "20",
        "--eval-every",
        "10",
        "--out",
        s(&model),
    ]);
    assert!(out.contains("best PSNR"), "{out}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architecture"]["kind"], "ffn");
    assert_eq!(
        cfg["architecture"]["data_shape"],
        serde_json::json!([16, 32])
    );
    assert_eq!(cfg["provenance"]["iters"], 20);

    let canvas = dir.path().join("c.safetensors");
    ok(&[
        "canvas",
        "--model",
        s(&model),
        "--out",
        s(&canvas),
        "--layers",
        "layer2,layer3_rgb",
        "--tile",
        "100",
    ]);
    let t = load(canvas);
    assert_eq!(t["layer2"].dims(), &[8, 16, 32]);
    assert_eq!(t["layer3_rgb"].dims(), &[8, 3, 16, 32]);
    // Conservation through the file: the per-channel maps sum to the stored output.
    let summed = flat(&t["layer3_rgb"].sum(0).unwrap());
    assert!(max_abs_diff(&summed, &flat(&t["output"])) < 1e-5);

    let summary = dir.path().join("s.safetensors");
    write_summary(&model, &summary);
    let t = load(summary);
    assert_eq!(t["layer1.sum_hw"].dims(), &[16]);
    assert_eq!(t["layer3_rgb.sum_neurons"].dims(), &[3, 16, 32]);
    assert_eq!(t["layer2.sum_neurons"].dims(), &[16, 32]);

    let png = dir.path().join("r.png");
    ok(&["render", "--model", s(&model), "--out", s(&png)]);
    assert_eq!(
        xinc::data::image::read_rgb8(&png).unwrap().dimensions(),
        (32, 16)
    );
}

#[test]
fn bad_input_gives_a_clear_error_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("truncated.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let model = dir.path().join("m");
    let msg = err(&["train", "ffn", "--image", s(&bad), "--out", s(&model)]);
    assert!(
        msg.contains("truncated.png") && msg.contains("cannot decode image"),
        "{msg}"
    );
    assert!(!model.exists());

    let msg = err(&[
        "canvas",
        "--model",
        s(&dir.path().join("nowhere")),
        "--out",
        s(&dir.path().join("c.safetensors")),
    ]);
    assert!(msg.contains("config.json"), "{msg}");

    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        r#"{"format_version": 1, "architecture": {"kind": "ffn"}}"#,
    )
    .unwrap();
    let msg = err(&[
        "render",
        "--model",
        s(&model),
        "--out",
        s(&dir.path().join("r.png")),
    ]);
    assert!(
        msg.contains("config.json") && msg.contains("missing field"),
        "{msg}"
    );
    let msg = err_with(
        2,
        &[
            "train",
            "ffn",
            "--image",
            s(&bad),
            "--size",
            "12",
            "--out",
            s(&model),
        ],
    );
    assert!(msg.contains("HxW"), "{msg}");
}

#[test]
fn import_then_canvas_reproduces_the_official_reductions() {
    let Some(golden) = golden_dir("import_then_canvas_reproduces_the_official_reductions") else {
        return;
    };
    let g = golden.join("ffn_0005");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    ok(&[
        "import",
        "ffn",
        "--checkpoint",
        s(&g.join("best_model.ckpt")),
        "--config",
        s(&g.join("exp_config.yaml")),
        "--out",
        s(&model),
    ]);
    let summary = dir.path().join("s.safetensors");
    write_summary(&model, &summary);
    let ours = load(summary);
    let maps = load(g.join("maps.safetensors"));
    for (layer, official) in [
        ("layer1", "layer_1_output_contrib"),
        ("layer2", "layer_2_output_contrib"),
        ("layer3_rgb", "layer_3_output_contrib_to_rgb"),
    ] {
        let e = max_rel_diff(
            &flat(&ours[&format!("{layer}.abssum_hw")]),
            &flat(&maps[&format!("{official}.abssum_hw")]),
        );
        assert!(e < 1e-4, "{layer}.abssum_hw: {e}");
    }
    // The render equals the official PNG (truncated 8-bit), up to one grey level where the
    // prediction sits on a quantisation boundary.
    let png = dir.path().join("r.png");
    ok(&["render", "--model", s(&model), "--out", s(&png)]);
    let a = xinc::data::image::read_rgb8(&png).unwrap();
    let b = xinc::data::image::read_rgb8(&g.join("predicted.png")).unwrap();
    let diffs: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    assert!(diffs.iter().all(|&d| d <= 1));
    assert!(diffs.iter().filter(|&&d| d == 0).count() as f64 / diffs.len() as f64 > 0.999);
}

#[test]
fn synth_then_inspect_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    for (format, annotated) in [("vipseg", 6), ("cityscapes-vps", 2)] {
        let root = dir.path().join(format);
        let out = ok(&[
            "synth",
            "--format",
            format,
            "--frames",
            "6",
            "--size",
            "32x64",
            "--seed",
            "2",
            "--out",
            s(&root),
        ]);
        assert!(out.contains("6 frames of 32x64"), "{out}");
        let json: serde_json::Value =
            serde_json::from_str(&ok(&["inspect", s(&root), "--json", "--size", "16x32"])).unwrap();
        assert_eq!(json["frames"], 6);
        assert_eq!(json["size"], serde_json::json!([16, 32]));
        let frames = json["annotated_frames"].as_array().unwrap();
        assert_eq!(frames.len(), annotated, "{format}");
        assert!(frames[0]["segments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["category"] == "sky"));
        let table = ok(&["inspect", s(&root)]);
        assert!(
            table.contains("instance") && table.contains("bbox"),
            "{table}"
        );
    }
    let msg = err(&["inspect", s(&dir.path().join("nothing here"))]);
    assert!(msg.contains("nothing here"), "{msg}");
    let msg = err_with(2, &["synth", "--format", "kitti", "--out", s(dir.path())]);
    assert!(msg.contains("kitti"), "{msg}");
}

#[test]
fn nerv_train_canvas_and_errors_on_a_generated_clip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("clip");
    ok(&[
        "synth",
        "--frames",
        "6",
        "--size",
        "32x64",
        "--out",
        s(&root),
    ]);
    let model = dir.path().join("nerv");
    let args = "--embed pe_1.25_8 --fc_hw 2_4 --dec_strds 2 2 --modelsize 0.003 --lower_width 4";
    let out = ok(&[
        "train",
        "nerv",
        "--clip",
        s(&root),
        "--args",
        args,
        "--epochs",
        "4",
        "--eval-every",
        "2",
        "--out",
        s(&model),
    ]);
    assert!(
        out.contains("6 frames") && out.contains("best PSNR"),
        "{out}"
    );
    assert!(model.join("train_state.safetensors").exists());
    // The run ends as the official script's does: the quantised, Huffman-coded model.
    assert!(
        out.contains("bits per pixel") && model.join("compression.json").exists(),
        "{out}"
    );
    let figures = |bits: &str| -> serde_json::Value {
        let out = ok(&[
            "compress",
            "--model",
            s(&model),
            "--clip",
            s(&root),
            "--model-bits",
            bits,
            "--json",
        ]);
        serde_json::from_str(out.trim()).unwrap()
    };
    let (eight, four) = (figures("8"), figures("4"));
    let number = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(number(&four, "bits_per_param") < number(&eight, "bits_per_param"));
    assert!(number(&eight, "bits_per_pixel") > 0.0 && number(&eight, "quant_psnr") > 0.0);
    assert_eq!(
        eight["quant_msssim"],
        serde_json::Value::Null,
        "32x64 frames"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("compression.json")).unwrap())
            .unwrap();
    assert_eq!(written["model_bits"], 4);
    err_with(2, &["compress", "--model", s(&model), "--model-bits", "9"]);
    // Pruning the head by each ranking (3 rankings × 2 fractions), and pruning half of the
    // kernels codes fewer bits.
    let table_path = dir.path().join("prune.parquet");
    ok(&[
        "prune",
        "--model",
        s(&model),
        "--data",
        s(&root),
        "--layer",
        "head",
        "--fractions",
        "0,0.5",
        "--out",
        s(&table_path),
    ]);
    let table = xinc::analysis::read_parquet(&table_path).unwrap();
    // Both canvases give the head the same maps: one contribution ranking, weight norm, random.
    assert_eq!(table.height(), 6);
    let rankings = table.column("ranking").unwrap().str().unwrap().clone();
    assert_eq!(rankings.get(0), Some("contribution (both canvases)"));
    let bpp: Vec<f64> = table
        .column("bits_per_pixel")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert!(bpp[1] < bpp[0], "{bpp:?}");
    err_with(
        2,
        &[
            "prune",
            "--model",
            s(&model),
            "--fractions",
            "1.5",
            "--out",
            s(&table_path),
        ],
    );
    let msg = err(&[
        "prune",
        "--model",
        s(&model),
        "--data",
        s(&root),
        "--layer",
        "block9",
        "--out",
        s(&table_path),
    ]);
    assert!(msg.contains("block9"), "{msg}");

    // Ablation: a sample of block 2's kernels, against both canvases.
    let ablation = dir.path().join("ablation");
    let ablate = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["ablate", "--model", s(&model), "--data", s(&root)]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(["--out".to_string(), s(&ablation).to_string()]);
        args
    };
    let args = ablate(&["--layer", "block2", "--max-kernels", "10", "--batch", "4"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let agreement = xinc::analysis::read_parquet(&ablation.join("agreement.parquet")).unwrap();
    assert_eq!(agreement.height(), 2); // official and conservative
    let neurons = xinc::analysis::read_parquet(&ablation.join("neurons.parquet")).unwrap();
    assert_eq!(neurons.height(), 10);
    assert!(ablation.join("objects.parquet").exists());
    let state = dir.path().join("ablation.ablation-state.json");
    assert!(!state.exists(), "the checkpoint outlives a finished job");
    // A checkpoint of another job is refused, and the failed command leaves no output.
    std::fs::remove_dir_all(&ablation).unwrap();
    std::fs::write(&state, r#"{"key":"another job","removals":[]}"#).unwrap();
    let args = ablate(&["--layer", "block2", "--max-kernels", "10"]);
    let msg = err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(msg.contains("another job"), "{msg}");
    assert!(!ablation.exists());
    std::fs::remove_file(&state).unwrap();
    for (flag, value) in [
        ("--batch", "0"),
        ("--budget-s", "-1"),
        ("--max-kernels", "0"),
    ] {
        let args = ablate(&["--layer", "head", flag, value]);
        err_with(2, &args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let args = ablate(&["--layer", "block9"]);
    let msg = err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(msg.contains("block9"), "{msg}");
    assert!(!ablation.exists());

    let summary = dir.path().join("s.safetensors");
    ok(&[
        "canvas",
        "--model",
        s(&model),
        "--frame",
        "5",
        "--summary",
        "--out",
        s(&summary),
    ]);
    let t = load(summary);
    assert_eq!(t["head.sum_hw"].dims(), &[4, 3]);
    assert_eq!(t["block1.sum_hw"].dims(), &[6, 20]);
    assert_eq!(t["block1_pre_gelu.sum_neurons"].dims(), &[20, 4, 8]);
    // Conservation: the head maps summed over inputs give the stored head output.
    assert!(max_abs_diff(&flat(&t["head.sum_neurons"]), &flat(&t["output"])) < 1e-5);
    // The conservative canvas (every layer by default, the per-channel `block<n>_rgb` included):
    // every block's maps sum to the output, per channel and summed.
    let exact = dir.path().join("exact.safetensors");
    let out = ok(&[
        "canvas",
        "--model",
        s(&model),
        "--frame",
        "5",
        "--summary",
        "--method",
        "conservative",
        "--out",
        s(&exact),
    ]);
    assert!(out.starts_with("conservative canvas"), "{out}");
    let e = load(exact);
    let y = flat(&e["output"]);
    for block in ["block1", "block2"] {
        let rgb = flat(&e[&format!("{block}_rgb.sum_neurons")]); // [Cout, 3, H, W]
        let summed = flat(&e[&format!("{block}.sum_neurons")]); // [Cout, H, W]
        let (mut total, mut total_summed) = (vec![0.0f32; y.len()], vec![0.0f32; y.len() / 3]);
        for chunk in rgb.chunks_exact(y.len()) {
            total.iter_mut().zip(chunk).for_each(|(t, v)| *t += v);
        }
        for chunk in summed.chunks_exact(y.len() / 3) {
            total_summed
                .iter_mut()
                .zip(chunk)
                .for_each(|(t, v)| *t += v);
        }
        assert!(max_abs_diff(&total, &y) < 1e-4, "{block}");
        let p = y.len() / 3;
        let y_sum: Vec<f32> = (0..p).map(|o| y[o] + y[p + o] + y[2 * p + o]).collect();
        assert!(max_abs_diff(&total_summed, &y_sum) < 1e-4, "{block}");
    }
    let full = dir.path().join("exact_maps.safetensors");
    ok(&[
        "canvas",
        "--model",
        s(&model),
        "--layers",
        "block1,block1_rgb",
        "--method",
        "conservative",
        "--out",
        s(&full),
    ]);
    let f = load(full);
    assert_eq!(f["block1"].dims(), &[6, 20, 8, 16]);
    assert_eq!(f["block1_rgb"].dims(), &[6, 20, 3, 8, 16]);
    let msg = err_with(
        2,
        &[
            "canvas",
            "--model",
            s(&model),
            "--method",
            "exact",
            "--out",
            "x",
        ],
    );
    assert!(msg.contains("official or conservative"), "{msg}");
    let msg = err(&[
        "canvas",
        "--model",
        s(&model),
        "--frame",
        "6",
        "--out",
        s(&dir.path().join("x.safetensors")),
    ]);
    assert!(msg.contains("frame 6"), "{msg}");
    let msg = err(&[
        "canvas",
        "--model",
        s(&model),
        "--layers",
        "block4",
        "--out",
        s(&dir.path().join("x.safetensors")),
    ]);
    assert!(msg.contains("block 4") || msg.contains("block4"), "{msg}");
}

#[test]
fn nerv_import_then_canvas_reproduces_the_official_maps() {
    let Some(golden) = golden_dir("nerv_import_then_canvas_reproduces_the_official_maps") else {
        return;
    };
    let g = golden.join("nerv_synth");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    ok(&[
        "import",
        "nerv",
        "--checkpoint",
        s(&g.join("weights.safetensors")),
        "--frames",
        "8",
        "--out",
        s(&model),
    ]);
    let maps = load(g.join("maps.safetensors"));
    let summary = dir.path().join("s.safetensors");
    ok(&[
        "canvas",
        "--model",
        s(&model),
        "--frame",
        "3",
        "--layers",
        "head,block3",
        "--summary",
        "--out",
        s(&summary),
    ]);
    let ours = load(summary);
    for (layer, official) in [
        ("head", "head_layer_output_contrib"),
        ("block3", "nerv_blk_3_output_contrib"),
    ] {
        let e = max_rel_diff(
            &flat(&ours[&format!("{layer}.abssum_hw")]),
            &flat(&maps[&format!("frame3.{official}.abssum_hw")]),
        );
        assert!(e < 1e-4, "{layer}.abssum_hw: {e}");
    }
    let full = dir.path().join("f.safetensors");
    ok(&[
        "canvas",
        "--model",
        s(&model),
        "--frame",
        "3",
        "--layers",
        "block3",
        "--in-channels",
        "0:1",
        "--out",
        s(&full),
    ]);
    let t = load(full);
    assert_eq!(t["block3"].dims(), &[1, 88, 128, 256]);
    // Kernel (0, 0) against the official full-resolution map.
    let sel = flat(&maps["frame3.nerv_blk_3_output_contrib.sel"]);
    let ours = flat(&t["block3"]);
    assert!(max_abs_diff(&ours[..128 * 256], &sel[..128 * 256]) < 1e-6);
}
