//! Dense optical flow between two RGB frames, for clips that come without flow files (spec B.5,
//! F.3): Gunnar Farnebäck's two-frame motion estimation based on polynomial expansion,
//! computed as OpenCV's `calcOpticalFlowFarneback` computes it (box-filter variant, flags 0).
//!
//! G. Farnebäck, "Two-Frame Motion Estimation Based on Polynomial Expansion", Scandinavian
//! Conference on Image Analysis (SCIA), LNCS 2749, pp. 363–370, 2003.
//!
//! No maintained pure-Rust dense-flow crate exists (the `opencv` crate binds the C++ library,
//! `rustflow` wraps vendored C++ code, `iris-cv` is a 0.0.0 placeholder), so the method is written
//! out here, on the grayscale image
//! `0.299 R + 0.587 G + 0.114 B` scaled to 0..255 (OpenCV's `cvtColor` weights and the 8-bit
//! range its regularisation constant assumes):
//!
//! 1. **Pyramid.** Level `k` has scale `s = pyr_scale^k` (levels stop before a side drops below
//!    32 pixels). Each frame is blurred with a Gaussian of σ = (1/s − 1)/2 (kernel `round(5σ)|1`,
//!    at least 3; the 3-tap `[1, 2, 1]/4` at level 0, reflect-101 borders), then resized
//!    bilinearly (half-pixel centres) to `round(s·H) × round(s·W)`.
//! 2. **Polynomial expansion.** Around every pixel, `f(x) ≈ xᵀAx + bᵀx + c` by least squares
//!    weighted with a Gaussian applicability of σ = `poly_sigma` over taps `−poly_n..=poly_n`
//!    (replicated borders), computed with separable correlations and the inverse Gram matrix.
//! 3. **Displacement.** With the current flow `d`, the expansion of the second frame is sampled
//!    bilinearly at `x + d(x)`; `A = (A₁ + A₂)/2`, `Δb = −(b₂ − b₁)/2 + A·d`. The normal equations
//!    `AᵀA·d = AᵀΔb` are box-averaged over a `win_size`² window (replicated borders) and solved
//!    per pixel (`det + 10⁻³`), `iterations` times per level; pixels within 5 of the border are
//!    down-weighted by OpenCV's factors. The flow of a coarse level, resized and divided by
//!    `pyr_scale`, starts the next.
//!
//! The defaults are the parameters most used with OpenCV (`pyr_scale 0.5, levels 3, winsize 15,
//! iterations 3, poly_n 5, poly_sigma 1.2`). The result is deterministic (no randomness, a fixed
//! summation order) and takes about 0.1 s at 128×256 on one core. It is *not* bit-identical to
//! OpenCV: f64 accumulation throughout; the matrices are updated after each full pass rather
//! than in stripes (the same values up to rounding); and a displaced point on the last row or
//! column is sampled rather than treated as outside (OpenCV's test `x < width − 1` makes even
//! identical frames show flow along the right and bottom borders).
//!
//! The flow is a [`FlowMap::Vector`]: `(u, v)` in pixels, +x right and +y down, located at the
//! pixels of the *first* frame (where each pixel of `prev` moves to in `next`).

use crate::data::flow::FlowMap;
use crate::error::{Result, XincError};

/// Parameters of [`farneback`], named as OpenCV's `calcOpticalFlowFarneback` arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FarnebackParams {
    /// Scale between pyramid levels, in (0, 1).
    pub pyr_scale: f64,
    /// Number of levels below the full resolution (fewer when a side would drop below 32).
    pub levels: usize,
    /// Side of the (odd) averaging window of the normal equations.
    pub win_size: usize,
    /// Iterations per pyramid level.
    pub iterations: usize,
    /// Half-width of the polynomial-expansion neighbourhood (taps `−poly_n..=poly_n`).
    pub poly_n: usize,
    /// σ of the Gaussian applicability of the polynomial expansion.
    pub poly_sigma: f64,
}

impl Default for FarnebackParams {
    fn default() -> Self {
        FarnebackParams {
            pyr_scale: 0.5,
            levels: 3,
            win_size: 15,
            iterations: 3,
            poly_n: 5,
            poly_sigma: 1.2,
        }
    }
}

