//! The synthetic dataset generator, checked from its files alone (no loader): layouts and names,
//! determinism, panoptic PNGs against the JSON, stable segment ids, occlusion, entering and
//! leaving things, and exact flow.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use image::DynamicImage;
use serde_json::Value;
use xinc::data::panoptic::{
    cityscapes_value, rgb_to_id, vipseg_value, DatasetFormat, PanopticValue,
};
use xinc::data::synth::dataset::{generate, vipseg_categories, SynthParams, SynthSummary};
use xinc::data::synth::scene::{Label, SceneClass, StreetVideo};

const SIZE: [usize; 2] = [64, 128];

fn params(format: DatasetFormat, frames: usize, seed: u64) -> SynthParams {
    SynthParams {
        format,
        frames,
        size: SIZE,
        seed,
        vector_flow: true,
        video: None,
    }
}

fn generate_in(dir: &Path, p: &SynthParams) -> SynthSummary {
    generate(p, dir).unwrap_or_else(|e| panic!("{e}"))
}

fn generate_tmp(p: &SynthParams) -> (tempfile::TempDir, SynthSummary) {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate_in(dir.path(), p);
    (dir, summary)
}

/// Every file under `root`, as `/`-separated relative paths.
fn files(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn read_l16(path: &Path) -> Vec<u16> {
    match image::open(path).unwrap() {
        DynamicImage::ImageLuma16(img) => {
            assert_eq!(img.dimensions(), (SIZE[1] as u32, SIZE[0] as u32));
            img.into_raw()
        }
        other => panic!(
            "{}: {:?}, expected 16-bit grey",
            path.display(),
            other.color()
        ),
    }
}

fn read_rgb(path: &Path) -> Vec<[u8; 3]> {
    match image::open(path).unwrap() {
        DynamicImage::ImageRgb8(img) => {
            assert_eq!(img.dimensions(), (SIZE[1] as u32, SIZE[0] as u32));
            img.pixels().map(|p| p.0).collect()
        }
        other => panic!("{}: {:?}, expected RGB8", path.display(), other.color()),
    }
}

/// A float32 `.npy` file: shape and data.
/// Reads an `.npy` file (f32, or u8 for the magnitude maps) as f32 values.
fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let npy = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
    let shape = npy.shape().to_vec();
    let values = match npy.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Uint => npy
            .into_vec::<u8>()
            .unwrap()
            .into_iter()
            .map(f32::from)
            .collect(),
        _ => npy.into_vec::<f32>().unwrap(),
    };
    (shape, values)
}

fn cityscapes_stem(t: usize) -> String {
    format!("frankfurt_000000_{:06}", 1736 + t)
}

fn vipseg_stem(t: usize) -> String {
    format!("{:08}", 976 + t)
}

// ---------------------------------------------------------------------------------------------
// Layouts.

#[test]
fn cityscapes_clip_has_exactly_the_documented_files() {
    let (dir, summary) = generate_tmp(&params(DatasetFormat::CityscapesVps, 11, 1));
    assert_eq!(
        (summary.video.as_str(), summary.annotated_frames),
        ("0005", 3)
    );
    let mut expected = BTreeSet::from(["panoptic_gt_val_city_vps.json".to_string()]);
    for t in 0..11 {
        let stem = cityscapes_stem(t);
        expected.insert(format!("val/img_all/{stem}_leftImg8bit.png"));
        expected.insert(format!("vps_subset/val/0005/images/{stem}_leftImg8bit.png"));
        expected.insert(format!("vps_subset/val/0005/flows/{stem}_leftImg8bit.npy"));
        expected.insert(format!(
            "vps_subset/val/0005/flows_uv/{stem}_leftImg8bit.npy"
        ));
        if t % 5 == 0 {
            expected.insert(format!(
                "val/panoptic_inst/0005_{t:04}_{stem}_final_mask.png"
            ));
            expected.insert(format!(
                "val/panoptic_video/0005_{t:04}_{stem}_final_mask.png"
            ));
        }
    }
    assert_eq!(files(dir.path()), expected);
    // The two copies of a frame are the same file.
    let stem = cityscapes_stem(7);
    let a = std::fs::read(
        dir.path()
            .join(format!("val/img_all/{stem}_leftImg8bit.png")),
    );
    let b = std::fs::read(
        dir.path()
            .join(format!("vps_subset/val/0005/images/{stem}_leftImg8bit.png")),
    );
    assert_eq!(a.unwrap(), b.unwrap());
}

