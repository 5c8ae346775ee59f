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
//! The reductions ([`output_channel_sums`]) never write a map: a map's (sum, absolute sum) comes
//! from one pass over its last plane, where each plane value stands for the few map values it
//! makes (`box3 ∘ place` with s = 2: [`box_place2_sums`]; `box3 ∘ up2`: [`box_up2_sums`]), or
//! from its rows computed on the fly. A block's output and pre-GELU layers share each kernel's
//! conv plane when asked for together.
//!
//! [`super::reference`] holds the literal step-by-step version; tests check the two agree.

use std::mem::MaybeUninit;

use super::layer::{NervBlockData, NervLayer};
use crate::models::nerv::gelu::gelu_slice;
use crate::tensor::{simd_fn, stream_copy, stream_fence};

/// The last, linear step that turns a kernel's final low-resolution plane (`[h, w]`) into its
/// full-resolution map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Expansion {
    /// The plane is the map (head maps).
    #[default]
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
    #[inline(always)]
    pub(super) fn for_each_row(
        self,
        g: &[f32],
        (h, w): (usize, usize),
        rows: &mut Vec<f32>,
        row: &mut Vec<f32>,
        mut emit: impl FnMut(&[f32]),
    ) {
        if self == Expansion::Identity {
            return g.chunks_exact(w).for_each(emit);
        }
        let (oh, ow) = self.out_size(h, w);
        self.prepare(g, (h, w), rows);
        row.resize(ow, 0.0);
        for y in 0..oh {
            self.row_into(y, g, (h, w), rows, &mut row[..ow]);
            emit(&row[..ow]);
        }
    }

    /// Writes the full-resolution expansion of `g` into `out` (`out_size` pixels), row by row
    /// in place; `rows` is a scratch buffer as in [`Self::for_each_row`].
    #[inline(always)]
    pub(super) fn expand_into(
        self,
        g: &[f32],
        (h, w): (usize, usize),
        rows: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let ow = self.out_size(h, w).1;
        self.prepare(g, (h, w), rows);
        for (y, dst) in out.chunks_exact_mut(ow).enumerate() {
            self.row_into(y, g, (h, w), rows, dst);
        }
    }

    /// [`Self::expand_into`] into memory not written yet: writes every value of `out`, which
    /// must hold exactly the expansion's pixels, with [`stream_copy`] (the caller fences).
    /// `rows` and `row` are scratch buffers.
    #[inline(always)]
    pub(super) fn expand_into_uninit(
        self,
        g: &[f32],
        (h, w): (usize, usize),
        rows: &mut Vec<f32>,
        row: &mut Vec<f32>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let (oh, ow) = self.out_size(h, w);
        assert_eq!(
            out.len(),
            oh * ow,
            "an expansion's output of the wrong size"
        );
        let mut dst = out.chunks_exact_mut(ow);
        self.for_each_row(g, (h, w), rows, row, |r| {
            stream_copy(dst.next().expect("one output row per emitted row"), r);
        });
        assert!(dst.next().is_none(), "every output row emitted");
    }

    /// The horizontally expanded low rows of the box expansions, into `rows` (`[h, ow]`).
    #[inline(always)]
    fn prepare(self, g: &[f32], hw: (usize, usize), rows: &mut Vec<f32>) {
        match self {
            Expansion::BoxPlace { s, dx, .. } => horizontal_box_place(g, hw, s, dx, rows),
            Expansion::BoxUp2 => horizontal_box_up2(g, hw, rows),
            Expansion::Identity | Expansion::Place { .. } => {}
        }
    }

    /// Full-resolution row `y` of the expansion into `dst`, from `g` and the rows of
    /// [`Self::prepare`].
    #[inline(always)]
    fn row_into(self, y: usize, g: &[f32], (h, w): (usize, usize), rows: &[f32], dst: &mut [f32]) {
        let (oh, ow) = self.out_size(h, w);
        let r = |y: usize| &rows[y * ow..][..ow];
        match self {
            Expansion::Identity => dst.copy_from_slice(&g[y * w..][..w]),
            // s = 2 as interleaved pairs, which vectorise (the strided writes did not).
            Expansion::Place { s: 2, dy, dx } => {
                let pairs = dst.chunks_exact_mut(2);
                if y % 2 != dy {
                    dst.fill(0.0);
                } else if dx == 0 {
                    for (p, &v) in pairs.zip(&g[(y / 2) * w..][..w]) {
                        p.copy_from_slice(&[v, 0.0]);
                    }
                } else {
                    for (p, &v) in pairs.zip(&g[(y / 2) * w..][..w]) {
                        p.copy_from_slice(&[0.0, v]);
                    }
                }
            }
            Expansion::Place { s, dy, dx } => {
                dst.fill(0.0);
                if y % s == dy {
                    for (x, &v) in g[(y / s) * w..][..w].iter().enumerate() {
                        dst[s * x + dx] = v;
                    }
                }
            }
            Expansion::BoxPlace { s, dy, .. } => {
                // The placed rows among y − 1, y, y + 1: one or two (three when s = 1).
                let mut src = (y.saturating_sub(1)..(y + 2).min(oh))
                    .filter(|yy| yy % s == dy)
                    .map(|yy| r(yy / s));
                match (src.next(), src.next(), src.next()) {
                    (Some(a), Some(b), Some(c)) => {
                        for (((o, &a), &b), &c) in dst.iter_mut().zip(a).zip(b).zip(c) {
                            *o = (a + b + c) * NINTH;
                        }
                    }
                    (Some(a), Some(b), None) => {
                        for ((o, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                            *o = (a + b) * NINTH;
                        }
                    }
                    (Some(a), None, _) => {
                        for (o, &a) in dst.iter_mut().zip(a) {
                            *o = a * NINTH;
                        }
                    }
                    (None, ..) => dst.fill(0.0),
                }
            }
            Expansion::BoxUp2 => {
                let (b, a) = up2_sources(y, h);
                match a {
                    Some(a) => {
                        for ((o, &vb), &va) in dst.iter_mut().zip(r(b)).zip(r(a)) {
                            *o = (2.0 * vb + va) * NINTH;
                        }
                    }
                    None => {
                        for (o, &vb) in dst.iter_mut().zip(r(b)) {
                            *o = (2.0 * vb) * NINTH;
                        }
                    }
                }
            }
        }
    }
}

