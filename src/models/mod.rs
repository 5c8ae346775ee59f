//! Models: implicit neural representations built on candle, with parameter names equal to the
//! official PyTorch `state_dict` keys so that official weights load without conversion.
//!
//! A trained or imported model lives in a *model folder* ([`ModelDir`]): `model.safetensors`
//! (weights) and `config.json` (architecture, data shape, provenance). `config.json` is read with
//! the configuration-file size limit, refused when it is not a regular file, and checked for
//! meaning (every size within [`limits`], every number finite) before anything is built from it.
//!
//! [`limits`] holds the upper limit of every model and command-line size, in one place.

pub mod ffn;
pub mod import;
pub mod limits;
pub mod nerv;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
pub(crate) fn validate_weights(
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
pub(crate) fn validated_var_builder(
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
    /// PSNR of the kept model, in dB, with the official definition (infinite for an exact
    /// reconstruction, written `"inf"`: JSON has no infinity).
    #[serde(with = "psnr_json")]
    pub best_psnr: f64,
    pub seconds: f64,
}

impl TrainingRecord {
    /// Checks the record's numbers (as named in `config.json`): a learning rate in range, step
    /// counts in range, the best step within the run, a PSNR, a duration.
    pub fn validate(&self) -> Result<()> {
        let field = |f: &str| format!("provenance.{f}");
        limits::check_learning_rate(&field("lr"), self.lr)?;
        limits::STEPS.check_range(&field("iters"), self.iters, 1)?;
        limits::STEPS.check_range(&field("eval_every"), self.eval_every, 1)?;
        let fail = |m: String| Err(XincError::InvalidArgument(m));
        if self.best_iter > self.iters {
            return fail(format!(
                "{} = {} is after the last step {} = {}",
                field("best_iter"),
                self.best_iter,
                field("iters"),
                self.iters
            ));
        }
        if self.best_psnr.is_nan() || self.best_psnr == f64::NEG_INFINITY {
            return fail(format!(
                "{} = {} is not a PSNR (a finite number of dB, or inf for an exact reconstruction)",
                field("best_psnr"),
                self.best_psnr
            ));
        }
        limits::check_finite(&field("seconds"), self.seconds)?;
        if self.seconds < 0.0 {
            return fail(format!(
                "{} = {} is negative",
                field("seconds"),
                self.seconds
            ));
        }
        Ok(())
    }
}

/// `best_psnr` in JSON: a number, or the string `"inf"` for an exact reconstruction (the
/// quantised PSNR of a model that reproduces every 8-bit value is infinite).
mod psnr_json {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if *v == f64::INFINITY {
            s.serialize_str("inf")
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Psnr {
            Number(f64),
            Text(String),
        }
        match Psnr::deserialize(d)? {
            Psnr::Number(v) => Ok(v),
            Psnr::Text(t) if t == "inf" => Ok(f64::INFINITY),
            Psnr::Text(t) => Err(D::Error::custom(format!(
                "best_psnr `{t}` is neither a number nor \"inf\""
            ))),
        }
    }
}

/// The `config.json` of a model folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub format_version: u32,
    pub architecture: Architecture,
    pub provenance: Provenance,
}

impl ModelConfig {
    /// Checks the meaning of every field (named as in `config.json`): the architecture within
    /// [`limits`], finite numbers, a plausible training record.
    pub fn validate(&self) -> Result<()> {
        let field = |f: &'static str| format!("architecture.{f}");
        match &self.architecture {
            Architecture::Ffn(c) => c.check(&field)?,
            Architecture::Nerv(c) => c.check(&field)?,
        }
        match &self.provenance {
            Provenance::Trained(t) => t.validate(),
            Provenance::Imported { .. } => Ok(()),
        }
    }
}

/// `e` as a configuration error of `path` when it is a bare argument error (a field out of
/// range), so that the message names the file.
pub(crate) fn in_file(path: &Path, e: XincError) -> XincError {
    match e {
        XincError::InvalidArgument(reason) => XincError::config(path, reason),
        other => other,
    }
}

