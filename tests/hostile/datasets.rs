//! Hostile datasets and paths: both dataset formats, flow files, manifests, `batch.toml`.
//!
//! Every case starts from a tiny valid dataset (Cityscapes-VPS in `{work}/city`, VIPSeg in
//! `{work}/vip`: one 8×16 frame, a road or wall on the left and a car on the right) and breaks
//! one thing: a special file or a symlink in place of a file, a file too large or claiming too
//! many pixels, an id that would leave its folder, a lossy or inconsistent encoding, an absurd
//! size. [`hostile_datasets_fixtures_are_valid`] shows that the unbroken fixtures open. Flow
//! files are read by the analyses only (no cheap command reads them), so their cases run through
//! the library ([`hostile_datasets_flow_files`]).

use std::path::{Path, PathBuf};

use image::{ImageBuffer, Luma, Rgb, RgbImage};
use serde_json::{json, Value};

use crate::harness::{self, Case};

const CITY_JSON: &str = "panoptic_gt_val_city_vps.json";
const CITY_IMAGE_ID: &str = "0005_0000_frankfurt_000000_000001";
const CITY_MASK: &str = "0005_0000_frankfurt_000000_000001_final_mask.png";
const CITY_FRAME: &str = "frankfurt_000000_000001_leftImg8bit.png";
const VIP_JSON: &str = "panoptic_gt_VIPSeg.json";
/// Frame size of both fixtures, `[H, W]`.
const FULL: [u32; 2] = [8, 16];
/// A NeRV whose frames are 64×128 (`xinc batch` reads the clip at that size, then fails).
const NERV_ARGS: &str = "--embed pe_1.25_8 --fc_hw 2_4 --dec_strds 4 2 2 --ks 0_3_3 --reduce 1.2 \
                         --modelsize 0.003 --lower_width 4";

// ---------------------------------------------------------------------------------------------
// Writing the fixtures.

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(v).unwrap()).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v = read_json(path);
    edit(&mut v);
    write_json(path, &v);
}

fn frame(path: &Path, [h, w]: [u32; 2]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(w, h, Rgb([90, 90, 90]))
        .save(path)
        .unwrap();
}

/// A 16-bit single-channel map: `left` on the left half, `right` on the right half.
fn values16(path: &Path, [h, w]: [u32; 2], (left, right): (u16, u16)) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(w, h, |x, _| Luma([if x < w / 2 { left } else { right }]));
    img.save(path).unwrap();
}

/// The RGB map: segment id 1 (`[1, 0, 0]`) on the left half, 2 on the right half.
fn colours(path: &Path, [h, w]: [u32; 2]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(w, h, |x, _| {
        Rgb(if x < w / 2 { [1, 0, 0] } else { [2, 0, 0] })
    })
    .save(path)
    .unwrap();
}

fn segments() -> Value {
    json!([
        {"id": 1, "category_id": 0, "iscrowd": 0},
        {"id": 2, "category_id": 13, "iscrowd": 0},
    ])
}

/// The Cityscapes-VPS fixture: road (0) and car 13001, one annotated frame.
fn city(work: &Path) -> PathBuf {
    let root = work.join("city");
    frame(&root.join("val/img_all").join(CITY_FRAME), FULL);
    values16(
        &root.join("val/panoptic_inst").join(CITY_MASK),
        FULL,
        (0, 13001),
    );
    colours(&root.join("val/panoptic_video").join(CITY_MASK), FULL);
    write_json(
        &root.join(CITY_JSON),
        &json!({"annotations": [{"image_id": CITY_IMAGE_ID, "segments_info": segments()}]}),
    );
    root
}

/// The Cityscapes-VPS fixture with its `vps_subset` frame and a flow file of the frame's size.
fn city_with_flow(work: &Path) -> PathBuf {
    let root = city(work);
    let subset = root.join("vps_subset/val/0005");
    frame(&subset.join("images").join(CITY_FRAME), FULL);
    let [h, w] = FULL.map(|s| s as u64);
    let values = vec![1.0f32; (h * w * 2) as usize];
    write_npy(&subset.join("flows/0.npy"), &[h, w, 2], &values);
    root
}

