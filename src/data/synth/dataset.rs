//! The synthetic dataset writer: writes a [`StreetVideo`] clip as a complete Cityscapes-VPS or
//! VIPSeg dataset root (spec D.1–D.3), with exact optical flow, so that every loader and analysis
//! runs on a fresh machine without the real data.
//!
//! Cityscapes-VPS (video `0005` unless given; frames `frankfurt_000000_001736`, `…_001737`, …):
//!
//! ```text
//! panoptic_gt_val_city_vps.json
//! val/img_all/frankfurt_000000_{frame:06}_leftImg8bit.png                 every frame
//! val/panoptic_inst/{VVVV}_{FFFF}_frankfurt_000000_{frame:06}_final_mask.png   frames 0, 5, 10, …
//! val/panoptic_video/{same name}                                          RGB segment ids
//! vps_subset/val/{VVVV}/images/frankfurt_000000_{frame:06}_leftImg8bit.png
//! vps_subset/val/{VVVV}/flows/frankfurt_000000_{frame:06}_leftImg8bit.npy     |flow|, f32 [H, W]
//! vps_subset/val/{VVVV}/flows_uv/frankfurt_000000_{frame:06}_leftImg8bit.npy  (u, v), f32 [H, W, 2]
//! ```
//!
//! VIPSeg (video `26_cblDl5vCZnw` unless given; frames `00000976`, `00000977`, …, all annotated):
//!
//! ```text
//! panoptic_gt_VIPSeg.json
//! images/{video}/{frame:08}.jpg       panomasks/{video}/{frame:08}.png   panomasksRGB/{video}/{frame:08}.png
//! flows/{video}/{frame:08}.npy        flows_uv/{video}/{frame:08}.npy
//! ```
//!
//! Flow is in pixels per frame: the velocity of the thing visible at each pixel, 0 on stuff. Every
//! file is written atomically; the output is a pure function of [`SynthParams`]. The parameters
//! are checked before anything is written ([`SYNTH_MAX_PIXELS`]); a new dataset root is written
//! into a temporary sibling folder renamed at the end, so that a failed run leaves nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::CompressionType;
use image::{ExtendedColorType, ImageBuffer, ImageEncoder, Luma, RgbImage};
use serde_json::{json, Value};

use super::scene::{Frame, Label, SceneClass, StreetVideo};
use crate::data::image::write_png;
use crate::data::panoptic::{
    cityscapes_value, id_to_rgb, rgb_to_id, vipseg_value, Category, CategoryTable, DatasetFormat,
    PanopticValue,
};
use crate::error::{Result, XincError};
use crate::io::npy::write_npy;
use crate::io::write_atomic;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthParams {
    /// The dataset layout to write.
    pub format: DatasetFormat,
    /// Number of frames of the clip (1..=9999).
    pub frames: usize,
    /// Frame size `[H, W]` in pixels, each at least 16.
    pub size: [usize; 2],
    /// Varies the buildings, colours, and the things' starts and speeds.
    pub seed: u64,
    /// Also write the exact flow vectors (`flows_uv/*.npy`, f32 `[H, W, 2]`, 8 bytes a pixel).
    /// The magnitude maps (`flows/*.npy`) are always written.
    pub vector_flow: bool,
    /// The video id: four digits for Cityscapes-VPS (default `0005`), a VIPSeg-style id for
    /// VIPSeg (default `26_cblDl5vCZnw`).
    pub video: Option<String>,
}

