//! The `xinc` command-line tool: train or import INRs, compute their canvas, render, and run the
//! demo main job. Each subcommand is a thin layer over the library.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use xinc::canvas::ffn::{
    ffn_canvas, ffn_canvas_summary_with, write_ffn_canvas_with, FfnLayer, DEFAULT_TILE,
};
use xinc::canvas::nerv::{
    nerv_canvas_summary, nerv_canvas_summary_with, write_nerv_canvas_with, NervFrameData, NervLayer,
};
use xinc::canvas::Method;
use xinc::data::clip::{open_clip, ClipOptions};
use xinc::data::image::{load_rgb_resized, write_png, ImageTensor};
use xinc::data::panoptic::{Clip, DatasetFormat};
use xinc::data::synth::{generate, SynthParams};
use xinc::data::synthetic::street_scene;
use xinc::dataset::{run_task, BatchConfig, Stats};
use xinc::device_check::{check_device, DeviceCheckOptions};
use xinc::models::ffn::{Ffn, FfnConfig};
use xinc::models::import::{read_ffn_weights, read_nerv_weights};
use xinc::models::limits::{self, Limit};
use xinc::models::nerv::{Nerv, NervConfig};
use xinc::models::{Architecture, ModelConfig, ModelDir, Provenance, TrainingRecord};
use xinc::polars::prelude::{col, UniqueKeepStrategy};
use xinc::tensor::transpose;
use xinc::train::ffn::{train_ffn, FfnTrainParams, TrainReport};
use xinc::train::nerv::{train_nerv_folder, NervTrainParams};
use xinc::XincError;

/// Explain implicit neural representations: per-neuron contribution maps (XINC).
#[derive(Parser)]
#[command(name = "xinc", version, about)]
struct Cli {
    /// Compute device: `cpu`, or `cuda` (needs a build with the `cuda` feature).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Import an official checkpoint into a model folder.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Compute a model's canvas (contribution maps) and write it to a safetensors file.
    Canvas(CanvasArgs),
    /// Write a model's reconstruction as PNG.
    Render(RenderArgs),
    /// The main job: train an FFN on the first frame of the bundled clip (or a given image) and
    /// write its canvas and a grid of maps.
    Demo(DemoArgs),
    /// Run every analysis of the paper on a clip and its models: `index.html` (tables and
    /// interactive figures), `stats/*.parquet` and `summary.json`.
    Report(ReportArgs),
    /// Generate a synthetic panoptic street clip in the Cityscapes-VPS or VIPSeg format.
    Synth(SynthArgs),
    /// Load a dataset clip and print its annotated segments per frame.
    Inspect(InspectArgs),
    /// Run every canvas layer and a short training of the bundled models on `--device` and on
    /// the CPU: compare them and time the device (see scripts/gpu-check.sh).
    CheckDevice(CheckDeviceArgs),
    /// One task of a dataset-scale job: train (or import) the NeRV of manifest entry
    /// `--task-index`, run every analysis, write hive-partitioned Parquet into `--out`.
    /// Idempotent: a finished task is skipped, a killed one resumes (see scripts/slurm/).
    Batch(BatchArgs),
    /// Query the statistics of a batch run: the paper's headline numbers per layer across
    /// videos, with 95 % confidence intervals over videos.
    Stats(StatsArgs),
}

