//! The NeRV/HNeRV architecture ([`NervConfig`]): the official flags' values, their checks, and
//! what follows from them (`fc_dim` by the official formula, every block's width and kernel, the
//! tensor specifications with the official names).

use serde::{Deserialize, Serialize};

use super::encoder::{encoder_specs, EncoderConfig};
use super::layers::{Activation, BlockConfig, BlockType, Norm};
use crate::error::{Result, XincError};
use crate::io::files::checked_product;
use crate::models::limits::{self, FieldNames};
use crate::models::WeightSpec;

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
    /// `--act`: the activation of the stem and of every block.
    #[serde(default = "gelu")]
    pub act: Activation,
    /// `--norm`: the norm after every conv but the head's.
    #[serde(default = "no_norm")]
    pub norm: Norm,
    /// `--conv_type`'s second word: how the blocks upsample.
    #[serde(default = "pshuffel")]
    pub block: BlockType,
    /// `--num_blks E_D`: D, the decoder blocks per stride (the first upsamples, the others keep
    /// the size and the width).
    #[serde(default = "one")]
    pub dec_blocks: usize,
    /// HNeRV: the encoder that makes each frame's content embedding. `None`: NeRV, whose input is
    /// the positional encoding of t.
    #[serde(default)]
    pub encoder: Option<EncoderConfig>,
    /// HNeRV: the frame size `[H, W]` (the encoder's input).
    #[serde(default)]
    pub frame_hw: Option<[usize; 2]>,
}

fn gelu() -> Activation {
    Activation::Gelu
}

fn no_norm() -> Norm {
    Norm::None
}

fn pshuffel() -> BlockType {
    BlockType::Pshuffel
}

fn one() -> usize {
    1
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
            act: Activation::Gelu,
            norm: Norm::None,
            block: BlockType::Pshuffel,
            dec_blocks: 1,
            encoder: None,
            frame_hw: None,
        }
    }
}

impl NervConfig {
    /// The official NeRV flags of the paper's runs (README of the official code).
    pub const PAPER_ARGS: &'static str = "--embed pe_1.25_80 --fc_hw 8_16 --dec_strds 4 2 2 \
        --ks 0_3_3 --reduce 1.2 --modelsize 1.0 --lower_width 6 --conv_type convnext pshuffel \
        --act gelu --norm none --out_bias tanh";

    /// Checks that the numbers describe a buildable model within [`limits`]: every size in range,
    /// every number finite, odd decoder kernels, at least one channel per layer. Errors name the
    /// fields as in `config.json`.
    pub fn validate(&self) -> Result<()> {
        self.check(&limits::plain_names)
    }

