//! The fused NeRV canvas: each kernel's map is computed from low-resolution planes and expanded
//! to full resolution one row at a time, so the full-size map exists only when it is asked for.
//!
//! Every official map is a chain of GELUs and linear steps on the kernel's conv plane `P`
//! (spec A.7–A.10). Two facts make it cheap:
//! - GELU(0) = 0, so GELU commutes with the PixelShuffle placement and with nearest ×2
//!   upsampling: each GELU runs on the smallest plane that holds the values, never on zeros;
//! - the last step, `box3 ∘ place` or `box3 ∘ up2`, is linear and separable: a full-resolution
//!   row is a short weighted sum of horizontally expanded low-resolution rows
//!   ([`Expansion::for_each_row`]). Sums over input channels are taken before it, on the
//!   low-resolution plane, and expanded once per output channel.
//!
//! [`super::reference`] holds the literal step-by-step version; tests check the two agree.

use super::layer::{NervBlockData, NervLayer};
use crate::models::nerv::gelu::gelu_slice;
use crate::tensor::simd_fn;

/// The last, linear step that turns a kernel's final low-resolution plane (`[h, w]`) into its
/// full-resolution map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expansion {
    /// The plane is the map (head maps).
    Identity,
    /// PixelShuffle placement, factor `s`, phase (`dy`, `dx`): `out[s·y+dy][s·x+dx] = g[y][x]`,
    /// zero elsewhere (pre-GELU maps).
    Place { s: usize, dy: usize, dx: usize },
    /// `box3(place(g))`: the 3×3 mean (zero padding 1) of the placed plane.
    BoxPlace { s: usize, dy: usize, dx: usize },
    /// `box3(up2(g))`: the 3×3 mean of the nearest-neighbour ×2 upsampled plane.
    BoxUp2,
}

/// Reusable buffers of one worker: the low-resolution planes and the expansion's rows.
#[derive(Default)]
pub(super) struct Workspace {
    plane: Vec<f32>,
    next: Vec<f32>,
    rows: Vec<f32>,
    row: Vec<f32>,
}

impl Expansion {
    /// The phase expansion of conv output channel `k` for PixelShuffle factor `s`.
    fn phase(s: usize, k: usize, boxed: bool) -> Self {
        let (dy, dx) = ((k % (s * s)) / s, k % s);
        if boxed {
            Expansion::BoxPlace { s, dy, dx }
        } else {
            Expansion::Place { s, dy, dx }
        }
    }

