//! Video frames for NeRV training, from a dataset clip or a plain folder of images, prepared as
//! the official NeRV pipeline does: 8-bit RGB / 255, optional centre crop, torch bicubic resize.
//!
//! A folder of frames is held to the rules of a dataset root: every PNG/JPEG entry must be a
//! regular file resolving inside the folder (a FIFO, a device or a link out of it is an error
//! naming it), and every frame must have the size of the first.

use std::path::{Path, PathBuf};

use crate::data::clip::{detect_format, open_clip};
use crate::data::image::{image_dimensions, nerv_frame, read_rgb8};
use crate::data::loader::{dataset_file, ClipOptions};
use crate::data::resize::center_crop_window;
use crate::error::{Result, XincError};

/// The frames of `path` at `size` (`[H, W]`), each `[3, H, W]`: a Cityscapes-VPS or VIPSeg root
/// (its first video, or `video`), else a folder of PNG/JPEG files in name order. `crop` centre-crops
/// folder frames first (dataset clips use their format's official crop).
pub fn nerv_frames(
    path: &Path,
    size: [usize; 2],
    video: Option<String>,
    crop: Option<[usize; 2]>,
) -> Result<Vec<Vec<f32>>> {
    if detect_format(path).is_ok() {
        let clip = open_clip(path, &ClipOptions { size, video })?;
        return (0..clip.frames.len()).map(|i| clip.frame_nerv(i)).collect();
    }
    let files = image_files(path)?;
    let (h, w) = image_dimensions(&files[0])?;
    for f in &files[1..] {
        let (fh, fw) = image_dimensions(f)?;
        if (fh, fw) != (h, w) {
            return Err(XincError::dataset(
                f,
                format!(
                    "size {fh}x{fw} differs from the {h}x{w} of the first frame {}",
                    files[0].display()
                ),
            ));
        }
    }
    files.iter().map(|f| folder_frame(f, size, crop)).collect()
}

/// The PNG and JPEG files of a folder, sorted by name; each must be a regular file that resolves
/// inside the folder.
pub(crate) fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| XincError::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    for f in &files {
        dataset_file(dir, f, "frame")?;
    }
    if files.is_empty() {
        return Err(XincError::dataset(
            dir,
            "no dataset JSON and no PNG/JPEG frames",
        ));
    }
    Ok(files)
}

fn folder_frame(path: &Path, size: [usize; 2], crop: Option<[usize; 2]>) -> Result<Vec<f32>> {
    let img = read_rgb8(path)?;
    let (h, w) = (img.height() as usize, img.width() as usize);
    let window = match crop {
        Some([ch, cw]) => center_crop_window(h, w, ch, cw),
        None => (0, 0, h, w),
    };
    Ok(nerv_frame(&img, window, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_frames_are_sorted_scaled_and_resized() {
        let dir = tempfile::tempdir().unwrap();
        for (name, v) in [("b.png", 255u8), ("a.png", 51), ("notes.txt", 0)] {
            let path = dir.path().join(name);
            if name.ends_with(".png") {
                image::RgbImage::from_pixel(8, 4, image::Rgb([v; 3]))
                    .save(&path)
                    .unwrap();
            } else {
                std::fs::write(&path, "x").unwrap();
            }
        }
        let frames = nerv_frames(dir.path(), [2, 4], None, None).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), 3 * 2 * 4);
        assert!(
            frames[0].iter().all(|&v| (v - 0.2).abs() < 1e-6),
            "a.png first"
        );
        assert!(frames[1].iter().all(|&v| (v - 1.0).abs() < 1e-6));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            nerv_frames(empty.path(), [2, 4], None, None),
            Err(XincError::Dataset { .. })
        ));
    }
}
