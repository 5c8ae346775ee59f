//! With the `cuda` feature, compiles the canvas CUDA kernels to PTX with nvcc (found on PATH or
//! under CUDA_ROOT/CUDA_HOME; see scripts/build-cuda.sh). Without it, does nothing.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &["src/canvas/nerv/block_sums.cu"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for k in KERNELS {
        println!("cargo::rerun-if-changed={k}");
    }
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = ["CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    for k in KERNELS {
        let stem = PathBuf::from(k).file_stem().expect("a file").to_owned();
        let ptx = out.join(stem).with_extension("ptx");
        let status = Command::new(&nvcc)
            .args([
                "--ptx",
                "-O3",
                "-std=c++17",
                &format!("-arch=compute_{cap}"),
                "-o",
            ])
            .arg(&ptx)
            .arg(k)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (see scripts/build-cuda.sh)",
                    nvcc.display()
                )
            });
        assert!(status.success(), "nvcc failed on {k}");
    }
}
