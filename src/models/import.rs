//! Import of official checkpoints: PyTorch / Lightning files (read without executing pickle code)
//! or safetensors files with the official names, plus the official Hydra `exp_config.yaml`.
//!
//! Weights are read in two steps ([`OfficialWeights`]): the file's index (names, dtypes, shapes)
//! first, under the official names (the Lightning `model.` and DataParallel `module.` prefixes
//! stripped; two file names that strip to one name are an error naming both), then only the
//! tensors a model needs, after every name, shape and dtype was checked against its
//! [`WeightSpec`]s. A hostile file therefore cannot make the importer read, inflate or build
//! anything the model does not need.
//!
//! [`import_ffn`] and [`import_nerv`] do the whole import: read, build, and save as a model
//! folder ([`ModelDir`]) that records the checkpoint it came from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_norway::Value;

use super::ffn::{Ffn, FfnConfig, FinalActivation, HiddenActivation, PosEncoding};
use super::nerv::{Nerv, NervConfig};
use super::{ModelDir, WeightSpec};
use crate::error::{Result, XincError};
use crate::io::files::{self, FileLimit};
use crate::io::safetensors_file::SafetensorsFile;
use crate::io::torch::TorchCheckpoint;
use crate::io::TensorInfo;

/// Most unexpected tensor names that an error lists (a hostile file may hold millions).
const MAX_NAMED: usize = 20;

/// The container format of a weights file, told from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    /// A `torch.save` zip archive (`.pth`, Lightning `.ckpt`).
    TorchZip,
    /// A safetensors file.
    Safetensors,
}

/// Tells a torch zip archive from a safetensors file by content, not by extension. Refuses a
/// path that is not a regular file (a device, a FIFO, a directory) before reading it.
pub(crate) fn sniff_format(path: &Path) -> Result<WeightsFormat> {
    use std::io::Read;
    let (file, len) = files::open_regular(path, &FileLimit::WEIGHTS)?;
    let mut head = Vec::with_capacity(9);
    file.take(9)
        .read_to_end(&mut head)
        .map_err(|e| XincError::io(path, e))?;
    if head.starts_with(b"PK") {
        Ok(WeightsFormat::TorchZip)
    } else if head.get(8) == Some(&b'{') {
        Ok(WeightsFormat::Safetensors)
    } else if len == 0 {
        Err(XincError::checkpoint(
            path,
            "the file is empty (0 bytes), not a weights file",
        ))
    } else {
        Err(XincError::checkpoint(
            path,
            "neither a torch.save zip archive nor a safetensors file (legacy pre-1.6 torch files are not supported)",
        ))
    }
}

/// Reads every tensor of an official weights file onto `device`, with the Lightning `model.`
/// prefix (and DataParallel `module.` prefix) stripped. For torch files the `state_dict` entry
/// is used when present. To import a model, prefer [`OfficialWeights::load`], which reads only
/// what the model needs.
pub fn read_official_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    OfficialWeights::open(path)?.load_all(device)
}

/// Reads an official NeRV weights file (`model_best.pth` holds `{epoch, state_dict, optimizer}`):
/// as [`read_official_tensors`], with the `blocks.0.` infix of HNeRV's wrapped blocks removed, as
/// the official loader does.
pub fn read_nerv_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    OfficialWeights::open_nerv(path)?.load_all(device)
}

/// Reads the weights of the NeRV that `config` describes from an official weights file: the
/// config is validated, then every name, shape and dtype is checked before any tensor is read.
pub(crate) fn read_nerv_weights(
    path: &Path,
    config: &NervConfig,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    config.validate()?;
    OfficialWeights::open_nerv(path)?.load(&config.weight_specs(), device)
}

