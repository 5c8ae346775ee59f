//! NeRV and HNeRV: the CNNs that decode a video frame (official `HNeRV/model_all.py`, spec A.6
//! and E.2), with every option of the official flags.
//!
//! - NeRV: t = frame / T → positional encoding `pe_B_L` (computed in f64, then cast to f32, as
//!   the official data loader's float64 time makes it), `[2L, 1, 1]`;
//! - HNeRV (`--enc_strds`): the frame → a ConvNeXt encoder ([`encoder`]) → the frame's content
//!   embedding `[d, H/S, W/S]`;
//!
//! then the decoder: `decoder.0` (1×1 conv → norm → act) whose output is rearranged to
//! `[fc_dim, h·fc_h, w·fc_w]` → blocks `decoder.{1,…}` (conv → norm → act, upsampling by
//! PixelShuffle, transposed conv or bilinear interpolation, [`layers`]) → `head_layer` (3×3 conv)
//! → OutImg (tanh·0.5 + 0.5, sigmoid, or an offset). [`Nerv::forward`] returns every decoder
//! activation, which the canvas needs. An HNeRV model folder also keeps the content embedding of
//! every training frame, so that a frame can be decoded (and explained) by its index.
//!
//! [`NervConfig`] is the architecture ([`config`]), built from the official flags ([`flags`]) or
//! from `config.json`.

mod ablate;
mod config;
pub mod encoder;
mod flags;
pub mod fused;
pub mod gelu;
pub mod layers;
mod position;

use std::collections::HashMap;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

pub use ablate::KernelLayer;
pub use config::{NervConfig, OutBias};
pub use encoder::{ConvNextEncoder, EncoderConfig};
pub use layers::{Activation, BlockConv, BlockType, NervBlock, Norm, NormLayer};
pub use position::PositionalEncoding;

use crate::data::image::ImageTensor;
use crate::error::{Result, XincError};
use layers::nerv_block;

/// Every activation of one forward pass (batch first).
#[derive(Clone, Debug)]
pub struct NervActivations {
    /// The time inputs (HNeRV: t = i / T of the frames, for reference).
    pub t: Vec<f64>,
    /// The decoder's input: the positional encoding `[N, 2L, 1, 1]` or HNeRV's content embedding
    /// `[N, d, h, w]`.
    pub embedding: Tensor,
    /// The official `embed_list` after the embedding: the stem output `[N, C·fc_h·fc_w, h, w]`,
    /// its rearrangement `[N, fc_dim, h·fc_h, w·fc_w]` (block 1's input), then each block's
    /// output; the last is the head's input.
    pub decoder: Vec<Tensor>,
    /// The head output before OutImg, `[N, 3, H, W]`: what the head canvas sums to.
    pub head_output: Tensor,
    /// The reconstruction after OutImg.
    pub output: Tensor,
}

/// The stem `decoder.0`: 1×1 conv → norm → act.
#[derive(Clone, Debug)]
pub struct NervStem {
    conv: Conv2d,
    norm: NormLayer,
    act: Activation,
}

impl NervStem {
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    pub fn norm(&self) -> &NormLayer {
        &self.norm
    }

    pub fn act(&self) -> Activation {
        self.act
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.act
            .apply(&self.norm.forward_t(&self.conv.forward(x)?, train)?)
    }
}

/// The NeRV/HNeRV model: plain layers; weights from [`nerv`] (a `VarBuilder` with the official
/// keys) or [`Nerv::from_tensors`].
#[derive(Clone, Debug)]
pub struct Nerv {
    config: NervConfig,
    encoding: PositionalEncoding,
    encoder: Option<ConvNextEncoder>,
    /// HNeRV: the content embedding of every frame of the clip, `[T, d, h, w]`.
    embeddings: Option<Tensor>,
    stem: NervStem,
    blocks: Vec<NervBlock>,
    head: Conv2d,
}

