//! Resampling as the official NeRV and mask pipelines do it (spec D.1, D.2):
//! - frames: `F.interpolate(mode='bicubic', align_corners=False)` — Keys cubic with a = −0.75, no
//!   antialiasing, borders clamped, values not clamped — in f32 with torch's summation order;
//! - masks and label maps: `mode='nearest'`, i.e. `out[y, x] = in[⌊y·in_h/out_h⌋, ⌊x·in_w/out_w⌋]`;
//! - torchvision's `CenterCrop`.
//!
//! (The FFN's antialiased bilinear resize of 8-bit images is [`crate::data::image`].)

/// A centre crop window `(top, left, height, width)` as torchvision computes it
/// (`round((in − out) / 2)`), or the whole image when it is not larger than the crop.
pub(crate) fn center_crop_window(
    in_h: usize,
    in_w: usize,
    crop_h: usize,
    crop_w: usize,
) -> (usize, usize, usize, usize) {
    let off = |i: usize, c: usize| {
        if i > c {
            ((i - c) as f64 / 2.0).round() as usize
        } else {
            0
        }
    };
    (
        off(in_h, crop_h),
        off(in_w, crop_w),
        crop_h.min(in_h),
        crop_w.min(in_w),
    )
}

/// Crops a planar `[C, H, W]` buffer to the window `(top, left, h, w)`.
pub fn crop_planar<T: Copy>(
    src: &[T],
    channels: usize,
    height: usize,
    width: usize,
    window: (usize, usize, usize, usize),
) -> Vec<T> {
    let (top, left, h, w) = window;
    let mut out = Vec::with_capacity(channels * h * w);
    for c in 0..channels {
        for y in top..top + h {
            let row = (c * height + y) * width;
            out.extend_from_slice(&src[row + left..row + left + w]);
        }
    }
    out
}

/// Nearest-neighbour resize of a planar `[C, H, W]` buffer (any element type), torch `nearest`.
pub(crate) fn resize_nearest<T: Copy>(
    src: &[T],
    channels: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<T> {
    let ys: Vec<usize> = (0..out_h).map(|y| nearest_index(y, in_h, out_h)).collect();
    let xs: Vec<usize> = (0..out_w).map(|x| nearest_index(x, in_w, out_w)).collect();
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for c in 0..channels {
        for &y in &ys {
            let row = &src[(c * in_h + y) * in_w..];
            out.extend(xs.iter().map(|&x| row[x]));
        }
    }
    out
}

fn nearest_index(dst: usize, in_size: usize, out_size: usize) -> usize {
    let scale = in_size as f32 / out_size as f32;
    ((dst as f32 * scale).floor() as usize).min(in_size - 1)
}

/// The four taps and weights of torch's bicubic interpolation for one output index.
fn cubic_taps(dst: usize, in_size: usize, out_size: usize) -> ([usize; 4], [f32; 4]) {
    const A: f32 = -0.75;
    let scale = in_size as f32 / out_size as f32;
    let real = scale * (dst as f32 + 0.5) - 0.5;
    let base = real.floor();
    let t = real - base;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let weights = [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2(2.0 - t)];
    let idx =
        std::array::from_fn(|k| (base as i64 - 1 + k as i64).clamp(0, in_size as i64 - 1) as usize);
    (idx, weights)
}

/// Bicubic resize of a planar `[C, H, W]` f32 buffer, as `F.interpolate(mode='bicubic',
/// align_corners=False)` on the CPU: rows of the output are Σᵢ w_yᵢ·(Σⱼ w_xⱼ·in[yᵢ, xⱼ]),
/// accumulated in that order in f32. Not clamped: values may leave [0, 1].
pub fn resize_bicubic(
    src: &[f32],
    channels: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let ys: Vec<_> = (0..out_h).map(|y| cubic_taps(y, in_h, out_h)).collect();
    let xs: Vec<_> = (0..out_w).map(|x| cubic_taps(x, in_w, out_w)).collect();
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for c in 0..channels {
        let plane = &src[c * in_h * in_w..(c + 1) * in_h * in_w];
        for (yi, yw) in &ys {
            for (xi, xw) in &xs {
                let row = |y: usize| {
                    let r = &plane[y * in_w..];
                    let mut t = r[xi[0]] * xw[0];
                    for k in 1..4 {
                        t += r[xi[k]] * xw[k];
                    }
                    t
                };
                let mut v = row(yi[0]) * yw[0];
                for k in 1..4 {
                    v += row(yi[k]) * yw[k];
                }
                out.push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_takes_the_top_left_sample() {
        // 4x8 -> 2x4 (factor 2): out[y, x] = in[2y, 2x].
        let src: Vec<u32> = (0..32).collect();
        assert_eq!(
            resize_nearest(&src, 1, 4, 8, 2, 4),
            vec![0, 2, 4, 6, 16, 18, 20, 22]
        );
        // Factor 5 (VIPSeg 640 -> 128): in[5y].
        let col: Vec<u32> = (0..10).collect();
        assert_eq!(resize_nearest(&col, 1, 10, 1, 2, 1), vec![0, 5]);
        // Upsampling repeats.
        assert_eq!(resize_nearest(&[7u8, 9], 1, 1, 2, 1, 4), vec![7, 7, 9, 9]);
    }

    #[test]
    fn center_crop_matches_torchvision() {
        assert_eq!(center_crop_window(720, 1280, 640, 1280), (40, 0, 640, 1280));
        assert_eq!(
            center_crop_window(1024, 2048, 640, 1280),
            (192, 384, 640, 1280)
        );
        assert_eq!(center_crop_window(600, 1000, 640, 1280), (0, 0, 600, 1000));
        let src: Vec<u8> = (0..2 * 4 * 4).map(|v| v as u8).collect();
        assert_eq!(
            crop_planar(&src, 2, 4, 4, (1, 1, 2, 2)),
            vec![5, 6, 9, 10, 21, 22, 25, 26]
        );
    }

    #[test]
    fn bicubic_weights_and_values_by_hand() {
        // Downsampling by 2: real = 2(x + 0.5) − 0.5 = 2x + 0.5, t = 0.5; Keys weights at t = 0.5:
        // [-0.09375, 0.59375, 0.59375, -0.09375].
        let (idx, w) = cubic_taps(0, 8, 4);
        assert_eq!(idx, [0, 0, 1, 2]);
        assert_eq!(w, [-0.09375, 0.59375, 0.59375, -0.09375]);
        // A linear ramp is reproduced exactly in the interior (cubic convolution is exact for
        // linear functions); at the border the clamped taps bend it.
        let ramp: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let out = resize_bicubic(&ramp, 1, 1, 8, 1, 4);
        assert_eq!(out[1], 2.5);
        assert_eq!(out[2], 4.5);
        // out[0]: taps in[0, 0, 1, 2] -> 0·(-0.09375) + 0·0.59375 + 1·0.59375 + 2·(-0.09375) = 0.40625
        assert_eq!(out[0], 0.40625);
        // No clamping: a step overshoots.
        let step = [0.0f32, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let up = resize_bicubic(&step, 1, 1, 8, 1, 16);
        assert!(up.iter().any(|&v| v < 0.0) && up.iter().any(|&v| v > 1.0));
        // Constant images stay constant (weights sum to 1).
        let flat = vec![0.25f32; 3 * 16 * 32];
        assert!(resize_bicubic(&flat, 3, 16, 32, 5, 7)
            .iter()
            .all(|&v| (v - 0.25).abs() < 1e-6));
    }
}
