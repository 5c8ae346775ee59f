//! The device check: every canvas layer of the bundled FFN and NeRV (the two golden
//! configurations) and a short training of each, run on a device (CUDA) and on the CPU, compared
//! value by value and timed on the device.
//!
//! `xinc --device cuda check-device` runs it; `scripts/gpu-check.sh` prepares a GPU machine for
//! it. Canvas layers compare the streamed summaries (`sum_hw`, `abssum_hw`, `sum_neurons`); each
//! array's largest difference is taken relative to its largest CPU value and must stay within
//! `tolerance`. Training compares the loss histories of the same seeded runs.

use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::canvas::ffn::{ffn_canvas_summary, FfnLayer};
use crate::canvas::nerv::device::{layer_summary_on, layer_summary_tensors_on, DeviceOptions};
use crate::canvas::nerv::{nerv_canvas_summary, NervFrameData, NervLayer};
use crate::canvas::{CanvasOptions, CanvasSummary, LayerSummary, Method};
use crate::error::Result;
use crate::models::ffn::FfnConfig;
use crate::models::nerv::NervConfig;
use crate::study::Study;
use crate::train::ffn::{train_ffn, FfnTrainParams, TrainEngine};
use crate::train::nerv::{train_nerv, NervTrainParams};

/// What the check runs.
#[derive(Clone, Debug)]
pub struct DeviceCheckOptions {
    /// Timed runs per layer on the device (after one untimed warm-up run).
    pub repeats: usize,
    /// FFN training iterations on each device.
    pub ffn_iters: usize,
    /// NeRV training epochs on each device.
    pub nerv_epochs: usize,
    /// Extra NeRV epochs of the net step timing: a run of `1 + step_epochs` epochs less a run of
    /// one, each with a single evaluation at its end, divided by the extra steps.
    pub step_epochs: usize,
    /// NeRV frames to time the canvas on.
    pub frames: usize,
    /// Clip frames the NeRV trains on (`None`: all of them).
    pub train_frames: Option<usize>,
    /// The NeRV layers to check (`None`: all of them).
    pub nerv_layers: Option<Vec<NervLayer>>,
    /// Largest accepted difference, relative to the largest CPU value of each array.
    pub tolerance: f64,
}

impl Default for DeviceCheckOptions {
    fn default() -> Self {
        DeviceCheckOptions {
            repeats: 10,
            ffn_iters: 20,
            nerv_epochs: 2,
            step_epochs: 10,
            frames: 3,
            train_frames: None,
            nerv_layers: None,
            tolerance: 1e-4,
        }
    }
}

/// One canvas layer on one frame.
#[derive(Clone, Debug, Serialize)]
pub struct LayerCheck {
    pub model: String,
    pub layer: String,
    pub frame: usize,
    /// Milliseconds of one CPU run (the reference).
    pub cpu_ms: f64,
    /// Milliseconds of each timed device run, the summary copied to the host.
    pub device_ms: Vec<f64>,
    pub device_median_ms: f64,
    /// NeRV layers: the median milliseconds of the same computation with the summary left on
    /// the device (synchronised), i.e. without the copy to the host.
    pub device_resident_median_ms: Option<f64>,
    /// Largest difference of `sum_hw`, `abssum_hw` and `sum_neurons`, relative to each array's
    /// largest CPU value.
    pub max_rel_diff: f64,
    pub pass: bool,
}

/// One short training on both devices.
#[derive(Clone, Debug, Serialize)]
pub struct TrainCheck {
    pub model: String,
    /// (step or epoch, loss) on the CPU and on the device.
    pub cpu_loss: Vec<(usize, f32)>,
    pub device_loss: Vec<(usize, f32)>,
    /// Largest relative loss difference.
    pub max_rel_diff: f64,
    pub cpu_ms_per_step: f64,
    pub device_ms_per_step: f64,
    /// NeRV: milliseconds of one training step net of set-up and evaluation (a long run less a
    /// short one, `DeviceCheckOptions::step_epochs`), on the CPU and on the device.
    pub cpu_net_ms_per_step: Option<f64>,
    pub device_net_ms_per_step: Option<f64>,
    pub pass: bool,
}

/// Everything the check measured.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceCheckReport {
    pub device: String,
    pub layers: Vec<LayerCheck>,
    /// Per NeRV frame checked: the median milliseconds on the device of the analysis forward
    /// pass (every activation the canvas reads kept, copied to the host).
    pub nerv_frame_ms: Vec<f64>,
    pub training: Vec<TrainCheck>,
    pub pass: bool,
}