#[test]
fn cityscapes_json_annotates_exactly_every_fifth_frame() {
    let (dir, _) = generate_tmp(&params(DatasetFormat::CityscapesVps, 11, 1));
    let json = read_json(&dir.path().join("panoptic_gt_val_city_vps.json"));
    let ids = |key: &str, field: &str| -> Vec<String> {
        let list = json[key].as_array().unwrap();
        list.iter()
            .map(|e| e[field].as_str().unwrap().to_string())
            .collect()
    };
    let expected: Vec<String> = [0, 5, 10]
        .iter()
        .map(|t| format!("0005_{t:04}_{}", cityscapes_stem(*t)))
        .collect();
    assert_eq!(ids("images", "id"), expected);
    assert_eq!(ids("annotations", "image_id"), expected);
    let image = &json["images"][1];
    assert_eq!(
        image["file_name"],
        "frankfurt_000000_001741_leftImg8bit.png"
    );
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(128), Some(64))
    );
    assert_eq!(
        json["annotations"][1]["file_name"],
        "0005_0005_frankfurt_000000_001741_final_mask.png"
    );
    let categories = json["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 19);
    assert_eq!(categories[13]["name"], "car");
    assert_eq!(categories[13]["isthing"], 1);
    assert_eq!(categories[0]["ori_id"], 7);
}

