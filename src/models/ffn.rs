//! The image MLPs of the official `image_inr` code: FFN (`models/ffn.py`) with either positional
//! encoding, and SIREN (`models/layers/siren.py`).
//!
//! The input coordinates are encoded ([`PosEncoding`]):
//! - `fourier`: γ(x) = [sin(2π·x·Bᵀ), cos(2π·x·Bᵀ)] with a stored `B` (`positional_encoding.B`,
//!   already scaled by the noise scale);
//! - `nerf` (`PosEncodingNeRF`): the coordinates, then for each frequency f_k = 2^k·π
//!   (`positional_encoding.freq_bands`) `[sin(f_k·x), sin(f_k·y), cos(f_k·x), cos(f_k·y)]`; the
//!   number of frequencies is the config's or, by the Nyquist rule, ⌊log₂(side/4)⌋ for the image's
//!   longer side;
//! - none (SIREN): the coordinates themselves;
//!
//! then `num_layers` Linear layers (`net.{i}.linear`) with the hidden activation
//! ([`HiddenActivation`]: ReLU, or SIREN's sin(w₀·z) with w₀_initial on the first layer) after
//! every layer but the last, and an optional final activation. [`Ffn::forward`] returns every
//! intermediate activation, since candle has no hooks.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::limits::{self, FieldNames};
use super::WeightSpec;
use crate::data::image::ImageTensor;
use crate::error::{Result, XincError};

/// The activation after the last layer (`final_act` in the official config; `null` = identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalActivation {
    Sigmoid,
    Tanh,
    Relu,
}

/// How the coordinates are encoded (`network.pos_encoding.type`; SIREN: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PosEncoding {
    /// Random Fourier features of `fourier_mapping_size` frequencies.
    #[default]
    Fourier,
    /// NeRF's encoding with `num_frequencies` octaves, coordinates included.
    Nerf { num_frequencies: usize },
    /// The coordinates themselves (SIREN).
    None,
}

impl PosEncoding {
    /// NeRF's frequency count by the Nyquist rule for an image whose longer side is `side`
    /// (the official `sidelength = max(H, W)`): ⌊log₂(side/4)⌋, at least 1.
    pub fn nyquist_frequencies(side: usize) -> usize {
        ((side as f64 / 4.0).log2().floor() as usize).max(1)
    }
}

/// The activation of the hidden layers (`network.activation`; SIREN: sine).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HiddenActivation {
    #[default]
    Relu,
    /// SIREN: sin(w₀·z), with `w0_initial` on the first layer.
    Sine { w0: f64, w0_initial: f64 },
}

impl HiddenActivation {
    /// The activation of hidden layer `i` (0-based) at `z`, in f64.
    pub fn value(self, i: usize, z: f64) -> f64 {
        match self {
            HiddenActivation::Relu => z.max(0.0),
            HiddenActivation::Sine { .. } => (self.w0(i) * z).sin(),
        }
    }

    /// w₀ of hidden layer `i` (1 for ReLU).
    pub fn w0(self, i: usize) -> f64 {
        match self {
            HiddenActivation::Relu => 1.0,
            HiddenActivation::Sine { w0, w0_initial } => {
                if i == 0 {
                    w0_initial
                } else {
                    w0
                }
            }
        }
    }

    /// Applies the activation of hidden layer `i` (differentiable).
    pub fn apply(self, i: usize, z: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            HiddenActivation::Relu => z.relu(),
            HiddenActivation::Sine { .. } => z.affine(self.w0(i), 0.0)?.sin(),
        }
    }
}

