//! The NeRV canvas (spec A.7–A.12), computed kernel by kernel from plain data.
//!
//! A *kernel* is one (input channel i, conv output channel k) pair of a layer's 3×3 conv. Its
//! low-resolution plane is `P[i, k] = conv3x3(x[i], W[k, i]) + b[k]/Cin` (zero padding 1,
//! cross-correlation), at the layer's input resolution (h, w). The official maps are
//! - head (`head`): `P[i, c]` itself, shape `[Cin, 3, H, W]`; exact: Σ_i gives the head output
//!   before OutImg;
//! - block pre-GELU (`block{n}_pre_gelu`): `P[i, k]` placed on its PixelShuffle phase
//!   `k % s²` at (h·s, w·s), zero elsewhere; exact: GELU of the sum over i and the s² phases of
//!   output channel c gives the next block's input, channel c;
//! - block output (`block{n}`): `box3(GELU(placed))`, then for every simulated downstream block
//!   `box3(GELU(up2(·)))`, ending at the frame resolution.
//!
//! Since GELU(0) = 0, a placed map is zero off its phase lattice, so every map is a function of
//! the one h×w plane `P[i, k]`; nothing here ever holds a `[Cin, Cout, H, W]` canvas unless asked
//! to ([`nerv_layer_maps`]). [`nerv_layer_summary`] streams the kernels in parallel over output
//! channels, keeping one map per thread plus the reductions.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use rayon::prelude::*;

use candle_core::Tensor;

use super::{CanvasFileWriter, CanvasSummary, ContributionMap, LayerSummary};
use crate::error::{Result, XincError};
use crate::models::nerv::{Nerv, NervActivations};
use crate::tensor::{with_f32_slice, zeroed_buffer};

/// Adds `wt · src` shifted by `(dy − 1, dx − 1)` into `out` (both `[h, w]`), zero padded:
/// `out[y][x] += wt · src[y + dy − 1][x + dx − 1]` where that pixel exists.
fn add_shifted(
    out: &mut [f32],
    src: &[f32],
    (h, w): (usize, usize),
    (dy, dx): (usize, usize),
    wt: f32,
) {
    let (y0, y1) = (usize::from(dy == 0), if dy == 2 { h - 1 } else { h });
    let (x0, x1) = (usize::from(dx == 0), if dx == 2 { w - 1 } else { w });
    if x1 <= x0 {
        return;
    }
    for y in y0..y1 {
        let o = &mut out[y * w + x0..y * w + x1];
        let s = &src[(y + dy - 1) * w + x0 + dx - 1..][..x1 - x0];
        for (a, &b) in o.iter_mut().zip(s) {
            *a += wt * b;
        }
    }
}

/// 3×3 cross-correlation of the `[h, w]` plane `x` with `kernel` (row-major `[3, 3]`), zero
/// padding 1, plus `bias`: `out[y][x] = Σ_{ky,kx} kernel[ky][kx]·x[y+ky−1][x+kx−1] + bias`. The
/// taps are accumulated in row-major order, then the bias is added.
pub fn conv3x3_plane(x: &[f32], h: usize, w: usize, kernel: &[f32; 9], bias: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; h * w];
    for (t, &wt) in kernel.iter().enumerate() {
        add_shifted(&mut out, x, (h, w), (t / 3, t % 3), wt);
    }
    out.iter_mut().for_each(|v| *v += bias);
    out
}

/// The 3×3 mean filter of the `[h, w]` plane `x` with zero padding 1: every pixel, borders
/// included, is the sum of its 3×3 neighbourhood times 1/9 (PyTorch `Conv2d` with weights 1/9).
pub fn box3(x: &[f32], h: usize, w: usize) -> Vec<f32> {
    conv3x3_plane(x, h, w, &[1.0 / 9.0; 9], 0.0)
}

