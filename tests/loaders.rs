//! The dataset loaders on tiny hand-made datasets of both formats, with expected segments
//! computed by hand at the working resolution, and every kind of malformed input.
//!
//! Layouts are drawn in working-resolution cells: with a cell of `c` full-resolution pixels and
//! a crop starting at row `top`, working pixel (y, x) is the nearest sample, full pixel
//! `(top + c·y, c·x)`. Anything drawn on other full pixels vanishes after resizing.

use std::ops::Range;
use std::path::{Path, PathBuf};

use image::{ImageBuffer, Luma, Rgb, RgbImage};
use npyz::WriterBuilder;
use serde_json::{json, Value};
use xinc::data::clip::{list_videos, open_clip, ClipOptions};
use xinc::data::flow::FlowMap;
use xinc::data::image::{read_rgb8, resize_bilinear_antialias, ImageTensor};
use xinc::data::panoptic::{Clip, DatasetFormat, PanopticFrame};
use xinc::data::resize::{crop_planar, resize_bicubic};
use xinc::XincError;

// ---------------------------------------------------------------------------------------------
// Drawing panoptic maps.

/// A rectangle of working cells with one panoptic value and one segment colour.
struct Region {
    value: u32,
    colour: [u8; 3],
    rows: Range<usize>,
    cols: Range<usize>,
}

fn region(value: u32, colour: [u8; 3], rows: Range<usize>, cols: Range<usize>) -> Region {
    Region {
        value,
        colour,
        rows,
        cols,
    }
}

/// How working cells lie on the full-resolution raster.
#[derive(Clone, Copy)]
struct Grid {
    /// Full size `[H0, W0]`.
    full: [usize; 2],
    /// Working size `[H, W]`.
    work: [usize; 2],
    /// First row of the crop.
    top: usize,
    /// Full pixels per working cell.
    cell: usize,
}

/// Cityscapes fixture: 16×32 → 8×16, no crop.
const CITY: Grid = Grid {
    full: [16, 32],
    work: [8, 16],
    top: 0,
    cell: 2,
};

/// VIPSeg fixture with its real crop: 700×1280, centre crop rows 30..670, factor 80 → 8×16.
const VIP_CROPPED: Grid = Grid {
    full: [700, 1280],
    work: [8, 16],
    top: 30,
    cell: 80,
};

/// Small VIPSeg fixture (smaller than the crop, so not cropped): 16×32 → 8×16.
const VIP_SMALL: Grid = CITY;

/// One frame's drawing: regions in painter's order (the first covers everything), the value of
/// rows outside the crop, and single full-resolution pixels `(row, col, value, colour)`.
struct Drawing {
    regions: Vec<Region>,
    outside: (u32, [u8; 3]),
    pixels: Vec<(usize, usize, u32, [u8; 3])>,
}

/// The full-resolution value and colour rasters of a drawing.
fn paint(grid: Grid, d: &Drawing) -> (Vec<u32>, Vec<[u8; 3]>) {
    let [h, w] = grid.full;
    let mut values = Vec::with_capacity(h * w);
    let mut colours = Vec::with_capacity(h * w);
    for r in 0..h {
        for c in 0..w {
            let y = (r >= grid.top).then(|| (r - grid.top) / grid.cell);
            let (x, mut px) = (c / grid.cell, d.outside);
            if let Some(y) = y.filter(|&y| y < grid.work[0]) {
                for reg in &d.regions {
                    if reg.rows.contains(&y) && reg.cols.contains(&x) {
                        px = (reg.value, reg.colour);
                    }
                }
            }
            if let Some(&(_, _, v, col)) = d.pixels.iter().find(|p| p.0 == r && p.1 == c) {
                px = (v, col);
            }
            values.push(px.0);
            colours.push(px.1);
        }
    }
    (values, colours)
}

fn write_grey16(path: &Path, [h, w]: [usize; 2], values: &[u32]) {
    let raw: Vec<u16> = values.iter().map(|&v| v as u16).collect();
    let img: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_raw(w as u32, h as u32, raw).unwrap();
    img.save(path).unwrap();
}

fn write_grey8(path: &Path, [h, w]: [usize; 2], values: &[u32]) {
    let raw: Vec<u8> = values.iter().map(|&v| v as u8).collect();
    image::GrayImage::from_raw(w as u32, h as u32, raw)
        .unwrap()
        .save(path)
        .unwrap();
}

fn write_rgb(path: &Path, [h, w]: [usize; 2], colours: &[[u8; 3]]) {
    let raw: Vec<u8> = colours.iter().flatten().copied().collect();
    RgbImage::from_raw(w as u32, h as u32, raw)
        .unwrap()
        .save(path)
        .unwrap();
}

/// Writes both panoptic PNGs of a drawing (`grey8`: the single-channel map as 8-bit).
fn write_maps(grid: Grid, d: &Drawing, values_png: &Path, colours_png: &Path, grey8: bool) {
    let (values, colours) = paint(grid, d);
    std::fs::create_dir_all(values_png.parent().unwrap()).unwrap();
    std::fs::create_dir_all(colours_png.parent().unwrap()).unwrap();
    if grey8 {
        write_grey8(values_png, grid.full, &values);
    } else {
        write_grey16(values_png, grid.full, &values);
    }
    write_rgb(colours_png, grid.full, &colours);
}