#[derive(Args)]
struct StatsArgs {
    /// The statistics folder of `xinc batch`.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Args)]
struct BatchArgs {
    /// Manifest: one dataset root per line (`ROOT` or `ROOT#VIDEO`, relative to the manifest).
    #[arg(long)]
    manifest: PathBuf,
    /// The entry to process (0-based; `$SLURM_ARRAY_TASK_ID` under Slurm).
    #[arg(long)]
    task_index: usize,
    /// The statistics folder (hive partitions `dataset=…/layer=…/video=…`).
    #[arg(long)]
    out: PathBuf,
    /// `batch.toml`: method, NeRV flags, epochs or an import path, seeds (defaults: the paper's).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct CheckDeviceArgs {
    /// The repository root (bundled clip and checkpoints).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Where to write `device_check.json`.
    #[arg(long, default_value = "out/device-check")]
    out: PathBuf,
    /// Timed device runs per layer (after one warm-up).
    #[arg(long, default_value_t = 10, value_parser = count("--repeats", 1, limits::REPEATS))]
    repeats: usize,
    /// NeRV frames whose canvas is checked and timed.
    #[arg(long, default_value_t = 3, value_parser = count("--frames", 1, limits::FRAMES))]
    frames: usize,
    #[arg(long, default_value_t = 20, value_parser = count("--ffn-iters", 1, limits::STEPS))]
    ffn_iters: usize,
    #[arg(long, default_value_t = 2, value_parser = count("--nerv-epochs", 1, limits::STEPS))]
    nerv_epochs: usize,
}

#[derive(Args)]
struct SynthArgs {
    /// `cityscapes-vps` or `vipseg`.
    #[arg(long, default_value = "cityscapes-vps")]
    format: DatasetFormat,
    #[arg(long, default_value_t = 30, value_parser = count("--frames", 1, limits::FRAMES))]
    frames: usize,
    /// Frame size HxW.
    #[arg(long, default_value = "256x512", value_parser = parse_size)]
    size: [usize; 2],
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Video id (default: 0005 for Cityscapes-VPS, 26_cblDl5vCZnw for VIPSeg).
    #[arg(long)]
    video: Option<String>,
    /// Also write the exact flow vectors (flows_uv/*.npy, f32 [H, W, 2]); the 8-bit magnitude
    /// maps (flows/*.npy) are always written.
    #[arg(long)]
    vector_flow: bool,
    /// Dataset root to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct InspectArgs {
    /// Dataset root (the folder holding the Cityscapes-VPS or VIPSeg JSON).
    path: PathBuf,
    /// Video id (default: the first).
    #[arg(long)]
    video: Option<String>,
    /// Working resolution HxW at which masks are read.
    #[arg(long, default_value = "128x256", value_parser = parse_size)]
    size: [usize; 2],
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TrainCommand {
    /// Train an FFN on one image (full-batch Adam, MSE, best PSNR kept).
    Ffn(TrainFfnArgs),
    /// Train a NeRV on a clip (official schedule; resumable).
    Nerv(TrainNervArgs),
}

#[derive(Args)]
struct TrainNervArgs {
    /// A Cityscapes-VPS or VIPSeg root, or a folder of PNG/JPEG frames.
    #[arg(long)]
    clip: PathBuf,
    /// Video id within a dataset root (default: the first).
    #[arg(long)]
    video: Option<String>,
    /// Centre crop HxW applied to folder frames before resizing (dataset clips use their own).
    #[arg(long, value_parser = parse_size)]
    crop: Option<[usize; 2]>,
    /// The official flags that shape the model (frame size = fc_hw × strides).
    #[arg(long, default_value = PAPER_NERV_ARGS, allow_hyphen_values = true)]
    args: String,
    #[arg(long, default_value_t = 1000, value_parser = count("--epochs", 1, limits::STEPS))]
    epochs: usize,
    #[arg(long, default_value_t = 50, value_parser = count("--eval-every", 1, limits::STEPS))]
    eval_every: usize,
    #[arg(long, default_value_t = 1e-3, value_parser = learning_rate)]
    lr: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Continue from MODEL_DIR/train_state.safetensors when it exists.
    #[arg(long)]
    resume: bool,
    /// Stop after this epoch (the schedule still spans --epochs); resume later with --resume.
    /// A multiple of --eval-every: the training state is written at evaluations.
    #[arg(long, value_parser = count("--until-epoch", 1, limits::STEPS))]
    until_epoch: Option<usize>,
    /// Output model folder (also holds the training state).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct TrainFfnArgs {
    /// Input image (PNG or JPEG).
    #[arg(long)]
    image: PathBuf,
    /// Working size HxW; the image is resized as the official pipeline does.
    #[arg(long, default_value = "128x256", value_parser = parse_size)]
    size: [usize; 2],
    /// Hidden width (and Fourier mapping size).
    #[arg(long, default_value_t = 104, value_parser = count("--width", 1, limits::FFN_WIDTH))]
    width: usize,
    #[arg(long, default_value_t = 1000, value_parser = count("--iters", 1, limits::STEPS))]
    iters: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 9e-4, value_parser = learning_rate)]
    lr: f64,
    /// Evaluate the PSNR every K iterations and keep the best model.
    #[arg(long, default_value_t = 50, value_parser = count("--eval-every", 1, limits::STEPS))]
    eval_every: usize,
    /// Output model folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import an official FFN (Lightning .ckpt, .pth, or safetensors with the official names).
    Ffn(ImportFfnArgs),
    /// Import an official NeRV (`model_best.pth`, or safetensors with the official names).
    Nerv(ImportNervArgs),
}

const PAPER_NERV_ARGS: &str = NervConfig::PAPER_ARGS;

#[derive(Args)]
struct ImportNervArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Number of frames T the model was trained on (frame i is decoded from t = i / T).
    #[arg(long, value_parser = count("--frames", 1, limits::FRAMES))]
    frames: usize,
    /// The official training flags that shape the model.
    #[arg(long, default_value = PAPER_NERV_ARGS, allow_hyphen_values = true)]
    args: String,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ImportFfnArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// The official `exp_config.yaml` (architecture and data shape). Without it the architecture
    /// is inferred from the tensor shapes and the image size comes from `--size`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "128x256", value_parser = parse_size)]
    size: [usize; 2],
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct CanvasArgs {
    /// Model folder.
    #[arg(long)]
    model: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Comma-separated layers (default: all). FFN: layer1, layer2, layer3, layer3_rgb (and, with
    /// `--method conservative`, layer1_rgb, layer2_rgb). NeRV: head, block3, block3_pre_gelu,
    /// block2, block2_pre_gelu, block1, block1_pre_gelu.
    #[arg(long)]
    layers: Option<String>,
    /// NeRV: the frame to explain (t = frame / T).
    #[arg(long, default_value_t = 0, value_parser = count("--frame", 0, limits::FRAMES))]
    frame: usize,
    /// NeRV: restrict the input-channel axis to A:B (end exclusive).
    #[arg(long, value_parser = parse_range)]
    in_channels: Option<std::ops::Range<usize>>,
    /// Write per-layer reductions (sum_hw, abssum_hw, sum_neurons) instead of the maps.
    #[arg(long)]
    summary: bool,
    /// Pixels per streamed tile.
    #[arg(long, default_value_t = DEFAULT_TILE, value_parser = count("--tile", 1, limits::TILE))]
    tile: usize,
    /// `official` (the paper's code, the default) or `conservative` (every layer's maps sum
    /// exactly to the output: contributions carried through the real downstream network).
    #[arg(long, default_value = "official")]
    method: Method,
    /// Conservative NeRV blocks: also write the per-output-channel maps (`<layer>_rgb`,
    /// `[Cin, Cout, 3, H, W]`, or their reductions). FFN: name `layer<k>_rgb` in `--layers`.
    #[arg(long)]
    rgb: bool,
}

#[derive(Args)]
struct RenderArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Train on this image instead of the bundled clip's first frame.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Dataset root whose first frame is learned (a generated scene is used when it is absent).
    #[arg(long, default_value = "data/cityscapes_vps")]
    clip: PathBuf,
    #[arg(long, default_value = "128x256", value_parser = parse_size)]
    size: [usize; 2],
    #[arg(long, default_value_t = 104, value_parser = count("--width", 1, limits::FFN_WIDTH))]
    width: usize,
    #[arg(long, default_value_t = 1000, value_parser = count("--iters", 1, limits::STEPS))]
    iters: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// NeRV model folder to explain (the bundled checkpoint); when absent, a NeRV is trained on
    /// `--clip` for `--nerv-epochs` epochs first.
    #[arg(long, default_value = "checkpoints/nerv_cityscapes_vps_0005")]
    nerv: PathBuf,
    #[arg(long, default_value_t = 20, value_parser = count("--nerv-epochs", 1, limits::STEPS))]
    nerv_epochs: usize,
}