/// Nearest-neighbour ×2 upsampling of the `[h, w]` plane `x` to `[2h, 2w]`:
/// `out[y][x] = x[y / 2][x / 2]`.
pub fn up2(x: &[f32], h: usize, w: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(4 * h * w);
    for row in x.chunks_exact(w).take(h) {
        let wide: Vec<f32> = row.iter().flat_map(|&v| [v, v]).collect();
        out.extend_from_slice(&wide);
        out.extend_from_slice(&wide);
    }
    out
}

/// Places the `[h, w]` plane `p` on PixelShuffle phase `phase = dy·s + dx` of an `[h·s, w·s]`
/// plane: `out[s·y + dy][s·x + dx] = p[y][x]`, every other pixel 0.
pub fn phase_place(p: &[f32], h: usize, w: usize, s: usize, phase: usize) -> Vec<f32> {
    let (dy, dx) = (phase / s, phase % s);
    let mut out = vec![0.0f32; h * s * w * s];
    for (y, row) in p.chunks_exact(w).take(h).enumerate() {
        let dst = &mut out[(s * y + dy) * w * s..][..w * s];
        for (x, &v) in row.iter().enumerate() {
            dst[s * x + dx] = v;
        }
    }
    out
}

/// The exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`, evaluated in f64 and rounded once to f32
/// (within one f32 rounding of the true value, so within 1e-7 of PyTorch's `nn.GELU()` for the
/// activations met here).
pub fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

fn gelu_in_place(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = gelu_erf(*x));
}

/// The error function in f64, error below 1e-15: the SunPro/FreeBSD `s_erf.c` rational
/// approximations (as in musl and the `libm` crate), with a plain `exp` in the tails.
fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let y = if a < 0.84375 {
        return erf_small(x);
    } else if a < 1.25 {
        ERX + erf_near_one(a - 1.0)
    } else if a < 6.0 {
        1.0 - erfc_tail(a)
    } else {
        1.0
    };
    y.copysign(x)
}

/// erf(1) rounded to 24 bits, the offset of [`erf_near_one`] (published digits kept verbatim).
#[allow(clippy::excessive_precision)]
const ERX: f64 = 8.45062911510467529297e-01;

/// erf on `|x| < 0.84375`: `x + x·P(x²)/Q(x²)`.
#[allow(clippy::excessive_precision)]
fn erf_small(x: f64) -> f64 {
    const PP: [f64; 5] = [
        1.28379167095512558561e-01,
        -3.25042107247001499370e-01,
        -2.84817495755985104766e-02,
        -5.77027029648944159157e-03,
        -2.37630166566501626084e-05,
    ];
    const QQ: [f64; 6] = [
        1.0,
        3.97917223959155352819e-01,
        6.50222499887672944485e-02,
        5.08130628187576562776e-03,
        1.32494738004321644526e-04,
        -3.96022827877536812320e-06,
    ];
    let z = x * x;
    x + x * (poly(&PP, z) / poly(&QQ, z))
}

/// `erf(1 + s) − ERX` on `|x| ∈ [0.84375, 1.25)`, `s = |x| − 1`.
#[allow(clippy::excessive_precision)]
fn erf_near_one(s: f64) -> f64 {
    const PA: [f64; 7] = [
        -2.36211856075265944077e-03,
        4.14856118683748331666e-01,
        -3.72207876035701323847e-01,
        3.18346619901161753674e-01,
        -1.10894694282396677476e-01,
        3.54783043256182359371e-02,
        -2.16637559486879084300e-03,
    ];
    const QA: [f64; 7] = [
        1.0,
        1.06420880400844228286e-01,
        5.40397917702171048937e-01,
        7.18286544141962662868e-02,
        1.26171219808761642112e-01,
        1.36370839120290507362e-02,
        1.19844998467991074170e-02,
    ];
    poly(&PA, s) / poly(&QA, s)
}

