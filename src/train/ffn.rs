//! Full-batch training of an FFN on one image, as the official `image_inr` trainer does: Adam
//! (lr 9e-4, betas 0.9/0.999, eps 1e-8, no weight decay, no schedule), MSE loss, evaluation every
//! K iterations with the official PSNR, and the best model kept.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Module, Tensor, Var};
use candle_nn::{AdamW, Linear, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};

use super::adam::AdamParams;
use super::fused::FusedFfn;
use super::psnr_quantised;
use crate::data::image::ImageTensor;
use crate::error::{Result, XincError};
use crate::models::ffn::{Encoding, Ffn, FfnConfig, HiddenActivation};
use crate::models::{limits, TrainingRecord};
use crate::tensor::with_f32_slice;

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
    pub engine: TrainEngine,
}

/// How the optimisation steps are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrainEngine {
    /// The fused CPU trainer on the CPU, candle autograd elsewhere.
    #[default]
    Auto,
    /// Hand-written forward/backward over preallocated buffers (CPU only).
    Fused,
    /// candle's autograd and AdamW, on any device.
    Autograd,
}

impl FfnTrainParams {
    /// Checks every number against [`limits`]: step counts in range, a finite learning rate in
    /// range, Adam's betas in [0, 1) and a positive epsilon.
    pub fn validate(&self) -> Result<()> {
        limits::STEPS.check_range("iters", self.iters, 1)?;
        limits::STEPS.check_range("eval_every", self.eval_every, 1)?;
        limits::check_learning_rate("lr", self.lr)?;
        let (b1, b2) = self.betas;
        if !(0.0..1.0).contains(&b1) || !(0.0..1.0).contains(&b2) {
            return Err(XincError::InvalidArgument(format!(
                "Adam betas ({b1}, {b2}) must be in [0, 1)"
            )));
        }
        limits::check_positive("eps", self.eps)
    }
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
            engine: TrainEngine::Auto,
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

impl TrainReport {
    /// What `config.json` records of this run of `params` on `input` (an image file, or a
    /// description of a generated one).
    pub fn record(&self, params: &FfnTrainParams, input: &str) -> TrainingRecord {
        TrainingRecord {
            input: input.to_string(),
            iters: params.iters,
            seed: params.seed,
            lr: params.lr,
            eval_every: params.eval_every,
            best_iter: self.best_iter,
            best_psnr: self.best_psnr,
            seconds: self.seconds,
        }
    }