impl Expansion {
    /// The (sum, absolute sum) of the expansion of `g`, without writing it: the map's values,
    /// computed from the plane, go through a [`LaneAcc`].
    /// - `BoxPlace` with s = 2 sums the plane's singles, pairs and 2×2 blocks, the values the
    ///   map is made of ([`box_place2_sums`]); with s ≥ 3 every map value is one plane value
    ///   over 9, or zero ([`box_place_sparse_sums`]);
    /// - `BoxUp2` sums the four map values each plane value stands for ([`box_up2_sums`]);
    /// - a placement only adds zeros, so its sums are the plane's.
    ///
    /// The box expansions factor their 1/9 out, so the sums equal the sums of the written map
    /// up to rounding.
    #[inline(always)]
    pub(super) fn sums(
        self,
        g: &[f32],
        (h, w): (usize, usize),
        rows: &mut Vec<f32>,
        row: &mut Vec<f32>,
    ) -> (f64, f64) {
        let mut acc = LaneAcc::default();
        match self {
            Expansion::BoxPlace { s: 2, dy, dx } => {
                return box_place2_sums(g, (h, w), (dy, dx), rows);
            }
            Expansion::BoxPlace { s, dy, dx } if s >= 3 => {
                return box_place_sparse_sums(g, (h, w), s, (dy, dx));
            }
            Expansion::BoxUp2 => return box_up2_sums(g, (h, w), rows),
            // The plane as one row (a `for_each` over its rows was compiled outside the AVX2
            // context, SSE only: measured).
            Expansion::Place { .. } | Expansion::Identity => acc.add(g, g, |v, _| v),
            Expansion::BoxPlace { .. } => {
                self.for_each_row(g, (h, w), rows, row, |r| acc.add(r, r, |v, _| v))
            }
        }
        acc.total()
    }
}

/// The low rows of full-resolution row `y` of `box3(up2(·))` over an h-row plane: rows 2y−1,
/// 2y, 2y+1 of up2 are low rows (y−1, y, y) for an even output row and (y, y, y+1) for an odd
/// one, so `(the doubled row, the other row if inside)`.
#[inline(always)]
fn up2_sources(y: usize, h: usize) -> (usize, Option<usize>) {
    let b = y / 2;
    match y % 2 {
        0 => (b, b.checked_sub(1)),
        _ => (b, Some(b + 1).filter(|&n| n < h)),
    }
}

