//! The convolutions of the fused NeRV over `[C, B, H, W]` buffers: im2col and its adjoint
//! col2im (a block's conv is then one GEMM each way), and a direct 3×3 conv for the head, whose
//! three output channels make a GEMM wasteful (its im2col would be 50 MB per batch of two).
//!
//! The hot loops are compiled for AVX2 and FMA where the CPU has them ([`simd_fn`]) and use
//! `mul_add`, which is correctly rounded everywhere: the results are the same on every machine.

use std::ops::Range;

use rayon::prelude::*;

use crate::tensor::simd_fn;

/// The shape of a conv's input: `c` channels of `b` images of `h`×`w`, a `k`×`k` kernel with
/// padding `(k − 1)/2` (k odd: the output has the input's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConvShape {
    pub c: usize,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
}

impl ConvShape {
    /// Pixels per image.
    pub fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Columns of the im2col matrix: every pixel of every image.
    pub fn n(&self) -> usize {
        self.b * self.hw()
    }

    /// The shift of tap `t` (0..k) from the centre.
    fn shift(&self, t: usize) -> isize {
        t as isize - (self.k / 2) as isize
    }
}

/// The part `[lo, hi)` of an output row of `len` pixels whose source `x + d` is inside the row.
fn valid(len: usize, d: isize) -> (usize, usize) {
    let lo = (-d).max(0) as usize;
    let hi = (len as isize - d).clamp(0, len as isize) as usize;
    (lo.min(hi), hi)
}

/// The im2col matrix `[c·k·k, b·h·w]` of `x` (`[c, b, h, w]`): row `(ci·k + ky)·k + kx`, column
/// `(bi·h + y)·w + x` holds `x[ci, bi, y + ky − p, x + kx − p]`, zero outside the image.
pub(super) fn im2col(x: &[f32], s: ConvShape, cols: &mut [f32]) {
    let (kk, n, hw) = (s.k * s.k, s.n(), s.hw());
    cols[..s.c * kk * n]
        .par_chunks_mut(kk * n)
        .zip(x.par_chunks(n))
        .for_each(|(rows, plane)| {
            for (t, row) in rows.chunks_mut(n).enumerate() {
                for (bi, img) in row.chunks_mut(hw).enumerate() {
                    tap_rows(plane, s, t, (bi, 0..s.h), img);
                }
            }
        });
}

/// The columns of [`im2col`] for rows `ys` of image `bi` only, `[c·k·k, |ys|·w]` (serial: a
/// band of rows for one task).
pub(super) fn im2col_band(x: &[f32], s: ConvShape, bi: usize, ys: Range<usize>, cols: &mut [f32]) {
    let (kk, n, len) = (s.k * s.k, s.n(), ys.len() * s.w);
    for (r, row) in cols[..s.c * kk * len].chunks_mut(len).enumerate() {
        tap_rows(&x[r / kk * n..][..n], s, r % kk, (bi, ys.clone()), row);
    }
}

/// Tap `t`'s im2col row of one channel `plane` (`[b, h, w]`) over rows `ys` of image `bi`.
fn tap_rows(
    plane: &[f32],
    s: ConvShape,
    t: usize,
    (bi, ys): (usize, Range<usize>),
    out: &mut [f32],
) {
    let (dy, dx) = (s.shift(t / s.k), s.shift(t % s.k));
    let (x0, x1) = valid(s.w, dx);
    for (y, out) in ys.zip(out.chunks_mut(s.w)) {
        let yy = y as isize + dy;
        if yy < 0 || yy >= s.h as isize {
            out.fill(0.0);
            continue;
        }
        let src = &plane[bi * s.hw() + yy as usize * s.w..][..s.w];
        out[..x0].fill(0.0);
        out[x1..].fill(0.0);
        let from = (x0 as isize + dx) as usize;
        out[x0..x1].copy_from_slice(&src[from..from + (x1 - x0)]);
    }
}

/// The adjoint of [`im2col`]: `dx` (`[c, b, h, w]`, overwritten) from the gradient of the
/// im2col matrix.
pub(super) fn col2im(dcols: &[f32], s: ConvShape, dx: &mut [f32]) {
    let (kk, n) = (s.k * s.k, s.n());
    dx[..s.c * n]
        .par_chunks_mut(n)
        .zip(dcols.par_chunks(kk * n))
        .for_each(|(plane, rows)| col2im_plane(rows, s, plane));
}

