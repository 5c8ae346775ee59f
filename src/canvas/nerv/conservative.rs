//! The conservative canvas of a NeRV block (neurons as in spec A.8–A.10: kernel (i, k) of the
//! block's 3×3 conv), carried to the output through the real downstream blocks and head.
//!
//! The frame's network after block b is linearised by the rescale rule ([`LinearisedNerv`]): each
//! later block becomes conv → PixelShuffle → ×Φ(z), the head stays a conv. Kernel (i, k)'s share
//! of block b's output is `Φ(z_b) ⊙ place_k(P[i, k])` with `P[i, k] = conv3x3(x_i, W[k, i]) +
//! b[k]/Cin` (the official plane), so its map is a linear function of the h×w plane P[i, k].
//!
//! Every output pixel o depends on block b's output only through a small window (3×3 at the head
//! input, widened by each block on the way down: 4×4 and 5×5 at the official blocks 2 and 1).
//! [`LinearisedNerv::coefficients`] back-propagates the linearised network exactly from each
//! output pixel to that window (plain loops over the real weights, one output pixel at a time),
//! and keeps, per conv output channel k, the few window entries on k's PixelShuffle phase: at most
//! ⌈window/s⌉² per pixel. A kernel's map is then
//! `map[o] = Σ_j E[k][o][j]·P[i, k](q_j(o)) + B_down[o]/N`, a handful of multiply-adds per pixel,
//! like the official canvas. Nothing of size `[Cin, Cout, H, W]` is ever held: the coefficients
//! are computed for bands of output rows within a memory budget and the kernels are reduced on
//! the fly. The head and the pre-GELU layers have nothing to linearise (the head is the last
//! layer, the pre-GELU maps decompose a pre-activation exactly), so they are the official ones.

use std::f64::consts::FRAC_1_SQRT_2;
use std::fmt;
use std::ops::Range;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::layer::{NervBlockData, NervFrameData, NervLayer};
use crate::canvas::maps::{neuron_label, NeuronMaps};
use crate::canvas::{ContributionMap, LayerSummary, Probe};
use crate::error::{Result, XincError};
use crate::models::nerv::gelu::erf;
use crate::tensor::{with_avx2, zeroed_buffer};

/// Φ(z): the rescale multiplier of the exact GELU z·Φ(z), GELU(z)/z with its z → 0 limit ½.
pub(crate) fn gelu_share(z: f32) -> f32 {
    (0.5 * (1.0 + erf(f64::from(z) * FRAC_1_SQRT_2))) as f32
}

/// One block of the linearised network: conv → PixelShuffle(s) → ×Φ(z) at this frame.
struct LinearBlock {
    /// Input channels and resolution.
    cin: usize,
    h: usize,
    w: usize,
    s: usize,
    /// Output channels (after PixelShuffle).
    c: usize,
    weight: Tensor,
    bias: Tensor,
    /// The weight as `[K][3][3][Cin]`, input channels contiguous.
    weight_t: Vec<f32>,
    /// Φ(z) at the block output, `[1, C, h·s, w·s]`.
    mult: Tensor,
    /// Φ(z) channel-last, `[h·s][w·s][C]`.
    mult_cl: Vec<f32>,
}

impl LinearBlock {
    fn new(d: &NervBlockData, layer: NervLayer) -> Result<Self> {
        d.validate(layer)?;
        let dev = Device::Cpu;
        let (cin, h, w, s, k) = (d.in_channels, d.height, d.width, d.scale, d.out_channels());
        let weight = Tensor::from_slice(d.weight, (k, cin, 3, 3), &dev)?;
        let bias = Tensor::from_slice(d.bias, (1, k, 1, 1), &dev)?;
        let x = Tensor::from_slice(d.input, (1, cin, h, w), &dev)?;
        let z = conv_bias(&x, &weight, &bias, s)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let m: Vec<f32> = z.iter().map(|&v| gelu_share(v)).collect();
        let c = k / (s * s);
        let mult_cl = channel_last(&m, c);
        let mut weight_t = vec![0.0; d.weight.len()];
        for kk in 0..k {
            for ci in 0..cin {
                for t in 0..9 {
                    weight_t[(kk * 9 + t) * cin + ci] = d.weight[(kk * cin + ci) * 9 + t];
                }
            }
        }
        Ok(LinearBlock {
            cin,
            h,
            w,
            s,
            c,
            weight,
            bias,
            weight_t,
            mult: Tensor::from_vec(m, (1, c, h * s, w * s), &dev)?,
            mult_cl,
        })
    }

    fn out_size(&self) -> (usize, usize) {
        (self.h * self.s, self.w * self.s)
    }
}

