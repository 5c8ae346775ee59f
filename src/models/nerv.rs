//! NeRV: the CNN that decodes a video frame from its time index (official HNeRV code in NeRV mode,
//! `HNeRV/model_all.py`, spec A.6 and E.2).
//!
//! t = frame / T → positional encoding `pe_B_L` (computed in f64, then cast to f32, as the
//! official data loader's float64 time makes it) → `decoder.0` (1×1 conv + GELU) reshaped to
//! `[fc_dim, fc_h, fc_w]` → blocks `decoder.{1,2,3}` (3×3 conv → PixelShuffle → GELU) → `head_layer`
//! (3×3 conv) → OutImg (tanh·0.5 + 0.5, sigmoid, or an offset). [`Nerv::forward`] returns every
//! decoder activation, which the canvas needs.

use std::collections::HashMap;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

use super::limits::{self, FieldNames};
use super::WeightSpec;
use crate::data::image::ImageTensor;
use crate::error::{Result, XincError};
use crate::io::files::checked_product;

/// The output activation (`--out_bias`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutBias {
    /// `tanh(x)·0.5 + 0.5` (the training default).
    Tanh,
    /// `sigmoid(x)`.
    Sigmoid,
    /// `x + offset` (the analysis code sets 0.0: the identity).
    Offset(f64),
}

/// The NeRV architecture, with the official flag names, and the clip it represents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NervConfig {
    /// `--embed pe_B_L`: base B.
    pub pe_base: f64,
    /// `--embed pe_B_L`: L frequencies (2L features).
    pub pe_levels: usize,
    /// `--fc_hw`: `[fc_h, fc_w]`.
    pub fc_hw: [usize; 2],
    /// `--dec_strds`: the PixelShuffle factor of each block.
    pub dec_strides: Vec<usize>,
    /// `--ks`: `[encoder, decoder min, decoder max]` kernel sizes (`0_3_3`).
    pub ks: [usize; 3],
    /// `--reduce`: channel reduction per block.
    pub reduce: f64,
    /// `--modelsize`: parameter budget in millions, which sets `fc_dim`.
    pub modelsize: f64,
    /// `--lower_width`: the narrowest block.
    pub lower_width: usize,
    pub out_bias: OutBias,
    /// Number of frames T of the clip: frame i is decoded from t = i / T.
    pub frames: usize,
}

impl Default for NervConfig {
    /// The paper's configuration (README flags) for a 30-frame clip at 128×256.
    fn default() -> Self {
        NervConfig {
            pe_base: 1.25,
            pe_levels: 80,
            fc_hw: [8, 16],
            dec_strides: vec![4, 2, 2],
            ks: [0, 3, 3],
            reduce: 1.2,
            modelsize: 1.0,
            lower_width: 6,
            out_bias: OutBias::Tanh,
            frames: 30,
        }
    }
}

impl NervConfig {
    /// The official NeRV flags of the paper's runs (README of the official code).
    pub const PAPER_ARGS: &'static str = "--embed pe_1.25_80 --fc_hw 8_16 --dec_strds 4 2 2 \
        --ks 0_3_3 --reduce 1.2 --modelsize 1.0 --lower_width 6 --conv_type convnext pshuffel \
        --act gelu --norm none --out_bias tanh";