#[derive(Args)]
struct ReportArgs {
    /// Model folders (an FFN of the clip's first frame and/or a NeRV of the clip); repeat the flag.
    #[arg(long = "model", default_values = ["checkpoints/ffn_cityscapes_vps_0005", "checkpoints/nerv_cityscapes_vps_0005"])]
    models: Vec<PathBuf>,
    /// Dataset root of the clip (Cityscapes-VPS or VIPSeg layout).
    #[arg(long, default_value = "data/cityscapes_vps")]
    data: PathBuf,
    /// Video id, when the dataset root holds several.
    #[arg(long)]
    video: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "out/report")]
    out: PathBuf,
    /// Seed of every k-means.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Neuron groups per layer (a layer with fewer neurons is skipped).
    #[arg(long, default_value_t = 6, value_parser = count("--groups", 1, limits::GROUPS))]
    groups: usize,
    /// Frames t ≥ 1 whose contribution change (t−1 → t) is compared with the flow (frames beyond
    /// the clip are skipped).
    #[arg(long, value_delimiter = ',', default_value = "1,10",
          value_parser = count("--motion-frames", 1, limits::FRAMES))]
    motion_frames: Vec<usize>,
    /// The canvas every section analyses: `official` (the paper's code, the default) or
    /// `conservative` (exact, output-conserving).
    #[arg(long, default_value = "official")]
    method: Method,
    /// Skip the section that repeats the headline analyses under the other method and
    /// compares the paper's conclusions under both.
    #[arg(long)]
    no_compare: bool,
    /// Analyse at most this many of the NeRV's annotated frames, evenly spaced (default: all).
    #[arg(long, value_parser = count("--max-frames", 1, limits::FRAMES))]
    max_frames: Option<usize>,
}

type CliResult<T = ()> = xinc::Result<T>;

fn fail<T>(msg: impl Into<String>) -> CliResult<T> {
    Err(XincError::InvalidArgument(msg.into()))
}

/// A clap parser of a whole-number flag in `min..=limit.max`: every numeric flag has an upper
/// limit ([`limits`]), checked before any work.
fn count(
    flag: &'static str,
    min: usize,
    limit: Limit,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| parse_count(flag, s, min, limit)
}

fn parse_count(field: &str, s: &str, min: usize, limit: Limit) -> Result<usize, String> {
    let digits = s.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a whole number"));
    }
    // Digits beyond 64 bits are over every limit: say so instead of printing a wrapped value.
    let Ok(value) = digits.parse::<usize>() else {
        return Err(format!(
            "{field} = {digits} is more than the limit {} ({})",
            limit.max, limit.why
        ));
    };
    limit.check_range(field, value, min).map_err(message)?;
    Ok(value)
}

/// The message of a library error, without the `invalid argument:` prefix (clap adds its own).
fn message(e: XincError) -> String {
    match e {
        XincError::InvalidArgument(m) => m,
        other => other.to_string(),
    }
}

/// `--lr`: a finite learning rate in (0, 1].
fn learning_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    limits::check_learning_rate("--lr", v).map_err(message)?;
    Ok(v)
}

/// `HxW`, each side from 1 to [`limits::IMAGE_SIDE`].
fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not HxW"))?;
    Ok([
        parse_count("height", h, 1, limits::IMAGE_SIDE)?,
        parse_count("width", w, 1, limits::IMAGE_SIDE)?,
    ])
}

/// `A:B`, a non-empty range of input channels within [`limits::NERV_CHANNELS`].
fn parse_range(s: &str) -> Result<std::ops::Range<usize>, String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not A:B"))?;
    let start = parse_count("A", a, 0, limits::NERV_CHANNELS)?;
    let end = parse_count("B", b, 1, limits::NERV_CHANNELS)?;
    if start >= end {
        return Err(format!("`{s}` is empty: A must be less than B"));
    }
    Ok(start..end)
}

/// How the FFN flags name the configuration fields they set.
fn ffn_flag(field: &'static str) -> String {
    match field {
        "layer_size" | "fourier_mapping_size" => "--width".to_string(),
        "data_shape" => "--size".to_string(),
        other => other.to_string(),
    }
}

/// What a command's output path held before the command ran, so that a failed command removes
/// everything it created there and leaves nothing behind. Files it replaced were written
/// atomically (renamed into place when complete), so they are the old ones or complete new ones.
enum OutputGuard {
    /// The output did not exist: the topmost of it and its missing parent folders.
    Missing(PathBuf),
    /// An existing folder, and the names it held.
    Folder(PathBuf, HashSet<OsString>),
    /// An existing file (or a dangling link): replaced only by atomic renames, left alone.
    Existing,
}

impl OutputGuard {
    fn before(out: &Path) -> Self {
        match std::fs::metadata(out) {
            Ok(meta) if meta.is_dir() => {
                let names = std::fs::read_dir(out)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_default();
                return OutputGuard::Folder(out.to_path_buf(), names);
            }
            Ok(_) => return OutputGuard::Existing,
            Err(_) if std::fs::symlink_metadata(out).is_ok() => return OutputGuard::Existing,
            Err(_) => {}
        }
        let mut top = out;
        while let Some(parent) = top.parent() {
            if parent.as_os_str().is_empty() || std::fs::symlink_metadata(parent).is_ok() {
                break;
            }
            top = parent;
        }
        OutputGuard::Missing(top.to_path_buf())
    }