/// `PixelShuffle(conv3x3(x) + b)` of a `[1, Cin, h, w]` tensor (s = 1: no shuffle).
fn conv_bias(x: &Tensor, weight: &Tensor, bias: &Tensor, s: usize) -> Result<Tensor> {
    let z = x.conv2d(weight, 1, 1, 1, 1)?.broadcast_add(bias)?;
    Ok(if s > 1 {
        candle_nn::ops::pixel_shuffle(&z, s)?
    } else {
        z
    })
}

/// `[C][P]` → `[P][C]`.
fn channel_last(v: &[f32], c: usize) -> Vec<f32> {
    let p = v.len() / c;
    let mut out = vec![0.0; v.len()];
    for (ci, plane) in v.chunks_exact(p).enumerate() {
        for (q, &x) in plane.iter().enumerate() {
            out[q * c + ci] = x;
        }
    }
    out
}

/// The window of one level (a block's output) that an output pixel depends on: `width`² positions
/// from origin `(oy[y], ox[x])` for output pixel (y, x).
struct Window {
    width: usize,
    oy: Vec<isize>,
    ox: Vec<isize>,
}

/// A NeRV frame's decoder after the stem, linearised at the frame by the rescale rule.
pub struct LinearisedNerv {
    blocks: Vec<LinearBlock>,
    head_weight: Tensor,
    head_bias: Tensor,
    /// The head weight as `[colour][3][3][C]`.
    head_t: Vec<f32>,
    height: usize,
    width: usize,
}

impl LinearisedNerv {
    /// Linearises the frame's blocks (multipliers Φ(z) from its block inputs and weights).
    pub fn new(frame: &NervFrameData) -> Result<Self> {
        let blocks = (1..=frame.blocks())
            .map(|index| {
                let layer = NervLayer::block(index);
                LinearBlock::new(&frame.layer(layer)?, layer)
            })
            .collect::<Result<Vec<_>>>()?;
        let head = frame.layer(NervLayer::Head)?;
        head.validate(NervLayer::Head)?;
        let (c, colours) = (head.in_channels, head.out_channels());
        let mut head_t = vec![0.0; head.weight.len()];
        for col in 0..colours {
            for ci in 0..c {
                for t in 0..9 {
                    head_t[(col * 9 + t) * c + ci] = head.weight[(col * c + ci) * 9 + t];
                }
            }
        }
        let dev = Device::Cpu;
        Ok(LinearisedNerv {
            blocks,
            head_weight: Tensor::from_slice(head.weight, (colours, c, 3, 3), &dev)?,
            head_bias: Tensor::from_slice(head.bias, (1, colours, 1, 1), &dev)?,
            head_t,
            height: frame.height,
            width: frame.width,
        })
    }

    fn colours(&self) -> usize {
        self.head_t.len() / (9 * self.blocks.last().map_or(1, |b| b.c))
    }

    /// 0-based block of a layer, or an error for a layer that is not a block output.
    fn block_of(&self, layer: NervLayer) -> Result<usize> {
        match layer.index() {
            Some(index) if layer.is_block_output() && (1..=self.blocks.len()).contains(&index) => {
                Ok(index - 1)
            }
            _ => Err(XincError::InvalidArgument(format!(
                "the conservative linearisation covers block outputs 1..={}, not {layer}",
                self.blocks.len()
            ))),
        }
    }

    /// Runs the linearised network from block `b`'s output `h` (`[1, C_b, H_b, W_b]`) to the
    /// output `[colours, H, W]`, with the downstream biases or without them.
    pub(crate) fn propagate(&self, b: usize, h: &Tensor, biases: bool) -> Result<Tensor> {
        let mut h = h.clone();
        for blk in &self.blocks[b + 1..] {
            let z = if biases {
                conv_bias(&h, &blk.weight, &blk.bias, blk.s)?
            } else {
                candle_nn::ops::pixel_shuffle(&h.conv2d(&blk.weight, 1, 1, 1, 1)?, blk.s)?
            };
            h = z.mul(&blk.mult)?;
        }
        let y = h.conv2d(&self.head_weight, 1, 1, 1, 1)?;
        let y = if biases {
            y.broadcast_add(&self.head_bias)?
        } else {
            y
        };
        Ok(y.squeeze(0)?)
    }

    /// The downstream-bias map of block `b` (0-based): what the biases of the later blocks and
    /// the head add to the output under the linearisation, `[colours, H, W]`.
    pub(crate) fn downstream_bias(&self, b: usize) -> Result<Vec<f32>> {
        let blk = &self.blocks[b];
        let (hh, ww) = blk.out_size();
        let zero = Tensor::zeros((1, blk.c, hh, ww), candle_core::DType::F32, &Device::Cpu)?;
        Ok(self.propagate(b, &zero, true)?.flatten_all()?.to_vec1()?)
    }

