//! The building blocks of the NeRV/HNeRV decoder (`HNeRV/model_all.py`: `NeRVBlock`, `UpConv`,
//! `DownConv`, `NormLayer`, `ActivationLayer`): the activation (`--act`), the norm (`--norm`), the
//! upsampling type (`--conv_type`'s second word) and one decoder block built from them.
//!
//! A block is `conv → norm → act`, where the conv is, by type:
//! - `pshuffel`: Conv2d(k, padding (k−1)/2) to `C·s²` channels, then PixelShuffle(s);
//! - `conv`: ConvTranspose2d(kernel k+s, stride s, padding ⌈k/2⌉);
//! - `interpolate`: bilinear upsampling ×s (`align_corners=False`), then Conv2d(kernel k+s,
//!   padding ⌈(k+s−1)/2⌉).
//!
//! The upsampled sizes are checked by [`super::NervConfig::validate`]: the official code would
//! produce a frame of the wrong size for some kernel sizes (e.g. `conv` with an odd k).

use candle_core::{Module, Tensor, D};
use candle_nn::{BatchNorm, Conv2d, ConvTranspose2d, ModuleT, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Result, XincError};

/// The activation of every block and of the stem (`--act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// LeakyReLU, slope 0.01.
    Leaky,
    /// LeakyReLU, slope 0.1.
    Leaky01,
    Relu6,
    /// The exact (erf) GELU.
    Gelu,
    /// sin(x). The official `ActivationLayer('sin')` returns the class instead of a layer (a
    /// bug: the model cannot run); xinc implements what it means.
    Sin,
    /// x·sigmoid(x) (`nn.SiLU`).
    Swish,
    /// ln(1 + eˣ), x itself above 20 (PyTorch's threshold).
    Softplus,
    /// x·relu6(x + 3)/6.
    Hardswish,
}

impl Activation {
    /// Every activation with its official name.
    pub const ALL: [(&'static str, Activation); 9] = [
        ("relu", Activation::Relu),
        ("leaky", Activation::Leaky),
        ("leaky01", Activation::Leaky01),
        ("relu6", Activation::Relu6),
        ("gelu", Activation::Gelu),
        ("sin", Activation::Sin),
        ("swish", Activation::Swish),
        ("softplus", Activation::Softplus),
        ("hardswish", Activation::Hardswish),
    ];

    /// The official name.
    pub fn name(self) -> &'static str {
        official_name(&Self::ALL, self)
    }

    /// Applies the activation (differentiable: candle ops only).
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Leaky => candle_nn::ops::leaky_relu(x, 0.01),
            Activation::Leaky01 => candle_nn::ops::leaky_relu(x, 0.1),
            Activation::Relu6 => x.clamp(0f32, 6f32),
            Activation::Gelu => x.gelu_erf(),
            Activation::Sin => x.sin(),
            Activation::Swish => x.silu(),
            Activation::Softplus => {
                // ln(1 + eˣ) = max(x, 0) + ln(1 + e^−|x|), stable; x above 20 is passed through.
                let soft = (x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
                x.gt(20f32)?.where_cond(x, &soft)
            }
            Activation::Hardswish => (x * ((x + 3.0)?.clamp(0f32, 6f32)? / 6.0)?)?.contiguous(),
        }
    }

    /// f(z) for one value, in f64 (the canvas's rescale rule).
    pub fn value(self, z: f64) -> f64 {
        match self {
            Activation::Relu => z.max(0.0),
            Activation::Leaky => leaky(z, 0.01),
            Activation::Leaky01 => leaky(z, 0.1),
            Activation::Relu6 => z.clamp(0.0, 6.0),
            Activation::Gelu => 0.5 * z * (1.0 + super::gelu::erf(z / std::f64::consts::SQRT_2)),
            Activation::Sin => z.sin(),
            Activation::Swish => z / (1.0 + (-z).exp()),
            Activation::Softplus if z > 20.0 => z,
            Activation::Softplus => z.max(0.0) + (-z.abs()).exp().ln_1p(),
            Activation::Hardswish => z * (z + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }
}

fn leaky(z: f64, slope: f64) -> f64 {
    if z >= 0.0 {
        z
    } else {
        slope * z
    }
}

/// The official name of `value` in its `ALL` table (every value is listed).
fn official_name<T: Copy + PartialEq>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(n, _)| *n)
        .expect("every value is listed in its table")
}

/// The norm after every conv (`--norm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// `none`: the identity.
    None,
    /// `bn`: BatchNorm2d (eps 1e-5, momentum 0.1, affine, running statistics).
    Bn,
    /// `in`: InstanceNorm2d (eps 1e-5, no affine parameters, no running statistics).
    In,
}