/// The FFN architecture and the image shape it represents. Field names follow the official
/// Hydra config (`network.*`, `data.data_shape`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FfnConfig {
    /// Input coordinate dimensions (2 for images).
    pub dim_in: usize,
    /// Output channels (3 for RGB).
    pub dim_out: usize,
    /// Width of every hidden layer.
    pub layer_size: usize,
    /// Number of Linear layers, the output layer included.
    pub num_layers: usize,
    /// Number of Fourier frequencies (rows of `B`); γ has twice as many features.
    pub fourier_mapping_size: usize,
    /// Standard deviation of the Gaussian `B` at initialisation.
    pub fourier_noise_scale: f64,
    /// Activation after the last layer; `None` is the identity (official default).
    pub final_act: Option<FinalActivation>,
    /// `[height, width]` of the represented image.
    pub data_shape: [usize; 2],
    /// The coordinate encoding (`fourier` in configurations written before it was a choice).
    #[serde(default)]
    pub encoding: PosEncoding,
    /// The hidden layers' activation (ReLU in configurations written before it was a choice).
    #[serde(default)]
    pub activation: HiddenActivation,
}

impl FfnConfig {
    /// The configuration of the paper and of the released checkpoint, for an image of `height`×`width`.
    pub fn paper(height: usize, width: usize) -> Self {
        Self::with_width(104, height, width)
    }

    /// The official architecture with hidden width (and Fourier mapping size) `layer_size`.
    pub fn with_width(layer_size: usize, height: usize, width: usize) -> Self {
        FfnConfig {
            dim_in: 2,
            dim_out: 3,
            layer_size,
            num_layers: 3,
            fourier_mapping_size: layer_size,
            fourier_noise_scale: 10.0,
            final_act: None,
            data_shape: [height, width],
            encoding: PosEncoding::Fourier,
            activation: HiddenActivation::Relu,
        }
    }

    /// The official SIREN (`models/layers/siren.py`): `num_layers` Linear layers of width
    /// `layer_size` on the raw coordinates, sin(w₀·z) (w₀ = w₀_initial = 30 by default).
    pub fn siren(layer_size: usize, height: usize, width: usize) -> Self {
        FfnConfig {
            encoding: PosEncoding::None,
            activation: HiddenActivation::Sine {
                w0: 30.0,
                w0_initial: 30.0,
            },
            ..Self::with_width(layer_size, height, width)
        }
    }