/// Runs the check on `device` against the CPU, with the bundled clip and models under `repo`.
pub fn check_device(
    repo: &std::path::Path,
    device: &Device,
    opts: &DeviceCheckOptions,
) -> Result<DeviceCheckReport> {
    let cpu = Device::Cpu;
    let open = |d: &Device| {
        let models = [
            repo.join(crate::study::BUNDLED_FFN),
            repo.join(crate::study::BUNDLED_NERV),
        ];
        Study::open(repo.join(crate::study::BUNDLED_DATA), &models, None, d)
    };
    let (on_cpu, on_dev) = (open(&cpu)?, open(device)?);
    let mut layers = ffn_layers(&on_cpu, &on_dev, opts)?;
    let (nerv, nerv_frame_ms) = nerv_layers(&on_cpu, &on_dev, opts)?;
    layers.extend(nerv);
    let training = vec![
        ffn_training(&on_cpu, device, opts)?,
        nerv_training(&on_cpu, device, opts)?,
    ];
    let pass = layers.iter().all(|l| l.pass) && training.iter().all(|t| t.pass);
    Ok(DeviceCheckReport {
        device: format!("{device:?}"),
        layers,
        nerv_frame_ms,
        training,
        pass,
    })
}

/// Times `f` once untimed, then `repeats` times, synchronising the device after each run.
fn timed<T>(
    device: &Device,
    repeats: usize,
    mut f: impl FnMut() -> Result<T>,
) -> Result<(T, Vec<f64>)> {
    let mut out = f()?;
    device.synchronize()?;
    let mut runs = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        out = f()?;
        device.synchronize()?;
        runs.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok((out, runs))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The largest difference over the three reductions, each relative to its largest CPU value.
fn summary_diff(cpu: &LayerSummary, dev: &LayerSummary) -> f64 {
    let rel = |a: &[f32], b: &[f32]| -> f64 {
        if a.len() != b.len() {
            return f64::INFINITY;
        }
        let scale = a.iter().fold(1e-12f64, |m, &v| m.max(f64::from(v.abs())));
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from((x - y).abs()) / scale)
            .fold(0.0, f64::max)
    };
    rel(&cpu.sum_hw, &dev.sum_hw)
        .max(rel(&cpu.abssum_hw, &dev.abssum_hw))
        .max(rel(&cpu.sum_neurons, &dev.sum_neurons))
}

fn layer_check(
    model: &str,
    frame: usize,
    cpu: (&CanvasSummary, f64),
    dev: (&CanvasSummary, Vec<f64>),
    tolerance: f64,
) -> LayerCheck {
    let (c, d) = (&cpu.0.layers[0], &dev.0.layers[0]);
    let max_rel_diff = summary_diff(c, d);
    LayerCheck {
        model: model.to_string(),
        layer: c.layer.clone(),
        frame,
        cpu_ms: cpu.1,
        device_median_ms: median(&dev.1),
        device_ms: dev.1,
        device_resident_median_ms: None,
        max_rel_diff,
        pass: max_rel_diff <= tolerance,
    }
}