/// erfc on `a ∈ [1.25, 6)`: `exp(−a² − 0.5625 + R(1/a²)/S(1/a²)) / a`.
#[allow(clippy::excessive_precision)]
fn erfc_tail(a: f64) -> f64 {
    const RA: [f64; 8] = [
        -9.86494403484714822705e-03,
        -6.93858572707181764372e-01,
        -1.05586262253232909814e+01,
        -6.23753324503260060396e+01,
        -1.62396669462573470355e+02,
        -1.84605092906711035994e+02,
        -8.12874355063065934246e+01,
        -9.81432934416914548592e+00,
    ];
    const SA: [f64; 9] = [
        1.0,
        1.96512716674392571292e+01,
        1.37657754143519042600e+02,
        4.34565877475229228821e+02,
        6.45387271733267880336e+02,
        4.29008140027567833386e+02,
        1.08635005541779435134e+02,
        6.57024977031928170135e+00,
        -6.04244152148580987438e-02,
    ];
    const RB: [f64; 7] = [
        -9.86494292470009928597e-03,
        -7.99283237680523006574e-01,
        -1.77579549177547519889e+01,
        -1.60636384855821916062e+02,
        -6.37566443368389627722e+02,
        -1.02509513161107724954e+03,
        -4.83519191608651397019e+02,
    ];
    const SB: [f64; 8] = [
        1.0,
        3.03380607434824582924e+01,
        3.25792512996573918826e+02,
        1.53672958608443695994e+03,
        3.19985821950859553908e+03,
        2.55305040643316442583e+03,
        4.74528541206955367215e+02,
        -2.24409524465858183362e+01,
    ];
    let s = 1.0 / (a * a);
    let rs = if a < 1.0 / 0.35 {
        poly(&RA, s) / poly(&SA, s)
    } else {
        poly(&RB, s) / poly(&SB, s)
    };
    (-a * a - 0.5625 + rs).exp() / a
}

/// Horner evaluation of `Σ c[j]·z^j`.
fn poly(c: &[f64], z: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &cj| acc * z + cj)
}

/// One layer of the NeRV canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NervLayer {
    /// The head conv's per-(input, RGB channel) maps: `head`.
    Head,
    /// A NeRV block (1-based `index`), its output maps (`block{index}`) or its PixelShuffle-placed
    /// pre-GELU maps (`block{index}_pre_gelu`).
    Block { index: usize, pre_gelu: bool },
}

impl fmt::Display for NervLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NervLayer::Head => write!(f, "head"),
            NervLayer::Block { index, pre_gelu } => {
                write!(
                    f,
                    "block{index}{}",
                    if *pre_gelu { "_pre_gelu" } else { "" }
                )
            }
        }
    }
}

impl FromStr for NervLayer {
    type Err = XincError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "head" {
            return Ok(NervLayer::Head);
        }
        let bad = || {
            XincError::InvalidArgument(format!(
                "`{s}` is not a NeRV layer name (head, block<n> or block<n>_pre_gelu)"
            ))
        };
        let rest = s.strip_prefix("block").ok_or_else(bad)?;
        let (digits, pre_gelu) = match rest.strip_suffix("_pre_gelu") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        let index = digits.parse().ok().filter(|&n| n >= 1).ok_or_else(bad)?;
        Ok(NervLayer::Block { index, pre_gelu })
    }
}

impl NervLayer {
    /// The layers of the official analysis of a NeRV with `blocks` upsampling blocks, from the
    /// head down: `head, block{n}, block{n}_pre_gelu, …, block1, block1_pre_gelu`.
    pub fn all(blocks: usize) -> Vec<NervLayer> {
        let mut v = vec![NervLayer::Head];
        for index in (1..=blocks).rev() {
            v.push(NervLayer::Block {
                index,
                pre_gelu: false,
            });
            v.push(NervLayer::Block {
                index,
                pre_gelu: true,
            });
        }
        v
    }
}