simd_fn! {
    /// One input channel of [`col2im`].
    fn col2im_plane(rows: &[f32], s: ConvShape, plane: &mut [f32]) {
        let (n, hw) = (s.n(), s.hw());
        plane.fill(0.0);
        for (t, row) in rows.chunks(n).enumerate() {
            let (dy, dx) = (s.shift(t / s.k), s.shift(t % s.k));
            let (x0, x1) = valid(s.w, dx);
            for bi in 0..s.b {
                for y in 0..s.h {
                    let yy = y as isize + dy;
                    if yy < 0 || yy >= s.h as isize {
                        continue;
                    }
                    let g = &row[bi * hw + y * s.w..][x0..x1];
                    let from = (x0 as isize + dx) as usize;
                    let dst = &mut plane[bi * hw + yy as usize * s.w..][from..from + g.len()];
                    add_to(dst, g, 1.0);
                }
            }
        }
    }
}

/// Pixels per register block of the direct convs.
const LANES: usize = 16;

/// Input channels per pass of [`direct_backward_input`].
const GROUP: usize = 4;

/// `dst += a·src`.
#[inline(always)]
fn add_to(dst: &mut [f32], src: &[f32], a: f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = a.mul_add(s, *d);
    }
}

/// A direct conv to `O` output channels: `y[oi, bi] = bias[oi] + Σ w[oi, ci, ky, kx]·x[ci, bi]`
/// shifted, `y` `[O, b, h, w]`. Parallel over output rows.
pub(super) fn direct_forward<const O: usize>(
    x: &[f32],
    s: ConvShape,
    w: &[f32],
    bias: &[f32],
    y: &mut [f32],
) {
    assert!(x.len() >= s.c * s.n() && y.len() >= O * s.n() && w.len() >= O * s.c * s.k * s.k);
    let out = SyncPtr(y.as_mut_ptr());
    (0..s.b * s.h)
        .into_par_iter()
        .for_each(|r| forward_row::<O>(x, s, w, bias, r, out));
}

simd_fn! {
    /// Row `r` (= image·h + row) of every output channel of [`direct_forward`]: each block of
    /// 16 pixels keeps its `O` sums in registers over every input channel and tap.
    fn forward_row<const O: usize>(
        x: &[f32],
        s: ConvShape,
        w: &[f32],
        bias: &[f32],
        r: usize,
        out: SyncPtr,
    ) {
        let (hw, n, kk) = (s.hw(), s.n(), s.k * s.k);
        let (bi, yo) = (r / s.h, r % s.h);
        // The taps that reach a row inside the image: (input row offset, tap index).
        let taps: Vec<(usize, usize)> = (0..kk)
            .filter_map(|t| {
                let yy = yo as isize + s.shift(t / s.k);
                (0..s.h as isize).contains(&yy).then(|| (bi * hw + yy as usize * s.w, t))
            })
            .collect();
        let mut sums = [[0.0f32; LANES]; O];
        let mut x0 = 0;
        while x0 < s.w {
            let len = LANES.min(s.w - x0);
            for (oi, acc) in sums.iter_mut().enumerate() {
                *acc = [bias[oi]; LANES];
            }
            for ci in 0..s.c {
                let plane = &x[ci * n..(ci + 1) * n];
                for &(row, t) in &taps {
                    let src = &plane[row..row + s.w];
                    let ws: [f32; O] = std::array::from_fn(|oi| w[(oi * s.c + ci) * kk + t]);
                    fma_block(&mut sums, &ws, src, x0 as isize + s.shift(t % s.k), len);
                }
            }
            for (oi, acc) in sums.iter().enumerate() {
                // SAFETY: in bounds (asserted by the caller); each task writes only row r of
                // each output channel, so no two tasks touch the same values.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(out.get().add(oi * n + bi * hw + yo * s.w + x0), len)
                };
                dst.copy_from_slice(&acc[..len]);
            }
            x0 += len;
        }
    }
}

/// The input gradient of [`direct_forward`]: `dx` (`[c, b, h, w]`, overwritten) from `dy`
/// (`[O, b, h, w]`). Parallel over input rows.
pub(super) fn direct_backward_input<const O: usize>(
    dy: &[f32],
    s: ConvShape,
    w: &[f32],
    dx: &mut [f32],
) {
    assert!(dx.len() >= s.c * s.n() && dy.len() >= O * s.n() && w.len() >= O * s.c * s.k * s.k);
    let out = SyncPtr(dx.as_mut_ptr());
    (0..s.b * s.h)
        .into_par_iter()
        .for_each(|r| backward_input_row::<O>(dy, s, w, r, out));
}