    /// Parses the official command-line flags (`--embed pe_1.25_80 --fc_hw 8_16 --dec_strds 4 2 2
    /// --ks 0_3_3 --reduce 1.2 --modelsize 1.0 --lower_width 6 --conv_type convnext pshuffel --act
    /// gelu --norm none --out_bias tanh …`) for a clip of `frames` frames. Flags that do not shape
    /// the model (training, data, quantisation) are ignored; flags that select something other
    /// than NeRV with GELU, no norm and PixelShuffle are errors.
    pub fn from_official_args(args: &str, frames: usize) -> Result<Self> {
        let mut cfg = NervConfig {
            frames,
            ..NervConfig::default()
        };
        for (flag, values) in split_flags(args)? {
            let one = || single(&flag, &values);
            match flag.as_str() {
                "embed" => (cfg.pe_base, cfg.pe_levels) = parse_embed(one()?)?,
                "fc_hw" => cfg.fc_hw = parse_tuple(&flag, one()?)?,
                "dec_strds" => {
                    cfg.dec_strides = values
                        .iter()
                        .map(|v| parse_num(&flag, v))
                        .collect::<Result<_>>()?
                }
                "ks" => cfg.ks = parse_tuple(&flag, one()?)?,
                "reduce" => cfg.reduce = parse_num(&flag, one()?)?,
                "modelsize" => cfg.modelsize = parse_num(&flag, one()?)?,
                "lower_width" => cfg.lower_width = parse_num(&flag, one()?)?,
                "out_bias" => cfg.out_bias = parse_out_bias(one()?)?,
                "act" => require(&flag, one()?, &["gelu"])?,
                "norm" => require(&flag, one()?, &["none"])?,
                "num_blks" => require(&flag, one()?, &["1_1"])?,
                "conv_type" => require(
                    &flag,
                    values.last().map_or("", String::as_str),
                    &["pshuffel"],
                )?,
                "enc_strds" if !values.is_empty() => {
                    return Err(bad_args(format!(
                        "--enc_strds {values:?}: only NeRV (no encoder) is supported"
                    )))
                }
                _ => tracing::debug!(flag, "ignoring a flag that does not shape the NeRV model"),
            }
        }
        cfg.check(&flag_names).map_err(|e| match e {
            XincError::InvalidArgument(m) => bad_args(m),
            other => other,
        })?;
        Ok(cfg)
    }

    /// Checks that the numbers describe a buildable model within [`limits`]: every size in range,
    /// every number finite, odd decoder kernels, at least one channel per layer. Errors name the
    /// fields as in `config.json`.
    pub fn validate(&self) -> Result<()> {
        self.check(&limits::plain_names)
    }

    /// [`NervConfig::validate`], naming the fields with `name` (the official flags, a file's).
    pub fn check(&self, name: FieldNames) -> Result<()> {
        limits::FRAMES.check_range(&name("frames"), self.frames, 1)?;
        self.check_embedding(name)?;
        self.check_shape(name)?;
        limits::check_positive(&name("reduce"), self.reduce)?;
        limits::check_positive(&name("modelsize"), self.modelsize)?;
        if self.modelsize * 1e6 > limits::PARAMS.max as f64 {
            return Err(invalid(format!(
                "{} = {:?} asks for {:e} parameters, more than the limit {} ({})",
                name("modelsize"),
                self.modelsize,
                self.modelsize * 1e6,
                limits::PARAMS.max,
                limits::PARAMS.why
            )));
        }
        limits::NERV_CHANNELS.check(&name("lower_width"), self.lower_width)?;
        if let OutBias::Offset(b) = self.out_bias {
            limits::check_finite(&name("out_bias"), b)?;
        }
        self.check_widths(name)?;
        self.check_totals(name)
    }

    /// `pe_B_L`: B finite and positive, L in range, and every frequency `B^k·π` finite in f32.
    fn check_embedding(&self, name: FieldNames) -> Result<()> {
        limits::check_positive(&name("pe_base"), self.pe_base)?;
        limits::PE_LEVELS.check_range(&name("pe_levels"), self.pe_levels, 1)?;
        let top = torch_pow_f32(self.pe_base as f32, self.pe_levels - 1) * std::f32::consts::PI;
        if top.is_finite() && top > 0.0 {
            return Ok(());
        }
        Err(invalid(format!(
            "{} = {:?} with {} = {}: the highest frequency B^(L-1)·π = {top} is not a positive \
             finite f32",
            name("pe_base"),
            self.pe_base,
            name("pe_levels"),
            self.pe_levels
        )))
    }