    /// One line saying what the run of `config` reached and where the model went.
    pub fn summary(&self, config: &FfnConfig, out: &Path) -> String {
        format!(
            "trained {} ({} params): best PSNR {:.2} dB at iteration {} in {:.1} s -> {}",
            config.model_name().to_uppercase(),
            config.num_params(),
            self.best_psnr,
            self.best_iter,
            self.seconds,
            out.display()
        )
    }
}

/// Trains a fresh FFN of `config` on `target` and returns the best-PSNR model.
///
/// On the CPU the steps run in the fused trainer (no allocation per step); on other devices
/// through candle's autograd. Both compute the same update from the same seeded initialisation.
pub fn train_ffn(
    config: FfnConfig,
    target: &ImageTensor,
    params: &FfnTrainParams,
    device: &Device,
) -> Result<(Ffn, TrainReport)> {
    check_inputs(&config, target, params)?;
    let start = Instant::now();
    let init: HashMap<String, Tensor> = config
        .init_tensors(params.seed, &Device::Cpu)?
        .into_iter()
        .collect();
    let relu = config.activation == HiddenActivation::Relu;
    let fused = match params.engine {
        TrainEngine::Auto => device.is_cpu() && relu,
        TrainEngine::Fused if !device.is_cpu() => {
            return Err(XincError::InvalidArgument(
                "the fused FFN trainer runs on the CPU only".into(),
            ))
        }
        TrainEngine::Fused if !relu => {
            return Err(XincError::InvalidArgument(
                "the fused FFN trainer knows ReLU only: train SIREN with the autograd engine"
                    .into(),
            ))
        }
        TrainEngine::Fused => true,
        TrainEngine::Autograd => false,
    };
    let mut stepper: Box<dyn FfnStepper> = if fused {
        Box::new(FusedStepper::new(&config, &init, target, params)?)
    } else {
        Box::new(AutogradStepper::new(
            &config, &init, target, params, device,
        )?)
    };
    let bar = progress_bar(params);
    let mut report = TrainReport {
        best_iter: 0,
        best_psnr: f64::NEG_INFINITY,
        history: Vec::new(),
        seconds: 0.0,
    };
    let mut best = init;
    for iter in 1..=params.iters {
        let loss = stepper.step()?;
        bar.inc(1);
        if iter % params.eval_every == 0 || iter == params.iters {
            if !loss.is_finite() {
                return Err(XincError::InvalidArgument(format!(
                    "training diverged at iteration {iter} (loss {loss})"
                )));
            }
            let psnr = psnr_quantised(&stepper.predict()?, &target.data);
            bar.set_message(format!("loss {loss:.6}  psnr {psnr:.2} dB"));
            tracing::info!(iter, loss, psnr, "ffn eval");
            report.history.push(EvalPoint { iter, loss, psnr });
            if psnr > report.best_psnr {
                report.best_psnr = psnr;
                report.best_iter = iter;
                best = stepper.weights()?;
            }
        }
    }
    bar.finish_and_clear();
    report.seconds = start.elapsed().as_secs_f64();
    let model = Ffn::from_tensors(config, best, "training snapshot", device)?;
    Ok((model, report))
}

fn check_inputs(config: &FfnConfig, target: &ImageTensor, params: &FfnTrainParams) -> Result<()> {
    config.validate()?;
    if [target.height, target.width] != config.data_shape {
        return Err(XincError::InvalidArgument(format!(
            "image is {}x{} but the model is configured for {:?}",
            target.height, target.width, config.data_shape
        )));
    }
    params.validate()
}

/// One way of running the optimisation.
trait FfnStepper {
    /// One full-batch Adam step; returns the loss before it.
    fn step(&mut self) -> Result<f32>;
    /// The current prediction after the final activation, `[P, C]`.
    fn predict(&mut self) -> Result<Vec<f32>>;
    /// A copy of the current weights, with the official names.
    fn weights(&self) -> Result<HashMap<String, Tensor>>;
}

/// The encoded coordinates of the model's image grid, computed once: the encoding is not
/// trained.
fn fixed_features(encoding: &Encoding, config: &FfnConfig) -> Result<Tensor> {
    let grid = crate::data::coords::coordinate_grid(config.height(), config.width());
    let coords = Tensor::from_vec(grid, (config.num_pixels(), 2), &Device::Cpu)?;
    Ok(encoding.forward(&coords)?)
}

/// The model's coordinate encoding from its initial tensors.
fn encoding_of(config: &FfnConfig, init: &HashMap<String, Tensor>) -> Result<Encoding> {
    Encoding::from_tensors(config, |name| {
        init.get(name)
            .cloned()
            .ok_or_else(|| XincError::InvalidArgument(format!("initial weights lack {name}")))
    })
}

fn adam(params: &FfnTrainParams) -> AdamParams {
    AdamParams {
        lr: params.lr,
        beta1: params.betas.0,
        beta2: params.betas.1,
        eps: params.eps,
    }
}

/// The CPU path: [`FusedFfn`] (ReLU MLPs).
struct FusedStepper {
    inner: FusedFfn,
    encoding: Encoding,
}

impl FusedStepper {
    fn new(
        config: &FfnConfig,
        init: &HashMap<String, Tensor>,
        target: &ImageTensor,
        params: &FfnTrainParams,
    ) -> Result<Self> {
        let encoding = encoding_of(config, init)?;
        let features = with_f32_slice(&fixed_features(&encoding, config)?, <[f32]>::to_vec)?;
        let vec = |name: String| with_f32_slice(&init[&name], <[f32]>::to_vec);
        let weights = (0..config.num_layers)
            .map(|i| vec(format!("net.{i}.linear.weight")))
            .collect::<Result<_>>()?;
        let biases = (0..config.num_layers)
            .map(|i| vec(format!("net.{i}.linear.bias")))
            .collect::<Result<_>>()?;
        let inner = FusedFfn::new(
            config,
            features,
            target.data.clone(),
            weights,
            biases,
            adam(params),
        );
        Ok(FusedStepper { inner, encoding })
    }
}

impl FfnStepper for FusedStepper {
    fn step(&mut self) -> Result<f32> {
        Ok(self.inner.step())
    }