/// A `segments_info` entry.
fn info(id: u32, category_id: u32, iscrowd: u8) -> Value {
    json!({"id": id, "category_id": category_id, "iscrowd": iscrowd, "area": 1})
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Colours and their segment ids (R + 256·G + 65536·B, computed by hand).

const ROAD: [u8; 3] = [128, 64, 128]; // 128 + 16384 + 8388608
const ROAD_ID: u32 = 8_405_120;
const SKY: [u8; 3] = [70, 130, 180]; // 70 + 33280 + 11796480
const SKY_ID: u32 = 11_829_830;
const RIDER: [u8; 3] = [255, 0, 0];
const RIDER_ID: u32 = 255;
const PERSON0: [u8; 3] = [220, 20, 60]; // 220 + 5120 + 3932160
const PERSON0_ID: u32 = 3_937_500;
const PERSON1: [u8; 3] = [221, 20, 60];
const PERSON1_ID: u32 = 3_937_501;
const CAR0: [u8; 3] = [1, 0, 142]; // 1 + 142·65536 = 1 + 9306112
const CAR0_ID: u32 = 9_306_113;
const CAR1: [u8; 3] = [2, 0, 142];
const CAR1_ID: u32 = 9_306_114;
const CAR_GONE: [u8; 3] = [3, 0, 142];
const CAR_GONE_ID: u32 = 9_306_115;
const CAR2: [u8; 3] = [4, 0, 142];
const CAR2_ID: u32 = 9_306_116;
const VOID: [u8; 3] = [0, 0, 0];

// ---------------------------------------------------------------------------------------------
// Cityscapes-VPS fixture: video 0005 = frankfurt_000000 frames 000001..000003, annotated 1 and 3.

const CITY_JSON: &str = "panoptic_gt_val_city_vps.json";
const CITY_ANN1: &str = "0005_0000_frankfurt_000000_000001_final_mask.png";
const CITY_ANN3: &str = "0005_0002_frankfurt_000000_000003_gtFine_color.png";

/// Frame 000001: road below sky, person 11000, cars 13001 and 13002, a crowd of riders (12),
/// void, and car 13003 drawn on one odd full pixel only (it vanishes).
fn city_frame1() -> Drawing {
    Drawing {
        regions: vec![
            region(0, ROAD, 0..8, 0..16),
            region(10, SKY, 0..3, 0..16),
            region(11000, PERSON0, 1..3, 8..9),
            region(13001, CAR0, 4..7, 2..6),
            region(13002, CAR1, 4..6, 10..14),
            region(12, RIDER, 7..8, 14..16),
            region(255, VOID, 7..8, 0..2),
        ],
        outside: (255, VOID),
        pixels: vec![(13, 31, 13003, CAR_GONE)],
    }
}

/// Frame 000003: person 11001 (new), car 13001 with the colour of the former 13002, car 13002 new.
fn city_frame3() -> Drawing {
    Drawing {
        regions: vec![
            region(0, ROAD, 0..8, 0..16),
            region(10, SKY, 0..3, 0..16),
            region(11001, PERSON1, 1..3, 0..2),
            region(13001, CAR1, 4..6, 0..4),
            region(13002, CAR2, 5..8, 12..14),
        ],
        outside: (255, VOID),
        pixels: vec![],
    }
}

fn city_json() -> Value {
    let ann = |image_id: &str, file: &str, segs: Vec<Value>| json!({"image_id": image_id, "file_name": file, "segments_info": segs});
    let image =
        |id: &str, file: &str| json!({"id": id, "width": 32, "height": 16, "file_name": file});
    json!({
        "images": [
            image("0005_0000_frankfurt_000000_000001", "frankfurt_000000_000001_leftImg8bit.png"),
            image("0005_0002_frankfurt_000000_000003", "frankfurt_000000_000003_leftImg8bit.png"),
        ],
        "annotations": [
            ann("0005_0000_frankfurt_000000_000001", CITY_ANN1, vec![
                info(ROAD_ID, 0, 0), info(SKY_ID, 10, 0), info(RIDER_ID, 12, 1),
                info(PERSON0_ID, 11, 0), info(CAR0_ID, 13, 0), info(CAR1_ID, 13, 0),
                info(CAR_GONE_ID, 13, 0),
            ]),
            ann("0005_0002_frankfurt_000000_000003", CITY_ANN3, vec![
                info(ROAD_ID, 0, 0), info(SKY_ID, 10, 0), info(PERSON1_ID, 11, 0),
                info(CAR1_ID, 13, 0), info(CAR2_ID, 13, 0),
            ]),
            // Another video, listed in the JSON only.
            ann("0015_0000_lindau_000000_000001", "0015_0000_lindau_000000_000001_final_mask.png",
                vec![info(ROAD_ID, 0, 0)]),
        ],
        "categories": [{"id": 0, "name": "road", "isthing": 0, "color": [128, 64, 128]}],
    })
}

/// The colour of every pixel of Cityscapes frame `i` (lossless PNG).
fn city_frame_colour(i: u8) -> [u8; 3] {
    [10 * i, 100, 200]
}

/// Writes the Cityscapes-VPS fixture under `root` and returns `root`.
fn cityscapes_dataset(root: &Path) -> PathBuf {
    let all = root.join("val/img_all");
    std::fs::create_dir_all(&all).unwrap();
    for (i, name) in ["000001", "000002", "000003"].iter().enumerate() {
        let file = all.join(format!("frankfurt_000000_{name}_leftImg8bit.png"));
        RgbImage::from_pixel(32, 16, Rgb(city_frame_colour(i as u8)))
            .save(file)
            .unwrap();
    }
    // A frame of another sequence, not part of the clip.
    RgbImage::from_pixel(32, 16, Rgb([0, 0, 0]))
        .save(all.join("frankfurt_000001_000001_leftImg8bit.png"))
        .unwrap();
    for (name, drawing) in [(CITY_ANN1, city_frame1()), (CITY_ANN3, city_frame3())] {
        write_maps(
            CITY,
            &drawing,
            &root.join("val/panoptic_inst").join(name),
            &root.join("val/panoptic_video").join(name),
            false,
        );
    }
    write_json(&root.join(CITY_JSON), &city_json());
    root.to_path_buf()
}

fn small_opts() -> ClipOptions {
    ClipOptions {
        size: [8, 16],
        video: None,
    }
}

/// `(instance, segment id, iscrowd, area, bbox)` of every segment of a frame.
fn summary(f: &PanopticFrame) -> Vec<(String, u32, bool, usize, [usize; 4])> {
    f.segments
        .iter()
        .map(|s| {
            assert_eq!(s.area, s.mask.area());
            assert_eq!([s.mask.height, s.mask.width], [8, 16]);
            assert_eq!(Some(s.bbox), s.mask.bbox());
            (s.instance.clone(), s.segment_id, s.iscrowd, s.area, s.bbox)
        })
        .collect()
}

fn row(
    name: &str,
    id: u32,
    crowd: bool,
    area: usize,
    bbox: [usize; 4],
) -> (String, u32, bool, usize, [usize; 4]) {
    (name.to_string(), id, crowd, area, bbox)
}

#[test]
fn cityscapes_clip_is_assembled_as_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let root = cityscapes_dataset(dir.path());
    assert_eq!(
        list_videos(&root).unwrap(),
        (
            DatasetFormat::CityscapesVps,
            vec!["0005".to_string(), "0015".to_string()]
        )
    );
    let clip = open_clip(&root, &small_opts()).unwrap();
    assert_eq!(clip.format, DatasetFormat::CityscapesVps);
    assert_eq!(clip.video, "0005");
    assert_eq!(clip.size, [8, 16]);
    let names: Vec<String> = clip.frames.iter().map(|f| file_name(f)).collect();
    assert_eq!(
        names,
        [
            "frankfurt_000000_000001_leftImg8bit.png",
            "frankfurt_000000_000002_leftImg8bit.png",
            "frankfurt_000000_000003_leftImg8bit.png"
        ]
    );
    assert!(clip.frames[0].starts_with(root.join("val/img_all")));
    assert_eq!(clip.flows, None);
    assert_eq!(clip.annotations.len(), 2);
    let [f1, f3] = [&clip.annotations[0], &clip.annotations[1]];
    assert_eq!(
        (f1.frame_index, f1.image_id.as_str()),
        (0, "0005_0000_frankfurt_000000_000001")
    );
    assert_eq!(
        (f3.frame_index, f3.image_id.as_str()),
        (2, "0005_0002_frankfurt_000000_000003")
    );
    // Ascending values 0, 10, 12, 11000, 13001, 13002 (255 void; 13003 vanished).
    // road: rows 3..8 (80 px) minus cars 12 + 8, rider 2, void 2.
    assert_eq!(
        summary(f1),
        vec![
            row("road_0", ROAD_ID, false, 56, [0, 3, 16, 5]),
            row("sky_0", SKY_ID, false, 46, [0, 0, 16, 3]),
            row("rider_0", RIDER_ID, true, 2, [14, 7, 2, 1]),
            row("person_0", PERSON0_ID, false, 2, [8, 1, 1, 2]),
            row("car_0", CAR0_ID, false, 12, [2, 4, 4, 3]),
            row("car_1", CAR1_ID, false, 8, [10, 4, 4, 2]),
        ]
    );
    // Car 13001 now wears car_1's colour: same segment id, same name. 13002 is new: car_2
    // (the vanished 13003 of frame 1 never got a name).
    assert_eq!(
        summary(f3),
        vec![
            row("road_0", ROAD_ID, false, 66, [0, 3, 16, 5]),
            row("sky_0", SKY_ID, false, 44, [0, 0, 16, 3]),
            row("person_1", PERSON1_ID, false, 4, [0, 1, 2, 2]),
            row("car_1", CAR1_ID, false, 8, [0, 4, 4, 2]),
            row("car_2", CAR2_ID, false, 6, [12, 5, 2, 3]),
        ]
    );
    let rider = &f1.segments[2];
    assert_eq!((rider.category.as_str(), rider.category_id), ("rider", 12));
    assert!(rider.isthing);
    assert!(!f1.segments[0].isthing);
    assert_eq!(
        clip.instance_names(),
        ["car_0", "car_1", "car_2", "person_0", "person_1", "rider_0", "road_0", "sky_0"]
    );
    // The rider mask: exactly working pixels (7, 14) and (7, 15).
    let on: Vec<usize> = (0..128).filter(|&p| rider.mask.data[p]).collect();
    assert_eq!(on, vec![7 * 16 + 14, 7 * 16 + 15]);
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn cityscapes_frames_are_resized_as_the_official_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let root = cityscapes_dataset(dir.path());
    let clip = open_clip(&root, &small_opts()).unwrap();
    // Constant frames stay constant: v / 255 for the FFN, and for NeRV (bicubic weights sum to 1).
    let [r, g, b] = city_frame_colour(2).map(|c| c as f32 / 255.0);
    let ffn = clip.frame_ffn(2).unwrap();
    assert_eq!((ffn.height, ffn.width), (8, 16));
    assert!(ffn.data.chunks(3).all(|p| p == [r, g, b]));
    let nerv = clip.frame_nerv(2).unwrap();
    assert_eq!(nerv.len(), 3 * 8 * 16);
    for (c, want) in [r, g, b].iter().enumerate() {
        assert!(nerv[c * 128..(c + 1) * 128]
            .iter()
            .all(|v| (v - want).abs() < 1e-6));
    }
    let err = clip.frame_ffn(3).unwrap_err();
    assert!(matches!(err, XincError::InvalidArgument(_)), "{err}");
    assert!(matches!(
        clip.frame_nerv(99),
        Err(XincError::InvalidArgument(_))
    ));
}