    /// `fc_hw`, the strides, the frame size they make, and the kernel sizes.
    fn check_shape(&self, name: FieldNames) -> Result<()> {
        for side in self.fc_hw {
            limits::IMAGE_SIDE.check_range(&name("fc_hw"), side, 1)?;
        }
        let blocks = format!("number of {}", name("dec_strides"));
        limits::NERV_BLOCKS.check_range(&blocks, self.dec_strides.len(), 1)?;
        for &s in &self.dec_strides {
            limits::IMAGE_SIDE.check_range(&name("dec_strides"), s, 1)?;
        }
        for side in self.fc_hw {
            let what = format!("frame side ({} × {})", name("fc_hw"), name("dec_strides"));
            let factors: Vec<usize> = std::iter::once(side)
                .chain(self.dec_strides.iter().copied())
                .collect();
            limits::IMAGE_SIDE.check(&what, checked_product(&what, &factors)?)?;
        }
        for k in self.ks {
            limits::NERV_KERNEL.check(&name("ks"), k)?;
        }
        if let Some(&k) = self.ks[1..].iter().find(|&&k| k % 2 == 0) {
            return Err(invalid(format!(
                "{} = {:?}: the decoder kernel sizes (the 2nd and 3rd) must be odd, got {k}",
                name("ks"),
                self.ks
            )));
        }
        Ok(())
    }

    /// `fc_dim` (from the parameter budget) and every block's width: from 1 to the channel limit.
    fn check_widths(&self, name: FieldNames) -> Result<()> {
        let root = self.fc_dim_root();
        let what = format!("fc_dim (from {} = {:?})", name("modelsize"), self.modelsize);
        if root.is_nan() {
            return Err(invalid(format!(
                "{what} cannot be computed: {} = {:?} overflows the official formula",
                name("reduce"),
                self.reduce
            )));
        }
        if root >= limits::NERV_CHANNELS.max as f64 + 1.0 {
            return Err(invalid(format!(
                "{what} = {root:.0} is more than the limit {} ({})",
                limits::NERV_CHANNELS.max,
                limits::NERV_CHANNELS.why
            )));
        }
        if root < 1.0 {
            return Err(invalid(format!(
                "{what} = {root:.3}: the budget leaves no channels (raise {})",
                name("modelsize")
            )));
        }
        let mut width = root.floor();
        for i in 0..self.dec_strides.len() {
            width = round_half_even(width / self.reduce).max(self.lower_width as f64);
            let what = format!("width of block {} (from {})", i + 1, name("reduce"));
            if width.is_nan() || width < 1.0 {
                return Err(invalid(format!("{what} is {width}: no channels")));
            }
            if width > limits::NERV_CHANNELS.max as f64 {
                return Err(invalid(format!(
                    "{what} = {width} is more than the limit {} ({})",
                    limits::NERV_CHANNELS.max,
                    limits::NERV_CHANNELS.why
                )));
            }
        }
        Ok(())
    }

    /// The parameter count and the activations of one frame, within their limits. Every factor
    /// is bounded by now, so the products stay far below 2^64.
    fn check_totals(&self, name: FieldNames) -> Result<()> {
        let what = format!("NeRV parameters (from {})", name("modelsize"));
        limits::PARAMS.check(&what, self.num_params())?;
        let widths = self.widths();
        let [fh, fw] = self.fc_hw;
        let mut side = [fh, fw];
        let mut values = 2 * self.embed_dim() + 2 * widths[0] * fh * fw;
        for (i, &s) in self.dec_strides.iter().enumerate() {
            side = [side[0] * s, side[1] * s];
            // The conv output (s² channels per output channel) and the block's output.
            values += 2 * widths[i + 1] * side[0] * side[1];
        }
        values += 2 * 3 * side[0] * side[1];
        let what = format!(
            "NeRV activations of one frame (from {}, {} and {})",
            name("modelsize"),
            name("fc_hw"),
            name("dec_strides")
        );
        limits::ACTIVATIONS.check(&what, values)
    }

    /// Size of the positional encoding (2L).
    pub fn embed_dim(&self) -> usize {
        2 * self.pe_levels
    }

    /// The kernel size of decoder block `i` (0-based): `min(ks₁ + 2i, ks₂)`.
    pub fn block_kernel(&self, i: usize) -> usize {
        (self.ks[1] + 2 * i).min(self.ks[2])
    }