/// Reads an official FFN: the architecture from `yaml` (an `exp_config.yaml`) or, without one,
/// from the weights' shapes with `data_shape` as the image size; then the weights that this
/// architecture needs, checked before they are read.
pub(crate) fn read_ffn_weights(
    path: &Path,
    yaml: Option<&Path>,
    data_shape: [usize; 2],
    device: &Device,
) -> Result<(FfnConfig, HashMap<String, Tensor>)> {
    let weights = OfficialWeights::open(path)?;
    let config = match yaml {
        Some(yaml) => ffn_config_from_yaml(yaml)?,
        None => ffn_config_from_shapes(&weights.origin(), &weights.shapes(), data_shape)?,
    };
    config.validate()?;
    let tensors = weights.load(&config.weight_specs(), device)?;
    Ok((config, tensors))
}

/// An official FFN checkpoint to import.
#[derive(Clone, Debug, PartialEq)]
pub struct FfnImport {
    /// Lightning `.ckpt`, `.pth`, or safetensors with the official names.
    pub checkpoint: PathBuf,
    /// The official `exp_config.yaml`; without it the architecture is inferred from the tensor
    /// shapes and the image size is `size`.
    pub config: Option<PathBuf>,
    /// `[H, W]` of the image, when there is no `config`.
    pub size: [usize; 2],
}

/// Imports an official FFN into the model folder `out` (weights checked before they are read,
/// the provenance recorded) and returns the model.
pub fn import_ffn(job: &FfnImport, out: &ModelDir, device: &Device) -> Result<Ffn> {
    import_ffn_as(job, None, out, device)
}

/// [`import_ffn`] of the family `model_name` (`ffn` or `siren`, as the config's
/// `network.model_name`; `None`: any): another family is refused before anything is written.
pub fn import_ffn_as(
    job: &FfnImport,
    model_name: Option<&str>,
    out: &ModelDir,
    device: &Device,
) -> Result<Ffn> {
    let origin = job.checkpoint.display().to_string();
    let (config, tensors) =
        read_ffn_weights(&job.checkpoint, job.config.as_deref(), job.size, device)?;
    if let Some(want) = model_name.filter(|&m| m != config.model_name()) {
        let what = job.config.as_deref().unwrap_or(&job.checkpoint).display();
        return Err(XincError::InvalidArgument(format!(
            "{what}: network.model_name is `{}`, but this is the import of a `{want}` (use \
             `xinc import {}`)",
            config.model_name(),
            config.model_name()
        )));
    }
    let model = Ffn::from_tensors(config, tensors, &origin, device)?;
    out.save_imported(&model, &job.checkpoint, job.config.as_deref())?;
    Ok(model)
}

/// An official NeRV checkpoint to import.
#[derive(Clone, Debug, PartialEq)]
pub struct NervImport {
    /// `model_best.pth`, or safetensors with the official names.
    pub checkpoint: PathBuf,
    /// The official training flags that shape the model (the paper's: [`NervConfig::PAPER_ARGS`]).
    pub args: String,
    /// Number of frames T the model was trained on (frame i is decoded from t = i / T).
    pub frames: usize,
    /// HNeRV: the clip it was trained on (a dataset root or a folder of frames), whose frames'
    /// content embeddings the model folder keeps.
    pub clip: Option<PathBuf>,
    /// The video of a dataset root that holds several.
    pub video: Option<String>,
}

/// Imports an official NeRV or HNeRV into the model folder `out` (weights checked before they
/// are read, the provenance recorded) and returns the model. HNeRV needs its clip (`job.clip`)
/// for the content embeddings of its frames.
pub fn import_nerv(job: &NervImport, out: &ModelDir, device: &Device) -> Result<Nerv> {
    let config = NervConfig::from_official_args(&job.args, job.frames)?;
    let tensors = read_nerv_weights(&job.checkpoint, &config, device)?;
    let origin = job.checkpoint.display().to_string();
    let mut model = Nerv::from_tensors(config, tensors, &origin, device)?;
    if model.config().is_hnerv() {
        let clip = job.clip.as_deref().ok_or_else(|| {
            XincError::InvalidArgument(
                "--clip: an HNeRV (--enc_strds) decodes each frame from its content embedding, \
                 so the import needs the frames it was trained on"
                    .into(),
            )
        })?;
        let frames = clip_tensor(clip, model.config(), job.video.clone(), device)?;
        model = model.embed_clip(&frames)?;
    }
    out.save_imported(&model, &job.checkpoint, None)?;
    Ok(model)
}