    /// Removes what the failed command created.
    fn undo(&self) {
        match self {
            OutputGuard::Missing(top) => remove_created(top),
            OutputGuard::Folder(dir, names) => {
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    if !names.contains(&entry.file_name()) {
                        remove_created(&entry.path());
                    }
                }
            }
            OutputGuard::Existing => {}
        }
    }
}

fn remove_created(path: &Path) {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return,
    };
    match removed {
        Ok(()) => tracing::info!("removed {} (the command failed)", path.display()),
        Err(e) => tracing::warn!("cannot remove {} after the failure: {e}", path.display()),
    }
}

fn main() {
    // Behave like other command-line tools when the reader of a pipe leaves (`xinc inspect | head`).
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> CliResult {
    let device = device(&cli.device)?;
    let guard = cli.command.output().map(OutputGuard::before);
    let result = dispatch(cli.command, &device);
    if let (Err(_), Some(guard)) = (&result, guard) {
        guard.undo();
    }
    result
}

impl Command {
    /// The output a command writes (a folder or a file), which it leaves untouched when it fails.
    /// `batch` writes into a statistics folder shared by many tasks and keeps its own protocol
    /// (a task's partition appears complete or not at all).
    fn output(&self) -> Option<&Path> {
        match self {
            Command::Train(TrainCommand::Ffn(a)) => Some(&a.out),
            Command::Train(TrainCommand::Nerv(a)) => Some(&a.out),
            Command::Import(ImportCommand::Ffn(a)) => Some(&a.out),
            Command::Import(ImportCommand::Nerv(a)) => Some(&a.out),
            Command::Canvas(a) => Some(&a.out),
            Command::Render(a) => Some(&a.out),
            Command::Demo(a) => Some(&a.out),
            Command::Report(a) => Some(&a.out),
            Command::Synth(a) => Some(&a.out),
            Command::CheckDevice(a) => Some(&a.out),
            Command::Batch(_) | Command::Stats(_) | Command::Inspect(_) => None,
        }
    }
}

fn dispatch(command: Command, device: &Device) -> CliResult {
    match command {
        Command::Train(TrainCommand::Ffn(a)) => train_cmd(a, device),
        Command::Train(TrainCommand::Nerv(a)) => train_nerv_cmd(a, device),
        Command::Import(ImportCommand::Ffn(a)) => import_cmd(a, device),
        Command::Import(ImportCommand::Nerv(a)) => import_nerv_cmd(a, device),
        Command::Canvas(a) => canvas_cmd(a, device),
        Command::Render(a) => render_cmd(a, device),
        Command::Demo(a) => demo_cmd(a, device),
        Command::Report(a) => report_cmd(a, device),
        Command::CheckDevice(a) => check_device_cmd(a, device),
        Command::Batch(a) => batch_cmd(a, device),
        Command::Stats(a) => stats_cmd(a),
        Command::Synth(a) => synth_cmd(a),
        Command::Inspect(a) => inspect_cmd(a),
    }
}

fn check_device_cmd(a: CheckDeviceArgs, device: &Device) -> CliResult {
    let opts = DeviceCheckOptions {
        repeats: a.repeats,
        frames: a.frames,
        ffn_iters: a.ffn_iters,
        nerv_epochs: a.nerv_epochs,
        ..DeviceCheckOptions::default()
    };
    let report = check_device(&a.repo, device, &opts)?;
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| XincError::InvalidArgument(e.to_string()))?;
    xinc::io::write_atomic(&a.out.join("device_check.json"), |w| w.write_all(&json))?;
    println!(
        "{:<6} {:<30} {:>5} {:>10} {:>12} {:>14} {:>10}",
        "model", "layer", "frame", "cpu ms", "device ms", "on device ms", "rel diff"
    );
    for l in &report.layers {
        let resident = l
            .device_resident_median_ms
            .map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        println!(
            "{:<6} {:<30} {:>5} {:>10.3} {:>12.4} {:>14} {:>10.2e}{}",
            l.model,
            l.layer,
            l.frame,
            l.cpu_ms,
            l.device_median_ms,
            resident,
            l.max_rel_diff,
            if l.pass { "" } else { "  FAIL" }
        );
    }
    for t in &report.training {
        println!(
            "train {}: {:.3} ms/step on the CPU, {:.3} ms/step on {:?}; losses cpu {:?} device {:?}; rel diff {:.2e}{}",
            t.model, t.cpu_ms_per_step, t.device_ms_per_step, device, t.cpu_loss, t.device_loss, t.max_rel_diff,
            if t.pass { "" } else { "  FAIL" }
        );
    }
    if report.pass {
        println!(
            "device check passed -> {}",
            a.out.join("device_check.json").display()
        );
        Ok(())
    } else {
        fail("device check FAILED: see the rows marked FAIL".to_string())
    }
}

fn device(name: &str) -> CliResult<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => fail(format!("unknown device `{other}` (cpu or cuda)")),
    }
}

fn train_cmd(a: TrainFfnArgs, device: &Device) -> CliResult {
    let [h, w] = a.size;
    let config = FfnConfig::with_width(a.width, h, w);
    config.check(&ffn_flag)?;
    let target = load_rgb_resized(&a.image, h, w)?;
    let params = FfnTrainParams {
        iters: a.iters,
        lr: a.lr,
        eval_every: a.eval_every,
        seed: a.seed,
        ..FfnTrainParams::default()
    };
    let input = a.image.display().to_string();
    train_and_save(config, &target, &params, &input, &a.out, device)?;
    Ok(())
}