impl FarnebackParams {
    fn validate(&self) -> Result<()> {
        let bad = |what: String| {
            Err(XincError::InvalidArgument(format!(
                "Farnebäck flow: {what}"
            )))
        };
        if !(self.pyr_scale > 0.0 && self.pyr_scale < 1.0) {
            return bad(format!("pyr_scale {} must lie in (0, 1)", self.pyr_scale));
        }
        if self.win_size % 2 == 0 {
            return bad(format!("win_size {} must be odd", self.win_size));
        }
        if self.iterations == 0 || self.poly_n == 0 {
            return bad("iterations and poly_n must be positive".into());
        }
        if !(self.poly_sigma > 0.0 && self.poly_sigma.is_finite()) {
            return bad(format!("poly_sigma {} must be positive", self.poly_sigma));
        }
        Ok(())
    }
}

/// Smallest side of a pyramid level (OpenCV's `min_size`).
const MIN_LEVEL_SIDE: f64 = 32.0;

/// The dense flow from `prev` to `next`, both planar RGB `[3, H, W]` (values in [0, 1], as
/// [`crate::data::clip::Clip::frame_nerv`] returns them).
pub fn farneback(
    prev: &[f32],
    next: &[f32],
    height: usize,
    width: usize,
    params: &FarnebackParams,
) -> Result<FlowMap> {
    let p = height * width;
    for (name, frame) in [("first", prev), ("second", next)] {
        if p == 0 || frame.len() != 3 * p {
            return Err(XincError::InvalidArgument(format!(
                "Farnebäck flow: the {name} frame has {} values, expected 3·{height}·{width} \
                 (planar RGB, non-empty)",
                frame.len()
            )));
        }
    }
    farneback_gray(&gray(prev, p), &gray(next, p), height, width, params)
}

/// The dense flow between two grayscale images `[H, W]` on the 0..255 scale.
pub fn farneback_gray(
    prev: &[f32],
    next: &[f32],
    height: usize,
    width: usize,
    params: &FarnebackParams,
) -> Result<FlowMap> {
    params.validate()?;
    let p = height * width;
    if p == 0 || prev.len() != p || next.len() != p {
        return Err(XincError::InvalidArgument(format!(
            "Farnebäck flow: images of {} and {} values, expected {height}·{width} (non-empty)",
            prev.len(),
            next.len()
        )));
    }
    let images = [
        Plane::new(height, width, prev.iter().map(|&v| f64::from(v)).collect()),
        Plane::new(height, width, next.iter().map(|&v| f64::from(v)).collect()),
    ];
    let expansion = PolyBasis::new(params.poly_n, params.poly_sigma);
    let mut flow: Option<Flow> = None;
    for k in (0..=pyramid_levels(height, width, params)).rev() {
        let scale = params.pyr_scale.powi(k as i32);
        let (h, w) = (
            (height as f64 * scale).round().max(1.0) as usize,
            (width as f64 * scale).round().max(1.0) as usize,
        );
        let mut d = match flow {
            Some(coarse) => coarse.upsample(h, w, 1.0 / params.pyr_scale),
            None => Flow::zeros(h, w),
        };
        let [r0, r1] = [0, 1].map(|i| expansion.expand(&level_image(&images[i], scale, h, w)));
        let mut m = update_matrices(&r0, &r1, &d);
        for it in 0..params.iterations {
            d = solve_flow(&m, h, w, params.win_size / 2);
            if it + 1 < params.iterations {
                m = update_matrices(&r0, &r1, &d);
            }
        }
        flow = Some(d);
    }
    let flow = flow.expect("level 0 always runs");
    Ok(FlowMap::Vector {
        height,
        width,
        u: flow.u.iter().map(|&v| v as f32).collect(),
        v: flow.v.iter().map(|&v| v as f32).collect(),
    })
}

/// OpenCV's RGB → gray weights, on the 0..255 scale.
fn gray(rgb: &[f32], p: usize) -> Vec<f32> {
    (0..p)
        .map(|i| 255.0 * (0.299 * rgb[i] + 0.587 * rgb[p + i] + 0.114 * rgb[2 * p + i]))
        .collect()
}

/// The coarsest level index: the last `k ≤ levels` whose sides stay at least 32 pixels.
fn pyramid_levels(height: usize, width: usize, params: &FarnebackParams) -> usize {
    let mut scale = 1.0;
    for k in 0..params.levels {
        scale *= params.pyr_scale;
        if (width as f64) * scale < MIN_LEVEL_SIDE || (height as f64) * scale < MIN_LEVEL_SIDE {
            return k;
        }
    }
    params.levels
}