#[test]
fn cityscapes_prefers_the_vps_subset_frames_and_reads_flows() {
    let dir = tempfile::tempdir().unwrap();
    let root = cityscapes_dataset(dir.path());
    let subset = root.join("vps_subset/val/0005");
    std::fs::create_dir_all(subset.join("images")).unwrap();
    std::fs::create_dir_all(subset.join("flows")).unwrap();
    for name in ["000001", "000002", "000003"] {
        let file = format!("frankfurt_000000_{name}_leftImg8bit.png");
        std::fs::copy(
            root.join("val/img_all").join(&file),
            subset.join("images").join(&file),
        )
        .unwrap();
    }
    // flow 0: u8 ramp along x (value = column); flow 1: [H, W, 2] f32 (u, v) = (6, 8) px;
    // flow 2: the ramp again as f64, stored in Fortran order.
    let ramp: Vec<u8> = (0..16 * 32).map(|p| (p % 32) as u8).collect();
    write_npy(
        &subset.join("flows/000.npy"),
        &[16, 32],
        &ramp,
        npyz::Order::C,
    );
    let uv: Vec<f32> = (0..16 * 32).flat_map(|_| [6.0f32, 8.0]).collect();
    write_npy(
        &subset.join("flows/001.npy"),
        &[16, 32, 2],
        &uv,
        npyz::Order::C,
    );
    let fortran: Vec<f64> = (0..16 * 32).map(|p| (p / 16) as f64).collect(); // column-major
    write_npy(
        &subset.join("flows/002.npy"),
        &[16, 32],
        &fortran,
        npyz::Order::Fortran,
    );

    let clip = open_clip(&root, &small_opts()).unwrap();
    assert!(clip
        .frames
        .iter()
        .all(|f| f.starts_with(subset.join("images"))));
    assert_eq!(clip.annotations[1].frame_index, 2);
    assert_eq!(clip.flows.as_ref().map(Vec::len), Some(3));

    let Some(FlowMap::Magnitude {
        height: 8,
        width: 16,
        data,
    }) = clip.flow(0).unwrap()
    else {
        panic!("expected an 8x16 magnitude map");
    };
    // Bicubic 32 -> 16 on a ramp: interior columns are exact, (2x + 0.5); at the borders the
    // clamped taps give 0·(−0.09375) + 0·0.59375 + 1·0.59375 + 2·(−0.09375) = 0.40625 and
    // 29·(−0.09375) + 30·0.59375 + 31·0.59375 + 31·(−0.09375) = 30.59375. Then / 255.
    for y in 0..8 {
        for x in 0..16 {
            let want = match x {
                0 => 0.40625,
                15 => 30.59375,
                x => 2.0 * x as f32 + 0.5,
            } / 255.0;
            assert!((data[y * 16 + x] - want).abs() < 1e-6, "({y}, {x})");
        }
    }
    let FlowMap::Vector { u, v, .. } = clip.flow(1).unwrap().unwrap() else {
        panic!("expected a vector flow");
    };
    // Scaled to working pixels: u · 16/32 = 3, v · 8/16 = 4, magnitude 5.
    assert!(u.iter().all(|&x| (x - 3.0).abs() < 1e-5));
    assert!(v.iter().all(|&x| (x - 4.0).abs() < 1e-5));
    let mag = clip.flow(1).unwrap().unwrap().magnitude();
    assert!(mag.iter().all(|&m| (m - 5.0).abs() < 1e-5));
    let f2 = clip.flow(2).unwrap().unwrap();
    let diff = f2
        .magnitude()
        .iter()
        .zip(&data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-6, "fortran order read wrongly: {diff}");
    assert!(matches!(clip.flow(3), Err(XincError::InvalidArgument(_))));
}