/// Trains an FFN, saves it as a model folder and reports the result.
fn train_and_save(
    config: FfnConfig,
    target: &ImageTensor,
    params: &FfnTrainParams,
    input: &str,
    out: &Path,
    device: &Device,
) -> CliResult<Ffn> {
    let (model, report) = train_ffn(config, target, params, device)?;
    save_trained(out, &model, &report, params, input)?;
    Ok(model)
}

fn save_trained(
    out: &Path,
    model: &Ffn,
    report: &TrainReport,
    params: &FfnTrainParams,
    input: &str,
) -> CliResult {
    let config = ModelConfig {
        format_version: ModelDir::FORMAT_VERSION,
        architecture: Architecture::Ffn(model.config().clone()),
        provenance: Provenance::Trained(TrainingRecord {
            input: input.to_string(),
            iters: params.iters,
            seed: params.seed,
            lr: params.lr,
            eval_every: params.eval_every,
            best_iter: report.best_iter,
            best_psnr: report.best_psnr,
            seconds: report.seconds,
        }),
    };
    ModelDir::new(out).save(&model.named_tensors(), &config)?;
    println!(
        "trained FFN ({} params): best PSNR {:.2} dB at iteration {} in {:.1} s -> {}",
        model.config().num_params(),
        report.best_psnr,
        report.best_iter,
        report.seconds,
        out.display()
    );
    Ok(())
}

fn import_cmd(a: ImportFfnArgs, device: &Device) -> CliResult {
    let origin = a.checkpoint.display().to_string();
    let (config, tensors) = read_ffn_weights(&a.checkpoint, a.config.as_deref(), a.size, device)?;
    let model = Ffn::from_tensors(config, tensors, &origin, device)?;
    let cfg = ModelConfig {
        format_version: ModelDir::FORMAT_VERSION,
        architecture: Architecture::Ffn(model.config().clone()),
        provenance: Provenance::Imported {
            checkpoint: a.checkpoint.clone(),
            config: a.config.clone(),
        },
    };
    ModelDir::new(&a.out).save(&model.named_tensors(), &cfg)?;
    println!(
        "imported FFN {:?} from {} -> {}",
        model.config().data_shape,
        origin,
        a.out.display()
    );
    Ok(())
}

fn train_nerv_cmd(a: TrainNervArgs, device: &Device) -> CliResult {
    let params = NervTrainParams {
        epochs: a.epochs,
        eval_every: a.eval_every,
        lr: a.lr,
        seed: a.seed,
        until_epoch: a.until_epoch,
        ..NervTrainParams::default()
    };
    let (model, report) = train_nerv_folder(
        &a.clip,
        a.video.clone(),
        a.crop,
        &a.args,
        &params,
        &a.out,
        a.resume,
        device,
    )?;
    println!(
        "trained NeRV ({} params, {} frames): best PSNR {:.2} dB at epoch {} ({:.2} s/epoch, {:.1} s) -> {}",
        model.config().num_params(),
        model.config().frames,
        report.best_psnr,
        report.best_epoch,
        report.seconds_per_epoch,
        report.seconds,
        a.out.display()
    );
    Ok(())
}

fn import_nerv_cmd(a: ImportNervArgs, device: &Device) -> CliResult {
    let config = NervConfig::from_official_args(&a.args, a.frames)?;
    let tensors = read_nerv_weights(&a.checkpoint, &config, device)?;
    let model = Nerv::from_tensors(config, tensors, &a.checkpoint.display().to_string(), device)?;
    let cfg = ModelConfig {
        format_version: ModelDir::FORMAT_VERSION,
        architecture: Architecture::Nerv(model.config().clone()),
        provenance: Provenance::Imported {
            checkpoint: a.checkpoint.clone(),
            config: None,
        },
    };
    ModelDir::new(&a.out).save(&model.named_tensors(), &cfg)?;
    println!(
        "imported NeRV ({} params, {} frames of {:?}) from {} -> {}",
        model.config().num_params(),
        model.config().frames,
        model.config().frame_size(),
        a.checkpoint.display(),
        a.out.display()
    );
    Ok(())
}

fn canvas_cmd(a: CanvasArgs, device: &Device) -> CliResult {
    match ModelDir::new(&a.model).config()?.architecture {
        Architecture::Ffn(_) => ffn_canvas_cmd(a, device),
        Architecture::Nerv(_) => nerv_canvas_cmd(a, device),
    }
}

/// Memory budget of one streamed chunk of NeRV maps.
const NERV_CHUNK_BYTES: usize = 256 << 20;