impl Default for SynthParams {
    /// A 30-frame 256×512 Cityscapes-VPS clip, seed 0.
    fn default() -> Self {
        SynthParams {
            format: DatasetFormat::CityscapesVps,
            frames: 30,
            size: [256, 512],
            seed: 0,
            vector_flow: false,
            video: None,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSummary {
    /// The dataset root.
    pub root: PathBuf,
    /// The layout written.
    pub format: DatasetFormat,
    /// The video id.
    pub video: String,
    /// `[H, W]`.
    pub size: [usize; 2],
    /// Number of frames.
    pub frames: usize,
    /// Frames with panoptic annotations (every 5th for Cityscapes-VPS, all for VIPSeg).
    pub annotated_frames: usize,
    /// The moving things, sorted by name.
    pub instances: Vec<SynthInstance>,
}

/// One moving thing of a generated clip.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthInstance {
    /// `"{category}_{k}"`, e.g. `car_0`: the name the loaders give it (spec B.0), where `k`
    /// counts the category's instances by first annotated appearance. It may differ from
    /// [`super::scene::Thing::name`], which numbers in scene order.
    pub name: String,
    /// The dataset's category id.
    pub category_id: u32,
    /// Its panoptic segment id (colour `R + 256·G + 65536·B`), the same in every frame.
    pub segment_id: u32,
    /// Its value in the single-channel panoptic PNGs.
    pub value: u32,
    /// Constant velocity `[u, v]` in pixels per frame.
    pub velocity: [f32; 2],
    /// Number of frames where at least one of its pixels is visible.
    pub visible_frames: usize,
    /// Its index in [`super::scene::StreetVideo::things`] (its
    /// [`super::scene::Label::Thing`] in the rendered labels).
    pub thing: usize,
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [h, w] = self.size;
        writeln!(
            f,
            "{:?} video {} at {}: {} frames of {h}x{w}, {} annotated",
            self.format,
            self.video,
            self.root.display(),
            self.frames,
            self.annotated_frames
        )?;
        for i in &self.instances {
            writeln!(
                f,
                "  {:<9} id {:>8}  value {:>5}  velocity ({:+}, {:+}) px/frame  visible in {} frames",
                i.name, i.segment_id, i.value, i.velocity[0], i.velocity[1], i.visible_frames
            )?;
        }
        Ok(())
    }
}

/// Writes the clip described by `params` as a dataset rooted at `out`. A new root is written into
/// a temporary sibling folder, renamed to `out` at the end (removed when the run fails); into an
/// existing root, files are overwritten in place, and frame files of an earlier, longer clip are
/// removed.
pub fn generate(params: &SynthParams, out: &Path) -> Result<SynthSummary> {
    Target::new(params, out)?;
    if out.symlink_metadata().is_ok() {
        if !out.is_dir() {
            return Err(XincError::io(
                out,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "synth --out exists and is not a folder",
                ),
            ));
        }
        return generate_into(params, out, out);
    }
    let staging = staging_dir(out)?;
    let result = generate_into(params, &staging, out).and_then(|summary| {
        std::fs::rename(&staging, out).map_err(|e| XincError::io(out, e))?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// A fresh temporary folder beside `out` (`.{name}.{pid}.synth.tmp`), its parent created.
fn staging_dir(out: &Path) -> Result<PathBuf> {
    let name = out.file_name().ok_or_else(|| {
        XincError::InvalidArgument(format!("synth --out {} names no folder", out.display()))
    })?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| XincError::io(parent, e))?;
    let staging = parent.join(format!(
        ".{}.{}.synth.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    if staging.symlink_metadata().is_ok() {
        std::fs::remove_dir_all(&staging).map_err(|e| XincError::io(&staging, e))?;
    }
    Ok(staging)
}

/// [`generate`] writing into `root`; the summary names `out`.
fn generate_into(params: &SynthParams, root: &Path, out: &Path) -> Result<SynthSummary> {
    let target = Target::new(params, root)?;
    let [height, width] = params.size;
    let scene = StreetVideo::new(height, width, params.seed);
    let numbers = instance_numbers(&scene, &target);
    let codes = Codes::new(&scene, &target, &numbers);
    let mut written = BTreeSet::new();
    let mut annotations = Vec::new();
    let mut visible = vec![0usize; scene.things().len()];
    for t in 0..params.frames {
        let frame = scene.render(t);
        count_visible(&frame, &mut visible);
        target.write_frame(t, &frame, &mut written)?;
        if target.is_annotated(t) {
            annotations.push(target.write_annotation(t, &frame, &codes, &mut written)?);
        }
    }
    target.write_json(&annotations)?;
    target.remove_stale(&written)?;
    Ok(SynthSummary {
        root: out.to_path_buf(),
        format: params.format,
        video: target.video.clone(),
        size: params.size,
        frames: params.frames,
        annotated_frames: annotations.len(),
        instances: codes.instances(&scene, &numbers, &visible),
    })
}

/// The things with at least one pixel in `frame`.
fn visible_things(frame: &Frame) -> HashSet<usize> {
    (frame.labels.iter())
        .filter_map(|l| match l {
            Label::Thing(i) => Some(*i),
            _ => None,
        })
        .collect()
}

/// Adds one to `visible[i]` for every thing `i` with a pixel in `frame`.
fn count_visible(frame: &Frame, visible: &mut [usize]) {
    visible_things(frame)
        .into_iter()
        .for_each(|i| visible[i] += 1);
}

/// The instance number `k` of every thing in the written dataset, chosen so that the loaders'
/// names `"{category}_{k}"` (spec B.0: per category, by first annotated frame, then by value
/// within a frame) are the summary's names: per class, by the first annotated frame where the
/// thing is visible, then by scene order. Things never annotated come last.
fn instance_numbers(scene: &StreetVideo, target: &Target) -> Vec<u32> {
    let things = scene.things();
    let mut first_seen = vec![usize::MAX; things.len()];
    for t in (0..target.frames).filter(|&t| target.is_annotated(t)) {
        for i in visible_things(&scene.render(t)) {
            first_seen[i] = first_seen[i].min(t);
        }
    }
    let mut numbers = vec![0; things.len()];
    let classes: BTreeSet<SceneClass> = things.iter().map(|t| t.class).collect();
    for class in classes {
        let mut members: Vec<usize> = (0..things.len())
            .filter(|&i| things[i].class == class)
            .collect();
        members.sort_by_key(|&i| (first_seen[i], i));
        for (k, i) in members.into_iter().enumerate() {
            numbers[i] = k as u32;
        }
    }
    numbers
}

// ---------------------------------------------------------------------------------------------
// Categories and codes.

/// The 124 VIPSeg categories `(name, isthing, colour)`, ids 0..=123 in order, as in the
/// dataset's `panoVIPSeg_categories.json`.
pub const VIPSEG_CATEGORIES: [(&str, bool, [u8; 3]); 124] = [
    ("wall", false, [120, 120, 120]),
    ("ceiling", false, [180, 120, 120]),
    ("door", true, [6, 230, 230]),
    ("stair", false, [80, 50, 50]),
    ("ladder", true, [4, 200, 3]),
    ("escalator", false, [120, 120, 80]),
    ("Playground_slide", false, [140, 140, 140]),
    ("handrail_or_fence", false, [204, 5, 255]),
    ("window", true, [230, 230, 230]),
    ("rail", false, [4, 250, 7]),
    ("goal", true, [224, 5, 255]),
    ("pillar", false, [235, 255, 7]),
    ("pole", false, [150, 5, 61]),
    ("floor", false, [120, 120, 70]),
    ("ground", false, [8, 255, 51]),
    ("grass", false, [255, 6, 82]),
    ("sand", false, [143, 255, 140]),
    ("athletic_field", false, [204, 255, 4]),
    ("road", false, [255, 51, 7]),
    ("path", false, [204, 70, 3]),
    ("crosswalk", false, [0, 102, 200]),
    ("building", false, [61, 230, 250]),
    ("house", false, [255, 6, 51]),
    ("bridge", false, [11, 102, 255]),
    ("tower", false, [255, 7, 71]),
    ("windmill", false, [255, 9, 224]),
    ("well_or_well_lid", false, [9, 7, 230]),
    ("other_construction", false, [220, 220, 220]),
    ("sky", false, [255, 9, 92]),
    ("mountain", false, [112, 9, 255]),
    ("stone", false, [8, 255, 214]),
    ("wood", false, [7, 255, 224]),
    ("ice", false, [255, 184, 6]),
    ("snowfield", false, [10, 255, 71]),
    ("grandstand", false, [255, 41, 10]),
    ("sea", false, [7, 255, 255]),
    ("river", false, [224, 255, 8]),
    ("lake", false, [102, 8, 255]),
    ("waterfall", false, [255, 61, 6]),
    ("water", false, [255, 194, 7]),
    ("billboard_or_Bulletin_Board", false, [255, 122, 8]),
    ("sculpture", true, [0, 255, 20]),
    ("pipeline", false, [255, 8, 41]),
    ("flag", true, [255, 5, 153]),
    ("parasol_or_umbrella", true, [6, 51, 255]),
    ("cushion_or_carpet", false, [235, 12, 255]),
    ("tent", true, [160, 150, 20]),
    ("roadblock", true, [0, 163, 255]),
    ("car", true, [140, 140, 140]),
    ("bus", true, [250, 10, 15]),
    ("truck", true, [20, 255, 0]),
    ("bicycle", true, [31, 255, 0]),
    ("motorcycle", true, [255, 31, 0]),
    ("wheeled_machine", false, [255, 224, 0]),
    ("ship_or_boat", true, [153, 255, 0]),
    ("raft", true, [0, 0, 255]),
    ("airplane", true, [255, 71, 0]),
    ("tyre", false, [0, 235, 255]),
    ("traffic_light", false, [0, 173, 255]),
    ("lamp", false, [31, 0, 255]),
    ("person", true, [11, 200, 200]),
    ("cat", true, [255, 82, 0]),
    ("dog", true, [0, 255, 245]),
    ("horse", true, [0, 61, 255]),
    ("cattle", true, [0, 255, 112]),
    ("other_animal", true, [0, 255, 133]),
    ("tree", false, [255, 0, 0]),
    ("flower", false, [255, 163, 0]),
    ("other_plant", false, [255, 102, 0]),
    ("toy", false, [194, 255, 0]),
    ("ball_net", false, [0, 143, 255]),
    ("backboard", false, [51, 255, 0]),
    ("skateboard", true, [0, 82, 255]),
    ("bat", false, [0, 255, 41]),
    ("ball", true, [0, 255, 173]),
    ("cupboard_or_showcase_or_storage_rack", false, [10, 0, 255]),
    ("box", true, [173, 255, 0]),
    ("traveling_case_or_trolley_case", true, [0, 255, 153]),
    ("basket", true, [255, 92, 0]),
    ("bag_or_package", true, [255, 0, 255]),
    ("trash_can", false, [255, 0, 245]),
    ("cage", false, [255, 0, 102]),
    ("plate", true, [255, 173, 0]),
    ("tub_or_bowl_or_pot", true, [255, 0, 20]),
    ("bottle_or_cup", true, [255, 184, 184]),
    ("barrel", true, [0, 31, 255]),
    ("fishbowl", true, [0, 255, 61]),
    ("bed", true, [0, 71, 255]),
    ("pillow", true, [255, 0, 204]),
    ("table_or_desk", true, [0, 255, 194]),
    ("chair_or_seat", true, [0, 255, 82]),
    ("bench", true, [0, 10, 255]),
    ("sofa", true, [0, 112, 255]),
    ("shelf", false, [51, 0, 255]),
    ("bathtub", false, [0, 194, 255]),
    ("gun", true, [0, 122, 255]),
    ("commode", true, [0, 255, 163]),
    ("roaster", true, [255, 153, 0]),
    ("other_machine", false, [0, 255, 10]),
    ("refrigerator", true, [255, 112, 0]),
    ("washing_machine", true, [143, 255, 0]),
    ("Microwave_oven", true, [82, 0, 255]),
    ("fan", true, [163, 255, 0]),
    ("curtain", false, [255, 235, 0]),
    ("textiles", false, [8, 184, 170]),
    ("clothes", false, [133, 0, 255]),
    ("painting_or_poster", true, [0, 255, 92]),
    ("mirror", true, [184, 0, 255]),
    ("flower_pot_or_vase", true, [255, 0, 31]),
    ("clock", true, [0, 184, 255]),
    ("book", false, [0, 214, 255]),
    ("tool", false, [255, 0, 112]),
    ("blackboard", false, [92, 255, 0]),
    ("tissue", false, [0, 224, 255]),
    ("screen_or_television", true, [112, 224, 255]),
    ("computer", true, [70, 184, 160]),
    ("printer", true, [163, 0, 255]),
    ("Mobile_phone", true, [153, 0, 255]),
    ("keyboard", true, [71, 255, 0]),
    ("other_electronic_product", false, [255, 0, 163]),
    ("fruit", false, [255, 204, 0]),
    ("food", false, [255, 0, 143]),
    ("instrument", true, [0, 255, 235]),
    ("train", true, [133, 255, 0]),
];

/// The 124 VIPSeg categories as a table.
pub fn vipseg_categories() -> CategoryTable {
    CategoryTable {
        categories: VIPSEG_CATEGORIES
            .iter()
            .enumerate()
            .map(|(id, &(name, isthing, color))| Category {
                id: id as u32,
                name: name.to_string(),
                isthing,
                color,
            })
            .collect(),
    }
}

/// Cityscapes `(supercategory, original label id)` of the 19 Cityscapes-VPS categories.
const CITYSCAPES_EXTRA: [(&str, u32); 19] = [
    ("flat", 7),
    ("flat", 8),
    ("construction", 11),
    ("construction", 12),
    ("construction", 13),
    ("object", 17),
    ("object", 19),
    ("object", 20),
    ("nature", 21),
    ("nature", 22),
    ("sky", 23),
    ("human", 24),
    ("human", 25),
    ("vehicle", 26),
    ("vehicle", 27),
    ("vehicle", 28),
    ("vehicle", 31),
    ("vehicle", 32),
    ("vehicle", 33),
];

/// The category id of a scene class: Cityscapes-VPS train ids, VIPSeg ids.
fn category_id(format: DatasetFormat, class: SceneClass) -> u32 {
    use SceneClass::*;
    match (format, class) {
        (DatasetFormat::CityscapesVps, c) => match c {
            Road => 0,
            Sidewalk => 1,
            Building => 2,
            Pole => 5,
            Vegetation => 8,
            Terrain => 9,
            Sky => 10,
            Person => 11,
            Car => 13,
        },
        (DatasetFormat::Vipseg, c) => match c {
            Pole => 12,
            Terrain => 15,
            Road => 18,
            Sidewalk => 19,
            Building => 21,
            Sky => 28,
            Car => 48,
            Person => 60,
            Vegetation => 66,
        },
    }
}

/// How one label is written: its value in the single-channel PNG, and (except for void) its
/// segment id and category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Code {
    value: u16,
    /// `(segment id, category id)`.
    segment: Option<(u32, u32)>,
}

/// The code of every label of a scene, fixed for the whole clip: segment ids are stable.
struct Codes {
    map: HashMap<Label, Code>,
}

impl Codes {
    /// Stuff gets its category colour as segment id; things get the category colour jittered to
    /// an unused one, as panopticapi's `IdGenerator` does. Void is black (id 0, no segment).
    /// Thing `i` is instance `numbers[i]` of its category.
    fn new(scene: &StreetVideo, target: &Target, numbers: &[u32]) -> Self {
        let (format, table) = (target.format, target.categories());
        let void = Code {
            value: encode(format, PanopticValue::Void),
            segment: None,
        };
        let mut map = HashMap::from([(Label::Void, void)]);
        let mut used = HashSet::from([0]);
        let stuff = SceneClass::STUFF.map(|c| (Label::Stuff(c), c, None));
        let things = (scene.things().iter().enumerate())
            .map(|(i, t)| (Label::Thing(i), t.class, Some(numbers[i])));
        for (label, class, k) in stuff.into_iter().chain(things) {
            let category = category_id(format, class);
            let value = match k {
                Some(k) => PanopticValue::Instance { category, k },
                None => PanopticValue::Region { category },
            };
            let colour = table.get(category).map_or([128; 3], |c| c.color);
            let id = unused_id(colour, class.is_thing(), &mut used);
            let code = Code {
                value: encode(format, value),
                segment: Some((id, category)),
            };
            map.insert(label, code);
        }
        Codes { map }
    }

    fn get(&self, label: Label) -> Code {
        self.map[&label]
    }

    /// The summary entry of every thing, sorted by name (category, then number).
    fn instances(
        &self,
        scene: &StreetVideo,
        numbers: &[u32],
        visible: &[usize],
    ) -> Vec<SynthInstance> {
        let mut instances: Vec<(SceneClass, u32, SynthInstance)> = (scene.things().iter())
            .enumerate()
            .map(|(i, thing)| {
                let code = self.get(Label::Thing(i));
                let (segment_id, category_id) = code.segment.unwrap_or_default();
                let instance = SynthInstance {
                    name: format!("{}_{}", thing.class.name(), numbers[i]),
                    category_id,
                    segment_id,
                    value: u32::from(code.value),
                    velocity: thing.velocity.map(|v| v as f32),
                    visible_frames: visible[i],
                    thing: i,
                };
                (thing.class, numbers[i], instance)
            })
            .collect();
        instances.sort_by_key(|(class, k, _)| (*class, *k));
        instances.into_iter().map(|(_, _, i)| i).collect()
    }
}

/// A panoptic value in the format's single-channel encoding.
fn encode(format: DatasetFormat, value: PanopticValue) -> u16 {
    let v = match format {
        DatasetFormat::CityscapesVps => cityscapes_value::encode(value),
        DatasetFormat::Vipseg => vipseg_value::encode(value),
    };
    v as u16
}

/// The segment id of `colour` (jittered by up to ±30 per channel when `jitter` or when taken)
/// that no other segment uses; marks it used.
fn unused_id(colour: [u8; 3], jitter: bool, used: &mut HashSet<u32>) -> u32 {
    let mut attempt = 0u32;
    loop {
        let candidate = if jitter || attempt > 0 {
            jittered(colour, attempt)
        } else {
            colour
        };
        let id = rgb_to_id(candidate);
        if used.insert(id) {
            return id;
        }
        attempt += 1;
    }
}

/// `colour` with each channel moved by a deterministic offset in −30..=30.
fn jittered(colour: [u8; 3], attempt: u32) -> [u8; 3] {
    let mut state =
        u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(rgb_to_id(colour));
    std::array::from_fn(|c| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let offset = ((state >> 33) % 61) as i32 - 30;
        (colour[c] as i32 + offset).clamp(0, 255) as u8
    })
}

// ---------------------------------------------------------------------------------------------
// The layouts.

/// First frame numbers: `frankfurt_000000_001736` (Cityscapes-VPS `0005`) and `00000976`
/// (VIPSeg `26_cblDl5vCZnw`), the reference frames of spec B.0.
/// The largest frame synth writes, in pixels: 2²², twice a full Cityscapes frame (1024×2048, the
/// largest frame of the datasets it imitates). Rendering holds about 50 bytes a pixel (labels,
/// flow, background, the picture), 200 MiB at this size. Fixed.
pub const SYNTH_MAX_PIXELS: u64 = 1 << 22;

const CITYSCAPES_FIRST_FRAME: usize = 1736;
const VIPSEG_FIRST_FRAME: usize = 976;
/// Cityscapes-VPS annotates every 5th frame.
const CITYSCAPES_ANNOTATION_STEP: usize = 5;
const CITYSCAPES_JSON: &str = "panoptic_gt_val_city_vps.json";
const VIPSEG_JSON: &str = "panoptic_gt_VIPSeg.json";

/// Where and how one format writes its files.
struct Target {
    format: DatasetFormat,
    root: PathBuf,
    video: String,
    size: [usize; 2],
    frames: usize,
    vector_flow: bool,
}

/// The `segments_info` of one annotated frame.
struct AnnotatedFrame {
    image_id: String,
    file_name: String,
    /// `(segment id, category id, area)`, by panoptic value.
    segments: Vec<(u32, u32, usize)>,
}

impl Target {
    /// Checks `params` and resolves the video id.
    fn new(params: &SynthParams, root: &Path) -> Result<Self> {
        let invalid = |m: String| Err(XincError::InvalidArgument(m));
        let [h, w] = params.size;
        if !(1..=9999).contains(&params.frames) {
            return invalid(format!("synth: {} frames (1..=9999)", params.frames));
        }
        if h < 16 || w < 16 {
            return invalid(format!(
                "synth --size {h}x{w}: each side must be at least 16"
            ));
        }
        let field = format!("synth --size {h}x{w} in pixels");
        let pixels = crate::io::files::checked_product(&field, &[h, w])?;
        crate::io::files::check_size(
            &field,
            pixels as u64,
            SYNTH_MAX_PIXELS,
            "fixed: twice a full 1024x2048 Cityscapes frame",
        )?;
        let video = match (params.format, &params.video) {
            (_, Some(v)) => v.clone(),
            (DatasetFormat::CityscapesVps, None) => "0005".into(),
            (DatasetFormat::Vipseg, None) => "26_cblDl5vCZnw".into(),
        };
        let valid = match params.format {
            DatasetFormat::CityscapesVps => {
                video.len() == 4 && video.bytes().all(|b| b.is_ascii_digit())
            }
            DatasetFormat::Vipseg => {
                !video.is_empty()
                    && video
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }
        };
        if !valid {
            return invalid(format!(
                "synth: video id `{video}` (Cityscapes-VPS: four digits; VIPSeg: letters, digits, `_`, `-`)"
            ));
        }
        Ok(Target {
            format: params.format,
            root: root.to_path_buf(),
            video,
            size: params.size,
            vector_flow: params.vector_flow,
            frames: params.frames,
        })
    }