/// A single-channel row-major image in f64.
#[derive(Clone, Debug)]
struct Plane {
    h: usize,
    w: usize,
    data: Vec<f64>,
}

impl Plane {
    fn new(h: usize, w: usize, data: Vec<f64>) -> Self {
        Plane { h, w, data }
    }

    fn at(&self, y: usize, x: usize) -> f64 {
        self.data[y * self.w + x]
    }
}

/// The image of the pyramid level of `scale`: Gaussian pre-blur, then bilinear resize.
fn level_image(img: &Plane, scale: f64, h: usize, w: usize) -> Plane {
    let sigma = (1.0 / scale - 1.0) * 0.5;
    let kernel = gaussian_kernel(sigma);
    let blurred = separable(img, &kernel, reflect101);
    resize_bilinear(&blurred, h, w)
}

/// OpenCV's smoothing kernel for the pyramid: size `round(5σ)|1` (at least 3), and the fixed
/// `[1, 2, 1]/4` when σ is 0.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let size = (((sigma * 5.0).round_ties_even() as usize) | 1).max(3);
    if sigma <= 0.0 {
        return vec![0.25, 0.5, 0.25];
    }
    let c = (size / 2) as f64;
    let g: Vec<f64> = (0..size)
        .map(|i| (-(i as f64 - c).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| v / s).collect()
}

/// Border index rule `gfedcb|abcdefgh|gfedcba` (OpenCV's `BORDER_REFLECT_101`).
fn reflect101(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Border index rule `aaa|abcdefgh|hhh`.
fn replicate(i: isize, n: usize) -> usize {
    i.clamp(0, n as isize - 1) as usize
}

/// Correlation with `kernel` (odd length, centred) along rows, then columns.
fn separable(img: &Plane, kernel: &[f64], border: fn(isize, usize) -> usize) -> Plane {
    let r = (kernel.len() / 2) as isize;
    let (h, w) = (img.h, img.w);
    let mut tmp = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, g)| g * img.at(y, border(x as isize + k as isize - r, w)))
                .sum();
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, g)| g * tmp[border(y as isize + k as isize - r, h) * w + x])
                .sum();
        }
    }
    Plane::new(h, w, out)
}

/// Source index and weight of the upper neighbour for bilinear resampling with half-pixel
/// centres, clamped at the borders (OpenCV `INTER_LINEAR`).
fn linear_tap(dst: usize, in_size: usize, out_size: usize) -> (usize, usize, f64) {
    let real = (dst as f64 + 0.5) * in_size as f64 / out_size as f64 - 0.5;
    let base = real.floor();
    let t = real - base;
    if base < 0.0 {
        (0, 0, 0.0)
    } else if base as usize >= in_size - 1 {
        (in_size - 1, in_size - 1, 0.0)
    } else {
        (base as usize, base as usize + 1, t)
    }
}