    fn predict(&mut self) -> Result<Vec<f32>> {
        Ok(self.inner.predict())
    }

    fn weights(&self) -> Result<HashMap<String, Tensor>> {
        let mut out: HashMap<String, Tensor> = self.encoding.named_tensors().into_iter().collect();
        for (i, (w, b)) in self
            .inner
            .net
            .weights
            .iter()
            .zip(&self.inner.net.biases)
            .enumerate()
        {
            out.insert(
                format!("net.{i}.linear.weight"),
                Tensor::from_slice(w, (b.len(), w.len() / b.len()), &Device::Cpu)?,
            );
            out.insert(
                format!("net.{i}.linear.bias"),
                Tensor::from_slice(b, b.len(), &Device::Cpu)?,
            );
        }
        Ok(out)
    }
}

/// The generic path: candle autograd and candle's AdamW (weight decay 0 = Adam), on any device.
struct AutogradStepper {
    model: Ffn,
    features: Tensor,
    target: Tensor,
    opt: AdamW,
}

impl AutogradStepper {
    fn new(
        config: &FfnConfig,
        init: &HashMap<String, Tensor>,
        target: &ImageTensor,
        params: &FfnTrainParams,
        device: &Device,
    ) -> Result<Self> {
        let encoding = encoding_of(config, init)?;
        let var = |name: String| -> Result<Var> {
            Ok(Var::from_tensor(&init[&name].to_device(device)?)?)
        };
        let mut vars = Vec::new();
        let mut layers = Vec::new();
        for i in 0..config.num_layers {
            let (w, bias) = (
                var(format!("net.{i}.linear.weight"))?,
                var(format!("net.{i}.linear.bias"))?,
            );
            // The layer shares storage with the variables that the optimiser updates in place.
            layers.push(Linear::new(
                w.as_tensor().clone(),
                Some(bias.as_tensor().clone()),
            ));
            vars.extend([w, bias]);
        }
        let features = fixed_features(&encoding, config)?.to_device(device)?;
        let on_device = encoding_of(
            config,
            &encoding
                .named_tensors()
                .into_iter()
                .map(|(n, t)| Ok((n, t.to_device(device)?)))
                .collect::<Result<_>>()?,
        )?;
        let model = Ffn::new(config.clone(), on_device, layers);
        let h = adam(params);
        let opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: h.lr,
                beta1: h.beta1,
                beta2: h.beta2,
                eps: h.eps,
                weight_decay: 0.0,
            },
        )?;
        Ok(AutogradStepper {
            features,
            target: Tensor::from_slice(
                &target.data,
                (config.num_pixels(), config.dim_out),
                device,
            )?,
            model,
            opt,
        })
    }

    fn forward(&self) -> Result<Tensor> {
        let (_, pre) = self.model.forward_features(&self.features)?;
        self.model.final_activation(&pre)
    }
}

impl FfnStepper for AutogradStepper {
    fn step(&mut self) -> Result<f32> {
        let loss = (&self.forward()? - &self.target)?.sqr()?.mean_all()?;
        self.opt.backward_step(&loss)?;
        Ok(loss.to_scalar::<f32>()?)
    }

    fn predict(&mut self) -> Result<Vec<f32>> {
        with_f32_slice(&self.forward()?, <[f32]>::to_vec)
    }

    fn weights(&self) -> Result<HashMap<String, Tensor>> {
        self.model
            .named_tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.detach().copy()?)))
            .collect()
    }
}

fn progress_bar(params: &FfnTrainParams) -> ProgressBar {
    if !params.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(params.iters as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "training FFN {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("static template is valid"),
    );
    bar
}