fn write_npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[u64],
    data: &[T],
    order: npyz::Order,
) {
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .order(order)
        .writer(&mut buf)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
    std::fs::write(path, buf).unwrap();
}

// ---------------------------------------------------------------------------------------------
// VIPSeg fixture: video 26_xyz with frames 00000005 and 00000010; video 3_q listed only.

const VIP_JSON: &str = "panoptic_gt_VIPSeg.json";
const WALL: [u8; 3] = [120, 120, 120]; // 120 + 30720 + 7864320
const WALL_ID: u32 = 7_895_160;
const VCROWD: [u8; 3] = [12, 0, 142]; // 12 + 9306112
const VCROWD_ID: u32 = 9_306_124;
const VCAR1: [u8; 3] = [10, 0, 142];
const VCAR1_ID: u32 = 9_306_122;
const VCAR2: [u8; 3] = [11, 0, 142];
const VCAR2_ID: u32 = 9_306_123;
const VCAR_GONE: [u8; 3] = [13, 0, 142];
const VCAR_GONE_ID: u32 = 9_306_125;
const BAND: [u8; 3] = [200, 0, 0];
const BAND_ID: u32 = 200;

/// Frame 00000005: wall (value 1) below sky (29), cars 4901 and 4902, a crowd of cars (49), a
/// goal (11: category 10, not in the table), void, car 4903 on one unsampled pixel, and a person
/// (6101) in the rows outside the crop.
fn vip_frame5() -> Drawing {
    Drawing {
        regions: vec![
            region(1, WALL, 0..8, 0..16),
            region(29, SKY, 0..3, 0..16),
            region(4901, VCAR1, 4..6, 2..5),
            region(4902, VCAR2, 5..7, 10..12),
            region(11, [50, 50, 50], 7..8, 0..2),
            region(49, VCROWD, 7..8, 14..16),
            region(0, VOID, 0..1, 15..16),
        ],
        outside: (6101, BAND),
        pixels: vec![(31, 1, 4903, VCAR_GONE)],
    }
}