    /// The official model name: `siren` for a sine MLP, else `ffn`.
    pub fn model_name(&self) -> &'static str {
        match self.activation {
            HiddenActivation::Sine { .. } => "siren",
            HiddenActivation::Relu => "ffn",
        }
    }

    /// Features of the encoded coordinates: Linear layer 1's fan-in.
    pub fn encoding_dim(&self) -> usize {
        match self.encoding {
            PosEncoding::Fourier => 2 * self.fourier_mapping_size,
            PosEncoding::Nerf { num_frequencies } => self.dim_in * (1 + 2 * num_frequencies),
            PosEncoding::None => self.dim_in,
        }
    }

    /// Checks that the numbers describe a buildable model within [`limits`]; errors name the
    /// fields as in `config.json`.
    pub fn validate(&self) -> Result<()> {
        self.check(&limits::plain_names)
    }

    /// [`FfnConfig::validate`], naming the fields with `name` (a YAML path, a flag).
    pub fn check(&self, name: FieldNames) -> Result<()> {
        let fail = |m: String| Err(XincError::InvalidArgument(m));
        if self.dim_in != 2 {
            return fail(format!(
                "{} = {} must be 2 (image coordinates)",
                name("dim_in"),
                self.dim_in
            ));
        }
        if self.dim_out != 3 {
            return fail(format!(
                "{} = {} must be 3 (RGB: training, render and the canvas read 3 channels)",
                name("dim_out"),
                self.dim_out
            ));
        }
        limits::FFN_LAYERS.check_range(&name("num_layers"), self.num_layers, 2)?;
        limits::FFN_WIDTH.check_range(&name("layer_size"), self.layer_size, 1)?;
        let mapping = name("fourier_mapping_size");
        limits::FFN_WIDTH.check_range(&mapping, self.fourier_mapping_size, 1)?;
        limits::check_positive(&name("fourier_noise_scale"), self.fourier_noise_scale)?;
        if let PosEncoding::Nerf { num_frequencies } = self.encoding {
            // 2^k·π stays a finite f32 far beyond this; more octaves than 24 alias every pixel.
            if !(1..=24).contains(&num_frequencies) {
                return fail(format!(
                    "{} = {num_frequencies} must be in 1..=24",
                    name("num_frequencies")
                ));
            }
        }
        if let HiddenActivation::Sine { w0, w0_initial } = self.activation {
            limits::check_positive(&name("w0"), w0)?;
            limits::check_positive(&name("w0_initial"), w0_initial)?;
        }
        for side in self.data_shape {
            limits::IMAGE_SIDE.check_range(&name("data_shape"), side, 1)?;
        }
        // Within the limits above, neither count can overflow 64 bits (< 2^50).
        let widths = format!(
            "{}, {}, {}",
            name("layer_size"),
            mapping,
            name("num_layers")
        );
        limits::PARAMS.check(&format!("FFN parameters ({widths})"), self.num_params())?;
        let activations = self.num_pixels() * self.values_per_pixel();
        limits::ACTIVATIONS.check(
            &format!(
                "FFN activations over the image ({}, {widths})",
                name("data_shape")
            ),
            activations,
        )
    }

    pub fn height(&self) -> usize {
        self.data_shape[0]
    }

    pub fn width(&self) -> usize {
        self.data_shape[1]
    }

    pub fn num_pixels(&self) -> usize {
        self.height() * self.width()
    }

    /// Activation values of one pixel in a forward pass: the Fourier features, every hidden
    /// layer, the output before and after the final activation.
    pub fn values_per_pixel(&self) -> usize {
        self.encoding_dim() + self.num_layers.saturating_sub(1) * self.layer_size + 2 * self.dim_out
    }

    /// (fan-in, fan-out) of Linear layer `i` (0-based).
    pub fn layer_dims(&self, i: usize) -> (usize, usize) {
        let fan_in = if i == 0 {
            self.encoding_dim()
        } else {
            self.layer_size
        };
        let fan_out = if i + 1 == self.num_layers {
            self.dim_out
        } else {
            self.layer_size
        };
        (fan_in, fan_out)
    }

    /// Every tensor of the model, with the official names.
    pub fn weight_specs(&self) -> Vec<WeightSpec> {
        let mut specs = match self.encoding {
            PosEncoding::Fourier => vec![WeightSpec::new(
                "positional_encoding.B",
                &[self.fourier_mapping_size, self.dim_in],
            )],
            PosEncoding::Nerf { num_frequencies } => vec![WeightSpec::new(
                "positional_encoding.freq_bands",
                &[num_frequencies],
            )],
            PosEncoding::None => Vec::new(),
        };
        for i in 0..self.num_layers {
            let (fan_in, fan_out) = self.layer_dims(i);
            specs.push(WeightSpec::new(
                format!("net.{i}.linear.weight"),
                &[fan_out, fan_in],
            ));
            specs.push(WeightSpec::new(format!("net.{i}.linear.bias"), &[fan_out]));
        }
        specs
    }

    /// Number of trainable parameters (`B` is a buffer and not counted, as officially).
    pub fn num_params(&self) -> usize {
        (0..self.num_layers)
            .map(|i| {
                let (a, b) = self.layer_dims(i);
                a * b + b
            })
            .sum()
    }

    /// Fresh weights, initialised as the official code does (`B ~ N(0,1)·scale`; NeRF frequencies
    /// `2^k·π`; FFN Linear weights and biases `U(−1/√fan_in, 1/√fan_in)`; SIREN's
    /// `U(−1/fan_in, 1/fan_in)` on the first layer and `U(−√(6/fan_in)/w₀, √(6/fan_in)/w₀)` after,
    /// the last layer with the default w₀ = 30), from a seeded ChaCha8 generator: the same seed
    /// gives the same weights on every machine.
    pub fn init_tensors(&self, seed: u64, device: &Device) -> Result<Vec<(String, Tensor)>> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for spec in self.weight_specs() {
            let n: usize = spec.shape.iter().product();
            let values: Vec<f32> = if spec.name == "positional_encoding.B" {
                (0..n)
                    .map(|_| {
                        (rng.sample::<f64, _>(StandardNormal) * self.fourier_noise_scale) as f32
                    })
                    .collect()
            } else if spec.name == "positional_encoding.freq_bands" {
                nerf_frequencies(n)
            } else {
                let bound = self.init_bound(layer_index(&spec.name));
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            out.push((spec.name, Tensor::from_vec(values, spec.shape, device)?));
        }
        Ok(out)
    }
}

