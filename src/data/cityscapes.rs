//! The Cityscapes-VPS loader (spec D.1): finds a clip's frames, its annotated frames and their
//! JSON entries; the annotation assembly itself is shared ([`crate::data::loader`]).
//!
//! ```text
//! panoptic_gt_val_city_vps.json
//! val/img_all/{city}_{seq}_{frame}_leftImg8bit.png
//! val/panoptic_inst/{VVVV}_{FFFF}_{city}_{seq}_{frame}_{suffix}.png    (single-channel)
//! val/panoptic_video/{same names}.png                                 (RGB)
//! vps_subset/val/{VVVV}/images/*.png, vps_subset/val/{VVVV}/flows/*.npy   (optional)
//! ```
//!
//! A clip's annotated frames are the `panoptic_inst` files of its video id; each must have a
//! JSON annotation of the same image id (its first five name tokens) and the reverse. Its frames
//! are `vps_subset/val/{VVVV}/images/*.png` when present, else the `img_all` files of its
//! `{city}_{seq}`, sorted; an annotated frame is matched to them by file name. The video id
//! (the first token of an image id) becomes a path component and is checked as one; an image id
//! listed twice in the JSON is an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::data::loader::{
    build_clip, check_id, choose_video, file_name, optional_sorted_files, read_dataset_json,
    sorted_files, AnnotatedFrameFiles, ClipFiles, ClipOptions, ImageAnnotation,
};
use crate::data::panoptic::{CategoryTable, Clip, DatasetFormat};
use crate::error::{Result, XincError};

/// The dataset JSON in the root folder.
pub const JSON_FILE: &str = "panoptic_gt_val_city_vps.json";

/// The parts of the JSON the loader reads (the categories are the built-in table).
#[derive(Deserialize)]
struct GroundTruth {
    annotations: Vec<ImageAnnotation>,
}

/// Reads the dataset JSON under `root`.
fn read_ground_truth(root: &Path) -> Result<(PathBuf, GroundTruth)> {
    read_dataset_json(root, JSON_FILE)
}

/// The video id of an image id (its first token).
fn video_of(image_id: &str) -> &str {
    image_id.split('_').next().unwrap_or_default()
}

