//! The command line of `xinc`: the clap structs of every subcommand (their numbers parsed and
//! bounded by [`crate::parsers`]), and the library options each one becomes.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use xinc::canvas::{Method, DEFAULT_TILE};
use xinc::data::panoptic::DatasetFormat;
use xinc::data::synth::dataset::SynthParams;
use xinc::demo::DemoOptions;
use xinc::device_check::DeviceCheckOptions;
use xinc::findings::FindingsOptions;
use xinc::models::import::{FfnImport, NervImport};
use xinc::models::limits;
use xinc::models::nerv::NervConfig;
use xinc::train::ffn::FfnTrainParams;
use xinc::train::nerv::{NervFolderJob, NervTrainParams};

use crate::parsers::{count, fraction, learning_rate, parse_range, parse_size, seconds};

/// Explain implicit neural representations: per-neuron contribution maps (XINC).
#[derive(Parser)]
#[command(name = "xinc", version, about)]
pub struct Cli {
    /// Compute device: `cpu`, or `cuda` (needs a build with the `cuda` feature).
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Quantise a NeRV or HNeRV and Huffman-code it as the official training script does: bits
    /// per parameter and per pixel, the quantised PSNR and MS-SSIM, written to
    /// MODEL/compression.json.
    Compress(CompressArgs),
    /// Prune the lowest-ranked kernels of one NeRV layer (by each canvas's contribution, by
    /// weight norm, at random), quantise and code each pruned model: the rate–distortion table.
    Prune(PruneArgs),
    /// Remove NeRV kernels of one layer one at a time (batched partial forward passes, on
    /// `--device`) and measure which canvas predicts what each does: per kernel, per object and
    /// per layer. A budgeted job: a seeded uniform sample when cut short; a killed run resumes.
    Ablate(AblateArgs),
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

impl Command {
    /// The output a command writes (a folder or a file), which it leaves untouched when it fails.
    /// `batch` writes into a statistics folder shared by many tasks and keeps its own protocol
    /// (a task's partition appears complete or not at all).
    pub fn output(&self) -> Option<&Path> {
        match self {
            Command::Train(TrainCommand::Ffn(a)) => Some(&a.common.out),
            Command::Train(TrainCommand::Siren(a)) => Some(&a.common.out),
            Command::Train(TrainCommand::Nerv(a)) => Some(&a.out),
            Command::Import(ImportCommand::Ffn(a) | ImportCommand::Siren(a)) => Some(&a.out),
            Command::Import(ImportCommand::Nerv(a)) => Some(&a.out),
            Command::Canvas(a) => Some(&a.out),
            Command::Render(a) => Some(&a.out),
            Command::Demo(a) => Some(&a.out),
            Command::Report(a) => Some(&a.out),
            Command::Synth(a) => Some(&a.out),
            Command::CheckDevice(a) => Some(&a.out),
            // Writes one file into the model folder, atomically and last.
            Command::Compress(_) => None,
            Command::Prune(a) => Some(&a.out),
            Command::Ablate(a) => Some(&a.out),
            Command::Batch(_) | Command::Stats(_) | Command::Inspect(_) => None,
        }
    }
}

#[derive(Args)]
pub struct CompressArgs {
    /// The model folder (a NeRV or HNeRV); the figures go to its `compression.json`.
    #[arg(long)]
    pub model: PathBuf,
    /// The clip the model represents: a Cityscapes-VPS or VIPSeg root, or a folder of frames.
    #[arg(long, default_value = "data/cityscapes_vps")]
    pub clip: PathBuf,
    /// Video id within a dataset root (default: the first).
    #[arg(long)]
    pub video: Option<String>,
    /// Centre crop HxW applied to folder frames before resizing, as in training.
    #[arg(long, value_parser = parse_size)]
    pub crop: Option<[usize; 2]>,
    /// Bits per weight (official `--quant_model_bit`).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub model_bits: u8,
    /// Bits per decoder-input value (official `--quant_embed_bit`).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub embed_bits: u8,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A NeRV model folder and the clip it represents (`xinc prune`, `xinc ablate`).
#[derive(Args)]
pub struct NervStudyArgs {
    /// The model folder (a NeRV or HNeRV).
    #[arg(long)]
    pub model: PathBuf,
    /// The dataset root of the clip the model represents.
    #[arg(long, default_value = "data/cityscapes_vps")]
    pub data: PathBuf,
    /// Video id within the dataset (default: the first).
    #[arg(long)]
    pub video: Option<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub study: NervStudyArgs,
    /// The layer whose kernels are pruned: `head` or `block<n>`.
    #[arg(long, default_value = "head")]
    pub layer: String,
    /// Fractions of the layer's kernels to prune.
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
          value_parser = fraction)]
    pub fractions: Vec<f64>,
    /// Seed of the random ranking.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub model_bits: u8,
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub embed_bits: u8,
    /// Fine-tune each pruned model this many epochs (pruned kernels held at zero; the official
    /// schedule and loss) before it is coded; 0: none.
    #[arg(long, default_value_t = 0, value_parser = count("--finetune-epochs", 0, limits::STEPS))]
    pub finetune_epochs: usize,
    /// The fine-tuning learning rate.
    #[arg(long, default_value_t = 1e-4, value_parser = learning_rate)]
    pub finetune_lr: f64,
    /// The table, as Parquet.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct AblateArgs {
    #[command(flatten)]
    pub study: NervStudyArgs,
    /// The layer whose kernels are removed: `head` or `block<n>`.
    #[arg(long, default_value = "head")]
    pub layer: String,
    /// The frame whose output is measured (its objects, when it is annotated).
    #[arg(long, default_value_t = 0, value_parser = count("--frame", 0, limits::FRAMES))]
    pub frame: usize,
    /// Remove at most this many kernels, a seeded uniform sample (default: all).
    #[arg(long, value_parser = count("--max-kernels", 1, limits::KERNELS))]
    pub max_kernels: Option<usize>,
    /// Stop after this many seconds (the kernels done so far are a uniform sample).
    #[arg(long, value_parser = seconds)]
    pub budget_s: Option<f64>,
    /// Kernels per batched forward pass.
    #[arg(long, default_value_t = 16, value_parser = count("--batch", 1, limits::KERNELS))]
    pub batch: usize,
    /// Seed of the removal order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The output folder: agreement.parquet, neurons.parquet, objects.parquet. A checkpoint
    /// `OUT.ablation-state.json` beside it lets a killed run resume.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct StatsArgs {
    /// The statistics folder of `xinc batch`.
    #[arg(long)]
    pub dir: PathBuf,
}