fn nerv_canvas_cmd(a: CanvasArgs, device: &Device) -> CliResult {
    let (model, _) = ModelDir::new(&a.model).load_nerv(device)?;
    let frames = model.config().frames;
    if a.frame >= frames {
        return fail(format!(
            "frame {} is outside the model's {frames} frames",
            a.frame
        ));
    }
    let blocks = model.blocks().len();
    let layers = match &a.layers {
        Some(list) => list
            .split(',')
            .map(|l| l.trim().parse::<NervLayer>())
            .collect::<Result<Vec<_>, _>>()?,
        None => NervLayer::all(blocks),
    };
    let start = Instant::now();
    let frame = NervFrameData::new(&model, &model.forward_frame(a.frame, device)?)?;
    let only = a.in_channels.clone();
    if a.summary {
        nerv_canvas_summary_with(&frame, &layers, only, device, a.method, a.rgb)?.save(&a.out)?;
    } else {
        write_nerv_canvas_with(
            &frame,
            &layers,
            only,
            &a.out,
            NERV_CHUNK_BYTES,
            device,
            a.method,
            a.rgb,
        )?;
    }
    let names: Vec<String> = layers.iter().map(ToString::to_string).collect();
    println!(
        "{} canvas of frame {} [{}] in {:.3} s -> {}",
        a.method,
        a.frame,
        names.join(", "),
        start.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

fn ffn_canvas_cmd(a: CanvasArgs, device: &Device) -> CliResult {
    let (model, _) = ModelDir::new(&a.model).load_ffn(device)?;
    let layers = match &a.layers {
        Some(list) => FfnLayer::parse_list_for(list, model.config(), a.method)?,
        None => FfnLayer::all_for(model.config(), a.method),
    };
    let start = Instant::now();
    if a.summary {
        ffn_canvas_summary_with(&model, device, &layers, a.method, a.tile)?.save(&a.out)?;
    } else {
        write_ffn_canvas_with(&model, device, &layers, a.method, &a.out, a.tile)?;
    }
    let names: Vec<String> = layers.iter().map(ToString::to_string).collect();
    println!(
        "{} canvas [{}] in {:.3} s -> {}",
        a.method,
        names.join(", "),
        start.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

fn render_cmd(a: RenderArgs, device: &Device) -> CliResult {
    let (model, _) = ModelDir::new(&a.model).load_ffn(device)?;
    write_png(&a.out, &prediction(&model, device)?.to_rgb8())?;
    println!("rendered -> {}", a.out.display());
    Ok(())
}

/// The model's prediction over its image (after the final activation), as an image tensor.
fn prediction(model: &Ffn, device: &Device) -> CliResult<ImageTensor> {
    let [height, width] = model.config().data_shape;
    let acts = model.forward_image(device)?;
    Ok(ImageTensor {
        height,
        width,
        data: acts.output.flatten_all()?.to_vec1::<f32>()?,
    })
}

fn demo_cmd(a: DemoArgs, device: &Device) -> CliResult {
    let [h, w] = a.size;
    let config = FfnConfig::with_width(a.width, h, w);
    config.check(&ffn_flag)?;
    // Every input is read before anything is written: the image, and the NeRV folder when given.
    let (target, input) = demo_input(&a)?;
    let nerv = existing_nerv(&a, device)?;
    std::fs::create_dir_all(&a.out).map_err(|e| XincError::io(&a.out, e))?;
    write_png(&a.out.join("input.png"), &target.to_rgb8())?;
    let params = FfnTrainParams {
        iters: a.iters,
        seed: a.seed,
        ..FfnTrainParams::default()
    };
    let model = train_and_save(config, &target, &params, &input, &a.out.join("ffn"), device)?;
    write_png(
        &a.out.join("reconstruction.png"),
        &prediction(&model, device)?.to_rgb8(),
    )?;

    let start = Instant::now();
    let acts = model.forward_image(device)?;
    let layers = FfnLayer::all(model.config());
    let canvas = ffn_canvas(&model, &acts, &layers)?;
    let seconds = start.elapsed().as_secs_f64();
    canvas.save(&a.out.join("canvas.safetensors"))?;
    let summary = canvas.summary();
    summary.save(&a.out.join("canvas_summary.safetensors"))?;
    write_png(
        &a.out.join("canvas_grid.png"),
        &demo_grid(&canvas, &summary, 6),
    )?;
    let rgb = summary.layers.last().expect("layerL_rgb is requested");
    let conservation = rgb
        .sum_neurons
        .iter()
        .zip(&canvas.output)
        .map(|(s, y)| (s - y).abs())
        .fold(0.0f32, f32::max);
    println!(
        "canvas of {} layers (forward + maps) in {seconds:.3} s",
        layers.len()
    );
    println!(
        "conservation: max |sum of {} maps - output| = {conservation:.2e}",
        rgb.layer
    );
    for s in &summary.layers {
        let dead = s.abssum_hw.iter().filter(|&&v| v == 0.0).count();
        let total: f32 = s.abssum_hw.iter().sum();
        println!(
            "  {:<11} {:>4} maps, {:>3} all-zero, sum |C| = {total:.1}",
            s.layer,
            s.abssum_hw.len(),
            dead
        );
    }
    println!("wrote {}/{{input.png, reconstruction.png, canvas.safetensors, canvas_summary.safetensors, canvas_grid.png, ffn/}}", a.out.display());
    demo_nerv(&a, nerv, device)
}

/// A NeRV and its config as loaded from a model folder, and the folder.
type LoadedNerv = (Nerv, ModelConfig, PathBuf);

/// The demo's `--nerv` folder, loaded and checked, when it holds a `config.json` (anything by
/// that name, so that a broken one is an error, not a reason to train); `None` when it has none.
fn existing_nerv(a: &DemoArgs, device: &Device) -> CliResult<Option<LoadedNerv>> {
    if std::fs::symlink_metadata(a.nerv.join(ModelDir::CONFIG)).is_err() {
        return Ok(None);
    }
    let (model, cfg) = ModelDir::new(&a.nerv).load_nerv(device)?;
    Ok(Some((model, cfg, a.nerv.clone())))
}

/// The NeRV half of the demo: the loaded NeRV (or one trained on the bundled clip now), its
/// frame 0 and the canvas summary of every layer for that frame.
fn demo_nerv(a: &DemoArgs, loaded: Option<LoadedNerv>, device: &Device) -> CliResult {
    let (model, cfg, dir) = match loaded {
        Some(loaded) => loaded,
        None => train_demo_nerv(a, device)?,
    };
    let acts = model.forward_frame(0, device)?;
    let [h, w] = model.config().frame_size();
    let frame0 = ImageTensor {
        height: h,
        width: w,
        data: transpose(&acts.output.flatten_all()?.to_vec1::<f32>()?, 3, h * w),
    };
    write_png(&a.out.join("nerv_frame0.png"), &frame0.to_rgb8())?;
    let start = Instant::now();
    let layers = NervLayer::all(model.blocks().len());
    let summary = nerv_canvas_summary(&NervFrameData::new(&model, &acts)?, &layers, None, device)?;
    summary.save(&a.out.join("nerv_canvas_summary.safetensors"))?;
    let psnr = match &cfg.provenance {
        Provenance::Trained(t) => format!("{:.2} dB", t.best_psnr),
        Provenance::Imported { .. } => "imported".to_string(),
    };
    println!(
        "NeRV {} ({}): canvas summary of {} layers for frame 0 in {:.2} s",
        dir.display(),
        psnr,
        layers.len(),
        start.elapsed().as_secs_f64()
    );
    for s in summary
        .layers
        .iter()
        .filter(|s| !s.layer.ends_with("pre_gelu"))
    {
        let dead = s.abssum_hw.iter().filter(|&&v| v == 0.0).count();
        println!(
            "  {:<7} {:>6} kernels, {:>5} all-zero, sum |C| = {:.1}",
            s.layer,
            s.abssum_hw.len(),
            dead,
            s.abssum_hw.iter().sum::<f32>()
        );
    }
    println!(
        "wrote {}/{{nerv_frame0.png, nerv_canvas_summary.safetensors}}",
        a.out.display()
    );
    Ok(())
}

/// Trains the demo's NeRV on `--clip` into `OUT/nerv` and loads it.
fn train_demo_nerv(a: &DemoArgs, device: &Device) -> CliResult<LoadedNerv> {
    let out = a.out.join("nerv");
    tracing::warn!(
        "{} not found: training a NeRV on {} for {} epochs",
        a.nerv.display(),
        a.clip.display(),
        a.nerv_epochs
    );
    train_nerv_cmd(
        TrainNervArgs {
            clip: a.clip.clone(),
            video: None,
            crop: None,
            args: PAPER_NERV_ARGS.to_string(),
            epochs: a.nerv_epochs,
            eval_every: a.nerv_epochs.clamp(1, 10),
            lr: 1e-3,
            seed: a.seed,
            resume: false,
            until_epoch: None,
            out: out.clone(),
        },
        device,
    )?;
    let (model, cfg) = ModelDir::new(&out).load_nerv(device)?;
    Ok((model, cfg, out))
}

/// The image the demo learns: `--image`, else the first frame of `--clip`, else a generated scene.
fn demo_input(a: &DemoArgs) -> CliResult<(ImageTensor, String)> {
    let [h, w] = a.size;
    if let Some(path) = &a.image {
        return Ok((load_rgb_resized(path, h, w)?, path.display().to_string()));
    }
    if a.clip.exists() {
        let clip = open_clip(
            &a.clip,
            &ClipOptions {
                size: a.size,
                video: None,
            },
        )?;
        let first = clip
            .frames
            .first()
            .map(|f| f.display().to_string())
            .unwrap_or_default();
        return Ok((clip.frame_ffn(0)?, first));
    }
    tracing::warn!(
        "{} not found: learning a generated street scene",
        a.clip.display()
    );
    Ok((
        ImageTensor::from_rgb8(&street_scene(h, w)),
        format!("generated street scene {h}x{w}"),
    ))
}

/// One row per summed layer: its `per_row` maps with the largest absolute contribution.
fn demo_grid(
    canvas: &xinc::canvas::Canvas,
    summary: &xinc::canvas::CanvasSummary,
    per_row: usize,
) -> image::RgbImage {
    let mut maps: Vec<&[f32]> = Vec::new();
    for (m, s) in canvas
        .layers
        .iter()
        .zip(&summary.layers)
        .filter(|(m, _)| m.neuron_shape.len() == 1)
    {
        let mut order: Vec<usize> = (0..m.num_maps()).collect();
        order.sort_by(|&a, &b| s.abssum_hw[b].total_cmp(&s.abssum_hw[a]));
        maps.extend(order.iter().take(per_row).map(|&i| m.map(i)));
    }
    xinc::plot::map_grid(&maps, canvas.height, canvas.width, per_row, 4)
}

fn report_cmd(a: ReportArgs, device: &Device) -> CliResult {
    let study = xinc::study::Study::open(&a.data, &a.models, a.video.as_deref(), device)?;
    let opts = xinc::report::ReportOptions {
        seed: a.seed,
        groups: a.groups,
        motion_frames: a.motion_frames.clone(),
        method: a.method,
        compare_methods: !a.no_compare,
        max_frames: a.max_frames,
        ..xinc::report::ReportOptions::new(&a.out)
    };
    let out = xinc::report::write_report(&study, &opts)?;
    for c in &out.headlines.claims {
        println!(
            "[{}] {}\n    criterion: {}",
            c.verdict.text(),
            c.statement,
            c.criterion
        );
    }
    println!(
        "report of video {} in {:.1} s: {} ({} tables in {}/stats, {})",
        study.clip.video,
        out.seconds,
        out.index.display(),
        out.tables.len(),
        a.out.display(),
        out.summary.display()
    );
    Ok(())
}

fn batch_cmd(a: BatchArgs, device: &Device) -> CliResult {
    let config = match &a.config {
        Some(path) => BatchConfig::load(path)?,
        None => BatchConfig::default(),
    };
    let start = Instant::now();
    let r = run_task(&a.manifest, a.task_index, &a.out, &config, device)?;
    if r.skipped {
        println!(
            "task {}: {}/{} already done",
            a.task_index, r.dataset, r.video
        );
    } else {
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|(s, t)| format!("{s} {t:.1} s"))
            .collect();
        println!(
            "task {}: {}/{}: {} ({} Parquet files, {} bytes, {:.1} s) -> {}",
            a.task_index,
            r.dataset,
            r.video,
            steps.join(", "),
            r.files,
            r.bytes,
            start.elapsed().as_secs_f64(),
            a.out.display()
        );
    }
    Ok(())
}

fn stats_cmd(a: StatsArgs) -> CliResult {
    let stats = Stats::new(&a.dir);
    let videos = Stats::scan(&a.dir)?
        .select([col("dataset"), col("video")])
        .unique(None, UniqueKeepStrategy::First)
        .collect()
        .map_err(|e| XincError::InvalidArgument(format!("dataset query: {e}")))?
        .height();
    println!("{videos} videos in {}", a.dir.display());
    println!(
        "per-neuron statistics across videos:\n{}",
        stats.headline_by_layer()?
    );
    println!("motion across videos:\n{}", stats.motion_by_layer()?);
    println!(
        "lowest-variance partition:\n{}",
        stats.lowest_partition_by_layer()?
    );
    Ok(())
}

fn synth_cmd(a: SynthArgs) -> CliResult {
    let params = SynthParams {
        format: a.format,
        frames: a.frames,
        size: a.size,
        seed: a.seed,
        vector_flow: a.vector_flow,
        video: a.video,
    };
    let summary = generate(&params, &a.out)?;
    let names: Vec<&str> = summary.instances.iter().map(|i| i.name.as_str()).collect();
    println!(
        "wrote {:?} clip `{}`: {} frames of {}x{}, {} annotated, moving things [{}] -> {}",
        summary.format,
        summary.video,
        summary.frames,
        summary.size[0],
        summary.size[1],
        summary.annotated_frames,
        names.join(", "),
        summary.root.display()
    );
    Ok(())
}

fn inspect_cmd(a: InspectArgs) -> CliResult {
    let clip = open_clip(
        &a.path,
        &ClipOptions {
            size: a.size,
            video: a.video,
        },
    )?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&clip_json(&clip)).expect("JSON values serialise")
        );
        return Ok(());
    }
    println!(
        "{:?} video {}: {} frames, {} annotated, masks at {}x{}, flow: {}",
        clip.format,
        clip.video,
        clip.frames.len(),
        clip.annotations.len(),
        clip.size[0],
        clip.size[1],
        if clip.flows.is_some() { "yes" } else { "no" }
    );
    for frame in &clip.annotations {
        println!("\nframe {} ({}):", frame.frame_index, frame.image_id);
        println!(
            "  {:<22} {:<16} {:<6} {:>7}  bbox [x, y, w, h]",
            "instance", "category", "kind", "area"
        );
        for s in &frame.segments {
            let kind = match (s.isthing, s.iscrowd) {
                (true, true) => "crowd",
                (true, false) => "thing",
                _ => "stuff",
            };
            println!(
                "  {:<22} {:<16} {:<6} {:>7}  {:?}",
                s.instance, s.category, kind, s.area, s.bbox
            );
        }
    }
    Ok(())
}

