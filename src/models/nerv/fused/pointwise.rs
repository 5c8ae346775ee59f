//! The pointwise parts of the fused NeRV: bias, PixelShuffle and GELU in one pass over a block's
//! conv output (and its adjoint), the stem's rearrangement, OutImg and the pixel losses.

use rayon::prelude::*;

use super::super::gelu::{exp_f32, gelu_and_slope_f32, gelu_f32, gelu_grad_f32, tanh_f32};
use super::super::OutBias;
use crate::tensor::simd_fn;

/// A PixelShuffle block's sizes: the conv output `[c·s², b, h, w]` becomes `[c, b, h·s, w·s]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shuffle {
    pub c: usize,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub s: usize,
}

impl Shuffle {
    fn n(&self) -> usize {
        self.b * self.h * self.w
    }
}

/// Adds the bias to the conv output `z` (`[c·s², b·h·w]`, in place: it keeps the pre-activation,
/// or with `slopes` the GELU's slope there, which is all the backward pass needs) and writes
/// `gelu(PixelShuffle(z))` to `out` (`[c, b, h·s, w·s]`).
pub(super) fn bias_shuffle_gelu(
    z: &mut [f32],
    bias: &[f32],
    g: Shuffle,
    out: &mut [f32],
    slopes: bool,
) {
    let s2n = g.s * g.s * g.n();
    z.par_chunks_mut(s2n)
        .zip(out.par_chunks_mut(s2n))
        .zip(bias.par_chunks(g.s * g.s))
        .for_each(|((rows, plane), bias)| match slopes {
            true => shuffle_gelu_channel::<true>(rows, bias, g, plane),
            false => shuffle_gelu_channel::<false>(rows, bias, g, plane),
        });
}

/// One output channel of [`bias_shuffle_gelu`]: its `s²` conv rows and their biases.
pub(super) fn shuffle_gelu_channel<const SLOPES: bool>(
    rows: &mut [f32],
    bias: &[f32],
    g: Shuffle,
    plane: &mut [f32],
) {
    match g.s {
        1 => shuffle_gelu_strided::<1, SLOPES>(rows, bias, g, plane),
        2 => shuffle_gelu_strided::<2, SLOPES>(rows, bias, g, plane),
        4 => shuffle_gelu_strided::<4, SLOPES>(rows, bias, g, plane),
        _ => shuffle_gelu_strided::<0, SLOPES>(rows, bias, g, plane),
    }
}

simd_fn! {
    /// [`shuffle_gelu_channel`] for a PixelShuffle factor `S` known at compile time (0: any,
    /// read from `g`), so that the interleaving of the `S` rows of an output row vectorises.
    /// With `SLOPES`, the conv rows are left holding the GELU's slope instead of its argument.
    fn shuffle_gelu_strided<const S: usize, const SLOPES: bool>(
        rows: &mut [f32],
        bias: &[f32],
        g: Shuffle,
        plane: &mut [f32],
    ) {
        let s = if S == 0 { g.s } else { S };
        let (n, hw, ws) = (g.n(), g.h * g.w, g.w * s);
        for (row, b) in rows.chunks_mut(n).zip(bias) {
            for v in row.iter_mut() {
                *v += b;
            }
        }
        // act[j]: the GELUs of conv row i·s + j along one image row.
        let mut act = vec![0.0f32; s * g.w];
        for i in 0..s {
            for r in 0..g.b * g.h {
                let (bi, y) = (r / g.h, r % g.h);
                for (j, a) in act.chunks_mut(g.w).enumerate() {
                    let src = &mut rows[(i * s + j) * n + r * g.w..][..g.w];
                    for (a, v) in a.iter_mut().zip(src) {
                        if SLOPES {
                            (*a, *v) = gelu_and_slope_f32(*v);
                        } else {
                            *a = gelu_f32(*v);
                        }
                    }
                }
                let dst = &mut plane[bi * hw * s * s + (y * s + i) * ws..][..ws];
                for (x, d) in dst.chunks_exact_mut(s).enumerate() {
                    for (j, d) in d.iter_mut().enumerate() {
                        *d = act[j * g.w + x];
                    }
                }
            }
        }
    }
}

