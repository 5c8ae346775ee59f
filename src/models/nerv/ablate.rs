//! Kernel removal: the head output of one frame with a conv kernel (input channel i → output
//! channel k of the head or of a block's conv) set to zero, for a batch of kernels at once.
//!
//! Removing kernel (i, k) subtracts its term, `conv(x[i], W[k, i])` without the bias, from
//! output channel k of the layer's conv. On the head that is the change itself (the network
//! after the head conv is linear up to OutImg). In block n the term is placed as the block
//! places its conv output (PixelShuffle, or nothing for the transposed and interpolating
//! convs), and the batch of altered conv outputs runs through the block's norm and activation,
//! the later blocks and the head: one partial forward pass per kernel, batched.

use std::fmt;
use std::str::FromStr;

use candle_core::{Module, Tensor};
use candle_nn::Conv2d;

use super::layers::{upsample_bilinear, BlockConv};
use super::{Nerv, NervActivations};
use crate::error::{Result, XincError};

/// A layer whose conv kernels are neurons: the head, or block n (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelLayer {
    Head,
    Block(usize),
}

impl fmt::Display for KernelLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelLayer::Head => write!(f, "head"),
            KernelLayer::Block(n) => write!(f, "block{n}"),
        }
    }
}

impl FromStr for KernelLayer {
    type Err = XincError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "head" {
            return Ok(KernelLayer::Head);
        }
        s.strip_prefix("block")
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n >= 1)
            .map(KernelLayer::Block)
            .ok_or_else(|| {
                XincError::InvalidArgument(format!(
                    "`{s}` is not a NeRV layer of kernels (head or block<n>)"
                ))
            })
    }
}

impl Nerv {
    /// `(Cin, Cout)` of `layer`'s conv: its kernels are `i·Cout + k`. An error when the model
    /// has no such block.
    pub fn kernel_shape(&self, layer: KernelLayer) -> Result<(usize, usize)> {
        let dims = |w: &Tensor| -> Result<(usize, usize)> {
            let (a, b, _, _) = w.dims4()?;
            Ok((a, b))
        };
        Ok(match layer {
            KernelLayer::Head => swap(dims(self.head.weight())?),
            KernelLayer::Block(n) => match self.block(n)?.conv() {
                BlockConv::Pshuffel(c) | BlockConv::Interpolate(c) => swap(dims(c.weight())?),
                BlockConv::Conv(c) => dims(c.weight())?,
            },
        })
    }

    /// The head output of frame `acts` (a batch of one) with each kernel `(i, k)` of `layer`
    /// removed in turn: `[B, 3, H, W]` for B kernels.
    pub fn ablated_head_outputs(
        &self,
        acts: &NervActivations,
        layer: KernelLayer,
        kernels: &[(usize, usize)],
    ) -> Result<Tensor> {
        if acts.head_output.dim(0)? != 1 {
            return Err(XincError::InvalidArgument(
                "kernel removal takes the activations of one frame".into(),
            ));
        }
        let (cin, cout) = self.kernel_shape(layer)?;
        if let Some(&(i, k)) = kernels.iter().find(|(i, k)| *i >= cin || *k >= cout) {
            return Err(XincError::InvalidArgument(format!(
                "{layer} has no kernel {i}→{k} ({cin} inputs, {cout} outputs)"
            )));
        }
        match layer {
            KernelLayer::Head => {
                let x = acts.decoder.last().expect("the decoder has outputs");
                let terms = conv_terms(&self.head, x, kernels)?;
                Ok(acts.head_output.broadcast_sub(&terms)?)
            }
            KernelLayer::Block(n) => {
                let block = self.block(n)?;
                let x = &acts.decoder[n]; // block n's input
                let z = block.conv_forward(x)?;
                let terms = match block.conv() {
                    BlockConv::Pshuffel(c) => {
                        candle_nn::ops::pixel_shuffle(&conv_terms(c, x, kernels)?, block.scale())?
                    }
                    BlockConv::Interpolate(c) => {
                        conv_terms(c, &upsample_bilinear(x, block.scale())?, kernels)?
                    }
                    BlockConv::Conv(c) => {
                        let cfg = c.config();
                        let mut planes = Vec::with_capacity(kernels.len());
                        for &(i, k) in kernels {
                            let w = c.weight().narrow(0, i, 1)?.narrow(1, k, 1)?;
                            planes.push(x.narrow(1, i, 1)?.conv_transpose2d(
                                &w,
                                cfg.padding,
                                cfg.output_padding,
                                cfg.stride,
                                cfg.dilation,
                            )?);
                        }
                        one_hot_place(&Tensor::cat(&planes, 0)?, kernels, cout)?
                    }
                };
                let mut h = block.finish(&z.broadcast_sub(&terms)?)?;
                for later in &self.blocks[n..] {
                    h = later.forward_t(&h, false)?;
                }
                Ok(self.head.forward(&h)?)
            }
        }
    }

    fn block(&self, n: usize) -> Result<&super::NervBlock> {
        n.checked_sub(1)
            .and_then(|i| self.blocks.get(i))
            .ok_or_else(|| {
                XincError::InvalidArgument(format!(
                    "the NeRV has blocks 1..={}, not block{n}",
                    self.blocks.len()
                ))
            })
    }
}

fn swap((a, b): (usize, usize)) -> (usize, usize) {
    (b, a)
}

/// The terms `conv(x[i], W[k, i])` (no bias) of a Conv2d's kernels, each in its output
/// channel of a zero batch entry: `[B, Cout, h', w']`. One grouped conv computes them all.
fn conv_terms(conv: &Conv2d, x: &Tensor, kernels: &[(usize, usize)]) -> Result<Tensor> {
    let (cout, cin, kh, kw) = conv.weight().dims4()?;
    let device = x.device();
    let inputs: Vec<u32> = kernels.iter().map(|&(i, _)| i as u32).collect();
    let flat: Vec<u32> = kernels.iter().map(|&(i, k)| (k * cin + i) as u32).collect();
    let b = kernels.len();
    let xs = x.index_select(&Tensor::new(inputs.as_slice(), device)?, 1)?; // [1, B, h, w]
    let ws = conv
        .weight()
        .reshape((cout * cin, kh, kw))?
        .index_select(&Tensor::new(flat.as_slice(), device)?, 0)?
        .reshape((b, 1, kh, kw))?;
    let cfg = conv.config();
    let planes = xs.conv2d(&ws, cfg.padding, cfg.stride, cfg.dilation, b)?; // [1, B, h', w']
    let (_, _, h, w) = planes.dims4()?;
    one_hot_place(&planes.reshape((b, 1, h, w))?, kernels, cout)
}

/// `[B, 1, h, w]` planes put in output channel k of kernel b: `[B, Cout, h, w]`.
fn one_hot_place(planes: &Tensor, kernels: &[(usize, usize)], cout: usize) -> Result<Tensor> {
    let mut hot = vec![0f32; kernels.len() * cout];
    for (b, &(_, k)) in kernels.iter().enumerate() {
        hot[b * cout + k] = 1.0;
    }
    let hot = Tensor::from_vec(hot, (kernels.len(), cout, 1, 1), planes.device())?;
    Ok(planes.broadcast_mul(&hot)?)
}
