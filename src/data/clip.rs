//! Opening a panoptic video clip of either dataset (spec D.1, D.2, B.0), and reading its frames
//! and flow maps at the working resolution.
//!
//! [`open_clip`] detects the format from the JSON file in the dataset root and hands over to
//! [`crate::data::cityscapes`] or [`crate::data::vipseg`]. Both loaders only find the files; the
//! per-frame annotation assembly is shared and lives here:
//!
//! 1. both panoptic PNGs (single-channel values, RGB segment colours) are decoded and checked
//!    against the frame's size, cropped as the frames are (VIPSeg: centre 640×1280) and resized
//!    with `nearest` to the working size;
//! 2. for each value of the single-channel map, in ascending order, skipping void and categories
//!    outside the table: the mask is `map == value`, the segment id is that of the smallest RGB
//!    colour (in `(R, G, B)` order, as `np.unique(axis=0)`) under the mask, and the JSON's
//!    `segments_info` entry of that id gives the category and crowd flag;
//! 3. instance names `"{category}_{k}"` are given per segment id, in frame order.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader};
use serde::{Deserialize, Deserializer};

use crate::data::flow::{load_flow, FlowMap};
use crate::data::image::{nerv_frame, read_rgb8, resize_bilinear_antialias, ImageTensor};
use crate::data::panoptic::{
    cityscapes_value, rgb_to_id, vipseg_value, CategoryTable, Clip, DatasetFormat, Mask,
    PanopticFrame, PanopticValue, Segment,
};
use crate::data::resize::{center_crop_window, crop_planar, resize_nearest};
use crate::data::{cityscapes, vipseg};
use crate::error::{Result, XincError};

/// The VIPSeg centre crop `[H, W]`, applied before any resize.
pub const VIPSEG_CROP: [usize; 2] = [640, 1280];

/// How to open a clip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipOptions {
    /// Working resolution `[H, W]` of masks, frames and flows.
    pub size: [usize; 2],
    /// The video to open; `None` takes the first video in sorted order.
    pub video: Option<String>,
}

impl Default for ClipOptions {
    fn default() -> Self {
        ClipOptions {
            size: [128, 256],
            video: None,
        }
    }
}

/// The format of the dataset rooted at `root`, from the JSON file it holds. An error lists the
/// files looked for when neither (or both) is present.
pub fn detect_format(root: &Path) -> Result<DatasetFormat> {
    let city = root.join(cityscapes::JSON_FILE).is_file();
    let vip = root.join(vipseg::JSON_FILE).is_file();
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

/// An error unless both sides of the working size `[H, W]` are positive.
fn check_size([h, w]: [usize; 2]) -> Result<()> {
    if h == 0 || w == 0 {
        return Err(XincError::InvalidArgument(format!(
            "working size {h}x{w} must be positive"
        )));
    }
    Ok(())
}

/// The crop window `(top, left, height, width)` that `format` applies to an `h`×`w` raster
/// before resizing: none for Cityscapes-VPS, the centre 640×1280 for VIPSeg.
pub fn crop_window(format: DatasetFormat, h: usize, w: usize) -> (usize, usize, usize, usize) {
    match format {
        DatasetFormat::CityscapesVps => (0, 0, h, w),
        DatasetFormat::Vipseg => center_crop_window(h, w, VIPSEG_CROP[0], VIPSEG_CROP[1]),
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

    /// Frame `i` as the FFN pipeline sees it: cropped, then Pillow's antialiased bilinear resize
    /// to the working size.
    pub fn frame_ffn(&self, i: usize) -> Result<ImageTensor> {
        let img = read_rgb8(self.frame_path(i)?)?;
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
        let img = read_rgb8(self.frame_path(i)?)?;
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
        load_flow(path, self.size, |h, w| crop_window(format, h, w)).map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON pieces shared by both formats.

/// One `segments_info` entry of the dataset JSON.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct SegmentInfo {
    pub id: u32,
    pub category_id: u32,
    #[serde(default, deserialize_with = "flag")]
    pub iscrowd: bool,
}

/// One per-image annotation of the dataset JSON.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ImageAnnotation {
    #[serde(deserialize_with = "id_string")]
    pub image_id: String,
    pub segments_info: Vec<SegmentInfo>,
}

/// Accepts a JSON string or integer as a string id.
pub(crate) fn id_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::Text(s) => s,
        Id::Number(n) => n.to_string(),
    })
}

/// Accepts a JSON boolean or integer (0 / non-zero) as a flag.
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Number(i64),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Number(n) => n != 0,
    })
}

/// Reads and parses a JSON file; a syntax error or missing field names the file and the field.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| XincError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| XincError::config(path, e.to_string()))
}