    fn categories(&self) -> CategoryTable {
        match self.format {
            DatasetFormat::CityscapesVps => CategoryTable::cityscapes_vps(),
            DatasetFormat::Vipseg => vipseg_categories(),
        }
    }

    fn is_annotated(&self, t: usize) -> bool {
        match self.format {
            DatasetFormat::CityscapesVps => t % CITYSCAPES_ANNOTATION_STEP == 0,
            DatasetFormat::Vipseg => true,
        }
    }

    /// `frankfurt_000000_001736` (Cityscapes-VPS) or `00000976` (VIPSeg).
    fn frame_stem(&self, t: usize) -> String {
        match self.format {
            DatasetFormat::CityscapesVps => {
                format!("frankfurt_000000_{:06}", CITYSCAPES_FIRST_FRAME + t)
            }
            DatasetFormat::Vipseg => format!("{:08}", VIPSEG_FIRST_FRAME + t),
        }
    }

    /// `0005_0000_frankfurt_000000_001736` (Cityscapes-VPS) or `00000976` (VIPSeg).
    fn image_id(&self, t: usize) -> String {
        match self.format {
            DatasetFormat::CityscapesVps => format!("{}_{t:04}_{}", self.video, self.frame_stem(t)),
            DatasetFormat::Vipseg => self.frame_stem(t),
        }
    }

