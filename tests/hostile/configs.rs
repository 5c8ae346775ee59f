//! Hostile configurations and flags: `config.json`, `exp_config.yaml`, NeRV flags, CLI sizes,
//! training state, and commands whose second input is bad (they must leave nothing behind).
//!
//! Model folders are copies of the bundled checkpoints with one field of `config.json` changed;
//! NeRV training inputs are four 4×8 PNG frames for the tiny architecture [`TINY`].

use std::path::{Path, PathBuf};

use xinc::candle::{DType, Device, Tensor};
use xinc::models::nerv::NervConfig;

use crate::harness::Case;

/// A NeRV of 4×8 frames and a few hundred parameters (widths 2, 2, 2).
const TINY: &str =
    "--embed pe_1.25_4 --fc_hw 1_2 --dec_strds 2 2 --modelsize 0.0005 --lower_width 2";

/// A configuration file larger than the 4 MiB limit.
const HUGE: usize = 5 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the bundled model `name` (`ffn` or `nerv`) to `dst` with `from` replaced by `to` in
/// its `config.json`.
fn model_with(name: &str, dst: &Path, from: &str, to: &str) {
    let src = repo().join(format!("checkpoints/{name}_cityscapes_vps_0005"));
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("model.safetensors"), dst.join("model.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    assert!(
        cfg.contains(from),
        "{from} not in the bundled {name} config"
    );
    std::fs::write(dst.join("config.json"), cfg.replace(from, to)).unwrap();
}

/// The bundled FFN's weights at `dst`, with a `config.json` made by `make` (a FIFO, a link, …).
fn ffn_weights_with_config(dst: &Path, make: impl FnOnce(&Path)) {
    std::fs::create_dir_all(dst).unwrap();
    let src = repo().join("checkpoints/ffn_cityscapes_vps_0005/model.safetensors");
    std::fs::copy(src, dst.join("model.safetensors")).unwrap();
    make(&dst.join("config.json"));
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn png(path: &Path, h: u32, w: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 30) as u8, (y * 60) as u8, 128])
    })
    .save(path)
    .unwrap();
}

/// Four 4×8 frames for [`TINY`] in `work/clip`.
fn tiny_clip(work: &Path) {
    for i in 0..4 {
        png(&work.join(format!("clip/{i:02}.png")), 4, 8);
    }
}

/// A training state of [`TINY`] in `work/model`: every tensor zero, `meta` as given; `wrong`
/// replaces the first weight with a one-element tensor.
fn tiny_state(work: &Path, meta: [f64; 4], wrong: bool) {
    let config = NervConfig::from_official_args(TINY, 4).unwrap();
    let mut tensors = Vec::new();
    for spec in config.weight_specs() {
        for part in ["w", "m", "v", "best"] {
            let t = Tensor::zeros(spec.shape.clone(), DType::F32, &Device::Cpu).unwrap();
            tensors.push((format!("{part}.{}", spec.name), t));
        }
    }
    if wrong {
        tensors[0].1 = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    }
    tensors.push(("meta".into(), Tensor::new(&meta, &Device::Cpu).unwrap()));
    let dir = work.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    xinc::io::save_safetensors(&dir.join("train_state.safetensors"), &tensors).unwrap();
}

/// The fields of the official `exp_config.yaml` that the importer reads.
const YAML: &str =
    "network:\n  model_name: ffn\n  layer_size: 104\n  num_layers: 3\n  dim_in: 2\n  \
    dim_out: 3\n  final_act: null\n  activation: relu\n  pos_encoding:\n    type: fourier\n    \
    fourier_mapping_size: ${..layer_size}\n    fourier_noise_scale: 10.0\ndata:\n  data_shape:\n  \
    - 128\n  - 256\n";