/// The frames of `clip` at the model's frame size as `[T, 3, H, W]`, T checked against the
/// model's.
pub(crate) fn clip_tensor(
    clip: &Path,
    config: &NervConfig,
    video: Option<String>,
    device: &Device,
) -> Result<Tensor> {
    let [h, w] = config.frame_size();
    let frames = crate::data::frames::nerv_frames(clip, [h, w], video, None)?;
    if frames.len() != config.frames {
        return Err(XincError::InvalidArgument(format!(
            "--clip {}: {} frames, but the model was trained on --frames {}",
            clip.display(),
            frames.len(),
            config.frames
        )));
    }
    let t = frames.len();
    Ok(Tensor::from_vec(frames.concat(), (t, 3, h, w), device)?)
}

/// The tensors of an official weights file under their official names, indexed but not read.
pub struct OfficialWeights {
    path: PathBuf,
    source: Source,
    /// Official name and the tensor as the file names and stores it, in file order.
    tensors: Vec<(String, TensorInfo)>,
}

enum Source {
    Torch(TorchCheckpoint),
    Safetensors(SafetensorsFile),
}

impl OfficialWeights {
    /// Indexes an official weights file (torch zip or safetensors, told by content), naming each
    /// tensor without its `module.`/`model.` prefixes.
    pub fn open(path: &Path) -> Result<Self> {
        OfficialWeights::open_with(path, "the `module.`/`model.` prefixes are stripped", |k| {
            strip_prefixes(k).to_string()
        })
    }

    /// [`OfficialWeights::open`] for NeRV files: also removes the `blocks.0.` infix, and leaves
    /// out the batch norms' `num_batches_tracked` counters (integers that only steer PyTorch's
    /// momentum when none is set; xinc's batch norms, like the official ones, use momentum 0.1).
    pub fn open_nerv(path: &Path) -> Result<Self> {
        let mut weights = OfficialWeights::open_with(
            path,
            "the `module.`/`model.` prefixes and the `blocks.0.` infix are removed",
            |k| strip_prefixes(k).replace("blocks.0.", ""),
        )?;
        weights.tensors.retain(|(name, info)| {
            !(name.ends_with(".norm.num_batches_tracked") && !info.dtype.is_float())
        });
        Ok(weights)
    }

    fn open_with(path: &Path, renaming: &str, rename: impl Fn(&str) -> String) -> Result<Self> {
        let source = match sniff_format(path)? {
            WeightsFormat::TorchZip => Source::Torch(TorchCheckpoint::open(path, None)?),
            WeightsFormat::Safetensors => Source::Safetensors(SafetensorsFile::open(path)?),
        };
        let infos = match &source {
            Source::Torch(checkpoint) => checkpoint.tensors(),
            Source::Safetensors(file) => file.tensors(),
        };
        let mut first: HashMap<String, String> = HashMap::with_capacity(infos.len());
        let mut tensors = Vec::with_capacity(infos.len());
        for info in infos {
            let name = rename(&info.name);
            if let Some(other) = first.insert(name.clone(), info.name.clone()) {
                return Err(XincError::checkpoint(
                    path,
                    format!(
                        "tensors `{other}` and `{}` both mean `{name}` once {renaming}: \
                         ambiguous, which one is meant?",
                        info.name
                    ),
                ));
            }
            tensors.push((name, info));
        }
        Ok(OfficialWeights {
            path: path.to_path_buf(),
            source,
            tensors,
        })
    }

    /// The file, as errors about its tensors name it.
    pub fn origin(&self) -> String {
        self.path.display().to_string()
    }

    /// The shape of every tensor, by official name.
    pub fn shapes(&self) -> HashMap<String, Vec<usize>> {
        self.tensors
            .iter()
            .map(|(name, info)| (name.clone(), info.shape.clone()))
            .collect()
    }