/// Frame 00000010 (an 8-bit grey PNG): wall below sky, the same crowd of cars.
fn vip_frame10() -> Drawing {
    Drawing {
        regions: vec![
            region(1, WALL, 0..8, 0..16),
            region(29, SKY, 0..4, 0..16),
            region(49, VCROWD, 6..8, 0..4),
        ],
        outside: (61, BAND),
        pixels: vec![],
    }
}

fn vip_json(grid: Grid) -> Value {
    let [h, w] = grid.full;
    let image =
        |id: &str| json!({"id": id, "width": w, "height": h, "file_name": format!("{id}.png")});
    let ann = |id: &str, segs: Vec<Value>| json!({"image_id": id, "file_name": format!("{id}.png"), "segments_info": segs});
    let cat = |id: u32, name: &str, isthing: u8, color: [u8; 3]| json!({"id": id, "name": name, "isthing": isthing, "color": color});
    json!({
        "videos": [
            {"video_id": "3_q", "images": [image("00000001")]},
            {"video_id": "26_xyz", "images": [image("00000005"), image("00000010")]},
        ],
        "annotations": [
            {"video_id": "26_xyz", "annotations": [
                ann("00000005", vec![
                    info(WALL_ID, 0, 0), info(SKY_ID, 28, 0), info(VCAR1_ID, 48, 0),
                    info(VCAR2_ID, 48, 0), info(VCROWD_ID, 48, 1), info(VCAR_GONE_ID, 48, 0),
                    info(BAND_ID, 60, 0),
                ]),
                ann("00000010", vec![
                    info(WALL_ID, 0, 0), info(SKY_ID, 28, 0), info(VCROWD_ID, 48, 1),
                    info(BAND_ID, 60, 1),
                ]),
            ]},
            {"video_id": "3_q", "annotations": [ann("00000001", vec![])]},
        ],
        "categories": [
            cat(0, "wall", 0, WALL), cat(28, "sky", 0, SKY), cat(48, "car", 1, [0, 0, 142]),
            cat(60, "person", 1, [220, 20, 60]),
        ],
    })
}

/// Writes the VIPSeg fixture on `grid` under `root`: JPEG frames grey inside the crop, red in
/// the rows outside it.
fn vipseg_dataset(root: &Path, grid: Grid) -> PathBuf {
    let [h, w] = grid.full;
    let video = "26_xyz";
    std::fs::create_dir_all(root.join("images").join(video)).unwrap();
    for (id, drawing, grey8) in [
        ("00000005", vip_frame5(), false),
        ("00000010", vip_frame10(), true),
    ] {
        let frame = RgbImage::from_fn(w as u32, h as u32, |_, y| {
            let inside = (y as usize) >= grid.top && (y as usize) < grid.top + grid.cell * 8;
            Rgb(if inside { [128, 128, 128] } else { [255, 0, 0] })
        });
        frame
            .save(root.join("images").join(video).join(format!("{id}.jpg")))
            .unwrap();
        write_maps(
            grid,
            &drawing,
            &root.join("panomasks").join(video).join(format!("{id}.png")),
            &root
                .join("panomasksRGB")
                .join(video)
                .join(format!("{id}.png")),
            grey8,
        );
    }
    write_json(&root.join(VIP_JSON), &vip_json(grid));
    root.to_path_buf()
}

/// The expected segments of the VIPSeg fixture, the same on both grids.
fn check_vipseg_segments(clip: &Clip) {
    assert_eq!(clip.annotations.len(), 2);
    let [f5, f10] = [&clip.annotations[0], &clip.annotations[1]];
    assert_eq!((f5.frame_index, f5.image_id.as_str()), (0, "00000005"));
    assert_eq!((f10.frame_index, f10.image_id.as_str()), (1, "00000010"));
    // Ascending values 1, 11 (skipped), 29, 49, 4901, 4902; 6101 and 4903 vanished.
    // wall: rows 3..8 (80) minus cars 6 + 4, goal 2, crowd 2; sky: 48 minus 1 void.
    assert_eq!(
        summary(f5),
        vec![
            row("wall_0", WALL_ID, false, 66, [0, 3, 16, 5]),
            row("sky_0", SKY_ID, false, 47, [0, 0, 16, 3]),
            row("car_0", VCROWD_ID, true, 2, [14, 7, 2, 1]),
            row("car_1", VCAR1_ID, false, 6, [2, 4, 3, 2]),
            row("car_2", VCAR2_ID, false, 4, [10, 5, 2, 2]),
        ]
    );
    assert_eq!(
        summary(f10),
        vec![
            row("wall_0", WALL_ID, false, 56, [0, 4, 16, 4]),
            row("sky_0", SKY_ID, false, 64, [0, 0, 16, 4]),
            row("car_0", VCROWD_ID, true, 8, [0, 6, 4, 2]),
        ]
    );
    assert_eq!(
        clip.instance_names(),
        ["car_0", "car_1", "car_2", "sky_0", "wall_0"]
    );
    assert_eq!(clip.categories.categories.len(), 4);
    assert_eq!(clip.categories.get(48).unwrap().name, "car");
}