    /// The windows from the head input (first) down to block `b`'s output (last).
    fn windows(&self, b: usize) -> Vec<Window> {
        let mut w = Window {
            width: 3,
            oy: (0..self.height as isize).map(|y| y - 1).collect(),
            ox: (0..self.width as isize).map(|x| x - 1).collect(),
        };
        let mut levels = Vec::new();
        for blk in self.blocks[b + 1..].iter().rev() {
            let s = blk.s as isize;
            let next = Window {
                width: (w.width - 1).div_ceil(blk.s) + 3,
                oy: w.oy.iter().map(|a| a.div_euclid(s) - 1).collect(),
                ox: w.ox.iter().map(|a| a.div_euclid(s) - 1).collect(),
            };
            levels.push(w);
            w = next;
        }
        levels.push(w);
        levels
    }

    /// The exact kernel coefficients of block `b` (0-based) for the output rows `rows`, for one
    /// probe of the output channels.
    pub(crate) fn coefficients(
        &self,
        b: usize,
        probe: Probe,
        rows: Range<usize>,
    ) -> BlockCoefficients {
        let levels = self.windows(b);
        let colours = self.colours();
        let c_last = self.blocks.last().map_or(0, |blk| blk.c);
        let pw = probe.weights(colours);
        let mut head_probe = vec![0.0f32; 9 * c_last];
        for (col, &p) in pw.iter().enumerate() {
            for (d, &v) in head_probe
                .iter_mut()
                .zip(&self.head_t[col * 9 * c_last..][..9 * c_last])
            {
                *d += p * v;
            }
        }
        let blk = &self.blocks[b];
        let (s, k) = (blk.s, blk.c * blk.s * blk.s);
        let last = levels.last().expect("at least one level");
        let n = last.width.div_ceil(s);
        let (nn, width) = (n * n, self.width);
        let per_row: Vec<Vec<f32>> = rows
            .clone()
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |scratch, y| {
                    let mut buf = vec![0.0f32; k * width * nn];
                    with_avx2(|| {
                        for x in 0..width {
                            let r = self.back(&levels, &head_probe, b, y, x, scratch);
                            extract(blk, r, last, (y, x), n, width, &mut buf);
                        }
                    });
                    buf
                },
            )
            .collect();
        let band = rows.len() * width;
        let mut e = zeroed_buffer(k * band * nn);
        e.par_chunks_mut(band * nn)
            .enumerate()
            .for_each(|(kk, dst)| {
                for (ri, src) in per_row.iter().enumerate() {
                    dst[ri * width * nn..][..width * nn]
                        .copy_from_slice(&src[kk * width * nn..][..width * nn]);
                }
            });
        // Per phase r and output row (column): the n candidate plane rows (columns), clamped
        // into the plane (their coefficients are zero where they fall outside).
        let candidates = |o: &[isize], len: usize, scale: usize| -> Vec<usize> {
            let mut out = Vec::with_capacity(s * o.len() * n);
            for r in 0..s as isize {
                for &a in o {
                    let q0 = (a + (r - a).rem_euclid(s as isize)).div_euclid(s as isize);
                    out.extend(
                        (0..n as isize)
                            .map(|j| (q0 + j).clamp(0, len as isize - 1) as usize * scale),
                    );
                }
            }
            out
        };
        BlockCoefficients {
            s,
            n,
            width,
            rows,
            e,
            row_offsets: candidates(&last.oy, blk.h, blk.w),
            columns: candidates(&last.ox, blk.w, 1),
            height: self.height,
        }
    }

    /// Back-propagates the probe from output pixel (y, x) to block `b`'s output window: the
    /// returned `[width²][C_b]` values (window of the last level of `levels`).
    #[inline(always)]
    fn back<'s>(
        &self,
        levels: &[Window],
        head_probe: &[f32],
        b: usize,
        y: usize,
        x: usize,
        (r, t): &'s mut (Vec<f32>, Vec<f32>),
    ) -> &'s [f32] {
        r.clear();
        r.extend_from_slice(head_probe);
        for (li, blk) in self.blocks[b + 1..].iter().rev().enumerate() {
            let (from, to) = (&levels[li], &levels[li + 1]);
            stage_back(
                blk,
                r,
                (from.width, from.oy[y], from.ox[x]),
                t,
                (to.width, to.oy[y], to.ox[x]),
            );
            std::mem::swap(r, t);
        }
        r
    }

    /// The summary of block output `layer`'s conservative maps over the input channels
    /// `inputs`: summed over the output channels (`block{n}`, `neuron_shape [n, Cout]`) or per
    /// output channel (`block{n}_rgb`, `[n, Cout, 3]`). Streamed over bands of output rows whose
    /// coefficients fit in `budget` bytes; kernels in parallel over output channels.
    pub(crate) fn layer_summary(
        &self,
        data: &NervBlockData,
        layer: NervLayer,
        inputs: Range<usize>,
        budget: usize,
    ) -> Result<LayerSummary> {
        let b = self.block_of(layer)?;
        let ctx = KernelContext::new(self, data, layer, inputs)?;
        let p = self.height * self.width;
        let nc = ctx.probes.len();
        let bands = self.bands(b, budget);
        tracing::info!(
            "conservative {}: {} kernels, {} probe(s), {} band(s) of output rows",
            ctx.name,
            ctx.inputs.len() * ctx.k,
            nc,
            bands.len()
        );
        let mut sums = vec![(0.0f64, 0.0f64); ctx.maps()];
        let mut sum_neurons = zeroed_buffer(ctx.k * nc * p);
        for (ci, &probe) in ctx.probes.iter().enumerate() {
            let share = ctx.bias_share(self, b, probe)?;
            for rows in bands.iter().cloned() {
                let co = self.coefficients(b, probe, rows.clone());
                let (o0, band) = (rows.start * self.width, rows.len() * self.width);
                let per_k: Vec<Vec<(f64, f64)>> = sum_neurons
                    .par_chunks_mut(nc * p)
                    .enumerate()
                    .map_init(
                        || vec![0.0f32; band],
                        |buf, (k, dst)| {
                            let dst = &mut dst[ci * p + o0..][..band];
                            ctx.inputs
                                .clone()
                                .map(|i| {
                                    let u = data.plane(i, k);
                                    co.kernel_map_into(k, &u, &share[o0..o0 + band], buf);
                                    dst.iter_mut().zip(buf.iter()).for_each(|(d, &v)| *d += v);
                                    buf.iter().fold((0.0, 0.0), |(s, a), &v| {
                                        (s + f64::from(v), a + f64::from(v.abs()))
                                    })
                                })
                                .collect()
                        },
                    )
                    .collect();
                for (k, col) in per_k.iter().enumerate() {
                    for (m, &(s, a)) in col.iter().enumerate() {
                        let acc = &mut sums[(m * ctx.k + k) * nc + ci];
                        acc.0 += s;
                        acc.1 += a;
                    }
                }
            }
        }
        Ok(LayerSummary {
            layer: ctx.name,
            neuron_shape: ctx.neuron_shape,
            height: self.height,
            width: self.width,
            sum_hw: sums.iter().map(|v| v.0 as f32).collect(),
            abssum_hw: sums.iter().map(|v| v.1 as f32).collect(),
            sum_neurons,
        })
    }

    /// The full conservative maps of block output `layer` of `frame` for the input channels
    /// `inputs`: `[n, Cout, H, W]` (summed over the output channels) or `[n, Cout, 3, H, W]`
    /// (`block{n}_rgb`). Public for the benchmark `conservative_maps` (users write full maps
    /// with [`crate::canvas::nerv::write_nerv_canvas`] or read them one at a time through
    /// [`crate::canvas::nerv::NervFrameData::maps`]).
    #[doc(hidden)]
    pub fn layer_maps(
        &self,
        frame: &NervFrameData,
        layer: NervLayer,
        inputs: Range<usize>,
    ) -> Result<ContributionMap> {
        let prepared = self.prepare(frame, layer, inputs.clone())?;
        Ok(ContributionMap {
            layer: prepared.ctx.name.clone(),
            neuron_shape: prepared.ctx.neuron_shape.clone(),
            height: self.height,
            width: self.width,
            data: prepared.maps(inputs)?,
        })
    }

    /// Whole-frame coefficients of block output `layer` of `frame` (summed or per channel) for
    /// the kernels of the input channels `inputs`: full maps are evaluated from them.
    pub(crate) fn prepare(
        &self,
        frame: &NervFrameData,
        layer: NervLayer,
        inputs: Range<usize>,
    ) -> Result<PreparedBlock> {
        let b = self.block_of(layer)?;
        let ctx = KernelContext::new(self, &frame.layer(layer)?, layer, inputs)?;
        let mut coefficients = Vec::new();
        let mut shares = Vec::new();
        for &probe in &ctx.probes {
            shares.push(ctx.bias_share(self, b, probe)?);
            coefficients.push(self.coefficients(b, probe, 0..self.height));
        }
        Ok(PreparedBlock {
            frame: frame.clone(),
            layer,
            ctx,
            coefficients,
            shares,
            pixels: self.height * self.width,
        })
    }

    /// Bands of output rows whose coefficients for block `b` fit in `budget` bytes.
    fn bands(&self, b: usize, budget: usize) -> Vec<Range<usize>> {
        let blk = &self.blocks[b];
        let n = self
            .windows(b)
            .last()
            .expect("at least one level")
            .width
            .div_ceil(blk.s);
        // The coefficients are held twice while a band is assembled.
        let row_bytes = 8 * blk.c * blk.s * blk.s * self.width * n * n;
        let rows = (budget / row_bytes.max(1)).clamp(1, self.height);
        (0..self.height)
            .step_by(rows)
            .map(|y| y..(y + rows).min(self.height))
            .collect()
    }
}