impl FfnConfig {
    /// The bound of Linear layer `i`'s uniform initialisation (see [`FfnConfig::init_tensors`]).
    fn init_bound(&self, i: usize) -> f32 {
        let fan_in = self.layer_dims(i).0 as f64;
        let bound = match self.activation {
            HiddenActivation::Relu => 1.0 / fan_in.sqrt(),
            HiddenActivation::Sine { .. } if i == 0 => 1.0 / fan_in,
            HiddenActivation::Sine { w0, .. } => {
                let w0 = if i + 1 == self.num_layers { 30.0 } else { w0 };
                (6.0 / fan_in).sqrt() / w0
            }
        };
        bound as f32
    }
}

/// NeRF's frequencies `2^k·π` in f32, as the official `2**torch.arange(n) * np.pi` makes them.
pub fn nerf_frequencies(n: usize) -> Vec<f32> {
    (0..n)
        .map(|k| std::f32::consts::PI * (1u64 << k) as f32)
        .collect()
}

/// The layer index `i` of a tensor named `net.{i}.linear.*`.
fn layer_index(name: &str) -> usize {
    name.split('.')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Random Fourier features: γ(x) = [sin(2π·x·Bᵀ), cos(2π·x·Bᵀ)].
#[derive(Clone, Debug)]
pub struct FourierFeatures {
    b: Tensor,
}

impl FourierFeatures {
    /// `b`: `[mapping_size, dim_in]`, already multiplied by the noise scale.
    pub fn new(b: Tensor) -> Self {
        FourierFeatures { b }
    }

    pub fn b(&self) -> &Tensor {
        &self.b
    }
}

impl Module for FourierFeatures {
    /// `[P, dim_in]` → `[P, 2·mapping_size]`; features `0..m` are sines, `m..2m` cosines.
    ///
    /// On the CPU the projection reproduces torch's f32 arithmetic: `2π·x` rounded to f32, then
    /// the dot product with `B` accumulated as MKL does (`x₀·b₀`, then fused multiply-adds). With
    /// |x·B| up to ~200, a different rounding order alone moves the features by 1.5e-5.
    fn forward(&self, coords: &Tensor) -> candle_core::Result<Tensor> {
        if !coords.device().is_cpu() {
            let proj = coords
                .affine(2.0 * std::f64::consts::PI, 0.0)?
                .matmul(&self.b.t()?)?;
            return Tensor::cat(&[proj.sin()?, proj.cos()?], D::Minus1);
        }
        let (m, dim_in) = self.b.dims2()?;
        let b = self
            .b
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let x = coords
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let mut out = vec![0.0f32; x.len() / dim_in * 2 * m];
        out.par_chunks_mut(2 * m)
            .zip(x.par_chunks(dim_in))
            .for_each(|(row, xs)| {
                let xs: Vec<f32> = xs.iter().map(|&v| two_pi * v).collect();
                for (i, bi) in b.chunks_exact(dim_in).enumerate() {
                    let proj = xs[1..]
                        .iter()
                        .zip(&bi[1..])
                        .fold(xs[0] * bi[0], |acc, (&x, &w)| x.mul_add(w, acc));
                    row[i] = proj.sin();
                    row[m + i] = proj.cos();
                }
            });
        let p = out.len() / (2 * m);
        Tensor::from_vec(out, (p, 2 * m), coords.device())
    }
}

/// NeRF's positional encoding: the coordinates, then per frequency f_k
/// `[sin(f_k·x), sin(f_k·y), cos(f_k·x), cos(f_k·y)]`, in f32 as the official module computes it.
#[derive(Clone, Debug)]
pub struct NerfFeatures {
    freq_bands: Tensor,
}

impl NerfFeatures {
    /// `freq_bands`: `[F]`, the frequencies 2^k·π.
    pub fn new(freq_bands: Tensor) -> Self {
        NerfFeatures { freq_bands }
    }

    pub fn freq_bands(&self) -> &Tensor {
        &self.freq_bands
    }
}

impl Module for NerfFeatures {
    /// `[P, d]` → `[P, d + 2·d·F]`.
    fn forward(&self, coords: &Tensor) -> candle_core::Result<Tensor> {
        let (p, d) = coords.dims2()?;
        let f = self.freq_bands.dim(0)?;
        let prod = coords
            .unsqueeze(1)?
            .broadcast_mul(&self.freq_bands.reshape((1, f, 1))?)?; // [P, F, d]
        let enc = Tensor::cat(&[prod.sin()?, prod.cos()?], 2)?.reshape((p, 2 * d * f))?;
        Tensor::cat(&[coords, &enc], 1)
    }
}

/// The coordinate encoding of a model.
#[derive(Clone, Debug)]
pub enum Encoding {
    Fourier(FourierFeatures),
    Nerf(NerfFeatures),
    /// The coordinates themselves (SIREN).
    Identity,
}

impl Encoding {
    /// The encoding of `config` from its tensors (`positional_encoding.*`).
    pub fn from_tensors(config: &FfnConfig, get: impl Fn(&str) -> Result<Tensor>) -> Result<Self> {
        Ok(match config.encoding {
            PosEncoding::Fourier => {
                Encoding::Fourier(FourierFeatures::new(get("positional_encoding.B")?))
            }
            PosEncoding::Nerf { .. } => {
                Encoding::Nerf(NerfFeatures::new(get("positional_encoding.freq_bands")?))
            }
            PosEncoding::None => Encoding::Identity,
        })
    }

    /// The encoding's tensors with their official names.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        match self {
            Encoding::Fourier(f) => vec![("positional_encoding.B".into(), f.b.clone())],
            Encoding::Nerf(n) => vec![(
                "positional_encoding.freq_bands".into(),
                n.freq_bands.clone(),
            )],
            Encoding::Identity => Vec::new(),
        }
    }
}