    /// The RGB frame files of frame `t`.
    fn image_paths(&self, t: usize) -> Vec<PathBuf> {
        let stem = self.frame_stem(t);
        match self.format {
            DatasetFormat::CityscapesVps => {
                let name = format!("{stem}_leftImg8bit.png");
                vec![
                    self.root.join("val/img_all").join(&name),
                    self.clip_dir("images").join(name),
                ]
            }
            DatasetFormat::Vipseg => vec![self.clip_dir("images").join(format!("{stem}.jpg"))],
        }
    }

    /// The flow files of frame `t`: magnitude, then `(u, v)`.
    fn flow_paths(&self, t: usize) -> [PathBuf; 2] {
        let name = match self.format {
            DatasetFormat::CityscapesVps => format!("{}_leftImg8bit.npy", self.frame_stem(t)),
            DatasetFormat::Vipseg => format!("{}.npy", self.frame_stem(t)),
        };
        ["flows", "flows_uv"].map(|kind| self.clip_dir(kind).join(&name))
    }

    /// The panoptic files of frame `t`: single-channel values, then RGB segment ids.
    fn mask_paths(&self, t: usize) -> [PathBuf; 2] {
        match self.format {
            DatasetFormat::CityscapesVps => {
                let name = format!("{}_final_mask.png", self.image_id(t));
                ["val/panoptic_inst", "val/panoptic_video"].map(|d| self.root.join(d).join(&name))
            }
            DatasetFormat::Vipseg => {
                let name = format!("{}.png", self.frame_stem(t));
                ["panomasks", "panomasksRGB"].map(|d| self.clip_dir(d).join(&name))
            }
        }
    }