/// Reads a NeRV or HNeRV from a `VarBuilder` whose names are the official `state_dict` keys.
pub fn nerv(config: NervConfig, vb: VarBuilder) -> Result<Nerv> {
    config.validate()?;
    let widths = config.widths();
    let stem_out = widths[0] * config.fc_hw[0] * config.fc_hw[1];
    let stem = NervStem {
        conv: candle_nn::conv2d(
            config.embed_dim(),
            stem_out,
            1,
            Conv2dConfig::default(),
            vb.pp("decoder.0.conv.downconv"),
        )?,
        norm: NormLayer::new(config.norm, stem_out, vb.pp("decoder.0.norm"))?,
        act: config.act,
    };
    let blocks = (config.block_configs().into_iter().enumerate())
        .map(|(i, b)| nerv_block(i + 1, b, &vb))
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
    let encoder = match &config.encoder {
        Some(enc) => Some(encoder::convnext_encoder(enc, vb.pp("encoder"))?),
        None => None,
    };
    let encoding = PositionalEncoding::new(config.pe_base, config.pe_levels);
    Ok(Nerv {
        config,
        encoding,
        encoder,
        embeddings: None,
        stem,
        blocks,
        head,
    })
}

impl Nerv {
    /// The name of HNeRV's content embeddings in a model folder's `model.safetensors` (not an
    /// official state-dict key: the official code keeps them apart from the weights).
    pub const EMBEDDINGS: &'static str = "embeddings";

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

    pub fn stem(&self) -> &NervStem {
        &self.stem
    }

    pub fn blocks(&self) -> &[NervBlock] {
        &self.blocks
    }

    pub fn head(&self) -> &Conv2d {
        &self.head
    }

    /// HNeRV's encoder (`None` for NeRV).
    pub fn encoder(&self) -> Option<&ConvNextEncoder> {
        self.encoder.as_ref()
    }

    /// HNeRV: the stored content embeddings of the clip's frames, `[T, d, h, w]`.
    pub fn embeddings(&self) -> Option<&Tensor> {
        self.embeddings.as_ref()
    }

    /// HNeRV: stores the content embeddings of the clip's `T` frames (checked against the
    /// configuration), so that [`Nerv::forward_frame`] can decode a frame by its index.
    pub fn with_embeddings(mut self, embeddings: Tensor) -> Result<Self> {
        let [h, w] = self.config.embed_hw();
        let want = [self.config.frames, self.config.embed_dim(), h, w];
        if !self.config.is_hnerv() || embeddings.dims() != want {
            return Err(XincError::InvalidArgument(format!(
                "content embeddings of shape {:?} do not fit this model (HNeRV: {want:?})",
                embeddings.dims()
            )));
        }
        self.embeddings = Some(embeddings.to_device(self.head.weight().device())?);
        Ok(self)
    }

    /// HNeRV: computes and stores the content embeddings of `frames` (`[T, 3, H, W]` in [0, 1],
    /// the clip the model represents), a few frames at a time.
    pub fn embed_clip(self, frames: &Tensor) -> Result<Self> {
        let mut parts = Vec::new();
        for start in (0..frames.dim(0)?).step_by(4) {
            let n = 4.min(frames.dim(0)? - start);
            parts.push(self.encode(&frames.narrow(0, start, n)?)?);
        }
        let all = Tensor::cat(&parts, 0)?;
        self.with_embeddings(all)
    }