#[derive(Args)]
pub struct BatchArgs {
    /// Manifest: one dataset root per line (`ROOT` or `ROOT#VIDEO`, relative to the manifest).
    #[arg(long)]
    pub manifest: PathBuf,
    /// The entry to process (0-based; `$SLURM_ARRAY_TASK_ID` under Slurm).
    #[arg(long)]
    pub task_index: usize,
    /// The statistics folder (hive partitions `dataset=…/layer=…/video=…`).
    #[arg(long)]
    pub out: PathBuf,
    /// `batch.toml`: method, NeRV flags, epochs or an import path, seeds (defaults: the paper's).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckDeviceArgs {
    /// The repository root (bundled clip and checkpoints).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Where to write `device_check.json`.
    #[arg(long, default_value = "out/device-check")]
    pub out: PathBuf,
    /// Timed device runs per layer (after one warm-up).
    #[arg(long, default_value_t = 10, value_parser = count("--repeats", 1, limits::REPEATS))]
    pub repeats: usize,
    /// NeRV frames whose canvas is checked and timed.
    #[arg(long, default_value_t = 3, value_parser = count("--frames", 1, limits::FRAMES))]
    pub frames: usize,
    #[arg(long, default_value_t = 20, value_parser = count("--ffn-iters", 1, limits::STEPS))]
    pub ffn_iters: usize,
    #[arg(long, default_value_t = 2, value_parser = count("--nerv-epochs", 1, limits::STEPS))]
    pub nerv_epochs: usize,
    /// Extra epochs of the net NeRV step timing (a run of 1 + N epochs less a run of 1).
    #[arg(long, default_value_t = 10, value_parser = count("--step-epochs", 1, limits::STEPS))]
    pub step_epochs: usize,
}

