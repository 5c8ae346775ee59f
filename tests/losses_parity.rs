//! Parity with the official HNeRV losses and metrics (`hnerv_utils.loss_fn`, `psnr_fn_single`,
//! `msssim_fn_single` over `pytorch_msssim`): every `--loss` per frame and batch-averaged, the
//! PSNR and the MS-SSIM of two 176×192 frame pairs (`scripts/reference/losses.py`, fixtures in
//! `tests/fixtures/reference/losses/`), to 2e-5 relative (losses, MS-SSIM) and 1e-4 dB (PSNR).
//! Measured: SSIM terms and MS-SSIM within 5e-6 (the window taps rounded as PyTorch rounds
//! them); the L1 and L2 means within 1.1e-5, the order of their f32 sums.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use xinc::train::loss::{ms_ssim, psnr, Loss};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/losses")
}

/// The two frames of `name` (`gt` or `pred`) as `[2, 3, H, W]` in [0, 1].
fn frames(name: &str) -> Tensor {
    let planes: Vec<Tensor> = (0..2)
        .map(|i| {
            let img = xinc::data::image::read_rgb8(&dir().join(format!("{name}_{i}.png"))).unwrap();
            let chw = xinc::data::image::ImageTensor::from_rgb8(&img).to_chw();
            let (h, w) = (img.height() as usize, img.width() as usize);
            Tensor::from_vec(chw, (1, 3, h, w), &Device::Cpu).unwrap()
        })
        .collect();
    Tensor::cat(&planes, 0).unwrap()
}

fn close(what: &str, ours: f64, theirs: f64) {
    assert!(
        (ours - theirs).abs() <= 2e-5 * theirs.abs().max(1e-3),
        "{what}: {ours} vs official {theirs}"
    );
}

#[test]
fn every_official_loss_and_metric_matches() {
    let (gt, pred) = (frames("gt"), frames("pred"));
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("losses.json")).unwrap()).unwrap();
    for loss in Loss::ALL {
        let name = loss.name();
        let mean = loss
            .forward(&pred, &gt)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        close(
            name,
            f64::from(mean),
            reference["loss_batch_mean"][name].as_f64().unwrap(),
        );
        let per = loss
            .per_frame(&pred, &gt)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, v) in per.iter().enumerate() {
            let want = reference["loss_per_frame"][name][i].as_f64().unwrap();
            close(&format!("{name} frame {i}"), f64::from(*v), want);
        }
    }
    let ours = psnr(&pred, &gt).unwrap();
    for (i, p) in ours.iter().enumerate() {
        let want = reference["psnr"][i].as_f64().unwrap();
        assert!((p - want).abs() < 1e-4, "PSNR frame {i}: {p} vs {want}");
    }
    let ms = ms_ssim(&pred, &gt).unwrap().to_vec1::<f32>().unwrap();
    for (i, v) in ms.iter().enumerate() {
        close(
            &format!("MS-SSIM frame {i}"),
            f64::from(*v),
            reference["msssim"][i].as_f64().unwrap(),
        );
    }
    // Frames too small for five scales are refused, as pytorch_msssim refuses them.
    let small = gt.narrow(2, 0, 160).unwrap();
    assert!(ms_ssim(&small, &small).is_err());
}
