//! NeRV training with the official schedule (`HNeRV/train_nerv_all.py`, spec E.2): Adam (betas
//! 0.9/0.999, eps 1e-8), lr 1e-3 scaled per iteration by `cosine_0.1_1_0.1` (linear warm-up from
//! 0.1× over the first 10% of training, then cosine to 0), batches of 2 frames shuffled each epoch
//! (last incomplete batch dropped), L2 loss, PSNR evaluation every K epochs.
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

use crate::data::frames::nerv_frames;
use crate::error::{Result, XincError};
use crate::models::nerv::{nerv, Nerv, NervConfig};
use crate::models::{Architecture, ModelConfig, ModelDir, Provenance, TrainingRecord};

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
        }
    }
}

impl NervTrainParams {
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
    /// Mean over frames of −10·log10(MSE + 1e-9) (official, unclamped).
    pub psnr: f64,
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

/// Trains a NeRV of the official flags `args` on the frames of `clip` (a dataset root with
/// `video`, or a folder of frames) and saves it as the model folder `out`: weights and
/// `config.json` with the training record. The training state is written there at every
/// evaluation, so `resume` continues a run that was killed.
#[allow(clippy::too_many_arguments)]
pub fn train_nerv_folder(
    clip: &Path,
    video: Option<String>,
    crop: Option<[usize; 2]>,
    args: &str,
    params: &NervTrainParams,
    out: &Path,
    resume: bool,
    device: &Device,
) -> Result<(Nerv, NervTrainReport)> {
    let probe = NervConfig::from_official_args(args, 1)?;
    let frames = nerv_frames(clip, probe.frame_size(), video, crop)?;
    let config = NervConfig {
        frames: frames.len(),
        ..probe
    };
    std::fs::create_dir_all(out).map_err(|e| XincError::io(out, e))?;
    let (model, report) = train_nerv(config, &frames, params, Some(out), resume, device)?;
    let cfg = ModelConfig {
        format_version: ModelDir::FORMAT_VERSION,
        architecture: Architecture::Nerv(model.config().clone()),
        provenance: Provenance::Trained(TrainingRecord {
            input: clip.display().to_string(),
            iters: params.epochs,
            seed: params.seed,
            lr: params.lr,
            eval_every: params.eval_every,
            best_iter: report.best_epoch,
            best_psnr: report.best_psnr,
            seconds: report.seconds,
        }),
    };
    ModelDir::new(out).save(&model.named_tensors(), &cfg)?;
    Ok((model, report))
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
    let start = Instant::now();
    let [h, w] = config.frame_size();
    let targets: Vec<Tensor> = frames
        .iter()
        .map(|f| Tensor::from_slice(f, (1, 3, h, w), device))
        .collect::<candle_core::Result<_>>()?;
    let mut state = match state_dir
        .map(TrainState::path)
        .filter(|p| resume && p.exists())
    {
        Some(path) => TrainState::load(&path, &config, device)?,
        None => TrainState::fresh(&config, params.seed, device)?,
    };
    let model = state.model(&config, device)?;
    let steps_per_epoch = frames.len() / params.batch_size;
    let bar = progress_bar(params, state.epoch);
    let mut report = NervTrainReport {
        best_epoch: state.best_epoch,
        best_psnr: state.best_psnr,
        history: Vec::new(),
        seconds: 0.0,
        seconds_per_epoch: 0.0,
        resumed_from: state.epoch,
    };
    let first_epoch = state.epoch;
    let last_epoch = params
        .until_epoch
        .map_or(params.epochs, |e| e.min(params.epochs));
    for epoch in first_epoch..last_epoch {
        let mut loss_sum = 0.0f32;
        for (i, batch) in epoch_batches(frames.len(), params, epoch)
            .iter()
            .enumerate()
        {
            let u = (epoch as f64 + i as f64 / steps_per_epoch as f64) / params.epochs as f64;
            loss_sum += state.step(&model, batch, &targets, params.lr_at(u), device)?;
        }
        state.epoch = epoch + 1;
        bar.inc(1);
        if state.epoch % params.eval_every == 0 || state.epoch == params.epochs {
            let loss = loss_sum / steps_per_epoch as f32;
            if !loss.is_finite() {
                return Err(XincError::InvalidArgument(format!(
                    "NeRV training diverged at epoch {} (loss {loss})",
                    state.epoch
                )));
            }
            let psnr = evaluate(&model, &targets, device)?;
            tracing::info!(epoch = state.epoch, loss, psnr, "nerv eval");
            bar.set_message(format!("loss {loss:.6}  psnr {psnr:.2} dB"));
            report.history.push(NervEval {
                epoch: state.epoch,
                loss,
                psnr,
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
    let best = Nerv::from_tensors(config, state.best, "training snapshot", device)?;
    Ok((best, report))
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
    if params.epochs == 0
        || params.eval_every == 0
        || params.batch_size == 0
        || frames.len() < params.batch_size
    {
        return Err(XincError::InvalidArgument("epochs, eval_every and batch size must be positive, and batch size at most the frame count".into()));
    }
    Ok(())
}

/// The batches of epoch `epoch`: a shuffle that depends only on (seed, epoch), last partial
/// batch dropped.
fn epoch_batches(n: usize, params: &NervTrainParams, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(params.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
        .chunks_exact(params.batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Mean over frames of the official PSNR.
fn evaluate(model: &Nerv, targets: &[Tensor], device: &Device) -> Result<f64> {
    let mut total = 0.0;
    for (i, target) in targets.iter().enumerate() {
        let out = model.forward_frame(i, device)?.output;
        let mse = (out - target)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
        total += -10.0 * (mse + 1e-9).log10();
    }
    Ok(total / targets.len() as f64)
}

fn snapshot(vars: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    vars.iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
        .collect()
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
}

impl TrainState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("train_state.safetensors")
    }

    /// PyTorch's default initialisation: weights and biases `U(−1/√fan_in, 1/√fan_in)`, fan_in =
    /// input channels × kernel area; seeded ChaCha8.
    fn fresh(config: &NervConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let specs = config.weight_specs();
        let mut tensors = HashMap::new();
        for pair in specs.chunks(2) {
            let fan_in: usize = pair[0].shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f32).sqrt();
            for spec in pair {
                let n: usize = spec.shape.iter().product();
                let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                tensors.insert(
                    spec.name.clone(),
                    Tensor::from_vec(values, spec.shape.clone(), device)?,
                );
            }
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
            vars.push((spec.name.clone(), Var::from_tensor(t)?));
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

    /// One Adam step on a batch; returns the batch loss.
    fn step(
        &mut self,
        model: &Nerv,
        batch: &[usize],
        targets: &[Tensor],
        lr: f64,
        device: &Device,
    ) -> Result<f32> {
        let t: Vec<f64> = batch.iter().map(|&i| model.config().time_of(i)).collect();
        let out = model.forward(&t, device)?.output;
        let target = Tensor::cat(&batch.iter().map(|&i| &targets[i]).collect::<Vec<_>>(), 0)?;
        let loss = (out - target)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        self.steps += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let bc1 = 1.0 - b1.powi(self.steps as i32);
        let bc2 = 1.0 - b2.powi(self.steps as i32);
        for (k, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Detached: the moments must not keep each step's computation graph alive.
            let g = g.detach();
            self.m[k] = ((&self.m[k] * b1)? + (&g * (1.0 - b1))?)?.detach();
            self.v[k] = ((&self.v[k] * b2)? + (g.sqr()? * (1.0 - b2))?)?.detach();
            let denom = ((self.v[k].sqrt()? / bc2.sqrt())? + eps)?;
            let update = ((&self.m[k] / denom)? * (lr / bc1))?;
            var.set(&(var.as_tensor() - update)?.detach())?;
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

    fn load(path: &Path, config: &NervConfig, device: &Device) -> Result<Self> {
        let mut all = crate::io::load_safetensors(path, device)?;
        let mut take = |key: String| {
            all.remove(&key).ok_or_else(|| XincError::MissingTensor {
                origin: path.display().to_string(),
                name: key,
            })
        };
        let specs = config.weight_specs();
        let weights = specs
            .iter()
            .map(|s| Ok((s.name.clone(), take(format!("w.{}", s.name))?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let mut state = Self::from_weights(config, weights)?;
        for (k, s) in specs.iter().enumerate() {
            state.m[k] = take(format!("m.{}", s.name))?;
            state.v[k] = take(format!("v.{}", s.name))?;
            state
                .best
                .insert(s.name.clone(), take(format!("best.{}", s.name))?);
        }
        let meta = take("meta".into())?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let [steps, epoch, best_epoch, best_psnr] = meta[..] else {
            return Err(XincError::checkpoint(path, "`meta` must hold 4 values"));
        };
        (state.steps, state.epoch, state.best_epoch, state.best_psnr) = (
            steps as usize,
            epoch as usize,
            best_epoch as usize,
            best_psnr,
        );
        tracing::info!(epoch = state.epoch, "resuming NeRV training");
        Ok(state)
    }
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

    #[test]
    fn batches_are_seeded_per_epoch_and_drop_the_last() {
        let p = NervTrainParams::default();
        let a = epoch_batches(7, &p, 3);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|b| b.len() == 2));
        assert_eq!(a, epoch_batches(7, &p, 3));
        assert_ne!(a, epoch_batches(7, &p, 4));
    }
}