    /// The folder of one kind of per-clip files (`images`, `flows`, …).
    fn clip_dir(&self, kind: &str) -> PathBuf {
        match self.format {
            DatasetFormat::CityscapesVps => self
                .root
                .join("vps_subset/val")
                .join(&self.video)
                .join(kind),
            DatasetFormat::Vipseg => self.root.join(kind).join(&self.video),
        }
    }

    /// Writes the RGB copies and the two flow files of frame `t`.
    fn write_frame(&self, t: usize, frame: &Frame, written: &mut BTreeSet<PathBuf>) -> Result<()> {
        for path in self.image_paths(t) {
            write_rgb(&path, &frame.rgb)?;
            written.insert(path);
        }
        let [h, w] = self.size.map(|s| s as u64);
        let [mag_path, uv_path] = self.flow_paths(t);
        // As the official 8-bit flow maps (which the loaders divide by 255): |flow| in pixels per
        // frame, rounded and clamped to 0..=255. Exact here, where things move by whole pixels.
        let magnitude: Vec<u8> = frame
            .flow
            .iter()
            .map(|[u, v]| u.hypot(*v).round().clamp(0.0, 255.0) as u8)
            .collect();
        write_npy(&mag_path, &[h, w], &magnitude)?;
        written.insert(mag_path);
        if self.vector_flow {
            let uv: Vec<f32> = frame.flow.iter().flatten().copied().collect();
            write_npy(&uv_path, &[h, w, 2], &uv)?;
            written.insert(uv_path);
        }
        Ok(())
    }

