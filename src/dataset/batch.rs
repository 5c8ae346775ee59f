//! `xinc batch`: one manifest entry (one video) per task, idempotent, for Slurm array jobs.
//!
//! A task trains (or imports) the NeRV of its video, runs every analysis on it
//! ([`crate::findings`]: tables only, nothing drawn), and writes the tables as hive-partitioned
//! Parquet:
//!
//! ```text
//! STATS/dataset=<name>/layer=<layer>/video=<id>/part-0.parquet     per-neuron statistics
//! STATS/dataset=<name>/layer=<layer>/video=<id>/<table>.parquet    the other per-layer tables
//! STATS/dataset=<name>/layer=all/video=<id>/<table>.parquet        tables without a layer
//! STATS/_models/dataset=<name>/video=<id>/nerv/                    the model and its training state
//! STATS/_done/dataset=<name>/video=<id>.json                       the task's record, written last
//! ```
//!
//! Every file is written under a temporary name and renamed, so a killed task leaves no partial
//! partition visible. A task whose record exists is skipped; a task that was killed resumes its
//! training from the last written state and rewrites its partitions (same names, no duplicates).
//!
//! Everything a task reads is checked before it writes anything: the manifest and `batch.toml`
//! (regular files within [`FileLimit::CONFIG`]), the names that become path components under
//! `--out` (the `dataset` name, the video id of a manifest entry and of the clip: no separator,
//! no `..`, nothing absolute), and the clip itself (opened whole, then every frame and flow file
//! read once). So a task that fails on its inputs leaves nothing under `--out`; only the model
//! folder under `_models`, the resumable state of a training, may outlive a task that fails
//! later.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::write_parquet;
use crate::canvas::Method;
use crate::error::{Result, XincError};
use crate::findings::{findings, FindingsOptions};
use crate::io::files::{check_component, component_problem, read_text, FileLimit};
use crate::models::import::{import_nerv, NervImport};
use crate::models::nerv::NervConfig;
use crate::models::ModelDir;
use crate::study::Study;
use crate::train::nerv::{train_nerv_folder, NervFolderJob, NervTrainParams};

/// What every task of a batch does (`batch.toml`; every field has a default).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// The `dataset=` partition (default: the folder name of the entry's dataset root).
    pub dataset: Option<String>,
    /// `official` or `conservative`.
    pub method: String,
    pub seed: u64,
    pub groups: usize,
    pub motion_frames: Vec<usize>,
    /// Analyse at most this many annotated frames per video, evenly spaced (default: all).
    pub max_frames: Option<usize>,
    /// Kernels of the NeRV's last block removed in the ablation (tables `ablation`,
    /// `ablation_objects`; the head's kernels are all removed); 0 turns the ablation off.
    pub ablation_kernels: usize,
    /// Fractions of the NeRV head pruned and coded (table `pruning`); empty: no pruning.
    pub pruning: Vec<f64>,
    pub nerv: NervJob,
}

/// How the NeRV of a video is made.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NervJob {
    /// The official training flags (architecture and frame size).
    pub args: String,
    pub epochs: usize,
    pub eval_every: usize,
    pub seed: u64,
    /// Import instead of training: a checkpoint path in which `{video}` is replaced by the
    /// video id (`model_best.pth` or safetensors with the official names).
    pub import: Option<String>,
    /// Use an existing xinc model folder instead (`{video}` replaced, as for `import`).
    pub model: Option<String>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            dataset: None,
            method: "official".into(),
            seed: 0,
            groups: 6,
            motion_frames: vec![1, 10],
            max_frames: None,
            ablation_kernels: FindingsOptions::default().ablation_kernels,
            pruning: FindingsOptions::default().pruning,
            nerv: NervJob::default(),
        }
    }
}

impl Default for NervJob {
    fn default() -> Self {
        NervJob {
            args: NervConfig::PAPER_ARGS.into(),
            epochs: 1000,
            eval_every: 50,
            seed: 1,
            import: None,
            model: None,
        }
    }
}

impl BatchConfig {
    /// Reads a TOML file (a regular file within [`FileLimit::CONFIG`]); unknown keys, bad values
    /// and a `dataset` name that cannot be a folder name are `Config` errors naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_text(path, &FileLimit::CONFIG)?;
        let config: BatchConfig =
            toml::from_str(&text).map_err(|e| XincError::config(path, e.to_string()))?;
        config
            .method()
            .map_err(|e| XincError::config(path, e.to_string()))?;
        if let Some(f) = config.pruning.iter().find(|f| !(0.0..=1.0).contains(*f)) {
            return Err(XincError::config(
                path,
                format!("pruning: {f} is not a fraction in [0, 1]"),
            ));
        }
        if config.pruning.len() > 101 {
            return Err(XincError::config(
                path,
                String::from("pruning: more than 101 fractions"),
            ));
        }
        if let Some(name) = &config.dataset {
            if let Some(why) = component_problem(name) {
                return Err(XincError::config(
                    path,
                    format!("dataset {name:?} cannot name a folder under --out: {why}"),
                ));
            }
        }
        Ok(config)
    }

    fn method(&self) -> Result<Method> {
        self.method.parse()
    }
}

