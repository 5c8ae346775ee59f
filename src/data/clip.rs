//! Opening a panoptic video clip of either dataset (spec D.1, D.2, B.0), and reading its frames
//! and flow maps at the working resolution.
//!
//! [`open_clip`] detects the format from the JSON file in the dataset root ([`detect_format`])
//! and hands over to [`crate::data::cityscapes`] or [`crate::data::vipseg`]. Both loaders only
//! find the files; what they share (the JSON pieces, the file checks, the per-frame annotation
//! assembly, the size limits and [`ClipOptions`]) is the toolkit of [`crate::data::loader`],
//! which never calls back here.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::data::flow::{load_flow, FlowMap};
use crate::data::image::{nerv_frame, read_rgb8, resize_bilinear_antialias, ImageTensor};
use crate::data::loader::{check_size, crop_window};
use crate::data::panoptic::{Clip, DatasetFormat};
use crate::data::{cityscapes, vipseg};
use crate::error::{Result, XincError};

/// How to open a clip (defined with the loader toolkit, which the loaders share).
pub use crate::data::loader::ClipOptions;

/// The format of the dataset rooted at `root`, from the JSON file it holds. An error lists the
/// files looked for when neither (or both) is present.
pub(crate) fn detect_format(root: &Path) -> Result<DatasetFormat> {
    // Present in any form (a FIFO or a dangling link too): reading it says what is wrong.
    let present = |name: &str| root.join(name).symlink_metadata().is_ok();
    let city = present(cityscapes::JSON_FILE);
    let vip = present(vipseg::JSON_FILE);
    match (city, vip) {
        (true, false) => Ok(DatasetFormat::CityscapesVps),
        (false, true) => Ok(DatasetFormat::Vipseg),
        (found_city, _) => Err(XincError::dataset(
            root,
            format!(
                "{} dataset JSON: looked for `{}` (Cityscapes-VPS) and `{}` (VIPSeg 720P)",
                if found_city { "ambiguous" } else { "no" },
                cityscapes::JSON_FILE,
                vipseg::JSON_FILE
            ),
        )),
    }
}

/// The dataset format at `root` and its video ids, sorted.
pub fn list_videos(root: &Path) -> Result<(DatasetFormat, Vec<String>)> {
    let format = detect_format(root)?;
    let videos = match format {
        DatasetFormat::CityscapesVps => cityscapes::list_videos(root)?,
        DatasetFormat::Vipseg => vipseg::list_videos(root)?,
    };
    Ok((format, videos))
}

/// Opens one video clip of the dataset at `root` (either format), with every annotated frame
/// assembled at the working resolution `opts.size`.
pub fn open_clip(root: &Path, opts: &ClipOptions) -> Result<Clip> {
    check_size(opts.size)?;
    match detect_format(root)? {
        DatasetFormat::CityscapesVps => cityscapes::open(root, opts),
        DatasetFormat::Vipseg => vipseg::open(root, opts),
    }
}

impl Clip {
    /// The path of frame `i`, or an error when the clip has no such frame (or no working size).
    fn frame_path(&self, i: usize) -> Result<&Path> {
        check_size(self.size)?;
        self.frames.get(i).map(PathBuf::as_path).ok_or_else(|| {
            XincError::InvalidArgument(format!(
                "frame {i} out of range: video {} has {} frames",
                self.video,
                self.frames.len()
            ))
        })
    }

    /// Frame `i` decoded, an error unless it still has the clip's frame size.
    fn read_frame(&self, i: usize) -> Result<RgbImage> {
        let path = self.frame_path(i)?;
        let img = read_rgb8(path)?;
        let (h, w) = (img.height() as usize, img.width() as usize);
        if [h, w] != self.frame_size {
            let [fh, fw] = self.frame_size;
            return Err(XincError::dataset(
                path,
                format!("size {h}x{w} differs from the {fh}x{fw} of the clip's frames"),
            ));
        }
        Ok(img)
    }

    /// Frame `i` as the FFN pipeline sees it: cropped, then Pillow's antialiased bilinear resize
    /// to the working size.
    pub fn frame_ffn(&self, i: usize) -> Result<ImageTensor> {
        let img = self.read_frame(i)?;
        let (top, left, h, w) =
            crop_window(self.format, img.height() as usize, img.width() as usize);
        let cropped =
            image::imageops::crop_imm(&img, left as u32, top as u32, w as u32, h as u32).to_image();
        let resized = resize_bilinear_antialias(&cropped, self.size[0], self.size[1]);
        Ok(ImageTensor::from_rgb8(&resized))
    }

    /// Frame `i` as the NeRV pipeline sees it: planar `[3, H, W]` f32 (v / 255), cropped, then
    /// torch's bicubic resize to the working size (not clamped).
    pub fn frame_nerv(&self, i: usize) -> Result<Vec<f32>> {
        let img = self.read_frame(i)?;
        let window = crop_window(self.format, img.height() as usize, img.width() as usize);
        Ok(nerv_frame(&img, window, self.size))
    }

    /// The flow map of frame `i` at the working resolution, `None` when the clip has no flows.
    /// An error when the clip has flows but fewer than `i + 1`.
    pub fn flow(&self, i: usize) -> Result<Option<FlowMap>> {
        check_size(self.size)?;
        let Some(flows) = &self.flows else {
            return Ok(None);
        };
        let path = flows.get(i).ok_or_else(|| {
            XincError::InvalidArgument(format!(
                "flow {i} out of range: video {} has {} flow files",
                self.video,
                flows.len()
            ))
        })?;
        let format = self.format;
        load_flow(path, self.frame_size, self.size, |h, w| {
            crop_window(format, h, w)
        })
        .map(Some)
    }
}
