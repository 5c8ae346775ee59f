//! Shared test helpers: locating the golden reference outputs of the official code, comparing
//! tensors with them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// The golden folder: `$XINC_GOLDEN`, else `../shared/golden` beside the repository. `None` (with
/// a loud message) when absent, so that a machine without it skips instead of failing.
pub fn golden_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("XINC_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "\n!!!!!!!! SKIPPED {test}: golden folder {} not found (set XINC_GOLDEN) !!!!!!!!\n",
            dir.display()
        );
        None
    }
}

pub fn load(path: PathBuf) -> HashMap<String, Tensor> {
    xinc::io::load_safetensors(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest difference relative to the reference, where values near zero are measured against
/// 1e-3 of the reference's largest magnitude (a sum that cancels to ~0 has no meaningful
/// relative error of its own).
pub fn max_rel_diff(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len(), "length mismatch");
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    ours.iter()
        .zip(reference)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3 * scale).max(f32::MIN_POSITIVE))
        .fold(0.0, f32::max)
}

/// `[..., H, W]` values at rows and columns `0, step, 2·step, …` (the golden `gridN` subsets).
pub fn grid(data: &[f32], height: usize, width: usize, step: usize) -> Vec<f32> {
    let p = height * width;
    data.chunks_exact(p)
        .flat_map(|m| {
            (0..height)
                .step_by(step)
                .flat_map(move |h| (0..width).step_by(step).map(move |w| m[h * width + w]))
        })
        .collect()
}

/// Asserts `ours` within `tol` × the larger of 1 and the reference's largest magnitude of
/// `theirs`, element by element.
pub fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor, tol: f32) {
    assert_eq!(ours.dims(), theirs.dims(), "{what}: shapes");
    let (a, b) = (flat(ours), flat(theirs));
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = max_abs_diff(&a, &b);
    assert!(
        worst <= tol * scale,
        "{what}: largest difference {worst:e} > {tol:e} × {scale}"
    );
}
