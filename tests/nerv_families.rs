//! Every NeRV family of the official code (issue 20): HNeRV and the NeRV variants (block types,
//! norms, activations, several blocks per stride) train on a clip, survive a model folder (HNeRV
//! with its content embeddings), and their conservative canvas sums to the output in every block,
//! per output channel.

use candle_core::Device;
use xinc::canvas::nerv::{nerv_canvas_summary, NervFrameData, NervLayer};
use xinc::canvas::{CanvasOptions, Method};
use xinc::data::image::{resize_bilinear_antialias, ImageTensor};
use xinc::data::synth::scene::StreetVideo;
use xinc::models::nerv::{Nerv, NervConfig};
use xinc::models::ModelDir;
use xinc::train::loss::Loss;
use xinc::train::nerv::{train_nerv, NervTrainParams};
use xinc::train::split::DataSplit;

const FRAMES: usize = 4;

/// Frames of a generated street scene at `[h, w]`.
fn clip(h: usize, w: usize) -> Vec<Vec<f32>> {
    let video = StreetVideo::new(4 * h, 4 * w, 5);
    (0..FRAMES)
        .map(|t| {
            ImageTensor::from_rgb8(&resize_bilinear_antialias(&video.render(3 * t).rgb, h, w))
                .to_chw()
        })
        .collect()
}

/// Trains `args` for 80 epochs; checks it learned, saves and reloads it.
fn trained(args: &str, dir: &std::path::Path) -> (Nerv, Nerv) {
    let config = NervConfig::from_official_args(args, FRAMES).unwrap();
    let [h, w] = config.frame_size();
    let frames = clip(h, w);
    let params = NervTrainParams {
        epochs: 80,
        eval_every: 10,
        progress: false,
        loss: Loss::from_official_args(args).unwrap(),
        split: DataSplit::from_official_args(args).unwrap(),
        ..NervTrainParams::default()
    };
    let dev = Device::Cpu;
    let (model, report) = train_nerv(config, &frames, &params, None, false, &dev).unwrap();
    let first = report.history.first().unwrap().psnr;
    // A held-out frame (`--data_split`) is evaluated apart.
    let unseen = report.history.last().unwrap().unseen_psnr;
    assert_eq!(unseen.is_some(), args.contains("--data_split"), "{args}");
    assert!(
        report.best_psnr > first + 0.2,
        "{args}: PSNR {first:.2} -> {:.2}",
        report.best_psnr
    );
    let folder = ModelDir::new(dir);
    folder
        .save_trained(&model, report.record(&params, "street scene"))
        .unwrap();
    let (loaded, _) = folder.load_nerv(&dev).unwrap();
    (model, loaded)
}

fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The conservative maps of every block, summed over the neurons, equal the head output, per
/// output channel, to 1e-4 of its scale.
fn assert_conservative_maps_sum_to_the_output(model: &Nerv, what: &str) {
    let acts = model.forward_frame(2, &Device::Cpu).unwrap();
    let frame = NervFrameData::new(model, &acts).unwrap();
    let opts = CanvasOptions::from(Method::Conservative);
    let scale = frame.output.iter().fold(1f32, |m, v| m.max(v.abs()));
    let hw = frame.height * frame.width;
    for index in 1..=frame.blocks() {
        let layer = NervLayer::PerChannel(index);
        let s = nerv_canvas_summary(&frame, &[layer], &Device::Cpu, &opts).unwrap();
        let mut total = vec![0f32; 3 * hw];
        for chunk in s.layers[0].sum_neurons.chunks_exact(3 * hw) {
            total.iter_mut().zip(chunk).for_each(|(t, v)| *t += v);
        }
        for (p, (t, o)) in total.iter().zip(frame.output.iter()).enumerate() {
            assert!(
                (t - o).abs() <= 1e-4 * scale,
                "{what} {layer} value {p}: maps sum to {t}, the output is {o}"
            );
        }
    }
}