/// A model that a [`ModelDir`] stores: its architecture (`config.json`) and its weights under the
/// official names (`model.safetensors`). Implemented by [`ffn::Ffn`] and [`nerv::Nerv`].
pub trait StoredModel {
    fn architecture(&self) -> Architecture;
    fn named_tensors(&self) -> Vec<(String, Tensor)>;
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
        cfg.validate().map_err(|e| in_file(&path, e))?;
        Ok(cfg)
    }

    /// Reads the raw tensors of `model.safetensors`.
    pub fn tensors(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        crate::io::load_safetensors(&self.weights_path(), device)
    }

    /// Checks the config, then writes weights, then the config (the config last, so that a folder
    /// with a config is complete). A config that [`ModelDir::config`] would refuse is never written.
    pub fn save(&self, tensors: &[(String, Tensor)], config: &ModelConfig) -> Result<()> {
        config.validate()?;
        crate::io::save_safetensors(&self.weights_path(), tensors)?;
        crate::io::save_json(&self.config_path(), config)
    }

    /// Saves a model trained by xinc, with what its training did and reached.
    pub fn save_trained(&self, model: &impl StoredModel, record: TrainingRecord) -> Result<()> {
        self.save_model(model, Provenance::Trained(record))
    }

    /// Saves a model imported from an official `checkpoint` (and its `exp_config.yaml`, if any).
    pub fn save_imported(
        &self,
        model: &impl StoredModel,
        checkpoint: &Path,
        config: Option<&Path>,
    ) -> Result<()> {
        let provenance = Provenance::Imported {
            checkpoint: checkpoint.to_path_buf(),
            config: config.map(Path::to_path_buf),
        };
        self.save_model(model, provenance)
    }

    fn save_model(&self, model: &impl StoredModel, provenance: Provenance) -> Result<()> {
        let config = ModelConfig {
            format_version: Self::FORMAT_VERSION,
            architecture: model.architecture(),
            provenance,
        };
        self.save(&model.named_tensors(), &config)
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
        let mut tensors = self.tensors(device)?;
        let embeddings = tensors.remove(nerv::Nerv::EMBEDDINGS);
        let mut model = nerv::Nerv::from_tensors(arch.clone(), tensors, &self.origin(), device)?;
        if let Some(e) = embeddings {
            model = model
                .with_embeddings(e)
                .map_err(|e| in_file(&self.weights_path(), e))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled_ffn_config() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("checkpoints/ffn_cityscapes_vps_0005")
            .join(ModelDir::CONFIG);
        std::fs::read_to_string(path).unwrap()
    }

    fn config_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ModelDir::CONFIG), text).unwrap();
        ModelDir::new(dir.path()).config().unwrap_err().to_string()
    }

    #[test]
    fn config_json_with_absurd_or_non_finite_fields_is_refused_naming_file_and_field() {
        let good = bundled_ffn_config();
        for (from, to, expected) in [
            (
                "\"data_shape\": [\n      128,",
                "\"data_shape\": [\n      100000,",
                "architecture.data_shape = 100000 is more than the limit 8192",
            ),
            (
                "\"num_layers\": 3",
                "\"num_layers\": 100000",
                "architecture.num_layers = 100000 is more than the limit 64",
            ),
            (
                "\"fourier_noise_scale\": 10.0",
                "\"fourier_noise_scale\": 1e400",
                "number out of range",
            ),
            (
                "\"lr\": 0.0009",
                "\"lr\": -1",
                "provenance.lr = -1.0 must be greater than 0",
            ),
            (
                "\"best_iter\": 1000",
                "\"best_iter\": 5000",
                "provenance.best_iter = 5000 is after the last step",
            ),
            (
                "\"layer_size\": 104",
                "\"layer_size\": 18446744073709551615",
                "architecture.layer_size = 18446744073709551615 is more than the limit 65536",
            ),
        ] {
            assert!(good.contains(from), "{from}");
            let err = config_error(&good.replace(from, to));
            assert!(
                err.contains("config.json: invalid configuration") && err.contains(expected),
                "{err}"
            );
        }
    }

    #[test]
    fn config_json_that_is_not_a_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join(ModelDir::CONFIG);
        std::os::unix::fs::symlink("/dev/zero", &cfg).unwrap();
        let err = ModelDir::new(dir.path()).config().unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("a device"),
            "{err}"
        );
        std::fs::remove_file(&cfg).unwrap();
        let c = std::ffi::CString::new(cfg.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = ModelDir::new(dir.path()).config().unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("a named pipe"),
            "{err}"
        );
    }

    #[test]
    fn an_exact_reconstruction_is_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg: ModelConfig = serde_json::from_str(&bundled_ffn_config()).unwrap();
        let Provenance::Trained(record) = &mut cfg.provenance else {
            panic!("the bundled FFN is trained")
        };
        record.best_psnr = f64::INFINITY;
        crate::io::save_json(&dir.path().join(ModelDir::CONFIG), &cfg).unwrap();
        let text = std::fs::read_to_string(dir.path().join(ModelDir::CONFIG)).unwrap();
        assert!(text.contains("\"best_psnr\": \"inf\""), "{text}");
        assert_eq!(ModelDir::new(dir.path()).config().unwrap(), cfg);
        let err = config_error(&text.replace("\"inf\"", "\"NaN\""));
        assert!(
            err.contains("best_psnr `NaN` is neither a number nor \"inf\""),
            "{err}"
        );
        // A config that could not be read back is never written.
        let Provenance::Trained(record) = &mut cfg.provenance else {
            unreachable!()
        };
        record.best_psnr = f64::NAN;
        let err = ModelDir::new(dir.path().join("m"))
            .save(&[], &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("provenance.best_psnr = NaN is not a PSNR"),
            "{err}"
        );
        assert!(!dir.path().join("m").exists());
    }
}
