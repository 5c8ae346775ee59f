//! NeRV training with the official schedule (`HNeRV/train_nerv_all.py`, spec E.2): Adam (betas
//! 0.9/0.999, eps 1e-8), lr 1e-3 scaled per iteration by `cosine_0.1_1_0.1` (linear warm-up from
//! 0.1× over the first 10% of training, then cosine to 0), batches of 2 frames shuffled each epoch
//! (last incomplete batch dropped), the official `--loss` (L2, the paper's, unless the flags say
//! otherwise: [`Loss`]), PSNR evaluation every K epochs, with the official MS-SSIM where the
//! frames are large enough (more than 160 pixels a side, as `pytorch_msssim` requires).
//!
//! At every evaluation the full training state (weights, Adam moments, epoch, best PSNR) is written
//! atomically to `train_state.safetensors`; `resume` continues from it, so a killed run loses at
//! most one evaluation interval. The shuffling of epoch e depends only on (seed, e), so a resumed
//! run takes the same steps as an uninterrupted one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::loss::{ms_ssim, psnr, Loss, MS_SSIM_MIN_SIDE};
use super::nerv_fused::{FusedNervTrainer, Moments};
use super::split::DataSplit;
use crate::data::frames::nerv_frames;
use crate::error::{Result, XincError};
use crate::models::limits;
use crate::models::nerv::{nerv, Nerv, NervActivations, NervConfig};
use crate::models::{validate_weights, ModelDir, TrainingRecord, WeightSpec};

/// Training hyper-parameters (official defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct NervTrainParams {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Fraction of training spent warming up (`cosine_0.1_1_0.1`: 0.1).
    pub warmup: f64,
    /// Learning-rate multiplier at the start of the warm-up (0.1).
    pub warmup_start: f64,
    /// Evaluate, keep the best weights and write the training state every this many epochs (and
    /// at the last epoch).
    pub eval_every: usize,
    pub seed: u64,
    pub progress: bool,
    /// Stop after this epoch although the schedule spans `epochs` (a job split in parts, e.g. by
    /// a cluster's time limit); with a state folder, a later run resumes from there.
    pub until_epoch: Option<usize>,
    /// The official `--loss` (L2 for the paper's runs; the official default is Fusion6).
    pub loss: Loss,
    /// The official `--data_split`: the frames trained on; the others are evaluated as unseen.
    pub split: DataSplit,
    /// Train through the fused CPU network where it applies (the default; on the CPU, for the
    /// paper's NeRV family and a pixel loss). `false` keeps candle's autograd, the reference.
    pub fused: bool,
}

impl Default for NervTrainParams {
    fn default() -> Self {
        NervTrainParams {
            epochs: 1000,
            batch_size: 2,
            lr: 1e-3,
            warmup: 0.1,
            warmup_start: 0.1,
            eval_every: 50,
            seed: 1,
            progress: true,
            until_epoch: None,
            loss: Loss::default(),
            split: DataSplit::default(),
            fused: true,
        }
    }
}

impl NervTrainParams {
    /// Checks every number against [`limits`]: step counts in range, a finite learning rate in
    /// range, a stop epoch at which the state is written.
    pub fn validate(&self) -> Result<()> {
        limits::STEPS.check_range("epochs", self.epochs, 1)?;
        limits::STEPS.check_range("eval_every", self.eval_every, 1)?;
        limits::FRAMES.check_range("batch_size", self.batch_size, 1)?;
        limits::check_learning_rate("lr", self.lr)?;
        // A fraction of training (less than all of it) and a multiplier of the rate.
        if !(0.0..1.0).contains(&self.warmup) || !(0.0..=1.0).contains(&self.warmup_start) {
            return Err(XincError::InvalidArgument(format!(
                "warmup = {} must be in [0, 1) and warmup_start = {} in [0, 1]",
                self.warmup, self.warmup_start
            )));
        }
        let Some(until) = self.until_epoch else {
            return Ok(());
        };
        limits::STEPS.check_range("until_epoch", until, 1)?;
        // The state is written at evaluations only: a stop elsewhere would lose its last epochs.
        if until % self.eval_every != 0 && until < self.epochs {
            return Err(XincError::InvalidArgument(format!(
                "until_epoch {until} is neither a multiple of eval_every {} (the training state \
                 is written at evaluations) nor at least epochs {}",
                self.eval_every, self.epochs
            )));
        }
        Ok(())
    }

    /// The learning rate at fractional epoch `u·epochs` (`u` in [0, 1)).
    pub fn lr_at(&self, u: f64) -> f64 {
        let mult = if u < self.warmup {
            self.warmup_start + (1.0 - self.warmup_start) * u / self.warmup
        } else {
            0.5 * (1.0 + (std::f64::consts::PI * (u - self.warmup) / (1.0 - self.warmup)).cos())
        };
        self.lr * mult
    }
}

/// One evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct NervEval {
    pub epoch: usize,
    pub loss: f32,
    /// Mean over the trained frames of −10·log10(MSE + 1e-9) (official, unclamped).
    pub psnr: f64,
    /// Mean over the trained frames of the official MS-SSIM (`None` for frames with a side of
    /// 160 pixels or fewer, which MS-SSIM cannot measure).
    pub ms_ssim: Option<f64>,
    /// The PSNR over the held-out frames of `--data_split` (`None` when every frame is trained).
    pub unseen_psnr: Option<f64>,
}

