//! Parity with the official NeRV (`../shared/golden/nerv_synth`: the official HNeRV code in NeRV
//! mode, trained 400 steps on an 8-frame synthetic clip): positional encoding, every decoder
//! activation, and the head output.

mod common;

use candle_core::Device;
use common::*;
use xinc::models::nerv::{Nerv, NervConfig};

const ARGS: &str = "--conv_type convnext pshuffel --act gelu --norm none --crop_list -1 --resize_list 128_256 \
    --embed pe_1.25_80 --fc_hw 8_16 --dec_strds 4 2 2 --ks 0_3_3 --reduce 1.2 --skip_mssim --modelsize 1.0 \
    -e 100 --lower_width 6 -b 2 --lr 0.001 --loss L2";

#[test]
fn forward_matches_the_official_decoder_results() {
    let Some(dir) = golden_dir("forward_matches_the_official_decoder_results") else {
        return;
    };
    let dir = dir.join("nerv_synth");
    let config = NervConfig::from_official_args(ARGS, 8).unwrap();
    let model = Nerv::from_tensors(
        config,
        load(dir.join("weights.safetensors")),
        "weights.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let io = load(dir.join("io.safetensors"));
    for frame in [0usize, 3] {
        let p = format!("frame{frame}.");
        let t = io[&format!("{p}norm_idx")].to_vec1::<f64>().unwrap()[0];
        assert_eq!(t, model.config().time_of(frame));
        let acts = model.forward_frame(frame, &Device::Cpu).unwrap();
        // The f64 time makes the encoding reproducible bit for bit (f32 would be off by up to 1.29).
        assert_eq!(
            flat(&acts.embedding),
            flat(&io[&format!("{p}img_embed")]),
            "frame {frame} embedding"
        );
        for (i, ours) in acts.decoder.iter().enumerate() {
            let reference = &io[&format!("{p}decoder_results.{i}")];
            assert_eq!(ours.dims(), reference.dims());
            let err = max_abs_diff(&flat(ours), &flat(reference));
            assert!(
                err < 1e-5,
                "frame {frame} decoder_results.{i}: max abs diff {err}"
            );
        }
        let err = max_abs_diff(
            &flat(&acts.head_output),
            &flat(&io[&format!("{p}head_out_raw")]),
        );
        assert!(err < 1e-5, "frame {frame} head output: {err}");
        let err = max_abs_diff(&flat(&acts.output), &flat(&io[&format!("{p}img_out")]));
        assert!(err < 1e-5, "frame {frame} img_out: {err}");
    }
}

/// `tests/fixtures/pickles/tiny_nerv.pth` (scripts/make-pickle-fixtures.py): an official-style
/// `{epoch, state_dict, optimizer}` file whose keys carry `module.blocks.0.`.
#[test]
fn official_pth_imports_with_its_prefixes_stripped() {
    use xinc::models::import::read_nerv_tensors;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pickles/tiny_nerv.pth");
    let args = "--embed pe_1.25_4 --fc_hw 1_2 --dec_strds 2 2 --ks 0_3_3 --reduce 1.2 --modelsize 0.0005 --lower_width 2";
    let config = NervConfig::from_official_args(args, 5).unwrap();
    assert_eq!(config.widths(), vec![2, 2, 2]);
    let tensors = read_nerv_tensors(&path, &Device::Cpu).unwrap();
    let model = Nerv::from_tensors(config, tensors, "tiny_nerv.pth", &Device::Cpu).unwrap();
    for (n, spec) in model.config().weight_specs().iter().enumerate() {
        let (_, t) = model
            .named_tensors()
            .into_iter()
            .find(|(name, _)| *name == spec.name)
            .unwrap();
        let expected: Vec<f32> = (0..flat(&t).len())
            .map(|i| (0.1 * ((1000 * n + i) as f64).sin()) as f32)
            .collect();
        assert_eq!(flat(&t), expected, "{}", spec.name);
    }
    let acts = model.forward_frame(2, &Device::Cpu).unwrap();
    assert_eq!(acts.output.dims(), &[1, 3, 4, 8]);
    // A wrong architecture for the same file is a typed shape error.
    let wrong = NervConfig::from_official_args(&args.replace("1_2", "2_2"), 5).unwrap();
    let err = Nerv::from_tensors(
        wrong,
        read_nerv_tensors(&path, &Device::Cpu).unwrap(),
        "tiny_nerv.pth",
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(
        matches!(err, xinc::XincError::ShapeMismatch { .. }),
        "{err}"
    );
}