/// One manifest entry: a dataset root (either format) and optionally a video id, written
/// `ROOT` or `ROOT#VIDEO`; relative roots are relative to the manifest's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    pub root: PathBuf,
    pub video: Option<String>,
}

/// The entries of a manifest file (a regular file within [`FileLimit::CONFIG`]): one per
/// non-empty line, `#` at the start of a line for comments. A `VIDEO` that cannot be a folder
/// name (it becomes `video=VIDEO` under `--out`) is a `Config` error naming the line.
pub(crate) fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>> {
    let text = read_text(path, &FileLimit::CONFIG)?;
    let base = path.parent().unwrap_or(Path::new("."));
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(line, l)| {
            let (root, video) = match l.split_once('#') {
                Some((r, v)) => (r.trim(), Some(v.trim().to_string())),
                None => (l, None),
            };
            if let Some((v, why)) = video
                .as_deref()
                .and_then(|v| Some((v, component_problem(v)?)))
            {
                return Err(XincError::config(
                    path,
                    format!("line {line}: video {v:?} cannot name a folder: {why}"),
                ));
            }
            Ok(ManifestEntry {
                root: base.join(root),
                video,
            })
        })
        .collect()
}

/// What one task did, also written as its `_done` record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    pub dataset: String,
    pub video: String,
    /// Seconds per step (model, analyses, writing).
    pub steps: Vec<(String, f64)>,
    /// Parquet files written and their total bytes.
    pub files: usize,
    pub bytes: u64,
    /// True when the task found its record and did nothing.
    pub skipped: bool,
}

/// Runs task `index` of `manifest` into `out`.
pub fn run_task(
    manifest: &Path,
    index: usize,
    out: &Path,
    config: &BatchConfig,
    device: &Device,
) -> Result<TaskRecord> {
    let entries = read_manifest(manifest)?;
    let entry = entries.get(index).ok_or_else(|| {
        XincError::InvalidArgument(format!(
            "task {index} is outside the {} entries of {}",
            entries.len(),
            manifest.display()
        ))
    })?;
    let method = config.method()?;
    let probe = NervConfig::from_official_args(&config.nerv.args, 1)?;
    let clip = crate::data::clip::open_clip(
        &entry.root,
        &crate::data::clip::ClipOptions {
            size: probe.frame_size(),
            video: entry.video.clone(),
        },
    )?;
    let dataset = match &config.dataset {
        Some(d) => d.clone(),
        None => folder_name(&entry.root),
    };
    check_component("dataset name", &dataset)?;
    let video = clip.video.clone();
    check_component("video id", &video)?;
    let done = out
        .join("_done")
        .join(format!("dataset={dataset}"))
        .join(format!("video={video}.json"));
    if let Ok(text) = read_text(&done, &FileLimit::CONFIG) {
        if let Ok(mut record) = serde_json::from_str::<TaskRecord>(&text) {
            tracing::info!("batch: {dataset}/{video} already done ({})", done.display());
            record.skipped = true;
            return Ok(record);
        }
    }
    check_clip_files(&clip)?;
    let mut steps = Vec::new();
    let mut timed = |what: &str, start: Instant| {
        let s = start.elapsed().as_secs_f64();
        tracing::info!("batch: {dataset}/{video}: {what} in {s:.1} s");
        steps.push((what.to_string(), s));
    };
    let start = Instant::now();
    let model_dir = match &config.nerv.model {
        Some(template) => PathBuf::from(template.replace("{video}", &video)),
        None => {
            let dir = out
                .join("_models")
                .join(format!("dataset={dataset}"))
                .join(format!("video={video}"))
                .join("nerv");
            nerv_model(entry, &video, &config.nerv, &dir, clip.frames.len(), device)?;
            dir
        }
    };
    timed("model", start);

    let start = Instant::now();
    let study = Study::open(&entry.root, &[model_dir], entry.video.as_deref(), device)?;
    let opts = FindingsOptions {
        method,
        seed: config.seed,
        groups: config.groups,
        motion_frames: config.motion_frames.clone(),
        max_frames: config.max_frames,
        compare_methods: false,
        ablation: config.ablation_kernels > 0,
        ablation_kernels: config.ablation_kernels,
        pruning: config.pruning.clone(),
    };
    let tables = findings(&study, &opts)?.tables;
    timed("analyses", start);

    let start = Instant::now();
    let (mut files, mut bytes) = (0, 0);
    let partition = |layer: &str| {
        out.join(format!("dataset={dataset}"))
            .join(format!("layer={layer}"))
            .join(format!("video={video}"))
    };
    for (name, table) in tables {
        for (layer, part) in split_by_layer(&table)? {
            let file = if name == "neurons" {
                "part-0".to_string()
            } else {
                name.clone()
            };
            let mut part = single_precision(part)?;
            let dir = partition(&layer);
            remove_temporaries(&dir)?;
            let path = dir.join(format!("{file}.parquet"));
            write_parquet(&mut part, &path)?;
            files += 1;
            bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
        }
    }
    timed("parquet", start);
    let record = TaskRecord {
        dataset,
        video,
        steps,
        files,
        bytes,
        skipped: false,
    };
    crate::io::save_json(&done, &record)?;
    Ok(record)
}