/// `(s, a) / 9`, for the box expansions, whose 1/9 is factored out of their sums.
fn ninths((s, a): (f64, f64)) -> (f64, f64) {
    (s / 9.0, a / 9.0)
}

/// The (sum, absolute sum) of `box3(place(g))` for s = 2, phase (`dy`, `dx`), from the plane
/// `g` (`[h, w]`), without writing the map. A 3-wide window of the placed plane holds one
/// lattice column (at a lattice column) or two (between two), so along x a map column is a
/// plane column or the sum of two neighbouring ones, where the border column's far neighbour
/// is outside (zero): with the row padded by one zero on the border's side, each plane value
/// `a` and its neighbour `b` give the map columns `a` and `a + b`. Rows alike, with neighbour
/// row `c`, `d`: each plane value stands for the four map values `a`, `a + b`, `a + c`,
/// `a + b + c + d`, summed in one pass over the plane. The signed sum is linear in the plane:
/// each value counts 3 × 3 times except in the one row and column without a far neighbour
/// (2 times). `rows` is scratch.
#[inline(always)]
fn box_place2_sums(
    g: &[f32],
    (h, w): (usize, usize),
    (dy, dx): (usize, usize),
    rows: &mut Vec<f32>,
) -> (f64, f64) {
    let n = w + 1;
    let (ring, zero) = grown(rows, 3 * n).split_at_mut(2 * n);
    zero.fill(0.0);
    let (mut cur, mut nb) = ring.split_at_mut(n);
    // The row and column that count twice, not three times.
    let (y2, x2) = (
        if dy == 0 { 0 } else { h - 1 },
        if dx == 0 { 0 } else { w - 1 },
    );
    let (mut acc, mut corner) = (LaneAcc::default(), 0.0f64);
    // The neighbour row comes before (dy = 1) or after (dy = 0): visit rows in that order.
    for t in 0..h {
        let y = if dy == 0 { h - 1 - t } else { t };
        let r = &g[y * w..][..w];
        cur[dx..dx + w].copy_from_slice(r);
        cur[w * (1 - dx)] = 0.0;
        let other: &[f32] = if t == 0 { zero } else { nb };
        let times = if y == y2 { 2.0 } else { 3.0 };
        corner += f64::from(times * r[x2]);
        let (a, b) = (&cur[dx..][..w], &cur[1 - dx..][..w]);
        let (c, d) = (&other[dx..][..w], &other[1 - dx..][..w]);
        acc.add_rows([a, b, c, d], |[a, b, c, d]| {
            let (ab, ac) = (a + b, a + c);
            let abcd = ab + (c + d);
            (times * a, (a.abs() + ab.abs()) + (ac.abs() + abcd.abs()))
        });
        std::mem::swap(&mut cur, &mut nb);
    }
    let (weighted, abs) = acc.total();
    ninths((3.0 * weighted - corner, abs))
}