/// What a summary or a set of maps of one block needs besides the coefficients.
struct KernelContext {
    name: String,
    neuron_shape: Vec<usize>,
    inputs: Range<usize>,
    k: usize,
    /// Kernels of the whole layer: the downstream bias is split over all of them.
    total: usize,
    probes: Vec<Probe>,
}

impl KernelContext {
    fn new(
        lin: &LinearisedNerv,
        data: &NervBlockData,
        layer: NervLayer,
        inputs: Range<usize>,
    ) -> Result<Self> {
        data.validate(layer)?;
        if inputs.is_empty() || inputs.end > data.in_channels {
            return Err(XincError::InvalidArgument(format!(
                "NeRV {layer}: input channels {inputs:?} outside 0..{}",
                data.in_channels
            )));
        }
        let k = data.out_channels();
        let (probes, neuron_shape) = if let NervLayer::PerChannel(_) = layer {
            let c = lin.colours();
            (
                (0..c).map(Probe::Channel).collect(),
                vec![inputs.len(), k, c],
            )
        } else {
            (vec![Probe::Sum], vec![inputs.len(), k])
        };
        Ok(KernelContext {
            name: layer.to_string(),
            neuron_shape,
            inputs,
            k,
            total: data.in_channels * k,
            probes,
        })
    }