/// The requested video, checked against the dataset's list, or the first one in sorted order.
pub(crate) fn choose_video(
    requested: Option<&str>,
    videos: &[String],
    json: &Path,
) -> Result<String> {
    match requested {
        Some(v) if videos.iter().any(|x| x == v) => Ok(v.to_string()),
        Some(v) => Err(XincError::InvalidArgument(format!(
            "video `{v}` is not in {} (videos: {})",
            json.display(),
            videos.join(", ")
        ))),
        None => videos
            .first()
            .cloned()
            .ok_or_else(|| XincError::dataset(json, "the dataset lists no video")),
    }
}

/// The files of `dir` whose extension is `ext` (case-insensitive), sorted by name.
pub(crate) fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| XincError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| XincError::io(dir, e))?.path();
        let matches = path
            .extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case(ext));
        if matches && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Like [`sorted_files`], but `None` when the folder is absent or holds no such file.
pub(crate) fn optional_sorted_files(dir: &Path, ext: &str) -> Result<Option<Vec<PathBuf>>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let files = sorted_files(dir, ext)?;
    Ok((!files.is_empty()).then_some(files))
}

/// The file name of `path` as text (empty when it has none).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Per-frame annotation assembly, shared by both loaders.

/// The files and JSON entries of one annotated frame, as a loader finds them.
pub(crate) struct AnnotatedFrameFiles {
    /// Index of the frame in the clip's frame list.
    pub frame_index: usize,
    pub image_id: String,
    /// The single-channel panoptic PNG (`panoptic_inst`, `panomasks`).
    pub values_png: PathBuf,
    /// The RGB panoptic PNG (`panoptic_video`, `panomasksRGB`).
    pub colours_png: PathBuf,
    pub segments_info: Vec<SegmentInfo>,
}

/// Everything a loader found for one clip, before the annotations are assembled.
pub(crate) struct ClipFiles {
    pub format: DatasetFormat,
    pub video: String,
    pub json: PathBuf,
    pub frames: Vec<PathBuf>,
    pub flows: Option<Vec<PathBuf>>,
    pub categories: CategoryTable,
    pub annotated: Vec<AnnotatedFrameFiles>,
}

/// Assembles every annotated frame at the working size `size` and returns the clip.
pub(crate) fn build_clip(mut files: ClipFiles, size: [usize; 2]) -> Result<Clip> {
    check_size(size)?;
    if files.frames.is_empty() {
        return Err(XincError::dataset(
            &files.json,
            format!("video {} has no frame", files.video),
        ));
    }
    files.annotated.sort_by_key(|a| a.frame_index);
    let mut namer = InstanceNamer::default();
    let mut annotations = Vec::with_capacity(files.annotated.len());
    for ann in &files.annotated {
        let frame = files.frames.get(ann.frame_index).ok_or_else(|| {
            XincError::dataset(
                &ann.values_png,
                format!("frame index {} is out of the clip", ann.frame_index),
            )
        })?;
        let maps = read_working_maps(files.format, frame, ann, size)?;
        let ctx = FrameContext {
            format: files.format,
            categories: &files.categories,
            files: ann,
            json: &files.json,
        };
        annotations.push(ctx.assemble(&maps, &mut namer)?);
    }
    Ok(Clip {
        format: files.format,
        video: files.video,
        frames: files.frames,
        flows: files.flows,
        categories: files.categories,
        annotations,
        size,
    })
}

/// A raster of per-pixel codes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CodeMap {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u32>,
}

impl CodeMap {
    /// Crops to `window` and resizes with `nearest` to `size`.
    fn to_working(&self, window: (usize, usize, usize, usize), size: [usize; 2]) -> CodeMap {
        let cropped = crop_planar(&self.data, 1, self.height, self.width, window);
        CodeMap {
            height: size[0],
            width: size[1],
            data: resize_nearest(&cropped, 1, window.2, window.3, size[0], size[1]),
        }
    }
}

/// Both panoptic maps of one frame at the working resolution.
pub(crate) struct WorkingMaps {
    /// Single-channel panoptic values.
    pub values: CodeMap,
    /// RGB colours as `R·2¹⁶ + G·2⁸ + B`, whose order is the lexicographic order of `(R, G, B)`.
    pub colours: CodeMap,
}

/// Reads both panoptic PNGs of a frame, checks them against the frame's size, and brings them
/// to the working resolution.
fn read_working_maps(
    format: DatasetFormat,
    frame: &Path,
    files: &AnnotatedFrameFiles,
    size: [usize; 2],
) -> Result<WorkingMaps> {
    let (h, w) = image_size(frame)?;
    let values = read_values_png(&files.values_png)?;
    let colours = read_colours_png(&files.colours_png)?;
    for (map, path) in [(&values, &files.values_png), (&colours, &files.colours_png)] {
        if (map.height, map.width) != (h, w) {
            return Err(XincError::dataset(
                path,
                format!(
                    "size {}x{} differs from the {h}x{w} of its frame {}",
                    map.height,
                    map.width,
                    frame.display()
                ),
            ));
        }
    }
    let window = crop_window(format, h, w);
    Ok(WorkingMaps {
        values: values.to_working(window, size),
        colours: colours.to_working(window, size),
    })
}