/// The (sum, absolute sum) of `box3(up2(g))` from the plane `g` (`[h, w]`), without writing
/// the map. Along x, up2 then the 3-tap sum make map column 2x `e = g[x−1] + 2·g[x]` and
/// column 2x + 1 `o = 2·g[x] + g[x+1]` (zero outside); along y the same of those rows: map rows
/// 2y and 2y + 1 are `2·r[y] + r[y−1]` and `2·r[y] + r[y+1]`. So each plane value stands for
/// four map values, from the `e`, `o` of its row and of its two neighbour rows, kept in a ring
/// of three. Signed: Σ_x (e + o) weighs a row as the map's columns do, and row y counts 6
/// times, less one per missing neighbour row. `rows` is scratch.
#[inline(always)]
fn box_up2_sums(g: &[f32], (h, w): (usize, usize), rows: &mut Vec<f32>) -> (f64, f64) {
    let n = 2 * w;
    let (ring, zero) = grown(rows, 4 * n).split_at_mut(3 * n);
    zero.fill(0.0);
    let widen = |y: usize, ring: &mut [f32]| {
        let r = &g[y * w..][..w];
        let (e, o) = ring[y % 3 * n..][..n].split_at_mut(w);
        e[0] = r[0] + r[0];
        for ((d, &a), &b) in e[1..].iter_mut().zip(&r[1..]).zip(r) {
            *d = (a + a) + b;
        }
        for ((d, &a), &b) in o.iter_mut().zip(r).zip(&r[1..]) {
            *d = (a + a) + b;
        }
        o[w - 1] = r[w - 1] + r[w - 1];
    };
    widen(0, ring);
    let mut acc = LaneAcc::default();
    for y in 0..h {
        if y + 1 < h {
            widen(y + 1, ring);
        }
        let slot = |j: usize| ring[j % 3 * n..][..n].split_at(w);
        let zeros = zero.split_at(w);
        let (e, o) = slot(y);
        let (eu, ou) = if y > 0 { slot(y - 1) } else { zeros };
        let (ed, od) = if y + 1 < h { slot(y + 1) } else { zeros };
        let times = (6 - usize::from(y == 0) - usize::from(y + 1 == h)) as f32;
        acc.add_rows([e, o, eu, ou, ed, od], |[e, o, eu, ou, ed, od]| {
            let (e2, o2) = (e + e, o + o);
            let up = (e2 + eu).abs() + (o2 + ou).abs();
            (times * (e + o), up + ((e2 + ed).abs() + (o2 + od).abs()))
        });
    }
    ninths(acc.total())
}

/// The (sum, absolute sum) of `box3(place(g))` for s ≥ 3: a 3-wide window holds at most one
/// lattice column, so every map value is a plane value over 9 or zero, and plane value (y, x)
/// appears at the pixels of its 3×3 window that lie in the map.
fn box_place_sparse_sums(
    g: &[f32],
    (h, w): (usize, usize),
    s: usize,
    (dy, dx): (usize, usize),
) -> (f64, f64) {
    // How many of the positions s·i + d − 1, s·i + d, s·i + d + 1 lie in [0, s·n).
    let count = |i: usize, d: usize, n: usize| {
        let c = s * i + d;
        (c.saturating_sub(1)..(c + 2).min(s * n)).count() as f64
    };
    let mut total = (0.0, 0.0);
    for (y, r) in g.chunks_exact(w).enumerate() {
        let ny = count(y, dy, h);
        for (x, &v) in r.iter().enumerate() {
            let n = ny * count(x, dx, w);
            total = (total.0 + n * f64::from(v), total.1 + n * f64::from(v.abs()));
        }
    }
    ninths(total)
}

/// The 3×3 mean's factor.
const NINTH: f32 = 1.0 / 9.0;

/// The f32 lanes of [`LaneAcc`]: four AVX2 vectors, so that four independent add chains hide
/// the adds' latency (one 8-lane chain was latency-bound).
const LANES: usize = 32;

/// A running (sum, absolute sum). Each row's values are summed in [`LANES`] f32 lanes, which
/// are then added lane by lane into f64 lanes, so that no row ends in a serial reduction; a
/// row's tail (its last `len % LANES` values) goes into f64 directly.
#[derive(Clone, Copy)]
pub(super) struct LaneAcc {
    sum: [f64; LANES],
    abs: [f64; LANES],
    tail: (f64, f64),
}

impl Default for LaneAcc {
    fn default() -> Self {
        LaneAcc {
            sum: [0.0; LANES],
            abs: [0.0; LANES],
            tail: (0.0, 0.0),
        }
    }
}

impl LaneAcc {
    /// Adds the row `f(a[x], b[x])` without writing it.
    #[inline(always)]
    pub(super) fn add(&mut self, a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
        self.add_rows([a, b], |[a, b]| {
            let v = f(a, b);
            (v, v.abs())
        });
    }

    /// Adds `f` of the rows' values at each x, a (value, absolute value) pair, without writing
    /// it. The rows have the first row's length or more.
    #[inline(always)]
    pub(super) fn add_rows<const N: usize>(
        &mut self,
        rows: [&[f32]; N],
        f: impl Fn([f32; N]) -> (f32, f32),
    ) {
        let n = rows[0].len();
        let rows = rows.map(|r| &r[..n]);
        let (mut s, mut ab) = ([0.0f32; LANES], [0.0f32; LANES]);
        let full = n - n % LANES;
        for x0 in (0..full).step_by(LANES) {
            let chunks: [&[f32; LANES]; N] = rows.map(|r| r[x0..x0 + LANES].try_into().unwrap());
            for j in 0..LANES {
                let (v, a) = f(chunks.map(|c| c[j]));
                s[j] += v;
                ab[j] += a;
            }
        }
        for j in 0..LANES {
            self.sum[j] += f64::from(s[j]);
            self.abs[j] += f64::from(ab[j]);
        }
        for x in full..n {
            let (v, a) = f(rows.map(|r| r[x]));
            self.tail = (self.tail.0 + f64::from(v), self.tail.1 + f64::from(a));
        }
    }