impl Norm {
    pub const ALL: [(&'static str, Norm); 3] =
        [("none", Norm::None), ("bn", Norm::Bn), ("in", Norm::In)];

    pub fn name(self) -> &'static str {
        official_name(&Self::ALL, self)
    }
}

/// How a decoder block upsamples (`--conv_type`'s second word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockType {
    Pshuffel,
    Conv,
    Interpolate,
}

impl BlockType {
    pub const ALL: [(&'static str, BlockType); 3] = [
        ("pshuffel", BlockType::Pshuffel),
        ("conv", BlockType::Conv),
        ("interpolate", BlockType::Interpolate),
    ];

    pub fn name(self) -> &'static str {
        official_name(&Self::ALL, self)
    }

    /// The conv's kernel size for the decoder kernel size `k` and stride `s`.
    pub fn conv_kernel(self, k: usize, s: usize) -> usize {
        match self {
            BlockType::Pshuffel => k,
            BlockType::Conv | BlockType::Interpolate => k + s,
        }
    }

    /// The conv's padding for kernel size `k` and stride `s`.
    pub fn padding(self, k: usize, s: usize) -> usize {
        match self {
            BlockType::Pshuffel => k.saturating_sub(1) / 2,
            BlockType::Conv => k.div_ceil(2),
            BlockType::Interpolate => (k + s).saturating_sub(1).div_ceil(2),
        }
    }

    /// The output side for an input side `n` (what the official layers produce), or `None`
    /// where the layer cannot run (a kernel larger than its padded input).
    pub fn output_side(self, n: usize, k: usize, s: usize) -> Option<usize> {
        let (kk, p) = (self.conv_kernel(k, s), self.padding(k, s));
        match self {
            BlockType::Pshuffel => (n + 2 * p + 1).checked_sub(k.max(1)).map(|v| v * s),
            BlockType::Conv => ((n - 1) * s + kk).checked_sub(2 * p),
            BlockType::Interpolate => (n * s + 2 * p + 1).checked_sub(kk),
        }
    }

    /// The state-dict prefix of block `n`'s conv.
    pub fn conv_prefix(self, n: usize) -> String {
        match self {
            BlockType::Pshuffel => format!("decoder.{n}.conv.upconv.0"),
            BlockType::Conv => format!("decoder.{n}.conv.upconv"),
            BlockType::Interpolate => format!("decoder.{n}.conv.upconv.1"),
        }
    }
}

/// The conv of one block.
#[derive(Clone, Debug)]
pub enum BlockConv {
    /// Conv2d then PixelShuffle(s).
    Pshuffel(Conv2d),
    /// ConvTranspose2d with stride s.
    Conv(ConvTranspose2d),
    /// Bilinear ×s then Conv2d.
    Interpolate(Conv2d),
}

/// One decoder block: conv → norm → activation.
#[derive(Clone, Debug)]
pub struct NervBlock {
    conv: BlockConv,
    norm: NormLayer,
    act: Activation,
    scale: usize,
}

/// A norm layer with its parameters.
#[derive(Clone, Debug)]
pub enum NormLayer {
    None,
    Bn(BatchNorm),
    In,
}

impl NormLayer {
    /// Reads the norm's parameters (`prefix.norm.*`) for `channels` channels.
    pub fn new(norm: Norm, channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match norm {
            Norm::None => NormLayer::None,
            Norm::In => NormLayer::In,
            Norm::Bn => NormLayer::Bn(candle_nn::batch_norm(channels, 1e-5, vb)?),
        })
    }

    /// The norm at inference (running statistics for batch norm).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_t(x, false)
    }

    /// The norm in training (`train`: batch statistics, running statistics updated) or
    /// inference mode.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            NormLayer::None => Ok(x.clone()),
            NormLayer::In => instance_norm(x, 1e-5),
            NormLayer::Bn(bn) if train => bn.forward_train(x),
            NormLayer::Bn(bn) => bn.forward_t(x, false),
        }
    }

    /// The batch norm at inference as a per-channel affine map `(scale, shift)`.
    pub fn bn_affine(&self) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let NormLayer::Bn(bn) = self else {
            return Ok(None);
        };
        let (w, b) = bn.weight_and_bias().ok_or_else(|| {
            XincError::InvalidArgument("NeRV batch norm without affine parameters".into())
        })?;
        let mean = bn.running_mean().to_vec1::<f32>()?;
        let var = bn.running_var().to_vec1::<f32>()?;
        let (w, b) = (w.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
        let scale: Vec<f32> = (w.iter().zip(&var))
            .map(|(w, v)| (f64::from(*w) / (f64::from(*v) + 1e-5).sqrt()) as f32)
            .collect();
        let shift = (0..scale.len())
            .map(|c| b[c] - mean[c] * scale[c])
            .collect();
        Ok(Some((scale, shift)))
    }

    /// The batch norm's tensors with their names under `prefix` (for saving).
    pub fn named_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let NormLayer::Bn(bn) = self else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some((w, b)) = bn.weight_and_bias() {
            out.push((format!("{prefix}.weight"), w.clone()));
            out.push((format!("{prefix}.bias"), b.clone()));
        }
        out.push((format!("{prefix}.running_mean"), bn.running_mean().clone()));
        out.push((format!("{prefix}.running_var"), bn.running_var().clone()));
        out
    }
}

