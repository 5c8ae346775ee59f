//! Panoptic video clips: the types every dataset loader produces, and the encodings of the two
//! on-disk formats (spec D.1, D.2, B.0).
//!
//! A [`Clip`] is an ordered list of frame files, optional per-frame flow files, and the
//! annotated frames ([`PanopticFrame`]), each a list of [`Segment`]s with a binary mask at the
//! working resolution. Instance names `"{category}_{k}"` are stable across the clip.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, XincError};

/// The two dataset layouts xinc reads (and the synthetic generator writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// Cityscapes-VPS (`panoptic_gt_val_city_vps.json`, `val/img_all`, `val/panoptic_inst`, …).
    CityscapesVps,
    /// VIPSeg 720P (`panoptic_gt_VIPSeg.json`, `images/`, `panomasks/`, `panomasksRGB/`, …).
    Vipseg,
}

impl std::str::FromStr for DatasetFormat {
    type Err = XincError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cityscapes-vps" | "cityscapes" => Ok(DatasetFormat::CityscapesVps),
            "vipseg" => Ok(DatasetFormat::Vipseg),
            other => Err(XincError::InvalidArgument(format!(
                "unknown dataset format `{other}` (cityscapes-vps or vipseg)"
            ))),
        }
    }
}

/// One category of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub id: u32,
    pub name: String,
    pub isthing: bool,
    pub color: [u8; 3],
}

/// The categories of a dataset, looked up by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryTable {
    pub categories: Vec<Category>,
}

impl CategoryTable {
    pub fn get(&self, id: u32) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    pub fn by_name(&self, name: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.name == name)
    }

    /// The 19 Cityscapes-VPS categories (ids 0–10 stuff, 11–18 things), with the Cityscapes
    /// palette. The name "vegitation" is the dataset's own spelling.
    pub fn cityscapes_vps() -> Self {
        const TABLE: [(&str, [u8; 3]); 19] = [
            ("road", [128, 64, 128]),
            ("sidewalk", [244, 35, 232]),
            ("building", [70, 70, 70]),
            ("wall", [102, 102, 156]),
            ("fence", [190, 153, 153]),
            ("pole", [153, 153, 153]),
            ("traffic light", [250, 170, 30]),
            ("traffic sign", [220, 220, 0]),
            ("vegitation", [107, 142, 35]),
            ("terrain", [152, 251, 152]),
            ("sky", [70, 130, 180]),
            ("person", [220, 20, 60]),
            ("rider", [255, 0, 0]),
            ("car", [0, 0, 142]),
            ("truck", [0, 0, 70]),
            ("bus", [0, 60, 100]),
            ("train", [0, 80, 100]),
            ("motorcycle", [0, 0, 230]),
            ("bicycle", [119, 11, 32]),
        ];
        CategoryTable {
            categories: TABLE
                .iter()
                .enumerate()
                .map(|(id, (name, color))| Category {
                    id: id as u32,
                    name: name.to_string(),
                    isthing: id >= 11,
                    color: *color,
                })
                .collect(),
        }
    }
}

/// The COCO-panoptic segment id of an RGB colour: `R + 256·G + 65536·B`.
pub fn rgb_to_id(rgb: [u8; 3]) -> u32 {
    rgb[0] as u32 + 256 * rgb[1] as u32 + 65536 * rgb[2] as u32
}

/// The RGB colour of a segment id (inverse of [`rgb_to_id`] for ids below 2²⁴).
pub fn id_to_rgb(id: u32) -> [u8; 3] {
    [
        (id & 0xff) as u8,
        ((id >> 8) & 0xff) as u8,
        ((id >> 16) & 0xff) as u8,
    ]
}

/// What one pixel value of a single-channel panoptic PNG means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanopticValue {
    /// Unlabelled.
    Void,
    /// A region of category `category` without an instance number: stuff, or a crowd of things.
    Region { category: u32 },
    /// Instance `k` of a thing category.
    Instance { category: u32, k: u32 },
}

/// Cityscapes-VPS `panoptic_inst`: 255 void, `class` for stuff (and crowds), `class·1000 + k`
/// for thing instances.
pub mod cityscapes_value {
    use super::PanopticValue;

    pub const VOID: u32 = 255;

    pub fn decode(v: u32) -> PanopticValue {
        match v {
            VOID => PanopticValue::Void,
            v if v < 1000 => PanopticValue::Region { category: v },
            v => PanopticValue::Instance {
                category: v / 1000,
                k: v % 1000,
            },
        }
    }