fn ffn_layers(
    on_cpu: &Study,
    on_dev: &Study,
    opts: &DeviceCheckOptions,
) -> Result<Vec<LayerCheck>> {
    let (cpu_model, dev_model) = (on_cpu.ffn()?, on_dev.ffn()?);
    // One tile: the whole image.
    let canvas = CanvasOptions {
        tile: cpu_model.config().num_pixels(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for layer in FfnLayer::all(cpu_model.config(), Method::Official) {
        let start = Instant::now();
        let c = ffn_canvas_summary(cpu_model, &on_cpu.device, &[layer], &canvas)?;
        let cpu_ms = start.elapsed().as_secs_f64() * 1e3;
        let (d, runs) = timed(&on_dev.device, opts.repeats, || {
            ffn_canvas_summary(dev_model, &on_dev.device, &[layer], &canvas)
        })?;
        out.push(layer_check(
            "ffn",
            0,
            (&c, cpu_ms),
            (&d, runs),
            opts.tolerance,
        ));
        tracing::info!("ffn {layer}: {:?}", out.last());
    }
    Ok(out)
}

fn nerv_layers(
    on_cpu: &Study,
    on_dev: &Study,
    opts: &DeviceCheckOptions,
) -> Result<(Vec<LayerCheck>, Vec<f64>)> {
    let blocks = on_cpu.nerv()?.blocks().len();
    let frames = on_cpu.nerv()?.config().frames.min(opts.frames.max(1));
    let (mut out, mut forward_ms) = (Vec::new(), Vec::new());
    for f in 0..frames {
        let cpu_frame = on_cpu.nerv_frame(f)?;
        let (dev_frame, forward_runs) =
            timed(&on_dev.device, opts.repeats, || on_dev.nerv_frame(f))?;
        forward_ms.push(median(&forward_runs));
        tracing::info!("nerv frame {f}: forward {:.3} ms", median(&forward_runs));
        let layers = opts
            .nerv_layers
            .clone()
            .unwrap_or_else(|| NervLayer::all(blocks, Method::Official));
        for &layer in &layers {
            let mut kernels = vec![true];
            if f == 0 && on_dev.device.is_cuda() {
                kernels.push(false);
            }
            for custom_kernels in kernels {
                let check = nerv_layer_check(
                    (&cpu_frame, &dev_frame),
                    layer,
                    f,
                    &on_dev.device,
                    custom_kernels,
                    opts,
                )?;
                tracing::info!("nerv {layer} frame {f}: {check:?}");
                out.push(check);
            }
        }
    }
    Ok((out, forward_ms))
}

/// One NeRV layer: the CPU's fused summary against the device's, with or without xinc's own
/// CUDA kernels (the row is named `<layer> (tensor ops)` without).
fn nerv_layer_check(
    (cpu_frame, dev_frame): (&NervFrameData, &NervFrameData),
    layer: NervLayer,
    f: usize,
    device: &Device,
    custom_kernels: bool,
    opts: &DeviceCheckOptions,
) -> Result<LayerCheck> {
    let start = Instant::now();
    let c = nerv_canvas_summary(cpu_frame, &[layer], &Device::Cpu, &CanvasOptions::default())?;
    let cpu_ms = start.elapsed().as_secs_f64() * 1e3;
    let dev_opts = DeviceOptions {
        custom_kernels,
        ..DeviceOptions::default()
    };
    let (data, inputs) = (dev_frame.layer(layer)?, dev_frame.inputs(layer, None)?);
    let (d, runs) = timed(device, opts.repeats, || {
        layer_summary_on(&data, layer, inputs.clone(), device, &dev_opts)
    })?;
    let (_, resident) = timed(device, opts.repeats, || {
        layer_summary_tensors_on(&data, layer, inputs.clone(), device, &dev_opts)
    })?;
    let dev_summary = CanvasSummary {
        height: dev_frame.height,
        width: dev_frame.width,
        layers: vec![d],
        output: dev_frame.output.to_vec(),
    };
    let mut check = layer_check(
        "nerv",
        f,
        (&c, cpu_ms),
        (&dev_summary, runs),
        opts.tolerance,
    );
    check.device_resident_median_ms = Some(median(&resident));
    if !custom_kernels {
        check.layer = format!("{layer} (tensor ops)");
    }
    Ok(check)
}

fn loss_diff(a: &[(usize, f32)], b: &[(usize, f32)]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x.1 - y.1).abs()) / f64::from(x.1.abs()).max(1e-12))
        .fold(0.0, f64::max)
}

/// (step or epoch, loss) of a training run, and its milliseconds per step.
type TrainRun = (Vec<(usize, f32)>, f64);

/// Runs `run` on the CPU, then twice on `device` (the first a warm-up: kernels compile on first
/// use), and compares the loss histories.
fn train_check(
    model: &str,
    run: impl Fn(&Device) -> Result<TrainRun>,
    device: &Device,
    opts: &DeviceCheckOptions,
) -> Result<TrainCheck> {
    let (cpu_loss, cpu_ms) = run(&Device::Cpu)?;
    run(device)?;
    let (device_loss, dev_ms) = run(device)?;
    let max_rel_diff = loss_diff(&cpu_loss, &device_loss);
    Ok(TrainCheck {
        model: model.into(),
        cpu_loss,
        device_loss,
        max_rel_diff,
        cpu_ms_per_step: cpu_ms,
        device_ms_per_step: dev_ms,
        cpu_net_ms_per_step: None,
        device_net_ms_per_step: None,
        pass: max_rel_diff <= opts.tolerance * 10.0,
    })
}