    fn maps(&self) -> usize {
        self.neuron_shape.iter().product()
    }

    /// The downstream-bias map for `probe`, divided by the layer's number of kernels, `[H·W]`.
    fn bias_share(&self, lin: &LinearisedNerv, b: usize, probe: Probe) -> Result<Vec<f32>> {
        let bias = lin.downstream_bias(b)?;
        let p = lin.height * lin.width;
        let pw = probe.weights(lin.colours());
        let n = self.total as f64;
        Ok((0..p)
            .map(|o| {
                let v: f64 = pw
                    .iter()
                    .enumerate()
                    .map(|(c, &w)| f64::from(w) * f64::from(bias[c * p + o]))
                    .sum();
                (v / n) as f32
            })
            .collect())
    }
}

/// One stage of the exact back-propagation: from a window at block `blk`'s output (after ×Φ(z),
/// PixelShuffle and the conv, read backwards) to the window at its input.
#[inline(always)]
fn stage_back(
    blk: &LinearBlock,
    r: &[f32],
    (w, ay, ax): (usize, isize, isize),
    out: &mut Vec<f32>,
    (w2, by, bx): (usize, isize, isize),
) {
    let (cin, c, s) = (blk.cin, blk.c, blk.s);
    out.clear();
    out.resize(w2 * w2 * cin, 0.0);
    let (hh, ww) = blk.out_size();
    for iy in 0..w {
        let y = ay + iy as isize;
        if y < 0 || y >= hh as isize {
            continue;
        }
        let y = y as usize;
        for ix in 0..w {
            let x = ax + ix as isize;
            if x < 0 || x >= ww as isize {
                continue;
            }
            let x = x as usize;
            let phase = (y % s) * s + x % s;
            let (ly, lx) = ((y / s) as isize, (x / s) as isize);
            let rv = &r[(iy * w + ix) * c..][..c];
            let mv = &blk.mult_cl[(y * ww + x) * c..][..c];
            for ch in 0..c {
                let v = rv[ch] * mv[ch];
                if v == 0.0 {
                    continue;
                }
                let k = ch * s * s + phase;
                for dy in 0..3 {
                    let ry = (ly + dy as isize - 1 - by) as usize;
                    for dx in 0..3 {
                        let rx = (lx + dx as isize - 1 - bx) as usize;
                        let dst = &mut out[(ry * w2 + rx) * cin..][..cin];
                        let src = &blk.weight_t[((k * 3 + dy) * 3 + dx) * cin..][..cin];
                        for (d, &wt) in dst.iter_mut().zip(src) {
                            *d += v * wt;
                        }
                    }
                }
            }
        }
    }
}