/// The VIPSeg fixture: wall (value 1) and car instance 1400 (category 13), one frame.
fn vip(work: &Path) -> PathBuf {
    let root = work.join("vip");
    frame(&root.join("images/v/00000001.jpg"), FULL);
    values16(&root.join("panomasks/v/00000001.png"), FULL, (1, 1400));
    colours(&root.join("panomasksRGB/v/00000001.png"), FULL);
    write_json(&root.join(VIP_JSON), &vip_json(&["v"], 1));
    root
}

/// A VIPSeg JSON listing `videos`, each with `images` frames and the fixture's segments.
fn vip_json(videos: &[&str], images: usize) -> Value {
    let ids: Vec<String> = (1..=images).map(|i| format!("{i:08}")).collect();
    json!({
        "videos": videos.iter().map(|v| json!({"video_id": v,
            "images": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()}))
            .collect::<Vec<_>>(),
        "annotations": videos.iter().map(|v| json!({"video_id": v,
            "annotations": ids.iter().map(|id| json!({"image_id": id,
                "segments_info": segments()})).collect::<Vec<_>>()}))
            .collect::<Vec<_>>(),
        "categories": [
            {"id": 0, "name": "wall", "isthing": 0, "color": [1, 0, 0]},
            {"id": 13, "name": "car", "isthing": 1, "color": [2, 0, 0]},
        ],
    })
}

/// A `.npy` file of f32 values.
fn write_npy(path: &Path, shape: &[u64], values: &[f32]) {
    use npyz::WriterBuilder;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut buf)
        .begin_nd()
        .unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
    std::fs::write(path, buf).unwrap();
}

/// Replaces `path` (a file, or nothing) by a named pipe that no one ever writes.
fn fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

/// Replaces `path` by a symlink to `target`.
fn link(target: &Path, path: &Path) {
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// Replaces `path` by a directory.
fn dir_in_place(path: &Path) {
    std::fs::remove_file(path).unwrap();
    std::fs::create_dir(path).unwrap();
}

/// Replaces `path` by a sparse file of `len` bytes (nothing is written to disk).
fn sparse(path: &Path, len: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
}

/// A PNG whose header claims `w`×`h` 8-bit RGB: signature, IHDR, an empty IDAT and IEND.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = [w.to_be_bytes(), h.to_be_bytes()].concat();
    ihdr.extend([8, 2, 0, 0, 0]);
    for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", vec![]), (b"IEND", vec![])] {
        png.extend((data.len() as u32).to_be_bytes());
        let body = [kind.as_slice(), &data].concat();
        png.extend(&body);
        png.extend(crc32(&body).to_be_bytes());
    }
    png
}

/// A file outside both dataset roots that a symlink may point at: a valid PNG of the fixture's
/// size.
fn outside(work: &Path) -> PathBuf {
    let p = work.join("elsewhere/secret.png");
    frame(&p, FULL);
    p
}