simd_fn! {
    /// Row `r` of every input channel of [`direct_backward_input`]: each block of 16 pixels
    /// sums every output channel and tap in registers.
    fn backward_input_row<const O: usize>(dy: &[f32], s: ConvShape, w: &[f32], r: usize, out: SyncPtr) {
        let (hw, n, kk) = (s.hw(), s.n(), s.k * s.k);
        let (bi, yi) = (r / s.h, r % s.h);
        // Output row yo took input row yi = yo + dy through tap t.
        let taps: Vec<(usize, usize)> = (0..kk)
            .filter_map(|t| {
                let yo = yi as isize - s.shift(t / s.k);
                (0..s.h as isize).contains(&yo).then(|| (bi * hw + yo as usize * s.w, t))
            })
            .collect();
        // Four input channels at a time: four independent sums per loaded block.
        for c0 in (0..s.c).step_by(GROUP) {
            let cg = GROUP.min(s.c - c0);
            let mut x0 = 0;
            while x0 < s.w {
                let len = LANES.min(s.w - x0);
                let mut acc = [[0.0f32; LANES]; GROUP];
                for oi in 0..O {
                    let plane = &dy[oi * n..(oi + 1) * n];
                    for &(row, t) in &taps {
                        let g = &plane[row..row + s.w];
                        let wt: [f32; GROUP] = std::array::from_fn(|j| match j < cg {
                            true => w[(oi * s.c + c0 + j) * kk + t],
                            false => 0.0,
                        });
                        // Input pixel xi took output pixel xi − dx.
                        fma_block(&mut acc, &wt, g, x0 as isize - s.shift(t % s.k), len);
                    }
                }
                for (j, a) in acc.iter().enumerate().take(cg) {
                    // SAFETY: in bounds (asserted by the caller); each task writes only row r
                    // of each input channel, so no two tasks touch the same values.
                    let dst = unsafe {
                        let at = (c0 + j) * n + bi * hw + yi * s.w + x0;
                        std::slice::from_raw_parts_mut(out.get().add(at), len)
                    };
                    dst.copy_from_slice(&a[..len]);
                }
                x0 += len;
            }
        }
    }
}

/// The weight and bias gradients of [`direct_forward`] (overwritten), from `dy` and the input
/// `x`. Parallel over input channels.
pub(super) fn direct_backward_weights(
    dy: &[f32],
    x: &[f32],
    s: ConvShape,
    o: usize,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let (n, kk) = (s.n(), s.k * s.k);
    // Per input channel: its o·k·k weights, in an [o][ci][t] layout gathered afterwards.
    let per_channel: Vec<Vec<f64>> = (0..s.c)
        .into_par_iter()
        .map(|ci| channel_weight_grads(dy, x, s, o, ci))
        .collect();
    for oi in 0..o {
        for (ci, g) in per_channel.iter().enumerate() {
            for t in 0..kk {
                dw[(oi * s.c + ci) * kk + t] = g[oi * kk + t] as f32;
            }
        }
        db[oi] = super::pointwise::sum(&dy[oi * n..(oi + 1) * n]) as f32;
    }
}

simd_fn! {
    /// The weight gradients of input channel `ci` in [`direct_backward_weights`], `[o][tap]`.
    fn channel_weight_grads(dy: &[f32], x: &[f32], s: ConvShape, o: usize, ci: usize) -> Vec<f64> {
        let (hw, n, kk) = (s.hw(), s.n(), s.k * s.k);
        // Row by row, every output channel and tap: the rows read stay in the L1 cache. Each
        // tap's sum still runs over (image, row) in order.
        let mut g = vec![0.0f64; o * kk];
        for bi in 0..s.b {
            for yo in 0..s.h {
                for t in 0..kk {
                    let (dy_, dx_) = (s.shift(t / s.k), s.shift(t % s.k));
                    let yy = yo as isize + dy_;
                    if yy < 0 || yy >= s.h as isize {
                        continue;
                    }
                    let (x0, x1) = valid(s.w, dx_);
                    let from = (x0 as isize + dx_) as usize;
                    let b = &x[ci * n + bi * hw + yy as usize * s.w..][from..][..x1 - x0];
                    for oi in 0..o {
                        let a = &dy[oi * n + bi * hw + yo * s.w..][x0..x1];
                        g[oi * kk + t] += f64::from(dot(a, b));
                    }
                }
            }
        }
        g
    }
}

/// `acc[j][l] += weights[j] · row[from + l]` for the `len` pixels of one block of a row, the
/// values outside the row (the zero padding) skipped: a full block inside the row in vector
/// form, a block at an edge or the row's tail pixel by pixel.
#[inline(always)]
fn fma_block<const M: usize>(
    acc: &mut [[f32; LANES]; M],
    weights: &[f32; M],
    row: &[f32],
    from: isize,
    len: usize,
) {
    if len == LANES && from >= 0 && from as usize + LANES <= row.len() {
        let v: &[f32; LANES] = row[from as usize..][..LANES].try_into().unwrap();
        for j in 0..M {
            for l in 0..LANES {
                acc[j][l] = weights[j].mul_add(v[l], acc[j][l]);
            }
        }
    } else {
        for l in 0..len {
            let x = from + l as isize;
            if (0..row.len() as isize).contains(&x) {
                for j in 0..M {
                    acc[j][l] = weights[j].mul_add(row[x as usize], acc[j][l]);
                }
            }
        }
    }
}

