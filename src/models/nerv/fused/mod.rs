//! A fused NeRV for the CPU: the forward pass and its hand-written backward pass over
//! preallocated `[C, B, H, W]` buffers, the blocks' convs as GEMMs over an im2col matrix (candle's
//! `gemm` kernels), the head as a direct conv, PixelShuffle and GELU fused with the bias. The
//! inference pass runs each block band by band of rows ([`banded`]); the training pass keeps the
//! whole im2col matrices for the backward pass.
//!
//! It covers the paper's NeRV family: positional-encoding input, a 1×1 stem, PixelShuffle blocks
//! with odd kernels, GELU, no norm, any OutImg ([`unsupported`] names what it does not cover).
//! [`super::Nerv::decode`] takes it on the CPU automatically; candle stays the path on CUDA and
//! for every other configuration. It computes what the candle model computes, to float rounding
//! and the 1e-6 of the f32 GELU (the tests hold one against the other, gradients included).

mod banded;
mod conv;
mod pointwise;

use candle_core::Tensor;

use self::conv::ConvShape;
use self::pointwise::Shuffle;
use super::{Activation, BlockType, Nerv, NervConfig, Norm};
use crate::error::{Result, XincError};
use crate::tensor::{matmul, zeroed_buffer, MatRef};

/// Why the fused path does not cover `config` (`None`: it does).
pub fn unsupported(config: &NervConfig) -> Option<&'static str> {
    if config.is_hnerv() {
        Some("HNeRV (an encoder)")
    } else if config.block != BlockType::Pshuffel {
        Some("blocks that do not upsample by PixelShuffle")
    } else if config.norm != Norm::None {
        Some("a norm layer")
    } else if config.act != Activation::Gelu {
        Some("an activation other than GELU")
    } else if (config.block_configs().iter()).any(|b| b.kernel % 2 == 0) {
        Some("an even kernel")
    } else {
        None
    }
}

/// One parameter tensor with its official name, and its gradient.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    /// Empty until the first [`FusedNerv::backward`].
    pub grad: Vec<f32>,
}

/// One block's sizes: `cin` channels of `h`×`w` in, `cout` channels of `h·s`×`w·s` out.
#[derive(Clone, Copy, Debug)]
struct BlockShape {
    cin: usize,
    cout: usize,
    s: usize,
    k: usize,
    h: usize,
    w: usize,
}

impl BlockShape {
    fn conv(&self, b: usize) -> ConvShape {
        ConvShape {
            c: self.cin,
            b,
            h: self.h,
            w: self.w,
            k: self.k,
        }
    }

    fn shuffle(&self, b: usize) -> Shuffle {
        Shuffle {
            c: self.cout,
            b,
            h: self.h,
            w: self.w,
            s: self.s,
        }
    }

    /// The conv's output channels and its im2col depth.
    fn m(&self) -> usize {
        self.cout * self.s * self.s
    }

    fn depth(&self) -> usize {
        self.cin * self.k * self.k
    }
}

/// The buffers of one batch size.
#[derive(Default)]
struct Buffers {
    batch: usize,
    /// The inputs `[B, E]`.
    embedding: Vec<f32>,
    /// The stem's pre-activation `[S, B]`.
    stem_z: Vec<f32>,
    /// `acts[0]`: block 1's input `[C₀, B, fc_h, fc_w]`; `acts[i]`: block i's output.
    acts: Vec<Vec<f32>>,
    /// Each block's im2col matrix and the GELU's slope at its pre-activation `[m, B·h·w]`, all the
    /// backward pass needs: allocated and kept by [`FusedNerv::forward_train`] only
    /// ([`FusedNerv::forward`] runs the blocks band by band, [`banded`]).
    cols: Vec<Vec<f32>>,
    zs: Vec<Vec<f32>>,
    /// Whether the last forward pass kept `cols` and `zs`.
    slopes: bool,
    /// The head output before OutImg and after it, `[3, B, H, W]`.
    head: Vec<f32>,
    out: Vec<f32>,
    /// Backward scratch: the gradients of `acts`, of a conv output and of an im2col matrix.
    dacts: Vec<Vec<f32>>,
    dz: Vec<f32>,
    dcols: Vec<f32>,
    dhead: Vec<f32>,
}