    /// The full-resolution size of an `[h, w]` plane.
    pub(super) fn out_size(self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Expansion::Identity => (h, w),
            Expansion::Place { s, .. } | Expansion::BoxPlace { s, .. } => (h * s, w * s),
            Expansion::BoxUp2 => (2 * h, 2 * w),
        }
    }

    /// Calls `emit(row)` for every full-resolution row of the expansion of `g` (`[h, w]`), top
    /// to bottom. `rows` and `row` are scratch buffers.
    #[inline]
    pub(super) fn for_each_row(
        self,
        g: &[f32],
        (h, w): (usize, usize),
        rows: &mut Vec<f32>,
        row: &mut Vec<f32>,
        mut emit: impl FnMut(&[f32]),
    ) {
        let (oh, ow) = self.out_size(h, w);
        row.clear();
        row.resize(ow, 0.0);
        match self {
            Expansion::Identity => g.chunks_exact(w).for_each(emit),
            Expansion::Place { s, dy, dx } => {
                for y in 0..oh {
                    row.fill(0.0);
                    if y % s == dy {
                        for (x, &v) in g[(y / s) * w..][..w].iter().enumerate() {
                            row[s * x + dx] = v;
                        }
                    }
                    emit(row);
                }
            }
            Expansion::BoxPlace { s, dy, dx } => {
                horizontal_box_place(g, (h, w), s, dx, rows);
                for y in 0..oh {
                    row.fill(0.0);
                    for yy in y.saturating_sub(1)..(y + 2).min(oh) {
                        if yy % s == dy {
                            add_row(row, &rows[(yy / s) * ow..][..ow], 1.0);
                        }
                    }
                    scale_row(row, NINTH);
                    emit(row);
                }
            }
            Expansion::BoxUp2 => {
                horizontal_box_up2(g, (h, w), rows);
                let r = |y: usize| &rows[y * ow..][..ow];
                for y in 0..oh {
                    // Rows 2y−1, 2y, 2y+1 of up2 are low rows (y−1, y, y) for an even output
                    // row and (y, y, y+1) for an odd one.
                    let (lo, hi) = (y / 2, y / 2);
                    let (a, b) = if y % 2 == 0 {
                        (lo.checked_sub(1), lo)
                    } else {
                        (Some(hi + 1).filter(|&n| n < h), hi)
                    };
                    match a {
                        Some(a) => {
                            for ((o, &vb), &va) in row.iter_mut().zip(r(b)).zip(r(a)) {
                                *o = (2.0 * vb + va) * NINTH;
                            }
                        }
                        None => {
                            for (o, &vb) in row.iter_mut().zip(r(b)) {
                                *o = (2.0 * vb) * NINTH;
                            }
                        }
                    }
                    emit(row);
                }
            }
        }
    }

    /// Writes the full-resolution expansion of `g` into `out` (`out_size` pixels); `rows` and
    /// `row` are scratch buffers as in [`Self::for_each_row`].
    #[inline]
    pub(super) fn expand_into(
        self,
        g: &[f32],
        hw: (usize, usize),
        (rows, row): (&mut Vec<f32>, &mut Vec<f32>),
        out: &mut [f32],
    ) {
        let mut at = 0;
        self.for_each_row(g, hw, rows, row, |r| {
            out[at..at + r.len()].copy_from_slice(r);
            at += r.len();
        });
    }
}

impl Expansion {
    /// The (sum, absolute sum) of the expansion of `g`: per full-resolution row, the row's sums
    /// in eight f32 lanes ([`row_sums`]), added in f64. The box expansions compute each row's
    /// values from their one or two source rows on the fly instead of writing the row: the
    /// same values in the same lanes, so the result is bit-identical to reducing the map. A
    /// placement only adds zeros, so its sums are the plane's.
    #[inline]
    pub(super) fn sums(
        self,
        g: &[f32],
        (h, w): (usize, usize),
        rows: &mut Vec<f32>,
        row: &mut Vec<f32>,
    ) -> (f64, f64) {
        let (oh, ow) = self.out_size(h, w);
        let mut total = (0.0, 0.0);
        let mut add = |(s, a): (f64, f64)| total = (total.0 + s, total.1 + a);
        match self {
            Expansion::BoxPlace { s, dy, dx } if s >= 2 => {
                horizontal_box_place(g, (h, w), s, dx, rows);
                for y in 0..oh {
                    let mut src = (y.saturating_sub(1)..(y + 2).min(oh))
                        .filter(|yy| yy % s == dy)
                        .map(|yy| &rows[(yy / s) * ow..][..ow]);
                    match (src.next(), src.next()) {
                        (Some(a), Some(b)) => add(lane_sums(a, b, |a, b| (a + b) * NINTH)),
                        (Some(a), None) => add(lane_sums(a, a, |a, _| a * NINTH)),
                        _ => add((0.0, 0.0)),
                    }
                }
            }
            Expansion::BoxUp2 => {
                horizontal_box_up2(g, (h, w), rows);
                let r = |y: usize| &rows[y * ow..][..ow];
                for y in 0..oh {
                    let b = r(y / 2);
                    let a = if y % 2 == 0 {
                        (y / 2).checked_sub(1)
                    } else {
                        Some(y / 2 + 1).filter(|&n| n < h)
                    };
                    match a {
                        Some(a) => add(lane_sums(b, r(a), |vb, va| (2.0 * vb + va) * NINTH)),
                        None => add(lane_sums(b, b, |vb, _| (2.0 * vb) * NINTH)),
                    }
                }
            }
            // A placed map holds the plane's values and zeros: reduce the plane (the same
            // values, summed in other lanes, so equal up to rounding).
            Expansion::Place { .. } | Expansion::Identity => {
                g.chunks_exact(w).for_each(|r| add(row_sums(r)))
            }
            _ => self.for_each_row(g, (h, w), rows, row, |r| add(row_sums(r))),
        }
        total
    }
}