/// `(height, width)` of an image file, from its header only.
fn image_size(path: &Path) -> Result<(usize, usize)> {
    let reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| XincError::io(path, e))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| XincError::image(path, e.to_string()))?;
    Ok((h as usize, w as usize))
}

/// Decodes a PNG file.
fn decode_png(path: &Path) -> Result<DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| XincError::io(path, e))?;
    ImageReader::with_format(Cursor::new(bytes), ImageFormat::Png)
        .decode()
        .map_err(|e| XincError::image(path, e.to_string()))
}

/// Reads a single-channel panoptic PNG (16-bit grey, or 8-bit grey).
pub(crate) fn read_values_png(path: &Path) -> Result<CodeMap> {
    let img = decode_png(path)?;
    let (height, width) = (img.height() as usize, img.width() as usize);
    let data = match &img {
        DynamicImage::ImageLuma16(g) => g.as_raw().iter().map(|&v| v as u32).collect(),
        DynamicImage::ImageLuma8(g) => g.as_raw().iter().map(|&v| v as u32).collect(),
        other => {
            return Err(XincError::image(
                path,
                format!(
                    "a single-channel panoptic map must be 16-bit (or 8-bit) grey, found {:?}",
                    other.color()
                ),
            ))
        }
    };
    Ok(CodeMap {
        height,
        width,
        data,
    })
}

/// Reads an RGB panoptic PNG (8-bit RGB; an alpha channel is ignored) into colour codes.
pub(crate) fn read_colours_png(path: &Path) -> Result<CodeMap> {
    let img = decode_png(path)?;
    let (height, width) = (img.height() as usize, img.width() as usize);
    let code = |p: &[u8]| (p[0] as u32) << 16 | (p[1] as u32) << 8 | p[2] as u32;
    let data = match &img {
        DynamicImage::ImageRgb8(c) => c.as_raw().chunks_exact(3).map(code).collect(),
        DynamicImage::ImageRgba8(c) => c.as_raw().chunks_exact(4).map(code).collect(),
        other => {
            return Err(XincError::image(
                path,
                format!(
                    "an RGB panoptic map must be 8-bit RGB, found {:?}",
                    other.color()
                ),
            ))
        }
    };
    Ok(CodeMap {
        height,
        width,
        data,
    })
}

/// The segment id of a colour code.
fn code_to_id(code: u32) -> u32 {
    rgb_to_id([(code >> 16) as u8, (code >> 8) as u8, code as u8])
}

/// The meaning of a panoptic value in `format`.
fn decode_value(format: DatasetFormat, v: u32) -> PanopticValue {
    match format {
        DatasetFormat::CityscapesVps => cityscapes_value::decode(v),
        DatasetFormat::Vipseg => vipseg_value::decode(v),
    }
}

/// Names instances `"{category}_{k}"` per segment id, in the order they are first seen.
#[derive(Default)]
pub(crate) struct InstanceNamer {
    by_id: HashMap<u32, String>,
    per_category: HashMap<String, usize>,
}

impl InstanceNamer {
    /// The name of segment `id` of category `category`, given on first sight.
    pub fn name(&mut self, id: u32, category: &str) -> String {
        if let Some(name) = self.by_id.get(&id) {
            return name.clone();
        }
        let k = self.per_category.entry(category.to_string()).or_insert(0);
        let name = format!("{category}_{k}");
        *k += 1;
        self.by_id.insert(id, name.clone());
        name
    }
}

/// What the assembly of one frame needs besides its maps.
pub(crate) struct FrameContext<'a> {
    pub format: DatasetFormat,
    pub categories: &'a CategoryTable,
    pub files: &'a AnnotatedFrameFiles,
    pub json: &'a Path,
}

