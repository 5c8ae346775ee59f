//! HNeRV's ConvNeXt encoder (`HNeRV/model_all.py`, `ConvNeXt` with `stage_blocks`, `strds`,
//! `dims`): it turns a frame into its content embedding, the decoder's input. Stage i is a
//! downsampling (stage 0: Conv2d(3 → d₀, kernel = stride = s₀) then a channels-first LayerNorm;
//! later stages: LayerNorm then Conv2d(dᵢ₋₁ → dᵢ, kernel = stride = sᵢ)) followed by
//! `stage_blocks` ConvNeXt blocks (depthwise 7×7 conv → LayerNorm over channels → Linear ×4 →
//! GELU → Linear → ×γ, plus the residual). LayerNorms use eps 1e-6. Names follow the official
//! `encoder.downsample_layers.{i}.{0,1}`, `encoder.stages.{i}.{j}.*`.
//!
//! The canvas explains the decoder only: the embedding is its input, the encoder is not
//! explained.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The encoder's shape (`--enc_strds`, `--enc_dim d_e`, the encoder's `--num_blks`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// `--enc_strds`: the downsampling of each stage.
    pub strides: Vec<usize>,
    /// `--enc_dim A_B`: A, the width of every stage but the last.
    pub dim: usize,
    /// The embedding's channels (the last stage's width): `--enc_dim A_B`'s B, or from the
    /// parameter budget when B < 1 (resolved at parsing, as the official trainer does).
    pub embed_dim: usize,
    /// ConvNeXt blocks per stage (`--num_blks E_D`: E).
    pub blocks: usize,
}

impl EncoderConfig {
    /// The width of each stage.
    pub fn dims(&self) -> Vec<usize> {
        let mut d = vec![self.dim; self.strides.len()];
        if let Some(last) = d.last_mut() {
            *last = self.embed_dim;
        }
        d
    }

    /// The total downsampling, the product of the strides.
    pub fn total_stride(&self) -> usize {
        self.strides.iter().product()
    }
}

/// LayerNorm over the channels of an `[N, C, H, W]` tensor (the official channels-first form).
fn channels_first_norm(norm: &LayerNorm, x: &Tensor) -> candle_core::Result<Tensor> {
    norm.forward(&x.permute((0, 2, 3, 1))?)?
        .permute((0, 3, 1, 2))
}

/// One ConvNeXt block.
#[derive(Clone, Debug)]
struct Block {
    dwconv: Conv2d,
    norm: LayerNorm,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Tensor,
}

impl Block {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let dw = Conv2dConfig {
            padding: 3,
            groups: dim,
            ..Default::default()
        };
        Ok(Block {
            dwconv: candle_nn::conv2d(dim, dim, 7, dw, vb.pp("dwconv"))?,
            norm: candle_nn::layer_norm(dim, 1e-6, vb.pp("norm"))?,
            pwconv1: candle_nn::linear(dim, 4 * dim, vb.pp("pwconv1"))?,
            pwconv2: candle_nn::linear(4 * dim, dim, vb.pp("pwconv2"))?,
            gamma: vb.get_with_hints(dim, "gamma", candle_nn::Init::Const(1e-6))?,
        })
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.dwconv.forward(x)?.permute((0, 2, 3, 1))?;
        let y = self.norm.forward(&y)?;
        let y = self
            .pwconv2
            .forward(&self.pwconv1.forward(&y)?.gelu_erf()?)?;
        let y = y.broadcast_mul(&self.gamma)?.permute((0, 3, 1, 2))?;
        x + y
    }
}

/// One stage: its downsampling (norm and conv in the official order) and its blocks.
#[derive(Clone, Debug)]
struct Stage {
    norm: LayerNorm,
    conv: Conv2d,
    norm_first: bool,
    blocks: Vec<Block>,
}

/// The ConvNeXt encoder.
#[derive(Clone, Debug)]
pub struct ConvNextEncoder {
    stages: Vec<Stage>,
}

/// Reads the encoder from a `VarBuilder` at `encoder`.
pub fn convnext_encoder(cfg: &EncoderConfig, vb: VarBuilder) -> Result<ConvNextEncoder> {
    let dims = cfg.dims();
    let mut stages = Vec::with_capacity(dims.len());
    for (i, (&d, &s)) in dims.iter().zip(&cfg.strides).enumerate() {
        let down = vb.pp(format!("downsample_layers.{i}"));
        let conv_cfg = Conv2dConfig {
            stride: s,
            ..Default::default()
        };
        let (norm, conv) = if i == 0 {
            let conv = candle_nn::conv2d(3, d, s, conv_cfg, down.pp("0"))?;
            (candle_nn::layer_norm(d, 1e-6, down.pp("1"))?, conv)
        } else {
            let norm = candle_nn::layer_norm(dims[i - 1], 1e-6, down.pp("0"))?;
            (
                norm,
                candle_nn::conv2d(dims[i - 1], d, s, conv_cfg, down.pp("1"))?,
            )
        };
        let blocks = (0..cfg.blocks)
            .map(|j| Block::new(d, vb.pp(format!("stages.{i}.{j}"))))
            .collect::<Result<_>>()?;
        stages.push(Stage {
            norm,
            conv,
            norm_first: i > 0,
            blocks,
        });
    }
    Ok(ConvNextEncoder { stages })
}

