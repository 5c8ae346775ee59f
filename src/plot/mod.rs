//! Figures and tables of the analyses.
//!
//! * here: the magma colour map the paper uses, and static PNG grids of contribution maps;
//! * [`figure`]: the [`figure::Figure`] type (a plotly plot) and its HTML fragment, standalone
//!   offline page and evcxr notebook display;
//! * [`figures`]: builders for the paper's figures (map grids, heatmaps, box plots, sorted
//!   curves, line series, an embedding scatter with hover thumbnails), from plain data;
//! * [`table`]: DataFrames as HTML tables and notebook displays;
//! * [`html`]: the embedded plotly.js, escaping, and the evcxr MIME-bundle format;
//! * [`views`]: the figures and notebook displays of a study's frames and layers.

pub mod figure;
pub mod figures;
pub mod html;
pub mod table;
pub mod views;

use image::{Rgb, RgbImage};

/// The matplotlib *magma* colour map, as a degree-6 polynomial fit (within about 5/255 of the table),
/// for `t` in [0, 1].
pub fn magma(t: f32) -> Rgb<u8> {
    const C: [[f32; 3]; 7] = [
        [-0.002_136_485, -0.000_749_655, -0.005_386_128],
        [0.251_660_54, 0.677_523_24, 2.494_026_6],
        [8.353_717, -3.577_719_5, 0.314_467_9],
        [-27.668_733, 14.264_731, -13.649_213],
        [52.176_14, -27.943_606, 12.944_169],
        [-50.768_525, 29.046_583, 4.234_153],
        [18.655_705, -11.489_774, -5.601_961_5],
    ];
    let t = t.clamp(0.0, 1.0);
    Rgb(std::array::from_fn(|c| {
        let v = C.iter().rev().fold(0.0f32, |acc, k| acc * t + k[c]);
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }))
}

/// Lays out maps (each `height·width`, row-major) in a grid of `cols` columns with a `pad`-pixel
/// white gutter. Each map is min-max normalised on its own and coloured with magma; a constant map
/// is drawn black.
pub fn map_grid(maps: &[&[f32]], height: usize, width: usize, cols: usize, pad: usize) -> RgbImage {
    let cols = cols.max(1).min(maps.len().max(1));
    let rows = maps.len().div_ceil(cols).max(1);
    let gw = cols * width + (cols + 1) * pad;
    let gh = rows * height + (rows + 1) * pad;
    let mut img = RgbImage::from_pixel(gw as u32, gh as u32, Rgb([255, 255, 255]));
    for (k, map) in maps.iter().enumerate() {
        let (lo, hi) = map
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let range = if hi > lo { hi - lo } else { 1.0 };
        let x0 = pad + (k % cols) * (width + pad);
        let y0 = pad + (k / cols) * (height + pad);
        for (p, &v) in map.iter().enumerate().take(height * width) {
            let colour = magma(if hi > lo { (v - lo) / range } else { 0.0 });
            img.put_pixel((x0 + p % width) as u32, (y0 + p / width) as u32, colour);
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magma_ends_match_matplotlib() {
        // matplotlib magma(0) = (0, 0, 4), magma(1) = (252, 253, 191) in 8 bits.
        let lo = magma(0.0).0;
        let hi = magma(1.0).0;
        assert!(
            lo.iter().zip([0u8, 0, 4]).all(|(a, b)| a.abs_diff(b) <= 5),
            "{lo:?}"
        );
        assert!(
            hi.iter()
                .zip([252u8, 253, 191])
                .all(|(a, b)| a.abs_diff(b) <= 8),
            "{hi:?}"
        );
    }

    #[test]
    fn grid_places_normalised_maps() {
        let a = [0.0f32, 1.0, 2.0, 3.0];
        let b = [5.0f32; 4];
        let img = map_grid(&[&a, &b], 2, 2, 2, 1);
        assert_eq!(img.dimensions(), (7, 4));
        assert_eq!(*img.get_pixel(0, 0), Rgb([255, 255, 255]));
        assert_eq!(*img.get_pixel(1, 1), magma(0.0));
        assert_eq!(*img.get_pixel(2, 2), magma(1.0));
        assert_eq!(*img.get_pixel(4, 1), magma(0.0)); // constant map: black
    }
}