    /// The weights with their official names (for saving).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        if let Some(enc) = &self.encoder {
            out.extend(enc.named_tensors());
        }
        let stem = &self.stem.conv;
        out.push((
            "decoder.0.conv.downconv.weight".into(),
            stem.weight().clone(),
        ));
        if let Some(b) = stem.bias() {
            out.push(("decoder.0.conv.downconv.bias".into(), b.clone()));
        }
        out.extend(self.stem.norm.named_tensors("decoder.0.norm"));
        for (i, b) in self.blocks.iter().enumerate() {
            out.extend(b.named_tensors(i + 1, self.config.block));
        }
        out.push(("head_layer.weight".into(), self.head.weight().clone()));
        if let Some(b) = self.head.bias() {
            out.push(("head_layer.bias".into(), b.clone()));
        }
        out
    }

    /// The positional encodings of time inputs `t`, `[N, 2L, 1, 1]` (NeRV).
    pub fn embed(&self, t: &[f64], device: &Device) -> Result<Tensor> {
        let data: Vec<f32> = t.iter().flat_map(|&t| self.encoding.encode(t)).collect();
        Ok(Tensor::from_vec(
            data,
            (t.len(), self.config.embed_dim(), 1, 1),
            device,
        )?)
    }

    /// HNeRV: the content embeddings of frames `[N, 3, H, W]`.
    pub fn encode(&self, frames: &Tensor) -> Result<Tensor> {
        let enc = self.encoder.as_ref().ok_or_else(|| {
            XincError::InvalidArgument("a NeRV model has no encoder (it is not HNeRV)".into())
        })?;
        Ok(enc.forward(frames)?)
    }

    /// The forward pass for time inputs `t` (a batch), keeping every activation. HNeRV decodes
    /// the stored embeddings of frames `round(t·T)`.
    pub fn forward(&self, t: &[f64], device: &Device) -> Result<NervActivations> {
        let embedding = match &self.embeddings {
            None if self.config.is_hnerv() => return Err(no_embeddings()),
            None => self.embed(t, device)?,
            Some(all) => {
                let frames = self.config.frames as f64;
                let idx: Vec<u32> = t.iter().map(|t| (t * frames).round() as u32).collect();
                let idx = Tensor::new(idx.as_slice(), all.device())?;
                all.index_select(&idx, 0)?.to_device(device)?
            }
        };
        self.decode(embedding, t.to_vec(), false)
    }

    /// The decoder's input of every frame of the clip (the official `embed_list[0]`): the
    /// positional encodings of a NeRV, or an HNeRV's stored content embeddings, `[T, …]`.
    pub fn decoder_inputs(&self, device: &Device) -> Result<Tensor> {
        match &self.embeddings {
            Some(e) => Ok(e.to_device(device)?),
            None if self.config.is_hnerv() => Err(no_embeddings()),
            None => {
                let t: Vec<f64> = (0..self.config.frames)
                    .map(|i| self.config.time_of(i))
                    .collect();
                self.embed(&t, device)
            }
        }
    }

    /// The decoder on `embedding` (`[N, d, h, w]`), in training (`train`: batch norms use the
    /// batch statistics and update their running ones) or inference mode.
    pub fn decode(&self, embedding: Tensor, t: Vec<f64>, train: bool) -> Result<NervActivations> {
        if !train && embedding.device().is_cpu() && fused::unsupported(&self.config).is_none() {
            let mut net = fused::FusedNerv::new(self)?;
            net.forward(&embedding.flatten_all()?.to_vec1::<f32>()?);
            return net.into_activations(t, embedding);
        }
        self.decode_with_candle(embedding, t, train)
    }

    /// [`Nerv::decode`] with candle's operations whatever the device and the configuration (the
    /// reference the fused CPU path is tested against).
    pub fn decode_with_candle(
        &self,
        embedding: Tensor,
        t: Vec<f64>,
        train: bool,
    ) -> Result<NervActivations> {
        let stem = self.stem.forward_t(&embedding, train)?;
        let mut decoder = vec![stem.clone(), self.rearrange(&stem)?];
        for block in &self.blocks {
            let x = block.forward_t(decoder.last().expect("non-empty"), train)?;
            decoder.push(x);
        }
        let head_output = self.head.forward(decoder.last().expect("non-empty"))?;
        let output = self.out_img(&head_output)?;
        Ok(NervActivations {
            t,
            embedding,
            decoder,
            head_output,
            output,
        })
    }

    /// The official rearrangement of the stem output `[N, C·fc_h·fc_w, h, w]` to
    /// `[N, C, h·fc_h, w·fc_w]`: channel `c·fc_h·fc_w + i·fc_w + j` at (y, x) goes to
    /// (c, y·fc_h + i, x·fc_w + j).
    pub fn rearrange(&self, stem: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = stem.dims4()?;
        let [fh, fw] = self.config.fc_hw;
        let c = self.config.widths()[0];
        Ok(stem
            .reshape((n, c, fh, fw, h, w))?
            .permute((0, 1, 4, 2, 5, 3))?
            .reshape((n, c, h * fh, w * fw))?)
    }

    /// The forward pass of frame `i` of the clip (t = i / T; HNeRV: its stored embedding).
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

/// A random paper-form NeRV of 4 frames of 24×36 (PixelShuffle factors 3, 2, 2), with the
/// official flags `extra` added: small enough for brute-force checks.
#[cfg(test)]
pub(crate) fn tiny_nerv(extra: &str) -> Nerv {
    use candle_nn::VarMap;
    let args = format!(
        "--embed pe_1.25_4 --fc_hw 2_3 --dec_strds 3 2 2 --ks 0_3_3 --reduce 1.2 \
         --modelsize 0.001 --lower_width 3 {extra}"
    );
    let config = NervConfig::from_official_args(&args, 4).expect("valid flags");
    let vm = VarMap::new();
    nerv(
        config,
        VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu),
    )
    .expect("a tiny NeRV")
}