    /// `fc_dim` by the official formula (`train_nerv_all.py`): the largest root of
    /// a·x² + b·x − modelsize·10⁶, with a = (1/r)·Σᵢ r^(−2i)·sᵢ²·kᵢ² and b = embed_dim·fc_h·fc_w.
    pub fn fc_dim(&self) -> usize {
        self.fc_dim_root().floor().max(0.0) as usize
    }

    /// The root behind [`NervConfig::fc_dim`], before flooring (NaN or infinite for a
    /// configuration that [`NervConfig::validate`] refuses).
    fn fc_dim_root(&self) -> f64 {
        let r = self.reduce;
        let a: f64 = (self.dec_strides.iter().enumerate())
            .map(|(i, &s)| {
                r.powi(-2 * i as i32) * (s as f64).powi(2) * (self.block_kernel(i) as f64).powi(2)
            })
            .sum::<f64>()
            / r;
        let b = self.embed_dim() as f64 * self.fc_hw[0] as f64 * self.fc_hw[1] as f64;
        let c = -self.modelsize * 1e6;
        (-b + (b * b - 4.0 * a * c).sqrt()) / (2.0 * a)
    }

    /// Channel widths: `fc_dim`, then each block's output (`max(round(ngf / reduce), lower_width)`
    /// with Python's round-half-to-even).
    pub fn widths(&self) -> Vec<usize> {
        let mut widths = vec![self.fc_dim()];
        for _ in &self.dec_strides {
            let prev = *widths.last().expect("starts non-empty") as f64;
            widths.push(round_half_even(prev / self.reduce).max(self.lower_width as f64) as usize);
        }
        widths
    }

    /// Output frame size `[H, W]`: fc_hw times the product of the strides.
    pub fn frame_size(&self) -> [usize; 2] {
        let up: usize = self.dec_strides.iter().product();
        [self.fc_hw[0] * up, self.fc_hw[1] * up]
    }

    /// Every tensor, with the official names.
    pub fn weight_specs(&self) -> Vec<WeightSpec> {
        let widths = self.widths();
        let stem_out = widths[0] * self.fc_hw[0] * self.fc_hw[1];
        let mut specs = vec![
            WeightSpec::new(
                "decoder.0.conv.downconv.weight",
                &[stem_out, self.embed_dim(), 1, 1],
            ),
            WeightSpec::new("decoder.0.conv.downconv.bias", &[stem_out]),
        ];
        for (i, &s) in self.dec_strides.iter().enumerate() {
            let (cin, cout, k) = (widths[i], widths[i + 1] * s * s, self.block_kernel(i));
            specs.push(WeightSpec::new(
                format!("decoder.{}.conv.upconv.0.weight", i + 1),
                &[cout, cin, k, k],
            ));
            specs.push(WeightSpec::new(
                format!("decoder.{}.conv.upconv.0.bias", i + 1),
                &[cout],
            ));
        }
        let last = *widths.last().expect("non-empty");
        specs.push(WeightSpec::new("head_layer.weight", &[3, last, 3, 3]));
        specs.push(WeightSpec::new("head_layer.bias", &[3]));
        specs
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.weight_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    /// The time input of frame `i`: `i / T`, in f64 as the official DataLoader produces it.
    pub fn time_of(&self, frame: usize) -> f64 {
        frame as f64 / self.frames as f64
    }
}

fn bad_args(reason: String) -> XincError {
    XincError::InvalidArgument(format!("NeRV arguments: {reason}"))
}

fn invalid(reason: String) -> XincError {
    XincError::InvalidArgument(reason)
}

/// The official flag that sets each field of [`NervConfig`], for messages about flags.
fn flag_names(field: &'static str) -> String {
    match field {
        "pe_base" => "--embed pe_B_L: B",
        "pe_levels" => "--embed pe_B_L: L",
        "dec_strides" => "--dec_strds",
        "frames" => "frames",
        other => return format!("--{other}"),
    }
    .to_string()
}

/// `--flag v1 v2 --other v3` → [(flag, [v1, v2]), (other, [v3])].
fn split_flags(args: &str) -> Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for token in args.split_whitespace() {
        if let Some(flag) = token.strip_prefix("--").or_else(|| {
            token
                .strip_prefix('-')
                .filter(|t| t.parse::<f64>().is_err())
        }) {
            out.push((flag.to_string(), Vec::new()));
        } else if let Some((_, values)) = out.last_mut() {
            values.push(token.to_string());
        } else {
            return Err(bad_args(format!("`{token}` comes before any --flag")));
        }
    }
    Ok(out)
}