/// The adjoint of [`bias_shuffle_gelu`]: `dz` (`[c·s², b·h·w]`) from the gradient `da` of its
/// output and the GELU slopes `slopes` that it kept; `db` gets the bias gradient (row sums of
/// `dz`).
pub(super) fn shuffle_gelu_backward(
    da: &[f32],
    slopes: &[f32],
    g: Shuffle,
    dz: &mut [f32],
    db: &mut [f32],
) {
    let s2n = g.s * g.s * g.n();
    dz[..g.c * s2n]
        .par_chunks_mut(s2n)
        .zip(slopes.par_chunks(s2n))
        .zip(db.par_chunks_mut(g.s * g.s))
        .zip(da.par_chunks(s2n))
        .for_each(|(((rows, srows), dbs), plane)| unshuffle_channel(plane, srows, g, rows, dbs));
}

/// One output channel of [`shuffle_gelu_backward`].
fn unshuffle_channel(plane: &[f32], srows: &[f32], g: Shuffle, rows: &mut [f32], dbs: &mut [f32]) {
    match g.s {
        1 => unshuffle_strided::<1>(plane, srows, g, rows, dbs),
        2 => unshuffle_strided::<2>(plane, srows, g, rows, dbs),
        4 => unshuffle_strided::<4>(plane, srows, g, rows, dbs),
        _ => unshuffle_strided::<0>(plane, srows, g, rows, dbs),
    }
}

simd_fn! {
    /// [`unshuffle_channel`] for a factor `S` known at compile time (0: any, read from `g`).
    fn unshuffle_strided<const S: usize>(
        plane: &[f32],
        srows: &[f32],
        g: Shuffle,
        rows: &mut [f32],
        dbs: &mut [f32],
    ) {
        let s = if S == 0 { g.s } else { S };
        let (n, hw, ws) = (g.n(), g.h * g.w, g.w * s);
        for i in 0..s {
            for r in 0..g.b * g.h {
                let (bi, y) = (r / g.h, r % g.h);
                let src = &plane[bi * hw * s * s + (y * s + i) * ws..][..ws];
                for j in 0..s {
                    let at = (i * s + j) * n + r * g.w;
                    let (dst, slope) = (&mut rows[at..at + g.w], &srows[at..at + g.w]);
                    for ((d, &k), v) in dst.iter_mut().zip(slope).zip(src.chunks_exact(s)) {
                        *d = v[j] * k;
                    }
                }
            }
        }
        for (q, row) in rows.chunks(n).enumerate() {
            dbs[q] = sum(row) as f32;
        }
    }
}

/// The stem: adds the bias to `z` (`[S, b]`, in place: it keeps the pre-activation) and writes
/// `gelu(z)` rearranged to block 1's input `[c, b, q]`, `q = fc_h·fc_w` (stem channel `c·q + p`
/// is pixel p of channel c).
pub(super) fn stem_gelu(z: &mut [f32], bias: &[f32], (b, q): (usize, usize), out: &mut [f32]) {
    for (k, row) in z.chunks_mut(b).enumerate() {
        row.iter_mut().for_each(|v| *v += bias[k]);
    }
    for (k, row) in z.chunks(b).enumerate() {
        let (c, p) = (k / q, k % q);
        for (bi, &v) in row.iter().enumerate() {
            out[(c * b + bi) * q + p] = gelu_f32(v);
        }
    }
}

/// The adjoint of [`stem_gelu`]: `dz` (`[S, b]`) and the bias gradient `db` from the gradient
/// `dx` of block 1's input.
pub(super) fn stem_gelu_backward(
    dx: &[f32],
    z: &[f32],
    (b, q): (usize, usize),
    dz: &mut [f32],
    db: &mut [f32],
) {
    for (k, (row, zrow)) in dz.chunks_mut(b).zip(z.chunks(b)).enumerate() {
        let (c, p) = (k / q, k % q);
        for (bi, (d, &v)) in row.iter_mut().zip(zrow).enumerate() {
            *d = dx[(c * b + bi) * q + p] * gelu_grad_f32(v);
        }
        db[k] = row.iter().sum();
    }
}

/// OutImg of the head output `y`, into `out`.
pub(super) fn out_img(y: &[f32], bias: OutBias, out: &mut [f32]) {
    out.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(o, y)| out_img_chunk(y, bias, o));
}