    /// The (sum, absolute sum) so far.
    pub(super) fn total(&self) -> (f64, f64) {
        let lanes = |l: &[f64; LANES]| l.iter().sum::<f64>();
        (
            lanes(&self.sum) + self.tail.0,
            lanes(&self.abs) + self.tail.1,
        )
    }
}

/// The horizontal 3-tap sums of each placed low row: `rows[y][X]` = Σ of `g[y][x]` over the
/// lattice columns `s·x + dx` within one pixel of X (`[h, w·s]`). For s = 2, a lattice column
/// holds its value and a column between two the sum of both (one at the border), written
/// directly.
#[inline(always)]
fn horizontal_box_place(
    g: &[f32],
    (h, w): (usize, usize),
    s: usize,
    dx: usize,
    rows: &mut Vec<f32>,
) {
    if s != 2 {
        return horizontal_box(g, (h, w), s, rows, |src, wide| {
            wide.fill(0.0);
            for (x, &v) in src.iter().enumerate() {
                wide[s * x + dx] = v;
            }
        });
    }
    for (r, dst) in g
        .chunks_exact(w)
        .zip(grown(rows, h * 2 * w).chunks_exact_mut(2 * w))
    {
        if dx == 0 {
            // [g0, g0 + g1, g1, g1 + g2, …, g_{w−1}, g_{w−1}]
            let (pairs, last) = dst.split_at_mut(2 * w - 2);
            for ((o, &a), &b) in pairs.chunks_exact_mut(2).zip(r).zip(&r[1..]) {
                o[0] = a;
                o[1] = a + b;
            }
            last.fill(r[w - 1]);
        } else {
            // [g0, g0, g0 + g1, g1, …, g_{w−2} + g_{w−1}, g_{w−1}]
            let (first, pairs) = dst.split_at_mut(2);
            first.fill(r[0]);
            for ((o, &a), &b) in pairs.chunks_exact_mut(2).zip(r).zip(&r[1..]) {
                o[0] = a + b;
                o[1] = b;
            }
        }
    }
}

/// The horizontal 3-tap sums of each upsampled low row: `rows[y][2x] = g[y][x−1] + 2·g[y][x]`,
/// `rows[y][2x+1] = 2·g[y][x] + g[y][x+1]`, zero outside (`[h, 2w]`), summed left to right as
/// the 3-tap sum of the upsampled row.
#[inline(always)]
fn horizontal_box_up2(g: &[f32], (h, w): (usize, usize), rows: &mut Vec<f32>) {
    for (r, dst) in g
        .chunks_exact(w)
        .zip(grown(rows, h * 2 * w).chunks_exact_mut(2 * w))
    {
        let x0 = r[0];
        dst[0] = x0 + x0;
        dst[2 * w - 1] = r[w - 1] + r[w - 1];
        // Column 2x + 1 for x < w − 1, and column 2x + 2 for x + 1 < w.
        let inner = &mut dst[1..2 * w - 1];
        for ((o, &a), &b) in inner.chunks_exact_mut(2).zip(r).zip(&r[1..]) {
            o[0] = (a + a) + b;
            o[1] = (a + b) + b;
        }
    }
}