impl Module for Encoding {
    fn forward(&self, coords: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Encoding::Fourier(f) => f.forward(coords),
            Encoding::Nerf(n) => n.forward(coords),
            Encoding::Identity => Ok(coords.clone()),
        }
    }
}

/// Every activation of one forward pass, each `[P, features]` with pixel p = h·W + w.
#[derive(Clone, Debug)]
pub struct FfnActivations {
    /// The input coordinates, `[P, 2]`.
    pub coords: Tensor,
    /// The encoded coordinates γ, `[P, F]`: the input of Linear layer 1.
    pub features: Tensor,
    /// The outputs of the hidden layers after their activation: `hidden[k]` is the input of
    /// Linear layer k + 2.
    pub hidden: Vec<Tensor>,
    /// The output of the last Linear layer, before the final activation, `[P, dim_out]`.
    pub pre_output: Tensor,
    /// The prediction, `[P, dim_out]` (unclamped).
    pub output: Tensor,
}

impl FfnActivations {
    /// The input of Linear layer `layer` (1-based): the units whose contributions form that
    /// layer's canvas.
    pub fn layer_input(&self, layer: usize) -> Result<&Tensor> {
        match layer {
            1 => Ok(&self.features),
            k if k >= 2 && k - 2 < self.hidden.len() => Ok(&self.hidden[k - 2]),
            k => Err(XincError::InvalidArgument(format!("FFN has no layer {k}"))),
        }
    }