    /// Writes the two panoptic PNGs of frame `t` and returns its `segments_info`.
    fn write_annotation(
        &self,
        t: usize,
        frame: &Frame,
        codes: &Codes,
        written: &mut BTreeSet<PathBuf>,
    ) -> Result<AnnotatedFrame> {
        let [h, w] = self.size;
        let mut values = Vec::with_capacity(h * w);
        let mut colours = Vec::with_capacity(h * w * 3);
        let mut areas: BTreeMap<u16, (Code, usize)> = BTreeMap::new();
        for &label in &frame.labels {
            let code = codes.get(label);
            values.push(code.value);
            colours.extend(id_to_rgb(code.segment.map_or(0, |(id, _)| id)));
            areas.entry(code.value).or_insert((code, 0)).1 += 1;
        }
        let [inst_path, rgb_path] = self.mask_paths(t);
        let (w32, h32) = (w as u32, h as u32);
        let inst = ImageBuffer::<Luma<u16>, _>::from_raw(w32, h32, values).expect("H·W values");
        write_png(&inst_path, &inst, CompressionType::Best)?;
        let rgb = RgbImage::from_raw(w32, h32, colours).expect("H·W·3 values");
        write_png(&rgb_path, &rgb, CompressionType::Best)?;
        written.extend([inst_path.clone(), rgb_path]);
        let segments = areas
            .values()
            .filter_map(|(code, area)| code.segment.map(|(id, cat)| (id, cat, *area)))
            .collect();
        Ok(AnnotatedFrame {
            image_id: self.image_id(t),
            file_name: file_name(&inst_path),
            segments,
        })
    }

