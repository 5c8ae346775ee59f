//! NeRV training: the official schedule learns a clip, and a run killed after an evaluation
//! resumes to exactly the weights of an uninterrupted run.

use candle_core::Device;
use xinc::data::image::{resize_bilinear_antialias, ImageTensor};
use xinc::data::synth::scene::StreetVideo;
use xinc::models::nerv::NervConfig;
use xinc::train::nerv::{train_nerv, NervTrainParams};

const ARGS: &str =
    "--embed pe_1.25_8 --fc_hw 2_4 --dec_strds 2 2 --modelsize 0.003 --lower_width 4";
const FRAMES: usize = 4;

fn clip() -> (NervConfig, Vec<Vec<f32>>) {
    let config = NervConfig::from_official_args(ARGS, FRAMES).unwrap();
    let [h, w] = config.frame_size();
    let video = StreetVideo::new(4 * h, 4 * w, 5);
    let frames = (0..FRAMES)
        .map(|t| {
            ImageTensor::from_rgb8(&resize_bilinear_antialias(&video.render(3 * t).rgb, h, w))
                .to_chw()
        })
        .collect();
    (config, frames)
}

fn params(epochs: usize) -> NervTrainParams {
    NervTrainParams {
        epochs,
        eval_every: 50,
        progress: false,
        ..NervTrainParams::default()
    }
}

#[test]
fn training_learns_the_clip_and_resumes_exactly() {
    let (config, frames) = clip();
    assert_eq!(config.frame_size(), [8, 16]);
    let dev = Device::Cpu;
    let (full, report) =
        train_nerv(config.clone(), &frames, &params(200), None, false, &dev).unwrap();
    println!("{:?}", report.history);
    let first = report.history.first().unwrap().psnr;
    assert!(
        report.best_psnr > first + 2.0,
        "PSNR {first:.2} -> {:.2}",
        report.best_psnr
    );
    assert_eq!(report.history.len(), 4);

    // Stopped after epoch 100 (its state written at that evaluation), then resumed to 200.
    let dir = tempfile::tempdir().unwrap();
    let first_part = NervTrainParams {
        until_epoch: Some(100),
        ..params(200)
    };
    let (_, part) = train_nerv(
        config.clone(),
        &frames,
        &first_part,
        Some(dir.path()),
        false,
        &dev,
    )
    .unwrap();
    assert_eq!(part.history.last().unwrap().epoch, 100);
    let (resumed, again) =
        train_nerv(config, &frames, &params(200), Some(dir.path()), true, &dev).unwrap();
    assert_eq!(again.resumed_from, 100);
    assert_eq!(again.best_psnr, report.best_psnr);
    for ((name, a), (_, b)) in full.named_tensors().iter().zip(resumed.named_tensors()) {
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{name} differs after resuming");
    }
}