/// What a run reached.
#[derive(Clone, Debug, PartialEq)]
pub struct NervTrainReport {
    pub best_epoch: usize,
    pub best_psnr: f64,
    pub history: Vec<NervEval>,
    pub seconds: f64,
    /// Seconds per epoch, measured over this run's epochs.
    pub seconds_per_epoch: f64,
    /// The epoch this run started from (0, or the resumed state's).
    pub resumed_from: usize,
}

/// A NeRV to train into a model folder: the clip, the flags that shape the model, the schedule
/// and the folder.
#[derive(Clone, Debug, PartialEq)]
pub struct NervFolderJob {
    /// A dataset root (with `video`) or a folder of PNG/JPEG frames.
    pub clip: PathBuf,
    /// The video within a dataset root (default: the first).
    pub video: Option<String>,
    /// Centre crop `[H, W]` applied to folder frames before resizing (dataset clips use their own).
    pub crop: Option<[usize; 2]>,
    /// The official flags that shape the model (frame size = fc_hw × strides); default the
    /// paper's, [`NervConfig::PAPER_ARGS`].
    pub args: String,
    pub params: NervTrainParams,
    /// The model folder (it also holds the training state).
    pub out: PathBuf,
    /// Continue from the training state in `out` when it exists.
    pub resume: bool,
}

impl Default for NervFolderJob {
    fn default() -> Self {
        NervFolderJob {
            clip: PathBuf::new(),
            video: None,
            crop: None,
            args: NervConfig::PAPER_ARGS.to_string(),
            params: NervTrainParams::default(),
            out: PathBuf::new(),
            resume: false,
        }
    }
}

/// Trains the NeRV of `job` on the frames of its clip and saves it as the model folder
/// `job.out`: weights and `config.json` with the training record. The training state is written
/// there at every evaluation, so `job.resume` continues a run that was killed.
pub fn train_nerv_folder(job: &NervFolderJob, device: &Device) -> Result<(Nerv, NervTrainReport)> {
    let params = &job.params;
    params.validate()?;
    let probe = NervConfig::from_official_args(&job.args, 1)?;
    let frames = nerv_frames(&job.clip, probe.frame_size(), job.video.clone(), job.crop)?;
    // With the clip's frame count: HNeRV's widths depend on it (the embeddings of all frames
    // come out of the parameter budget).
    let config = NervConfig::from_official_args(&job.args, frames.len())?;
    // The flags' `--loss`, when they carry one.
    let params = &NervTrainParams {
        loss: Loss::from_official_args(&job.args)?,
        split: DataSplit::from_official_args(&job.args)?,
        ..params.clone()
    };
    let out = job.out.as_path();
    std::fs::create_dir_all(out).map_err(|e| XincError::io(out, e))?;
    let (model, report) = train_nerv(config, &frames, params, Some(out), job.resume, device)?;
    let record = report.record(params, &job.clip.display().to_string());
    ModelDir::new(out).save_trained(&model, record)?;
    Ok((model, report))
}

impl NervTrainReport {
    /// What `config.json` records of this run of `params` on `input`.
    pub fn record(&self, params: &NervTrainParams, input: &str) -> TrainingRecord {
        TrainingRecord {
            input: input.to_string(),
            iters: params.epochs,
            seed: params.seed,
            lr: params.lr,
            eval_every: params.eval_every,
            best_iter: self.best_epoch,
            best_psnr: self.best_psnr,
            seconds: self.seconds,
        }
    }

    /// One line saying what the run of `config` reached and where the model went: the best
    /// epoch's PSNR, and its MS-SSIM and held-out PSNR where they were measured.
    pub fn summary(&self, config: &NervConfig, out: &Path) -> String {
        let best = self.history.iter().find(|e| e.epoch == self.best_epoch);
        let mut extra = String::new();
        if let Some(ms) = best.and_then(|e| e.ms_ssim) {
            extra += &format!(", MS-SSIM {ms:.4}");
        }
        if let Some(p) = best.and_then(|e| e.unseen_psnr) {
            extra += &format!(", held-out frames {p:.2} dB");
        }
        format!(
            "trained NeRV ({} params, {} frames): best PSNR {:.2} dB at epoch {}{extra} ({:.2} s/epoch, {:.1} s) -> {}",
            config.num_params(),
            config.frames,
            self.best_psnr,
            self.best_epoch,
            self.seconds_per_epoch,
            self.seconds,
            out.display()
        )
    }
}

/// Trains a NeRV on `frames` (each `[3, H, W]` in [0, 1], frame i decoded from t = i / T with
/// T = `frames.len()`). With `state_dir`, the training state is written there at every
/// evaluation and, when `resume` is set and a state exists, training continues from it.
pub fn train_nerv(
    config: NervConfig,
    frames: &[Vec<f32>],
    params: &NervTrainParams,
    state_dir: Option<&Path>,
    resume: bool,
    device: &Device,
) -> Result<(Nerv, NervTrainReport)> {
    check_inputs(&config, frames, params)?;
    let targets = frame_tensors(&config, frames, device)?;
    let state = match state_dir
        .map(TrainState::path)
        .filter(|p| resume && p.exists())
    {
        Some(path) => TrainState::load(&path, &config, params, device)?,
        None => TrainState::fresh(&config, params.seed, device)?,
    };
    run_epochs(config, state, targets, params, state_dir, device)
}