#[derive(Args)]
pub struct SynthArgs {
    /// `cityscapes-vps` or `vipseg`.
    #[arg(long, default_value = "cityscapes-vps")]
    pub format: DatasetFormat,
    #[arg(long, default_value_t = 30, value_parser = count("--frames", 1, limits::FRAMES))]
    pub frames: usize,
    /// Frame size HxW.
    #[arg(long, default_value = "256x512", value_parser = parse_size)]
    pub size: [usize; 2],
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Video id (default: 0005 for Cityscapes-VPS, 26_cblDl5vCZnw for VIPSeg).
    #[arg(long)]
    pub video: Option<String>,
    /// Also write the exact flow vectors (flows_uv/*.npy, f32 [H, W, 2]); the 8-bit magnitude
    /// maps (flows/*.npy) are always written.
    #[arg(long)]
    pub vector_flow: bool,
    /// Dataset root to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Dataset root (the folder holding the Cityscapes-VPS or VIPSeg JSON).
    pub path: PathBuf,
    /// Video id (default: the first).
    #[arg(long)]
    pub video: Option<String>,
    /// Working resolution HxW at which masks are read.
    #[arg(long, default_value = "128x256", value_parser = parse_size)]
    pub size: [usize; 2],
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train an FFN on one image (full-batch Adam, MSE, best PSNR kept).
    Ffn(TrainFfnArgs),
    /// Train a SIREN on one image (the official SIREN: sine activations, raw coordinates).
    Siren(TrainSirenArgs),
    /// Train a NeRV on a clip (official schedule; resumable).
    Nerv(TrainNervArgs),
}

#[derive(Args)]
pub struct TrainNervArgs {
    /// A Cityscapes-VPS or VIPSeg root, or a folder of PNG/JPEG frames.
    #[arg(long)]
    pub clip: PathBuf,
    /// Video id within a dataset root (default: the first).
    #[arg(long)]
    pub video: Option<String>,
    /// Centre crop HxW applied to folder frames before resizing (dataset clips use their own).
    #[arg(long, value_parser = parse_size)]
    pub crop: Option<[usize; 2]>,
    /// The official flags that shape the model (frame size = fc_hw × strides).
    #[arg(long, default_value = NervConfig::PAPER_ARGS, allow_hyphen_values = true)]
    pub args: String,
    #[arg(long, default_value_t = 1000, value_parser = count("--epochs", 1, limits::STEPS))]
    pub epochs: usize,
    #[arg(long, default_value_t = 50, value_parser = count("--eval-every", 1, limits::STEPS))]
    pub eval_every: usize,
    #[arg(long, default_value_t = 1e-3, value_parser = learning_rate)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Continue from MODEL_DIR/train_state.safetensors when it exists.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this epoch (the schedule still spans --epochs); resume later with --resume.
    /// A multiple of --eval-every: the training state is written at evaluations.
    #[arg(long, value_parser = count("--until-epoch", 1, limits::STEPS))]
    pub until_epoch: Option<usize>,
    /// Output model folder (also holds the training state).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct TrainFfnArgs {
    #[command(flatten)]
    pub common: TrainImageArgs,
    /// The coordinate encoding: `fourier` (random Fourier features, the paper's) or `nerf`.
    #[arg(long, default_value = "fourier", value_parser = ["fourier", "nerf"])]
    pub encoding: String,
    /// `--encoding nerf`: the number of frequencies (default: the Nyquist rule of the official
    /// code, ⌊log₂(longer side / 4)⌋).
    #[arg(long, value_parser = count("--frequencies", 1, limits::FFN_LAYERS))]
    pub frequencies: Option<usize>,
}

#[derive(Args)]
pub struct TrainSirenArgs {
    #[command(flatten)]
    pub common: TrainImageArgs,
    /// w₀ of the hidden layers' sin(w₀·z).
    #[arg(long, default_value_t = 30.0)]
    pub w0: f64,
    /// w₀ of the first layer.
    #[arg(long, default_value_t = 30.0)]
    pub w0_initial: f64,
}

/// What every image model's training takes.
#[derive(Args)]
pub struct TrainImageArgs {
    /// Input image (PNG or JPEG).
    #[arg(long)]
    pub image: PathBuf,
    /// Working size HxW; the image is resized as the official pipeline does.
    #[arg(long, default_value = "128x256", value_parser = parse_size)]
    pub size: [usize; 2],
    /// Hidden width (and Fourier mapping size).
    #[arg(long, default_value_t = 104, value_parser = count("--width", 1, limits::FFN_WIDTH))]
    pub width: usize,
    #[arg(long, default_value_t = 1000, value_parser = count("--iters", 1, limits::STEPS))]
    pub iters: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 9e-4, value_parser = learning_rate)]
    pub lr: f64,
    /// Evaluate the PSNR every K iterations and keep the best model.
    #[arg(long, default_value_t = 50, value_parser = count("--eval-every", 1, limits::STEPS))]
    pub eval_every: usize,
    /// Output model folder.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Subcommand)]
pub enum ImportCommand {
    /// Import an official FFN (Lightning .ckpt, .pth, or safetensors with the official names).
    Ffn(ImportFfnArgs),
    /// Import an official SIREN (its `exp_config.yaml` says `model_name: siren`).
    Siren(ImportFfnArgs),
    /// Import an official NeRV (`model_best.pth`, or safetensors with the official names).
    Nerv(ImportNervArgs),
}