    /// The activations of pixels `p0..p0 + len` (views, no copy).
    pub fn narrow(&self, p0: usize, len: usize) -> Result<FfnActivations> {
        let n = |t: &Tensor| t.narrow(0, p0, len);
        Ok(FfnActivations {
            coords: n(&self.coords)?,
            features: n(&self.features)?,
            hidden: self
                .hidden
                .iter()
                .map(n)
                .collect::<candle_core::Result<_>>()?,
            pre_output: n(&self.pre_output)?,
            output: n(&self.output)?,
        })
    }
}

/// The FFN model: a plain struct of layers; weights come from [`ffn`] (a `VarBuilder`) or
/// [`Ffn::from_tensors`].
#[derive(Clone, Debug)]
pub struct Ffn {
    config: FfnConfig,
    encoding: Encoding,
    layers: Vec<Linear>,
}

/// Reads an FFN from a `VarBuilder` whose names are the official `state_dict` keys.
pub fn ffn(config: FfnConfig, vb: VarBuilder) -> Result<Ffn> {
    config.validate()?;
    let specs = config.weight_specs();
    let encoding = Encoding::from_tensors(&config, |name| {
        let spec = specs
            .iter()
            .find(|s| s.name == name)
            .expect("the config's own tensor");
        Ok(vb.get(spec.shape.clone(), name)?)
    })?;
    let layers = (0..config.num_layers)
        .map(|i| {
            let (fan_in, fan_out) = config.layer_dims(i);
            candle_nn::linear(fan_in, fan_out, vb.pp(format!("net.{i}.linear")))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Ffn::new(config, encoding, layers))
}

impl Ffn {
    pub fn new(config: FfnConfig, encoding: Encoding, layers: Vec<Linear>) -> Self {
        Ffn {
            config,
            encoding,
            layers,
        }
    }

    /// Builds the model from named tensors after checking them (missing, extra, shapes, NaN).
    pub fn from_tensors(
        config: FfnConfig,
        tensors: HashMap<String, Tensor>,
        origin: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let vb = super::validated_var_builder(origin, tensors, &config.weight_specs(), device)?;
        ffn(config, vb)
    }

    pub fn config(&self) -> &FfnConfig {
        &self.config
    }

    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// The weights with their official names (for saving).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = self.encoding.named_tensors();
        for (i, l) in self.layers.iter().enumerate() {
            out.push((format!("net.{i}.linear.weight"), l.weight().clone()));
            if let Some(b) = l.bias() {
                out.push((format!("net.{i}.linear.bias"), b.clone()));
            }
        }
        out
    }

    /// The model's image: its prediction over its own grid, after the final activation.
    pub fn render(&self, device: &Device) -> Result<ImageTensor> {
        let [height, width] = self.config.data_shape;
        let output = self.forward_image(device)?.output;
        Ok(ImageTensor {
            height,
            width,
            data: output.flatten_all()?.to_vec1::<f32>()?,
        })
    }

    /// The official coordinate grid of the model's image, `[P, 2]`, on `device`.
    pub fn coordinates(&self, device: &Device) -> Result<Tensor> {
        let [h, w] = self.config.data_shape;
        Ok(Tensor::from_vec(
            crate::data::coords::coordinate_grid(h, w),
            (h * w, 2),
            device,
        )?)
    }

    /// Runs the MLP part on precomputed encoded coordinates, returning the hidden activations and
    /// the pre-activation output.
    pub fn forward_features(&self, features: &Tensor) -> Result<(Vec<Tensor>, Tensor)> {
        let (last, hidden_layers) = self
            .layers
            .split_last()
            .expect("validated: at least 2 layers");
        let mut hidden = Vec::with_capacity(hidden_layers.len());
        let mut x = features.clone();
        for (i, layer) in hidden_layers.iter().enumerate() {
            x = self.config.activation.apply(i, &layer.forward(&x)?)?;
            hidden.push(x.clone());
        }
        Ok((hidden, last.forward(&x)?))
    }

    /// Applies the final activation.
    pub fn final_activation(&self, pre: &Tensor) -> Result<Tensor> {
        Ok(match self.config.final_act {
            None => pre.clone(),
            Some(FinalActivation::Sigmoid) => candle_nn::ops::sigmoid(pre)?,
            Some(FinalActivation::Tanh) => pre.tanh()?,
            Some(FinalActivation::Relu) => pre.relu()?,
        })
    }

    /// The full forward pass on `coords` (`[P, 2]`), keeping every activation.
    pub fn forward(&self, coords: &Tensor) -> Result<FfnActivations> {
        let features = self.encoding.forward(coords)?;
        let (hidden, pre_output) = self.forward_features(&features)?;
        let output = self.final_activation(&pre_output)?;
        Ok(FfnActivations {
            coords: coords.clone(),
            features,
            hidden,
            pre_output,
            output,
        })
    }

    /// The forward pass over the model's own image grid.
    pub fn forward_image(&self, device: &Device) -> Result<FfnActivations> {
        self.forward(&self.coordinates(device)?)
    }
}