    /// Reads the tensors that `specs` describe onto `device`, after checking that the file holds
    /// exactly these names, with these shapes, stored as floats; nothing else is read.
    pub fn load(self, specs: &[WeightSpec], device: &Device) -> Result<HashMap<String, Tensor>> {
        let origin = self.origin();
        let by_name: HashMap<&str, &TensorInfo> =
            self.tensors.iter().map(|(n, i)| (n.as_str(), i)).collect();
        for spec in specs {
            let info = by_name
                .get(spec.name.as_str())
                .ok_or_else(|| XincError::MissingTensor {
                    origin: origin.clone(),
                    name: spec.name.clone(),
                })?;
            if info.shape != spec.shape {
                return Err(XincError::ShapeMismatch {
                    origin: origin.clone(),
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: info.shape.clone(),
                });
            }
            if !info.dtype.is_float() {
                return Err(XincError::checkpoint(
                    &self.path,
                    format!(
                        "tensor `{}` is stored as {} ({}), but the model needs floating-point \
                         weights (f32, f16, bf16 or f64)",
                        info.name,
                        info.stored_as,
                        info.dtype.as_str()
                    ),
                ));
            }
        }
        let wanted: std::collections::HashSet<&str> =
            specs.iter().map(|s| s.name.as_str()).collect();
        let mut extra: Vec<String> = by_name
            .keys()
            .filter(|n| !wanted.contains(*n))
            .map(|n| n.to_string())
            .collect();
        if !extra.is_empty() {
            extra.sort();
            if extra.len() > MAX_NAMED {
                let more = extra.len() - MAX_NAMED;
                extra.truncate(MAX_NAMED);
                extra.push(format!("… and {more} more"));
            }
            return Err(XincError::UnexpectedTensors {
                origin,
                names: extra,
            });
        }
        let originals: Vec<&str> = specs
            .iter()
            .filter_map(|s| by_name.get(s.name.as_str()).map(|i| i.name.as_str()))
            .collect();
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let read = read_from(self.source, &originals, device)?;
        names
            .into_iter()
            .zip(read)
            .map(|(name, (_, t))| Ok((name, t.to_device(device)?)))
            .collect()
    }

    /// Reads every tensor onto `device`, by official name.
    pub fn load_all(self, device: &Device) -> Result<HashMap<String, Tensor>> {
        let originals: Vec<&str> = self.tensors.iter().map(|(_, i)| i.name.as_str()).collect();
        let read = read_from(self.source, &originals, device)?;
        self.tensors
            .iter()
            .zip(read)
            .map(|((name, _), (_, t))| Ok((name.clone(), t.to_device(device)?)))
            .collect()
    }
}

/// Reads the tensors named (as in the file) `names`, in that order.
fn read_from(source: Source, names: &[&str], device: &Device) -> Result<Vec<(String, Tensor)>> {
    match source {
        Source::Torch(mut checkpoint) => checkpoint.read(names),
        Source::Safetensors(mut file) => file.read(names, device),
    }
}

fn strip_prefixes(key: &str) -> &str {
    let mut k = key;
    for prefix in ["module.", "model."] {
        k = k.strip_prefix(prefix).unwrap_or(k);
    }
    k
}

/// Deepest nesting accepted in an `exp_config.yaml` (the official one nests 3 levels). libyaml
/// parses a whole document before anything can look at it, in time quadratic in its depth (a
/// document nested 300,000 levels deep takes minutes), so deeper documents are refused by
/// [`check_yaml_depth`] before parsing.
pub const MAX_YAML_DEPTH: usize = 64;