/// The fused NeRV: its weights (in the order of [`NervConfig::weight_specs`]), their gradients
/// after [`FusedNerv::backward`], and the buffers of the last batch.
pub struct FusedNerv {
    config: NervConfig,
    embed: usize,
    stem: usize,
    fc: usize,
    blocks: Vec<BlockShape>,
    params: Vec<Param>,
    buf: Buffers,
}

impl FusedNerv {
    /// The fused form of `model`'s weights, or why it cannot be fused.
    pub fn new(model: &Nerv) -> Result<Self> {
        let config = model.config().clone();
        if let Some(why) = unsupported(&config) {
            return Err(XincError::InvalidArgument(format!(
                "the fused CPU NeRV does not cover {why}"
            )));
        }
        let named: std::collections::HashMap<String, Tensor> =
            model.named_tensors().into_iter().collect();
        let params = (config.weight_specs().into_iter())
            .map(|spec| {
                let t = named
                    .get(&spec.name)
                    .ok_or_else(|| XincError::MissingTensor {
                        origin: "fused NeRV".into(),
                        name: spec.name.clone(),
                    })?;
                let value = t
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1()?;
                Ok(Param {
                    grad: Vec::new(),
                    name: spec.name,
                    shape: spec.shape,
                    value,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let widths = config.widths();
        let [fh, fw] = config.fc_hw;
        let (mut h, mut w) = (fh, fw);
        let blocks = (config.block_configs().iter())
            .map(|b| {
                let shape = BlockShape {
                    cin: b.in_channels,
                    cout: b.out_channels,
                    s: b.stride,
                    k: b.kernel,
                    h,
                    w,
                };
                (h, w) = (h * b.stride, w * b.stride);
                shape
            })
            .collect();
        Ok(FusedNerv {
            embed: config.embed_dim(),
            stem: widths[0] * fh * fw,
            fc: fh * fw,
            blocks,
            params,
            buf: Buffers::default(),
            config,
        })
    }

    /// The parameters, in the order of [`NervConfig::weight_specs`].
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The parameters for an optimiser to update in place (their lengths must stay).
    pub(crate) fn params_mut(&mut self) -> &mut [Param] {
        &mut self.params
    }

    fn frame_pixels(&self) -> usize {
        let [h, w] = self.config.frame_size();
        h * w
    }

    /// Sizes the buffers for a batch of `b`, with the im2col matrices and slopes of a training
    /// pass if `train` (the backward pass's stay empty until it runs).
    fn resize(&mut self, b: usize, train: bool) {
        let n = |bl: &BlockShape| b * bl.h * bl.w;
        if self.buf.batch != b {
            let mut acts = vec![zeroed_buffer(self.stem * b)];
            acts.extend(self.blocks.iter().map(|bl| zeroed_buffer(bl.m() * n(bl))));
            let head = 3 * b * self.frame_pixels();
            self.buf = Buffers {
                batch: b,
                embedding: vec![0.0; b * self.embed],
                stem_z: vec![0.0; self.stem * b],
                out: zeroed_buffer(head),
                head: zeroed_buffer(head),
                acts,
                ..Buffers::default()
            };
        }
        if train && self.buf.cols.is_empty() {
            let buffers = |size: fn(&BlockShape) -> usize| {
                (self.blocks.iter())
                    .map(|bl| zeroed_buffer(size(bl) * n(bl)))
                    .collect()
            };
            self.buf.cols = buffers(BlockShape::depth);
            self.buf.zs = buffers(BlockShape::m);
        }
    }

    /// Sizes the backward pass's buffers.
    fn resize_backward(&mut self) {
        for p in self
            .params
            .iter_mut()
            .filter(|p| p.grad.len() != p.value.len())
        {
            p.grad = vec![0.0; p.value.len()];
        }
        let buf = &mut self.buf;
        if buf.dacts.len() == buf.acts.len() {
            return;
        }
        let b = buf.batch;
        let n = |bl: &BlockShape| b * bl.h * bl.w;
        buf.dacts = buf.acts.iter().map(|a| zeroed_buffer(a.len())).collect();
        buf.dhead = zeroed_buffer(buf.head.len());
        let dz = self.blocks.iter().map(|bl| bl.m() * n(bl)).max();
        buf.dz = zeroed_buffer(dz.unwrap_or(0).max(self.stem * b));
        let cols = self.blocks.iter().map(|bl| bl.depth() * n(bl)).max();
        buf.dcols = zeroed_buffer(cols.unwrap_or(0));
    }

    /// The forward pass of a batch of decoder inputs (`[B, E]`, the positional encodings),
    /// keeping every activation (see [`FusedNerv::into_activations`]).
    pub fn forward(&mut self, embedding: &[f32]) {
        self.run_forward(embedding, false);
    }

    /// [`FusedNerv::forward`] for training: the blocks keep their GELU's slopes in place of
    /// their pre-activations (computed with the GELU, which shares their erf), for
    /// [`FusedNerv::backward`].
    pub fn forward_train(&mut self, embedding: &[f32]) {
        self.run_forward(embedding, true);
    }

    fn run_forward(&mut self, embedding: &[f32], slopes: bool) {
        let b = embedding.len() / self.embed;
        assert!(
            b > 0 && b * self.embed == embedding.len(),
            "embedding of the wrong size"
        );
        self.resize(b, slopes);
        let head = self.head_shape(b);
        let buf = &mut self.buf;
        buf.slopes = slopes;
        buf.embedding.copy_from_slice(embedding);
        let p = &self.params;
        // Stem: z = W·eᵀ + bias, [S, B].
        matmul(
            &mut buf.stem_z,
            MatRef::row_major(&p[0].value, self.stem, self.embed),
            MatRef::row_major(&buf.embedding, b, self.embed).t(),
            false,
        );
        pointwise::stem_gelu(&mut buf.stem_z, &p[1].value, (b, self.fc), &mut buf.acts[0]);
        for (i, &bl) in self.blocks.iter().enumerate() {
            let (w, bias) = (&p[2 + 2 * i].value, &p[3 + 2 * i].value);
            let (before, after) = buf.acts.split_at_mut(i + 1);
            if !slopes {
                banded::block_forward(&before[i], bl, b, (w, bias), &mut after[0]);
                continue;
            }
            conv::im2col(&before[i], bl.conv(b), &mut buf.cols[i]);
            let n = b * bl.h * bl.w;
            matmul(
                &mut buf.zs[i],
                MatRef::row_major(w, bl.m(), bl.depth()),
                MatRef::row_major(&buf.cols[i], bl.depth(), n),
                false,
            );
            let g = bl.shuffle(b);
            pointwise::bias_shuffle_gelu(&mut buf.zs[i], bias, g, &mut after[0], slopes);
        }
        let h = self.params.len() - 2;
        let last = buf.acts.last().expect("blocks");
        conv::direct_forward::<3>(last, head, &p[h].value, &p[h + 1].value, &mut buf.head);
        pointwise::out_img(&buf.head, self.config.out_bias, &mut buf.out);
    }

    fn head_shape(&self, b: usize) -> ConvShape {
        let [h, w] = self.config.frame_size();
        let last = self.blocks.last().expect("blocks");
        ConvShape {
            c: last.cout,
            b,
            h,
            w,
            k: 3,
        }
    }

    /// The pixel loss (`l2`·MSE + `l1`·MAE) of the last forward pass against `target`
    /// (`[B, 3, H, W]`), and the gradient of every parameter (in [`Param::grad`]). The forward
    /// pass must have been [`FusedNerv::forward_train`].
    pub fn backward(&mut self, target: &[f32], (l2, l1): (f64, f64)) -> f32 {
        let b = self.buf.batch;
        assert_eq!(target.len(), self.buf.out.len(), "target of the wrong size");
        assert!(
            self.buf.slopes,
            "backward needs the slopes that forward_train keeps"
        );
        self.resize_backward();
        let head = self.head_shape(b);
        let buf = &mut self.buf;
        let loss = pointwise::pixel_loss(
            &buf.out,
            target,
            b,
            (l2, l1),
            self.config.out_bias,
            &mut buf.dhead,
        );
        let np = self.params.len();
        let last = self.blocks.len();
        {
            let (body, tail) = self.params.split_at_mut(np - 2);
            let [hw, hb] = tail else { unreachable!() };
            conv::direct_backward_weights(
                &buf.dhead,
                &buf.acts[last],
                head,
                3,
                &mut hw.grad,
                &mut hb.grad,
            );
            conv::direct_backward_input::<3>(&buf.dhead, head, &hw.value, &mut buf.dacts[last]);
            for (i, bl) in self.blocks.iter().enumerate().rev() {
                let n = b * bl.h * bl.w;
                let (wp, bp) = body[2 + 2 * i..4 + 2 * i].split_at_mut(1);
                let dz = &mut buf.dz[..bl.m() * n];
                pointwise::shuffle_gelu_backward(
                    &buf.dacts[i + 1],
                    &buf.zs[i],
                    bl.shuffle(b),
                    dz,
                    &mut bp[0].grad,
                );
                matmul(
                    &mut wp[0].grad,
                    MatRef::row_major(dz, bl.m(), n),
                    MatRef::row_major(&buf.cols[i], bl.depth(), n).t(),
                    false,
                );
                let dcols = &mut buf.dcols[..bl.depth() * n];
                matmul(
                    dcols,
                    MatRef::row_major(&wp[0].value, bl.m(), bl.depth()).t(),
                    MatRef::row_major(dz, bl.m(), n),
                    false,
                );
                conv::col2im(dcols, bl.conv(b), &mut buf.dacts[i]);
            }
            let (sw, sb) = body[..2].split_at_mut(1);
            let dz = &mut buf.dz[..self.stem * b];
            pointwise::stem_gelu_backward(
                &buf.dacts[0],
                &buf.stem_z,
                (b, self.fc),
                dz,
                &mut sb[0].grad,
            );
            matmul(
                &mut sw[0].grad,
                MatRef::row_major(dz, self.stem, b),
                MatRef::row_major(&buf.embedding, b, self.embed),
                false,
            );
        }
        loss
    }

    /// The last forward pass as the candle model's activations (`[B, …]` tensors on the CPU),
    /// taking the buffers (for one frame, `[C, 1, …]` is already `[1, C, …]`: no copy).
    pub fn into_activations(
        self,
        t: Vec<f64>,
        embedding: Tensor,
    ) -> Result<super::NervActivations> {
        let b = self.buf.batch;
        let dev = candle_core::Device::Cpu;
        let [fh, fw] = self.config.fc_hw;
        let (c0, q) = (self.stem / self.fc, self.fc);
        let [h, w] = self.config.frame_size();
        // [C, B, P] → [B, C, P].
        let batch_first = |v: Vec<f32>, dims: &[usize]| -> Result<Tensor> {
            if b == 1 {
                return Ok(Tensor::from_vec(v, dims, &dev)?);
            }
            let c = dims[1];
            let p = v.len() / c / b;
            let mut out = vec![0.0f32; v.len()];
            for ci in 0..c {
                for bi in 0..b {
                    out[(bi * c + ci) * p..][..p].copy_from_slice(&v[(ci * b + bi) * p..][..p]);
                }
            }
            Ok(Tensor::from_vec(out, dims, &dev)?)
        };
        let mut acts = self.buf.acts.into_iter();
        let input = acts.next().expect("block 1's input");
        // The stem output [B, S, 1, 1]: stem channel c·q + p is pixel p of channel c.
        let stem = batch_first(input.clone(), &[b, c0, q])?.reshape((b, self.stem, 1, 1))?;
        let mut decoder = vec![stem, batch_first(input, &[b, c0, fh, fw])?];
        for (bl, a) in self.blocks.iter().zip(acts) {
            decoder.push(batch_first(a, &[b, bl.cout, bl.h * bl.s, bl.w * bl.s])?);
        }
        Ok(super::NervActivations {
            t,
            embedding,
            decoder,
            head_output: batch_first(self.buf.head, &[b, 3, h, w])?,
            output: batch_first(self.buf.out, &[b, 3, h, w])?,
        })
    }

    /// The output `[3, B, H, W]` of the last forward pass.
    pub fn output(&self) -> &[f32] {
        &self.buf.out
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::models::nerv::tiny_nerv;

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    fn inputs(model: &Nerv) -> (Vec<f64>, Tensor) {
        let t = vec![0.25, 0.75];
        let e = model.embed(&t, &Device::Cpu).unwrap();
        (t, e)
    }

    #[test]
    fn fused_forward_equals_candle_for_every_out_img() {
        for extra in ["", "--out_bias sigmoid", "--out_bias 0.0"] {
            let model = tiny_nerv(extra);
            assert_eq!(unsupported(model.config()), None);
            let (t, e) = inputs(&model);
            let fused = model.decode(e.clone(), t.clone(), false).unwrap();
            let candle = model.decode_with_candle(e, t, false).unwrap();
            assert_eq!(fused.decoder.len(), candle.decoder.len());
            for (a, b) in fused.decoder.iter().zip(&candle.decoder) {
                assert_eq!(a.dims(), b.dims());
                assert!(max_rel(a, b) < 1e-5, "{extra}: {}", max_rel(a, b));
            }
            assert!(max_rel(&fused.head_output, &candle.head_output) < 1e-5);
            assert!(max_rel(&fused.output, &candle.output) < 1e-5, "{extra}");
        }
    }

    #[test]
    fn fused_gradients_equal_candle_autograd() {
        let model = tiny_nerv("");
        let (t, e) = inputs(&model);
        let [h, w] = model.config().frame_size();
        let target: Vec<f32> = (0..2 * 3 * h * w)
            .map(|i| (i * 37 % 101) as f32 / 100.0)
            .collect();
        let target_t = Tensor::from_slice(&target, (2, 3, h, w), &Device::Cpu).unwrap();
        for (l2, l1) in [(1.0, 0.0), (0.7, 0.3)] {
            let out = model
                .decode_with_candle(e.clone(), t.clone(), true)
                .unwrap()
                .output;
            let diff = (&out - &target_t).unwrap();
            let loss = ((diff.sqr().unwrap().mean_all().unwrap() * l2).unwrap()
                + (diff.abs().unwrap().mean_all().unwrap() * l1).unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let mut net = FusedNerv::new(&model).unwrap();
            net.forward_train(&e.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            let fused_loss = net.backward(&target, (l2, l1));
            let want = loss.to_scalar::<f32>().unwrap();
            assert!(
                (fused_loss - want).abs() < 1e-5 * want.abs(),
                "{fused_loss} {want}"
            );
            let named: std::collections::HashMap<_, _> =
                model.named_tensors().into_iter().collect();
            for p in net.params() {
                let g = grads.get(&named[&p.name]).expect("a gradient");
                let g_fused = Tensor::from_slice(&p.grad, g.dims(), &Device::Cpu).unwrap();
                let err = max_rel(&g_fused, g);
                assert!(err < 1e-4, "{}: gradient off by {err} (l1 {l1})", p.name);
            }
        }
    }

    #[test]
    fn configurations_the_fused_path_does_not_cover_are_named() {
        for (extra, why) in [
            ("--norm bn", "a norm layer"),
            ("--act relu", "an activation other than GELU"),
        ] {
            let model = tiny_nerv(extra);
            assert_eq!(unsupported(model.config()), Some(why));
            assert!(FusedNerv::new(&model).is_err());
        }
        let mut config = tiny_nerv("").config().clone();
        config.block = BlockType::Interpolate;
        let why = unsupported(&config);
        assert_eq!(why, Some("blocks that do not upsample by PixelShuffle"));
    }
}
