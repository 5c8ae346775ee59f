//! The loader toolkit that the Cityscapes-VPS and VIPSeg loaders ([`crate::data::cityscapes`],
//! [`crate::data::vipseg`]) share: how to open a clip ([`ClipOptions`]), the JSON pieces of both
//! formats, the file checks, the size limits, and the per-frame annotation assembly
//! ([`crate::data::clip::open_clip`] dispatches to the loaders, which call this):
//!
//! 1. both panoptic PNGs (single-channel values, RGB segment colours) are decoded and checked
//!    against the frame's size, cropped as the frames are (VIPSeg: centre 640×1280) and resized
//!    with `nearest` to the working size;
//! 2. for each value of the single-channel map, in ascending order, skipping void and categories
//!    outside the table: the mask is `map == value`, the segment id is that of the smallest RGB
//!    colour (in `(R, G, B)` order, as `np.unique(axis=0)`) under the mask, and the JSON's
//!    `segments_info` entry of that id gives the category and crowd flag;
//! 3. instance names `"{category}_{k}"` are given per segment id, in frame order.
//!
//! Hostile datasets: every file a clip reads (the JSON, frames, panoptic maps, flows) must be a
//! regular file that resolves inside the dataset root (a symlink that stays inside is followed,
//! one that leads out is refused) and is read within its [`FileLimit`]; every id that becomes a
//! path component is checked ([`crate::io::files::check_component`]). Every frame of a clip must
//! have the same size, and its maps and flows that size too. Sizes are bounded before anything
//! is allocated from them: the working size ([`MAX_WORKING_PIXELS`]), the frames of a video
//! ([`MAX_FRAMES_PER_VIDEO`]), the segments of a frame ([`MAX_SEGMENTS_PER_FRAME`]) and the
//! masks of a clip ([`MASK_BUDGET_MIB`]). A single-channel map must keep its ids exactly: an 8-bit
//! map is refused where the dataset needs 16-bit values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};
use serde::{Deserialize, Deserializer};

use crate::data::image::{decode_image, image_dimensions};
use crate::data::panoptic::{
    cityscapes_value, rgb_to_id, vipseg_value, CategoryTable, Clip, DatasetFormat, Mask,
    PanopticFrame, PanopticValue, Segment,
};
use crate::data::resize::{center_crop_window, crop_planar, resize_nearest};
use crate::error::{Result, XincError};
use crate::io::files::{
    check_regular, check_within, checked_product, env_limit, read_bytes, FileLimit,
};

/// The VIPSeg centre crop `[H, W]`, applied before any resize.
pub const VIPSEG_CROP: [usize; 2] = [640, 1280];

/// The largest working size, in pixels: 2²², twice a full Cityscapes frame (1024×2048, the
/// largest frame of either dataset). A working size above the frames' own only upsamples them;
/// at this size a frame's code maps take 16 MiB each and a mask 4 MiB.
pub const MAX_WORKING_PIXELS: u64 = 1 << 22;

/// The most frames one video may list: 100 000, an hour of 30 fps video, where a Cityscapes-VPS
/// clip has 30 and the longest VIPSeg videos a few hundred. Bounds what a small JSON can make
/// the loader allocate (a path per frame, a header read per frame).
pub const MAX_FRAMES_PER_VIDEO: usize = 100_000;

/// The most segments one annotated frame may hold (distinct values of known categories at the
/// working size): 1000. Real frames of both datasets hold at most a few hundred; each segment
/// gets a full working-size mask, so a frame of 65 535 one-pixel segments would otherwise ask for
/// 65 535 masks. `XINC_MAX_SEGMENTS` raises it.
pub const MAX_SEGMENTS_PER_FRAME: u64 = 1000;
/// The environment variable that raises [`MAX_SEGMENTS_PER_FRAME`].
pub const MAX_SEGMENTS_ENV: &str = "XINC_MAX_SEGMENTS";