/// Fine-tunes `model` on its clip's `frames` for `params.epochs` epochs (the official schedule
/// over them), keeping the weights that `masks` (by official name, 0 or 1 per weight) zero at
/// zero after every step: the fine-tuning of a pruned model. Returns the best evaluated weights.
pub fn finetune_nerv(
    model: &Nerv,
    frames: &[Vec<f32>],
    params: &NervTrainParams,
    masks: HashMap<String, Tensor>,
    device: &Device,
) -> Result<(Nerv, NervTrainReport)> {
    let config = model.config().clone();
    check_inputs(&config, frames, params)?;
    let targets = frame_tensors(&config, frames, device)?;
    let weights: HashMap<String, Tensor> = model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(device)?)))
        .collect::<Result<_>>()?;
    let mut state = TrainState::from_weights(&config, weights)?;
    for (name, mask) in masks {
        if !state
            .vars
            .iter()
            .any(|(n, v)| *n == name && v.dims() == mask.dims())
        {
            return Err(XincError::InvalidArgument(format!(
                "fine-tuning: the mask `{name}` {:?} fits no weight of the model",
                mask.dims()
            )));
        }
        state.masks.insert(name, mask.to_device(device)?);
    }
    run_epochs(config, state, targets, params, None, device)
}

/// The training loop from `state` on: epochs, evaluations, the state saved to `state_dir`.
fn run_epochs(
    config: NervConfig,
    mut state: TrainState,
    targets: Vec<Tensor>,
    params: &NervTrainParams,
    state_dir: Option<&Path>,
    device: &Device,
) -> Result<(Nerv, NervTrainReport)> {
    let start = Instant::now();
    let model = state.model(&config, device)?;
    let (seen, unseen) = params.split.apply(targets.len());
    let steps_per_epoch = seen.len() / params.batch_size;
    let bar = progress_bar(params, state.epoch);
    let mut report = NervTrainReport {
        best_epoch: state.best_epoch,
        best_psnr: state.best_psnr,
        history: Vec::new(),
        seconds: 0.0,
        seconds_per_epoch: 0.0,
        resumed_from: state.epoch,
    };
    let mut fused = match params.fused {
        true => FusedNervTrainer::new(&model, &params.loss, state.moments(), device)?,
        false => None,
    };
    let hosts = match fused {
        Some(_) => (targets.iter())
            .map(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let first_epoch = state.epoch;
    let last_epoch = params
        .until_epoch
        .map_or(params.epochs, |e| e.min(params.epochs));
    for epoch in first_epoch..last_epoch {
        let mut loss_sum = 0.0f32;
        for (i, batch) in epoch_batches(&seen, params, epoch).iter().enumerate() {
            let u = (epoch as f64 + i as f64 / steps_per_epoch as f64) / params.epochs as f64;
            let lr = params.lr_at(u);
            loss_sum += match fused.as_mut() {
                Some(f) => fused_step(f, &model, batch, &hosts, lr)?,
                None => state.step(&model, batch, &targets, (lr, &params.loss), device)?,
            };
        }
        state.epoch = epoch + 1;
        bar.inc(1);
        if state.epoch % params.eval_every == 0 || state.epoch == params.epochs {
            if let Some(f) = &fused {
                state.take_fused(f)?;
            }
            let loss = loss_sum / steps_per_epoch as f32;
            if !loss.is_finite() {
                return Err(XincError::InvalidArgument(format!(
                    "NeRV training diverged at epoch {} (loss {loss})",
                    state.epoch
                )));
            }
            let (psnr, ms_ssim) = evaluate(&model, &targets, &seen, device)?;
            let unseen_psnr = match unseen.is_empty() {
                true => None,
                false => Some(evaluate(&model, &targets, &unseen, device)?.0),
            };
            tracing::info!(
                epoch = state.epoch,
                loss,
                psnr,
                ?ms_ssim,
                ?unseen_psnr,
                "nerv eval"
            );
            bar.set_message(format!("loss {loss:.6}  psnr {psnr:.2} dB"));
            report.history.push(NervEval {
                epoch: state.epoch,
                loss,
                psnr,
                ms_ssim,
                unseen_psnr,
            });
            if psnr > state.best_psnr {
                state.best_psnr = psnr;
                state.best_epoch = state.epoch;
                state.best = snapshot(&state.vars)?;
            }
            if let Some(dir) = state_dir {
                state.save(&TrainState::path(dir))?;
            }
        }
    }
    bar.finish_and_clear();
    report.best_epoch = state.best_epoch;
    report.best_psnr = state.best_psnr;
    report.seconds = start.elapsed().as_secs_f64();
    report.seconds_per_epoch =
        report.seconds / last_epoch.saturating_sub(first_epoch).max(1) as f64;
    let mut best = Nerv::from_tensors(config, state.best, "training snapshot", device)?;
    if best.config().is_hnerv() {
        best = best.embed_clip(&Tensor::cat(&targets, 0)?)?;
    }
    Ok((best, report))
}

/// One step of the fused CPU trainer on frames `batch` (`frames`: every frame, `[3, H, W]`).
fn fused_step(
    trainer: &mut FusedNervTrainer,
    model: &Nerv,
    batch: &[usize],
    frames: &[Vec<f32>],
    lr: f64,
) -> Result<f32> {
    let t: Vec<f64> = batch.iter().map(|&i| model.config().time_of(i)).collect();
    let embedding = model
        .embed(&t, &Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let target: Vec<f32> = batch
        .iter()
        .flat_map(|&i| frames[i].iter().copied())
        .collect();
    Ok(trainer.step(&embedding, &target, lr))
}

/// The clip's frames as `[1, 3, H, W]` tensors on `device`.
fn frame_tensors(config: &NervConfig, frames: &[Vec<f32>], device: &Device) -> Result<Vec<Tensor>> {
    let [h, w] = config.frame_size();
    Ok(frames
        .iter()
        .map(|f| Tensor::from_slice(f, (1, 3, h, w), device))
        .collect::<candle_core::Result<_>>()?)
}

fn check_inputs(config: &NervConfig, frames: &[Vec<f32>], params: &NervTrainParams) -> Result<()> {
    config.validate()?;
    let [h, w] = config.frame_size();
    if frames.len() != config.frames {
        return Err(XincError::InvalidArgument(format!(
            "{} frames given, the model is configured for {}",
            frames.len(),
            config.frames
        )));
    }
    if let Some(f) = frames.iter().find(|f| f.len() != 3 * h * w) {
        return Err(XincError::InvalidArgument(format!(
            "a frame has {} values, the model decodes 3x{h}x{w}",
            f.len()
        )));
    }
    params.validate()?;
    if params.loss.needs_ms_ssim() && h.min(w) < MS_SSIM_MIN_SIDE {
        return Err(XincError::InvalidArgument(format!(
            "--loss {}: MS-SSIM needs frames larger than 160 pixels on each side, these are {h}x{w}",
            params.loss.name()
        )));
    }
    let trained = params.split.apply(frames.len()).0.len();
    if trained < params.batch_size {
        return Err(XincError::InvalidArgument(format!(
            "batch size {} is more than the {trained} trained frames (of {})",
            params.batch_size,
            frames.len()
        )));
    }
    Ok(())
}

/// The batches of epoch `epoch` over the trained frames `seen`: a shuffle that depends only on
/// (seed, epoch), last partial batch dropped.
fn epoch_batches(seen: &[usize], params: &NervTrainParams, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = seen.to_vec();
    let mut rng =
        ChaCha8Rng::seed_from_u64(params.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
        .chunks_exact(params.batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// The forward pass of frames `batch` (`frames`: their targets, `[N, 3, H, W]`): NeRV from their
/// times, HNeRV from the frames themselves through the encoder; `train` puts batch norms in
/// training mode.
fn forward_batch(
    model: &Nerv,
    batch: &[usize],
    frames: &Tensor,
    train: bool,
    device: &Device,
) -> Result<NervActivations> {
    let t: Vec<f64> = batch.iter().map(|&i| model.config().time_of(i)).collect();
    let embedding = if model.config().is_hnerv() {
        model.encode(frames)?
    } else {
        model.embed(&t, device)?
    };
    model.decode(embedding, t, train)
}

/// Mean over `frames` of the official PSNR (inference mode).
/// Means over `frames` of the official PSNR and MS-SSIM (`None` when the frames are too small).
fn evaluate(
    model: &Nerv,
    targets: &[Tensor],
    frames: &[usize],
    device: &Device,
) -> Result<(f64, Option<f64>)> {
    let [h, w] = model.config().frame_size();
    let measurable = h.min(w) >= MS_SSIM_MIN_SIDE;
    let (mut total, mut total_ms) = (0.0, 0.0);
    for &i in frames {
        let out = forward_batch(model, &[i], &targets[i], false, device)?.output;
        total += psnr(&out, &targets[i])?[0];
        if measurable {
            let v = ms_ssim(&out, &targets[i])?.to_dtype(DType::F64)?;
            total_ms += v.to_vec1::<f64>()?[0];
        }
    }
    let n = frames.len().max(1) as f64;
    Ok((total / n, measurable.then_some(total_ms / n)))
}

fn snapshot(vars: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    vars.iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
        .collect()
}

/// The initial values of tensor `name` of shape `shape` (see [`TrainState::fresh`]); `shapes`
/// gives a bias its weight's fan-in.
fn initial_values(
    name: &str,
    shape: &[usize],
    shapes: &HashMap<&str, &[usize]>,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let prefix = name.rsplit_once('.').map_or("", |(p, _)| p);
    let weight = shapes.get(format!("{prefix}.weight").as_str()).copied();
    let is_norm = weight.is_some_and(|w| w.len() == 1);
    let constant = |v: f32| vec![v; n];
    match name.rsplit('.').next() {
        Some("running_mean") => constant(0.0),
        Some("running_var") => constant(1.0),
        Some("gamma") => constant(1e-6),
        Some("weight") if is_norm => constant(1.0),
        Some("bias") if is_norm || name.starts_with("encoder.") => constant(0.0),
        Some("weight") if name.starts_with("encoder.") => (0..n)
            .map(|_| (0.02 * standard_normal(rng)).clamp(-2.0, 2.0) as f32)
            .collect(),
        _ => {
            let w = weight.unwrap_or(shape);
            let fan_in: usize = w[1..].iter().product::<usize>().max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        }
    }
}

/// One standard normal draw (Box–Muller).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Everything needed to continue training: weights as variables, Adam moments, progress.
struct TrainState {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Optimiser steps taken.
    steps: usize,
    /// Epochs completed.
    epoch: usize,
    best_epoch: usize,
    best_psnr: f64,
    best: HashMap<String, Tensor>,
    /// Weights kept at zero where the mask is 0 (fine-tuning a pruned model); not saved.
    masks: HashMap<String, Tensor>,
}

impl TrainState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("train_state.safetensors")
    }

    /// The official initialisation, seeded ChaCha8: PyTorch's default for the decoder's convs
    /// (weights and biases `U(−1/√fan_in, 1/√fan_in)`, fan_in = `shape[1]` × kernel area, which
    /// for a transposed conv is its output channels), norms at the identity (weight 1, bias 0,
    /// running mean 0, variance 1), and for HNeRV's ConvNeXt encoder its own rule (convs and
    /// linears N(0, 0.02²) truncated at ±2, biases 0, layer scale γ = 10⁻⁶).
    fn fresh(config: &NervConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let specs = config.weight_specs();
        let shapes: HashMap<&str, &[usize]> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.shape.as_slice()))
            .collect();
        let mut tensors = HashMap::new();
        for spec in &specs {
            let values = initial_values(&spec.name, &spec.shape, &shapes, &mut rng);
            tensors.insert(
                spec.name.clone(),
                Tensor::from_vec(values, spec.shape.clone(), device)?,
            );
        }
        Self::from_weights(config, tensors)
    }

    fn from_weights(config: &NervConfig, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let mut vars = Vec::new();
        for spec in config.weight_specs() {
            let t = tensors
                .get(&spec.name)
                .ok_or_else(|| XincError::MissingTensor {
                    origin: "training state".into(),
                    name: spec.name.clone(),
                })?;
            // A copy: a variable given in would otherwise be trained in place.
            vars.push((spec.name.clone(), Var::from_tensor(&t.copy()?)?));
        }
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let m = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<candle_core::Result<_>>()?;
        let best = snapshot(&vars)?;
        Ok(TrainState {
            vars,
            m,
            v,
            steps: 0,
            epoch: 0,
            best_epoch: 0,
            best_psnr: f64::NEG_INFINITY,
            best,
            masks: HashMap::new(),
        })
    }

    /// A model whose convolutions share storage with the variables.
    fn model(&self, config: &NervConfig, device: &Device) -> Result<Nerv> {
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        nerv(
            config.clone(),
            VarBuilder::from_tensors(map, DType::F32, device),
        )
    }

    /// The Adam state the fused trainer starts from.
    fn moments(&self) -> Moments<'_> {
        Moments {
            m: &self.m,
            v: &self.v,
            masks: self.vars.iter().map(|(n, _)| self.masks.get(n)).collect(),
            steps: self.steps,
        }
    }

    /// Takes the fused trainer's weights, moments and step count.
    fn take_fused(&mut self, trainer: &FusedNervTrainer) -> Result<()> {
        let tensors = trainer.tensors()?;
        for (k, (name, w, m, v)) in tensors.into_iter().enumerate() {
            debug_assert_eq!(name, self.vars[k].0);
            let dev = self.vars[k].1.device().clone();
            self.vars[k].1.set(&w.to_device(&dev)?)?;
            (self.m[k], self.v[k]) = (m.to_device(&dev)?, v.to_device(&dev)?);
        }
        self.steps = trainer.steps;
        Ok(())
    }

    /// One Adam step on a batch; returns the batch loss.
    fn step(
        &mut self,
        model: &Nerv,
        batch: &[usize],
        targets: &[Tensor],
        (lr, loss): (f64, &Loss),
        device: &Device,
    ) -> Result<f32> {
        let target = Tensor::cat(&batch.iter().map(|&i| &targets[i]).collect::<Vec<_>>(), 0)?;
        let out = forward_batch(model, batch, &target, true, device)?.output;
        let loss = loss.forward(&out, &target)?;
        let grads = loss.backward()?;
        self.steps += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let bc1 = 1.0 - b1.powi(self.steps as i32);
        let bc2 = 1.0 - b2.powi(self.steps as i32);
        for (k, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: the moments must not keep each step's computation graph alive.
            let g = g.detach();
            self.m[k] = ((&self.m[k] * b1)? + (&g * (1.0 - b1))?)?.detach();
            self.v[k] = ((&self.v[k] * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
            let denom = ((self.v[k].sqrt()? / bc2.sqrt())? + eps)?;
            let update = ((&self.m[k] / denom)? * (lr / bc1))?;
            let mut next = (var.as_tensor() - update)?;
            if let Some(mask) = self.masks.get(name) {
                next = (next * mask)?;
            }
            var.set(&next.detach())?;
        }
        Ok(loss.to_scalar::<f32>()?)
    }

    /// Writes the state atomically: weights as `w.<name>`, moments as `m.<name>`/`v.<name>`, best
    /// weights as `best.<name>`, counters as a small f64 tensor `meta` = [steps, epoch,
    /// best_epoch, best_psnr].
    fn save(&self, path: &Path) -> Result<()> {
        let mut out = Vec::new();
        for (k, (name, var)) in self.vars.iter().enumerate() {
            out.push((format!("w.{name}"), var.as_tensor().clone()));
            out.push((format!("m.{name}"), self.m[k].clone()));
            out.push((format!("v.{name}"), self.v[k].clone()));
            out.push((format!("best.{name}"), self.best[name].clone()));
        }
        let meta = [
            self.steps as f64,
            self.epoch as f64,
            self.best_epoch as f64,
            self.best_psnr,
        ];
        out.push(("meta".into(), Tensor::new(&meta, &Device::Cpu)?));
        crate::io::save_safetensors(path, &out)
    }

    /// Reads a state written by [`TrainState::save`] for `config`, checking it against the model
    /// before anything is built from it: every tensor present with its shape and finite values,
    /// nothing else, and counters that fit this run (`params`). Errors name the file and the
    /// tensor.
    fn load(
        path: &Path,
        config: &NervConfig,
        params: &NervTrainParams,
        device: &Device,
    ) -> Result<Self> {
        let origin = path.display().to_string();
        let mut all = crate::io::load_safetensors(path, device)?;
        let meta = all.remove("meta").ok_or_else(|| XincError::MissingTensor {
            origin: origin.clone(),
            name: "meta".into(),
        })?;
        let specs = config.weight_specs();
        let state_specs: Vec<WeightSpec> = ["w", "m", "v", "best"]
            .iter()
            .flat_map(|part| {
                specs
                    .iter()
                    .map(move |s| WeightSpec::new(format!("{part}.{}", s.name), &s.shape))
            })
            .collect();
        let mut all = validate_weights(&origin, all, &state_specs, device)?;
        let mut take = |part: &str, name: &str| {
            all.remove(&format!("{part}.{name}"))
                .expect("validate_weights returned every spec")
        };
        let weights = specs
            .iter()
            .map(|s| (s.name.clone(), take("w", &s.name)))
            .collect::<HashMap<_, _>>();
        let mut state = Self::from_weights(config, weights)?;
        for (k, s) in specs.iter().enumerate() {
            state.m[k] = take("m", &s.name);
            state.v[k] = take("v", &s.name);
            state.best.insert(s.name.clone(), take("best", &s.name));
        }
        let steps_per_epoch = params.split.apply(config.frames).0.len() / params.batch_size.max(1);
        (state.steps, state.epoch, state.best_epoch, state.best_psnr) =
            read_meta(path, &meta, steps_per_epoch, params.epochs)?;
        tracing::info!(epoch = state.epoch, "resuming NeRV training");
        Ok(state)
    }
}

/// The counters of a training state, `meta` = [steps, epoch, best_epoch, best_psnr]: whole
/// numbers that fit a run of `epochs` epochs of `steps_per_epoch` steps, evaluated at least once
/// (a state is written at evaluations), and a finite PSNR.
fn read_meta(
    path: &Path,
    meta: &Tensor,
    steps_per_epoch: usize,
    epochs: usize,
) -> Result<(usize, usize, usize, f64)> {
    let bad = |m: String| XincError::checkpoint(path, format!("tensor `meta`: {m}"));
    if meta.dims() != [4] {
        return Err(bad(format!(
            "shape {:?}, expected [4] (steps, epoch, best_epoch, best_psnr)",
            meta.dims()
        )));
    }
    let values = meta.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let count = |i: usize, what: &str| {
        let v = values[i];
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= (usize::MAX >> 1) as f64 {
            Ok(v as usize)
        } else {
            Err(bad(format!("{what} = {v} is not a count")))
        }
    };
    let (steps, epoch, best_epoch) = (
        count(0, "steps")?,
        count(1, "epoch")?,
        count(2, "best_epoch")?,
    );
    let best_psnr = values[3];
    if !(1..=epochs).contains(&epoch) {
        return Err(bad(format!(
            "epoch = {epoch} is outside this run's epochs 1..={epochs}"
        )));
    }
    if steps_per_epoch.checked_mul(epoch) != Some(steps) {
        return Err(bad(format!(
            "steps = {steps} is not epoch {epoch} × {steps_per_epoch} steps per epoch (a state \
             of another clip or batch size)"
        )));
    }
    if !(1..=epoch).contains(&best_epoch) || !best_psnr.is_finite() {
        return Err(bad(format!(
            "best_epoch = {best_epoch} with best_psnr = {best_psnr}: expected an evaluated epoch \
             in 1..={epoch} and a finite PSNR"
        )));
    }
    Ok((steps, epoch, best_epoch, best_psnr))
}

fn progress_bar(params: &NervTrainParams, done: usize) -> ProgressBar {
    if !params.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(params.epochs as u64);
    bar.set_position(done as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "training NeRV {bar:30} epoch {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("static template is valid"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_the_official_cosine_with_warm_up() {
        let p = NervTrainParams::default();
        assert!((p.lr_at(0.0) - 1e-4).abs() < 1e-12);
        assert!((p.lr_at(0.05) - 5.5e-4).abs() < 1e-12);
        assert!((p.lr_at(0.1) - 1e-3).abs() < 1e-12);
        assert!((p.lr_at(0.55) - 5e-4).abs() < 1e-12);
        assert!(p.lr_at(0.999) < 1e-8);
    }

    /// A tiny NeRV's state after `epoch` epochs of 2 steps (4 frames, batches of 2), saved.
    fn saved_state(dir: &Path, epoch: usize) -> (NervConfig, PathBuf) {
        let args =
            "--embed pe_1.25_4 --fc_hw 1_2 --dec_strds 2 2 --modelsize 0.0005 --lower_width 2";
        let config = NervConfig::from_official_args(args, 4).unwrap();
        let mut state = TrainState::fresh(&config, 1, &Device::Cpu).unwrap();
        (state.steps, state.epoch, state.best_epoch, state.best_psnr) =
            (2 * epoch, epoch, epoch, 20.0);
        let path = TrainState::path(dir);
        state.save(&path).unwrap();
        (config, path)
    }

    #[test]
    fn a_saved_state_loads_and_a_bad_one_names_the_file_and_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let params = NervTrainParams {
            epochs: 10,
            ..NervTrainParams::default()
        };
        let (config, path) = saved_state(dir.path(), 5);
        let state = TrainState::load(&path, &config, &params, &Device::Cpu).unwrap();
        assert_eq!((state.steps, state.epoch, state.best_epoch), (10, 5, 5));
        let load_err = |config: &NervConfig, params: &NervTrainParams| {
            TrainState::load(&path, config, params, &Device::Cpu)
                .err()
                .expect("refused")
                .to_string()
        };
        // The state of another architecture: a shape mismatch naming the file and the tensor,
        // not "shape mismatch in add" at the first step.
        let wider = NervConfig {
            lower_width: 3,
            ..config.clone()
        };
        let err = load_err(&wider, &params);
        assert!(
            err.contains(
                "train_state.safetensors: tensor `w.decoder.1.conv.upconv.0.weight` has shape"
            ),
            "{err}"
        );
        // Counters that do not fit this run.
        let err = load_err(
            &config,
            &NervTrainParams {
                epochs: 3,
                ..params.clone()
            },
        );
        assert!(
            err.contains("tensor `meta`: epoch = 5 is outside this run's epochs 1..=3"),
            "{err}"
        );
        let err = load_err(
            &NervConfig {
                frames: 6,
                ..config.clone()
            },
            &params,
        );
        assert!(
            err.contains("steps = 10 is not epoch 5 × 3 steps per epoch"),
            "{err}"
        );
        // A non-finite moment and a stray tensor.
        let mut all = crate::io::load_safetensors(&path, &Device::Cpu).unwrap();
        let name = "m.head_layer.bias".to_string();
        all.insert(
            name.clone(),
            Tensor::new(&[f32::NAN, 0.0, 0.0], &Device::Cpu).unwrap(),
        );
        crate::io::save_safetensors(&path, &all.clone().into_iter().collect::<Vec<_>>()).unwrap();
        let err = load_err(&config, &params);
        assert!(
            err.contains("tensor `m.head_layer.bias` holds 1 non-finite value"),
            "{err}"
        );
        all.insert(name, Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
        all.insert(
            "x".into(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
        );
        crate::io::save_safetensors(&path, &all.into_iter().collect::<Vec<_>>()).unwrap();
        let err = load_err(&config, &params);
        assert!(err.contains("unexpected tensor(s) [\"x\"]"), "{err}");
    }

    #[test]
    fn a_stop_between_evaluations_is_refused() {
        let p = NervTrainParams {
            epochs: 100,
            eval_every: 10,
            until_epoch: Some(15),
            ..NervTrainParams::default()
        };
        let err = p.validate().unwrap_err().to_string();
        assert!(
            err.contains("until_epoch 15 is neither a multiple of eval_every 10"),
            "{err}"
        );
        assert!(NervTrainParams {
            until_epoch: Some(20),
            ..p.clone()
        }
        .validate()
        .is_ok());
        assert!(NervTrainParams {
            until_epoch: Some(150),
            ..p.clone()
        }
        .validate()
        .is_ok());
        let err = NervTrainParams { lr: f64::NAN, ..p }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr = NaN is not a finite number"), "{err}");
    }

    #[test]
    fn fused_training_follows_candle_autograd() {
        let model = crate::models::nerv::tiny_nerv("");
        let config = model.config().clone();
        let frames = stripes(&config);
        let masks: HashMap<String, Tensor> = {
            let (name, w) = &model.named_tensors()[4];
            let n = w.elem_count();
            let m: Vec<f32> = (0..n).map(|i| (i % 3 != 0) as u8 as f32).collect();
            [(
                name.clone(),
                Tensor::from_vec(m, w.dims(), &Device::Cpu).unwrap(),
            )]
            .into()
        };
        for loss in ["L2", "Fusion8"] {
            let params = |fused| NervTrainParams {
                epochs: 6,
                eval_every: 1,
                progress: false,
                loss: Loss::from_name(loss).unwrap(),
                fused,
                ..NervTrainParams::default()
            };
            let dev = Device::Cpu;
            let run = |fused| finetune_nerv(&model, &frames, &params(fused), masks.clone(), &dev);
            let ((fused, rf), (candle, rc)) = (run(true).unwrap(), run(false).unwrap());
            for (a, b) in rf.history.iter().zip(&rc.history) {
                assert!(
                    (a.loss - b.loss).abs() < 1e-4 * b.loss,
                    "{loss}: {} {}",
                    a.loss,
                    b.loss
                );
                assert!(
                    (a.psnr - b.psnr).abs() < 1e-3,
                    "{loss}: {} {}",
                    a.psnr,
                    b.psnr
                );
            }
            assert_eq!(rf.history.len(), 6);
            for ((name, a), (_, b)) in fused.named_tensors().iter().zip(candle.named_tensors()) {
                let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let worst = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                // 6 Adam steps of lr ≤ 1e-3 move a weight by at most 6e-3.
                assert!(worst < 2e-5, "{loss}: {name} differs by {worst}");
                if masks.contains_key(name) {
                    assert!(
                        a.iter().step_by(3).all(|&v| v == 0.0),
                        "{name}: pruned weights moved"
                    );
                }
            }
        }
    }

    /// Two frames of `config`'s size: smooth stripes that differ per frame.
    fn stripes(config: &NervConfig) -> Vec<Vec<f32>> {
        let [h, w] = config.frame_size();
        (0..config.frames)
            .map(|t| {
                (0..3 * h * w)
                    .map(|i| {
                        0.5 + 0.3 * ((i % w) as f32 * 0.1 + (i / w) as f32 * 0.05 + t as f32).sin()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn evaluation_measures_ms_ssim_where_frames_are_large_enough() {
        let args =
            "--embed pe_1.25_4 --fc_hw 11_11 --dec_strds 2 2 2 2 --modelsize 0.005 --lower_width 2";
        let config = NervConfig::from_official_args(args, 2).unwrap();
        assert_eq!(config.frame_size(), [176, 176]);
        let frames = stripes(&config);
        let params = NervTrainParams {
            epochs: 1,
            eval_every: 1,
            progress: false,
            ..NervTrainParams::default()
        };
        let (model, report) =
            train_nerv(config.clone(), &frames, &params, None, false, &Device::Cpu).unwrap();
        // One evaluation, of the weights that are kept: its MS-SSIM is the mean of the frames'.
        let got = report.history[0]
            .ms_ssim
            .expect("176-pixel frames are measured");
        let mut want = 0.0;
        for (i, f) in frames.iter().enumerate() {
            let target = Tensor::from_slice(f, (1, 3, 176, 176), &Device::Cpu).unwrap();
            let out = forward_batch(&model, &[i], &target, false, &Device::Cpu)
                .unwrap()
                .output;
            want += ms_ssim(&out, &target).unwrap().to_vec1::<f32>().unwrap()[0] as f64 / 2.0;
        }
        assert!(
            got > 0.0 && got <= 1.0 && (got - want).abs() < 1e-6,
            "{got} vs {want}"
        );
        assert!(report
            .summary(&config, Path::new("m"))
            .contains(&format!("MS-SSIM {got:.4}")));

        // Frames of 160 pixels or fewer: no MS-SSIM, and an MS-SSIM loss is refused up front.
        let small = NervConfig::from_official_args(&args.replace("11_11", "10_10"), 2).unwrap();
        let frames = stripes(&small);
        let (_, report) =
            train_nerv(small.clone(), &frames, &params, None, false, &Device::Cpu).unwrap();
        assert_eq!(report.history[0].ms_ssim, None);
        let fusion10 = NervTrainParams {
            loss: Loss::from_name("Fusion10").unwrap(),
            ..params
        };
        let err = train_nerv(small, &frames, &fusion10, None, false, &Device::Cpu)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("--loss Fusion10: MS-SSIM needs frames larger than 160 pixels"),
            "{err}"
        );
    }

    #[test]
    fn batches_are_seeded_per_epoch_and_drop_the_last() {
        let p = NervTrainParams::default();
        let all: Vec<usize> = (0..7).collect();
        let a = epoch_batches(&all, &p, 3);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|b| b.len() == 2));
        assert_eq!(a, epoch_batches(&all, &p, 3));
        assert_ne!(a, epoch_batches(&all, &p, 4));
        // Only the trained frames of a split are drawn.
        let (seen, _) = DataSplit::from_official_args("--data_split 2_2_3")
            .unwrap()
            .apply(7);
        let b = epoch_batches(&seen, &p, 0);
        assert!(b.iter().flatten().all(|i| i % 3 != 2));
    }
}