#[test]
fn vipseg_clip_is_centre_cropped_and_assembled_as_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let root = vipseg_dataset(dir.path(), VIP_CROPPED);
    assert_eq!(
        list_videos(&root).unwrap(),
        (
            DatasetFormat::Vipseg,
            vec!["26_xyz".to_string(), "3_q".to_string()]
        )
    );
    let clip = open_clip(&root, &small_opts()).unwrap();
    assert_eq!(
        (clip.format, clip.video.as_str()),
        (DatasetFormat::Vipseg, "26_xyz")
    );
    assert_eq!(
        clip.frames,
        vec![
            root.join("images/26_xyz/00000005.jpg"),
            root.join("images/26_xyz/00000010.jpg")
        ]
    );
    check_vipseg_segments(&clip);

    // Frames: the red rows outside the crop stay out (JPEG leaves a little noise).
    let grey = 128.0 / 255.0;
    let ffn = clip.frame_ffn(0).unwrap();
    assert_eq!((ffn.height, ffn.width), (8, 16));
    assert!(ffn.data.iter().all(|v| (v - grey).abs() < 4.0 / 255.0));
    let img = read_rgb8(&clip.frames[0]).unwrap();
    let cropped = image::imageops::crop_imm(&img, 0, 30, 1280, 640).to_image();
    assert_eq!(
        ffn,
        ImageTensor::from_rgb8(&resize_bilinear_antialias(&cropped, 8, 16))
    );
    let nerv = clip.frame_nerv(1).unwrap();
    let img = read_rgb8(&clip.frames[1]).unwrap();
    let planar = crop_planar(
        &ImageTensor::from_rgb8(&img).to_chw(),
        3,
        700,
        1280,
        (30, 0, 640, 1280),
    );
    assert_eq!(nerv, resize_bicubic(&planar, 3, 640, 1280, 8, 16));
    assert!(nerv.iter().all(|v| (v - grey).abs() < 4.0 / 255.0));
}

#[test]
fn vipseg_flows_get_the_crop_and_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let root = vipseg_dataset(dir.path(), VIP_CROPPED);
    let flows = root.join("flows/26_xyz");
    std::fs::create_dir_all(&flows).unwrap();
    // 2-D i16 ramp along y (value = row): after the crop, working row y is bicubic-centred on
    // crop row 80y + 39.5 = full row 80y + 69.5 (interior, exact for a ramp), then / 255.
    let ramp: Vec<i16> = (0..700 * 1280).map(|p| (p / 1280) as i16).collect();
    write_npy(&flows.join("a.npy"), &[700, 1280], &ramp, npyz::Order::C);
    // [H, W, 2] of (80, 160) px: u · 16/1280 = 1, v · 8/640 = 2.
    let uv: Vec<f32> = (0..700 * 1280).flat_map(|_| [80.0f32, 160.0]).collect();
    write_npy(&flows.join("b.npy"), &[700, 1280, 2], &uv, npyz::Order::C);
    let clip = open_clip(&root, &small_opts()).unwrap();
    let Some(FlowMap::Magnitude { data, .. }) = clip.flow(0).unwrap() else {
        panic!("expected a magnitude map");
    };
    for (p, &v) in data.iter().enumerate() {
        let want = (80.0 * (p / 16) as f32 + 69.5) / 255.0;
        assert!((v - want).abs() < 1e-5, "pixel {p}: {v} vs {want}");
    }
    let Some(FlowMap::Vector { u, v, .. }) = clip.flow(1).unwrap() else {
        panic!("expected a vector map");
    };
    assert!(u.iter().all(|&x| (x - 1.0).abs() < 1e-5));
    assert!(v.iter().all(|&x| (x - 2.0).abs() < 1e-5));
}

#[test]
fn vipseg_small_frames_are_not_cropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = vipseg_dataset(dir.path(), VIP_SMALL);
    let clip = open_clip(&root, &small_opts()).unwrap();
    check_vipseg_segments(&clip);
    assert_eq!(clip.flows, None);
}

// ---------------------------------------------------------------------------------------------
// Malformed inputs: each gives a typed error naming the file and the problem.

/// Asserts the error's variant and that its message holds every fragment.
fn expect_err(result: xinc::Result<Clip>, is_variant: fn(&XincError) -> bool, fragments: &[&str]) {
    let err = result.expect_err("expected an error");
    let msg = err.to_string();
    assert!(is_variant(&err), "wrong variant: {err:?}");
    for f in fragments {
        assert!(msg.contains(f), "`{msg}` lacks `{f}`");
    }
}

fn is_image(e: &XincError) -> bool {
    matches!(e, XincError::Image { .. })
}
fn is_config(e: &XincError) -> bool {
    matches!(e, XincError::Config { .. })
}
fn is_dataset(e: &XincError) -> bool {
    matches!(e, XincError::Dataset { .. })
}
fn is_io(e: &XincError) -> bool {
    matches!(e, XincError::Io { .. })
}
fn is_argument(e: &XincError) -> bool {
    matches!(e, XincError::InvalidArgument(_))
}