    /// [`NervConfig::validate`], naming the fields with `name` (the official flags, a file's).
    pub fn check(&self, name: FieldNames) -> Result<()> {
        limits::FRAMES.check_range(&name("frames"), self.frames, 1)?;
        limits::NERV_BLOCKS.check_range(&name("dec_blocks"), self.dec_blocks, 1)?;
        match &self.encoder {
            None => self.check_embedding(name)?,
            Some(enc) => self.check_encoder(enc, name)?,
        }
        if self.norm == Norm::In && self.embed_hw() == [1, 1] {
            return Err(invalid(format!(
                "{} in: the stem's output has one pixel per channel, which instance norm cannot \
                 normalise (PyTorch refuses it in training); it needs HNeRV's larger embedding",
                name("norm")
            )));
        }
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

    /// HNeRV: strides, widths, and a frame size the encoder divides into whole cells.
    fn check_encoder(&self, enc: &EncoderConfig, name: FieldNames) -> Result<()> {
        let strides = format!("number of {}", name("enc_strides"));
        limits::NERV_BLOCKS.check_range(&strides, enc.strides.len(), 1)?;
        for &s in &enc.strides {
            limits::IMAGE_SIDE.check_range(&name("enc_strides"), s, 1)?;
        }
        limits::NERV_CHANNELS.check_range(&name("enc_dim"), enc.dim, 1)?;
        limits::NERV_CHANNELS.check_range(&name("enc_dim"), enc.embed_dim, 1)?;
        limits::NERV_BLOCKS.check(&name("enc_blocks"), enc.blocks)?;
        let [h, w] = self
            .frame_hw
            .ok_or_else(|| invalid(format!("{}: HNeRV needs the frame size", name("frame_hw"))))?;
        for side in [h, w] {
            limits::IMAGE_SIDE.check_range(&name("frame_hw"), side, 1)?;
        }
        let what = format!("the product of {}", name("enc_strides"));
        let total = checked_product(&what, &enc.strides)?;
        let dec = checked_product(&name("dec_strides"), &self.dec_strides)?;
        if h % total != 0 || w % total != 0 || total % dec != 0 {
            return Err(invalid(format!(
                "{} = {h}×{w} with {} (×{total}) and {} (×{dec}): HNeRV needs the frame to be a \
                 multiple of the encoder's stride and that stride a multiple of the decoder's",
                name("frame_hw"),
                name("enc_strides"),
                name("dec_strides")
            )));
        }
        if self.fc_hw != [total / dec; 2] {
            return Err(invalid(format!(
                "{} = {:?}: HNeRV's is the encoder's over the decoder's stride, {}",
                name("fc_hw"),
                self.fc_hw,
                total / dec
            )));
        }
        Ok(())
    }

    /// `fc_hw`, the strides, the kernel sizes, and the frame size each block makes: the official
    /// layers must produce exactly `side × stride` (some kernel sizes do not, e.g. `conv` blocks
    /// with an odd kernel lose a pixel).
    fn check_shape(&self, name: FieldNames) -> Result<()> {
        for side in self.fc_hw {
            limits::IMAGE_SIDE.check_range(&name("fc_hw"), side, 1)?;
        }
        let blocks = format!("number of {}", name("dec_strides"));
        limits::NERV_BLOCKS.check_range(&blocks, self.dec_strides.len(), 1)?;
        for &s in &self.dec_strides {
            limits::IMAGE_SIDE.check_range(&name("dec_strides"), s, 1)?;
        }
        let base = self.embed_hw();
        for (side, fc) in base.iter().zip(self.fc_hw) {
            let what = format!("frame side ({} × {})", name("fc_hw"), name("dec_strides"));
            let factors: Vec<usize> = [*side, fc]
                .into_iter()
                .chain(self.dec_strides.iter().copied())
                .collect();
            limits::IMAGE_SIDE.check(&what, checked_product(&what, &factors)?)?;
        }
        for k in self.ks {
            limits::NERV_KERNEL.check(&name("ks"), k)?;
        }
        if self.block == BlockType::Pshuffel {
            if let Some(&k) = self.ks[1..].iter().find(|&&k| k % 2 == 0) {
                return Err(invalid(format!(
                    "{} = {:?}: the decoder kernel sizes (the 2nd and 3rd) must be odd, got {k}",
                    name("ks"),
                    self.ks
                )));
            }
        }
        let mut side = [base[0] * self.fc_hw[0], base[1] * self.fc_hw[1]];
        for b in self.block_configs_with(&vec![1; self.dec_strides.len() + 1]) {
            for d in 0..2 {
                let want = side[d] * b.stride;
                let got = b.kind.output_side(side[d], b.kernel, b.stride);
                if got != Some(want) {
                    return Err(invalid(format!(
                        "{} {} with {} = {:?} and stride {}: the official layer turns {} pixels \
                         into {got:?}, not {want}; choose kernel sizes that upsample exactly",
                        name("block"),
                        b.kind.name(),
                        name("ks"),
                        self.ks,
                        b.stride,
                        side[d]
                    )));
                }
                side[d] = want;
            }
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
        let [eh, ew] = self.embed_hw();
        let [fh, fw] = self.fc_hw;
        let mut side = [eh * fh, ew * fw];
        let mut values = 2 * self.embed_dim() * eh * ew + 2 * self.widths()[0] * side[0] * side[1];
        if let Some([h, w]) = self.frame_hw {
            values += 3 * h * w;
        }
        for b in self.block_configs() {
            side = [side[0] * b.stride, side[1] * b.stride];
            // The conv output (s² channels per output channel) and the block's output.
            values += 3 * b.out_channels * side[0] * side[1];
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

    /// Channels of the decoder's input: the positional encoding's 2L, or HNeRV's embedding.
    pub fn embed_dim(&self) -> usize {
        match &self.encoder {
            None => 2 * self.pe_levels,
            Some(enc) => enc.embed_dim,
        }
    }

    /// `[h, w]` of the decoder's input: 1×1 for NeRV, the frame over the encoder's stride for
    /// HNeRV.
    pub fn embed_hw(&self) -> [usize; 2] {
        match (&self.encoder, self.frame_hw) {
            (Some(enc), Some([h, w])) => {
                let s = enc.total_stride().max(1);
                [h / s, w / s]
            }
            _ => [1, 1],
        }
    }

    /// The kernel size of decoder stage `i` (0-based): `min(ks₁ + 2i, ks₂)`.
    pub fn block_kernel(&self, i: usize) -> usize {
        (self.ks[1] + 2 * i).min(self.ks[2])
    }

    /// `fc_dim` by the official formula (`train_nerv_all.py`): the largest root of
    /// a·x² + b·x − (modelsize·10⁶ − embedding parameters).
    pub fn fc_dim(&self) -> usize {
        self.fc_dim_root().floor().max(0.0) as usize
    }

    /// The root behind [`NervConfig::fc_dim`], before flooring (NaN or infinite for a
    /// configuration that [`NervConfig::validate`] refuses). a = (1/r)·Σᵢ r^(−2i)·sᵢ²·kᵢ²;
    /// NeRV: b = embed_dim·fc_h·fc_w and no embedding parameters; HNeRV: b = embed_dim·9·fc_h²
    /// (the official count, as if the stem were 3×3) and the embeddings of all frames,
    /// embed_dim·H·W·T / stride², come out of the budget.
    fn fc_dim_root(&self) -> f64 {
        let r = self.reduce;
        let a: f64 = (self.dec_strides.iter().enumerate())
            .map(|(i, &s)| {
                r.powi(-2 * i as i32) * (s as f64).powi(2) * (self.block_kernel(i) as f64).powi(2)
            })
            .sum::<f64>()
            / r;
        let e = self.embed_dim() as f64;
        let (b, embed_params) = match (&self.encoder, self.frame_hw) {
            (Some(enc), Some([h, w])) => {
                let s = enc.total_stride() as f64;
                let fc = self.fc_hw[0] as f64;
                (
                    e * fc * fc * 9.0,
                    e / (s * s) * (h * w) as f64 * self.frames as f64,
                )
            }
            _ => (e * self.fc_hw[0] as f64 * self.fc_hw[1] as f64, 0.0),
        };
        let c = -(self.modelsize * 1e6 - embed_params);
        (-b + (b * b - 4.0 * a * c).sqrt()) / (2.0 * a)
    }

    /// Channel widths: `fc_dim`, then each stage's output (`max(round(ngf / reduce),
    /// lower_width)` with Python's round-half-to-even).
    pub fn widths(&self) -> Vec<usize> {
        let mut widths = vec![self.fc_dim()];
        for _ in &self.dec_strides {
            let prev = *widths.last().expect("starts non-empty") as f64;
            widths.push(round_half_even(prev / self.reduce).max(self.lower_width as f64) as usize);
        }
        widths
    }

    /// Every decoder block after the stem, in order (`decoder.1`, `decoder.2`, …): per stride,
    /// `dec_blocks` blocks, the first of which upsamples and changes the width.
    pub fn block_configs(&self) -> Vec<BlockConfig> {
        self.block_configs_with(&self.widths())
    }

    fn block_configs_with(&self, widths: &[usize]) -> Vec<BlockConfig> {
        let mut out = Vec::new();
        for (i, &s) in self.dec_strides.iter().enumerate() {
            for j in 0..self.dec_blocks {
                out.push(BlockConfig {
                    kind: self.block,
                    in_channels: if j == 0 { widths[i] } else { widths[i + 1] },
                    out_channels: widths[i + 1],
                    kernel: self.block_kernel(i),
                    stride: if j == 0 { s } else { 1 },
                    norm: self.norm,
                    act: self.act,
                });
            }
        }
        out
    }

    /// Output frame size `[H, W]`.
    pub fn frame_size(&self) -> [usize; 2] {
        let up: usize = self.dec_strides.iter().product();
        let [eh, ew] = self.embed_hw();
        [eh * self.fc_hw[0] * up, ew * self.fc_hw[1] * up]
    }

    /// Whether this is HNeRV (an encoder makes the decoder's input from the frame).
    pub fn is_hnerv(&self) -> bool {
        self.encoder.is_some()
    }

    /// Every learned tensor, with the official names (batch-norm running statistics included;
    /// the official `num_batches_tracked` counters are not model weights and are skipped).
    pub fn weight_specs(&self) -> Vec<WeightSpec> {
        let widths = self.widths();
        let stem_out = widths[0] * self.fc_hw[0] * self.fc_hw[1];
        let mut specs = Vec::new();
        if let Some(enc) = &self.encoder {
            specs.extend(
                encoder_specs(enc)
                    .iter()
                    .map(|(n, s)| WeightSpec::new(n, s)),
            );
        }
        specs.push(WeightSpec::new(
            "decoder.0.conv.downconv.weight",
            &[stem_out, self.embed_dim(), 1, 1],
        ));
        specs.push(WeightSpec::new("decoder.0.conv.downconv.bias", &[stem_out]));
        specs.extend(self.norm_specs(0, stem_out));
        for (n, b) in self.block_configs().iter().enumerate() {
            let n = n + 1;
            let k = b.kind.conv_kernel(b.kernel, b.stride);
            let prefix = b.kind.conv_prefix(n);
            let shape = match b.kind {
                BlockType::Pshuffel => [b.out_channels * b.stride * b.stride, b.in_channels, k, k],
                BlockType::Conv => [b.in_channels, b.out_channels, k, k],
                BlockType::Interpolate => [b.out_channels, b.in_channels, k, k],
            };
            specs.push(WeightSpec::new(format!("{prefix}.weight"), &shape));
            specs.push(WeightSpec::new(
                format!("{prefix}.bias"),
                &[shape[usize::from(b.kind == BlockType::Conv)]],
            ));
            specs.extend(self.norm_specs(n, b.out_channels));
        }
        let last = *widths.last().expect("non-empty");
        specs.push(WeightSpec::new("head_layer.weight", &[3, last, 3, 3]));
        specs.push(WeightSpec::new("head_layer.bias", &[3]));
        specs
    }

    /// The batch norm's tensors of block `n` (none without batch norm).
    fn norm_specs(&self, n: usize, channels: usize) -> Vec<WeightSpec> {
        if self.norm != Norm::Bn {
            return Vec::new();
        }
        ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|t| WeightSpec::new(format!("decoder.{n}.norm.{t}"), &[channels]))
            .collect()
    }

    /// Number of parameters (the running statistics are buffers, not parameters).
    pub fn num_params(&self) -> usize {
        self.weight_specs()
            .iter()
            .filter(|s| !s.name.contains(".running_"))
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    /// The time input of frame `i`: `i / T`, in f64 as the official DataLoader produces it.
    pub fn time_of(&self, frame: usize) -> f64 {
        frame as f64 / self.frames as f64
    }
}

fn invalid(reason: String) -> XincError {
    XincError::InvalidArgument(reason)
}

/// Python's `round`: halves go to the even neighbour.
pub(super) fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// `base^k` as torch's float32 `pow` on the CPU returns it. That kernel (SLEEF, within 1 ulp) is
/// not always correctly rounded, and at t ≈ 0.4 a one-ulp change of a base near 1.25⁴⁵·π ≈ 7·10⁴
/// moves its feature by 10⁻³, so its known deviations are reproduced: for the paper's base 1.25
/// and k < 80, measured against the official embedding (`../shared/golden/nerv_synth`), only
/// 1.25⁴⁵ is rounded down instead of to nearest. Other bases use the correctly rounded value.
pub(super) fn torch_pow_f32(base: f32, k: usize) -> f32 {
    let nearest = (base as f64).powi(k as i32) as f32;
    if base == 1.25 && k == 45 {
        f32::from_bits(nearest.to_bits() - 1)
    } else {
        nearest
    }
}