/// Reads the FFN architecture and image shape from an official `exp_config.yaml`: a regular
/// file within [`FileLimit::CONFIG`], nested at most [`MAX_YAML_DEPTH`] levels, whose sizes are
/// within [`limits`](super::limits) and whose numbers are finite. Errors name the file and the
/// field.
pub fn ffn_config_from_yaml(path: &Path) -> Result<FfnConfig> {
    let text = files::read_text(path, &FileLimit::CONFIG)?;
    check_yaml_depth(&text).map_err(|reason| XincError::config(path, reason))?;
    let root: Value =
        serde_norway::from_str(&text).map_err(|e| XincError::config(path, e.to_string()))?;
    let yaml = YamlDoc { path, root: &root };
    let model_name = yaml.string("network.model_name")?;
    // An FFN's encoding first: it decides which other fields matter.
    let encoding_type = match model_name.as_str() {
        "ffn" => Some(yaml.string("network.pos_encoding.type")?),
        _ => None,
    };
    let layer_size = yaml.usize("network.layer_size")?;
    let shape = yaml.usize_list("data.data_shape")?;
    let [height, width] = shape[..] else {
        return Err(XincError::config(
            path,
            format!("data.data_shape must be [H, W], got {shape:?}"),
        ));
    };
    let (encoding, activation) = match model_name.as_str() {
        "ffn" => (
            yaml.ffn_encoding(encoding_type.as_deref().unwrap_or(""), [height, width])?,
            yaml.ffn_activation()?,
        ),
        // The official `siren` class takes the raw coordinates, whatever `pos_encoding` says,
        // and hands every hidden layer the same `Sine(w0)` module: its `w0_initial` changes
        // nothing (an official bug). The imported model computes what the official one does.
        "siren" => {
            let w0 = yaml.f64("network.w0")?;
            let initial = yaml.f64("network.w0_initial")?;
            if initial != w0 {
                tracing::warn!(
                    w0,
                    w0_initial = initial,
                    "the official SIREN ignores network.w0_initial: every layer uses w0"
                );
            }
            (
                PosEncoding::None,
                HiddenActivation::Sine { w0, w0_initial: w0 },
            )
        }
        other => {
            return Err(XincError::config(
                path,
                format!("network.model_name is `{other}`, expected `ffn` or `siren`"),
            ))
        }
    };
    let fourier = encoding == PosEncoding::Fourier;
    let config = FfnConfig {
        dim_in: yaml.usize("network.dim_in")?,
        dim_out: yaml.usize_or("network.dim_out", 3)?,
        layer_size,
        num_layers: yaml.usize("network.num_layers")?,
        // `${..layer_size}` is an OmegaConf interpolation: the mapping size follows the width.
        // (The official Fourier module sizes `B` by the width in any case.)
        fourier_mapping_size: if fourier {
            yaml.usize_or_interpolated("network.pos_encoding.fourier_mapping_size", layer_size)?
        } else {
            layer_size
        },
        fourier_noise_scale: if fourier {
            yaml.f64("network.pos_encoding.fourier_noise_scale")?
        } else {
            10.0
        },
        final_act: yaml.final_act("network.final_act")?,
        data_shape: [height, width],
        encoding,
        activation,
    };
    config
        .check(&yaml_field)
        .map_err(|e| super::in_file(path, e))?;
    Ok(config)
}

/// The `exp_config.yaml` path of each [`FfnConfig`] field.
fn yaml_field(field: &'static str) -> String {
    match field {
        "data_shape" => "data.data_shape".to_string(),
        "fourier_mapping_size" | "fourier_noise_scale" | "num_frequencies" => {
            format!("network.pos_encoding.{field}")
        }
        other => format!("network.{other}"),
    }
}

/// Refuses a YAML text nested deeper than [`MAX_YAML_DEPTH`], in one linear pass before parsing.
/// A line's depth is its block indentation level (a stack of increasing indents: each nesting
/// of a block collection indents further), plus its compact entries (`- - x`), plus the flow
/// brackets `[`/`{` open at each point (outside quoted scalars and comments). The estimate can
/// only be too high for odd documents (brackets inside plain or block scalars), never too low by
/// more than one mapping per indentation level.
fn check_yaml_depth(text: &str) -> std::result::Result<(), String> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    for (n, line) in text.lines().enumerate() {
        let content = line.trim_start_matches(' ');
        let indent = line.len() - content.len();
        let blank = content.is_empty() || content.starts_with('#');
        if quote.is_none() && flow == 0 && !blank {
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last().is_none_or(|&i| i < indent) {
                indents.push(indent);
            }
        }
        let block = indents.len() + compact_entries(content);
        let deepest = block + scan_flow(content, &mut flow, &mut quote);
        if deepest > MAX_YAML_DEPTH {
            return Err(format!(
                "nested more than {MAX_YAML_DEPTH} levels deep at line {} (refused before \
                 parsing: an exp_config.yaml nests 3 levels)",
                n + 1
            ));
        }
    }
    Ok(())
}

