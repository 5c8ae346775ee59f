//! Models: implicit neural representations built on candle, with parameter names equal to the
//! official PyTorch `state_dict` keys so that official weights load without conversion.
//!
//! A trained or imported model lives in a *model folder* ([`ModelDir`]): `model.safetensors`
//! (weights) and `config.json` (architecture, data shape, provenance).

pub mod ffn;
pub mod import;
pub mod nerv;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, XincError};

/// The expected name and shape of one tensor of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl WeightSpec {
    pub fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        WeightSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }
}

/// Checks a set of named tensors against a model's specification: every expected tensor present,
/// nothing extra, right shapes, and finite values. Tensors are returned as f32 on `device`.
/// `origin` names the file the weights came from, for the error message.
pub fn validate_weights(
    origin: &str,
    mut tensors: HashMap<String, Tensor>,
    specs: &[WeightSpec],
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(specs.len());
    for spec in specs {
        let t = tensors
            .remove(&spec.name)
            .ok_or_else(|| XincError::MissingTensor {
                origin: origin.to_string(),
                name: spec.name.clone(),
            })?;
        if t.dims() != spec.shape.as_slice() {
            return Err(XincError::ShapeMismatch {
                origin: origin.to_string(),
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                found: t.dims().to_vec(),
            });
        }
        let t = t.to_dtype(DType::F32)?.to_device(device)?;
        let count = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .filter(|v| !v.is_finite())
            .count();
        if count > 0 {
            return Err(XincError::NonFinite {
                origin: origin.to_string(),
                name: spec.name.clone(),
                count,
            });
        }
        out.insert(spec.name.clone(), t);
    }
    if !tensors.is_empty() {
        let mut names: Vec<String> = tensors.into_keys().collect();
        names.sort();
        return Err(XincError::UnexpectedTensors {
            origin: origin.to_string(),
            names,
        });
    }
    Ok(out)
}

/// A `VarBuilder` over tensors that passed [`validate_weights`].
pub fn validated_var_builder(
    origin: &str,
    tensors: HashMap<String, Tensor>,
    specs: &[WeightSpec],
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>> {
    let tensors = validate_weights(origin, tensors, specs, device)?;
    Ok(candle_nn::VarBuilder::from_tensors(
        tensors,
        DType::F32,
        device,
    ))
}

/// The architecture stored in a model folder's `config.json`, tagged by model family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Architecture {
    Ffn(ffn::FfnConfig),
    Nerv(nerv::NervConfig),
}

impl Architecture {
    /// The model family's name, as in `config.json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Architecture::Ffn(_) => "ffn",
            Architecture::Nerv(_) => "nerv",
        }
    }
}

/// Where a model's weights came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Provenance {
    /// Trained by xinc.
    Trained(TrainingRecord),
    /// Imported from an official checkpoint.
    Imported {
        checkpoint: PathBuf,
        config: Option<PathBuf>,
    },
}

/// What a training run did and reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// The training input (an image file, or a description of a generated one).
    pub input: String,
    /// Iterations (FFN) or epochs (NeRV).
    pub iters: usize,
    pub seed: u64,
    pub lr: f64,
    pub eval_every: usize,
    /// Iteration (FFN) or epoch (NeRV), 1-based, of the kept, best-PSNR model.
    pub best_iter: usize,
    /// PSNR of the kept model, in dB, with the official definition.
    pub best_psnr: f64,
    pub seconds: f64,
}

/// The `config.json` of a model folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub format_version: u32,
    pub architecture: Architecture,
    pub provenance: Provenance,
}

/// A model folder: `model.safetensors` + `config.json`, both written atomically.
#[derive(Clone, Debug)]
pub struct ModelDir {
    pub path: PathBuf,
}

impl ModelDir {
    pub const WEIGHTS: &'static str = "model.safetensors";
    pub const CONFIG: &'static str = "config.json";
    pub const FORMAT_VERSION: u32 = 1;

    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModelDir { path: path.into() }
    }

    pub fn weights_path(&self) -> PathBuf {
        self.path.join(Self::WEIGHTS)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join(Self::CONFIG)
    }

    /// Reads and checks `config.json`.
    pub fn config(&self) -> Result<ModelConfig> {
        let path = self.config_path();
        let cfg: ModelConfig = crate::io::load_json(&path)?;
        if cfg.format_version != Self::FORMAT_VERSION {
            return Err(XincError::config(
                &path,
                format!(
                    "format_version {} is not supported (expected {})",
                    cfg.format_version,
                    Self::FORMAT_VERSION
                ),
            ));
        }
        Ok(cfg)
    }

    /// Reads the raw tensors of `model.safetensors`.
    pub fn tensors(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        crate::io::load_safetensors(&self.weights_path(), device)
    }

    /// Writes weights, then the config (the config last, so that a folder with a config is complete).
    pub fn save(&self, tensors: &[(String, Tensor)], config: &ModelConfig) -> Result<()> {
        crate::io::save_safetensors(&self.weights_path(), tensors)?;
        crate::io::save_json(&self.config_path(), config)
    }

    /// Loads the FFN stored in this folder, validating its weights.
    pub fn load_ffn(&self, device: &Device) -> Result<(ffn::Ffn, ModelConfig)> {
        let cfg = self.config()?;
        let Architecture::Ffn(arch) = &cfg.architecture else {
            return Err(self.wrong_kind("ffn", &cfg));
        };
        let model =
            ffn::Ffn::from_tensors(arch.clone(), self.tensors(device)?, &self.origin(), device)?;
        Ok((model, cfg))
    }

    /// Loads the NeRV stored in this folder, validating its weights.
    pub fn load_nerv(&self, device: &Device) -> Result<(nerv::Nerv, ModelConfig)> {
        let cfg = self.config()?;
        let Architecture::Nerv(arch) = &cfg.architecture else {
            return Err(self.wrong_kind("nerv", &cfg));
        };
        let model =
            nerv::Nerv::from_tensors(arch.clone(), self.tensors(device)?, &self.origin(), device)?;
        Ok((model, cfg))
    }

    fn origin(&self) -> String {
        self.weights_path().display().to_string()
    }

    fn wrong_kind(&self, wanted: &str, cfg: &ModelConfig) -> XincError {
        XincError::config(
            self.config_path(),
            format!(
                "holds a `{}` model, not `{wanted}`",
                cfg.architecture.kind()
            ),
        )
    }
}