#[derive(Args)]
pub struct ImportNervArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Number of frames T the model was trained on (frame i is decoded from t = i / T).
    #[arg(long, value_parser = count("--frames", 1, limits::FRAMES))]
    pub frames: usize,
    /// The official training flags that shape the model (HNeRV when they carry `--enc_strds`).
    #[arg(long, default_value = NervConfig::PAPER_ARGS, allow_hyphen_values = true)]
    pub args: String,
    /// HNeRV: the clip it was trained on (dataset root or folder of frames): the model folder
    /// keeps each frame's content embedding.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// HNeRV: the video of a dataset root that holds several.
    #[arg(long)]
    pub video: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ImportFfnArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The official `exp_config.yaml` (architecture and data shape). Without it the architecture
    /// is inferred from the tensor shapes and the image size comes from `--size`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = "128x256", value_parser = parse_size)]
    pub size: [usize; 2],
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct CanvasArgs {
    /// Model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Comma-separated layers (default: all of the method). FFN: layer1, layer2, layer3,
    /// layer3_rgb (and, with `--method conservative`, layer1_rgb, layer2_rgb). NeRV: head,
    /// block3, block3_pre_gelu, block2, block2_pre_gelu, block1, block1_pre_gelu (and, with
    /// `--method conservative`, the per-output-channel maps block3_rgb, block2_rgb, block1_rgb,
    /// `[Cin, Cout, 3, H, W]`).
    #[arg(long)]
    pub layers: Option<String>,
    /// NeRV: the frame to explain (t = frame / T).
    #[arg(long, default_value_t = 0, value_parser = count("--frame", 0, limits::FRAMES))]
    pub frame: usize,
    /// NeRV: restrict the input-channel axis to A:B (end exclusive).
    #[arg(long, value_parser = parse_range)]
    pub in_channels: Option<std::ops::Range<usize>>,
    /// Write per-layer reductions (sum_hw, abssum_hw, sum_neurons) instead of the maps.
    #[arg(long)]
    pub summary: bool,
    /// Pixels per streamed tile.
    #[arg(long, default_value_t = DEFAULT_TILE, value_parser = count("--tile", 1, limits::TILE))]
    pub tile: usize,
    /// `official` (the paper's code, the default) or `conservative` (every layer's maps sum
    /// exactly to the output: contributions carried through the real downstream network).
    #[arg(long, default_value = "official")]
    pub method: Method,
}

#[derive(Args)]
pub struct RenderArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Train on this image instead of the bundled clip's first frame.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Dataset root whose first frame is learned (a generated scene is used when it is absent).
    #[arg(long, default_value = "data/cityscapes_vps")]
    pub clip: PathBuf,
    #[arg(long, default_value = "128x256", value_parser = parse_size)]
    pub size: [usize; 2],
    #[arg(long, default_value_t = 104, value_parser = count("--width", 1, limits::FFN_WIDTH))]
    pub width: usize,
    #[arg(long, default_value_t = 1000, value_parser = count("--iters", 1, limits::STEPS))]
    pub iters: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// NeRV model folder to explain (the bundled checkpoint); when absent, a NeRV is trained on
    /// `--clip` for `--nerv-epochs` epochs first.
    #[arg(long, default_value = "checkpoints/nerv_cityscapes_vps_0005")]
    pub nerv: PathBuf,
    #[arg(long, default_value_t = 20, value_parser = count("--nerv-epochs", 1, limits::STEPS))]
    pub nerv_epochs: usize,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Model folders (an FFN of the clip's first frame and/or a NeRV of the clip); repeat the flag.
    #[arg(long = "model", default_values = ["checkpoints/ffn_cityscapes_vps_0005", "checkpoints/nerv_cityscapes_vps_0005"])]
    pub models: Vec<PathBuf>,
    /// Dataset root of the clip (Cityscapes-VPS or VIPSeg layout).
    #[arg(long, default_value = "data/cityscapes_vps")]
    pub data: PathBuf,
    /// Video id, when the dataset root holds several.
    #[arg(long)]
    pub video: Option<String>,
    /// Output folder.
    #[arg(long, default_value = "out/report")]
    pub out: PathBuf,
    /// Seed of every k-means.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Neuron groups per layer (a layer with fewer neurons is skipped).
    #[arg(long, default_value_t = 6, value_parser = count("--groups", 1, limits::GROUPS))]
    pub groups: usize,
    /// Frames t ≥ 1 whose contribution change (t−1 → t) is compared with the flow (frames beyond
    /// the clip are skipped).
    #[arg(long, value_delimiter = ',', default_value = "1,10",
          value_parser = count("--motion-frames", 1, limits::FRAMES))]
    pub motion_frames: Vec<usize>,
    /// The canvas every section analyses: `official` (the paper's code, the default) or
    /// `conservative` (exact, output-conserving).
    #[arg(long, default_value = "official")]
    pub method: Method,
    /// Skip the section that repeats the headline analyses under the other method and
    /// compares the paper's conclusions under both.
    #[arg(long)]
    pub no_compare: bool,
    /// Analyse at most this many of the NeRV's annotated frames, evenly spaced (default: all).
    #[arg(long, value_parser = count("--max-frames", 1, limits::FRAMES))]
    pub max_frames: Option<usize>,
    /// Kernels of the NeRV's last block removed in the ablation section, a seeded uniform
    /// sample (the head's and the FFN's are all removed); 0 skips the ablation.
    #[arg(long, default_value_t = 256, value_parser = count("--ablation-kernels", 0, limits::KERNELS))]
    pub ablation_kernels: usize,
    /// Fractions of the NeRV head pruned (by contribution, weight norm, at random) and coded
    /// for the rate–distortion section.
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,0.3,0.5,0.7,0.9",
          value_parser = fraction)]
    pub pruning_fractions: Vec<f64>,
    /// Skip the pruning section.
    #[arg(long)]
    pub no_pruning: bool,
}