/// Compact nested entries at the start of a line's content: `- - - x` opens three sequences.
fn compact_entries(content: &str) -> usize {
    let mut rest = content;
    let mut n = 0;
    while let Some(r) = ["- ", "? "].iter().find_map(|p| rest.strip_prefix(p)) {
        n += 1;
        rest = r.trim_start_matches(' ');
    }
    n
}

/// Follows the flow brackets and quoted scalars of one line's content, updating the open
/// `flow` depth and `quote` state; returns the deepest flow depth reached on the line. A quote
/// opens a scalar only where YAML lets one start (after a space or an indicator), so an
/// apostrophe inside a word opens nothing.
fn scan_flow(content: &str, flow: &mut usize, quote: &mut Option<char>) -> usize {
    let mut deepest = *flow;
    let mut prev = ' ';
    let mut chars = content.chars().peekable();
    while let Some(c) = chars.next() {
        match (*quote, c) {
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some('\''), '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
            }
            (Some(q), c) if c == q => *quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if " \t[{,:-?".contains(prev) => *quote = Some(c),
            (None, '#') if prev == ' ' || prev == '\t' => break,
            (None, '[' | '{') => {
                *flow += 1;
                deepest = deepest.max(*flow);
            }
            (None, ']' | '}') => *flow = flow.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    deepest
}

/// Infers the FFN architecture from the tensor shapes alone, by name (read from a weights file's
/// index; for weights without a config).
pub(crate) fn ffn_config_from_shapes(
    origin: &str,
    tensors: &HashMap<String, Vec<usize>>,
    data_shape: [usize; 2],
) -> Result<FfnConfig> {
    let dims = |name: &str| {
        tensors
            .get(name)
            .cloned()
            .ok_or_else(|| XincError::MissingTensor {
                origin: origin.to_string(),
                name: name.to_string(),
            })
    };
    let b = dims("positional_encoding.B")?;
    let first = dims("net.0.linear.weight")?;
    let num_layers = (0..)
        .take_while(|i| tensors.contains_key(&format!("net.{i}.linear.weight")))
        .count();
    let last = dims(&format!("net.{}.linear.weight", num_layers - 1))?;
    let (Some(&mapping), Some(&dim_in), Some(&layer_size), Some(&dim_out)) =
        (b.first(), b.get(1), first.first(), last.first())
    else {
        return Err(XincError::InvalidArgument(format!(
            "{origin}: FFN tensors have unexpected ranks"
        )));
    };
    Ok(FfnConfig {
        dim_in,
        dim_out,
        layer_size,
        num_layers,
        fourier_mapping_size: mapping,
        fourier_noise_scale: 10.0,
        final_act: None,
        data_shape,
        encoding: PosEncoding::Fourier,
        activation: HiddenActivation::Relu,
    })
}

/// Dotted-path access to a YAML document with errors that name the file and the field.
struct YamlDoc<'a> {
    path: &'a Path,
    root: &'a Value,
}

