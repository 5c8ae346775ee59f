//! The naive NeRV canvas, step by step as the official code describes it (spec A.7–A.10): the
//! 3×3 conv of one kernel, PixelShuffle placement, GELU, box filter and nearest ×2 upsampling,
//! each a separate full-size plane. [`reference_kernel_map`] chains them into one kernel's map;
//! it is slow on purpose, and the fused path of [`super::fused`] is tested against it. The
//! conv primitive [`conv3x3_plane`] (in [`super::layer`]) is shared with the fused path.

use super::layer::{conv3x3_plane, NervBlockData, NervLayer};
use crate::models::nerv::gelu::gelu_erf;

/// The 3×3 mean filter of the `[h, w]` plane `x` with zero padding 1: every pixel, borders
/// included, is the sum of its 3×3 neighbourhood times 1/9 (PyTorch `Conv2d` with weights 1/9).
pub(crate) fn box3(x: &[f32], h: usize, w: usize) -> Vec<f32> {
    conv3x3_plane(x, h, w, &[1.0 / 9.0; 9], 0.0)
}

/// Nearest-neighbour ×2 upsampling of the `[h, w]` plane `x` to `[2h, 2w]`:
/// `out[y][x] = x[y / 2][x / 2]`.
pub(crate) fn up2(x: &[f32], h: usize, w: usize) -> Vec<f32> {
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
pub(crate) fn phase_place(p: &[f32], h: usize, w: usize, s: usize, phase: usize) -> Vec<f32> {
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

/// Kernel (i, k)'s map of `layer`, computed literally: `P = conv3x3(x_i, W[k, i]) + b[k]/Cin`,
/// then the head map `P`, the pre-GELU map `place(P)`, or the block map
/// `box3(GELU(place(P)))` followed, per downstream block, by `box3(GELU(up2(·)))`. Every GELU
/// is the f64 [`gelu_erf`]. The arguments are not checked.
pub(crate) fn reference_kernel_map(
    data: &NervBlockData,
    layer: NervLayer,
    i: usize,
    k: usize,
) -> Vec<f32> {
    let (h, w, s) = (data.height, data.width, data.scale);
    let p = data.plane(i, k);
    let placed = |p: &[f32]| phase_place(p, h, w, s, k % (s * s));
    match layer {
        NervLayer::Head => p,
        NervLayer::Block { pre_gelu: true, .. } => placed(&p),
        _ => {
            let gelu = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(gelu_erf).collect() };
            let (mut hh, mut ww) = (h * s, w * s);
            let mut z = box3(&gelu(placed(&p)), hh, ww);
            for _ in 0..data.downstream {
                z = box3(&up2(&gelu(z), hh, ww), 2 * hh, 2 * ww);
                (hh, ww) = (2 * hh, 2 * ww);
            }
            z
        }
    }
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
    fn conv_matches_its_definition_at_every_size() {
        // Integer-valued inputs: every sum is exact, whatever the order of its terms.
        let k: [f32; 9] = std::array::from_fn(|t| t as f32 - 3.0);
        for (h, w) in [(1, 1), (1, 5), (3, 1), (2, 3), (4, 9), (5, 17)] {
            let x: Vec<f32> = (0..h * w).map(|v| ((v * 7) % 11) as f32 - 5.0).collect();
            let at = |y: isize, xx: isize| {
                let inside = (0..h as isize).contains(&y) && (0..w as isize).contains(&xx);
                if inside {
                    x[y as usize * w + xx as usize]
                } else {
                    0.0
                }
            };
            let got = conv3x3_plane(&x, h, w, &k, 0.5);
            for (p, &g) in got.iter().enumerate() {
                let (y, xx) = ((p / w) as isize, (p % w) as isize);
                let want =
                    (0..9).map(|t| k[t] * at(y + t as isize / 3 - 1, xx + t as isize % 3 - 1));
                assert_eq!(g, want.sum::<f32>() + 0.5, "{h}×{w} pixel {p}");
            }
        }
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
}