/// The plain data one layer's maps are computed from (batch element 0).
#[derive(Clone, Copy, Debug)]
pub struct NervBlockData<'a> {
    /// The layer's input activation, `[Cin, h, w]` row-major.
    pub input: &'a [f32],
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    /// The 3×3 conv weight, `[Cout, Cin, 3, 3]`.
    pub weight: &'a [f32],
    /// The conv bias, `[Cout]`.
    pub bias: &'a [f32],
    /// The PixelShuffle factor s; 1 for the head.
    pub scale: usize,
    /// Simulated blocks after this one: 0 for the last block (and the head), 1 for the one
    /// before, …; each doubles the map resolution.
    pub downstream: usize,
}

impl NervBlockData<'_> {
    /// Conv output channels, `weight.len() / (Cin·9)`.
    pub fn out_channels(&self) -> usize {
        self.weight.len() / (9 * self.in_channels).max(1)
    }

    /// The `(H, W)` of one map of `layer`.
    pub fn map_size(&self, layer: NervLayer) -> (usize, usize) {
        let f = match layer {
            NervLayer::Head => 1,
            NervLayer::Block { pre_gelu: true, .. } => self.scale,
            NervLayer::Block {
                pre_gelu: false, ..
            } => self.scale << self.downstream,
        };
        (self.height * f, self.width * f)
    }

    /// Checks the buffer lengths against the shapes, and `layer` against the scale.
    pub fn validate(&self, layer: NervLayer) -> Result<()> {
        let (cin, cout, s) = (self.in_channels, self.out_channels(), self.scale);
        let bad = |what: String| Err(XincError::InvalidArgument(format!("NeRV {layer}: {what}")));
        if cin == 0 || self.height == 0 || self.width == 0 || s == 0 {
            return bad("zero-sized input or scale".into());
        }
        if self.input.len() != cin * self.height * self.width {
            return bad(format!(
                "input has {} values, not {cin}·h·w",
                self.input.len()
            ));
        }
        if self.weight.len() != cout * cin * 9 || self.bias.len() != cout || cout == 0 {
            return bad(format!(
                "weight/bias do not match [Cout, {cin}, 3, 3] / [Cout]"
            ));
        }
        match layer {
            NervLayer::Head if s != 1 || self.downstream != 0 => {
                bad("the head has scale 1 and nothing downstream".into())
            }
            NervLayer::Block { .. } if cout % (s * s) != 0 => {
                bad(format!("Cout {cout} is not a multiple of s² = {}", s * s))
            }
            _ => Ok(()),
        }
    }

    fn check_kernels(&self, layer: NervLayer, inputs: &Range<usize>) -> Result<()> {
        self.validate(layer)?;
        if inputs.start > inputs.end || inputs.end > self.in_channels {
            return Err(XincError::InvalidArgument(format!(
                "NeRV {layer}: input channels {inputs:?} out of 0..{}",
                self.in_channels
            )));
        }
        Ok(())
    }

    /// `P[i, k]`, the kernel's plane at the input resolution.
    fn plane(&self, i: usize, k: usize) -> Vec<f32> {
        let hw = self.height * self.width;
        let x = &self.input[i * hw..(i + 1) * hw];
        let off = (k * self.in_channels + i) * 9;
        let kernel: &[f32; 9] = self.weight[off..off + 9].try_into().expect("9 taps");
        let share = self.bias[k] / self.in_channels as f32;
        conv3x3_plane(x, self.height, self.width, kernel, share)
    }

    /// Kernel (i, k)'s map of `layer`; the arguments are checked by the caller.
    fn map(&self, layer: NervLayer, i: usize, k: usize) -> Vec<f32> {
        let p = self.plane(i, k);
        let (h, w, s) = (self.height, self.width, self.scale);
        match layer {
            NervLayer::Head => p,
            NervLayer::Block { pre_gelu: true, .. } => phase_place(&p, h, w, s, k % (s * s)),
            NervLayer::Block {
                pre_gelu: false, ..
            } => self.simulate(p, k),
        }
    }

    /// `box3(GELU(placed))`, then `box3(GELU(up2(·)))` per downstream block. GELU commutes with
    /// the placement and with `up2`, so it runs on the smaller plane each time.
    fn simulate(&self, mut p: Vec<f32>, k: usize) -> Vec<f32> {
        let s = self.scale;
        let (mut h, mut w) = (self.height * s, self.width * s);
        gelu_in_place(&mut p);
        let mut z = box3(
            &phase_place(&p, self.height, self.width, s, k % (s * s)),
            h,
            w,
        );
        for _ in 0..self.downstream {
            gelu_in_place(&mut z);
            z = box3(&up2(&z, h, w), 2 * h, 2 * w);
            (h, w) = (2 * h, 2 * w);
        }
        z
    }
}