impl FrameContext<'_> {
    /// The frame's segments, in ascending panoptic value order.
    pub fn assemble(&self, maps: &WorkingMaps, namer: &mut InstanceNamer) -> Result<PanopticFrame> {
        let mut values = maps.values.data.clone();
        values.sort_unstable();
        values.dedup();
        let mut segments = Vec::new();
        for v in values {
            if let Some(segment) = self.segment(v, maps, namer)? {
                segments.push(segment);
            }
        }
        Ok(PanopticFrame {
            frame_index: self.files.frame_index,
            image_id: self.files.image_id.clone(),
            segments,
        })
    }

    /// The segment of panoptic value `v`, `None` for void and categories outside the table.
    fn segment(
        &self,
        v: u32,
        maps: &WorkingMaps,
        namer: &mut InstanceNamer,
    ) -> Result<Option<Segment>> {
        let (category_id, numbered) = match decode_value(self.format, v) {
            PanopticValue::Void => return Ok(None),
            PanopticValue::Region { category } => (category, false),
            PanopticValue::Instance { category, .. } => (category, true),
        };
        let Some(category) = self.categories.get(category_id) else {
            return Ok(None);
        };
        let mask: Vec<bool> = maps.values.data.iter().map(|&x| x == v).collect();
        let first_colour = mask
            .iter()
            .zip(&maps.colours.data)
            .filter_map(|(&m, &c)| m.then_some(c))
            .min();
        let Some(colour) = first_colour else {
            return Ok(None);
        };
        let id = code_to_id(colour);
        let info = self.segment_info(v, id)?;
        if info.category_id != category_id {
            return Err(self.error(format!(
                "value {v} (category {category_id}) has segment id {id}, which `segments_info` of \
                 image {} gives category {}",
                self.files.image_id, info.category_id
            )));
        }
        let mask = Mask {
            height: maps.values.height,
            width: maps.values.width,
            data: mask,
        };
        Ok(Some(Segment {
            segment_id: id,
            category_id,
            category: category.name.clone(),
            isthing: category.isthing,
            iscrowd: category.isthing && (!numbered || info.iscrowd),
            instance: namer.name(id, &category.name),
            area: mask.area(),
            bbox: mask.bbox().unwrap_or_default(),
            mask,
        }))
    }

    /// The `segments_info` entry of segment `id` (found under value `v`).
    fn segment_info(&self, v: u32, id: u32) -> Result<&SegmentInfo> {
        self.files
            .segments_info
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| {
                self.error(format!(
                    "value {v} has segment id {id}, which is not in `segments_info` of image {} \
                     in {}",
                    self.files.image_id,
                    self.json.display()
                ))
            })
    }

    /// A dataset error about this frame's single-channel PNG.
    fn error(&self, reason: String) -> XincError {
        XincError::dataset(&self.files.values_png, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::panoptic::Category;

    fn files(segments_info: Vec<SegmentInfo>) -> AnnotatedFrameFiles {
        AnnotatedFrameFiles {
            frame_index: 0,
            image_id: "img".into(),
            values_png: "values.png".into(),
            colours_png: "colours.png".into(),
            segments_info,
        }
    }

    fn map(data: Vec<u32>) -> CodeMap {
        CodeMap {
            height: 1,
            width: data.len(),
            data,
        }
    }

    fn info(id: u32, category_id: u32) -> SegmentInfo {
        SegmentInfo {
            id,
            category_id,
            iscrowd: false,
        }
    }

    #[test]
    fn the_segment_id_is_the_lexicographically_first_colour() {
        // Colours (R,G,B): (1,0,142) has id 1 + 142·65536; (0,5,200) is lexicographically smaller
        // (R = 0) but has the larger id 5·256 + 200·65536. np.unique(axis=0) picks (0,5,200).
        let a = 1 << 16 | 142;
        let b = 5 << 8 | 200;
        let categories = CategoryTable {
            categories: vec![Category {
                id: 13,
                name: "car".into(),
                isthing: true,
                color: [0, 0, 142],
            }],
        };
        let id_b = 5 * 256 + 200 * 65536;
        let files = files(vec![info(id_b, 13)]);
        let ctx = FrameContext {
            format: DatasetFormat::CityscapesVps,
            categories: &categories,
            files: &files,
            json: Path::new("gt.json"),
        };
        let maps = WorkingMaps {
            values: map(vec![13001, 13001, 255]),
            colours: map(vec![a, b, 0]),
        };
        let frame = ctx.assemble(&maps, &mut InstanceNamer::default()).unwrap();
        assert_eq!(frame.segments.len(), 1);
        assert_eq!(frame.segments[0].segment_id, id_b);
        assert_eq!(frame.segments[0].instance, "car_0");
        assert!(!frame.segments[0].iscrowd);
    }

    #[test]
    fn names_are_stable_per_segment_id() {
        let mut namer = InstanceNamer::default();
        assert_eq!(namer.name(7, "car"), "car_0");
        assert_eq!(namer.name(9, "car"), "car_1");
        assert_eq!(namer.name(3, "road"), "road_0");
        assert_eq!(namer.name(7, "car"), "car_0");
    }

    #[test]
    fn vipseg_crop_is_the_centre_640_by_1280() {
        assert_eq!(
            crop_window(DatasetFormat::Vipseg, 720, 1280),
            (40, 0, 640, 1280)
        );
        assert_eq!(
            crop_window(DatasetFormat::CityscapesVps, 1024, 2048),
            (0, 0, 1024, 2048)
        );
    }
}