impl Module for ConvNextEncoder {
    /// Frames `[N, 3, H, W]` in [0, 1] → embeddings `[N, embed_dim, H/S, W/S]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for stage in &self.stages {
            x = if stage.norm_first {
                stage.conv.forward(&channels_first_norm(&stage.norm, &x)?)?
            } else {
                channels_first_norm(&stage.norm, &stage.conv.forward(&x)?)?
            };
            for block in &stage.blocks {
                x = block.forward(&x)?;
            }
        }
        Ok(x)
    }
}

impl ConvNextEncoder {
    /// The encoder's tensors with their state-dict names.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, s) in self.stages.iter().enumerate() {
            let p = format!("encoder.downsample_layers.{i}");
            let (norm_slot, conv_slot) = if s.norm_first { ("0", "1") } else { ("1", "0") };
            push(
                &mut out,
                &format!("{p}.{conv_slot}"),
                s.conv.weight(),
                s.conv.bias(),
            );
            push(
                &mut out,
                &format!("{p}.{norm_slot}"),
                s.norm.weight(),
                s.norm.bias(),
            );
            for (j, b) in s.blocks.iter().enumerate() {
                let p = format!("encoder.stages.{i}.{j}");
                out.push((format!("{p}.gamma"), b.gamma.clone()));
                push(
                    &mut out,
                    &format!("{p}.dwconv"),
                    b.dwconv.weight(),
                    b.dwconv.bias(),
                );
                push(
                    &mut out,
                    &format!("{p}.norm"),
                    b.norm.weight(),
                    b.norm.bias(),
                );
                push(
                    &mut out,
                    &format!("{p}.pwconv1"),
                    b.pwconv1.weight(),
                    b.pwconv1.bias(),
                );
                push(
                    &mut out,
                    &format!("{p}.pwconv2"),
                    b.pwconv2.weight(),
                    b.pwconv2.bias(),
                );
            }
        }
        out
    }
}

fn push(out: &mut Vec<(String, Tensor)>, name: &str, weight: &Tensor, bias: Option<&Tensor>) {
    out.push((format!("{name}.weight"), weight.clone()));
    if let Some(b) = bias {
        out.push((format!("{name}.bias"), b.clone()));
    }
}

/// The weight specifications of the encoder, with the official names.
pub fn encoder_specs(cfg: &EncoderConfig) -> Vec<(String, Vec<usize>)> {
    let dims = cfg.dims();
    let mut specs = Vec::new();
    for (i, (&d, &s)) in dims.iter().zip(&cfg.strides).enumerate() {
        let p = format!("encoder.downsample_layers.{i}");
        let (cin, norm_dim, conv_slot, norm_slot) = if i == 0 {
            (3, d, "0", "1")
        } else {
            (dims[i - 1], dims[i - 1], "1", "0")
        };
        specs.push((format!("{p}.{conv_slot}.weight"), vec![d, cin, s, s]));
        specs.push((format!("{p}.{conv_slot}.bias"), vec![d]));
        specs.push((format!("{p}.{norm_slot}.weight"), vec![norm_dim]));
        specs.push((format!("{p}.{norm_slot}.bias"), vec![norm_dim]));
        for j in 0..cfg.blocks {
            let b = format!("encoder.stages.{i}.{j}");
            specs.push((format!("{b}.gamma"), vec![d]));
            specs.push((format!("{b}.dwconv.weight"), vec![d, 1, 7, 7]));
            specs.push((format!("{b}.dwconv.bias"), vec![d]));
            specs.push((format!("{b}.norm.weight"), vec![d]));
            specs.push((format!("{b}.norm.bias"), vec![d]));
            specs.push((format!("{b}.pwconv1.weight"), vec![4 * d, d]));
            specs.push((format!("{b}.pwconv1.bias"), vec![4 * d]));
            specs.push((format!("{b}.pwconv2.weight"), vec![d, 4 * d]));
            specs.push((format!("{b}.pwconv2.bias"), vec![d]));
        }
    }
    specs
}