/// The map of kernel (input channel `i`, conv output channel `k`) of `layer`, `[H, W]` with
/// `(H, W)` = [`NervBlockData::map_size`]. For the head, `k` is the RGB channel.
pub fn kernel_map(data: &NervBlockData, layer: NervLayer, i: usize, k: usize) -> Result<Vec<f32>> {
    data.check_kernels(layer, &(i..i + 1))?;
    if k >= data.out_channels() {
        return Err(XincError::InvalidArgument(format!(
            "NeRV {layer}: output channel {k} out of 0..{}",
            data.out_channels()
        )));
    }
    Ok(data.map(layer, i, k))
}

/// The reductions of `layer`'s canvas restricted to the input channels `inputs`, neuron shape
/// `[inputs.len(), Cout]`: `sum_hw` / `abssum_hw` per kernel, and `sum_neurons` = the sum over
/// the input channels, `[Cout, H, W]` (for the head: the head output before OutImg when
/// `inputs` covers every channel). The kernels are streamed in parallel over output channels,
/// each summed over its inputs in a fixed order (deterministic for any thread count); memory is
/// one map per thread plus the result. See [`sum_over_kernels`] for the `[H, W]` total.
pub fn nerv_layer_summary(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
) -> Result<LayerSummary> {
    data.check_kernels(layer, &inputs)?;
    let (cout, (h, w)) = (data.out_channels(), data.map_size(layer));
    let mut sum_neurons = zeroed_buffer(cout * h * w);
    let per_k: Vec<Vec<(f64, f64)>> = sum_neurons
        .par_chunks_mut(h * w)
        .enumerate()
        .map(|(k, dst)| output_channel_sums(data, layer, inputs.clone(), k, dst))
        .collect();
    let n = inputs.len();
    let (mut sum_hw, mut abssum_hw) = (vec![0.0; n * cout], vec![0.0; n * cout]);
    for (k, col) in per_k.iter().enumerate() {
        for (m, &(s, a)) in col.iter().enumerate() {
            sum_hw[m * cout + k] = s as f32;
            abssum_hw[m * cout + k] = a as f32;
        }
    }
    Ok(LayerSummary {
        layer: layer.to_string(),
        neuron_shape: vec![n, cout],
        height: h,
        width: w,
        sum_hw,
        abssum_hw,
        sum_neurons,
    })
}

/// Streams the maps of output channel `k` over `inputs`: writes their per-pixel sum into `dst`
/// and returns each map's (sum, absolute sum) over the pixels.
fn output_channel_sums(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
    k: usize,
    dst: &mut [f32],
) -> Vec<(f64, f64)> {
    let mut acc = vec![0.0f64; dst.len()];
    let sums = inputs
        .map(|i| {
            let map = data.map(layer, i, k);
            let mut sa = (0.0f64, 0.0f64);
            for (a, &v) in acc.iter_mut().zip(&map) {
                *a += v as f64;
                sa = (sa.0 + v as f64, sa.1 + v.abs() as f64);
            }
            sa
        })
        .collect();
    for (d, &a) in dst.iter_mut().zip(&acc) {
        *d = a as f32;
    }
    sums
}