fn no_embeddings() -> XincError {
    XincError::InvalidArgument(
        "this HNeRV has no content embeddings of its frames: give it the clip \
         (`Nerv::embed_clip`, `xinc import nerv --frames`)"
            .into(),
    )
}

impl super::StoredModel for Nerv {
    fn architecture(&self) -> super::Architecture {
        super::Architecture::Nerv(self.config.clone())
    }

    /// The weights, and HNeRV's content embeddings.
    fn named_tensors(&self) -> Vec<(String, Tensor)> {
        // The inherent method (a path names the inherent item before a trait's).
        let mut out = Nerv::named_tensors(self);
        if let Some(e) = &self.embeddings {
            out.push((Nerv::EMBEDDINGS.to_string(), e.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::config::round_half_even;
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
            "--act tanh",
            "--norm ln",
            "--conv_type convnext deconv",
            "--enc_strds 4 2 --conv_type pshuffel pshuffel --resize_list 32_64",
            "--num_blks 1",
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
    fn every_official_variant_parses_into_its_blocks() {
        let args = "--embed pe_1.25_8 --fc_hw 2_4 --dec_strds 4 2 --ks 0_2_2 --modelsize 0.01 \
                    --lower_width 4 --conv_type convnext conv --act leaky01 --norm bn \
                    --num_blks 1_2 --out_bias 0.5";
        let cfg = NervConfig::from_official_args(args, 4).unwrap();
        assert_eq!(
            (cfg.act, cfg.norm, cfg.block),
            (Activation::Leaky01, Norm::Bn, BlockType::Conv)
        );
        let blocks = cfg.block_configs();
        let strides: Vec<usize> = blocks.iter().map(|b| b.stride).collect();
        assert_eq!(strides, [4, 1, 2, 1]);
        let w = cfg.widths();
        assert_eq!(
            (blocks[1].in_channels, blocks[1].out_channels),
            (w[1], w[1])
        );
        assert_eq!(cfg.frame_size(), [16, 32]);
        // A transposed conv block has weight [Cin, Cout, k + s, k + s]; batch norm adds four
        // tensors per block, two of them buffers (not parameters).
        let specs = cfg.weight_specs();
        let first = specs
            .iter()
            .find(|s| s.name == "decoder.1.conv.upconv.weight")
            .unwrap();
        assert_eq!(first.shape, [w[0], w[1], 6, 6]);
        assert!(specs.iter().any(|s| s.name == "decoder.4.norm.running_var"));
        let buffers: usize = specs
            .iter()
            .filter(|s| s.name.contains("running"))
            .map(|s| s.shape[0])
            .sum();
        let all: usize = specs
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum();
        assert_eq!(cfg.num_params(), all - buffers);
        // An odd kernel loses a pixel in a transposed conv: refused, with the reason.
        let err = NervConfig::from_official_args(&args.replace("0_2_2", "0_3_3"), 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("turns 2 pixels into Some(7), not 8"), "{err}");
        // HNeRV: the frame size, fc_hw = encoder stride / decoder stride, the embedding width.
        let hnerv = "--enc_strds 4 2 2 2 --enc_dim 16_2 --dec_strds 4 2 2 --fc_hw 9_16 \
                     --conv_type convnext pshuffel --resize_list 32_64 --modelsize 0.01 --embed";
        let cfg = NervConfig::from_official_args(hnerv, 4).unwrap();
        let enc = cfg.encoder.as_ref().unwrap();
        assert_eq!(
            (enc.dims(), cfg.fc_hw, cfg.embed_hw()),
            (vec![16, 16, 16, 2], [2, 2], [1, 2])
        );
        assert_eq!(cfg.frame_size(), [32, 64]);
        let ratio = hnerv.replace("16_2", "16_0.05").replace("0.01", "0.1");
        let ratio = NervConfig::from_official_args(&ratio, 4).unwrap();
        // int(0.05·0.1e6 / 4 frames / (32·64 / 32²) cells) = 625 channels.
        assert_eq!(ratio.encoder.unwrap().embed_dim, 625);
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
