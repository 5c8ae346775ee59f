//! Round trips through the dataset formats: what `xinc synth` writes, the loaders read back
//! exactly — the same segments, areas, bounding boxes and instance names as the generator's own
//! per-pixel labels — and the bundled sample clip in `data/` is exactly what the generator makes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use xinc::data::clip::{open_clip, ClipOptions};
use xinc::data::panoptic::{DatasetFormat, Mask};
use xinc::data::synth::dataset::{generate, SynthParams};
use xinc::data::synth::scene::{Label, StreetVideo};

const SIZE: [usize; 2] = [64, 128];

fn round_trip(format: DatasetFormat, frames: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let params = SynthParams {
        format,
        frames,
        size: SIZE,
        seed,
        ..SynthParams::default()
    };
    let summary = generate(&params, dir.path()).unwrap();
    // Loaded at the written size, so that masks compare pixel for pixel.
    let clip = open_clip(
        dir.path(),
        &ClipOptions {
            size: SIZE,
            video: None,
        },
    )
    .unwrap();
    assert_eq!(clip.frames.len(), frames);
    assert_eq!(clip.annotations.len(), summary.annotated_frames);
    let video = StreetVideo::new(SIZE[0], SIZE[1], seed);
    for annotated in &clip.annotations {
        let labels = video.render(annotated.frame_index).labels;
        let expected = masks_by_label(&labels);
        assert_eq!(
            annotated.segments.len(),
            expected.len(),
            "frame {}",
            annotated.frame_index
        );
        for seg in &annotated.segments {
            let (label, mask) = expected
                .iter()
                .find(|(_, m)| m.data == seg.mask.data)
                .unwrap_or_else(|| {
                    panic!(
                        "frame {}: no label has the mask of {}",
                        annotated.frame_index, seg.instance
                    )
                });
            assert_eq!(seg.area, mask.area());
            assert_eq!(Some(seg.bbox), mask.bbox());
            match label {
                Label::Thing(i) => {
                    let truth = summary.instances.iter().find(|t| t.thing == *i).unwrap();
                    assert!(seg.isthing && !seg.iscrowd);
                    assert_eq!(
                        (seg.instance.as_str(), seg.segment_id),
                        (truth.name.as_str(), truth.segment_id)
                    );
                }
                _ => assert!(!seg.isthing, "{} should be stuff", seg.instance),
            }
        }
    }
    // Names are stable across the clip: one segment id per name.
    let mut ids: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for s in clip.annotations.iter().flat_map(|f| &f.segments) {
        ids.entry(&s.instance).or_default().insert(s.segment_id);
    }
    assert!(ids.values().all(|s| s.len() == 1), "{ids:?}");
    assert!(clip.flows.is_some());
}

/// The mask of every non-void label present in a frame.
fn masks_by_label(labels: &[Label]) -> Vec<(Label, Mask)> {
    let present: BTreeSet<Label> = labels
        .iter()
        .copied()
        .filter(|l| *l != Label::Void)
        .collect();
    present
        .into_iter()
        .map(|label| {
            let data = labels.iter().map(|l| *l == label).collect();
            (
                label,
                Mask {
                    height: SIZE[0],
                    width: SIZE[1],
                    data,
                },
            )
        })
        .collect()
}

#[test]
fn cityscapes_vps_round_trip() {
    round_trip(DatasetFormat::CityscapesVps, 16, 3);
}

#[test]
fn vipseg_round_trip() {
    round_trip(DatasetFormat::Vipseg, 5, 4);
}

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cityscapes_vps")
}

/// Every file under `root`, by relative path.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn bundled_clip_is_exactly_what_the_generator_makes() {
    // data/README.md: `xinc synth --format cityscapes-vps --frames 30 --size 256x512 --seed 0`.
    let dir = tempfile::tempdir().unwrap();
    generate(&SynthParams::default(), dir.path()).unwrap();
    let (ours, bundled) = (tree(dir.path()), tree(&bundled()));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        bundled.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &ours {
        assert!(
            bytes == &bundled[path],
            "{} differs from the bundled copy",
            path.display()
        );
    }
    let total: usize = bundled.values().map(Vec::len).sum();
    assert!(total < 10 << 20, "bundled clip is {total} bytes");
}

#[test]
fn bundled_clip_loads_with_frames_annotations_and_flow() {
    let clip = open_clip(&bundled(), &ClipOptions::default()).unwrap();
    assert_eq!(
        (clip.format, clip.video.as_str()),
        (DatasetFormat::CityscapesVps, "0005")
    );
    assert_eq!(clip.frames.len(), 30);
    let annotated: Vec<usize> = clip.annotations.iter().map(|f| f.frame_index).collect();
    assert_eq!(annotated, [0, 5, 10, 15, 20, 25]);
    let names = clip.instance_names();
    for thing in ["car_0", "car_3", "person_0", "person_3"] {
        assert!(names.iter().any(|n| n == thing), "{names:?}");
    }
    let frame = clip.frame_ffn(0).unwrap();
    assert_eq!((frame.height, frame.width), (128, 256));
    let flow = clip.flow(10).unwrap().expect("the bundled clip has flow");
    assert_eq!((flow.height(), flow.width()), (128, 256));
    assert!(flow.magnitude().iter().any(|&m| m > 0.0));
}