/// `Σ a·b` in 32 lanes (four independent vector sums; the order is fixed).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: f32 = (ca.remainder().iter().zip(cb.remainder()))
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..32 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A raw pointer that rayon tasks may share; each task writes a range no other task touches.
#[derive(Clone, Copy)]
pub(super) struct SyncPtr(pub *mut f32);

impl SyncPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: used only to hand disjoint output ranges to parallel tasks (see each use).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of 37 pixels: two full register blocks (one at each edge) and a short tail.
    fn shape() -> ConvShape {
        ConvShape {
            c: 2,
            b: 2,
            h: 4,
            w: 37,
            k: 3,
        }
    }

    fn ramp(n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * scale)
            .collect()
    }

    /// The conv by its definition.
    fn naive(x: &[f32], s: ConvShape, w: &[f32], bias: &[f32]) -> Vec<f32> {
        let (hw, n, p) = (s.hw(), s.n(), (s.k / 2) as isize);
        let mut y = vec![0.0; bias.len() * n];
        for (oi, b) in bias.iter().enumerate() {
            for bi in 0..s.b {
                for yo in 0..s.h {
                    for xo in 0..s.w {
                        let mut v = *b;
                        for ci in 0..s.c {
                            for ky in 0..s.k {
                                for kx in 0..s.k {
                                    let (yy, xx) = (
                                        yo as isize + ky as isize - p,
                                        xo as isize + kx as isize - p,
                                    );
                                    if yy < 0 || xx < 0 || yy >= s.h as isize || xx >= s.w as isize
                                    {
                                        continue;
                                    }
                                    v += w[((oi * s.c + ci) * s.k + ky) * s.k + kx]
                                        * x[ci * n + bi * hw + yy as usize * s.w + xx as usize];
                                }
                            }
                        }
                        y[oi * n + bi * hw + yo * s.w + xo] = v;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn direct_conv_and_im2col_match_the_definition_and_their_adjoints() {
        let s = shape();
        let o = 3;
        let x = ramp(s.c * s.n(), 0.1);
        let w = ramp(o * s.c * 9, 0.05);
        let bias = [0.5, -0.25, 0.125];
        let want = naive(&x, s, &w, &bias);
        let mut y = vec![0.0; o * s.n()];
        direct_forward::<3>(&x, s, &w, &bias, &mut y);
        assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
        // im2col then W·cols is the same conv.
        let mut cols = vec![0.0; s.c * 9 * s.n()];
        im2col(&x, s, &mut cols);
        for oi in 0..o {
            for j in 0..s.n() {
                let v: f32 = (0..s.c * 9)
                    .map(|r| w[oi * s.c * 9 + r] * cols[r * s.n() + j])
                    .sum();
                assert!((v + bias[oi] - want[oi * s.n() + j]).abs() < 1e-5);
            }
        }
        // Adjoints: <im2col(x), g> = <x, col2im(g)>, <conv(x), g> = <x, conv'(g)>.
        let g = ramp(cols.len(), 0.01);
        let mut back = vec![0.0; x.len()];
        col2im(&g, s, &mut back);
        let lhs: f32 = cols.iter().zip(&g).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} {rhs}");
        let dy = ramp(y.len(), 0.02);
        let mut dx = vec![0.0; x.len()];
        direct_backward_input::<3>(&dy, s, &w, &mut dx);
        let no_bias = naive(&x, s, &w, &[0.0; 3]);
        let lhs: f32 = no_bias.iter().zip(&dy).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} {rhs}");
        // Weight gradient: d<conv(x), dy>/dw by linearity in w.
        let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; o]);
        direct_backward_weights(&dy, &x, s, o, &mut dw, &mut db);
        for (i, g) in dw.iter().enumerate() {
            let mut unit = vec![0.0; w.len()];
            unit[i] = 1.0;
            let yi = naive(&x, s, &unit, &[0.0; 3]);
            let want: f32 = yi.iter().zip(&dy).map(|(a, b)| a * b).sum();
            assert!((g - want).abs() < 1e-5, "dw[{i}] {g} {want}");
        }
        for (oi, g) in db.iter().enumerate() {
            let want: f32 = dy[oi * s.n()..(oi + 1) * s.n()].iter().sum();
            assert!((g - want).abs() < 1e-5);
        }
    }
}