    pub fn encode(v: PanopticValue) -> u32 {
        match v {
            PanopticValue::Void => VOID,
            PanopticValue::Region { category } => category,
            PanopticValue::Instance { category, k } => category * 1000 + k,
        }
    }
}

/// VIPSeg `panomasks`: 0 void, `cat + 1` for stuff (and crowds), `(cat + 1)·100 + k` for things.
pub mod vipseg_value {
    use super::PanopticValue;

    pub fn decode(v: u32) -> PanopticValue {
        match v {
            0 => PanopticValue::Void,
            v if v < 125 => PanopticValue::Region { category: v - 1 },
            v => PanopticValue::Instance {
                category: v / 100 - 1,
                k: v % 100,
            },
        }
    }

    pub fn encode(v: PanopticValue) -> u32 {
        match v {
            PanopticValue::Void => 0,
            PanopticValue::Region { category } => category + 1,
            PanopticValue::Instance { category, k } => (category + 1) * 100 + k,
        }
    }
}

/// A binary mask at the working resolution, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    pub height: usize,
    pub width: usize,
    pub data: Vec<bool>,
}

impl Mask {
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&b| b).count()
    }

    /// `[x, y, w, h]` of the set pixels (COCO convention), `None` when empty.
    pub fn bbox(&self) -> Option<[usize; 4]> {
        let mut b: Option<[usize; 4]> = None; // x0, y0, x1, y1 inclusive
        for (p, _) in self.data.iter().enumerate().filter(|(_, &v)| v) {
            let (y, x) = (p / self.width, p % self.width);
            b = Some(match b {
                None => [x, y, x, y],
                Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x), y1.max(y)],
            });
        }
        b.map(|[x0, y0, x1, y1]| [x0, y0, x1 - x0 + 1, y1 - y0 + 1])
    }
}

/// One annotated segment of one frame. Serialises without its mask.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Segment {
    /// The panoptic segment id (`R + 256·G + 65536·B` of its colour), stable across the clip.
    pub segment_id: u32,
    pub category_id: u32,
    pub category: String,
    pub isthing: bool,
    pub iscrowd: bool,
    /// `"{category}_{k}"`, stable across the clip (spec B.0).
    pub instance: String,
    /// Pixel count at the working resolution.
    pub area: usize,
    /// `[x, y, w, h]` at the working resolution.
    pub bbox: [usize; 4],
    #[serde(skip)]
    pub mask: Mask,
}

/// The annotations of one frame.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PanopticFrame {
    /// Index of the frame in [`Clip::frames`].
    pub frame_index: usize,
    /// The dataset's image id (Cityscapes-VPS `0005_0025_frankfurt_000000_001751`, VIPSeg `00000976`).
    pub image_id: String,
    pub segments: Vec<Segment>,
}

/// How the pseudo-instance "other" is formed (spec B.0, F.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtherRegion {
    /// As the official code: the union of all masks (its comment says otherwise).
    #[default]
    Official,
    /// As intended: the pixels that no segment covers.
    Corrected,
}

impl PanopticFrame {
    /// The "other" pseudo-instance's mask for this frame.
    pub fn other_mask(&self, mode: OtherRegion, height: usize, width: usize) -> Mask {
        let mut data = vec![false; height * width];
        for s in &self.segments {
            for (d, &m) in data.iter_mut().zip(&s.mask.data) {
                *d |= m;
            }
        }
        if mode == OtherRegion::Corrected {
            data.iter_mut().for_each(|d| *d = !*d);
        }
        Mask {
            height,
            width,
            data,
        }
    }
}

/// A video clip of a panoptic dataset, at a working resolution.
///
/// Serialises as `xinc inspect --json` prints it: the frame count (`frames`), whether there is
/// flow (`has_flow`), the size, and the annotated frames (`annotated_frames`) without masks;
/// the file paths, the category table and the frame files' size are left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Clip {
    pub format: DatasetFormat,
    /// The video id (`0005`, `26_cblDl5vCZnw`).
    pub video: String,
    /// Every frame file, in the dataset's (sorted) order.
    #[serde(serialize_with = "count")]
    pub frames: Vec<PathBuf>,
    /// Per-frame optical-flow `.npy` files, sorted like the frames, when the clip has them.
    #[serde(rename = "has_flow", serialize_with = "is_some")]
    pub flows: Option<Vec<PathBuf>>,
    #[serde(skip)]
    pub categories: CategoryTable,
    /// The annotated frames, in frame order.
    #[serde(rename = "annotated_frames")]
    pub annotations: Vec<PanopticFrame>,
    /// Working resolution `[H, W]` of the masks.
    pub size: [usize; 2],
    /// `[H, W]` of every frame file (and of its maps and flows) before crop and resize.
    #[serde(skip)]
    pub frame_size: [usize; 2],
}