/// InstanceNorm2d without affine parameters: each (sample, channel) plane normalised by its own
/// mean and biased variance.
pub fn instance_norm(x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let flat = x.reshape((n, c, h * w))?;
    let mean = flat.mean_keepdim(D::Minus1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape((n, c, h, w))
}

/// Bilinear upsampling by an integer factor, `align_corners=False`, as two matrix products
/// (differentiable, unlike candle's kernel).
pub fn upsample_bilinear(x: &Tensor, s: usize) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let ah =
        Tensor::from_vec(bilinear_matrix(h, s), (h * s, h), x.device())?.to_dtype(x.dtype())?;
    let aw_t = Tensor::from_vec(bilinear_matrix(w, s), (w * s, w), x.device())?
        .to_dtype(x.dtype())?
        .t()?;
    let rows = x.reshape((n * c * h, w))?.matmul(&aw_t)?; // [n·c·h, w·s]
    let rows = rows.reshape((n * c, h, w * s))?;
    ah.broadcast_left(n * c)?
        .matmul(&rows)?
        .reshape((n, c, h * s, w * s))
}

/// The `[n·s, n]` matrix of PyTorch's bilinear (linear per axis) upsampling ×s with
/// `align_corners=False`: source `(i + ½)/s − ½`, clamped at 0, between its two neighbours.
pub fn bilinear_matrix(n: usize, s: usize) -> Vec<f32> {
    let mut a = vec![0.0f32; n * s * n];
    for i in 0..n * s {
        let src = ((i as f64 + 0.5) / s as f64 - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        let l = (src - i0 as f64) as f32;
        a[i * n + i0] += 1.0 - l;
        a[i * n + i1] += l;
    }
    a
}

/// The options of one decoder block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockConfig {
    pub kind: BlockType,
    pub in_channels: usize,
    pub out_channels: usize,
    /// The decoder kernel size k (`min(ks₁ + 2i, ks₂)`).
    pub kernel: usize,
    pub stride: usize,
    pub norm: Norm,
    pub act: Activation,
}

/// Reads block `n` (`decoder.{n}`) from a `VarBuilder` at the model's root.
pub fn nerv_block(n: usize, cfg: BlockConfig, vb: &VarBuilder) -> Result<NervBlock> {
    let (k, s) = (cfg.kernel, cfg.stride);
    let kk = cfg.kind.conv_kernel(k, s);
    let padding = cfg.kind.padding(k, s);
    let prefix = cfg.kind.conv_prefix(n);
    let conv = match cfg.kind {
        BlockType::Pshuffel => BlockConv::Pshuffel(candle_nn::conv2d(
            cfg.in_channels,
            cfg.out_channels * s * s,
            kk,
            candle_nn::Conv2dConfig {
                padding,
                ..Default::default()
            },
            vb.pp(prefix),
        )?),
        BlockType::Conv => BlockConv::Conv(candle_nn::conv_transpose2d(
            cfg.in_channels,
            cfg.out_channels,
            kk,
            candle_nn::ConvTranspose2dConfig {
                padding,
                stride: s,
                ..Default::default()
            },
            vb.pp(prefix),
        )?),
        BlockType::Interpolate => BlockConv::Interpolate(candle_nn::conv2d(
            cfg.in_channels,
            cfg.out_channels,
            kk,
            candle_nn::Conv2dConfig {
                padding,
                ..Default::default()
            },
            vb.pp(prefix),
        )?),
    };
    let norm = NormLayer::new(
        cfg.norm,
        cfg.out_channels,
        vb.pp(format!("decoder.{n}.norm")),
    )?;
    Ok(NervBlock {
        conv,
        norm,
        act: cfg.act,
        scale: s,
    })
}

impl NervBlock {
    pub fn conv(&self) -> &BlockConv {
        &self.conv
    }