/// The 3×3 mean's factor.
const NINTH: f32 = 1.0 / 9.0;

/// [`row_sums`] of the row `f(a[x], b[x])`, without writing it.
#[inline(always)]
fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> (f64, f64) {
    let (mut s, mut ab) = ([0.0f32; 8], [0.0f32; 8]);
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..8 {
            let v = f(x[j], y[j]);
            s[j] += v;
            ab[j] += v.abs();
        }
    }
    let lanes = |l: [f32; 8]| l.iter().map(|&v| f64::from(v)).sum::<f64>();
    let t = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold((0.0, 0.0), |(s, a), (&x, &y)| {
            let v = f(x, y);
            (s + f64::from(v), a + f64::from(v.abs()))
        });
    (lanes(s) + t.0, lanes(ab) + t.1)
}

/// `dst += c · src`.
#[inline]
fn add_row(dst: &mut [f32], src: &[f32], c: f32) {
    dst.iter_mut().zip(src).for_each(|(d, &v)| *d += c * v);
}

#[inline]
fn scale_row(dst: &mut [f32], c: f32) {
    dst.iter_mut().for_each(|d| *d *= c);
}

/// The horizontal 3-tap sums of each placed low row: `rows[y][X]` = Σ of `g[y][x]` over the
/// lattice columns `s·x + dx` within one pixel of X (`[h, w·s]`).
#[inline]
fn horizontal_box_place(
    g: &[f32],
    (h, w): (usize, usize),
    s: usize,
    dx: usize,
    rows: &mut Vec<f32>,
) {
    horizontal_box(g, (h, w), s, rows, |src, wide| {
        wide.fill(0.0);
        for (x, &v) in src.iter().enumerate() {
            wide[s * x + dx] = v;
        }
    });
}

/// The horizontal 3-tap sums of each upsampled low row: `rows[y][2x] = g[y][x−1] + 2·g[y][x]`,
/// `rows[y][2x+1] = 2·g[y][x] + g[y][x+1]`, zero outside (`[h, 2w]`).
#[inline]
fn horizontal_box_up2(g: &[f32], (h, w): (usize, usize), rows: &mut Vec<f32>) {
    horizontal_box(g, (h, w), 2, rows, |src, wide| {
        for (pair, &v) in wide.chunks_exact_mut(2).zip(src) {
            pair.fill(v);
        }
    });
}

/// For each low row of `g`: `widen` writes it at `factor`× width, then the 3-tap sum (zero
/// padded) of that wide row goes into `rows` (`[h, w·factor]`). Contiguous slice adds, so the
/// compiler vectorises them.
#[inline]
fn horizontal_box(
    g: &[f32],
    (h, w): (usize, usize),
    factor: usize,
    rows: &mut Vec<f32>,
    widen: impl Fn(&[f32], &mut [f32]),
) {
    let ow = w * factor;
    rows.clear();
    rows.resize(h * ow, 0.0);
    let mut wide = vec![0.0f32; ow + 2];
    for (src, dst) in g.chunks_exact(w).zip(rows.chunks_exact_mut(ow)) {
        widen(src, &mut wide[1..=ow]);
        for ((d, (&a, &b)), &c) in dst
            .iter_mut()
            .zip(wide.iter().zip(&wide[1..]))
            .zip(&wide[2..])
        {
            *d = a + b + c;
        }
    }
}