fn count<S: serde::Serializer, T>(items: &[T], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(items.len() as u64)
}

fn is_some<S: serde::Serializer, T>(
    value: &Option<T>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_bool(value.is_some())
}

impl Clip {
    /// Every instance name of the clip, sorted by (category, k), as the official code orders them.
    pub fn instance_names(&self) -> Vec<String> {
        let mut names: Vec<(String, u32, String)> = Vec::new();
        for s in self.annotations.iter().flat_map(|f| &f.segments) {
            if !names.iter().any(|(_, _, n)| n == &s.instance) {
                let k = s
                    .instance
                    .rsplit('_')
                    .next()
                    .and_then(|k| k.parse().ok())
                    .unwrap_or(0);
                names.push((s.category.clone(), k, s.instance.clone()));
            }
        }
        names.sort();
        names.into_iter().map(|(_, _, n)| n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip() {
        for id in [0u32, 1, 255, 256, 65535, 65536, 0xffffff] {
            assert_eq!(rgb_to_id(id_to_rgb(id)), id);
        }
        assert_eq!(rgb_to_id([1, 2, 3]), 1 + 512 + 196_608);
        for v in [
            PanopticValue::Void,
            PanopticValue::Region { category: 0 },
            PanopticValue::Instance { category: 13, k: 0 },
            PanopticValue::Instance { category: 18, k: 7 },
        ] {
            assert_eq!(cityscapes_value::decode(cityscapes_value::encode(v)), v);
        }
        assert_eq!(
            cityscapes_value::decode(13_002),
            PanopticValue::Instance { category: 13, k: 2 }
        );
        assert_eq!(
            cityscapes_value::decode(0),
            PanopticValue::Region { category: 0 }
        );
        for v in [
            PanopticValue::Void,
            PanopticValue::Region { category: 0 },
            PanopticValue::Region { category: 123 },
            PanopticValue::Instance { category: 60, k: 3 },
        ] {
            assert_eq!(vipseg_value::decode(vipseg_value::encode(v)), v);
        }
        assert_eq!(
            vipseg_value::decode(6103),
            PanopticValue::Instance { category: 60, k: 3 }
        );
        assert_eq!(
            vipseg_value::decode(29),
            PanopticValue::Region { category: 28 }
        );
    }

    #[test]
    fn cityscapes_table_matches_the_spec() {
        let t = CategoryTable::cityscapes_vps();
        assert_eq!(t.categories.len(), 19);
        assert_eq!(t.categories.iter().filter(|c| c.isthing).count(), 8);
        assert_eq!(t.get(0).unwrap().name, "road");
        assert_eq!(t.get(8).unwrap().name, "vegitation");
        assert_eq!(t.by_name("car").unwrap().color, [0, 0, 142]);
    }

    #[test]
    fn masks_give_area_bbox_and_other_regions() {
        let mask = |on: &[usize]| Mask {
            height: 3,
            width: 4,
            data: (0..12).map(|p| on.contains(&p)).collect(),
        };
        let m = mask(&[5, 6, 10]);
        assert_eq!(m.area(), 3);
        assert_eq!(m.bbox(), Some([1, 1, 2, 2]));
        assert_eq!(mask(&[]).bbox(), None);
        let seg = |m: Mask| Segment {
            segment_id: 1,
            category_id: 0,
            category: "road".into(),
            isthing: false,
            iscrowd: false,
            instance: "road_0".into(),
            area: m.area(),
            bbox: m.bbox().unwrap_or([0; 4]),
            mask: m,
        };
        let frame = PanopticFrame {
            frame_index: 0,
            image_id: "x".into(),
            segments: vec![seg(mask(&[0, 1])), seg(mask(&[1, 2]))],
        };
        assert_eq!(frame.other_mask(OtherRegion::Official, 3, 4).area(), 3);
        assert_eq!(frame.other_mask(OtherRegion::Corrected, 3, 4).area(), 9);
    }
}