/// Reads every frame and flow file of the clip once, so that a broken one fails the task before
/// it writes anything (training or importing writes the model folder before the analyses read
/// the clip).
fn check_clip_files(clip: &crate::data::panoptic::Clip) -> Result<()> {
    for i in 0..clip.frames.len() {
        clip.frame_nerv(i)?;
    }
    for i in 0..clip.flows.as_ref().map_or(0, Vec::len) {
        clip.flow(i)?;
    }
    Ok(())
}

/// Trains the NeRV of a video into `dir` (resuming a killed run), or imports it; nothing when
/// the folder already holds a finished model.
fn nerv_model(
    entry: &ManifestEntry,
    video: &str,
    job: &NervJob,
    dir: &Path,
    frames: usize,
    device: &Device,
) -> Result<()> {
    let model = ModelDir::new(dir);
    if model.config().is_ok() {
        return Ok(());
    }
    match &job.import {
        Some(template) => {
            let import = NervImport {
                checkpoint: PathBuf::from(template.replace("{video}", video)),
                args: job.args.clone(),
                frames,
                clip: Some(entry.root.clone()),
                video: Some(video.to_string()),
            };
            import_nerv(&import, &model, device)?;
            Ok(())
        }
        None => {
            let params = NervTrainParams {
                epochs: job.epochs,
                eval_every: job.eval_every,
                seed: job.seed,
                progress: false,
                ..NervTrainParams::default()
            };
            let training = NervFolderJob {
                clip: entry.root.clone(),
                video: entry.video.clone(),
                args: job.args.clone(),
                params,
                out: dir.to_path_buf(),
                resume: dir.join("train_state.safetensors").exists(),
                ..NervFolderJob::default()
            };
            train_nerv_folder(&training, device)?;
            Ok(())
        }
    }
}

/// The table with its f64 columns stored as f32: the statistics need no more, and the dataset
/// store halves.
fn single_precision(table: DataFrame) -> Result<DataFrame> {
    let casts: Vec<Expr> = table
        .schema()
        .iter()
        .filter(|(_, dt)| **dt == DataType::Float64)
        .map(|(name, _)| col(name.clone()).cast(DataType::Float32))
        .collect();
    table
        .lazy()
        .with_columns(casts)
        .collect()
        .map_err(|e| XincError::InvalidArgument(format!("partitioning a table: {e}")))
}

/// Removes the temporary files (`.<name>.<pid>.tmp`, see [`crate::io::write_atomic`]) that a
/// killed task left in `dir`.
fn remove_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let path = entry.path();
            tracing::info!("batch: removing {} left by a killed task", path.display());
            std::fs::remove_file(&path).map_err(|e| XincError::io(&path, e))?;
        }
    }
    Ok(())
}

fn folder_name(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    path.file_name()
        .map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned())
}

/// Splits a table by its `layer` column (dropped: it is the partition's key), or keeps it whole
/// under `all`.
fn split_by_layer(table: &DataFrame) -> Result<Vec<(String, DataFrame)>> {
    let err = |e: PolarsError| XincError::InvalidArgument(format!("partitioning a table: {e}"));
    if table.column("layer").is_err() {
        return Ok(vec![("all".into(), table.clone())]);
    }
    let layers = table.column("layer").map_err(err)?.str().map_err(err)?;
    let mut names: Vec<String> = (0..layers.len())
        .filter_map(|i| layers.get(i).map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|l| {
            let part = table
                .clone()
                .lazy()
                .filter(col("layer").eq(lit(l.clone())))
                .drop(cols(["layer"]))
                .collect()
                .map_err(err)?;
            Ok((l, part))
        })
        .collect()
}