impl YamlDoc<'_> {
    fn get(&self, field: &str) -> Result<&Value> {
        field
            .split('.')
            .try_fold(self.root, |v, key| v.get(key))
            .ok_or_else(|| XincError::config(self.path, format!("missing field `{field}`")))
    }

    fn wrong(&self, field: &str, expected: &str, v: &Value) -> XincError {
        XincError::config(
            self.path,
            format!("field `{field}` must be {expected}, got {v:?}"),
        )
    }

    fn string(&self, field: &str) -> Result<String> {
        let v = self.get(field)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.wrong(field, "a string", v))
    }

    fn usize(&self, field: &str) -> Result<usize> {
        let v = self.get(field)?;
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| self.wrong(field, "a non-negative integer", v))
    }

    fn f64(&self, field: &str) -> Result<f64> {
        let v = self.get(field)?;
        v.as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| self.wrong(field, "a finite number", v))
    }

    fn usize_or_interpolated(&self, field: &str, interpolated: usize) -> Result<usize> {
        match self.get(field)? {
            Value::String(s) if s.starts_with("${") => Ok(interpolated),
            _ => self.usize(field),
        }
    }

    fn usize_list(&self, field: &str) -> Result<Vec<usize>> {
        let v = self.get(field)?;
        let seq = v
            .as_sequence()
            .ok_or_else(|| self.wrong(field, "a list of integers", v))?;
        seq.iter()
            .map(|x| {
                x.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| self.wrong(field, "a list of integers", v))
            })
            .collect()
    }

    fn usize_or(&self, field: &str, default: usize) -> Result<usize> {
        match self.get(field) {
            Err(_) | Ok(Value::Null) => Ok(default),
            Ok(_) => self.usize(field),
        }
    }

    /// An FFN's `network.pos_encoding`: `fourier`, or `nerf` with `num_frequencies` (null: the
    /// Nyquist rule for `network.sidelength`, which the official trainer sets to the image's
    /// longer side).
    fn ffn_encoding(&self, kind: &str, [h, w]: [usize; 2]) -> Result<PosEncoding> {
        let field = "network.pos_encoding.type";
        match kind {
            "fourier" => Ok(PosEncoding::Fourier),
            "nerf" => {
                let side = self.usize_or("network.sidelength", h.max(w))?;
                let num_frequencies = self.usize_or(
                    "network.pos_encoding.num_frequencies",
                    PosEncoding::nyquist_frequencies(side),
                )?;
                Ok(PosEncoding::Nerf { num_frequencies })
            }
            other => Err(XincError::config(
                self.path,
                format!("{field} `{other}` is not supported (`fourier` or `nerf`)"),
            )),
        }
    }

    /// An FFN's `network.activation` (only ReLU: the official FFN builds its layers with it).
    fn ffn_activation(&self) -> Result<HiddenActivation> {
        let field = "network.activation";
        match self.string(field)?.as_str() {
            "relu" => Ok(HiddenActivation::Relu),
            other => Err(XincError::config(
                self.path,
                format!("{field} `{other}` is not supported (the official FFN uses `relu`)"),
            )),
        }
    }

    fn final_act(&self, field: &str) -> Result<Option<FinalActivation>> {
        match self.get(field) {
            Err(_) => Ok(None),
            Ok(Value::Null) => Ok(None),
            Ok(v) => match v.as_str() {
                Some("identity") | Some("none") => Ok(None),
                Some("sigmoid") => Ok(Some(FinalActivation::Sigmoid)),
                Some("tanh") => Ok(Some(FinalActivation::Tanh)),
                Some("relu") => Ok(Some(FinalActivation::Relu)),
                _ => Err(self.wrong(field, "null, sigmoid, tanh or relu", v)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped() {
        assert_eq!(
            strip_prefixes("model.net.0.linear.weight"),
            "net.0.linear.weight"
        );
        assert_eq!(
            strip_prefixes("module.model.positional_encoding.B"),
            "positional_encoding.B"
        );
        assert_eq!(strip_prefixes("net.2.linear.bias"), "net.2.linear.bias");
    }

    #[test]
    fn an_official_siren_uses_w0_in_every_layer() {
        // The official class gives every hidden layer Sine(w0): w0_initial changes nothing.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp_config.yaml");
        std::fs::write(
            &path,
            "network:\n  model_name: siren\n  layer_size: 8\n  num_layers: 3\n  dim_in: 2\n  \
             w0: 30.0\n  w0_initial: 20.0\n  final_act: null\ndata:\n  data_shape: [4, 6]\n",
        )
        .unwrap();
        let cfg = ffn_config_from_yaml(&path).unwrap();
        assert_eq!(
            cfg.activation,
            HiddenActivation::Sine {
                w0: 30.0,
                w0_initial: 30.0
            }
        );
        assert_eq!(cfg.encoding, PosEncoding::None);
    }

    #[test]
    fn yaml_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp_config.yaml");
        std::fs::write(&path, "network:\n  model_name: ffn\n  layer_size: wide\n").unwrap();
        let err = ffn_config_from_yaml(&path).unwrap_err().to_string();
        assert!(
            err.contains("exp_config.yaml") && err.contains("network.pos_encoding.type"),
            "{err}"
        );
        std::fs::write(
            &path,
            "network:\n  model_name: ffn\n  activation: relu\n  layer_size: wide\n  pos_encoding:\n    type: fourier\n",
        )
        .unwrap();
        let err = ffn_config_from_yaml(&path).unwrap_err().to_string();
        assert!(
            err.contains("`network.layer_size` must be a non-negative integer"),
            "{err}"
        );
    }

    /// The fields of the official `exp_config.yaml` that the importer reads.
    const OFFICIAL: &str = "network:\n  model_name: ffn\n  layer_size: 104\n  num_layers: 3\n  \
        dim_in: 2\n  dim_out: 3\n  final_act: null\n  activation: relu\n  pos_encoding:\n    \
        type: fourier\n    fourier_mapping_size: ${..layer_size}\n    fourier_noise_scale: 10.0\n\
        data:\n  data_shape:\n  - 128\n  - 256\n";

    fn yaml_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp_config.yaml");
        std::fs::write(&path, text).unwrap();
        ffn_config_from_yaml(&path).unwrap_err().to_string()
    }

    #[test]
    fn yaml_sizes_and_numbers_are_checked_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp_config.yaml");
        std::fs::write(&path, OFFICIAL).unwrap();
        assert_eq!(
            ffn_config_from_yaml(&path).unwrap(),
            FfnConfig::paper(128, 256)
        );
        for (from, to, expected) in [
            (
                "- 128\n  - 256",
                "- 100000\n  - 100000",
                "data.data_shape = 100000 is more than the limit 8192",
            ),
            (
                "num_layers: 3",
                "num_layers: 100000",
                "network.num_layers = 100000 is more than the limit 64",
            ),
            (
                "layer_size: 104",
                "layer_size: 10000000",
                "network.layer_size = 10000000 is more than",
            ),
            (
                "noise_scale: 10.0",
                "noise_scale: .nan",
                "`network.pos_encoding.fourier_noise_scale` must be a finite number",
            ),
            (
                "noise_scale: 10.0",
                "noise_scale: 1e400",
                "must be a finite number",
            ),
            (
                "noise_scale: 10.0",
                "noise_scale: -3",
                "network.pos_encoding.fourier_noise_scale = -3.0 must be greater than 0",
            ),
        ] {
            let err = yaml_error(&OFFICIAL.replace(from, to));
            assert!(
                err.contains("exp_config.yaml: invalid configuration") && err.contains(expected),
                "{err}"
            );
        }
    }

    #[test]
    fn deep_yaml_is_refused_before_parsing() {
        let start = std::time::Instant::now();
        let deep = "[".repeat(300_000) + &"]".repeat(300_000);
        let err = yaml_error(&format!("network: {deep}\n"));
        assert!(
            err.contains("nested more than 64 levels deep at line 1"),
            "{err}"
        );
        let compact = "- ".repeat(100) + "x\n";
        assert!(yaml_error(&compact).contains("at line 1"));
        let indented: String = (0..100)
            .map(|i| format!("{}a{i}:\n", " ".repeat(i)))
            .collect();
        assert!(
            yaml_error(&indented).contains("at line 65"),
            "{}",
            yaml_error(&indented)
        );
        assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
        // Brackets inside quoted scalars and comments open nothing; an apostrophe in a word
        // opens no quote.
        let quoted = format!(
            "a: '{0}'\nb: \"{0}\" # {0}\nc: don't [x]\n",
            "[".repeat(100)
        );
        assert!(check_yaml_depth(&quoted).is_ok());
        assert!(check_yaml_depth(&format!("c: don't {}", "[".repeat(100))).is_err());
    }
}