/// The sum of a layer's maps over all its kernels, `[H, W]`: `summary.sum_neurons`
/// (`[Cout, H, W]`) summed over the output channels, in f64.
pub fn sum_over_kernels(summary: &LayerSummary) -> Vec<f32> {
    let p = summary.height * summary.width;
    let mut acc = vec![0.0f64; p];
    for plane in summary.sum_neurons.chunks_exact(p) {
        for (a, &v) in acc.iter_mut().zip(plane) {
            *a += v as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// The full maps of `layer` for the input channels `inputs`, `[inputs.len(), Cout, H, W]`
/// (neuron index `(i − inputs.start)·Cout + k`). Block 1's full canvas is 2.4 GB: prefer
/// [`nerv_layer_summary`], or a few input channels at a time.
pub fn nerv_layer_maps(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
) -> Result<ContributionMap> {
    data.check_kernels(layer, &inputs)?;
    let (cout, (h, w)) = (data.out_channels(), data.map_size(layer));
    let mut out = zeroed_buffer(inputs.len() * cout * h * w);
    out.par_chunks_mut(h * w).enumerate().for_each(|(m, dst)| {
        dst.copy_from_slice(&data.map(layer, inputs.start + m / cout, m % cout));
    });
    Ok(ContributionMap {
        layer: layer.to_string(),
        neuron_shape: vec![inputs.len(), cout],
        height: h,
        width: w,
        data: out,
    })
}

/// One layer's input activation and conv weights, owned.
struct OwnedLayer {
    input: Vec<f32>,
    in_channels: usize,
    height: usize,
    width: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    scale: usize,
}

/// Owned layer inputs and weights of one NeRV frame: what every [`NervBlockData`] borrows.
pub struct NervFrameData {
    /// Blocks 1..=B, then the head.
    layers: Vec<OwnedLayer>,
    /// The head output before OutImg, `[3, H, W]`: what the head maps sum to.
    pub output: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

impl NervFrameData {
    /// Extracts batch element 0 of a forward pass, with the model's weights.
    pub fn new(model: &Nerv, acts: &NervActivations) -> Result<Self> {
        let plane = |t: &Tensor| -> Result<(Vec<f32>, usize, usize, usize)> {
            let (_, c, h, w) = t.dims4()?;
            Ok((with_f32_slice(&t.get(0)?, <[f32]>::to_vec)?, c, h, w))
        };
        let conv = |c: &candle_nn::Conv2d| -> Result<(Vec<f32>, Vec<f32>)> {
            let bias = c.bias().ok_or_else(|| {
                XincError::InvalidArgument("NeRV convolutions have biases".into())
            })?;
            Ok((
                with_f32_slice(c.weight(), <[f32]>::to_vec)?,
                with_f32_slice(bias, <[f32]>::to_vec)?,
            ))
        };
        let layer = |x: &Tensor, c: &candle_nn::Conv2d, scale: usize| -> Result<OwnedLayer> {
            let (input, in_channels, height, width) = plane(x)?;
            let (weight, bias) = conv(c)?;
            Ok(OwnedLayer {
                input,
                in_channels,
                height,
                width,
                weight,
                bias,
                scale,
            })
        };
        let mut layers = Vec::new();
        for (b, block) in model.blocks().iter().enumerate() {
            layers.push(layer(&acts.decoder[b + 1], block.conv(), block.scale())?);
        }
        layers.push(layer(
            acts.decoder.last().expect("decoder results"),
            model.head(),
            1,
        )?);
        let (output, _, height, width) = plane(&acts.head_output)?;
        Ok(NervFrameData {
            layers,
            output,
            height,
            width,
        })
    }

    /// The data of `layer` (block indices are 1-based).
    pub fn layer(&self, layer: NervLayer) -> Result<NervBlockData<'_>> {
        let blocks = self.layers.len() - 1;
        let (slot, downstream) = match layer {
            NervLayer::Head => (blocks, 0),
            NervLayer::Block { index, .. } if (1..=blocks).contains(&index) => {
                (index - 1, blocks - index)
            }
            NervLayer::Block { index, .. } => {
                return Err(XincError::InvalidArgument(format!(
                    "this NeRV has no block {index}"
                )))
            }
        };
        let l = &self.layers[slot];
        Ok(NervBlockData {
            input: &l.input,
            in_channels: l.in_channels,
            height: l.height,
            width: l.width,
            weight: &l.weight,
            bias: &l.bias,
            scale: l.scale,
            downstream,
        })
    }

    /// The input-channel range of `layer`: all of them, or `only` when it fits.
    pub fn inputs(&self, layer: NervLayer, only: Option<Range<usize>>) -> Result<Range<usize>> {
        let cin = self.layer(layer)?.in_channels;
        match only {
            None => Ok(0..cin),
            Some(r) if r.start < r.end && r.end <= cin => Ok(r),
            Some(r) => Err(XincError::InvalidArgument(format!(
                "input channels {r:?} outside 0..{cin} of {layer}"
            ))),
        }
    }
}

/// Per-layer reductions of a frame's canvas, streamed kernel by kernel.
pub fn nerv_canvas_summary(
    frame: &NervFrameData,
    layers: &[NervLayer],
    only: Option<Range<usize>>,
) -> Result<CanvasSummary> {
    let summaries = layers
        .iter()
        .map(|&l| nerv_layer_summary(&frame.layer(l)?, l, frame.inputs(l, only.clone())?))
        .collect::<Result<Vec<_>>>()?;
    Ok(CanvasSummary {
        height: frame.height,
        width: frame.width,
        layers: summaries,
        output: frame.output.clone(),
    })
}

/// Writes a frame's full canvas of `layers` to a safetensors file (`[Cin, Cout, h, w]` per layer,
/// plus `output`), a few input channels at a time so that memory stays near `budget` bytes
/// whatever the layer's size (block 1 is 2.4 GB).
pub fn write_nerv_canvas(
    frame: &NervFrameData,
    layers: &[NervLayer],
    only: Option<Range<usize>>,
    path: &std::path::Path,
    budget: usize,
) -> Result<()> {
    let mut specs = Vec::new();
    for &l in layers {
        let data = frame.layer(l)?;
        let (h, w) = data.map_size(l);
        specs.push((
            l.to_string(),
            vec![
                frame.inputs(l, only.clone())?.len(),
                data.out_channels(),
                h,
                w,
            ],
        ));
    }
    let mut writer = CanvasFileWriter::create(path, &specs, 3, frame.height, frame.width)?;
    for (&l, (name, shape)) in layers.iter().zip(&specs) {
        let data = frame.layer(l)?;
        let inputs = frame.inputs(l, only.clone())?;
        let per_input: usize = shape[1..].iter().product();
        let chunk = (budget / (4 * per_input).max(1)).max(1);
        for start in inputs.clone().step_by(chunk) {
            let part = nerv_layer_maps(&data, l, start..(start + chunk).min(inputs.end))?;
            writer.write_at(name, (start - inputs.start) * per_input, &part.data)?;
        }
    }
    writer.write_at("output", 0, &frame.output)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_uses_zero_padding_and_cross_correlation() {
        // x = [[1, 2], [3, 4]]; kernel picks the right neighbour (tap (1, 2)) and the centre.
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut k = [0.0; 9];
        k[5] = 10.0;
        k[4] = 1.0;
        assert_eq!(conv3x3_plane(&x, 2, 2, &k, 0.5), vec![21.5, 2.5, 43.5, 4.5]);
        // All-ones kernel: the 2×2 plane's every 3×3 window holds all four values.
        assert_eq!(conv3x3_plane(&x, 2, 2, &[1.0; 9], 0.0), vec![10.0; 4]);
    }

    #[test]
    fn box3_divides_borders_by_nine() {
        let x = [9.0; 9];
        let b = box3(&x, 3, 3);
        assert_eq!(b[4], 9.0);
        assert!((b[0] - 4.0).abs() < 1e-6 && (b[1] - 6.0).abs() < 1e-6);
    }

    #[test]
    fn up2_and_phase_place_lay_out_pixels() {
        assert_eq!(
            up2(&[1.0, 2.0], 1, 2),
            vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]
        );
        // Phase 3 of s = 2: (dy, dx) = (1, 1).
        let p = phase_place(&[1.0, 2.0], 1, 2, 2, 3);
        assert_eq!(p, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.0]);
        // Phase 6 of s = 4: (dy, dx) = (1, 2).
        let q = phase_place(&[5.0], 1, 1, 4, 6);
        assert_eq!(q.iter().position(|&v| v == 5.0), Some(6));
    }

    #[test]
    fn gelu_matches_reference_values() {
        assert!((f64::from(gelu_erf(1.0)) - 0.841_344_746_1).abs() < 1e-7);
        assert_eq!(gelu_erf(0.0), 0.0);
        assert!((f64::from(gelu_erf(-1.0)) + 0.158_655_253_9).abs() < 1e-7);
        // erf across its branches: erf(0.5), erf(1), erf(2), erf(4).
        for (x, e) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (4.0, 0.999_999_984_582_742_1),
        ] {
            assert!((erf(x) - e).abs() < 1e-15 && (erf(-x) + e).abs() < 1e-15);
        }
    }

    #[test]
    fn layer_names_round_trip() {
        let names: Vec<String> = NervLayer::all(3).iter().map(|l| l.to_string()).collect();
        assert_eq!(
            names,
            [
                "head",
                "block3",
                "block3_pre_gelu",
                "block2",
                "block2_pre_gelu",
                "block1",
                "block1_pre_gelu"
            ]
        );
        for n in &names {
            assert_eq!(&n.parse::<NervLayer>().unwrap().to_string(), n);
        }
        for bad in ["block0", "block", "blockx_pre_gelu", "layer1"] {
            assert!(bad.parse::<NervLayer>().is_err());
        }
    }

    #[test]
    fn summary_matches_full_maps_and_checks_arguments() {
        let input: Vec<f32> = (0..2 * 3 * 4).map(|v| (v as f32 * 0.37).sin()).collect();
        let weight: Vec<f32> = (0..8 * 2 * 9)
            .map(|v| (v as f32 * 0.11).cos() * 0.3)
            .collect();
        let bias: Vec<f32> = (0..8).map(|v| v as f32 * 0.01).collect();
        let data = NervBlockData {
            input: &input,
            in_channels: 2,
            height: 3,
            width: 4,
            weight: &weight,
            bias: &bias,
            scale: 2,
            downstream: 1,
        };
        for layer in [
            NervLayer::Block {
                index: 2,
                pre_gelu: false,
            },
            NervLayer::Block {
                index: 2,
                pre_gelu: true,
            },
        ] {
            let full = nerv_layer_maps(&data, layer, 0..2).unwrap().summarise();
            let streamed = nerv_layer_summary(&data, layer, 0..2).unwrap();
            assert_eq!(full.neuron_shape, streamed.neuron_shape);
            for (a, b) in full.sum_hw.iter().zip(&streamed.sum_hw) {
                assert!((a - b).abs() < 1e-5);
            }
            for (a, b) in full.sum_neurons.iter().zip(&streamed.sum_neurons) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        assert_eq!(
            data.map_size(NervLayer::Block {
                index: 2,
                pre_gelu: false
            }),
            (12, 16)
        );
        assert!(kernel_map(&data, NervLayer::Head, 0, 0).is_err());
        assert!(kernel_map(
            &data,
            NervLayer::Block {
                index: 2,
                pre_gelu: true
            },
            2,
            0
        )
        .is_err());
        assert!(kernel_map(
            &data,
            NervLayer::Block {
                index: 2,
                pre_gelu: true
            },
            0,
            8
        )
        .is_err());
    }
}