/// `xinc import ffn` of the bundled FFN's weights with the YAML made by `make` at `work/c.yaml`.
fn yaml_case(name: &str, expect: &[&str], make: impl Fn(&Path) + Send + Sync + 'static) -> Case {
    Case::new(
        name,
        &[
            "import",
            "ffn",
            "--checkpoint",
            "{work}/w.safetensors",
            "--config",
            "{work}/c.yaml",
            "--out",
            "{out}",
        ],
        expect,
        move |w| {
            let src = repo().join("checkpoints/ffn_cityscapes_vps_0005/model.safetensors");
            std::fs::copy(src, w.join("w.safetensors")).unwrap();
            make(&w.join("c.yaml"));
        },
    )
}

/// `xinc import nerv --args ARGS` of a file that is never read: the flags are refused first.
fn nerv_flags_case(args: &'static str, expect: &[&str]) -> Case {
    Case::new(
        &format!("import nerv --args {args}"),
        &[
            "import",
            "nerv",
            "--checkpoint",
            "{work}/w",
            "--frames",
            "30",
            "--args",
            args,
            "--out",
            "{out}",
        ],
        expect,
        |w| std::fs::write(w.join("w"), b"never read").unwrap(),
    )
}

/// `xinc <args>` with no inputs: a flag is refused before any work.
fn flag_case(args: &[&str], expect: &[&str]) -> Case {
    Case::new(&format!("flags {}", args.join(" ")), args, expect, |_| {})
}

/// `xinc canvas --model work/m` of a bundled model whose `config.json` has `from` replaced.
fn config_case(
    name: &str,
    model: &'static str,
    from: &'static str,
    to: &'static str,
    expect: &[&str],
) -> Case {
    Case::new(
        &format!("config.json: {name}"),
        &[
            "canvas",
            "--model",
            "{work}/m",
            "--summary",
            "--out",
            "{out}/c.safetensors",
        ],
        expect,
        move |w| model_with(model, &w.join("m"), from, to),
    )
}

pub fn cases() -> Vec<Case> {
    let mut cases = flag_cases();
    cases.extend(nerv_flag_cases());
    cases.extend(config_json_cases());
    cases.extend(yaml_cases());
    cases.extend(training_state_cases());
    cases.extend(second_input_cases());
    cases.extend(ablation_state_cases());
    cases
}