/// Writes the window `r` of output pixel (y, x) at block `blk`'s output, times Φ(z), into the
/// row buffer `[K][width][n²]` of its conv output channels and phase candidates.
#[inline(always)]
fn extract(
    blk: &LinearBlock,
    r: &[f32],
    win: &Window,
    (y, x): (usize, usize),
    n: usize,
    width: usize,
    buf: &mut [f32],
) {
    let (c, s, w) = (blk.c, blk.s, win.width);
    let (ay, ax) = (win.oy[y], win.ox[x]);
    let (hh, ww) = blk.out_size();
    let nn = n * n;
    for iy in 0..w {
        let yy = ay + iy as isize;
        if yy < 0 || yy >= hh as isize {
            continue;
        }
        let ry = yy as usize % s;
        let jy = (yy - (ay + (ry as isize - ay).rem_euclid(s as isize))) as usize / s;
        for ix in 0..w {
            let xx = ax + ix as isize;
            if xx < 0 || xx >= ww as isize {
                continue;
            }
            let rx = xx as usize % s;
            let jx = (xx - (ax + (rx as isize - ax).rem_euclid(s as isize))) as usize / s;
            let rv = &r[(iy * w + ix) * c..][..c];
            let mv = &blk.mult_cl[(yy as usize * ww + xx as usize) * c..][..c];
            for ch in 0..c {
                let k = ch * s * s + ry * s + rx;
                buf[(k * width + x) * nn + jy * n + jx] = rv[ch] * mv[ch];
            }
        }
    }
}

/// Exact coefficients of one block's kernels for a band of output rows: kernel (i, k)'s map at
/// output pixel o is `Σ_j E[k][o][j]·P[i, k](q_j(o))`.
pub(crate) struct BlockCoefficients {
    s: usize,
    /// Candidates per dimension.
    n: usize,
    width: usize,
    rows: Range<usize>,
    /// `[K][band pixels][n²]`.
    e: Vec<f32>,
    /// Plane row offsets (row · w) of the candidates per (phase row, output row, j): `[s][H][n]`.
    row_offsets: Vec<usize>,
    /// Plane columns of the candidates per (phase column, output column, j): `[s][W][n]`.
    columns: Vec<usize>,
    height: usize,
}

impl BlockCoefficients {
    /// Writes kernel (·, k)'s map over the band from its plane `u` (`[h, w]`), plus `add` (one
    /// value per band pixel), into `out` (band pixels).
    pub(crate) fn kernel_map_into(&self, k: usize, u: &[f32], add: &[f32], out: &mut [f32]) {
        match self.n {
            1 => self.evaluate::<1>(k, u, add, out),
            2 => self.evaluate::<2>(k, u, add, out),
            3 => self.evaluate::<3>(k, u, add, out),
            _ => self.evaluate_any(k, u, add, out),
        }
    }

    /// [`Self::kernel_map_into`] for `N = n` candidates per dimension, inner loops unrolled.
    #[inline(always)]
    fn evaluate<const N: usize>(&self, k: usize, u: &[f32], add: &[f32], out: &mut [f32]) {
        let (s, width) = (self.s, self.width);
        let r = k % (s * s);
        let (ry, rx) = (r / s, r % s);
        let band = self.rows.len() * width;
        let e = &self.e[k * band * N * N..][..band * N * N];
        let columns = &self.columns[rx * width * N..][..width * N];
        for (ri, y) in self.rows.clone().enumerate() {
            let ro: &[usize; N] = self.row_offsets[(ry * self.height + y) * N..][..N]
                .try_into()
                .expect("N offsets");
            let erow = &e[ri * width * N * N..][..width * N * N];
            let orow = &mut out[ri * width..][..width];
            let arow = &add[ri * width..][..width];
            for (x, ((o, &a), ex)) in orow
                .iter_mut()
                .zip(arow)
                .zip(erow.chunks_exact(N * N))
                .enumerate()
            {
                let co = &columns[x * N..][..N];
                let mut acc = a;
                for (jy, &base) in ro.iter().enumerate() {
                    for (jx, &c) in co.iter().enumerate() {
                        acc += ex[jy * N + jx] * u[base + c];
                    }
                }
                *o = acc;
            }
        }
    }

    /// The same for any number of candidates, without the fixed-size inner loops.
    fn evaluate_any(&self, k: usize, u: &[f32], add: &[f32], out: &mut [f32]) {
        let (s, n, width) = (self.s, self.n, self.width);
        let r = k % (s * s);
        let (ry, rx) = (r / s, r % s);
        let band = self.rows.len() * width;
        let e = &self.e[k * band * n * n..][..band * n * n];
        for (ri, y) in self.rows.clone().enumerate() {
            let ro = &self.row_offsets[(ry * self.height + y) * n..][..n];
            for x in 0..width {
                let co = &self.columns[(rx * width + x) * n..][..n];
                let ex = &e[(ri * width + x) * n * n..][..n * n];
                let mut acc = add[ri * width + x];
                for (jy, &base) in ro.iter().enumerate() {
                    for (jx, &c) in co.iter().enumerate() {
                        acc += ex[jy * n + jx] * u[base + c];
                    }
                }
                out[ri * width + x] = acc;
            }
        }
    }
}

