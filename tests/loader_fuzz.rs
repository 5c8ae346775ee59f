//! Fuzzing the loaders: random bytes, mutated valid files (bit flips, truncations, insertions,
//! changed digits) and valid PNGs of random content, in place of a dataset's panoptic PNGs, JSON
//! or flow file. Opening the clip must return `Ok` or `Err`, never panic.

use std::path::{Path, PathBuf};

use image::{ImageBuffer, Luma, Rgb, RgbImage};
use npyz::WriterBuilder;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::json;
use xinc::data::clip::{open_clip, ClipOptions};

const CASES: u32 = 64;
const FULL: [usize; 2] = [8, 16];
const CITY_PNG: &str = "0005_0000_frankfurt_000000_000001_final_mask.png";

fn opts() -> ClipOptions {
    ClipOptions {
        size: [4, 8],
        video: None,
    }
}

/// The panoptic maps both fixtures use: a left half of value `a`, a right half of value `b`.
fn write_maps(values: &Path, colours: &Path, (a, b): (u16, u16)) {
    let [h, w] = FULL;
    std::fs::create_dir_all(values.parent().unwrap()).unwrap();
    std::fs::create_dir_all(colours.parent().unwrap()).unwrap();
    let img: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(w as u32, h as u32, |x, _| Luma([if x < 8 { a } else { b }]));
    img.save(values).unwrap();
    RgbImage::from_fn(w as u32, h as u32, |x, _| {
        Rgb(if x < 8 { [1, 0, 0] } else { [2, 0, 0] })
    })
    .save(colours)
    .unwrap();
}

fn segments() -> serde_json::Value {
    json!([
        {"id": 1, "category_id": 0, "iscrowd": 0, "area": 64},
        {"id": 2, "category_id": 13, "iscrowd": 0, "area": 64},
    ])
}

/// A one-frame Cityscapes-VPS dataset with a flow file; returns the paths that get fuzzed:
/// `[values PNG, colours PNG, JSON, flow]`.
fn cityscapes_dataset(root: &Path) -> [PathBuf; 4] {
    let [h, w] = FULL;
    let frames = root.join("val/img_all");
    std::fs::create_dir_all(&frames).unwrap();
    RgbImage::from_pixel(w as u32, h as u32, Rgb([9, 9, 9]))
        .save(frames.join("frankfurt_000000_000001_leftImg8bit.png"))
        .unwrap();
    let values = root.join("val/panoptic_inst").join(CITY_PNG);
    let colours = root.join("val/panoptic_video").join(CITY_PNG);
    write_maps(&values, &colours, (0, 13001));
    let json = root.join("panoptic_gt_val_city_vps.json");
    let gt = json!({"annotations": [{"image_id": "0005_0000_frankfurt_000000_000001",
        "file_name": CITY_PNG, "segments_info": segments()}]});
    std::fs::write(&json, serde_json::to_vec(&gt).unwrap()).unwrap();
    let flows = root.join("vps_subset/val/0005/flows");
    std::fs::create_dir_all(&flows).unwrap();
    let flow = flows.join("0.npy");
    let mut buf = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[h as u64, w as u64, 2])
        .writer(&mut buf)
        .begin_nd()
        .unwrap();
    writer.extend((0..h * w * 2).map(|i| i as f32)).unwrap();
    writer.finish().unwrap();
    std::fs::write(&flow, buf).unwrap();
    // The same frames listed in vps_subset, so that the flows belong to the clip.
    std::fs::create_dir_all(root.join("vps_subset/val/0005/images")).unwrap();
    std::fs::copy(
        frames.join("frankfurt_000000_000001_leftImg8bit.png"),
        root.join("vps_subset/val/0005/images/frankfurt_000000_000001_leftImg8bit.png"),
    )
    .unwrap();
    [values, colours, json, flow]
}

/// A one-frame VIPSeg dataset; returns `[values PNG, colours PNG, JSON]`.
fn vipseg_dataset(root: &Path) -> [PathBuf; 3] {
    let [h, w] = FULL;
    let frames = root.join("images/v");
    std::fs::create_dir_all(&frames).unwrap();
    RgbImage::from_pixel(w as u32, h as u32, Rgb([9, 9, 9]))
        .save(frames.join("00000001.jpg"))
        .unwrap();
    let values = root.join("panomasks/v/00000001.png");
    let colours = root.join("panomasksRGB/v/00000001.png");
    write_maps(&values, &colours, (1, 1401));
    let json = root.join("panoptic_gt_VIPSeg.json");
    let gt = json!({
        "videos": [{"video_id": "v", "images": [{"id": "00000001", "width": w, "height": h,
            "file_name": "00000001.png"}]}],
        "annotations": [{"video_id": "v", "annotations": [{"image_id": "00000001",
            "file_name": "00000001.png", "segments_info": segments()}]}],
        "categories": [{"id": 0, "name": "wall", "isthing": 0, "color": [1, 0, 0]},
            {"id": 13, "name": "car", "isthing": 1, "color": [2, 0, 0]}],
    });
    std::fs::write(&json, serde_json::to_vec(&gt).unwrap()).unwrap();
    [values, colours, json]
}