/// Trains a fresh paper FFN on the clip's first frame for `ffn_iters` steps with candle's
/// autograd on both devices (same seed, same update), and compares the losses.
fn ffn_training(study: &Study, device: &Device, opts: &DeviceCheckOptions) -> Result<TrainCheck> {
    let target = study.clip.frame_ffn(0)?;
    let config = FfnConfig::paper(study.clip.size[0], study.clip.size[1]);
    let params = FfnTrainParams {
        iters: opts.ffn_iters,
        eval_every: (opts.ffn_iters / 4).max(1),
        progress: false,
        engine: TrainEngine::Autograd,
        ..FfnTrainParams::default()
    };
    let run = |d: &Device| -> Result<TrainRun> {
        let (_, report) = train_ffn(config.clone(), &target, &params, d)?;
        let losses = report.history.iter().map(|e| (e.iter, e.loss)).collect();
        Ok((losses, report.seconds * 1e3 / params.iters as f64))
    };
    train_check("ffn", run, device, opts)
}

/// Trains a fresh paper NeRV on the clip's frames for `nerv_epochs` epochs on both devices and
/// compares the losses.
fn nerv_training(study: &Study, device: &Device, opts: &DeviceCheckOptions) -> Result<TrainCheck> {
    let n = opts.train_frames.map_or(study.clip.frames.len(), |t| {
        t.clamp(1, study.clip.frames.len())
    });
    let frames = (0..n)
        .map(|f| study.nerv_target(f))
        .collect::<Result<Vec<_>>>()?;
    let config = NervConfig {
        frames: n,
        ..NervConfig::default()
    };
    let params = NervTrainParams {
        epochs: opts.nerv_epochs,
        eval_every: 1,
        progress: false,
        ..NervTrainParams::default()
    };
    // The trainer drops the last incomplete batch.
    let steps = (n / params.batch_size).max(1) as f64;
    let run = |d: &Device| -> Result<TrainRun> {
        let (_, report) = train_nerv(config.clone(), &frames, &params, None, false, d)?;
        let losses = report.history.iter().map(|e| (e.epoch, e.loss)).collect();
        Ok((losses, report.seconds_per_epoch * 1e3 / steps))
    };
    let mut check = train_check("nerv", run, device, opts)?;
    // The net step: the same training for 1 and for 1 + step_epochs epochs, one evaluation each.
    let seconds = |epochs: usize, d: &Device| -> Result<f64> {
        let p = NervTrainParams {
            epochs,
            eval_every: epochs,
            ..params.clone()
        };
        Ok(train_nerv(config.clone(), &frames, &p, None, false, d)?
            .1
            .seconds)
    };
    let net_ms = |d: &Device| -> Result<f64> {
        let long = 1 + opts.step_epochs;
        let extra = seconds(long, d)? - seconds(1, d)?;
        Ok(extra * 1e3 / (steps * opts.step_epochs as f64))
    };
    check.cpu_net_ms_per_step = Some(net_ms(&Device::Cpu)?);
    check.device_net_ms_per_step = Some(net_ms(device)?);
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_passes_on_the_cpu_against_itself() {
        let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let opts = DeviceCheckOptions {
            repeats: 1,
            ffn_iters: 2,
            nerv_epochs: 1,
            step_epochs: 1,
            frames: 1,
            train_frames: Some(2),
            nerv_layers: Some(vec!["head".parse().unwrap(), "block3".parse().unwrap()]),
            tolerance: 1e-4,
        };
        let report = check_device(&repo, &Device::Cpu, &opts).unwrap();
        // The FFN layers, then the NeRV's through candle's tensor operations on the CPU,
        // against the fused CPU path.
        assert_eq!(report.layers.len(), 4 + 2);
        for l in &report.layers {
            assert!(l.max_rel_diff <= 1e-5, "{l:?}");
            assert!(l.cpu_ms > 0.0 && l.device_ms.len() == 1);
        }
        assert!(report.pass);
        assert_eq!(report.training.len(), 2);
        assert!(report.training.iter().all(|t| t.max_rel_diff == 0.0));
        assert!(report.nerv_frame_ms.len() == 1 && report.nerv_frame_ms[0] > 0.0);
        let nerv = &report.training[1];
        let net = [nerv.cpu_net_ms_per_step, nerv.device_net_ms_per_step];
        assert!(
            net.iter().all(|t| t.is_some_and(f64::is_finite)),
            "{nerv:?}"
        );
        assert!(report.training[0].device_net_ms_per_step.is_none());
    }
}