    /// Writes the dataset JSON.
    fn write_json(&self, annotations: &[AnnotatedFrame]) -> Result<()> {
        let (name, value) = match self.format {
            DatasetFormat::CityscapesVps => (CITYSCAPES_JSON, self.cityscapes_json(annotations)),
            DatasetFormat::Vipseg => (VIPSEG_JSON, self.vipseg_json(annotations)),
        };
        let path = self.root.join(name);
        let bytes = serde_json::to_vec_pretty(&value)
            .map_err(|e| XincError::config(&path, e.to_string()))?;
        write_atomic(&path, |w| w.write_all(&bytes))
    }

    /// Cityscapes-VPS JSON: the annotated frames (`images[].file_name` is the frame's
    /// `img_all` name), their `segments_info`, and the 19 categories.
    fn cityscapes_json(&self, annotations: &[AnnotatedFrame]) -> Value {
        let [h, w] = self.size;
        let images: Vec<Value> = annotations
            .iter()
            .map(|a| {
                let frame = a.image_id.splitn(3, '_').nth(2).unwrap_or_default();
                let file_name = format!("{frame}_leftImg8bit.png");
                json!({"id": a.image_id, "width": w, "height": h, "file_name": file_name})
            })
            .collect();
        let categories: Vec<Value> = CategoryTable::cityscapes_vps()
            .categories
            .iter()
            .zip(CITYSCAPES_EXTRA)
            .map(|(c, (supercategory, ori_id))| {
                json!({
                    "id": c.id, "name": c.name, "supercategory": supercategory,
                    "isthing": u8::from(c.isthing), "instance_eval": u8::from(c.isthing),
                    "trainid": c.id, "ori_id": ori_id, "color": c.color,
                })
            })
            .collect();
        json!({
            "images": images,
            "annotations": annotation_json(annotations),
            "categories": categories,
        })
    }