fn single<'a>(flag: &str, values: &'a [String]) -> Result<&'a str> {
    match values {
        [v] => Ok(v),
        _ => Err(bad_args(format!(
            "--{flag} takes one value, got {values:?}"
        ))),
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse().map_err(|_| {
        let why = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            "is too large"
        } else {
            "is not a number"
        };
        bad_args(format!("--{flag} `{v}` {why}"))
    })
}

/// `A_B` / `A_B_C` → `[A, B]` / `[A, B, C]`.
fn parse_tuple<const N: usize>(flag: &str, v: &str) -> Result<[usize; N]> {
    let parts: Vec<usize> = v
        .split('_')
        .map(|p| parse_num(flag, p))
        .collect::<Result<_>>()?;
    parts
        .try_into()
        .map_err(|_| bad_args(format!("--{flag} `{v}` is not {N} numbers joined by `_`")))
}

fn parse_embed(v: &str) -> Result<(f64, usize)> {
    let mut parts = v.split('_');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("pe"), Some(base), Some(levels), None) => {
            Ok((parse_num("embed", base)?, parse_num("embed", levels)?))
        }
        _ => Err(bad_args(format!(
            "--embed `{v}`: only positional encodings pe_B_L are supported"
        ))),
    }
}

fn parse_out_bias(v: &str) -> Result<OutBias> {
    match v {
        "tanh" => Ok(OutBias::Tanh),
        "sigmoid" => Ok(OutBias::Sigmoid),
        other => Ok(OutBias::Offset(parse_num("out_bias", other)?)),
    }
}

fn require(flag: &str, v: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(bad_args(format!(
            "--{flag} `{v}` is not supported (only {})",
            allowed.join(", ")
        )))
    }
}

/// Python's `round`: halves go to the even neighbour.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// The positional encoding `pe_B_L`: `[sin(t·b_k), cos(t·b_k)]` with `b_k = B^k·π` rounded to f32
/// (the official bases are a float32 tensor) and the products and sines taken in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct PositionalEncoding {
    bases: Vec<f32>,
}

impl PositionalEncoding {
    pub fn new(base: f64, levels: usize) -> Self {
        let pi = std::f32::consts::PI;
        let bases = (0..levels)
            .map(|k| torch_pow_f32(base as f32, k) * pi)
            .collect();
        PositionalEncoding { bases }
    }

    /// The frequencies `B^k·π` as f32.
    pub fn bases(&self) -> &[f32] {
        &self.bases
    }

    /// The `2L` features of time `t`: sines, then cosines.
    pub fn encode(&self, t: f64) -> Vec<f32> {
        let v: Vec<f64> = self.bases.iter().map(|&b| t * b as f64).collect();
        v.iter()
            .map(|x| x.sin() as f32)
            .chain(v.iter().map(|x| x.cos() as f32))
            .collect()
    }
}

/// `base^k` as torch's float32 `pow` on the CPU returns it. That kernel (SLEEF, within 1 ulp) is
/// not always correctly rounded, and at t ≈ 0.4 a one-ulp change of a base near 1.25⁴⁵·π ≈ 7·10⁴
/// moves its feature by 10⁻³, so its known deviations are reproduced: for the paper's base 1.25
/// and k < 80, measured against the official embedding (`../shared/golden/nerv_synth`), only
/// 1.25⁴⁵ is rounded down instead of to nearest. Other bases use the correctly rounded value.
fn torch_pow_f32(base: f32, k: usize) -> f32 {
    let nearest = (base as f64).powi(k as i32) as f32;
    if base == 1.25 && k == 45 {
        f32::from_bits(nearest.to_bits() - 1)
    } else {
        nearest
    }
}