/// The sorted video ids of the JSON's annotations.
fn video_ids(gt: &GroundTruth) -> Vec<String> {
    let mut ids: Vec<String> = gt
        .annotations
        .iter()
        .map(|a| video_of(&a.image_id).to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The video ids of the Cityscapes-VPS dataset at `root`, sorted.
pub fn list_videos(root: &Path) -> Result<Vec<String>> {
    let (_, gt) = read_ground_truth(root)?;
    Ok(video_ids(&gt))
}

/// A `panoptic_inst` file and what its name says.
struct AnnotationFile {
    path: PathBuf,
    /// `{VVVV}_{FFFF}_{city}_{seq}_{frame}`.
    image_id: String,
    /// `{city}_{seq}_{frame}_leftImg8bit.png`.
    frame_file: String,
    /// `{city}_{seq}`.
    city_seq: String,
}

impl AnnotationFile {
    /// Splits `{VVVV}_{FFFF}_{city}_{seq}_{frame}_{suffix}.png`.
    fn parse(path: PathBuf) -> Result<Self> {
        let name = file_name(&path);
        let stem = name.strip_suffix(".png").unwrap_or(&name);
        let tokens: Vec<&str> = stem.split('_').collect();
        if tokens.len() < 6 {
            return Err(XincError::dataset(
                &path,
                "file name is not `{VVVV}_{FFFF}_{city}_{seq}_{frame}_{suffix}.png`",
            ));
        }
        Ok(AnnotationFile {
            image_id: tokens[..5].join("_"),
            frame_file: format!("{}_leftImg8bit.png", tokens[2..5].join("_")),
            city_seq: tokens[2..4].join("_"),
            path,
        })
    }
}

/// The `panoptic_inst` files of `video`, sorted.
fn annotation_files(root: &Path, video: &str) -> Result<Vec<AnnotationFile>> {
    let prefix = format!("{video}_");
    sorted_files(&root.join("val/panoptic_inst"), "png")?
        .into_iter()
        .filter(|p| file_name(p).starts_with(&prefix))
        .map(AnnotationFile::parse)
        .collect()
}

/// The frames of the clip: `vps_subset/val/{video}/images/*.png` when present, else the
/// `img_all` frames of `city_seq`, sorted.
fn clip_frames(root: &Path, video: &str, city_seq: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
    let subset = root.join("vps_subset/val").join(video).join("images");
    if let Some(frames) = optional_sorted_files(&subset, "png")? {
        return Ok((subset, frames));
    }
    let all = root.join("val/img_all");
    let prefix = format!("{city_seq}_");
    let frames = sorted_files(&all, "png")?
        .into_iter()
        .filter(|p| {
            let name = file_name(p);
            name.starts_with(&prefix) && name.ends_with("_leftImg8bit.png")
        })
        .collect();
    Ok((all, frames))
}

/// Checks that the annotation files and the JSON annotations of the video match one to one.
fn match_annotations<'a>(
    json: &Path,
    video: &str,
    files: &[AnnotationFile],
    annotations: &'a [ImageAnnotation],
) -> Result<Vec<&'a ImageAnnotation>> {
    let mut by_id: BTreeMap<&str, &ImageAnnotation> = BTreeMap::new();
    for a in annotations
        .iter()
        .filter(|a| video_of(&a.image_id) == video)
    {
        if by_id.insert(a.image_id.as_str(), a).is_some() {
            return Err(XincError::dataset(
                json,
                format!("image {} has two entries in `annotations`", a.image_id),
            ));
        }
    }
    let file_ids: HashSet<&str> = files.iter().map(|f| f.image_id.as_str()).collect();
    if let Some(orphan) = by_id.keys().find(|id| !file_ids.contains(**id)) {
        return Err(XincError::dataset(
            json,
            format!(
                "the annotation of image {orphan} has no `{orphan}_*.png` in val/panoptic_inst"
            ),
        ));
    }
    files
        .iter()
        .map(|f| {
            by_id.get(f.image_id.as_str()).copied().ok_or_else(|| {
                XincError::dataset(
                    &f.path,
                    format!(
                        "image {} has no entry in `annotations` of {}",
                        f.image_id,
                        json.display()
                    ),
                )
            })
        })
        .collect()
}

/// Opens video `opts.video` (default: the first) of the Cityscapes-VPS dataset at `root`.
pub fn open(root: &Path, opts: &ClipOptions) -> Result<Clip> {
    let (json, gt) = read_ground_truth(root)?;
    let video = choose_video(opts.video.as_deref(), &video_ids(&gt), &json)?;
    check_id(&json, "video id", &video)?;
    let files = annotation_files(root, &video)?;
    let annotations = match_annotations(&json, &video, &files, &gt.annotations)?;
    let city_seq = files
        .first()
        .map(|f| f.city_seq.as_str())
        .unwrap_or_default();
    let (frame_dir, frames) = clip_frames(root, &video, city_seq)?;
    let frame_index_of: HashMap<String, usize> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (file_name(f), i))
        .collect();
    let annotated = files
        .iter()
        .zip(annotations)
        .map(|(file, ann)| {
            let frame_index = frame_index_of
                .get(&file.frame_file)
                .copied()
                .ok_or_else(|| {
                    XincError::dataset(
                        &file.path,
                        format!(
                            "its RGB frame {} is not among the {} frames of video {video} in {}",
                            file.frame_file,
                            frames.len(),
                            frame_dir.display()
                        ),
                    )
                })?;
            Ok(AnnotatedFrameFiles {
                frame_index,
                image_id: file.image_id.clone(),
                values_png: file.path.clone(),
                colours_png: root.join("val/panoptic_video").join(file_name(&file.path)),
                segments_info: ann.segments_info.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let flows = optional_sorted_files(
        &root.join("vps_subset/val").join(&video).join("flows"),
        "npy",
    )?;
    let clip = ClipFiles {
        format: DatasetFormat::CityscapesVps,
        root: root.to_path_buf(),
        video,
        json,
        frames,
        flows,
        categories: CategoryTable::cityscapes_vps(),
        annotated,
    };
    build_clip(clip, opts.size)
}