/// A fresh Cityscapes fixture, changed by `edit`, opened.
fn open_city_edited(edit: impl FnOnce(&Path)) -> xinc::Result<Clip> {
    let dir = tempfile::tempdir().unwrap();
    let root = cityscapes_dataset(dir.path());
    edit(&root);
    open_clip(&root, &small_opts())
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v = read_json(path);
    edit(&mut v);
    write_json(path, &v);
}

#[test]
fn truncated_panoptic_pngs_are_image_errors() {
    expect_err(
        open_city_edited(|r| truncate(&r.join("val/panoptic_inst").join(CITY_ANN3))),
        is_image,
        &[CITY_ANN3, "cannot decode image"],
    );
    expect_err(
        open_city_edited(|r| truncate(&r.join("val/panoptic_video").join(CITY_ANN1))),
        is_image,
        &["panoptic_video", CITY_ANN1],
    );
}

#[test]
fn wrong_channel_counts_are_image_errors() {
    // The single-channel map written as RGB.
    expect_err(
        open_city_edited(|r| {
            let (_, colours) = paint(CITY, &city_frame1());
            write_rgb(
                &r.join("val/panoptic_inst").join(CITY_ANN1),
                CITY.full,
                &colours,
            );
        }),
        is_image,
        &[CITY_ANN1, "single-channel", "Rgb8"],
    );
    // The RGB map written as grey.
    expect_err(
        open_city_edited(|r| {
            write_grey8(
                &r.join("val/panoptic_video").join(CITY_ANN1),
                CITY.full,
                &[7; 512],
            );
        }),
        is_image,
        &["panoptic_video", CITY_ANN1, "8-bit RGB", "L8"],
    );
    // The RGB map written as 16-bit RGB.
    expect_err(
        open_city_edited(|r| {
            let img: ImageBuffer<Rgb<u16>, Vec<u16>> =
                ImageBuffer::from_pixel(32, 16, Rgb([1, 2, 3]));
            img.save(r.join("val/panoptic_video").join(CITY_ANN3))
                .unwrap();
        }),
        is_image,
        &[CITY_ANN3, "Rgb16"],
    );
}

#[test]
fn a_segment_id_missing_from_the_json_is_an_error_naming_file_value_and_id() {
    expect_err(
        open_city_edited(|r| {
            edit_json(&r.join(CITY_JSON), |v| {
                let segs = v["annotations"][0]["segments_info"].as_array_mut().unwrap();
                segs.retain(|s| s["id"] != CAR1_ID);
            })
        }),
        is_dataset,
        &[CITY_ANN1, "value 13002", "segment id 9306114", CITY_JSON],
    );
}

#[test]
fn a_category_disagreeing_with_the_png_is_an_error() {
    expect_err(
        open_city_edited(|r| {
            edit_json(&r.join(CITY_JSON), |v| {
                v["annotations"][1]["segments_info"][4]["category_id"] = json!(11);
            })
        }),
        is_dataset,
        &[CITY_ANN3, "value 13002", "category 11"],
    );
}