#[test]
fn every_nerv_variant_trains_reloads_and_conserves() {
    let base = "--embed pe_1.25_8 --fc_hw 2_4 --dec_strds 2 2 --modelsize 0.003 --lower_width 4";
    for variant in [
        "--conv_type convnext conv --act relu --norm bn --ks 0_2_2 --num_blks 1_2 --out_bias sigmoid \
         --loss Fusion6",
        "--conv_type convnext pshuffel --act sin --norm none --ks 0_3_3 --out_bias 0.5 \
         --data_split 3_3_4",
        "--conv_type convnext pshuffel --act hardswish --norm bn --ks 0_1_1",
        "--conv_type convnext pshuffel --act softplus --norm none --ks 0_3_5",
    ] {
        let args = format!("{base} {variant}");
        let dir = tempfile::tempdir().unwrap();
        let (model, loaded) = trained(&args, dir.path());
        let dev = Device::Cpu;
        assert_eq!(
            values(&model.forward_frame(1, &dev).unwrap().output),
            values(&loaded.forward_frame(1, &dev).unwrap().output),
            "{variant}: the model folder changes the output"
        );
        if variant.contains("bn") {
            // Batch norm learned running statistics (they start at mean 0, variance 1).
            let t = loaded
                .named_tensors()
                .into_iter()
                .find(|(n, _)| n == "decoder.1.norm.running_mean")
                .unwrap();
            assert!(values(&t.1).iter().any(|v| v.abs() > 1e-3), "{variant}");
        }
        assert_conservative_maps_sum_to_the_output(&loaded, variant);
    }
}

#[test]
fn hnerv_trains_from_its_frames_and_keeps_their_embeddings() {
    let args = "--enc_strds 2 2 2 --enc_dim 8_4 --dec_strds 2 2 --ks 0_3_3 --modelsize 0.003 \
                --lower_width 4 --conv_type convnext pshuffel --resize_list 8_16 --loss L1";
    // Instance norm needs HNeRV (NeRV's stem output is one pixel): it trains too.
    let dir = tempfile::tempdir().unwrap();
    let with_in = format!(
        "{} --conv_type convnext interpolate --act leaky01 --norm in --ks 0_3_3",
        args.replace("--conv_type convnext pshuffel", "")
    );
    let (_, loaded) = trained(&with_in, dir.path());
    assert!(
        !NervFrameData::new(&loaded, &loaded.forward_frame(0, &Device::Cpu).unwrap())
            .unwrap()
            .has_official_blocks()
    );
    assert_conservative_maps_sum_to_the_output(&loaded, "hnerv, interpolate, instance norm");
    let dir = tempfile::tempdir().unwrap();
    let (model, loaded) = trained(args, dir.path());
    let config = loaded.config();
    assert_eq!(
        (config.fc_hw, config.embed_hw(), config.frame_size()),
        ([2, 2], [1, 2], [8, 16])
    );
    // The model folder keeps one content embedding per frame; frame i decodes from its own.
    let emb = loaded.embeddings().unwrap();
    assert_eq!(emb.dims(), &[FRAMES, 4, 1, 2]);
    let dev = Device::Cpu;
    for f in 0..FRAMES {
        let a = values(&model.forward_frame(f, &dev).unwrap().output);
        let b = values(&loaded.forward_frame(f, &dev).unwrap().output);
        assert_eq!(a, b, "frame {f}");
    }
    let frames = clip(8, 16);
    let x = candle_core::Tensor::from_vec(frames[3].clone(), (1, 3, 8, 16), &dev).unwrap();
    let direct = loaded.encode(&x).unwrap();
    // The stored embedding is frame 3's encoding (to rounding: it was encoded in a batch).
    for (a, b) in values(&direct).iter().zip(values(&emb.get(3).unwrap())) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    // The decoder has the paper's form: both canvases exist; the conservative one conserves.
    let frame = NervFrameData::new(&loaded, &loaded.forward_frame(0, &dev).unwrap()).unwrap();
    assert!(frame.has_official_blocks());
    assert_conservative_maps_sum_to_the_output(&loaded, "hnerv");
    // Without embeddings an HNeRV cannot decode a frame by its index, and says why.
    let (bare, _) = {
        let cfg = config.clone();
        let tensors: std::collections::HashMap<_, _> = loaded.named_tensors().into_iter().collect();
        (Nerv::from_tensors(cfg, tensors, "test", &dev).unwrap(), ())
    };
    let err = bare.forward_frame(0, &dev).unwrap_err().to_string();
    assert!(err.contains("content embeddings"), "{err}");
}
