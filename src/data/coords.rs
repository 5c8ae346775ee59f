//! Pixel coordinate grids, exactly as the official FFN pipeline builds them.
//!
//! `DataProcessor.get_coordinates` takes `torch.ones(H, W).nonzero()`, i.e. (row, col) pairs in
//! row-major order (pixel p = h·W + w), divides **both** axes by `max(H, W) − 1`, then maps to
//! [−1, 1] with `(c − 0.5)·2`, all in f32. Rows therefore do not span [−1, 1] on a wide image.

/// The coordinates of every pixel of an `height`×`width` image, as a row-major `[P, 2]` buffer of
/// (row, col) pairs in f32. Bit-exact with the official code.
pub fn coordinate_grid(height: usize, width: usize) -> Vec<f32> {
    let denom = (height.max(width).max(2) - 1) as f32;
    let norm = |v: usize| (v as f32 / denom - 0.5) * 2.0;
    let mut coords = Vec::with_capacity(height * width * 2);
    for h in 0..height {
        for w in 0..width {
            coords.push(norm(h));
            coords.push(norm(w));
        }
    }
    coords
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_follow_the_official_normalisation() {
        let c = coordinate_grid(128, 256);
        assert_eq!(c.len(), 128 * 256 * 2);
        assert_eq!((c[0], c[1]), (-1.0, -1.0));
        // Last pixel: row 127 / 255, col 255 / 255.
        let last = &c[c.len() - 2..];
        assert_eq!(last[0], (127.0f32 / 255.0 - 0.5) * 2.0);
        assert!((last[0] - (-0.003_921_6)).abs() < 1e-6);
        assert_eq!(last[1], 1.0);
        // Row-major: pixel p = h*W + w.
        let p = 5 * 256 + 7;
        assert_eq!(c[2 * p], (5.0f32 / 255.0 - 0.5) * 2.0);
        assert_eq!(c[2 * p + 1], (7.0f32 / 255.0 - 0.5) * 2.0);
    }
}