impl From<&TrainImageArgs> for FfnTrainParams {
    fn from(a: &TrainImageArgs) -> Self {
        FfnTrainParams {
            iters: a.iters,
            lr: a.lr,
            eval_every: a.eval_every,
            seed: a.seed,
            ..FfnTrainParams::default()
        }
    }
}

impl From<TrainNervArgs> for NervFolderJob {
    fn from(a: TrainNervArgs) -> Self {
        NervFolderJob {
            clip: a.clip,
            video: a.video,
            crop: a.crop,
            args: a.args,
            params: NervTrainParams {
                epochs: a.epochs,
                eval_every: a.eval_every,
                lr: a.lr,
                seed: a.seed,
                until_epoch: a.until_epoch,
                ..NervTrainParams::default()
            },
            out: a.out,
            resume: a.resume,
        }
    }
}

impl From<ImportFfnArgs> for FfnImport {
    fn from(a: ImportFfnArgs) -> Self {
        FfnImport {
            checkpoint: a.checkpoint,
            config: a.config,
            size: a.size,
        }
    }
}

impl From<ImportNervArgs> for NervImport {
    fn from(a: ImportNervArgs) -> Self {
        NervImport {
            checkpoint: a.checkpoint,
            args: a.args,
            frames: a.frames,
            clip: a.clip,
            video: a.video,
        }
    }
}

impl From<DemoArgs> for DemoOptions {
    fn from(a: DemoArgs) -> Self {
        DemoOptions {
            out: a.out,
            image: a.image,
            clip: a.clip,
            size: a.size,
            width: a.width,
            iters: a.iters,
            seed: a.seed,
            nerv: a.nerv,
            nerv_epochs: a.nerv_epochs,
        }
    }
}

impl From<&ReportArgs> for FindingsOptions {
    fn from(a: &ReportArgs) -> Self {
        FindingsOptions {
            method: a.method,
            seed: a.seed,
            groups: a.groups,
            motion_frames: a.motion_frames.clone(),
            max_frames: a.max_frames,
            compare_methods: !a.no_compare,
            ablation: a.ablation_kernels > 0,
            ablation_kernels: a.ablation_kernels,
            pruning: match a.no_pruning {
                true => Vec::new(),
                false => a.pruning_fractions.clone(),
            },
        }
    }
}

impl From<&CheckDeviceArgs> for DeviceCheckOptions {
    fn from(a: &CheckDeviceArgs) -> Self {
        DeviceCheckOptions {
            repeats: a.repeats,
            frames: a.frames,
            ffn_iters: a.ffn_iters,
            nerv_epochs: a.nerv_epochs,
            step_epochs: a.step_epochs,
            ..DeviceCheckOptions::default()
        }
    }
}

impl From<&SynthArgs> for SynthParams {
    fn from(a: &SynthArgs) -> Self {
        SynthParams {
            format: a.format,
            frames: a.frames,
            size: a.size,
            seed: a.seed,
            vector_flow: a.vector_flow,
            video: a.video.clone(),
        }
    }
}