/// The (sum, absolute sum) of a row, in eight f32 lanes (AVX2 when the CPU has it; the same
/// operations either way), returned in f64.
pub(super) fn row_sums(row: &[f32]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { row_sums_avx2(row) };
    }
    row_sums_portable(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_sums_avx2(row: &[f32]) -> (f64, f64) {
    row_sums_portable(row)
}

#[inline(always)]
fn row_sums_portable(row: &[f32]) -> (f64, f64) {
    let (mut s, mut a) = ([0.0f32; 8], [0.0f32; 8]);
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        let c: &[f32; 8] = c.try_into().expect("chunks of 8");
        for j in 0..8 {
            s[j] += c[j];
            a[j] += c[j].abs();
        }
    }
    let lanes = |l: [f32; 8]| l.iter().map(|&v| f64::from(v)).sum::<f64>();
    let t = tail.iter().fold((0.0, 0.0), |(s, a), &v| {
        (s + f64::from(v), a + f64::from(v.abs()))
    });
    (lanes(s) + t.0, lanes(a) + t.1)
}

impl NervBlockData<'_> {
    /// Kernel (i, k)'s last low-resolution plane for `layer`, its size, and the expansion that
    /// turns it into the map. Runs the GELU chain of a block's maps on the smallest planes:
    /// `GELU(P)`, then, per downstream block, the expansion so far and a GELU.
    #[inline]
    pub(super) fn final_plane(
        &self,
        layer: NervLayer,
        i: usize,
        k: usize,
        ws: &mut Workspace,
    ) -> ((usize, usize), Expansion) {
        let (h, w, s) = (self.height, self.width, self.scale);
        ws.plane = self.plane(i, k);
        match layer {
            NervLayer::Head => ((h, w), Expansion::Identity),
            NervLayer::Block { pre_gelu: true, .. } => ((h, w), Expansion::phase(s, k, false)),
            _ => {
                gelu_slice(&mut ws.plane);
                let (mut hw, mut step) = ((h, w), Expansion::phase(s, k, true));
                for _ in 0..self.downstream {
                    let Workspace {
                        plane,
                        next,
                        rows,
                        row,
                    } = ws;
                    next.clear();
                    step.for_each_row(plane, hw, rows, row, |r| next.extend_from_slice(r));
                    gelu_slice(next);
                    std::mem::swap(plane, next);
                    hw = step.out_size(hw.0, hw.1);
                    step = Expansion::BoxUp2;
                }
                (hw, step)
            }
        }
    }
}

simd_fn! {
    /// Kernel (i, k)'s full map of `layer`, written into `out` (the map's size).
    pub(super) fn fused_kernel_map_into(
        data: &NervBlockData,
        layer: NervLayer,
        i: usize,
        k: usize,
        out: &mut [f32],
    ) {
        let mut ws = Workspace::default();
        let (hw, step) = data.final_plane(layer, i, k, &mut ws);
        step.expand_into(&ws.plane, hw, (&mut ws.rows, &mut ws.row), out);
    }
}

/// Kernel (i, k)'s full map of `layer`.
#[cfg(test)]
fn fused_kernel_map(data: &NervBlockData, layer: NervLayer, i: usize, k: usize) -> Vec<f32> {
    let (h, w) = data.map_size(layer);
    let mut out = vec![0.0; h * w];
    fused_kernel_map_into(data, layer, i, k, &mut out);
    out
}

