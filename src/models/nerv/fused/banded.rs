//! A block's inference forward pass band by band: each rayon task takes a few rows of one image,
//! builds their im2col columns, multiplies them by the weights and writes bias + PixelShuffle +
//! GELU straight into the block's output. The band's columns and conv output stay in cache, and
//! no whole-block im2col or pre-activation buffer is allocated (the training pass keeps both for
//! its backward pass, [`super::FusedNerv::forward_train`]).

use rayon::prelude::*;

use super::conv::{im2col_band, SyncPtr};
use super::pointwise::shuffle_gelu_channel;
use super::BlockShape;
use crate::tensor::{matmul_serial, MatRef};

/// About this many im2col columns per band: a band's columns of the paper model's last block
/// (234 deep) take 0.5 MB, in L2 beside its conv output.
const BAND_COLUMNS: usize = 512;

/// `out` (`[cout, b, h·s, w·s]`, overwritten) = GELU(PixelShuffle(conv(`x`) + `bias`)), `x`
/// `[cin, b, h, w]`, `weight` `[cout·s², cin·k·k]`.
pub(super) fn block_forward(
    x: &[f32],
    bl: BlockShape,
    b: usize,
    (weight, bias): (&[f32], &[f32]),
    out: &mut [f32],
) {
    let conv = bl.conv(b);
    let (m, depth, s2) = (bl.m(), bl.depth(), bl.s * bl.s);
    let plane = bl.h * bl.w * s2;
    assert!(x.len() >= conv.c * conv.n() && out.len() >= bl.cout * b * plane);
    assert!(weight.len() >= m * depth && bias.len() >= m);
    let rows = (BAND_COLUMNS / bl.w).clamp(1, bl.h);
    let bands: Vec<(usize, usize)> = (0..b)
        .flat_map(|bi| (0..bl.h).step_by(rows).map(move |y0| (bi, y0)))
        .collect();
    let dst = SyncPtr(out.as_mut_ptr());
    let len = rows * bl.w;
    bands.into_par_iter().for_each_init(
        || (vec![0.0f32; depth * len], vec![0.0f32; m * len]),
        |(cols, z), (bi, y0)| {
            let y1 = (y0 + rows).min(bl.h);
            let len = (y1 - y0) * bl.w;
            im2col_band(x, conv, bi, y0..y1, cols);
            let z = &mut z[..m * len];
            matmul_serial(
                z,
                MatRef::row_major(weight, m, depth),
                MatRef::row_major(&cols[..depth * len], depth, len),
                false,
            );
            let g = super::pointwise::Shuffle {
                c: 1,
                b: 1,
                h: y1 - y0,
                w: bl.w,
                s: bl.s,
            };
            for (c, conv_rows) in z.chunks_mut(s2 * len).enumerate() {
                let start = (c * b + bi) * plane + y0 * bl.w * s2;
                // SAFETY: in bounds (asserted above); this band's output rows of channel c are
                // written by this task only (bands cover disjoint rows of their image).
                let band =
                    unsafe { std::slice::from_raw_parts_mut(dst.get().add(start), len * s2) };
                shuffle_gelu_channel::<false>(conv_rows, &bias[c * s2..][..s2], g, band);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nerv::fused::conv::im2col;
    use crate::models::nerv::fused::pointwise::bias_shuffle_gelu;

    #[test]
    fn bands_compute_the_whole_block_pass() {
        // 300 pixels a row: bands of one row; 3 rows per image, two images; PixelShuffle 2.
        let bl = BlockShape {
            cin: 3,
            cout: 2,
            s: 2,
            k: 3,
            h: 3,
            w: 300,
        };
        let b = 2;
        let wave = |n: usize, f: f32| (0..n).map(|i| (i as f32 * f).sin()).collect::<Vec<_>>();
        let x = wave(bl.cin * b * bl.h * bl.w, 0.37);
        let (weight, bias) = (wave(bl.m() * bl.depth(), 1.3), wave(bl.m(), 2.1));
        let n = b * bl.h * bl.w;
        let mut cols = vec![0.0; bl.depth() * n];
        im2col(&x, bl.conv(b), &mut cols);
        let mut z = vec![0.0; bl.m() * n];
        crate::tensor::matmul(
            &mut z,
            MatRef::row_major(&weight, bl.m(), bl.depth()),
            MatRef::row_major(&cols, bl.depth(), n),
            false,
        );
        let mut want = vec![0.0; bl.m() * n];
        bias_shuffle_gelu(&mut z, &bias, bl.shuffle(b), &mut want, false);
        let mut got = vec![f32::NAN; want.len()];
        block_forward(&x, bl, b, (&weight, &bias), &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{i}: {g} vs {w}");
        }
        // A hand-computed value: channel 0, image 1, output pixel (0, 1) is conv row 1 (s² rows
        // per channel: i·s + j = 0·2 + 1) at input pixel (0, 0) of image 1.
        let tap = |ci: usize, ky: usize, kx: usize| -> f32 {
            let (y, xx) = (ky as isize - 1, kx as isize - 1);
            if y < 0 || xx < 0 {
                return 0.0;
            }
            x[(ci * b + 1) * bl.h * bl.w + y as usize * bl.w + xx as usize]
        };
        let mut pre = bias[1];
        for ci in 0..bl.cin {
            for t in 0..9 {
                pre += weight[bl.depth() + ci * 9 + t] * tap(ci, t / 3, t % 3);
            }
        }
        let gelu = crate::models::nerv::gelu::gelu_f32(pre);
        let at = bl.h * bl.w * 4 + 1;
        assert!((got[at] - gelu).abs() < 1e-5, "{} vs {gelu}", got[at]);
    }
}