/// One decoder block: conv → PixelShuffle(s) → GELU (exact erf form).
#[derive(Clone, Debug)]
pub struct NervBlock {
    conv: Conv2d,
    scale: usize,
}

impl NervBlock {
    pub fn new(conv: Conv2d, scale: usize) -> Self {
        NervBlock { conv, scale }
    }

    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    pub fn scale(&self) -> usize {
        self.scale
    }
}

impl Module for NervBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::pixel_shuffle(&self.conv.forward(x)?, self.scale)?.gelu_erf()
    }
}

/// Every activation of one forward pass (batch first).
#[derive(Clone, Debug)]
pub struct NervActivations {
    /// The time inputs.
    pub t: Vec<f64>,
    /// The positional encoding, `[N, 2L, 1, 1]`.
    pub embedding: Tensor,
    /// The official `decoder_results`: the stem output `[N, C·fc_h·fc_w, 1, 1]`, its reshape
    /// `[N, fc_dim, fc_h, fc_w]` (block 1's input), then each block's output; the last is the
    /// head's input.
    pub decoder: Vec<Tensor>,
    /// The head output before OutImg, `[N, 3, H, W]`: what the head canvas sums to.
    pub head_output: Tensor,
    /// The reconstruction after OutImg.
    pub output: Tensor,
}

/// The NeRV model: plain layers; weights from [`nerv`] (a `VarBuilder` with the official keys)
/// or [`Nerv::from_tensors`].
#[derive(Clone, Debug)]
pub struct Nerv {
    config: NervConfig,
    encoding: PositionalEncoding,
    stem: Conv2d,
    blocks: Vec<NervBlock>,
    head: Conv2d,
}

/// Reads a NeRV from a `VarBuilder` whose names are the official `state_dict` keys.
pub fn nerv(config: NervConfig, vb: VarBuilder) -> Result<Nerv> {
    config.validate()?;
    let widths = config.widths();
    let stem_out = widths[0] * config.fc_hw[0] * config.fc_hw[1];
    let stem = candle_nn::conv2d(
        config.embed_dim(),
        stem_out,
        1,
        Conv2dConfig::default(),
        vb.pp("decoder.0.conv.downconv"),
    )?;
    let blocks = (config.dec_strides.iter().enumerate())
        .map(|(i, &s)| {
            let k = config.block_kernel(i);
            let cfg = Conv2dConfig {
                padding: k / 2,
                ..Default::default()
            };
            let conv = candle_nn::conv2d(
                widths[i],
                widths[i + 1] * s * s,
                k,
                cfg,
                vb.pp(format!("decoder.{}.conv.upconv.0", i + 1)),
            )?;
            Ok(NervBlock::new(conv, s))
        })
        .collect::<Result<Vec<_>>>()?;
    let last = *widths.last().expect("non-empty");
    let head = candle_nn::conv2d(
        last,
        3,
        3,
        Conv2dConfig {
            padding: 1,
            ..Default::default()
        },
        vb.pp("head_layer"),
    )?;
    let encoding = PositionalEncoding::new(config.pe_base, config.pe_levels);
    Ok(Nerv {
        config,
        encoding,
        stem,
        blocks,
        head,
    })
}

impl Nerv {
    /// Builds the model from named tensors after checking them (missing, extra, shapes, NaN).
    pub fn from_tensors(
        config: NervConfig,
        tensors: HashMap<String, Tensor>,
        origin: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let vb = super::validated_var_builder(origin, tensors, &config.weight_specs(), device)?;
        nerv(config, vb)
    }

    pub fn config(&self) -> &NervConfig {
        &self.config
    }

    pub fn blocks(&self) -> &[NervBlock] {
        &self.blocks
    }