    /// VIPSeg JSON: one video block listing every frame, its annotations, the 124 categories.
    fn vipseg_json(&self, annotations: &[AnnotatedFrame]) -> Value {
        let [h, w] = self.size;
        let images: Vec<Value> = (0..self.frames)
            .map(|t| {
                let id = self.frame_stem(t);
                json!({"id": id, "width": w, "height": h, "file_name": format!("{id}.png")})
            })
            .collect();
        let categories: Vec<Value> = vipseg_categories()
            .categories
            .iter()
            .map(|c| {
                let isthing = u8::from(c.isthing);
                json!({"id": c.id, "name": c.name, "isthing": isthing, "color": c.color})
            })
            .collect();
        json!({
            "videos": [{"video_id": self.video, "images": images}],
            "annotations": [{"video_id": self.video, "annotations": annotation_json(annotations)}],
            "categories": categories,
        })
    }

    /// Removes files of this clip's folders that look generated (by name) but were not written
    /// now: frames of an earlier, longer clip.
    fn remove_stale(&self, written: &BTreeSet<PathBuf>) -> Result<()> {
        let dirs: BTreeSet<&Path> = written.iter().filter_map(|p| p.parent()).collect();
        for dir in dirs {
            let entries = std::fs::read_dir(dir).map_err(|e| XincError::io(dir, e))?;
            for entry in entries {
                let path = entry.map_err(|e| XincError::io(dir, e))?.path();
                if !written.contains(&path) && self.looks_generated(&file_name(&path)) {
                    std::fs::remove_file(&path).map_err(|e| XincError::io(&path, e))?;
                }
            }
        }
        Ok(())
    }

    /// Whether a file name follows this generator's naming for this video.
    fn looks_generated(&self, name: &str) -> bool {
        match self.format {
            DatasetFormat::CityscapesVps => {
                let prefixed = name.starts_with("frankfurt_000000_")
                    || name.starts_with(&format!("{}_", self.video));
                prefixed
                    && (name.ends_with("_leftImg8bit.png")
                        || name.ends_with("_leftImg8bit.npy")
                        || name.ends_with("_final_mask.png"))
            }
            DatasetFormat::Vipseg => name.split_once('.').is_some_and(|(stem, ext)| {
                stem.len() == 8
                    && stem.bytes().all(|b| b.is_ascii_digit())
                    && ["jpg", "png", "npy"].contains(&ext)
            }),
        }
    }
}

/// The `annotations` list of a JSON: `{image_id, file_name, segments_info}` per frame.
fn annotation_json(annotations: &[AnnotatedFrame]) -> Vec<Value> {
    annotations
        .iter()
        .map(|a| {
            let segments: Vec<Value> = a
                .segments
                .iter()
                .map(|&(id, category_id, area)| {
                    json!({"id": id, "category_id": category_id, "iscrowd": 0, "area": area})
                })
                .collect();
            json!({"image_id": a.image_id, "file_name": a.file_name, "segments_info": segments})
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Encoders.

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Writes an RGB frame: PNG, or JPEG at quality 90 for a `.jpg` path.
fn write_rgb(path: &Path, img: &RgbImage) -> Result<()> {
    if path.extension().is_some_and(|e| e == "jpg") {
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 90)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                ExtendedColorType::Rgb8,
            )
            .map_err(|e| XincError::image(path, e.to_string()))?;
        write_atomic(path, |w| w.write_all(&bytes))
    } else {
        write_png(path, img, CompressionType::Best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_new_root_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("clip");
        let params = SynthParams {
            frames: 1,
            size: [16, 32],
            ..SynthParams::default()
        };
        let bad = SynthParams {
            size: [4096, 4096],
            ..params.clone()
        };
        let e = generate(&bad, &out).unwrap_err().to_string();
        assert!(
            e.contains("synth --size 4096x4096 in pixels = 16777216"),
            "{e}"
        );
        assert!(names(dir.path()).is_empty());
        let summary = generate(&params, &out).unwrap();
        assert_eq!(summary.root, out);
        assert_eq!(names(dir.path()), vec!["clip"]);
        assert!(out.join(CITYSCAPES_JSON).is_file());
        // A file in the way is an error, and stays as it was.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = generate(&params, &file).unwrap_err().to_string();
        assert!(e.contains("exists and is not a folder"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        assert_eq!(names(dir.path()), vec!["clip", "file"]);
    }
}