simd_fn! {
    fn out_img_chunk(y: &[f32], bias: OutBias, o: &mut [f32]) {
        for (o, &y) in o.iter_mut().zip(y) {
            *o = match bias {
                OutBias::Tanh => tanh_f32(y) * 0.5 + 0.5,
                OutBias::Sigmoid => 1.0 / (1.0 + exp_f32(-y)),
                OutBias::Offset(b) => y + b as f32,
            };
        }
    }
}

/// The slope of OutImg at the output value `out`.
#[inline(always)]
fn out_img_slope(bias: OutBias, out: f32) -> f32 {
    match bias {
        // out = tanh(y)/2 + 1/2: d/dy = (1 − tanh²)/2 with tanh = 2·out − 1.
        OutBias::Tanh => {
            let t = 2.0 * out - 1.0;
            0.5 * (1.0 - t * t)
        }
        OutBias::Sigmoid => out * (1.0 - out),
        OutBias::Offset(_) => 1.0,
    }
}

/// The pixel loss `l2·mean((out − t)²) + l1·mean(|out − t|)` of the output (`[3, b, H, W]`)
/// against the targets (`[b, 3, H, W]`), and its gradient with respect to the head output,
/// written to `dy` (`[3, b, H, W]`).
pub(super) fn pixel_loss(
    out: &[f32],
    target: &[f32],
    b: usize,
    (l2, l1): (f64, f64),
    bias: OutBias,
    dy: &mut [f32],
) -> f32 {
    let plane = out.len() / 3 / b;
    let scale = 1.0 / out.len() as f64;
    let (g2, g1) = ((2.0 * l2 * scale) as f32, (l1 * scale) as f32);
    let sums: Vec<(f64, f64)> = dy
        .par_chunks_mut(plane)
        .zip(out.par_chunks(plane))
        .enumerate()
        .map(|(k, (d, o))| {
            // Output plane k is channel k / b of image k % b.
            let (ch, bi) = (k / b, k % b);
            let t = &target[(bi * 3 + ch) * plane..][..plane];
            loss_plane(o, t, (g2, g1), bias, d)
        })
        .collect();
    let (sq, ab) = sums
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    ((l2 * sq + l1 * ab) * scale) as f32
}

simd_fn! {
    /// One plane of [`pixel_loss`]: its sums of squared and absolute errors, and its gradient
    /// (`g2·e + g1·sign(e)` through OutImg) written to `d`.
    fn loss_plane(o: &[f32], t: &[f32], g: (f32, f32), bias: OutBias, d: &mut [f32]) -> (f64, f64) {
        let ((g2, g1), (mut sq, mut ab)) = (g, (0.0f64, 0.0f64));
        let mut e = [0.0f32; CHUNK];
        for ((d, o), t) in d.chunks_mut(CHUNK).zip(o.chunks(CHUNK)).zip(t.chunks(CHUNK)) {
            let e = &mut e[..d.len()];
            for ((e, &o), &t) in e.iter_mut().zip(o).zip(t) {
                *e = o - t;
            }
            for ((d, &o), &e) in d.iter_mut().zip(o).zip(e.iter()) {
                let sign = e.signum() * f32::from(e != 0.0);
                *d = g2.mul_add(e, g1 * sign) * out_img_slope(bias, o);
            }
            ab += lanes(e, |v| v.abs());
            sq += lanes(e, |v| v * v);
        }
        (sq, ab)
    }
}

/// Values per partial sum of [`sum`]: summed in f32 lanes, then added in f64.
const CHUNK: usize = 1024;

/// `Σ v` in f64, from f32 sums of 32 lanes over chunks of [`CHUNK`] (vectorised).
#[inline(always)]
pub(super) fn sum(v: &[f32]) -> f64 {
    v.chunks(CHUNK).map(|c| lanes(c, |x| x)).sum()
}

/// `Σ f(v)` over at most a few thousand values, in 32 f32 lanes, returned in f64.
#[inline(always)]
fn lanes(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0.0f32; 32];
    let chunks = v.chunks_exact(32);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for l in 0..32 {
            acc[l] += f(c[l]);
        }
    }
    acc.iter().map(|&a| f64::from(a)).sum::<f64>() + f64::from(tail)
}