impl super::StoredModel for Ffn {
    fn architecture(&self) -> super::Architecture {
        super::Architecture::Ffn(self.config.clone())
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        // The inherent method (a path names the inherent item before a trait's).
        Ffn::named_tensors(self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nerf_encoding_follows_the_official_layout_and_nyquist_rule() {
        // Nyquist: ⌊log₂(side/4)⌋: 256 → 6, 64 → 4, 7 → 1 (at least one).
        assert_eq!(PosEncoding::nyquist_frequencies(256), 6);
        assert_eq!(PosEncoding::nyquist_frequencies(64), 4);
        assert_eq!(PosEncoding::nyquist_frequencies(7), 1);
        let f = nerf_frequencies(2);
        assert_eq!(f, [std::f32::consts::PI, 2.0 * std::f32::consts::PI]);
        let enc = NerfFeatures::new(Tensor::new(f.as_slice(), &Device::Cpu).unwrap());
        let x = Tensor::new(&[[0.25f32, -0.5]], &Device::Cpu).unwrap();
        let got = enc.forward(&x).unwrap().to_vec2::<f32>().unwrap()[0].clone();
        let pi = std::f32::consts::PI;
        // [x, y, then per frequency: sin x, sin y, cos x, cos y].
        let want = [
            0.25,
            -0.5,
            (pi * 0.25).sin(),
            (pi * -0.5).sin(),
            (pi * 0.25).cos(),
            (pi * -0.5).cos(),
            (2.0 * pi * 0.25).sin(),
            (2.0 * pi * -0.5).sin(),
            (2.0 * pi * 0.25).cos(),
            (2.0 * pi * -0.5).cos(),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn siren_applies_its_sine_with_the_first_layer_w0() {
        let a = HiddenActivation::Sine {
            w0: 30.0,
            w0_initial: 5.0,
        };
        assert_eq!(a.value(0, 0.1), (0.5f64).sin());
        assert_eq!(a.value(1, 0.1), (3.0f64).sin());
        let cfg = FfnConfig::siren(8, 4, 6);
        assert_eq!((cfg.encoding_dim(), cfg.model_name()), (2, "siren"));
        assert!(cfg
            .weight_specs()
            .iter()
            .all(|s| s.name.starts_with("net.")));
        // The SIREN initialisation: first layer within 1/fan_in, later within √(6/fan_in)/w₀.
        let t: HashMap<_, _> = cfg
            .init_tensors(1, &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
        let max = |n: &str| {
            t[n].abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(max("net.0.linear.weight") <= 0.5 && max("net.0.linear.weight") > 0.1);
        assert!(max("net.1.linear.weight") <= (6f32 / 8.0).sqrt() / 30.0);
    }

    use super::*;

    #[test]
    fn paper_config_has_the_official_parameter_count() {
        let cfg = FfnConfig::paper(128, 256);
        assert_eq!(cfg.num_params(), 32_971);
        assert_eq!(cfg.weight_specs().len(), 7);
        assert_eq!(cfg.layer_dims(0), (208, 104));
        assert_eq!(cfg.layer_dims(2), (104, 3));
    }

    #[test]
    fn absurd_configs_are_refused_naming_the_field() {
        let paper = FfnConfig::paper(128, 256);
        assert!(paper.validate().is_ok());
        for (cfg, expected) in [
            (
                FfnConfig {
                    data_shape: [100_000, 100_000],
                    ..paper.clone()
                },
                "data_shape = 100000 is more than the limit 8192",
            ),
            (
                FfnConfig {
                    data_shape: [0, 4],
                    ..paper.clone()
                },
                "data_shape = 0 is less than 1",
            ),
            (
                FfnConfig {
                    num_layers: 1000,
                    ..paper.clone()
                },
                "num_layers = 1000 is more than the limit 64",
            ),
            (
                FfnConfig {
                    layer_size: 1 << 20,
                    ..paper.clone()
                },
                "layer_size = 1048576 is more than the limit 65536",
            ),
            (
                FfnConfig::with_width(65_536, 16, 16),
                "FFN parameters (layer_size, fourier_mapping_size, num_layers) = 12885229571 \
                 is more than the limit 2147483648",
            ),
            (
                FfnConfig::with_width(4096, 8192, 8192),
                "FFN activations over the image (data_shape, layer_size",
            ),
            (
                FfnConfig {
                    fourier_noise_scale: f64::NAN,
                    ..paper.clone()
                },
                "fourier_noise_scale = NaN is not a finite number",
            ),
            (
                FfnConfig {
                    dim_out: 4,
                    ..paper.clone()
                },
                "dim_out = 4 must be 3",
            ),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        let flags = |f: &'static str| format!("--{f}");
        let err = FfnConfig::paper(9000, 4)
            .check(&flags)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--data_shape = 9000"), "{err}");
    }

    #[test]
    fn seeded_init_is_reproducible_and_in_range() {
        let cfg = FfnConfig::with_width(8, 4, 4);
        let a = cfg.init_tensors(7, &Device::Cpu).unwrap();
        let b = cfg.init_tensors(7, &Device::Cpu).unwrap();
        let c = cfg.init_tensors(8, &Device::Cpu).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&a[1].1), flat(&b[1].1));
        assert_ne!(flat(&a[1].1), flat(&c[1].1));
        let w0 = flat(&a[1].1); // net.0.linear.weight, fan_in 16
        assert!(w0.iter().all(|v| v.abs() <= 0.25));
        let bmat = flat(&a[0].1);
        let std = (bmat.iter().map(|v| v * v).sum::<f32>() / bmat.len() as f32).sqrt();
        assert!(
            std > 3.0 && std < 20.0,
            "B std {std} should be near the noise scale 10"
        );
    }

    #[test]
    fn forward_shapes_and_relu() {
        let dev = Device::Cpu;
        let cfg = FfnConfig::with_width(8, 4, 6);
        let t: HashMap<_, _> = cfg.init_tensors(1, &dev).unwrap().into_iter().collect();
        let m = Ffn::from_tensors(cfg, t, "test", &dev).unwrap();
        let a = m.forward_image(&dev).unwrap();
        assert_eq!(a.features.dims(), &[24, 16]);
        assert_eq!(a.hidden.len(), 2);
        assert_eq!(a.hidden[1].dims(), &[24, 8]);
        assert_eq!(a.output.dims(), &[24, 3]);
        let min = a.hidden[0]
            .flatten_all()
            .unwrap()
            .min(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(min >= 0.0);
    }
}