/// The first `n` values of `buf`, grown (never shrunk) to hold them: a scratch buffer that is
/// written before it is read, so that buffers of several sizes do not refill each other.
#[inline(always)]
fn grown(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// For each low row of `g`: `widen` writes it at `factor`× width, then the 3-tap sum (zero
/// padded) of that wide row goes into `rows` (`[h, w·factor]`). Contiguous slice adds, so the
/// compiler vectorises them.
#[inline(always)]
fn horizontal_box(
    g: &[f32],
    (h, w): (usize, usize),
    factor: usize,
    rows: &mut Vec<f32>,
    widen: impl Fn(&[f32], &mut [f32]),
) {
    let ow = w * factor;
    let mut wide = vec![0.0f32; ow + 2];
    for (src, dst) in g
        .chunks_exact(w)
        .zip(grown(rows, h * ow).chunks_exact_mut(ow))
    {
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

impl NervBlockData<'_> {
    /// Kernel (i, k)'s last low-resolution plane for `layer` (in `ws.plane`), its size, and the
    /// expansion that turns it into the map: its conv plane, then [`Self::chain`].
    #[inline(always)]
    pub(super) fn final_plane(
        &self,
        layer: NervLayer,
        i: usize,
        k: usize,
        ws: &mut Workspace,
    ) -> ((usize, usize), Expansion) {
        self.plane_into(i, k, &mut ws.plane);
        self.chain(layer, k, ws)
    }

    /// The expansion of the conv plane's own resolution for a kernel of output channel `k`:
    /// none for the head, the PixelShuffle placement of the channel's phase for the pre-GELU
    /// maps, that placement's box for the block output (the last one for the last block).
    fn first_step(&self, layer: NervLayer, k: usize) -> Expansion {
        match layer {
            NervLayer::Head => Expansion::Identity,
            NervLayer::Block { pre_gelu, .. } => Expansion::phase(self.scale, k, !pre_gelu),
            NervLayer::PerChannel(_) => unreachable!("no official kernel maps: checked before"),
        }
    }

    /// Turns the conv plane of a kernel of output channel `k` (in `ws.plane`) into the last
    /// low-resolution plane of `layer`, in place, and says its size and last expansion. Runs
    /// the GELU chain of a block's maps on the smallest planes: `GELU(P)`, then, per downstream
    /// block, the expansion so far and a GELU. The head and pre-GELU maps keep the plane.
    #[inline(always)]
    fn chain(&self, layer: NervLayer, k: usize, ws: &mut Workspace) -> ((usize, usize), Expansion) {
        let (mut hw, mut step) = ((self.height, self.width), self.first_step(layer, k));
        match layer {
            NervLayer::Head | NervLayer::Block { pre_gelu: true, .. } => (hw, step),
            _ => {
                gelu_slice(&mut ws.plane);
                for _ in 0..self.downstream {
                    let Workspace {
                        plane, next, rows, ..
                    } = ws;
                    let (oh, ow) = step.out_size(hw.0, hw.1);
                    next.resize(oh * ow, 0.0);
                    step.expand_into(plane, hw, rows, next);
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
        step.expand_into(&ws.plane, hw, &mut ws.rows, out);
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

/// Whether `layer`'s maps come from the conv plane as it is ([`NervBlockData::chain`] leaves
/// the plane alone): the head and the pre-GELU maps.
fn keeps_plane(layer: NervLayer) -> bool {
    matches!(
        layer,
        NervLayer::Head | NervLayer::Block { pre_gelu: true, .. }
    )
}

/// Kernels whose last planes are summed in f32 before the sum goes into the f64 per-pixel sums.
const F32_GROUP: usize = 8;

/// One layer's running reductions over the kernels of one output channel: the per-pixel sum
/// of the last low-resolution planes (f64, fed by f32 sums of up to [`F32_GROUP`] planes), each
/// map's (sum, absolute sum), and the last plane's size and expansion.
#[derive(Default)]
struct ChannelSums {
    acc: Vec<f64>,
    group: Vec<f32>,
    grouped: usize,
    maps: Vec<(f64, f64)>,
    last: ((usize, usize), Expansion),
}

impl ChannelSums {
    /// Adds a kernel's last plane to the per-pixel sums.
    #[inline(always)]
    fn add_plane(&mut self, g: &[f32]) {
        if self.grouped == 0 {
            self.group.clear();
            self.group.extend_from_slice(g);
        } else {
            for (s, &v) in self.group.iter_mut().zip(g) {
                *s += v;
            }
        }
        self.grouped += 1;
        if self.grouped == F32_GROUP {
            self.flush();
        }
    }

    /// Adds the group's f32 sum into the f64 sums.
    #[inline(always)]
    fn flush(&mut self) {
        if self.grouped > 0 {
            self.acc.resize(self.group.len(), 0.0);
            for (a, &v) in self.acc.iter_mut().zip(&self.group) {
                *a += f64::from(v);
            }
            self.grouped = 0;
        }
    }
}

simd_fn! {
    /// Streams the maps of output channel `k` over `inputs` for each of `layers` (layers of the
    /// one block data, e.g. a block's output and its pre-GELU maps: each kernel's conv plane is
    /// computed once for all of them). For layer n, writes the maps' per-pixel sum into
    /// `dsts[n]` (every value of it: the memory may be fresh) and returns each map's (sum,
    /// absolute sum) over the pixels. The per-pixel sum is taken on the low-resolution planes
    /// (in f64) and expanded once.
    pub(super) fn output_channel_sums(
        data: &NervBlockData,
        layers: &[NervLayer],
        inputs: std::ops::Range<usize>,
        k: usize,
        dsts: &mut [&mut [MaybeUninit<f32>]],
    ) -> Vec<Vec<(f64, f64)>> {
        let mut ws = Workspace::default();
        let mut conv = Vec::new();
        let mut per = Vec::with_capacity(layers.len());
        for _ in layers {
            per.push(ChannelSums::default());
        }
        // Plain loops, not iterator adaptors: a `map(..).collect()` here was left un-inlined by
        // LLVM, which compiled this whole body outside the AVX2 context (SSE only, measured).
        let chains = layers.iter().filter(|&&l| !keeps_plane(l)).count();
        for i in inputs {
            data.plane_into(i, k, &mut conv);
            // The layers that keep the conv plane read it first; then each GELU chain runs on a
            // copy, the last one on the plane itself.
            let mut left = chains;
            for chained in [false, true] {
                for (&layer, c) in layers.iter().zip(&mut per) {
                    if keeps_plane(layer) == chained {
                        continue;
                    }
                    let g = if chained {
                        left -= 1;
                        if left == 0 {
                            std::mem::swap(&mut ws.plane, &mut conv);
                        } else {
                            ws.plane.clone_from(&conv);
                        }
                        c.last = data.chain(layer, k, &mut ws);
                        &ws.plane
                    } else {
                        c.last = data.chain(layer, k, &mut ws);
                        &conv
                    };
                    let (hw, step) = c.last;
                    c.add_plane(g);
                    c.maps.push(step.sums(g, hw, &mut ws.rows, &mut ws.row));
                }
            }
        }
        let mut out = Vec::with_capacity(layers.len());
        for (mut c, dst) in per.into_iter().zip(dsts.iter_mut()) {
            c.flush();
            let (hw, step) = c.last;
            if c.acc.is_empty() {
                // No inputs: the sum over none.
                dst.iter_mut().for_each(|d| {
                    d.write(0.0);
                });
            } else {
                let total: Vec<f32> = c.acc.iter().map(|&v| v as f32).collect();
                step.expand_into_uninit(&total, hw, &mut ws.rows, &mut ws.row, dst);
            }
            out.push(c.maps);
        }
        stream_fence();
        out
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
            h in 1usize..7, w in 1usize..41, s in 1usize..5, phase in 0usize..16, seed in 0u32..1000,
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
                let mut written = (0.0f64, 0.0f64);
                step.for_each_row(&g, (h, w), &mut rows, &mut row, |r| {
                    for &v in r {
                        written = (written.0 + f64::from(v), written.1 + f64::from(v.abs()));
                    }
                });
                let streamed = step.sums(&g, (h, w), &mut rows, &mut row);
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
                prop_assert!(
                    close(streamed.0, written.0) && close(streamed.1, written.1),
                    "{:?}: {:?} vs {:?}", step, streamed, written
                );
            }
        }
    }

    #[test]
    fn lane_sums_cover_the_lanes_and_the_tail() {
        // 70 values: two chunks of 32 lanes and a tail of 6; exact in f32 and f64.
        let row: Vec<f32> = (0..70).map(|v| v as f32 - 40.0).collect();
        let mut acc = LaneAcc::default();
        acc.add(&row, &row, |v, _| v);
        acc.add(&row[..3], &row[1..4], |a, b| a * b);
        // Σ (v − 40) over 0..70 = −385; Σ |v − 40| = 820 + 435 = 1255; (−40)(−39) + (−39)(−38)
        // + (−38)(−37) = 1560 + 1482 + 1406 = 4448.
        assert_eq!(acc.total(), (-385.0 + 4448.0, 1255.0 + 4448.0));
    }
}
