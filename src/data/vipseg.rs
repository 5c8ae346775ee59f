//! The VIPSeg 720P loader (spec D.2): finds a clip's frames and their JSON entries; the
//! annotation assembly itself is shared ([`crate::data::loader`]).
//!
//! ```text
//! panoptic_gt_VIPSeg.json
//! images/{video_id}/{frame_id}.jpg
//! panomasks/{video_id}/{frame_id}.png       (single-channel)
//! panomasksRGB/{video_id}/{frame_id}.png    (RGB)
//! flows/{video_id}/*.npy                    (optional)
//! ```
//!
//! Every frame the JSON lists for a video is annotated; the frames keep the JSON's order, and the
//! categories are the JSON's own. The video id and the image ids become path components and are
//! checked as such; a video, an image or a category (id or name) listed twice is an error.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::loader::{
    build_clip, check_frame_count, check_id, choose_video, flag, id_string, optional_sorted_files,
    read_dataset_json, AnnotatedFrameFiles, ClipFiles, ClipOptions, ImageAnnotation,
};
use crate::data::panoptic::{Category, CategoryTable, Clip, DatasetFormat};
use crate::error::{Result, XincError};

/// The dataset JSON in the root folder.
pub const JSON_FILE: &str = "panoptic_gt_VIPSeg.json";

/// The parts of the JSON the loader reads.
#[derive(Deserialize)]
struct GroundTruth {
    videos: Vec<Video>,
    annotations: Vec<VideoAnnotations>,
    categories: Vec<JsonCategory>,
}

#[derive(Deserialize)]
struct Video {
    #[serde(deserialize_with = "id_string")]
    video_id: String,
    images: Vec<VideoImage>,
}

#[derive(Deserialize)]
struct VideoImage {
    #[serde(deserialize_with = "id_string")]
    id: String,
}

#[derive(Deserialize)]
struct VideoAnnotations {
    #[serde(deserialize_with = "id_string")]
    video_id: String,
    annotations: Vec<ImageAnnotation>,
}

#[derive(Deserialize)]
struct JsonCategory {
    id: u32,
    name: String,
    #[serde(deserialize_with = "flag")]
    isthing: bool,
    #[serde(default)]
    color: [u8; 3],
}

impl GroundTruth {
    fn video_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.videos.iter().map(|v| v.video_id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The JSON's categories; an id or a name given twice is an error naming it.
    fn category_table(&self, json: &Path) -> Result<CategoryTable> {
        let (mut ids, mut names) = (HashSet::new(), HashSet::new());
        for c in &self.categories {
            if !ids.insert(c.id) || !names.insert(c.name.as_str()) {
                return Err(XincError::dataset(
                    json,
                    format!(
                        "`categories` lists category {} ({:?}) twice (the same id or name)",
                        c.id, c.name
                    ),
                ));
            }
        }
        Ok(CategoryTable {
            categories: self
                .categories
                .iter()
                .map(|c| Category {
                    id: c.id,
                    name: c.name.clone(),
                    isthing: c.isthing,
                    color: c.color,
                })
                .collect(),
        })
    }
}

/// Reads the dataset JSON under `root`.
fn read_ground_truth(root: &Path) -> Result<(PathBuf, GroundTruth)> {
    read_dataset_json(root, JSON_FILE)
}

/// The video ids of the VIPSeg dataset at `root`, sorted.
pub fn list_videos(root: &Path) -> Result<Vec<String>> {
    let (_, gt) = read_ground_truth(root)?;
    Ok(gt.video_ids())
}

/// The annotations of every image of `video`, in the video's order; an error when an image has
/// none or an annotation names an image the video does not list.
fn video_annotations<'a>(
    json: &Path,
    gt: &'a GroundTruth,
    video: &'a Video,
) -> Result<Vec<&'a ImageAnnotation>> {
    let problem =
        |reason: String| XincError::dataset(json, format!("video {}: {reason}", video.video_id));
    let mut entries = gt
        .annotations
        .iter()
        .filter(|a| a.video_id == video.video_id);
    let entry = entries
        .next()
        .ok_or_else(|| problem("no entry in `annotations`".into()))?;
    if entries.next().is_some() {
        return Err(problem("two entries in `annotations`".into()));
    }
    let mut by_id: HashMap<&str, &ImageAnnotation> = HashMap::new();
    for a in &entry.annotations {
        if by_id.insert(a.image_id.as_str(), a).is_some() {
            return Err(problem(format!("two annotations of image {}", a.image_id)));
        }
    }
    let mut listed = HashSet::new();
    for img in &video.images {
        if !listed.insert(img.id.as_str()) {
            return Err(problem(format!("`videos` lists image {} twice", img.id)));
        }
    }
    if let Some(extra) = entry
        .annotations
        .iter()
        .find(|a| !listed.contains(a.image_id.as_str()))
    {
        return Err(problem(format!(
            "annotation of image {} which `videos` does not list",
            extra.image_id
        )));
    }
    video
        .images
        .iter()
        .map(|img| {
            by_id
                .get(img.id.as_str())
                .copied()
                .ok_or_else(|| problem(format!("image {} has no annotation", img.id)))
        })
        .collect()
}

/// Opens video `opts.video` (default: the first in sorted order) of the VIPSeg dataset at `root`.
pub fn open(root: &Path, opts: &ClipOptions) -> Result<Clip> {
    let (json, gt) = read_ground_truth(root)?;
    let id = choose_video(opts.video.as_deref(), &gt.video_ids(), &json)?;
    check_id(&json, "video id", &id)?;
    let mut listed = gt.videos.iter().filter(|v| v.video_id == id);
    let video = listed
        .next()
        .ok_or_else(|| XincError::dataset(&json, format!("video {id} not found")))?;
    if listed.next().is_some() {
        return Err(XincError::dataset(
            &json,
            format!("`videos` lists video {id} twice"),
        ));
    }
    check_frame_count(&json, &id, video.images.len())?;
    for img in &video.images {
        check_id(&json, &format!("video {id}: image id"), &img.id)?;
    }
    let annotations = video_annotations(&json, &gt, video)?;
    let in_dir = |dir: &str, name: &str| root.join(dir).join(&id).join(name);
    let frames = video
        .images
        .iter()
        .map(|img| in_dir("images", &format!("{}.jpg", img.id)))
        .collect();
    let annotated = video
        .images
        .iter()
        .zip(annotations)
        .enumerate()
        .map(|(frame_index, (img, ann))| AnnotatedFrameFiles {
            frame_index,
            image_id: img.id.clone(),
            values_png: in_dir("panomasks", &format!("{}.png", img.id)),
            colours_png: in_dir("panomasksRGB", &format!("{}.png", img.id)),
            segments_info: ann.segments_info.clone(),
        })
        .collect();
    let clip = ClipFiles {
        format: DatasetFormat::Vipseg,
        root: root.to_path_buf(),
        flows: optional_sorted_files(&root.join("flows").join(&id), "npy")?,
        categories: gt.category_table(&json)?,
        video: id,
        json,
        frames,
        annotated,
    };
    build_clip(clip, opts.size)
}