    pub fn head(&self) -> &Conv2d {
        &self.head
    }

    /// The weights with their official names (for saving).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let mut push = |prefix: String, conv: &Conv2d| {
            out.push((format!("{prefix}.weight"), conv.weight().clone()));
            if let Some(b) = conv.bias() {
                out.push((format!("{prefix}.bias"), b.clone()));
            }
        };
        push("decoder.0.conv.downconv".into(), &self.stem);
        for (i, b) in self.blocks.iter().enumerate() {
            push(format!("decoder.{}.conv.upconv.0", i + 1), &b.conv);
        }
        push("head_layer".into(), &self.head);
        out
    }

    /// The positional encodings of time inputs `t`, `[N, 2L, 1, 1]`.
    pub fn embed(&self, t: &[f64], device: &Device) -> Result<Tensor> {
        let data: Vec<f32> = t.iter().flat_map(|&t| self.encoding.encode(t)).collect();
        Ok(Tensor::from_vec(
            data,
            (t.len(), self.config.embed_dim(), 1, 1),
            device,
        )?)
    }

    /// The forward pass for time inputs `t` (a batch), keeping every activation.
    pub fn forward(&self, t: &[f64], device: &Device) -> Result<NervActivations> {
        let embedding = self.embed(t, device)?;
        let stem = self.stem.forward(&embedding)?.gelu_erf()?;
        let [fh, fw] = self.config.fc_hw;
        let mut decoder = vec![
            stem.clone(),
            stem.reshape((t.len(), self.config.widths()[0], fh, fw))?,
        ];
        for block in &self.blocks {
            let x = block.forward(decoder.last().expect("non-empty"))?;
            decoder.push(x);
        }
        let head_output = self.head.forward(decoder.last().expect("non-empty"))?;
        let output = self.out_img(&head_output)?;
        Ok(NervActivations {
            t: t.to_vec(),
            embedding,
            decoder,
            head_output,
            output,
        })
    }

    /// The forward pass of frame `i` of the clip (t = i / T).
    pub fn forward_frame(&self, frame: usize, device: &Device) -> Result<NervActivations> {
        self.forward(&[self.config.time_of(frame)], device)
    }

    /// Frame `frame` of the clip as an image (the decoder's output at t = frame / T).
    pub fn render_frame(&self, frame: usize, device: &Device) -> Result<ImageTensor> {
        let [height, width] = self.config.frame_size();
        let output = self.forward_frame(frame, device)?.output;
        Ok(ImageTensor::from_chw(
            height,
            width,
            &output.flatten_all()?.to_vec1::<f32>()?,
        ))
    }

    /// OutImg.
    pub fn out_img(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.config.out_bias {
            OutBias::Tanh => ((x.tanh()? * 0.5)? + 0.5)?,
            OutBias::Sigmoid => candle_nn::ops::sigmoid(x)?,
            OutBias::Offset(b) => (x + b)?,
        })
    }
}

