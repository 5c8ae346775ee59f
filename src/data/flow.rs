//! Optical-flow maps of the XINC datasets (spec B.5, F.3): one NumPy `.npy` file per frame.
//!
//! Two layouts are read:
//! - a 2-D array `[H0, W0]` of any integer or float dtype, read as the official code does: divided
//!   by 255 (8-bit-scaled flow magnitude), cropped like the frames and bicubic-resized;
//! - a 3-D float array `[H0, W0, 2]` of displacements `(u, v)` in pixels: both planes cropped and
//!   bicubic-resized, then `u` scaled by `W / W_crop` and `v` by `H / H_crop`, so that they are
//!   displacements in working-resolution pixels.
//!
//! The file is read by [`crate::io::npy::read_npy`], which checks the header before it reads the
//! data: here, the shape against the clip's frame size. The file must be a regular file within
//! [`FileLimit::FLOW`], and every value finite (and within f32's range).

use std::path::Path;

use crate::data::resize::{crop_planar, resize_bicubic};
use crate::error::{Result, XincError};
use crate::io::files::FileLimit;
use crate::io::npy::{read_npy, NpyRules};

/// A flow map at the working resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowMap {
    /// A scalar map (the official 2-D layout divided by 255), row-major.
    Magnitude {
        /// Working height.
        height: usize,
        /// Working width.
        width: usize,
        /// `height·width` values.
        data: Vec<f32>,
    },
    /// Horizontal and vertical displacements in working-resolution pixels, row-major.
    Vector {
        /// Working height.
        height: usize,
        /// Working width.
        width: usize,
        /// Horizontal displacement (+x right), `height·width` values.
        u: Vec<f32>,
        /// Vertical displacement (+y down), `height·width` values.
        v: Vec<f32>,
    },
}

impl FlowMap {
    /// Height of the map.
    pub fn height(&self) -> usize {
        match self {
            FlowMap::Magnitude { height, .. } | FlowMap::Vector { height, .. } => *height,
        }
    }

    /// Width of the map.
    pub fn width(&self) -> usize {
        match self {
            FlowMap::Magnitude { width, .. } | FlowMap::Vector { width, .. } => *width,
        }
    }

    /// The per-pixel magnitude: the map itself for [`FlowMap::Magnitude`], `√(u² + v²)` for
    /// [`FlowMap::Vector`].
    pub fn magnitude(&self) -> Vec<f32> {
        match self {
            FlowMap::Magnitude { data, .. } => data.clone(),
            FlowMap::Vector { u, v, .. } => u.iter().zip(v).map(|(a, b)| a.hypot(*b)).collect(),
        }
    }
}

/// Reads the flow file `path` of a clip whose frames are `frame` (`[H0, W0]`: the flow must have
/// that size) and brings it to the working size `size` (`[H, W]`), after the crop
/// `window(H0, W0)` → `(top, left, height, width)` that the frames get.
pub fn load_flow(
    path: &Path,
    frame: [usize; 2],
    size: [usize; 2],
    window: impl Fn(usize, usize) -> (usize, usize, usize, usize),
) -> Result<FlowMap> {
    let check_shape = |shape: &[usize]| check_flow_shape(shape, frame);
    let rules = NpyRules {
        limit: FileLimit::FLOW,
        shape: &check_shape,
        values: "flow",
    };
    let array = read_npy(path, &rules)?;
    let [out_h, out_w] = size;
    match *array.shape.as_slice() {
        [h, w] => {
            let scaled: Vec<f32> = array.values.iter().map(|&x| (x / 255.0) as f32).collect();
            let win = window(h, w);
            let cropped = crop_planar(&scaled, 1, h, w, win);
            Ok(FlowMap::Magnitude {
                height: out_h,
                width: out_w,
                data: resize_bicubic(&cropped, 1, win.2, win.3, out_h, out_w),
            })
        }
        [h, w, 2] if array.is_float => {
            let win = window(h, w);
            let plane = |c: usize, scale: f32| -> Vec<f32> {
                let values: Vec<f32> = array.values[c..]
                    .iter()
                    .step_by(2)
                    .map(|&x| x as f32)
                    .collect();
                let cropped = crop_planar(&values, 1, h, w, win);
                let resized = resize_bicubic(&cropped, 1, win.2, win.3, out_h, out_w);
                resized.into_iter().map(|x| x * scale).collect()
            };
            Ok(FlowMap::Vector {
                height: out_h,
                width: out_w,
                u: plane(0, out_w as f32 / win.3 as f32),
                v: plane(1, out_h as f32 / win.2 as f32),
            })
        }
        [_, _, 2] => Err(XincError::dataset(
            path,
            "a [H, W, 2] flow must have a float dtype",
        )),
        _ => Err(XincError::dataset(
            path,
            format!(
                "flow must be a [H, W] or [H, W, 2] array, found shape {:?}",
                array.shape
            ),
        )),
    }
}

/// An error unless `shape` is `[H0, W0]` or `[H0, W0, 2]` with `[H0, W0]` the clip's `frame`.
fn check_flow_shape(shape: &[usize], [h, w]: [usize; 2]) -> std::result::Result<(), String> {
    match *shape {
        [fh, fw] | [fh, fw, 2] if [fh, fw] == [h, w] => Ok(()),
        [fh, fw] | [fh, fw, 2] => Err(format!(
            "flow of size {fh}x{fw} (shape {shape:?}) differs from the {h}x{w} of the clip's frames"
        )),
        _ => Err(format!(
            "flow must be a [H, W] or [H, W, 2] array, found shape {shape:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_shapes_must_match_the_frames() {
        assert!(check_flow_shape(&[16, 32], [16, 32]).is_ok());
        assert!(check_flow_shape(&[16, 32, 2], [16, 32]).is_ok());
        let e = check_flow_shape(&[8, 32, 2], [16, 32]).unwrap_err();
        assert!(
            e.contains("8x32") && e.contains("16x32 of the clip's frames"),
            "{e}"
        );
        let e = check_flow_shape(&[16, 32, 3], [16, 32]).unwrap_err();
        assert!(e.contains("[H, W] or [H, W, 2]"), "{e}");
    }
}