/// Bilinear resize (no antialiasing) of a plane to `h × w`.
fn resize_bilinear(img: &Plane, h: usize, w: usize) -> Plane {
    if (img.h, img.w) == (h, w) {
        return img.clone();
    }
    let ys: Vec<_> = (0..h).map(|y| linear_tap(y, img.h, h)).collect();
    let xs: Vec<_> = (0..w).map(|x| linear_tap(x, img.w, w)).collect();
    let mut out = Vec::with_capacity(h * w);
    for &(y0, y1, ty) in &ys {
        for &(x0, x1, tx) in &xs {
            let top = img.at(y0, x0) * (1.0 - tx) + img.at(y0, x1) * tx;
            let bottom = img.at(y1, x0) * (1.0 - tx) + img.at(y1, x1) * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    Plane::new(h, w, out)
}

/// A flow field of one pyramid level.
#[derive(Clone, Debug)]
struct Flow {
    h: usize,
    w: usize,
    u: Vec<f64>,
    v: Vec<f64>,
}

impl Flow {
    fn zeros(h: usize, w: usize) -> Self {
        Flow {
            h,
            w,
            u: vec![0.0; h * w],
            v: vec![0.0; h * w],
        }
    }

    /// Resized bilinearly to `h × w` and multiplied by `gain`.
    fn upsample(&self, h: usize, w: usize, gain: f64) -> Flow {
        let plane = |d: &[f64]| {
            let r = resize_bilinear(&Plane::new(self.h, self.w, d.to_vec()), h, w);
            r.data.into_iter().map(|x| x * gain).collect()
        };
        Flow {
            h,
            w,
            u: plane(&self.u),
            v: plane(&self.v),
        }
    }
}

/// Per-pixel polynomial coefficients `[b_y, b_x, a_yy, a_xx, a_xy]` (OpenCV's channel order;
/// the constant term is not kept).
type Coeffs = Vec<[f64; 5]>;

/// The separable filters and inverse-Gram entries of the polynomial expansion.
struct PolyBasis {
    n: usize,
    /// Gaussian applicability g, x·g and x²·g at taps 0..=n (symmetric).
    g: Vec<f64>,
    xg: Vec<f64>,
    xxg: Vec<f64>,
    /// The entries (1,1), (0,3), (3,3), (5,5) of the inverse Gram matrix of the basis
    /// {1, x, y, x², y², xy} under the applicability.
    ig11: f64,
    ig03: f64,
    ig33: f64,
    ig55: f64,
}

impl PolyBasis {
    fn new(n: usize, sigma: f64) -> Self {
        let raw: Vec<f64> = (0..=n)
            .map(|x| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp())
            .collect();
        let total = raw[0] + 2.0 * raw[1..].iter().sum::<f64>();
        let g: Vec<f64> = raw.iter().map(|v| v / total).collect();
        let xg: Vec<f64> = g.iter().enumerate().map(|(x, v)| x as f64 * v).collect();
        let xxg: Vec<f64> = xg.iter().enumerate().map(|(x, v)| x as f64 * v).collect();
        // Moments of the separable applicability over the square window.
        let taps = || (-(n as isize)..=n as isize).map(|x| (x as f64, g[x.unsigned_abs()]));
        let (mut s0, mut s2, mut s4, mut s22) = (0.0, 0.0, 0.0, 0.0);
        for (y, gy) in taps() {
            for (x, gx) in taps() {
                let wgt = gy * gx;
                s0 += wgt;
                s2 += wgt * x * x;
                s4 += wgt * x.powi(4);
                s22 += wgt * x * x * y * y;
            }
        }
        // The Gram matrix decouples into 1×1 blocks for x, y, xy and a 3×3 block for
        // {1, x², y²} = [[s0, s2, s2], [s2, s4, s22], [s2, s22, s4]], inverted in closed form.
        // Its (x², y²) entry is s2² − s0·s22 = 0 for a separable applicability normalised to
        // s0 = 1, so x² and y² take only their own moment and the constant's.
        let (a, b, c, d) = (s0, s2, s4, s22);
        let det = a * (c * c - d * d) - 2.0 * b * b * (c - d);
        let ig03 = -b * (c - d) / det;
        let ig33 = (a * c - b * b) / det;
        PolyBasis {
            n,
            g,
            xg,
            xxg,
            ig11: 1.0 / s2,
            ig03,
            ig33,
            ig55: 1.0 / s22,
        }
    }

    /// The expansion of every pixel of `img` (replicated borders).
    fn expand(&self, img: &Plane) -> Coeffs {
        let (h, w, n) = (img.h, img.w, self.n as isize);
        // Vertical pass: Σ g·f, Σ y·g·f, Σ y²·g·f for every pixel.
        let mut vert = vec![[0.0f64; 3]; h * w];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [self.g[0] * img.at(y, x), 0.0, 0.0];
                for k in 1..=n {
                    let up = img.at(replicate(y as isize - k, h), x);
                    let down = img.at(replicate(y as isize + k, h), x);
                    let k = k as usize;
                    acc[0] += self.g[k] * (up + down);
                    acc[1] += self.xg[k] * (down - up);
                    acc[2] += self.xxg[k] * (up + down);
                }
                vert[y * w + x] = acc;
            }
        }
        // Horizontal pass, then the inverse Gram matrix.
        let mut out = vec![[0.0f64; 5]; h * w];
        for y in 0..h {
            let row = &vert[y * w..(y + 1) * w];
            for x in 0..w {
                let [v0, v1, v2] = row[x];
                let (mut b1, mut b2, mut b3) = (v0 * self.g[0], 0.0, v1 * self.g[0]);
                let (mut b4, mut b5, mut b6) = (0.0, v2 * self.g[0], 0.0);
                for k in 1..=n {
                    let left = row[replicate(x as isize - k, w)];
                    let right = row[replicate(x as isize + k, w)];
                    let k = k as usize;
                    b1 += self.g[k] * (right[0] + left[0]);
                    b4 += self.xxg[k] * (right[0] + left[0]);
                    b2 += self.xg[k] * (right[0] - left[0]);
                    b3 += self.g[k] * (right[1] + left[1]);
                    b6 += self.xg[k] * (right[1] - left[1]);
                    b5 += self.g[k] * (right[2] + left[2]);
                }
                out[y * w + x] = [
                    b3 * self.ig11,
                    b2 * self.ig11,
                    b1 * self.ig03 + b5 * self.ig33,
                    b1 * self.ig03 + b4 * self.ig33,
                    b6 * self.ig55,
                ];
            }
        }
        out
    }
}