impl super::StoredModel for Nerv {
    fn architecture(&self) -> super::Architecture {
        super::Architecture::Nerv(self.config.clone())
    }

    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        // The inherent method (a path names the inherent item before a trait's).
        Nerv::named_tensors(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_config_has_the_official_sizes() {
        let cfg = NervConfig::default();
        assert_eq!(cfg.fc_dim(), 37);
        assert_eq!(cfg.widths(), vec![37, 31, 26, 22]);
        assert_eq!(cfg.frame_size(), [128, 256]);
        assert_eq!(cfg.num_params(), 978_557);
        assert_eq!(cfg.weight_specs()[2].shape, vec![496, 37, 3, 3]);
    }

    #[test]
    fn official_args_parse_and_bad_ones_are_refused() {
        let args = "--conv_type convnext pshuffel --act gelu --norm none --crop_list -1 --resize_list 128_256 \
                    --embed pe_1.25_80 --fc_hw 8_16 --dec_strds 4 2 2 --ks 0_3_3 --reduce 1.2 --skip_mssim \
                    --modelsize 1.0 -e 100 --lower_width 6 -b 2 --lr 0.001 --loss L2 --out_bias sigmoid";
        let cfg = NervConfig::from_official_args(args, 8).unwrap();
        assert_eq!(
            cfg,
            NervConfig {
                frames: 8,
                out_bias: OutBias::Sigmoid,
                ..NervConfig::default()
            }
        );
        let half = NervConfig::from_official_args("--modelsize 0.5 --out_bias 0.0", 30).unwrap();
        assert_eq!(half.out_bias, OutBias::Offset(0.0));
        assert!(half.fc_dim() < 37);
        for bad in [
            "--act relu",
            "--norm bn",
            "--embed hash_16",
            "--fc_hw 8",
            "--enc_strds 5 4",
            "8_16",
            "--reduce x",
        ] {
            let err = NervConfig::from_official_args(bad, 30).unwrap_err();
            assert!(matches!(err, XincError::InvalidArgument(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn absurd_flags_are_refused_with_their_real_cause() {
        for (args, expected) in [
            (
                "--embed pe_nan_80",
                "--embed pe_B_L: B = NaN is not a finite number",
            ),
            (
                "--embed pe_1e400_80",
                "--embed pe_B_L: B = inf is not a finite number",
            ),
            ("--embed pe_1.25_0", "--embed pe_B_L: L = 0 is less than 1"),
            (
                "--embed pe_1.25_5000",
                "--embed pe_B_L: L = 5000 is more than the limit 1024",
            ),
            (
                "--embed pe_100_80",
                "B^(L-1)·π = inf is not a positive finite f32",
            ),
            ("--out_bias nan", "--out_bias = NaN is not a finite number"),
            (
                "--out_bias -inf",
                "--out_bias = -inf is not a finite number",
            ),
            (
                "--modelsize inf",
                "--modelsize = inf is not a finite number",
            ),
            (
                "--modelsize -1",
                "--modelsize = -1.0 must be greater than 0",
            ),
            (
                "--modelsize 3000",
                "--modelsize = 3000.0 asks for 3e9 parameters",
            ),
            (
                "--modelsize 1e-7",
                "the budget leaves no channels (raise --modelsize)",
            ),
            ("--ks 0_3_0", "--ks = [0, 3, 0]: the decoder kernel sizes"),
            ("--ks 0_4_4", "must be odd, got 4"),
            ("--ks 0_3_99", "--ks = 99 is more than the limit 15"),
            (
                "--fc_hw 100000_1",
                "--fc_hw = 100000 is more than the limit 8192",
            ),
            ("--fc_hw 0_16", "--fc_hw = 0 is less than 1"),
            (
                "--fc_hw 99999999999999999999999_1",
                "--fc_hw `99999999999999999999999` is too large",
            ),
            (
                "--fc_hw 8_16 --dec_strds 64 64",
                "frame side (--fc_hw × --dec_strds) = 32768",
            ),
            ("--dec_strds 2 0 2", "--dec_strds = 0 is less than 1"),
            (
                "--dec_strds 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2",
                "number of --dec_strds = 17 is more than the limit 16",
            ),
            ("--reduce 0", "--reduce = 0.0 must be greater than 0"),
            ("--reduce 1e-300", "cannot be computed: --reduce = 1e-300"),
            (
                "--dec_strds 1 1 --ks 0_1_1 --reduce 0.001 --modelsize 2000",
                "width of block 2 (from --reduce) = 1000000 is more than the limit 16384",
            ),
            (
                "--lower_width 99999",
                "--lower_width = 99999 is more than the limit 16384",
            ),
        ] {
            let err = NervConfig::from_official_args(args, 30)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("NeRV arguments") && err.contains(expected),
                "{args}: {err}"
            );
        }
        let err = NervConfig::from_official_args("", 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("frames = 0 is less than 1"), "{err}");
        let err = NervConfig::from_official_args("", 200_000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("frames = 200000 is more than the limit 100000"),
            "{err}"
        );
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(30.83), 31.0);
        assert_eq!(round_half_even(-2.5), -2.0);
    }
}