    pub fn norm(&self) -> &NormLayer {
        &self.norm
    }

    pub fn act(&self) -> Activation {
        self.act
    }

    pub fn scale(&self) -> usize {
        self.scale
    }

    /// The conv (and upsampling) alone: the block's pre-norm, pre-activation output.
    pub fn conv_forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.conv {
            BlockConv::Pshuffel(c) => candle_nn::ops::pixel_shuffle(&c.forward(x)?, self.scale),
            BlockConv::Conv(c) => c.forward(x),
            BlockConv::Interpolate(c) => c.forward(&upsample_bilinear(x, self.scale)?),
        }
    }

    /// The block in training or inference mode.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let z = self.norm.forward_t(&self.conv_forward(x)?, train)?;
        self.act.apply(&z)
    }

    /// The block after its conv, in inference mode: norm and activation of the conv output `z`.
    pub fn finish(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        self.act.apply(&self.norm.forward_t(z, false)?)
    }

    /// The conv's weight and bias with their state-dict names.
    pub fn named_tensors(&self, n: usize, kind: BlockType) -> Vec<(String, Tensor)> {
        let prefix = kind.conv_prefix(n);
        let (w, b) = match &self.conv {
            BlockConv::Pshuffel(c) | BlockConv::Interpolate(c) => (c.weight(), c.bias()),
            BlockConv::Conv(c) => (c.weight(), c.bias()),
        };
        let mut out = vec![(format!("{prefix}.weight"), w.clone())];
        if let Some(b) = b {
            out.push((format!("{prefix}.bias"), b.clone()));
        }
        out.extend(self.norm.named_tensors(&format!("decoder.{n}.norm")));
        out
    }
}

impl Module for NervBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_t(x, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn activations_match_their_closed_forms() {
        let zs = [-25.0f32, -3.5, -1.0, -0.25, 0.0, 0.3, 1.0, 2.5, 6.5, 21.0];
        let x = Tensor::new(&zs[..], &Device::Cpu).unwrap();
        for (name, act) in Activation::ALL {
            let got = act.apply(&x).unwrap().to_vec1::<f32>().unwrap();
            for (z, g) in zs.iter().zip(got) {
                let want = act.value(f64::from(*z));
                assert!(
                    (f64::from(g) - want).abs() < 1e-5 * want.abs().max(1.0),
                    "{name}({z}) = {g}, want {want}"
                );
            }
        }
        // Hand-computed values.
        assert_eq!(Activation::Leaky01.value(-2.0), -0.2);
        assert_eq!(Activation::Relu6.value(7.0), 6.0);
        assert!((Activation::Hardswish.value(1.0) - 4.0 / 6.0).abs() < 1e-12);
        assert!((Activation::Softplus.value(0.0) - 2f64.ln()).abs() < 1e-12);
        assert!((Activation::Swish.value(1.0) - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn bilinear_upsampling_matches_pytorch_by_hand() {
        // torch.nn.Upsample(scale_factor=2, mode='bilinear') of [[1, 2], [3, 4]]:
        // rows [1, 1.25, 1.75, 2], [1.5, 1.75, 2.25, 2.5], [2.5, ...], [3, 3.25, 3.75, 4].
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap();
        let y = upsample_bilinear(&x, 2).unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = [
            1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
        ];
        assert_eq!(y, want);
    }

    #[test]
    fn instance_norm_normalises_each_plane() {
        let x = Tensor::new(&[[[[1f32, 3.]], [[2., 2.]]]], &Device::Cpu).unwrap();
        let y = instance_norm(&x, 0.0).unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(&y[..2], &[-1.0, 1.0]);
        assert!(
            y[2..].iter().all(|v| v.is_nan()),
            "a constant plane divides by 0 with eps 0"
        );
    }

    #[test]
    fn block_sizes_follow_the_official_layers() {
        // pshuffel k3: ×s; conv with odd k loses a pixel, even k is exact; interpolate with
        // k + s odd is exact.
        assert_eq!(BlockType::Pshuffel.output_side(8, 3, 2), Some(16));
        assert_eq!(BlockType::Conv.output_side(8, 3, 2), Some(15));
        assert_eq!(BlockType::Conv.output_side(8, 2, 2), Some(16));
        assert_eq!(BlockType::Conv.output_side(8, 0, 4), Some(32));
        assert_eq!(BlockType::Interpolate.output_side(8, 3, 2), Some(16));
        assert_eq!(BlockType::Interpolate.output_side(8, 3, 1), Some(9));
        assert_eq!(BlockType::Interpolate.output_side(8, 2, 1), Some(8));
    }
}