/// The most memory the masks of one clip may take (a byte a pixel), in MiB: 2048. A VIPSeg video
/// of 100 annotated frames of 100 segments at the paper's 128×256 takes 312 MiB, a Cityscapes-VPS
/// clip (6 annotated frames) a few MiB. `XINC_MAX_MASK_MIB` raises it (a long clip at a large
/// working size).
pub const MASK_BUDGET_MIB: u64 = 2048;
/// The environment variable that raises [`MASK_BUDGET_MIB`].
pub const MASK_BUDGET_ENV: &str = "XINC_MAX_MASK_MIB";

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

/// An error unless both sides of the working size `[H, W]` are positive and it holds at most
/// [`MAX_WORKING_PIXELS`] pixels.
pub(crate) fn check_size([h, w]: [usize; 2]) -> Result<()> {
    if h == 0 || w == 0 {
        return Err(XincError::InvalidArgument(format!(
            "working size {h}x{w} must be positive"
        )));
    }
    let field = format!("working size {h}x{w} (--size) in pixels");
    let pixels = checked_product(&field, &[h, w])?;
    crate::io::files::check_size(
        &field,
        pixels as u64,
        MAX_WORKING_PIXELS,
        "fixed: twice a full 1024x2048 Cityscapes frame; a larger working size only upsamples",
    )
}