simd_fn! {
    /// Streams the maps of output channel `k` over `inputs`: writes their per-pixel sum into `dst`
    /// and returns each map's (sum, absolute sum) over the pixels. The per-pixel sum is taken on the
    /// low-resolution planes (in f64) and expanded once.
    pub(super) fn output_channel_sums(
        data: &NervBlockData,
        layer: NervLayer,
        inputs: std::ops::Range<usize>,
        k: usize,
        dst: &mut [f32],
    ) -> Vec<(f64, f64)> {
        let mut ws = Workspace::default();
        let mut acc: Vec<f64> = Vec::new();
        let mut last = ((0, 0), Expansion::Identity);
        // Plain loops, not iterator adaptors: a `map(..).collect()` here was left un-inlined by
        // LLVM, which compiled this whole body outside the AVX2 context (SSE only, measured).
        let mut sums = Vec::with_capacity(inputs.len());
        for i in inputs {
            last = data.final_plane(layer, i, k, &mut ws);
            let (hw, step) = last;
            let g = &ws.plane;
            acc.resize(g.len(), 0.0);
            for (a, &v) in acc.iter_mut().zip(g) {
                *a += f64::from(v);
            }
            sums.push(step.sums(g, hw, &mut ws.rows, &mut ws.row));
        }
        let (hw, step) = last;
        if !acc.is_empty() {
            let total: Vec<f32> = acc.iter().map(|&v| v as f32).collect();
            step.expand_into(&total, hw, (&mut ws.rows, &mut ws.row), dst);
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::reference_kernel_map;
    use super::*;
    use proptest::prelude::*;

    fn block(
        cin: usize,
        (h, w): (usize, usize),
        s: usize,
        cout: usize,
        seed: u32,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let wave = |n: usize, f: f32| -> Vec<f32> {
            (0..n)
                .map(|v| ((v as f32 + seed as f32) * f).sin() * 1.7)
                .collect()
        };
        (
            wave(cin * h * w, 0.37),
            wave(cout * s * s * cin * 9, 0.11),
            wave(cout * s * s, 0.53),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn fused_maps_equal_the_step_by_step_reference(
            h in 1usize..6, w in 1usize..7, s in 1usize..5, downstream in 0usize..3,
            seed in 0u32..1000,
        ) {
            let (input, weight, bias) = block(2, (h, w), s, 2, seed);
            let data = NervBlockData {
                input: &input, in_channels: 2, height: h, width: w,
                weight: &weight, bias: &bias, scale: s, downstream,
            };
            let mut layers = vec![
                NervLayer::Block { index: 1, pre_gelu: false },
                NervLayer::Block { index: 1, pre_gelu: true },
            ];
            if s == 1 && downstream == 0 {
                layers.push(NervLayer::Head);
            }
            for layer in layers {
                for (i, k) in [(0, 0), (1, data.out_channels() - 1), (1, s * s / 2)] {
                    let fused = fused_kernel_map(&data, layer, i, k);
                    let reference = reference_kernel_map(&data, layer, i, k);
                    prop_assert_eq!(fused.len(), reference.len());
                    for (a, b) in fused.iter().zip(&reference) {
                        prop_assert!((a - b).abs() <= 2e-6 * (1.0 + b.abs()),
                            "{layer} ({i},{k}): {a} vs {b}");
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn streamed_sums_equal_the_sums_of_the_written_rows(
            h in 1usize..7, w in 1usize..21, s in 1usize..5, phase in 0usize..16, seed in 0u32..1000,
        ) {
            let g: Vec<f32> = (0..h * w).map(|v| ((v as u32 + seed) as f32 * 0.61).sin()).collect();
            let (dy, dx) = ((phase % (s * s)) / s, phase % s);
            for step in [
                Expansion::BoxPlace { s, dy, dx },
                Expansion::Place { s, dy, dx },
                Expansion::BoxUp2,
                Expansion::Identity,
            ] {
                let (mut rows, mut row) = (Vec::new(), Vec::new());
                let mut written = (0.0, 0.0);
                step.for_each_row(&g, (h, w), &mut rows, &mut row, |r| {
                    let (s, a) = row_sums(r);
                    written = (written.0 + s, written.1 + a);
                });
                let streamed = step.sums(&g, (h, w), &mut rows, &mut row);
                if matches!(step, Expansion::Place { .. }) {
                    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                    prop_assert!(close(streamed.0, written.0) && close(streamed.1, written.1));
                } else {
                    prop_assert_eq!(streamed, written, "{:?}", step);
                }
            }
        }
    }

    #[test]
    fn row_sums_cover_the_tail() {
        let row: Vec<f32> = (0..19).map(|v| v as f32 - 9.5).collect();
        let (s, a) = row_sums(&row);
        assert_eq!(s, row.iter().map(|&v| f64::from(v)).sum::<f64>());
        assert_eq!(a, 90.5);
    }
}