#[test]
fn json_with_missing_fields_or_bad_syntax_is_a_config_error() {
    expect_err(
        open_city_edited(|r| {
            edit_json(&r.join(CITY_JSON), |v| {
                v["annotations"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("segments_info");
            })
        }),
        is_config,
        &[CITY_JSON, "missing field `segments_info`"],
    );
    expect_err(
        open_city_edited(|r| {
            edit_json(&r.join(CITY_JSON), |v| {
                v["annotations"][0]["segments_info"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("category_id");
            })
        }),
        is_config,
        &[CITY_JSON, "missing field `category_id`"],
    );
    expect_err(
        open_city_edited(|r| truncate(&r.join(CITY_JSON))),
        is_config,
        &[CITY_JSON, "EOF"],
    );
}

#[test]
fn cityscapes_annotations_and_frames_must_agree() {
    // An annotation whose RGB frame is not in the clip.
    expect_err(
        open_city_edited(|r| {
            std::fs::remove_file(r.join("val/img_all/frankfurt_000000_000003_leftImg8bit.png"))
                .unwrap()
        }),
        is_dataset,
        &[
            CITY_ANN3,
            "frankfurt_000000_000003_leftImg8bit.png",
            "not among the 2 frames",
        ],
    );
    // A panoptic PNG without a JSON annotation.
    expect_err(
        open_city_edited(|r| {
            edit_json(&r.join(CITY_JSON), |v| {
                v["annotations"].as_array_mut().unwrap().remove(1);
            })
        }),
        is_dataset,
        &[CITY_ANN3, "no entry in `annotations`", CITY_JSON],
    );
    // A JSON annotation without its PNGs (video 0015).
    let dir = tempfile::tempdir().unwrap();
    let root = cityscapes_dataset(dir.path());
    let opts = ClipOptions {
        video: Some("0015".into()),
        ..small_opts()
    };
    expect_err(
        open_clip(&root, &opts),
        is_dataset,
        &[CITY_JSON, "0015_0000_lindau_000000_000001", "panoptic_inst"],
    );
    // A missing RGB panoptic PNG.
    expect_err(
        open_city_edited(|r| {
            std::fs::remove_file(r.join("val/panoptic_video").join(CITY_ANN3)).unwrap()
        }),
        is_io,
        &["panoptic_video", CITY_ANN3],
    );
}

#[test]
fn a_panoptic_png_of_another_size_than_its_frame_is_an_error() {
    expect_err(
        open_city_edited(|r| {
            write_grey16(
                &r.join("val/panoptic_inst").join(CITY_ANN1),
                [16, 30],
                &[0; 480],
            );
        }),
        is_dataset,
        &[CITY_ANN1, "size 16x30 differs from the 16x32 of its frame"],
    );
}

#[test]
fn bad_roots_videos_and_sizes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    expect_err(
        open_clip(dir.path(), &small_opts()),
        is_dataset,
        &[CITY_JSON, VIP_JSON, "no dataset JSON"],
    );
    let root = cityscapes_dataset(dir.path());
    let opts = ClipOptions {
        video: Some("0042".into()),
        ..small_opts()
    };
    expect_err(
        open_clip(&root, &opts),
        is_argument,
        &["0042", "0005, 0015"],
    );
    let opts = ClipOptions {
        size: [0, 16],
        video: None,
    };
    expect_err(open_clip(&root, &opts), is_argument, &["0x16"]);
}

/// A fresh small VIPSeg fixture, changed by `edit`, opened.
fn open_vip_edited(edit: impl FnOnce(&Path)) -> xinc::Result<Clip> {
    let dir = tempfile::tempdir().unwrap();
    let root = vipseg_dataset(dir.path(), VIP_SMALL);
    edit(&root);
    open_clip(&root, &small_opts())
}

#[test]
fn vipseg_frames_listed_in_the_json_must_exist_and_be_annotated() {
    expect_err(
        open_vip_edited(|r| std::fs::remove_file(r.join("images/26_xyz/00000010.jpg")).unwrap()),
        is_io,
        &["images/26_xyz/00000010.jpg"],
    );
    expect_err(
        open_vip_edited(|r| std::fs::remove_file(r.join("panomasks/26_xyz/00000005.png")).unwrap()),
        is_io,
        &["panomasks/26_xyz/00000005.png"],
    );
    // Video 3_q is listed, but none of its files exist.
    let dir = tempfile::tempdir().unwrap();
    let root = vipseg_dataset(dir.path(), VIP_SMALL);
    let opts = ClipOptions {
        video: Some("3_q".into()),
        ..small_opts()
    };
    expect_err(open_clip(&root, &opts), is_io, &["images/3_q/00000001.jpg"]);
    // An image without annotation, and an annotation of an unlisted image.
    expect_err(
        open_vip_edited(|r| {
            edit_json(&r.join(VIP_JSON), |v| {
                v["annotations"][0]["annotations"]
                    .as_array_mut()
                    .unwrap()
                    .remove(1);
            })
        }),
        is_dataset,
        &[VIP_JSON, "video 26_xyz", "image 00000010 has no annotation"],
    );
    expect_err(
        open_vip_edited(|r| {
            edit_json(&r.join(VIP_JSON), |v| {
                v["annotations"][0]["annotations"][1]["image_id"] = json!("00000099");
            })
        }),
        is_dataset,
        &[VIP_JSON, "00000099", "does not list"],
    );
    expect_err(
        open_vip_edited(|r| {
            edit_json(&r.join(VIP_JSON), |v| {
                v.as_object_mut().unwrap().remove("categories");
            })
        }),
        is_config,
        &[VIP_JSON, "missing field `categories`"],
    );
}

#[test]
fn vipseg_map_errors_name_the_file() {
    expect_err(
        open_vip_edited(|r| truncate(&r.join("panomasksRGB/26_xyz/00000010.png"))),
        is_image,
        &["panomasksRGB/26_xyz/00000010.png"],
    );
    expect_err(
        open_vip_edited(|r| {
            edit_json(&r.join(VIP_JSON), |v| {
                v["annotations"][0]["annotations"][1]["segments_info"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|s| s["id"] != VCROWD_ID);
            })
        }),
        is_dataset,
        &[
            "panomasks/26_xyz/00000010.png",
            "value 49",
            "segment id 9306124",
        ],
    );
}

#[test]
fn malformed_flow_files_are_dataset_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = cityscapes_dataset(dir.path());
    let flows = root.join("vps_subset/val/0005/flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("0.npy"), b"not an npy file").unwrap();
    write_npy(
        &flows.join("1.npy"),
        &[16, 32, 3],
        &[0.0f32; 16 * 32 * 3],
        npyz::Order::C,
    );
    write_npy(
        &flows.join("2.npy"),
        &[16, 32],
        &[1.0f32; 512],
        npyz::Order::C,
    );
    truncate(&flows.join("2.npy"));
    write_npy(
        &flows.join("3.npy"),
        &[16, 32],
        &[true; 512],
        npyz::Order::C,
    );
    write_npy(
        &flows.join("4.npy"),
        &[16, 32, 2],
        &[1u8; 1024],
        npyz::Order::C,
    );
    let clip = open_clip(&root, &small_opts()).unwrap();
    let cases = [
        (0, "0.npy", "not a .npy file"),
        (1, "1.npy", "[H, W] or [H, W, 2]"),
        (2, "2.npy", "truncated"),
        (3, "3.npy", "unsupported dtype"),
        (4, "4.npy", "float dtype"),
    ];
    for (i, file, fragment) in cases {
        let err = clip.flow(i).unwrap_err();
        let msg = err.to_string();
        assert!(is_dataset(&err), "{err:?}");
        assert!(msg.contains(file) && msg.contains(fragment), "{msg}");
    }
}