/// A manifest `{work}/manifest.txt` of `lines` and a `{work}/batch.toml` with the cheap NeRV and
/// `extra` lines.
fn batch_inputs(work: &Path, lines: &str, extra: &str) {
    std::fs::write(work.join("manifest.txt"), lines).unwrap();
    let toml = format!("{extra}\n[nerv]\nargs = \"{NERV_ARGS}\"\nepochs = 1\neval_every = 1\n");
    std::fs::write(work.join("batch.toml"), toml).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The cases.

const INSPECT_CITY: &[&str] = &["inspect", "{work}/city", "--size", "8x16"];
const INSPECT_VIP: &[&str] = &["inspect", "{work}/vip", "--size", "8x16"];
const BATCH: &[&str] = &[
    "batch",
    "--manifest",
    "{work}/manifest.txt",
    "--task-index",
    "0",
    "--out",
    "{out}",
    "--config",
    "{work}/batch.toml",
];

/// A case on the Cityscapes-VPS fixture changed by `edit(root, work)`, run as `args`.
fn on_city(
    name: &str,
    args: &[&str],
    expect: &[&str],
    edit: impl Fn(&Path, &Path) + Send + Sync + 'static,
) -> Case {
    Case::new(&format!("cityscapes: {name}"), args, expect, move |work| {
        let root = city(work);
        edit(&root, work)
    })
}

/// A case on the VIPSeg fixture changed by `edit(root, work)`, run as `args`.
fn on_vip(
    name: &str,
    args: &[&str],
    expect: &[&str],
    edit: impl Fn(&Path, &Path) + Send + Sync + 'static,
) -> Case {
    Case::new(&format!("vipseg: {name}"), args, expect, move |work| {
        let root = vip(work);
        edit(&root, work)
    })
}

fn mask(root: &Path) -> PathBuf {
    root.join("val/panoptic_inst").join(CITY_MASK)
}

fn colour_map(root: &Path) -> PathBuf {
    root.join("val/panoptic_video").join(CITY_MASK)
}

fn city_frame(root: &Path) -> PathBuf {
    root.join("val/img_all").join(CITY_FRAME)
}

/// The first image id of the Cityscapes JSON set to `id`.
fn city_image_id(root: &Path, id: &str) {
    edit_json(&root.join(CITY_JSON), |v| {
        v["annotations"][0]["image_id"] = json!(id)
    });
}

pub fn cases() -> Vec<Case> {
    let mut cases = special_files();
    cases.extend(sizes_and_memory());
    cases.extend(path_escapes());
    cases.extend(meaning());
    cases.extend(batch_and_synth());
    cases
}

/// FIFOs, devices, directories and symlinks in place of dataset files.
fn special_files() -> Vec<Case> {
    let dev_zero = Path::new("/dev/zero");
    vec![
        on_city(
            "JSON is a named pipe",
            INSPECT_CITY,
            &[CITY_JSON, "named pipe"],
            |r, _| fifo(&r.join(CITY_JSON)),
        ),
        on_city(
            "JSON is a symlink to /dev/zero",
            INSPECT_CITY,
            &[CITY_JSON, "a device"],
            move |r, _| link(dev_zero, &r.join(CITY_JSON)),
        ),
        on_city(
            "JSON is a directory",
            INSPECT_CITY,
            &[CITY_JSON, "a directory"],
            |r, _| dir_in_place(&r.join(CITY_JSON)),
        ),
        on_city(
            "panoptic_inst map is a named pipe",
            INSPECT_CITY,
            &[CITY_MASK, "named pipe"],
            |r, _| fifo(&mask(r)),
        ),
        on_city(
            "panoptic_inst map is a symlink to /dev/zero",
            INSPECT_CITY,
            &[CITY_MASK, "a device"],
            move |r, _| link(dev_zero, &mask(r)),
        ),
        on_city(
            "panoptic_video map is a named pipe",
            INSPECT_CITY,
            &["panoptic_video", "named pipe"],
            |r, _| fifo(&colour_map(r)),
        ),
        on_city(
            "panoptic_video map is a directory",
            INSPECT_CITY,
            &["panoptic_video", "a directory"],
            |r, _| dir_in_place(&colour_map(r)),
        ),
        on_city(
            "frame is a named pipe",
            INSPECT_CITY,
            &[CITY_FRAME, "named pipe"],
            |r, _| fifo(&city_frame(r)),
        ),
        on_city(
            "frame is a symlink to /dev/zero",
            INSPECT_CITY,
            &[CITY_FRAME, "a device"],
            move |r, _| link(dev_zero, &city_frame(r)),
        ),
        on_city(
            "flow file is a named pipe",
            INSPECT_CITY,
            &["0.npy", "named pipe"],
            |_, w| fifo(&city_with_flow(w).join("vps_subset/val/0005/flows/0.npy")),
        ),
        on_city(
            "flow file is a symlink to /dev/zero",
            INSPECT_CITY,
            &["0.npy", "a device"],
            move |_, w| {
                link(
                    dev_zero,
                    &city_with_flow(w).join("vps_subset/val/0005/flows/0.npy"),
                )
            },
        ),
        on_vip(
            "JSON is a named pipe",
            INSPECT_VIP,
            &[VIP_JSON, "named pipe"],
            |r, _| fifo(&r.join(VIP_JSON)),
        ),
        on_vip(
            "panomasks map is a named pipe",
            INSPECT_VIP,
            &["00000001.png", "named pipe"],
            |r, _| fifo(&r.join("panomasks/v/00000001.png")),
        ),
        on_vip(
            "panomasksRGB map is a symlink to /dev/zero",
            INSPECT_VIP,
            &["panomasksRGB", "a device"],
            move |r, _| link(dev_zero, &r.join("panomasksRGB/v/00000001.png")),
        ),
        on_vip(
            "frame is a directory",
            INSPECT_VIP,
            &["00000001.jpg", "a directory"],
            |r, _| dir_in_place(&r.join("images/v/00000001.jpg")),
        ),
        Case::new(
            "train nerv: a frame folder holding a named pipe",
            &[
                "train",
                "nerv",
                "--clip",
                "{work}/frames",
                "--out",
                "{out}",
                "--args",
                NERV_ARGS,
            ],
            &["b.png", "named pipe"],
            |w| {
                frame(&w.join("frames/a.png"), FULL);
                fifo(&w.join("frames/b.png"));
            },
        ),
    ]
}

/// Files too large, headers claiming huge rasters, too many segments, absurd sizes.
fn sizes_and_memory() -> Vec<Case> {
    vec![
        on_city(
            "JSON of 600 MiB (sparse)",
            INSPECT_CITY,
            &[CITY_JSON, "XINC_MAX_DATASET_JSON_MIB"],
            |r, _| sparse(&r.join(CITY_JSON), 600 << 20),
        ),
        on_city(
            "frame header claims 100000x100000 pixels",
            INSPECT_CITY,
            &[CITY_FRAME, "100000x100000", "XINC_MAX_IMAGE_PIXELS"],
            |r, _| std::fs::write(city_frame(r), png_claiming(100_000, 100_000)).unwrap(),
        ),
        on_city(
            "panoptic_inst header claims 100000x100000 pixels",
            INSPECT_CITY,
            &[CITY_MASK, "100000x100000", "XINC_MAX_IMAGE_PIXELS"],
            |r, _| std::fs::write(mask(r), png_claiming(100_000, 100_000)).unwrap(),
        ),
        on_city(
            "frame image of 4 GiB (sparse)",
            INSPECT_CITY,
            &[CITY_FRAME, "XINC_MAX_IMAGE_MIB"],
            |r, _| sparse(&city_frame(r), 4 << 30),
        ),
        on_vip(
            "a frame of 65535 segments at 256x256",
            &["inspect", "{work}/vip", "--size", "256x256"],
            &[
                "00000001.png",
                "65535 segments in one frame",
                "XINC_MAX_SEGMENTS",
            ],
            |r, _| {
                let full = [256, 256];
                frame(&r.join("images/v/00000001.jpg"), full);
                let img: ImageBuffer<Luma<u16>, Vec<u16>> =
                    ImageBuffer::from_fn(256, 256, |x, y| Luma([(y * 256 + x) as u16]));
                img.save(r.join("panomasks/v/00000001.png")).unwrap();
                colours(&r.join("panomasksRGB/v/00000001.png"), full);
                // Categories 0..=654: every value 1..=65535 is of a known category.
                edit_json(&r.join(VIP_JSON), |v| {
                    v["categories"] = (0..=654)
                        .map(|c| json!({"id": c, "name": format!("c{c}"), "isthing": 1}))
                        .collect();
                });
            },
        ),
        on_vip(
            "a video listing 100001 frames",
            INSPECT_VIP,
            &[VIP_JSON, "100001 frames", "limit of 100000"],
            |r, _| {
                let ids: Vec<Value> = (0..100_001).map(|i| json!({"id": i})).collect();
                edit_json(&r.join(VIP_JSON), |v| v["videos"][0]["images"] = json!(ids));
            },
        ),
        on_city(
            "inspect --size 8192x8192 (4 times the largest working size)",
            &["inspect", "{work}/city", "--size", "8192x8192"],
            &["working size 8192x8192", "4194304"],
            |_, _| {},
        ),
        on_city(
            "inspect --size 100000x100000",
            &["inspect", "{work}/city", "--size", "100000x100000"],
            &["--size", "100000"],
            |_, _| {},
        ),
        on_city(
            "inspect --size 18446744073709551615x2",
            &["inspect", "{work}/city", "--size", "18446744073709551615x2"],
            &["--size"],
            |_, _| {},
        ),
        on_city(
            "inspect --size 0x16",
            &["inspect", "{work}/city", "--size", "0x16"],
            &["--size"],
            |_, _| {},
        ),
        Case::new(
            "synth --size 100000x100000",
            &[
                "synth",
                "--size",
                "100000x100000",
                "--frames",
                "2",
                "--out",
                "{out}",
            ],
            &["--size", "100000"],
            |_| {},
        ),
        Case::new(
            "synth --size 4096x4096 (more than synth's 2^22 pixels)",
            &[
                "synth",
                "--size",
                "4096x4096",
                "--frames",
                "2",
                "--out",
                "{out}",
            ],
            &["synth --size 4096x4096", "4194304"],
            |_| {},
        ),
        Case::new(
            "synth --size 8x8 (below 16)",
            &["synth", "--size", "8x8", "--out", "{out}"],
            &["at least 16"],
            |_| {},
        ),
    ]
}

/// Ids that would leave their folder, symlinks that lead out of the dataset root.
fn path_escapes() -> Vec<Case> {
    vec![
        on_city(
            "panoptic_inst map is a symlink out of the root",
            INSPECT_CITY,
            &[CITY_MASK, "outside the root"],
            |r, w| link(&outside(w), &mask(r)),
        ),
        on_city(
            "frame is a symlink out of the root",
            INSPECT_CITY,
            &[CITY_FRAME, "outside the root"],
            |r, w| link(&outside(w), &city_frame(r)),
        ),
        on_city(
            "JSON is a symlink out of the root",
            INSPECT_CITY,
            &[CITY_JSON, "outside the root"],
            |r, w| {
                let json = w.join("elsewhere").join(CITY_JSON);
                std::fs::create_dir_all(json.parent().unwrap()).unwrap();
                std::fs::rename(r.join(CITY_JSON), &json).unwrap();
                link(&json, &r.join(CITY_JSON));
            },
        ),
        on_city(
            "video id `../../x` from the JSON",
            &[
                "inspect",
                "{work}/city",
                "--size",
                "8x16",
                "--video",
                "../../x",
            ],
            &["video id", "../../x", "separator"],
            |r, _| city_image_id(r, "../../x_0000_frankfurt_000000_000001"),
        ),
        on_city(
            "absolute video id `/tmp` from the JSON",
            &[
                "inspect",
                "{work}/city",
                "--size",
                "8x16",
                "--video",
                "/tmp",
            ],
            &["video id", "absolute"],
            |r, _| city_image_id(r, "/tmp_0000_frankfurt_000000_000001"),
        ),
        on_vip(
            "video id `../../escape` from the JSON",
            INSPECT_VIP,
            &[VIP_JSON, "video id", "separator"],
            |r, _| {
                edit_json(&r.join(VIP_JSON), |v| {
                    v["videos"][0]["video_id"] = json!("../../escape");
                    v["annotations"][0]["video_id"] = json!("../../escape");
                })
            },
        ),
        on_vip(
            "absolute image id from the JSON",
            INSPECT_VIP,
            &[VIP_JSON, "image id", "absolute"],
            |r, _| {
                edit_json(&r.join(VIP_JSON), |v| {
                    v["videos"][0]["images"][0]["id"] = json!("/etc/passwd");
                    v["annotations"][0]["annotations"][0]["image_id"] = json!("/etc/passwd");
                })
            },
        ),
        on_vip(
            "image id `..` from the JSON",
            INSPECT_VIP,
            &[VIP_JSON, "image id", "names a folder"],
            |r, _| {
                edit_json(&r.join(VIP_JSON), |v| {
                    v["videos"][0]["images"][0]["id"] = json!("..");
                    v["annotations"][0]["annotations"][0]["image_id"] = json!("..");
                })
            },
        ),
        Case::new(
            "train nerv: a frame folder with a symlink out of it",
            &[
                "train",
                "nerv",
                "--clip",
                "{work}/frames",
                "--out",
                "{out}",
                "--args",
                NERV_ARGS,
            ],
            &["b.png", "outside the root"],
            |w| {
                frame(&w.join("frames/a.png"), FULL);
                link(&outside(w), &w.join("frames/b.png"));
            },
        ),
        on_city(
            "batch: `dataset = \"x/../../elsewhere\"` in batch.toml",
            BATCH,
            &["batch.toml", "x/../../elsewhere", "separator"],
            |_, w| batch_inputs(w, "city\n", "dataset = \"x/../../elsewhere\""),
        ),
        on_city(
            "batch: absolute dataset name in batch.toml",
            BATCH,
            &["batch.toml", "absolute"],
            |_, w| batch_inputs(w, "city\n", "dataset = \"/tmp/x\""),
        ),
        on_city(
            "batch: manifest entry `city#../../x`",
            BATCH,
            &["manifest.txt", "line 2", "../../x", "separator"],
            |_, w| batch_inputs(w, "# one clip\ncity#../../x\n", ""),
        ),
        on_city(
            "batch: video id `../../x` from the clip's JSON",
            BATCH,
            &["video id", "separator"],
            |r, w| {
                city_image_id(r, "../../x_0000_frankfurt_000000_000001");
                batch_inputs(w, "city\n", "");
            },
        ),
    ]
}

/// Encodings that lose information, sizes that disagree, entries that contradict each other.
fn meaning() -> Vec<Case> {
    vec![
        on_city(
            "8-bit panoptic_inst map (thing ids wrapped)",
            INSPECT_CITY,
            &[CITY_MASK, "8-bit", "16-bit"],
            |r, _| {
                // 13001 wrapped to 8 bits is 201: the car would silently vanish.
                image::GrayImage::from_fn(16, 8, |x, _| Luma([if x < 8 { 0 } else { 201 }]))
                    .save(mask(r))
                    .unwrap()
            },
        ),
        on_vip(
            "8-bit panomasks map of a frame with a thing instance",
            INSPECT_VIP,
            &["00000001.png", "8-bit", "thing instance 2"],
            |r, _| {
                image::GrayImage::from_fn(16, 8, |x, _| Luma([if x < 8 { 1 } else { 120 }]))
                    .save(r.join("panomasks/v/00000001.png"))
                    .unwrap()
            },
        ),
        on_city(
            "two frames of different sizes",
            INSPECT_CITY,
            &["frankfurt_000000_000002", "16x32", "differs from the 8x16"],
            |r, _| {
                frame(
                    &r.join("val/img_all/frankfurt_000000_000002_leftImg8bit.png"),
                    [16, 32],
                )
            },
        ),
        on_city(
            "panoptic_video map of another size than its frame",
            INSPECT_CITY,
            &["panoptic_video", "4x16", "differs from the 8x16"],
            |r, _| colours(&colour_map(r), [4, 16]),
        ),
        Case::new(
            "train nerv: frame folder with frames of different sizes",
            &[
                "train",
                "nerv",
                "--clip",
                "{work}/frames",
                "--out",
                "{out}",
                "--args",
                NERV_ARGS,
            ],
            &["b.png", "16x32", "differs from the 8x16"],
            |w| {
                frame(&w.join("frames/a.png"), FULL);
                frame(&w.join("frames/b.png"), [16, 32]);
            },
        ),
        on_city(
            "annotation without its panoptic_video map",
            INSPECT_CITY,
            &["panoptic_video", CITY_MASK, "No such file"],
            |r, _| std::fs::remove_file(colour_map(r)).unwrap(),
        ),
        on_city(
            "JSON annotation without its panoptic_inst map",
            INSPECT_CITY,
            &[CITY_JSON, "0005_0001_frankfurt_000000_000001", "has no"],
            |r, _| {
                edit_json(&r.join(CITY_JSON), |v| {
                    let a = v["annotations"][0].clone();
                    let mut b = a.clone();
                    b["image_id"] = json!("0005_0001_frankfurt_000000_000001");
                    v["annotations"] = json!([a, b]);
                })
            },
        ),
        on_city(
            "an image listed twice in `annotations`",
            INSPECT_CITY,
            &[CITY_JSON, "two entries"],
            |r, _| {
                edit_json(&r.join(CITY_JSON), |v| {
                    let a = v["annotations"][0].clone();
                    v["annotations"] = json!([a.clone(), a]);
                })
            },
        ),
        on_city(
            "a segment id listed twice in `segments_info`",
            INSPECT_CITY,
            &[CITY_JSON, "segment id 2 twice"],
            |r, _| {
                edit_json(&r.join(CITY_JSON), |v| {
                    v["annotations"][0]["segments_info"][0]["id"] = json!(2)
                })
            },
        ),
        on_city(
            "`annotations` of the wrong type",
            INSPECT_CITY,
            &[CITY_JSON, "invalid type"],
            |r, _| write_json(&r.join(CITY_JSON), &json!({"annotations": 5})),
        ),
        on_city(
            "JSON nested 100000 levels deep",
            INSPECT_CITY,
            &[CITY_JSON, "recursion limit"],
            |r, _| {
                let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
                std::fs::write(r.join(CITY_JSON), format!("{{\"annotations\": {deep}}}")).unwrap()
            },
        ),
        on_vip(
            "a float image id",
            INSPECT_VIP,
            &[VIP_JSON, "did not match any variant"],
            |r, _| {
                edit_json(&r.join(VIP_JSON), |v| {
                    v["videos"][0]["images"][0]["id"] = json!(1.5)
                })
            },
        ),
        on_vip(
            "a video listed twice",
            INSPECT_VIP,
            &[VIP_JSON, "lists video v twice"],
            |r, _| write_json(&r.join(VIP_JSON), &vip_json(&["v", "v"], 1)),
        ),
        on_vip(
            "a category id listed twice",
            INSPECT_VIP,
            &[VIP_JSON, "category 13", "twice"],
            |r, _| edit_json(&r.join(VIP_JSON), |v| v["categories"][0]["id"] = json!(13)),
        ),
    ]
}

/// `xinc batch` on broken manifests and configs, `xinc synth` with a bad video id.
fn batch_and_synth() -> Vec<Case> {
    let dev_zero = Path::new("/dev/zero");
    vec![
        on_city(
            "batch: manifest is a named pipe",
            BATCH,
            &["manifest.txt", "named pipe"],
            |_, w| {
                batch_inputs(w, "city\n", "");
                fifo(&w.join("manifest.txt"));
            },
        ),
        on_city(
            "batch: batch.toml is a symlink to /dev/zero",
            BATCH,
            &["batch.toml", "a device"],
            move |_, w| {
                batch_inputs(w, "city\n", "");
                link(dev_zero, &w.join("batch.toml"));
            },
        ),
        on_city(
            "batch: batch.toml nested 100000 levels deep",
            BATCH,
            &["batch.toml"],
            |_, w| {
                let deep = format!("x = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
                std::fs::write(w.join("manifest.txt"), "city\n").unwrap();
                std::fs::write(w.join("batch.toml"), deep).unwrap();
            },
        ),
        on_city(
            "batch: a clip whose panoptic map is a named pipe writes nothing",
            BATCH,
            &[CITY_MASK, "named pipe"],
            |r, w| {
                fifo(&mask(r));
                batch_inputs(w, "city\n", "");
            },
        ),
        on_city(
            "batch: a clip with an 8-bit panoptic map writes nothing",
            BATCH,
            &[CITY_MASK, "8-bit"],
            |r, w| {
                image::GrayImage::from_pixel(16, 8, Luma([0]))
                    .save(mask(r))
                    .unwrap();
                batch_inputs(w, "city\n", "");
            },
        ),
        on_city(
            "batch: a NaN in a flow file writes nothing",
            BATCH,
            &["0.npy", "NaN", "finite"],
            |_, w| {
                let root = city_with_flow(w);
                let [h, w2] = FULL.map(|s| s as u64);
                let mut values = vec![0.0f32; (h * w2 * 2) as usize];
                values[3] = f32::NAN;
                write_npy(
                    &root.join("vps_subset/val/0005/flows/0.npy"),
                    &[h, w2, 2],
                    &values,
                );
                batch_inputs(w, "city\n", "");
            },
        ),
        on_city(
            "batch: a truncated frame writes nothing",
            BATCH,
            &[CITY_FRAME, "cannot decode"],
            |r, w| {
                let bytes = std::fs::read(city_frame(r)).unwrap();
                std::fs::write(city_frame(r), &bytes[..bytes.len() - 20]).unwrap();
                batch_inputs(w, "city\n", "");
            },
        ),
        Case::new(
            "synth: VIPSeg video id `../../x`",
            &[
                "synth", "--format", "vipseg", "--size", "16x32", "--frames", "2", "--video",
                "../../x", "--out", "{out}",
            ],
            &["video id `../../x`"],
            |_| {},
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The fixtures open; flow files through the library.

/// The unbroken fixtures open (so that each case fails for its one defect).
#[test]
fn hostile_datasets_fixtures_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    city_with_flow(dir.path());
    vip(dir.path());
    for root in ["city", "vip"] {
        let args = ["inspect", root, "--size", "8x16"].map(std::ffi::OsString::from);
        let o = harness::run_limited(dir.path(), &args, &dir.path().join("stderr")).unwrap();
        assert_eq!(o.code, Some(0), "{root}: {}", o.stderr);
    }
    let clip = xinc::data::clip::open_clip(
        &dir.path().join("city"),
        &xinc::data::clip::ClipOptions {
            size: [8, 16],
            video: None,
        },
    )
    .unwrap();
    let names: Vec<_> = clip.annotations[0]
        .segments
        .iter()
        .map(|s| (s.instance.as_str(), s.area))
        .collect();
    assert_eq!(names, vec![("road_0", 64), ("car_0", 64)]);
    assert!(clip.flow(0).unwrap().is_some());
}

/// Flow files that are refused when read: non-finite values, a shape other than the frames'
/// (checked from the header, before the data is read), trailing or missing data.
#[test]
fn hostile_datasets_flow_files() {
    let [h, w] = FULL.map(|s| s as u64);
    let n = (h * w * 2) as usize;
    let mut nan = vec![0.5f32; n];
    nan[7] = f32::NAN;
    let mut inf = vec![0.5f32; n];
    inf[0] = f32::NEG_INFINITY;
    type Write = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Write, &[&str])> = vec![
        (
            "NaN",
            Box::new(move |p| write_npy(p, &[h, w, 2], &nan)),
            &["NaN", "storage index 7", "finite"],
        ),
        (
            "-inf",
            Box::new(move |p| write_npy(p, &[h, w, 2], &inf)),
            &["-inf", "finite"],
        ),
        (
            "shape of another frame size",
            Box::new(move |p| write_npy(p, &[h, w / 2, 2], &vec![0.0; n / 2])),
            &["8x8", "differs from the 8x16"],
        ),
        (
            "header claiming 100000x100000x2 over 1 KiB of data",
            Box::new(|p| {
                // The header's padding absorbs the longer shape; its length field is unchanged.
                write_npy(p, &[1, 1], &[0.0]);
                let bytes = std::fs::read(p).unwrap();
                let (from, to) = (b"(1, 1, )".as_slice(), b"(100000, 100000, 2, )".as_slice());
                let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
                let header_end = bytes.len() - 4;
                let mut out = bytes[..at].to_vec();
                out.extend(to);
                out.extend(&bytes[at + from.len()..header_end - (to.len() - from.len()) - 1]);
                out.push(b'\n');
                out.extend([0u8; 1024]);
                assert_eq!(out.len(), header_end + 1024);
                std::fs::write(p, out).unwrap();
            }),
            &["100000x100000", "differs from the 8x16"],
        ),
        (
            "trailing data",
            Box::new(move |p| {
                write_npy(p, &[h, w, 2], &vec![0.0; n]);
                let mut bytes = std::fs::read(p).unwrap();
                bytes.extend([0u8; 64]);
                std::fs::write(p, bytes).unwrap();
            }),
            &["needs 1024 data bytes, but 1088 follow"],
        ),
    ];
    for (name, write, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = city_with_flow(dir.path());
        let flow = root.join("vps_subset/val/0005/flows/0.npy");
        write(&flow);
        let clip = xinc::data::clip::open_clip(
            &root,
            &xinc::data::clip::ClipOptions {
                size: [8, 16],
                video: None,
            },
        )
        .unwrap();
        let e = clip.flow(0).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, xinc::XincError::Dataset { .. }), "{name}: {m}");
        assert!(m.contains("0.npy"), "{name}: {m}");
        for word in expect {
            assert!(m.contains(word), "{name}: {m} lacks {word:?}");
        }
    }
}