/// A block's conservative maps, kernel by kernel on demand, from whole-frame coefficients: what
/// full maps are written from, and what the analyses read under the conservative method. Owns a
/// clone of its frame (shared data); neuron `((i − inputs.start)·Cout + k)·C + c` is kernel
/// (i, k) for probe c (C = 1 for the summed maps, the output channels for `block{n}_rgb`).
pub(crate) struct PreparedBlock {
    frame: NervFrameData,
    layer: NervLayer,
    ctx: KernelContext,
    /// Per probe (the sum, or each output channel).
    coefficients: Vec<BlockCoefficients>,
    shares: Vec<Vec<f32>>,
    pixels: usize,
}

impl fmt::Debug for PreparedBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PreparedBlock({}, neurons {:?})",
            self.ctx.name, self.ctx.neuron_shape
        )
    }
}

impl PreparedBlock {
    /// The layer's name (`block3`, or `block3_rgb` per channel).
    pub fn name(&self) -> &str {
        &self.ctx.name
    }

    /// Probes per kernel: 1 (summed) or the output channels (per channel).
    fn probes(&self) -> usize {
        self.coefficients.len()
    }

    /// Kernel (i, k)'s map for probe `c` (0 for the summed maps), into `out` (`H·W`).
    pub(crate) fn kernel_map_into(&self, i: usize, k: usize, c: usize, out: &mut [f32]) {
        let data = self
            .frame
            .layer(self.layer)
            .expect("layer checked when prepared");
        self.coefficients[c].kernel_map_into(k, &data.plane(i, k), &self.shares[c], out);
    }

    /// The maps of the kernels of input channels `inputs` (within the prepared ones),
    /// `[n, Cout, (C,) H, W]`.
    pub fn maps(&self, inputs: Range<usize>) -> Result<Vec<f32>> {
        let all = &self.ctx.inputs;
        if inputs.start < all.start || inputs.end > all.end {
            return Err(XincError::InvalidArgument(format!(
                "input channels {inputs:?} outside the prepared {all:?}"
            )));
        }
        let (nc, k, p) = (self.probes(), self.ctx.k, self.pixels);
        let mut out = zeroed_buffer(inputs.len() * k * nc * p);
        out.par_chunks_mut(p).enumerate().for_each(|(m, dst)| {
            let (i, kk, c) = (inputs.start + m / nc / k, m / nc % k, m % nc);
            self.kernel_map_into(i, kk, c, dst);
        });
        Ok(out)
    }

    /// Kernel (i, k) and probe c of neuron `n`.
    fn kernel_of(&self, n: usize) -> (usize, usize, usize) {
        let (nc, k) = (self.probes(), self.ctx.k);
        (self.ctx.inputs.start + n / nc / k, n / nc % k, n % nc)
    }
}

impl NeuronMaps for PreparedBlock {
    fn layer(&self) -> &str {
        self.name()
    }

    fn num_neurons(&self) -> usize {
        self.ctx.maps()
    }

    fn size(&self) -> (usize, usize) {
        let c = &self.coefficients[0];
        (c.height, c.width)
    }

    /// The kernel (input channel, output channel); per channel, the three neurons of a kernel
    /// share it (their names add the output channel).
    fn neuron_id(&self, n: usize) -> (usize, Option<usize>) {
        let (i, k, _) = self.kernel_of(n);
        (i, Some(k))
    }

    fn neuron_name(&self, n: usize) -> String {
        let (i, k, c) = self.kernel_of(n);
        match self.layer {
            NervLayer::PerChannel(_) => format!("{}, channel {c}", neuron_label((i, Some(k)))),
            _ => neuron_label((i, Some(k))),
        }
    }

    fn map_into(&self, n: usize, out: &mut [f32]) {
        let (i, k, c) = self.kernel_of(n);
        self.kernel_map_into(i, k, c, out);
    }