/// The crop window `(top, left, height, width)` that `format` applies to an `h`×`w` raster
/// before resizing: none for Cityscapes-VPS, the centre 640×1280 for VIPSeg.
pub(crate) fn crop_window(
    format: DatasetFormat,
    h: usize,
    w: usize,
) -> (usize, usize, usize, usize) {
    match format {
        DatasetFormat::CityscapesVps => (0, 0, h, w),
        DatasetFormat::Vipseg => center_crop_window(h, w, VIPSEG_CROP[0], VIPSEG_CROP[1]),
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

/// Reads and parses the dataset JSON `name` of `root`: a regular file inside the root, of at
/// most [`FileLimit::DATASET_JSON`] bytes (serde_json limits nesting to 128 levels); a syntax
/// error, a wrong type or a missing field names the file and the field.
pub(crate) fn read_dataset_json<T: serde::de::DeserializeOwned>(
    root: &Path,
    name: &str,
) -> Result<(PathBuf, T)> {
    let path = root.join(name);
    dataset_file(root, &path, "dataset annotation JSON")?;
    let bytes = read_bytes(&path, &FileLimit::DATASET_JSON)?;
    let value =
        serde_json::from_slice(&bytes).map_err(|e| XincError::config(&path, e.to_string()))?;
    Ok((path, value))
}

/// Refuses `path` unless it is a regular file that resolves inside the dataset `root`.
pub(crate) fn dataset_file(root: &Path, path: &Path, what: &str) -> Result<()> {
    check_regular(path, what)?;
    check_within(root, path, what)?;
    Ok(())
}

/// Refuses an id from `json` that would become a path component ([`check_component`]).
///
/// [`check_component`]: crate::io::files::check_component
pub(crate) fn check_id(json: &Path, field: &str, id: &str) -> Result<()> {
    match crate::io::files::component_problem(id) {
        None => Ok(()),
        Some(why) => Err(XincError::dataset(
            json,
            format!("{field} {id:?} cannot name a file or folder: {why}"),
        )),
    }
}

/// An error unless a video's `n` frames are within [`MAX_FRAMES_PER_VIDEO`].
pub(crate) fn check_frame_count(json: &Path, video: &str, n: usize) -> Result<()> {
    if n <= MAX_FRAMES_PER_VIDEO {
        return Ok(());
    }
    Err(XincError::dataset(
        json,
        format!(
            "video {video} lists {n} frames, more than the limit of {MAX_FRAMES_PER_VIDEO} \
             (fixed: an hour of 30 fps video)"
        ),
    ))
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

/// The files of `dir` whose extension is `ext` (case-insensitive), sorted by name. An entry with
/// that extension that is not a regular file (a FIFO, a device, a directory, a dangling link) is
/// an error naming it, not skipped.
pub(crate) fn sorted_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| XincError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| XincError::io(dir, e))?.path();
        let matches = path
            .extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case(ext));
        if matches {
            check_regular(&path, &format!(".{ext} file"))?;
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
    /// The dataset root: every file of the clip must resolve inside it.
    pub root: PathBuf,
    pub video: String,
    pub json: PathBuf,
    pub frames: Vec<PathBuf>,
    pub flows: Option<Vec<PathBuf>>,
    pub categories: CategoryTable,
    pub annotated: Vec<AnnotatedFrameFiles>,
}

/// Assembles every annotated frame at the working size `size` and returns the clip. Every file
/// is checked first (regular, inside the root), then every frame's size (from its header).
pub(crate) fn build_clip(mut files: ClipFiles, size: [usize; 2]) -> Result<Clip> {
    check_size(size)?;
    if files.frames.is_empty() {
        return Err(XincError::dataset(
            &files.json,
            format!("video {} has no frame", files.video),
        ));
    }
    check_frame_count(&files.json, &files.video, files.frames.len())?;
    check_files(&files)?;
    let frame_size = common_frame_size(&files.frames)?;
    files.annotated.sort_by_key(|a| a.frame_index);
    let mut namer = InstanceNamer::default();
    let mut budget = MaskBudget::new()?;
    let mut annotations = Vec::with_capacity(files.annotated.len());
    for ann in &files.annotated {
        if ann.frame_index >= files.frames.len() {
            return Err(XincError::dataset(
                &ann.values_png,
                format!("frame index {} is out of the clip", ann.frame_index),
            ));
        }
        let ctx = FrameContext {
            format: files.format,
            categories: &files.categories,
            files: ann,
            json: &files.json,
        };
        let maps = ctx.read_maps(&files.frames[ann.frame_index], frame_size, size)?;
        annotations.push(ctx.assemble(&maps, &mut namer, &mut budget)?);
    }
    Ok(Clip {
        format: files.format,
        video: files.video,
        frames: files.frames,
        flows: files.flows,
        categories: files.categories,
        annotations,
        size,
        frame_size,
    })
}

/// Refuses the clip unless every file it will read is a regular file inside the root.
fn check_files(files: &ClipFiles) -> Result<()> {
    let root = &files.root;
    for frame in &files.frames {
        dataset_file(root, frame, "frame")?;
    }
    for ann in &files.annotated {
        dataset_file(root, &ann.values_png, "panoptic map")?;
        dataset_file(root, &ann.colours_png, "panoptic map")?;
    }
    for flow in files.flows.iter().flatten() {
        dataset_file(root, flow, "flow file")?;
    }
    Ok(())
}

/// The `[H, W]` every frame has (from the headers), or an error naming a frame of another size
/// and both sizes.
fn common_frame_size(frames: &[PathBuf]) -> Result<[usize; 2]> {
    let (h, w) = image_dimensions(&frames[0])?;
    for frame in &frames[1..] {
        let (fh, fw) = image_dimensions(frame)?;
        if (fh, fw) != (h, w) {
            return Err(XincError::dataset(
                frame,
                format!(
                    "size {fh}x{fw} differs from the {h}x{w} of the clip's first frame {}",
                    frames[0].display()
                ),
            ));
        }
    }
    Ok([h, w])
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

/// Decodes a PNG file (bounded: [`decode_image`]).
fn decode_png(path: &Path) -> Result<DynamicImage> {
    decode_image(path, Some(ImageFormat::Png))
}

/// Reads a single-channel panoptic PNG (16-bit grey, or 8-bit grey); returns the map and its
/// bit depth.
pub(crate) fn read_values_png(path: &Path) -> Result<(CodeMap, u8)> {
    let img = decode_png(path)?;
    let (height, width) = (img.height() as usize, img.width() as usize);
    let (data, bits) = match &img {
        DynamicImage::ImageLuma16(g) => (g.as_raw().iter().map(|&v| v as u32).collect(), 16),
        DynamicImage::ImageLuma8(g) => (g.as_raw().iter().map(|&v| v as u32).collect(), 8),
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
    let map = CodeMap {
        height,
        width,
        data,
    };
    Ok((map, bits))
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

/// What the masks of a clip may still take, in bytes ([`MASK_BUDGET_MIB`]), and the cap on
/// segments per frame ([`MAX_SEGMENTS_PER_FRAME`]).
pub(crate) struct MaskBudget {
    left: u64,
    total: u64,
    max_segments: u64,
}

impl MaskBudget {
    /// The budget of one clip: the defaults, or the environment's.
    pub fn new() -> Result<Self> {
        let mib = env_limit(MASK_BUDGET_ENV, MASK_BUDGET_MIB)?;
        let total = mib.saturating_mul(1 << 20);
        Ok(MaskBudget {
            left: total,
            total,
            max_segments: env_limit(MAX_SEGMENTS_ENV, MAX_SEGMENTS_PER_FRAME)?,
        })
    }

    /// Takes `segments` masks of `pixels` bytes each for the frame of `path`, or refuses.
    fn take(&mut self, path: &Path, segments: usize, pixels: usize) -> Result<()> {
        if segments as u64 > self.max_segments {
            return Err(XincError::dataset(
                path,
                format!(
                    "{segments} segments in one frame (distinct values of known categories at \
                     the working size), more than the limit of {} (set {MAX_SEGMENTS_ENV} to \
                     raise it)",
                    self.max_segments
                ),
            ));
        }
        let bytes = (segments as u64).saturating_mul(pixels as u64);
        if bytes > self.left {
            return Err(XincError::dataset(
                path,
                format!(
                    "the masks of the clip up to this frame ({segments} here, {pixels} pixels \
                     each) would take more than {} MiB (set {MASK_BUDGET_ENV} to raise it, or \
                     lower --size)",
                    self.total >> 20
                ),
            ));
        }
        self.left -= bytes;
        Ok(())
    }
}

/// What the assembly of one frame needs besides its maps.
pub(crate) struct FrameContext<'a> {
    pub format: DatasetFormat,
    pub categories: &'a CategoryTable,
    pub files: &'a AnnotatedFrameFiles,
    pub json: &'a Path,
}

/// One value of a frame's single-channel map that becomes a segment.
struct SegmentValue {
    value: u32,
    category_id: u32,
    /// An instance value (`class·1000 + k`, `(class + 1)·100 + k`), not a region.
    numbered: bool,
}

impl FrameContext<'_> {
    /// Reads both panoptic PNGs of the frame, checks their bit depth and their size against the
    /// clip's `frame_size` (`frame` names it), and brings them to the working resolution.
    fn read_maps(&self, frame: &Path, [h, w]: [usize; 2], size: [usize; 2]) -> Result<WorkingMaps> {
        let files = self.files;
        let (values, bits) = read_values_png(&files.values_png)?;
        if bits < 16 {
            if let Some(why) = self.needs_16_bit() {
                return Err(XincError::dataset(
                    &files.values_png,
                    format!(
                        "an {bits}-bit grey panoptic map cannot hold the ids of this frame: \
                         {why}; an {bits}-bit map has lost them (refused: write it as 16-bit grey)"
                    ),
                ));
            }
        }
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
        let window = crop_window(self.format, h, w);
        Ok(WorkingMaps {
            values: values.to_working(window, size),
            colours: colours.to_working(window, size),
        })
    }

    /// Why this frame's single-channel map needs 16-bit values, or `None` when 8 bits hold every
    /// value it can have: Cityscapes-VPS things are `class·1000 + k` (a car is 13000 and up), so
    /// its maps are 16-bit; a VIPSeg frame needs 16 bits when `segments_info` lists a thing
    /// instance (`(class + 1)·100 + k`), while regions and crowds (`class + 1`) fit in 8 bits.
    fn needs_16_bit(&self) -> Option<String> {
        match self.format {
            DatasetFormat::CityscapesVps => Some(
                "Cityscapes-VPS values are class·1000 + k for things (13000 and up for cars), \
                 up to 18999"
                    .into(),
            ),
            DatasetFormat::Vipseg => self
                .files
                .segments_info
                .iter()
                .find(|s| {
                    !s.iscrowd
                        && self
                            .categories
                            .get(s.category_id)
                            .is_some_and(|c| c.isthing)
                })
                .map(|s| {
                    format!(
                        "`segments_info` of image {} lists thing instance {} (category {}), whose \
                         value (category + 1)·100 + k needs 16 bits",
                        self.files.image_id, s.id, s.category_id
                    )
                }),
        }
    }

    /// The values of the map that become segments, ascending: not void, of a category in the
    /// table.
    fn segment_values(&self, values: &CodeMap) -> Vec<SegmentValue> {
        let mut distinct = values.data.clone();
        distinct.sort_unstable();
        distinct.dedup();
        distinct
            .into_iter()
            .filter_map(|value| {
                let (category_id, numbered) = match decode_value(self.format, value) {
                    PanopticValue::Void => return None,
                    PanopticValue::Region { category } => (category, false),
                    PanopticValue::Instance { category, .. } => (category, true),
                };
                self.categories.get(category_id)?;
                Some(SegmentValue {
                    value,
                    category_id,
                    numbered,
                })
            })
            .collect()
    }

    /// The frame's segments, in ascending panoptic value order. The masks are built in one pass
    /// over the pixels, after their number and memory are checked against `budget`.
    pub fn assemble(
        &self,
        maps: &WorkingMaps,
        namer: &mut InstanceNamer,
        budget: &mut MaskBudget,
    ) -> Result<PanopticFrame> {
        let kept = self.segment_values(&maps.values);
        let pixels = maps.values.data.len();
        budget.take(&self.files.values_png, kept.len(), pixels)?;
        let index: HashMap<u32, usize> =
            kept.iter().enumerate().map(|(i, s)| (s.value, i)).collect();
        let mut masks: Vec<Vec<bool>> = kept.iter().map(|_| vec![false; pixels]).collect();
        let mut first_colour = vec![u32::MAX; kept.len()];
        for (p, (v, &c)) in maps.values.data.iter().zip(&maps.colours.data).enumerate() {
            if let Some(&i) = index.get(v) {
                masks[i][p] = true;
                first_colour[i] = first_colour[i].min(c);
            }
        }
        let infos = self.segment_infos()?;
        let segments = kept
            .iter()
            .zip(masks)
            .zip(first_colour)
            .map(|((s, data), colour)| {
                let mask = Mask {
                    height: maps.values.height,
                    width: maps.values.width,
                    data,
                };
                self.segment(s, mask, code_to_id(colour), &infos, namer)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PanopticFrame {
            frame_index: self.files.frame_index,
            image_id: self.files.image_id.clone(),
            segments,
        })
    }

    /// The frame's `segments_info` entries by segment id; an id listed twice is an error.
    fn segment_infos(&self) -> Result<HashMap<u32, &SegmentInfo>> {
        let mut by_id = HashMap::with_capacity(self.files.segments_info.len());
        for s in &self.files.segments_info {
            if by_id.insert(s.id, s).is_some() {
                return Err(XincError::dataset(
                    self.json,
                    format!(
                        "`segments_info` of image {} lists segment id {} twice",
                        self.files.image_id, s.id
                    ),
                ));
            }
        }
        Ok(by_id)
    }

    /// The segment of value `s` with mask `mask`, whose first colour under the mask is segment
    /// `id`.
    fn segment(
        &self,
        s: &SegmentValue,
        mask: Mask,
        id: u32,
        infos: &HashMap<u32, &SegmentInfo>,
        namer: &mut InstanceNamer,
    ) -> Result<Segment> {
        let (v, category_id) = (s.value, s.category_id);
        let category = self
            .categories
            .get(category_id)
            .expect("segment values are of known categories");
        let info = infos.get(&id).ok_or_else(|| {
            self.error(format!(
                "value {v} has segment id {id}, which is not in `segments_info` of image {} in {}",
                self.files.image_id,
                self.json.display()
            ))
        })?;
        if info.category_id != category_id {
            return Err(self.error(format!(
                "value {v} (category {category_id}) has segment id {id}, which `segments_info` of \
                 image {} gives category {}",
                self.files.image_id, info.category_id
            )));
        }
        Ok(Segment {
            segment_id: id,
            category_id,
            category: category.name.clone(),
            isthing: category.isthing,
            iscrowd: category.isthing && (!s.numbered || info.iscrowd),
            instance: namer.name(id, &category.name),
            area: mask.area(),
            bbox: mask.bbox().unwrap_or_default(),
            mask,
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
        let mut budget = MaskBudget::new().unwrap();
        let frame = ctx
            .assemble(&maps, &mut InstanceNamer::default(), &mut budget)
            .unwrap();
        assert_eq!(frame.segments.len(), 1);
        assert_eq!(frame.segments[0].segment_id, id_b);
        assert_eq!(frame.segments[0].instance, "car_0");
        assert!(!frame.segments[0].iscrowd);
    }

    #[test]
    fn segments_per_frame_and_mask_memory_are_bounded() {
        // 2001 distinct car instances (13000..=15000 spans cars, trucks and buses) in one row.
        let categories = CategoryTable::cityscapes_vps();
        let files = files(vec![]);
        let ctx = FrameContext {
            format: DatasetFormat::CityscapesVps,
            categories: &categories,
            files: &files,
            json: Path::new("gt.json"),
        };
        let values: Vec<u32> = (13_000..=15_000).collect();
        let maps = WorkingMaps {
            colours: map(vec![0; values.len()]),
            values: map(values),
        };
        let mut budget = MaskBudget::new().unwrap();
        let e = ctx
            .assemble(&maps, &mut InstanceNamer::default(), &mut budget)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("values.png")
                && e.contains("2001 segments in one frame")
                && e.contains("limit of 1000")
                && e.contains(MAX_SEGMENTS_ENV),
            "{e}"
        );
        // 1000 masks of 2001 pixels fit a budget of 2 MB, not of 1 MB.
        let mut small = MaskBudget {
            left: 1 << 20,
            total: 1 << 20,
            max_segments: 1000,
        };
        let e = small.take(Path::new("m.png"), 1000, 2001).unwrap_err();
        assert!(e.to_string().contains("more than 1 MiB"), "{e}");
        assert!(small.take(Path::new("m.png"), 500, 2001).is_ok());
        assert_eq!(small.left, (1 << 20) - 500 * 2001);
    }

    #[test]
    fn eight_bit_maps_are_refused_where_ids_need_sixteen_bits() {
        let city = CategoryTable::cityscapes_vps();
        let vip = CategoryTable {
            categories: vec![
                Category {
                    id: 0,
                    name: "wall".into(),
                    isthing: false,
                    color: [1, 0, 0],
                },
                Category {
                    id: 48,
                    name: "car".into(),
                    isthing: true,
                    color: [2, 0, 0],
                },
            ],
        };
        let crowd = SegmentInfo {
            id: 2,
            category_id: 48,
            iscrowd: true,
        };
        let cases = [
            (DatasetFormat::CityscapesVps, &city, vec![], true),
            (DatasetFormat::Vipseg, &vip, vec![info(1, 0), crowd], false),
            (
                DatasetFormat::Vipseg,
                &vip,
                vec![info(1, 0), info(3, 48)],
                true,
            ),
        ];
        for (format, categories, infos, needs) in cases {
            let files = files(infos);
            let ctx = FrameContext {
                format,
                categories,
                files: &files,
                json: Path::new("gt.json"),
            };
            assert_eq!(ctx.needs_16_bit().is_some(), needs, "{format:?}");
        }
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
