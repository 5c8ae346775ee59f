//! Full-batch training of an FFN on one image, as the official `image_inr` trainer does: Adam
//! (lr 9e-4, betas 0.9/0.999, eps 1e-8, no weight decay, no schedule), MSE loss, evaluation every
//! K iterations with the official PSNR, and the best model kept.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Module, Tensor, Var};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};

use super::psnr_quantised;
use crate::tensor::with_f32_slice;
use crate::data::image::ImageTensor;
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnConfig, FourierFeatures};

/// Training hyper-parameters (official defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct FfnTrainParams {
    pub iters: usize,
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// Evaluate (and possibly keep the model) every this many iterations, and at the last one.
    pub eval_every: usize,
    pub seed: u64,
    /// Show an indicatif progress bar.
    pub progress: bool,
}

impl Default for FfnTrainParams {
    fn default() -> Self {
        FfnTrainParams {
            iters: 1000,
            lr: 9e-4,
            betas: (0.9, 0.999),
            eps: 1e-8,
            eval_every: 50,
            seed: 0,
            progress: true,
        }
    }
}

/// One evaluation during training.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPoint {
    pub iter: usize,
    pub loss: f32,
    pub psnr: f64,
}

/// What a training run reached.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    pub best_iter: usize,
    pub best_psnr: f64,
    pub history: Vec<EvalPoint>,
    pub seconds: f64,
}

/// Trains a fresh FFN of `config` on `target` and returns the best-PSNR model.
pub fn train_ffn(config: FfnConfig, target: &ImageTensor, params: &FfnTrainParams, device: &Device) -> Result<(Ffn, TrainReport)> {
    config.validate()?;
    if [target.height, target.width] != config.data_shape {
        return Err(XincError::InvalidArgument(format!(
            "image is {}x{} but the model is configured for {:?}",
            target.height, target.width, config.data_shape
        )));
    }
    if params.iters == 0 || params.eval_every == 0 {
        return Err(XincError::InvalidArgument("iters and eval_every must be positive".into()));
    }
    let start = Instant::now();
    let init = config.init_tensors(params.seed, device)?;
    let (b, vars) = split_trainable(init)?;
    let model = model_from_vars(&config, &b, &vars);
    let features = model.encoding().forward(&model.coordinates(device)?)?;
    let gt = Tensor::from_slice(&target.data, (config.num_pixels(), config.dim_out), device)?;
    let mut opt = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: params.lr,
            beta1: params.betas.0,
            beta2: params.betas.1,
            eps: params.eps,
            weight_decay: 0.0,
        },
    )?;
    let bar = progress_bar(params);
    let mut report = TrainReport {
        best_iter: 0,
        best_psnr: f64::NEG_INFINITY,
        history: Vec::new(),
        seconds: 0.0,
    };
    let mut best = snapshot(&model)?;
    for iter in 1..=params.iters {
        let pred = predict(&model, &features)?;
        let loss = (&pred - &gt)?.sqr()?.mean_all()?;
        opt.backward_step(&loss)?;
        bar.inc(1);
        if iter % params.eval_every == 0 || iter == params.iters {
            let loss = loss.to_scalar::<f32>()?;
            let psnr = with_f32_slice(&predict(&model, &features)?, |p| psnr_quantised(p, &target.data))?;
            if !loss.is_finite() {
                return Err(XincError::InvalidArgument(format!("training diverged at iteration {iter} (loss {loss})")));
            }
            bar.set_message(format!("loss {loss:.6}  psnr {psnr:.2} dB"));
            tracing::info!(iter, loss, psnr, "ffn eval");
            report.history.push(EvalPoint { iter, loss, psnr });
            if psnr > report.best_psnr {
                report.best_psnr = psnr;
                report.best_iter = iter;
                best = snapshot(&model)?;
            }
        }
    }
    bar.finish_and_clear();
    report.seconds = start.elapsed().as_secs_f64();
    let model = Ffn::from_tensors(config, best, "training snapshot", device)?;
    Ok((model, report))
}

/// The fixed Fourier matrix, and the trainable Linear parameters as candle variables.
fn split_trainable(init: Vec<(String, Tensor)>) -> Result<(Tensor, Vec<(String, Var)>)> {
    let mut b = None;
    let mut vars = Vec::new();
    for (name, t) in init {
        if name == "positional_encoding.B" {
            b = Some(t);
        } else {
            vars.push((name, Var::from_tensor(&t)?));
        }
    }
    let b = b.ok_or_else(|| XincError::InvalidArgument("initial weights lack positional_encoding.B".into()))?;
    Ok((b, vars))
}

/// A model whose Linear layers share storage with the optimiser's variables.
fn model_from_vars(config: &FfnConfig, b: &Tensor, vars: &[(String, Var)]) -> Ffn {
    let by_name: HashMap<&str, &Var> = vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let layers = (0..config.num_layers)
        .map(|i| {
            let w = by_name[format!("net.{i}.linear.weight").as_str()].as_tensor().clone();
            let bias = by_name[format!("net.{i}.linear.bias").as_str()].as_tensor().clone();
            Linear::new(w, Some(bias))
        })
        .collect();
    Ffn::new(config.clone(), FourierFeatures::new(b.clone()), layers)
}

fn predict(model: &Ffn, features: &Tensor) -> Result<Tensor> {
    let (_, pre) = model.forward_features(features)?;
    model.final_activation(&pre)
}

/// A detached copy of the current weights.
fn snapshot(model: &Ffn) -> Result<HashMap<String, Tensor>> {
    model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| Ok((n, t.detach().copy()?)))
        .collect()
}

fn progress_bar(params: &FfnTrainParams) -> ProgressBar {
    if !params.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(params.iters as u64);
    bar.set_style(
        ProgressStyle::with_template("training FFN {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("static template is valid"),
    );
    bar
}