/// Pixels within this distance of the border are down-weighted by [`BORDER_WEIGHTS`].
const BORDER: usize = 5;
const BORDER_WEIGHTS: [f64; BORDER] = [0.14, 0.14, 0.4472, 0.8, 1.0];

fn border_weight(i: usize, n: usize) -> f64 {
    let lo = if i < BORDER { BORDER_WEIGHTS[i] } else { 1.0 };
    let hi = if i + BORDER >= n {
        BORDER_WEIGHTS[n - i - 1]
    } else {
        1.0
    };
    lo * hi
}

/// The expansion of the second frame at `(fy, fx)`, bilinearly, or `None` outside the image.
/// The last row and column are inside (OpenCV counts them as outside, which makes identical
/// frames show flow along the right and bottom borders).
fn sample(r1: &Coeffs, h: usize, w: usize, fy: f64, fx: f64) -> Option<[f64; 5]> {
    if !(fy >= 0.0 && fx >= 0.0 && fy <= (h - 1) as f64 && fx <= (w - 1) as f64) {
        return None;
    }
    let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
    let (ty, tx) = (fy - y0 as f64, fx - x0 as f64);
    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
    let corners = [
        (y0 * w + x0, (1.0 - tx) * (1.0 - ty)),
        (y0 * w + x1, tx * (1.0 - ty)),
        (y1 * w + x0, (1.0 - tx) * ty),
        (y1 * w + x1, tx * ty),
    ];
    let mut out = [0.0; 5];
    for (i, wgt) in corners {
        out.iter_mut().zip(&r1[i]).for_each(|(o, r)| *o += wgt * r);
    }
    Some(out)
}

/// Per pixel, the normal-equation terms `[G11, G12, G22, h1, h2]` of `A·d = Δb` in `(y, x)`
/// order, for the current flow.
fn update_matrices(r0: &Coeffs, r1: &Coeffs, flow: &Flow) -> Vec<[f64; 5]> {
    let (h, w) = (flow.h, flow.w);
    let mut m = vec![[0.0; 5]; h * w];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (dx, dy) = (flow.u[i], flow.v[i]);
            let c0 = &r0[i];
            let (mut by, mut bx, ayy, axx, axy) =
                match sample(r1, h, w, y as f64 + dy, x as f64 + dx) {
                    Some(c1) => (
                        (c0[0] - c1[0]) * 0.5,
                        (c0[1] - c1[1]) * 0.5,
                        (c0[2] + c1[2]) * 0.5,
                        (c0[3] + c1[3]) * 0.5,
                        (c0[4] + c1[4]) * 0.25,
                    ),
                    None => (c0[0] * 0.5, c0[1] * 0.5, c0[2], c0[3], c0[4] * 0.5),
                };
            by += ayy * dy + axy * dx;
            bx += axy * dy + axx * dx;
            let s = border_weight(x, w) * border_weight(y, h);
            let [by, bx, ayy, axx, axy] = [by, bx, ayy, axx, axy].map(|v| v * s);
            m[i] = [
                ayy * ayy + axy * axy,
                (ayy + axx) * axy,
                axx * axx + axy * axy,
                ayy * by + axy * bx,
                axy * by + axx * bx,
            ];
        }
    }
    m
}

