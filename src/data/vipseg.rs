//! The VIPSeg 720P loader (spec D.2): finds a clip's frames and their JSON entries; the
//! annotation assembly itself is shared ([`crate::data::clip`]).
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
//! categories are the JSON's own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::clip::{
    build_clip, choose_video, flag, id_string, optional_sorted_files, read_json,
    AnnotatedFrameFiles, ClipFiles, ClipOptions, ImageAnnotation,
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

    fn category_table(&self) -> CategoryTable {
        CategoryTable {
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
        }
    }
}

/// Reads the dataset JSON under `root`.
fn read_ground_truth(root: &Path) -> Result<(PathBuf, GroundTruth)> {
    let json = root.join(JSON_FILE);
    let gt = read_json(&json)?;
    Ok((json, gt))
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
    let entry = gt
        .annotations
        .iter()
        .find(|a| a.video_id == video.video_id)
        .ok_or_else(|| problem("no entry in `annotations`".into()))?;
    let by_id: HashMap<&str, &ImageAnnotation> = entry
        .annotations
        .iter()
        .map(|a| (a.image_id.as_str(), a))
        .collect();
    if let Some(extra) = entry
        .annotations
        .iter()
        .find(|a| !video.images.iter().any(|i| i.id == a.image_id))
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
    let video = gt
        .videos
        .iter()
        .find(|v| v.video_id == id)
        .ok_or_else(|| XincError::dataset(&json, format!("video {id} not found")))?;
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
        flows: optional_sorted_files(&root.join("flows").join(&id), "npy")?,
        video: id,
        json,
        frames,
        categories: gt.category_table(),
        annotated,
    };
    build_clip(clip, opts.size)
}