#[test]
fn vipseg_clip_has_exactly_the_documented_files() {
    let mut p = params(DatasetFormat::Vipseg, 6, 1);
    p.video = Some("12_n-ytHkMceew".into());
    let (dir, summary) = generate_tmp(&p);
    assert_eq!(summary.annotated_frames, 6);
    let mut expected = BTreeSet::from(["panoptic_gt_VIPSeg.json".to_string()]);
    for t in 0..6 {
        let stem = vipseg_stem(t);
        expected.insert(format!("images/12_n-ytHkMceew/{stem}.jpg"));
        for kind in ["panomasks", "panomasksRGB"] {
            expected.insert(format!("{kind}/12_n-ytHkMceew/{stem}.png"));
        }
        for kind in ["flows", "flows_uv"] {
            expected.insert(format!("{kind}/12_n-ytHkMceew/{stem}.npy"));
        }
    }
    assert_eq!(files(dir.path()), expected);
    let jpeg = image::open(dir.path().join("images/12_n-ytHkMceew/00000976.jpg")).unwrap();
    assert_eq!(jpeg.color(), image::ColorType::Rgb8);
    assert_eq!((jpeg.width(), jpeg.height()), (128, 64));
    let json = read_json(&dir.path().join("panoptic_gt_VIPSeg.json"));
    assert_eq!(json["videos"][0]["video_id"], "12_n-ytHkMceew");
    let images = json["videos"][0]["images"].as_array().unwrap();
    let ids: Vec<&str> = images.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, (0..6).map(vipseg_stem).collect::<Vec<_>>());
    assert_eq!(images[0]["file_name"], "00000976.png");
    let annotations = json["annotations"][0]["annotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 6, "every VIPSeg frame is annotated");
    let categories = json["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 124);
    assert_eq!(categories.iter().filter(|c| c["isthing"] == 1).count(), 58);
    assert_eq!(
        (
            categories[48]["name"].as_str(),
            categories[60]["name"].as_str()
        ),
        (Some("car"), Some("person"))
    );
}

#[test]
fn regenerating_a_shorter_clip_replaces_the_longer_one() {
    for format in [DatasetFormat::CityscapesVps, DatasetFormat::Vipseg] {
        let dir = tempfile::tempdir().unwrap();
        generate_in(dir.path(), &params(format, 11, 3));
        generate_in(dir.path(), &params(format, 6, 3));
        let fresh = generate_tmp(&params(format, 6, 3)).0;
        assert_eq!(files(dir.path()), files(fresh.path()), "{format:?}");
    }
}

#[test]
fn invalid_parameters_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        params(DatasetFormat::CityscapesVps, 0, 0),
        SynthParams {
            size: [8, 128],
            ..params(DatasetFormat::Vipseg, 2, 0)
        },
        SynthParams {
            video: Some("5".into()),
            ..params(DatasetFormat::CityscapesVps, 2, 0)
        },
        SynthParams {
            video: Some("../x".into()),
            ..params(DatasetFormat::Vipseg, 2, 0)
        },
    ];
    for p in bad {
        let err = generate(&p, dir.path()).unwrap_err();
        assert!(err.to_string().contains("synth"), "{err}");
    }
    assert!(files(dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Determinism.

#[test]
fn generation_is_byte_identical_for_a_seed_and_differs_across_seeds() {
    for format in [DatasetFormat::CityscapesVps, DatasetFormat::Vipseg] {
        let (a, _) = generate_tmp(&params(format, 6, 7));
        let (b, _) = generate_tmp(&params(format, 6, 7));
        let (c, _) = generate_tmp(&params(format, 6, 8));
        let names = files(a.path());
        assert_eq!(names, files(b.path()));
        for name in &names {
            let bytes = |d: &Path| std::fs::read(d.join(name)).unwrap();
            assert!(
                bytes(a.path()) == bytes(b.path()),
                "{format:?} {name} differs"
            );
        }
        let frame = |d: &Path| {
            let name = names
                .iter()
                .find(|n| n.ends_with(".png") || n.ends_with(".jpg"));
            std::fs::read(d.join(name.unwrap())).unwrap()
        };
        assert!(
            frame(a.path()) != frame(c.path()),
            "{format:?}: seeds 7 and 8 agree"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Panoptic annotations.

/// One annotated frame: its single-channel values, RGB colours and JSON `segments_info`.
struct Annotated {
    values: Vec<u16>,
    colours: Vec<[u8; 3]>,
    segments: Vec<Value>,
}

/// The annotated frames of a generated root, in order, with its thing/stuff categories.
fn annotated(
    root: &Path,
    format: DatasetFormat,
    video: &str,
) -> (Vec<Annotated>, HashMap<u64, bool>) {
    let (json_name, masks) = match format {
        DatasetFormat::CityscapesVps => (
            "panoptic_gt_val_city_vps.json",
            [
                PathBuf::from("val/panoptic_inst"),
                PathBuf::from("val/panoptic_video"),
            ],
        ),
        DatasetFormat::Vipseg => (
            "panoptic_gt_VIPSeg.json",
            [
                Path::new("panomasks").join(video),
                Path::new("panomasksRGB").join(video),
            ],
        ),
    };
    let json = read_json(&root.join(json_name));
    let list = match format {
        DatasetFormat::CityscapesVps => json["annotations"].clone(),
        DatasetFormat::Vipseg => json["annotations"][0]["annotations"].clone(),
    };
    let frames = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let name = a["file_name"].as_str().unwrap();
            Annotated {
                values: read_l16(&root.join(&masks[0]).join(name)),
                colours: read_rgb(&root.join(&masks[1]).join(name)),
                segments: a["segments_info"].as_array().unwrap().clone(),
            }
        })
        .collect();
    let categories = json["categories"].as_array().unwrap().iter();
    let isthing = categories
        .map(|c| (c["id"].as_u64().unwrap(), c["isthing"] == 1))
        .collect();
    (frames, isthing)
}

fn decode(format: DatasetFormat, v: u16) -> PanopticValue {
    match format {
        DatasetFormat::CityscapesVps => cityscapes_value::decode(u32::from(v)),
        DatasetFormat::Vipseg => vipseg_value::decode(u32::from(v)),
    }
}

/// Every check of spec D.1/D.2 that ties the PNGs to the JSON; returns value → segment id.
fn check_annotations(
    format: DatasetFormat,
    frames: &[Annotated],
    isthing: &HashMap<u64, bool>,
) -> HashMap<u16, u32> {
    let mut ids: HashMap<u16, u32> = HashMap::new();
    for (f, frame) in frames.iter().enumerate() {
        let mut colour_of: HashMap<u16, [u8; 3]> = HashMap::new();
        let mut area: HashMap<u16, u64> = HashMap::new();
        for (&v, &c) in frame.values.iter().zip(&frame.colours) {
            assert_eq!(
                *colour_of.entry(v).or_insert(c),
                c,
                "frame {f}: value {v} has two colours"
            );
            *area.entry(v).or_default() += 1;
        }
        let distinct: HashSet<[u8; 3]> = colour_of.values().copied().collect();
        assert_eq!(
            distinct.len(),
            colour_of.len(),
            "frame {f}: two values share a colour"
        );
        let segments: HashMap<u64, &Value> = frame
            .segments
            .iter()
            .map(|s| (s["id"].as_u64().unwrap(), s))
            .collect();
        assert_eq!(
            segments.len(),
            frame.segments.len(),
            "frame {f}: duplicate segment ids"
        );
        let mut labelled = 0;
        for (&v, &colour) in &colour_of {
            let category = match decode(format, v) {
                PanopticValue::Void => {
                    assert_eq!(colour, [0, 0, 0]);
                    continue;
                }
                PanopticValue::Region { category } => (category, false),
                PanopticValue::Instance { category, .. } => (category, true),
            };
            assert_eq!(
                isthing.get(&u64::from(category.0)),
                Some(&category.1),
                "value {v}"
            );
            let id = rgb_to_id(colour);
            let segment = segments
                .get(&u64::from(id))
                .unwrap_or_else(|| panic!("frame {f}: no segment {id}"));
            assert_eq!(
                segment["category_id"].as_u64(),
                Some(u64::from(category.0)),
                "value {v}"
            );
            assert_eq!(segment["area"].as_u64(), Some(area[&v]), "value {v}");
            assert_eq!(segment["iscrowd"], 0);
            assert_eq!(
                *ids.entry(v).or_insert(id),
                id,
                "value {v} changed its segment id"
            );
            labelled += 1;
        }
        assert_eq!(
            labelled,
            segments.len(),
            "frame {f}: segments without pixels"
        );
    }
    let unique: HashSet<u32> = ids.values().copied().collect();
    assert_eq!(unique.len(), ids.len(), "two values share a segment id");
    ids
}

/// The instance names of spec B.0 by value: per category, `k` counts the instances seen before,
/// in frame order, then in value order within a frame.
fn loader_names(format: DatasetFormat, frames: &[Annotated]) -> HashMap<u16, String> {
    let table = match format {
        DatasetFormat::CityscapesVps => xinc::data::panoptic::CategoryTable::cityscapes_vps(),
        DatasetFormat::Vipseg => vipseg_categories(),
    };
    let mut names = HashMap::new();
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for frame in frames {
        let values: BTreeSet<u16> = frame.values.iter().copied().collect();
        for v in values {
            if let PanopticValue::Instance { category, .. } = decode(format, v) {
                names.entry(v).or_insert_with(|| {
                    let k = counts.entry(category).or_default();
                    *k += 1;
                    format!("{}_{}", table.get(category).unwrap().name, *k - 1)
                });
            }
        }
    }
    names
}

/// The summary names every annotated thing as the loaders will.
fn check_names(format: DatasetFormat, frames: &[Annotated], summary: &SynthSummary) {
    let names = loader_names(format, frames);
    for i in &summary.instances {
        if let Some(name) = names.get(&(i.value as u16)) {
            assert_eq!(name, &i.name, "{format:?} value {}", i.value);
        }
    }
    assert!(names.len() >= 6, "{names:?}");
}

#[test]
fn cityscapes_pngs_agree_with_the_json_and_ids_are_stable() {
    let (dir, summary) = generate_tmp(&params(DatasetFormat::CityscapesVps, 30, 2));
    let (frames, isthing) = annotated(dir.path(), DatasetFormat::CityscapesVps, "0005");
    assert_eq!(frames.len(), 6);
    let ids = check_annotations(DatasetFormat::CityscapesVps, &frames, &isthing);
    // Stuff: road is 0 and keeps its category colour; things are class·1000 + k.
    assert_eq!(ids[&0], rgb_to_id([128, 64, 128]));
    for i in &summary.instances {
        assert_eq!(i.value / 1000, i.category_id);
        assert_eq!(
            ids.get(&(i.value as u16)),
            Some(&i.segment_id),
            "{}",
            i.name
        );
    }
    check_names(DatasetFormat::CityscapesVps, &frames, &summary);
    assert!(
        frames.iter().any(|f| f.values.contains(&255)),
        "the street bin is void"
    );
}

#[test]
fn vipseg_pngs_agree_with_the_json_and_ids_are_stable() {
    let (dir, summary) = generate_tmp(&params(DatasetFormat::Vipseg, 6, 2));
    let (frames, isthing) = annotated(dir.path(), DatasetFormat::Vipseg, "26_cblDl5vCZnw");
    assert_eq!(frames.len(), 6);
    let ids = check_annotations(DatasetFormat::Vipseg, &frames, &isthing);
    let table = vipseg_categories();
    for (value, class) in [
        (29, "sky"),
        (22, "building"),
        (67, "tree"),
        (19, "road"),
        (20, "path"),
    ] {
        assert!(ids.contains_key(&value), "{class}");
        assert_eq!(table.get(u32::from(value) - 1).unwrap().name, class);
    }
    check_names(DatasetFormat::Vipseg, &frames, &summary);
    for i in &summary.instances {
        assert_eq!(i.value / 100 - 1, i.category_id);
        assert!([48, 60].contains(&i.category_id));
    }
}

#[test]
fn things_enter_and_leave_the_frame() {
    let (dir, summary) = generate_tmp(&params(DatasetFormat::Vipseg, 6, 0));
    let (frames, _) = annotated(dir.path(), DatasetFormat::Vipseg, "26_cblDl5vCZnw");
    let things = |f: &Annotated| -> BTreeSet<u16> {
        f.values.iter().copied().filter(|&v| v >= 125).collect()
    };
    let (first, last) = (things(&frames[0]), things(&frames[5]));
    assert!(
        first != last,
        "the same things are visible in frames 0 and 5"
    );
    // Over a full clip, a car enters from each side and one leaves.
    let (_, long) = generate_tmp(&params(DatasetFormat::Vipseg, 30, 0));
    assert!(
        long.instances
            .iter()
            .filter(|i| i.visible_frames < 30)
            .count()
            >= 3,
        "{long}"
    );
    assert!(summary.instances.iter().all(|i| i.velocity[0] != 0.0));
}

// ---------------------------------------------------------------------------------------------
// The scene and its flow.

#[test]
fn the_scene_has_every_class_and_enough_things() {
    let scene = StreetVideo::new(SIZE[0], SIZE[1], 5);
    let labels: HashSet<Label> = scene.render(0).labels.into_iter().collect();
    for class in SceneClass::STUFF {
        assert!(labels.contains(&Label::Stuff(class)), "{class:?}");
    }
    assert!(labels.contains(&Label::Void));
    let count = |c| scene.things().iter().filter(|t| t.class == c).count();
    assert!(count(SceneClass::Car) >= 3 && count(SceneClass::Person) >= 3);
    let left = scene.things().iter().filter(|t| t.velocity[0] < 0).count();
    assert!(
        left > 0 && left < scene.things().len(),
        "things go both ways"
    );
    let speeds: HashSet<i64> = scene.things().iter().map(|t| t.velocity[0]).collect();
    assert!(speeds.len() >= 4, "{speeds:?}");
}

/// Sizes and seeds over which the scene invariants are checked.
const SIZES: [[usize; 2]; 4] = [[16, 16], [48, 100], [64, 128], [128, 256]];

/// Asserts that every pixel of every thing's sprite shows that thing or a nearer one (lower on
/// screen, ties by index) in frames `0..frames`; returns the number of occluded pixels.
fn check_depth_order(scene: &StreetVideo, frames: usize) -> usize {
    let bottom = |i: usize, t: usize| {
        let thing = &scene.things()[i];
        thing.top_left(t)[1] + thing.size[0] as i64
    };
    let mut occluded = 0;
    for t in 0..frames {
        let labels = scene.render(t).labels;
        for i in 0..scene.things().len() {
            let silhouette = scene.silhouette(i, t);
            for p in (0..labels.len()).filter(|&p| silhouette[p]) {
                match labels[p] {
                    Label::Thing(j) if j != i => {
                        let nearer = (bottom(j, t), j) > (bottom(i, t), i);
                        assert!(nearer, "{j} over {i} at frame {t}");
                        occluded += 1;
                    }
                    Label::Thing(_) => {}
                    other => panic!("frame {t}: thing {i}'s pixel shows {other:?}"),
                }
            }
        }
    }
    occluded
}

/// Asserts that from frame `t` to `t + 1` every visible thing pixel moves by the thing's
/// velocity with its colour, and that the background does not change.
fn check_translation(scene: &StreetVideo, frames: usize) {
    let [h, w] = scene.size().map(|s| s as i64);
    let colour =
        |f: &xinc::data::synth::scene::Frame, x: i64, y: i64| f.rgb.get_pixel(x as u32, y as u32).0;
    for t in 0..frames - 1 {
        let (now, next) = (scene.render(t), scene.render(t + 1));
        for p in 0..now.labels.len() {
            let (x, y) = (p as i64 % w, p as i64 / w);
            match now.labels[p] {
                Label::Thing(i) => {
                    let [u, v] = scene.things()[i].velocity;
                    let (qx, qy) = (x + u, y + v);
                    let inside = (0..w).contains(&qx) && (0..h).contains(&qy);
                    if inside && next.labels[(qy * w + qx) as usize] == Label::Thing(i) {
                        assert_eq!(colour(&now, x, y), colour(&next, qx, qy), "thing {i}");
                    }
                }
                label if next.labels[p] == label => {
                    assert_eq!(colour(&now, x, y), colour(&next, x, y), "{label:?}");
                }
                _ => {}
            }
        }
    }
}

#[test]
fn nearer_things_occlude_farther_ones() {
    assert!(
        check_depth_order(&StreetVideo::new(SIZE[0], SIZE[1], 0), 6) > 0,
        "no occlusion"
    );
    for (size, seed) in SIZES.iter().flat_map(|s| (0..3).map(move |seed| (s, seed))) {
        check_depth_order(&StreetVideo::new(size[0], size[1], seed), 4);
    }
}

#[test]
fn things_translate_exactly_over_a_static_background() {
    for (size, seed) in SIZES.iter().flat_map(|s| (0..3).map(move |seed| (s, seed))) {
        check_translation(&StreetVideo::new(size[0], size[1], seed), 4);
    }
}

#[test]
fn every_seed_has_an_occlusion_and_an_entry_within_six_frames() {
    for seed in 0..16 {
        let scene = StreetVideo::new(SIZE[0], SIZE[1], seed);
        assert!(
            check_depth_order(&scene, 6) > 0,
            "seed {seed}: no occlusion"
        );
        let visible = |t| -> BTreeSet<Label> {
            let labels = scene.render(t).labels;
            labels
                .into_iter()
                .filter(|l| matches!(l, Label::Thing(_)))
                .collect()
        };
        assert!(
            visible(0) != visible(5),
            "seed {seed}: no thing enters or leaves"
        );
    }
}

#[test]
fn flow_files_hold_the_velocity_of_the_visible_thing() {
    for format in [DatasetFormat::CityscapesVps, DatasetFormat::Vipseg] {
        let (dir, summary) = generate_tmp(&params(format, 6, 6));
        let velocity: HashMap<u16, [f32; 2]> = summary
            .instances
            .iter()
            .map(|i| (i.value as u16, i.velocity))
            .collect();
        let (frames, _) = annotated(dir.path(), format, &summary.video);
        // (index among the annotated frames, frame index): frames 0 and 5.
        let pairs = match format {
            DatasetFormat::CityscapesVps => [(0, 0), (1, 5)],
            DatasetFormat::Vipseg => [(0, 0), (5, 5)],
        };
        for (k, t) in pairs {
            let annotation = &frames[k];
            let (mag, uv) = match format {
                DatasetFormat::CityscapesVps => {
                    let name = format!("{}_leftImg8bit.npy", cityscapes_stem(t));
                    let clip = dir.path().join("vps_subset/val/0005");
                    (
                        clip.join("flows").join(&name),
                        clip.join("flows_uv").join(name),
                    )
                }
                DatasetFormat::Vipseg => {
                    let name = format!("{}.npy", vipseg_stem(t));
                    (
                        dir.path().join("flows/26_cblDl5vCZnw").join(&name),
                        dir.path().join("flows_uv/26_cblDl5vCZnw").join(name),
                    )
                }
            };
            let (mag_shape, mag) = read_npy(&mag);
            let (uv_shape, uv) = read_npy(&uv);
            assert_eq!((mag_shape, uv_shape), (vec![64, 128], vec![64, 128, 2]));
            let mut moving = 0;
            for (p, v) in annotation.values.iter().enumerate() {
                let expected = velocity.get(v).copied().unwrap_or([0.0, 0.0]);
                assert_eq!(
                    [uv[2 * p], uv[2 * p + 1]],
                    expected,
                    "{format:?} frame {t} pixel {p}"
                );
                assert_eq!(mag[p], expected[0].hypot(expected[1]));
                moving += usize::from(expected != [0.0, 0.0]);
            }
            assert!(moving > 0, "{format:?} frame {t}: nothing moves");
        }
    }
}