    fn channel(&self, n: usize) -> Option<usize> {
        let (_, _, c) = self.kernel_of(n);
        matches!(self.layer, NervLayer::PerChannel(_)).then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(index: usize) -> NervLayer {
        NervLayer::block(index)
    }

    /// Kernel (i, k)'s map by brute force: its share of block b's output, run through the
    /// linearised network with tensor operations, `[colours, H, W]`.
    fn brute_force(
        lin: &LinearisedNerv,
        data: &NervBlockData,
        b: usize,
        i: usize,
        k: usize,
    ) -> Vec<f32> {
        let blk = &lin.blocks[b];
        let (s, (hh, ww)) = (blk.s, blk.out_size());
        let (ch, r) = (k / (s * s), k % (s * s));
        let u = data.plane(i, k);
        let mut fine = vec![0.0f32; blk.c * hh * ww];
        for y in 0..blk.h {
            for x in 0..blk.w {
                fine[(ch * hh + y * s + r / s) * ww + x * s + r % s] = u[y * blk.w + x];
            }
        }
        let t = Tensor::from_vec(fine, (1, blk.c, hh, ww), &Device::Cpu).unwrap();
        let t = t.mul(&blk.mult).unwrap();
        lin.propagate(b, &t, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn local_back_propagation_equals_the_linearised_network() {
        let frame = NervFrameData::tiny();
        let lin = LinearisedNerv::new(&frame).unwrap();
        let (h, w) = (frame.height, frame.width);
        let p = h * w;
        let zero = vec![0.0f32; p];
        for b in 0..3 {
            let data = frame.layer(block(b + 1)).unwrap();
            let sum = lin.coefficients(b, Probe::Sum, 0..h);
            let per_c: Vec<_> = (0..3)
                .map(|c| lin.coefficients(b, Probe::Channel(c), 0..h))
                .collect();
            let cout = data.out_channels();
            for (i, k) in [
                (0, 0),
                (data.in_channels - 1, cout - 1),
                (1 % data.in_channels, cout / 2 + 1),
            ] {
                let reference = brute_force(&lin, &data, b, i, k);
                let scale = reference
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()))
                    .max(1e-6);
                let u = data.plane(i, k);
                let mut ours = vec![0.0f32; p];
                sum.kernel_map_into(k, &u, &zero, &mut ours);
                for (o, &v) in ours.iter().enumerate() {
                    let want: f32 = (0..3).map(|c| reference[c * p + o]).sum();
                    assert!(
                        (v - want).abs() <= 1e-5 * scale,
                        "block {} kernel ({i},{k}) pixel {o}: {v} vs {want}",
                        b + 1
                    );
                }
                for (c, co) in per_c.iter().enumerate() {
                    co.kernel_map_into(k, &u, &zero, &mut ours);
                    for (o, &v) in ours.iter().enumerate() {
                        let want = reference[c * p + o];
                        assert!(
                            (v - want).abs() <= 1e-5 * scale,
                            "block {} channel {c} pixel {o}",
                            b + 1
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_block_conserves_the_output_in_any_number_of_bands() {
        let frame = NervFrameData::tiny();
        let lin = LinearisedNerv::new(&frame).unwrap();
        let p = frame.height * frame.width;
        let scale = frame.output.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for index in 1..=3 {
            let layer = block(index);
            let data = frame.layer(layer).unwrap();
            let all = 0..data.in_channels;
            let rgb = NervLayer::PerChannel(index);
            let whole = lin
                .layer_summary(&data, rgb, all.clone(), usize::MAX)
                .unwrap();
            let banded = lin.layer_summary(&data, rgb, all.clone(), 1).unwrap();
            assert_eq!(whole.layer, format!("block{index}_rgb"));
            assert_eq!(whole.sum_neurons, banded.sum_neurons);
            for c in 0..3 {
                let mut total = vec![0.0f64; p];
                for k in 0..data.out_channels() {
                    for (t, &v) in total
                        .iter_mut()
                        .zip(&whole.sum_neurons[(k * 3 + c) * p..][..p])
                    {
                        *t += f64::from(v);
                    }
                }
                for (o, &t) in total.iter().enumerate() {
                    let y = frame.output[c * p + o];
                    assert!(
                        (t as f32 - y).abs() <= 1e-5 * scale,
                        "block {index} channel {c} pixel {o}: {t} vs {y}"
                    );
                }
            }
            let summed = lin
                .layer_summary(&data, layer, all.clone(), usize::MAX)
                .unwrap();
            let maps = lin.layer_maps(&frame, layer, all).unwrap().summarise();
            for (a, b) in summed.sum_hw.iter().zip(&maps.sum_hw) {
                assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0));
            }
            let rgb_sums: Vec<f32> = whole
                .sum_hw
                .chunks_exact(3)
                .map(|c| c.iter().sum())
                .collect();
            for (a, b) in summed.sum_hw.iter().zip(&rgb_sums) {
                assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0));
            }
        }
    }

    #[test]
    fn only_block_outputs_are_linearised() {
        let frame = NervFrameData::tiny();
        let lin = LinearisedNerv::new(&frame).unwrap();
        assert!(lin.block_of(NervLayer::Head).is_err());
        assert!(lin.block_of(block(4)).is_err());
        assert_eq!(lin.block_of(NervLayer::PerChannel(2)).unwrap(), 1);
        let err = lin
            .layer_maps(&frame, block(1), 0..99)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn the_rescale_multiplier_is_gelu_over_z_with_its_limit() {
        assert_eq!(gelu_share(0.0), 0.5);
        for z in [-3.0f32, -0.5, 1e-3, 0.7, 4.0] {
            let g = crate::models::nerv::gelu::gelu_erf(z);
            assert!(
                (gelu_share(z) * z - g).abs() <= 1e-6 * g.abs().max(1e-3),
                "{z}"
            );
        }
    }
}