/// Box-averages the matrices over `(2r+1)²` pixels (replicated borders) and solves each 2×2
/// system `[G11 G12; G12 G22]·(d_y, d_x) = (h1, h2)`, regularised as OpenCV does.
fn solve_flow(matrices: &[[f64; 5]], h: usize, w: usize, r: usize) -> Flow {
    let avg = box_filter(matrices, h, w, r);
    let mut flow = Flow::zeros(h, w);
    for (i, [g11, g12, g22, h1, h2]) in avg.into_iter().enumerate() {
        let idet = 1.0 / (g11 * g22 - g12 * g12 + 1e-3);
        flow.u[i] = (g11 * h2 - g12 * h1) * idet;
        flow.v[i] = (g22 * h1 - g12 * h2) * idet;
    }
    flow
}

/// The mean over the `(2r+1)²` window of every pixel, replicated borders.
fn box_filter(data: &[[f64; 5]], h: usize, w: usize, r: usize) -> Vec<[f64; 5]> {
    let r = r as isize;
    let add = |acc: &mut [f64; 5], v: &[f64; 5]| acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    let mut rows = vec![[0.0; 5]; h * w];
    for y in 0..h {
        for x in 0..w {
            for k in -r..=r {
                add(
                    &mut rows[y * w + x],
                    &data[y * w + replicate(x as isize + k, w)],
                );
            }
        }
    }
    let norm = 1.0 / ((2 * r + 1) * (2 * r + 1)) as f64;
    let mut out = vec![[0.0; 5]; h * w];
    for y in 0..h {
        for x in 0..w {
            let acc = &mut out[y * w + x];
            for k in -r..=r {
                add(acc, &rows[replicate(y as isize + k, h) * w + x]);
            }
            acc.iter_mut().for_each(|a| *a *= norm);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth texture on the 0..255 scale seen moved by `(dx, dy)` pixels: plane waves of
    /// wavelengths 12–45 pixels in four directions.
    fn texture(h: usize, w: usize, dx: f64, dy: f64) -> Vec<f32> {
        (0..h * w)
            .map(|i| {
                let (x, y) = ((i % w) as f64 - dx, (i / w) as f64 - dy);
                let v = 128.0
                    + 40.0 * (0.31 * x + 0.17 * y).sin()
                    + 30.0 * (0.23 * y - 0.11 * x + 1.0).sin()
                    + 20.0 * (0.14 * x + 0.29 * y + 2.0).cos()
                    + 15.0 * (0.52 * x - 0.05 * y).sin();
                v as f32
            })
            .collect()
    }

    /// The median of `values` over pixels at least `margin` from the border.
    fn interior_median(values: &[f32], h: usize, w: usize, margin: usize) -> f32 {
        let mut inner: Vec<f32> = (margin..h - margin)
            .flat_map(|y| (margin..w - margin).map(move |x| values[y * w + x]))
            .collect();
        inner.sort_by(f32::total_cmp);
        inner[inner.len() / 2]
    }

    fn uv(flow: &FlowMap) -> (&[f32], &[f32]) {
        match flow {
            FlowMap::Vector { u, v, .. } => (u, v),
            FlowMap::Magnitude { .. } => panic!("Farnebäck returns vectors"),
        }
    }

    #[test]
    fn translated_texture_recovers_the_shift() {
        let params = FarnebackParams::default();
        for (h, w, dx, dy, tol) in [(64, 128, 2.0, -1.0, 0.1), (128, 256, 6.0, 3.5, 0.25)] {
            let flow = farneback_gray(
                &texture(h, w, 0.0, 0.0),
                &texture(h, w, dx, dy),
                h,
                w,
                &params,
            )
            .unwrap();
            let (u, v) = uv(&flow);
            let (mu, mv) = (interior_median(u, h, w, 16), interior_median(v, h, w, 16));
            assert!((f64::from(mu) - dx).abs() < tol, "{h}x{w}: u {mu} vs {dx}");
            assert!((f64::from(mv) - dy).abs() < tol, "{h}x{w}: v {mv} vs {dy}");
            let mag = interior_median(&flow.magnitude(), h, w, 16);
            assert!((f64::from(mag) - dx.hypot(dy)).abs() < 1.5 * tol, "{mag}");
        }
    }

    #[test]
    fn identical_frames_give_zero_flow() {
        let img = texture(48, 96, 0.0, 0.0);
        let flow = farneback_gray(&img, &img, 48, 96, &FarnebackParams::default()).unwrap();
        let max = flow.magnitude().into_iter().fold(0.0f32, f32::max);
        assert!(max < 1e-6, "{max}");
    }

    #[test]
    fn a_moving_square_moves_and_the_background_stays() {
        // Planar RGB: a textured square moves 3 px right over a static textured background.
        let (h, w) = (64, 128);
        let frame = |shift: f64| -> Vec<f32> {
            let bg = texture(h, w, 0.0, 0.0);
            let fg = texture(h, w, 50.0 + shift, 7.0);
            let mut rgb = vec![0.0f32; 3 * h * w];
            for p in 0..h * w {
                let (x, y) = ((p % w) as f64, (p / w) as f64);
                let inside = (40.0 + shift..60.0 + shift).contains(&x) && (20.0..44.0).contains(&y);
                let g = if inside { 255.0 - fg[p] } else { bg[p] } / 255.0;
                (0..3).for_each(|c| rgb[c * h * w + p] = g);
            }
            rgb
        };
        let (a, b) = (frame(0.0), frame(3.0));
        let flow = farneback(&a, &b, h, w, &FarnebackParams::default()).unwrap();
        assert_eq!(
            flow,
            farneback(&a, &b, h, w, &FarnebackParams::default()).unwrap()
        );
        let (u, _) = uv(&flow);
        let mag = flow.magnitude();
        let centre = 32 * w + 50;
        assert!(
            (u[centre] - 3.0).abs() < 0.5,
            "u at the square's centre {}",
            u[centre]
        );
        let far: Vec<f32> = (0..h * w)
            .filter(|p| (p % w) < 20 || (p % w) > 90)
            .map(|p| mag[p])
            .collect();
        // The coarse level's 15-pixel window spans 30 full-resolution pixels: what leaks that far
        // stays under 5 % of the motion.
        let far_max = far.iter().copied().fold(0.0f32, f32::max);
        assert!(
            far_max < 0.15,
            "background far from the square moves {far_max}"
        );
        let inside: f32 = (24..40).map(|y| mag[y * w + 50]).sum::<f32>() / 16.0;
        assert!(
            (inside - 3.0).abs() < 0.3,
            "mean |flow| down the square's centre {inside}"
        );
    }

    #[test]
    fn polynomial_expansion_recovers_a_quadratic() {
        // f = 3x² + 2xy − y² + 4x + 5y + 7 around (20, 12): coefficients [b_y, b_x, a_yy, a_xx, a_xy].
        let (h, w, cx, cy) = (25, 41, 20.0, 12.0);
        let data = (0..h * w)
            .map(|i| {
                let (x, y) = ((i % w) as f64 - cx, (i / w) as f64 - cy);
                3.0 * x * x + 2.0 * x * y - y * y + 4.0 * x + 5.0 * y + 7.0
            })
            .collect();
        let r = PolyBasis::new(5, 1.2).expand(&Plane::new(h, w, data));
        let got = r[12 * w + 20];
        for (g, want) in got.iter().zip([5.0, 4.0, -1.0, 3.0, 2.0]) {
            assert!((g - want).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn helpers_follow_opencv_conventions() {
        assert_eq!(gaussian_kernel(0.0), vec![0.25, 0.5, 0.25]);
        assert_eq!(gaussian_kernel(1.5).len(), 9);
        assert!((gaussian_kernel(0.5).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(
            [-2, -1, 0, 4, 5, 6].map(|i| reflect101(i, 5)),
            [2, 1, 0, 4, 3, 2]
        );
        // Halving: output pixel 1 averages input pixels 2 and 3.
        assert_eq!(linear_tap(1, 8, 4), (2, 3, 0.5));
        let p = pyramid_levels(128, 256, &FarnebackParams::default());
        assert_eq!(p, 2, "128×256 keeps levels of 64×128 and 32×64");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let img = vec![0.0f32; 3 * 8 * 8];
        let p = FarnebackParams::default();
        assert!(farneback(&img, &img[..10], 8, 8, &p).is_err());
        assert!(farneback(&[], &[], 0, 8, &p).is_err());
        for bad in [
            FarnebackParams {
                pyr_scale: 1.0,
                ..p
            },
            FarnebackParams { win_size: 14, ..p },
            FarnebackParams { iterations: 0, ..p },
            FarnebackParams {
                poly_sigma: f64::NAN,
                ..p
            },
        ] {
            assert!(farneback(&img, &img, 8, 8, &bad).is_err(), "{bad:?}");
        }
    }
}