/// One change to a file's bytes; positions are taken modulo the length.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Replaces the `at`-th ASCII digit (modulo their count) by `digit`.
    Digit {
        at: usize,
        digit: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<usize>(), vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (any::<usize>(), b'0'..=b'9').prop_map(|(at, digit)| Mutation::Digit { at, digit }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::Flip { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
        Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
        Mutation::Insert { at, bytes: new } => {
            let at = at % (len + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Digit { at, digit } => {
            let digits: Vec<usize> = (0..len).filter(|&i| bytes[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                bytes[digits[at % digits.len()]] = *digit;
            }
        }
        _ => {}
    }
}

/// Writes `bytes` over `target`, opens the clip (and reads its flow 0 when `flow`), restores the
/// file. Any outcome but a panic is fine.
fn open_with(root: &Path, target: &Path, bytes: &[u8], flow: bool) {
    let original = std::fs::read(target).unwrap();
    std::fs::write(target, bytes).unwrap();
    if let Ok(clip) = open_clip(root, &opts()) {
        if flow {
            let _ = clip.flow(0);
        }
    }
    std::fs::write(target, original).unwrap();
}

/// The fuzzed files of both fixtures, built once per property in a fresh folder.
struct Fixtures {
    _dir: tempfile::TempDir,
    city_root: PathBuf,
    city: [PathBuf; 4],
    vip_root: PathBuf,
    vip: [PathBuf; 3],
}

impl Fixtures {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (city_root, vip_root) = (dir.path().join("city"), dir.path().join("vip"));
        let city = cityscapes_dataset(&city_root);
        let vip = vipseg_dataset(&vip_root);
        assert!(open_clip(&city_root, &opts()).is_ok());
        assert!(open_clip(&vip_root, &opts()).is_ok());
        Fixtures {
            _dir: dir,
            city_root,
            city,
            vip_root,
            vip,
        }
    }

    /// `(root, file)` number `i` among the PNGs and JSONs of both datasets.
    fn target(&self, i: usize) -> (&Path, &Path) {
        match i % 6 {
            k @ 0..=2 => (&self.city_root, &self.city[k]),
            k => (&self.vip_root, &self.vip[k - 3]),
        }
    }
}

fn valid_png_content() -> impl Strategy<Value = (u32, u32, Vec<u16>, Vec<[u8; 3]>)> {
    // Values around the interesting codes of both formats; colours from ids 0..4.
    let value = prop_oneof![
        Just(0u16),
        Just(1),
        Just(13),
        Just(255),
        Just(1401),
        Just(13001),
        any::<u16>()
    ];
    let colour = (0u8..4).prop_map(|r| [r, 0, 0]);
    (1u32..12, 1u32..20).prop_flat_map(move |(h, w)| {
        let n = (h * w) as usize;
        (
            Just(h),
            Just(w),
            vec(value.clone(), n..=n),
            vec(colour.clone(), n..=n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_bytes_never_panic(which in 0usize..6, bytes in vec(any::<u8>(), 0..600)) {
        let fx = Fixtures::new();
        let (root, target) = fx.target(which);
        open_with(root, target, &bytes, false);
    }

    #[test]
    fn mutated_pngs_and_json_never_panic(which in 0usize..6, muts in vec(mutation(), 1..6)) {
        let fx = Fixtures::new();
        let (root, target) = fx.target(which);
        let mut bytes = std::fs::read(target).unwrap();
        muts.iter().for_each(|m| apply(&mut bytes, m));
        open_with(root, target, &bytes, false);
    }

    #[test]
    fn valid_pngs_of_random_content_never_panic(
        vip in any::<bool>(),
        (h, w, values, colours) in valid_png_content(),
    ) {
        let fx = Fixtures::new();
        let (root, files) = if vip {
            (&fx.vip_root, [&fx.vip[0], &fx.vip[1]])
        } else {
            (&fx.city_root, [&fx.city[0], &fx.city[1]])
        };
        let grey: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_raw(w, h, values).unwrap();
        grey.save(files[0]).unwrap();
        let raw: Vec<u8> = colours.into_iter().flatten().collect();
        RgbImage::from_raw(w, h, raw).unwrap().save(files[1]).unwrap();
        let _ = open_clip(root, &opts());
    }

    #[test]
    fn mutated_flows_never_panic(muts in vec(mutation(), 1..6), random in vec(any::<u8>(), 0..300)) {
        let fx = Fixtures::new();
        let mut bytes = std::fs::read(&fx.city[3]).unwrap();
        muts.iter().for_each(|m| apply(&mut bytes, m));
        open_with(&fx.city_root, &fx.city[3], &bytes, true);
        open_with(&fx.city_root, &fx.city[3], &random, true);
    }
}