fn clip_json(clip: &Clip) -> serde_json::Value {
    let frames: Vec<serde_json::Value> = clip
        .annotations
        .iter()
        .map(|f| {
            let segments: Vec<serde_json::Value> = f
                .segments
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "instance": s.instance, "segment_id": s.segment_id, "category_id": s.category_id,
                        "category": s.category, "isthing": s.isthing, "iscrowd": s.iscrowd,
                        "area": s.area, "bbox": s.bbox,
                    })
                })
                .collect();
            serde_json::json!({"frame_index": f.frame_index, "image_id": f.image_id, "segments": segments})
        })
        .collect();
    serde_json::json!({
        "format": clip.format, "video": clip.video, "frames": clip.frames.len(),
        "size": clip.size, "has_flow": clip.flows.is_some(), "instances": clip.instance_names(),
        "annotated_frames": frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_command_removes_only_what_it_created() {
        let dir = tempfile::tempdir().unwrap();
        // A missing output with missing parents: the topmost created folder goes.
        let out = dir.path().join("a/b/c");
        let guard = OutputGuard::before(&out);
        std::fs::create_dir_all(out.join("ffn")).unwrap();
        std::fs::write(out.join("ffn/config.json"), "{}").unwrap();
        guard.undo();
        assert!(names(dir.path()).is_empty());
        // An existing folder: its old entries stay (replaced files were renamed into place
        // whole), the new ones go.
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("train_state.safetensors"), "old").unwrap();
        let guard = OutputGuard::before(&out);
        std::fs::write(out.join("model.safetensors"), "new").unwrap();
        std::fs::create_dir(out.join("stats")).unwrap();
        std::fs::write(out.join("stats/neurons.parquet"), "new").unwrap();
        guard.undo();
        assert_eq!(names(&out), ["train_state.safetensors"]);
        // An existing file is left alone.
        let file = out.join("train_state.safetensors");
        OutputGuard::before(&file).undo();
        assert!(file.is_file());
    }

    #[test]
    fn numeric_flags_are_bounded() {
        assert_eq!(parse_size("128x256"), Ok([128, 256]));
        assert_eq!(parse_size("8192X1"), Ok([8192, 1]));
        for (bad, expected) in [
            ("12", "`12` is not HxW"),
            ("0x4", "height = 0 is less than 1"),
            ("4x8193", "width = 8193 is more than the limit 8192"),
            ("4x-1", "`-1` is not a whole number"),
            (
                "99999999999999999999x4",
                "height = 99999999999999999999 is more than the limit",
            ),
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(expected), "{bad}: {e}");
        }
        let iters = count("--iters", 1, limits::STEPS);
        assert_eq!(iters("1000"), Ok(1000));
        assert!(iters("1e3")
            .unwrap_err()
            .contains("`1e3` is not a whole number"));
        assert!(iters("0")
            .unwrap_err()
            .contains("--iters = 0 is less than 1"));
        assert_eq!(parse_range("2:5"), Ok(2..5));
        assert!(parse_range("5:5")
            .unwrap_err()
            .contains("A must be less than B"));
        assert!(parse_range("0:20000")
            .unwrap_err()
            .contains("B = 20000 is more than"));
        assert_eq!(learning_rate("9e-4"), Ok(9e-4));
        for bad in ["nan", "inf", "1e400", "0", "-1", "2"] {
            assert!(learning_rate(bad).is_err(), "{bad}");
        }
    }
}