/// `xinc ablate` of the bundled NeRV's head, with `make` writing its checkpoint beside `out`:
/// the checkpoint is refused, naming the file, and left as it was.
fn ablation_state_case(
    name: &str,
    expect: &[&str],
    make: impl Fn(&Path) + Send + Sync + 'static,
) -> Case {
    let model = repo().join("checkpoints/nerv_cityscapes_vps_0005");
    let data = repo().join("data/cityscapes_vps");
    let args = [
        "ablate".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--layer".into(),
        "head".into(),
        "--out".into(),
        "{out}".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Case::new(name, &args, expect, move |w| {
        make(&w.join("out.ablation-state.json"))
    })
}

fn ablation_state_cases() -> Vec<Case> {
    let file = "out.ablation-state.json";
    vec![
        ablation_state_case(
            "ablation checkpoint: not JSON",
            &[file, "not an ablation checkpoint"],
            |p| std::fs::write(p, "\u{0}garbage").unwrap(),
        ),
        ablation_state_case(
            "ablation checkpoint: a removal of a wrong shape",
            &[file, "not an ablation checkpoint"],
            |p| std::fs::write(p, r#"{"key":"k","removals":[{"neuron":-3}]}"#).unwrap(),
        ),
        ablation_state_case(
            "ablation checkpoint: another job's",
            &[file, "another job"],
            |p| std::fs::write(p, r#"{"key":"model x","removals":[]}"#).unwrap(),
        ),
        ablation_state_case(
            "ablation checkpoint: a named pipe",
            &[file, "a named pipe"],
            mkfifo,
        ),
    ]
}

/// Every numeric flag with an upper limit: huge, zero, negative, NaN, infinite, overflowing.
fn flag_cases() -> Vec<Case> {
    let ffn = ["train", "ffn", "--image", "{work}/i.png", "--out", "{out}"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        ffn.iter().copied().chain(extra.iter().copied()).collect()
    };
    vec![
        flag_case(
            &["demo", "--size", "0x0", "--out", "{out}"],
            &["--size", "less than 1"],
        ),
        flag_case(
            &["demo", "--size", "100000x100000", "--out", "{out}"],
            &["--size", "100000 is more than the limit 8192"],
        ),
        flag_case(
            &with(&["--size", "99999999999999999999999x4"]),
            &["--size", "is more than the limit 8192"],
        ),
        flag_case(
            &with(&["--width", "1000000"]),
            &["--width", "more than the limit 65536"],
        ),
        flag_case(&with(&["--width", "0"]), &["--width", "less than 1"]),
        flag_case(
            &with(&["--iters", "1e400"]),
            &["--iters", "not a whole number"],
        ),
        flag_case(
            &with(&["--lr", "nan"]),
            &["--lr", "NaN is not a finite number"],
        ),
        flag_case(
            &with(&["--lr", "1e400"]),
            &["--lr", "inf is not a finite number"],
        ),
        flag_case(&with(&["--lr=-1"]), &["--lr", "must be greater than 0"]),
        flag_case(
            &with(&["--eval-every", "18446744073709551616"]),
            &["--eval-every", "more than the limit 10000000"],
        ),
        flag_case(
            &[
                "train", "nerv", "--clip", "{work}/c", "--epochs", "0", "--out", "{out}",
            ],
            &["--epochs", "less than 1"],
        ),
        flag_case(
            &[
                "train",
                "nerv",
                "--clip",
                "{work}/c",
                "--until-epoch",
                "7",
                "--out",
                "{out}",
            ],
            &["until_epoch 7 is neither a multiple of eval_every 50"],
        ),
        flag_case(
            &[
                "import",
                "nerv",
                "--checkpoint",
                "{work}/w",
                "--frames",
                "0",
                "--out",
                "{out}",
            ],
            &["--frames", "less than 1"],
        ),
        flag_case(
            &[
                "import",
                "nerv",
                "--checkpoint",
                "{work}/w",
                "--frames",
                "99999999999",
                "--out",
                "{out}",
            ],
            &["--frames", "more than the limit 100000"],
        ),
        flag_case(
            &[
                "canvas", "--model", "{work}/m", "--tile", "0", "--out", "{out}",
            ],
            &["--tile", "less than 1"],
        ),
        flag_case(
            &[
                "canvas",
                "--model",
                "{work}/m",
                "--frame",
                "100000000",
                "--out",
                "{out}",
            ],
            &["--frame", "more than the limit 100000"],
        ),
        flag_case(
            &[
                "canvas",
                "--model",
                "{work}/m",
                "--in-channels",
                "5:2",
                "--out",
                "{out}",
            ],
            &["--in-channels", "A must be less than B"],
        ),
        flag_case(
            &["report", "--groups", "0", "--out", "{out}"],
            &["--groups", "less than 1"],
        ),
        flag_case(
            &["report", "--max-frames", "0", "--out", "{out}"],
            &["--max-frames", "less than 1"],
        ),
        flag_case(
            &["report", "--motion-frames", "0,10", "--out", "{out}"],
            &["--motion-frames", "less than 1"],
        ),
        flag_case(
            &["synth", "--frames", "1000000", "--out", "{out}"],
            &["--frames", "more than the limit 100000"],
        ),
        flag_case(
            &["check-device", "--repeats", "100000000", "--out", "{out}"],
            &["--repeats", "more than the limit 10000"],
        ),
        flag_case(
            &["demo", "--nerv-epochs", "0", "--out", "{out}"],
            &["--nerv-epochs", "less than 1"],
        ),
    ]
}

/// The official NeRV flags: non-finite numbers, sizes beyond their limits, the real cause of a
/// model with no channels.
fn nerv_flag_cases() -> Vec<Case> {
    vec![
        nerv_flags_case(
            "--embed pe_nan_80",
            &["--embed pe_B_L: B = NaN is not a finite number"],
        ),
        nerv_flags_case(
            "--embed pe_1e400_80",
            &["--embed pe_B_L: B = inf is not a finite number"],
        ),
        nerv_flags_case(
            "--embed pe_1.25_100000",
            &["L = 100000 is more than the limit 1024"],
        ),
        nerv_flags_case(
            "--out_bias nan",
            &["--out_bias = NaN is not a finite number"],
        ),
        nerv_flags_case(
            "--modelsize inf",
            &["--modelsize = inf is not a finite number"],
        ),
        nerv_flags_case(
            "--modelsize 1e-9",
            &["leaves no channels (raise --modelsize)"],
        ),
        nerv_flags_case("--ks 0_3_0", &["--ks = [0, 3, 0]", "must be odd, got 0"]),
        nerv_flags_case(
            "--fc_hw 100000_100000",
            &["--fc_hw = 100000 is more than the limit 8192"],
        ),
        nerv_flags_case(
            "--dec_strds 1024 1024",
            &["frame side (--fc_hw × --dec_strds) = 8388608 is more than the limit 8192"],
        ),
        nerv_flags_case(
            "--dec_strds 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2",
            &["number of --dec_strds = 20 is more than the limit 16"],
        ),
        nerv_flags_case("--reduce -1", &["--reduce = -1.0 must be greater than 0"]),
    ]
}

/// A model folder's `config.json`: absurd and non-finite fields, special files, size, depth.
fn config_json_cases() -> Vec<Case> {
    let special = |name: &str, expect: &[&str], make: fn(&Path)| {
        Case::new(
            &format!("config.json: {name}"),
            &["render", "--model", "{work}/m", "--out", "{out}/r.png"],
            expect,
            move |w| ffn_weights_with_config(&w.join("m"), make),
        )
    };
    vec![
        config_case(
            "data_shape [100000, 100000]",
            "ffn",
            "\"data_shape\": [\n      128,\n      256",
            "\"data_shape\": [\n      100000,\n      100000",
            &[
                "config.json",
                "architecture.data_shape = 100000 is more than the limit 8192",
            ],
        ),
        config_case(
            "num_layers 1000000",
            "ffn",
            "\"num_layers\": 3",
            "\"num_layers\": 1000000",
            &[
                "config.json",
                "architecture.num_layers = 1000000 is more than the limit 64",
            ],
        ),
        config_case(
            "fourier_noise_scale 1e400",
            "ffn",
            "\"fourier_noise_scale\": 10.0",
            "\"fourier_noise_scale\": 1e400",
            &["config.json", "number out of range"],
        ),
        config_case(
            "NeRV pe_levels 100000",
            "nerv",
            "\"pe_levels\": 80",
            "\"pe_levels\": 100000",
            &[
                "config.json",
                "architecture.pe_levels = 100000 is more than the limit 1024",
            ],
        ),
        config_case(
            "NeRV frames 0",
            "nerv",
            "\"frames\": 30",
            "\"frames\": 0",
            &["config.json", "architecture.frames = 0 is less than 1"],
        ),
        config_case(
            "NeRV modelsize -1",
            "nerv",
            "\"modelsize\": 1.0",
            "\"modelsize\": -1.0",
            &[
                "config.json",
                "architecture.modelsize = -1.0 must be greater than 0",
            ],
        ),
        config_case(
            "training record lr 1e300",
            "ffn",
            "\"lr\": 0.0009",
            "\"lr\": 1e300",
            &[
                "config.json",
                "provenance.lr = 1e300 is more than the limit 1",
            ],
        ),
        special("a named pipe", &["config.json", "a named pipe"], mkfifo),
        special(
            "a symlink to /dev/zero",
            &["config.json", "a device"],
            |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
        ),
        special("a directory", &["config.json", "a directory"], |p| {
            std::fs::create_dir(p).unwrap()
        }),
        special(
            "5 MiB",
            &[
                "config.json",
                "more than a configuration file may hold",
                "XINC_MAX_CONFIG_MIB",
            ],
            |p| std::fs::write(p, " ".repeat(HUGE)).unwrap(),
        ),
        special(
            "nested 1,000,000 levels",
            &["config.json", "recursion limit exceeded"],
            |p| {
                // The internally tagged `architecture` is buffered recursively.
                let deep = "[".repeat(1_000_000) + &"]".repeat(1_000_000);
                let text =
                    format!("{{\"format_version\": 1, \"architecture\": {{\"x\": {deep}}}}}");
                std::fs::write(p, text).unwrap()
            },
        ),
    ]
}

/// `exp_config.yaml`: deep nesting (refused before parsing), size, absurd and non-finite fields.
fn yaml_cases() -> Vec<Case> {
    vec![
        yaml_case(
            "exp_config.yaml nested 300,000 levels",
            &["c.yaml", "nested more than 64 levels deep"],
            |p| {
                let deep = "[".repeat(300_000) + &"]".repeat(300_000);
                std::fs::write(p, format!("network: {deep}\n")).unwrap()
            },
        ),
        yaml_case(
            "exp_config.yaml nested 300,000 block levels",
            &["c.yaml", "nested more than 64 levels deep"],
            |p| std::fs::write(p, "- ".repeat(300_000) + "x\n").unwrap(),
        ),
        yaml_case(
            "exp_config.yaml of 5 MiB",
            &["c.yaml", "XINC_MAX_CONFIG_MIB"],
            |p| std::fs::write(p, format!("{YAML}#{}\n", "x".repeat(HUGE))).unwrap(),
        ),
        yaml_case(
            "exp_config.yaml data_shape [100000, 100000]",
            &[
                "c.yaml",
                "data.data_shape = 100000 is more than the limit 8192",
            ],
            |p| std::fs::write(p, YAML.replace("- 128\n  - 256", "- 100000\n  - 100000")).unwrap(),
        ),
        yaml_case(
            "exp_config.yaml fourier_noise_scale .nan",
            &[
                "c.yaml",
                "`network.pos_encoding.fourier_noise_scale` must be a finite number",
            ],
            |p| std::fs::write(p, YAML.replace("10.0", ".nan")).unwrap(),
        ),
        yaml_case(
            "exp_config.yaml num_layers 1000000",
            &[
                "c.yaml",
                "network.num_layers = 1000000 is more than the limit 64",
            ],
            |p| std::fs::write(p, YAML.replace("num_layers: 3", "num_layers: 1000000")).unwrap(),
        ),
        yaml_case(
            "exp_config.yaml is a named pipe",
            &["c.yaml", "a named pipe"],
            mkfifo,
        ),
    ]
}

/// `train nerv --resume` from a bad `train_state.safetensors`: named file and tensor, not
/// "shape mismatch in add".
fn training_state_cases() -> Vec<Case> {
    let resume = |name: &str, expect: &[&str], make: fn(&Path)| {
        Case::new(
            &format!("train nerv --resume: {name}"),
            &[
                "train",
                "nerv",
                "--clip",
                "{work}/clip",
                "--args",
                TINY,
                "--epochs",
                "10",
                "--eval-every",
                "5",
                "--resume",
                "--out",
                "{work}/model",
            ],
            expect,
            move |w| {
                tiny_clip(w);
                make(w);
            },
        )
    };
    vec![
        resume(
            "a state of another model",
            &[
                "train_state.safetensors",
                "tensor `w.decoder.0.conv.downconv.weight` has shape [1]",
            ],
            |w| tiny_state(w, [10.0, 5.0, 5.0, 20.0], true),
        ),
        resume(
            "counters that are not counts",
            &[
                "train_state.safetensors",
                "tensor `meta`: steps = NaN is not a count",
            ],
            |w| tiny_state(w, [f64::NAN, 5.0, 5.0, 20.0], false),
        ),
        resume(
            "a state beyond --epochs",
            &[
                "train_state.safetensors",
                "epoch = 50 is outside this run's epochs 1..=10",
            ],
            |w| tiny_state(w, [100.0, 50.0, 50.0, 20.0], false),
        ),
        resume(
            "a state that is a named pipe",
            &["train_state.safetensors", "a named pipe"],
            |w| {
                std::fs::create_dir_all(w.join("model")).unwrap();
                mkfifo(&w.join("model/train_state.safetensors"))
            },
        ),
    ]
}

/// Commands that fail on their second input leave nothing behind: checked before any write, or
/// removed when the failure comes later.
fn second_input_cases() -> Vec<Case> {
    vec![
        Case::new(
            "demo with a bad --nerv folder",
            &[
                "demo",
                "--image",
                "{work}/i.png",
                "--size",
                "8x8",
                "--iters",
                "2",
                "--nerv",
                "{work}/n",
                "--out",
                "{out}",
            ],
            &["n/config.json", "architecture.pe_levels = 100000"],
            |w| {
                png(&w.join("i.png"), 8, 8);
                model_with(
                    "nerv",
                    &w.join("n"),
                    "\"pe_levels\": 80",
                    "\"pe_levels\": 100000",
                );
            },
        ),
        Case::new(
            "report with a bad second --model",
            &[
                "report",
                "--model",
                "{work}/ffn",
                "--model",
                "{work}/nerv",
                "--data",
                "{work}/none",
                "--out",
                "{out}",
            ],
            &["nerv/config.json", "a named pipe"],
            |w| {
                model_with("ffn", &w.join("ffn"), "\"seed\": 0", "\"seed\": 0");
                std::fs::create_dir(w.join("nerv")).unwrap();
                mkfifo(&w.join("nerv/config.json"));
            },
        ),
        Case::new(
            "import nerv whose weights do not fit the flags",
            &[
                "import",
                "nerv",
                "--checkpoint",
                "{work}/w.safetensors",
                "--frames",
                "30",
                "--args",
                TINY,
                "--out",
                "{out}/deeper/m",
            ],
            &["w.safetensors"],
            |w| {
                let src = repo().join("checkpoints/nerv_cityscapes_vps_0005/model.safetensors");
                std::fs::copy(src, w.join("w.safetensors")).unwrap();
            },
        ),
    ]
}

/// A command that fails after it began writing removes what it wrote: `demo` writes its FFN
/// half, then fails to train its NeRV on an empty clip. Run outside [`crate::harness::run_all`],
/// whose snapshot also compares the case folder's own modification time, which creating and
/// removing `out` changes.
#[test]
fn a_demo_that_fails_midway_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    png(&work.join("i.png"), 8, 8);
    std::fs::create_dir(work.join("empty")).unwrap();
    let names = |dir: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = names(&work);
    let args: Vec<std::ffi::OsString> = [
        "demo",
        "--image",
        "i.png",
        "--size",
        "8x8",
        "--iters",
        "2",
        "--nerv",
        "none",
        "--clip",
        "empty",
        "--nerv-epochs",
        "1",
        "--out",
        "out/demo",
    ]
    .iter()
    .map(Into::into)
    .collect();
    let o = crate::harness::run_limited(&work, &args, &root.path().join("stderr")).unwrap();
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    // The FFN half ran (the NeRV is trained after it) and the failure names the empty clip.
    assert!(
        o.stderr.contains("none not found: training a NeRV")
            && o.stderr.contains("empty: malformed dataset"),
        "{}",
        o.stderr
    );
    assert_eq!(names(&work), before, "{}", o.stderr);
    assert!(names(&work.join("empty")).is_empty());
}
