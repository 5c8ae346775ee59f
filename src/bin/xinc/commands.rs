//! The handlers of the subcommands (all but `canvas`): each turns its arguments into the
//! library's options, calls the library and prints a line or a table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use image::codecs::png::CompressionType;
use xinc::analysis::ablation::{agreement_table, AblationBudget, Checkpoint};
use xinc::analysis::write_parquet;
use xinc::compress::{compress_nerv, CompressOptions, Compression};
use xinc::data::clip::{open_clip, ClipOptions};
use xinc::data::frames::nerv_frames;
use xinc::data::image::{load_rgb_resized, write_png};
use xinc::data::panoptic::Clip;
use xinc::data::synth::dataset::generate;
use xinc::dataset::{run_task, BatchConfig, Stats};
use xinc::demo::run_demo;
use xinc::device_check::{check_device, DeviceCheckReport};
use xinc::models::ffn::{FfnConfig, HiddenActivation, PosEncoding};
use xinc::models::import::{import_ffn_as, import_nerv, FfnImport, NervImport};
use xinc::models::nerv::Nerv;
use xinc::models::ModelDir;
use xinc::report::{write_report, ReportOptions};
use xinc::study::Study;
use xinc::train::ffn::{train_ffn, FfnTrainParams};
use xinc::train::nerv::{train_nerv_folder, NervFolderJob, NervTrainParams};
use xinc::XincError;

use crate::args::{
    AblateArgs, BatchArgs, CheckDeviceArgs, CompressArgs, DemoArgs, ImportFfnArgs, ImportNervArgs,
    InspectArgs, NervStudyArgs, PruneArgs, RenderArgs, ReportArgs, StatsArgs, SynthArgs,
    TrainFfnArgs, TrainImageArgs, TrainNervArgs, TrainSirenArgs,
};
use crate::parsers::ffn_flag;
use crate::{fail, CliResult};

pub fn train_ffn_cmd(a: TrainFfnArgs, device: &Device) -> CliResult {
    let [h, w] = a.common.size;
    let encoding = match a.encoding.as_str() {
        "nerf" => PosEncoding::Nerf {
            num_frequencies: a
                .frequencies
                .unwrap_or_else(|| PosEncoding::nyquist_frequencies(h.max(w))),
        },
        _ => PosEncoding::Fourier,
    };
    let config = FfnConfig {
        encoding,
        ..FfnConfig::with_width(a.common.width, h, w)
    };
    train_image_model(config, &a.common, device)
}

pub fn train_siren_cmd(a: TrainSirenArgs, device: &Device) -> CliResult {
    let [h, w] = a.common.size;
    let config = FfnConfig {
        activation: HiddenActivation::Sine {
            w0: a.w0,
            w0_initial: a.w0_initial,
        },
        ..FfnConfig::siren(a.common.width, h, w)
    };
    train_image_model(config, &a.common, device)
}

/// Trains the image model `config` as `a` says and saves it.
fn train_image_model(config: FfnConfig, a: &TrainImageArgs, device: &Device) -> CliResult {
    let [h, w] = a.size;
    config.check(&ffn_flag)?;
    let target = load_rgb_resized(&a.image, h, w)?;
    let params = FfnTrainParams::from(a);
    let (model, report) = train_ffn(config, &target, &params, device)?;
    let record = report.record(&params, &a.image.display().to_string());
    ModelDir::new(&a.out).save_trained(&model, record)?;
    println!("{}", report.summary(model.config(), &a.out));
    Ok(())
}

pub fn train_nerv_cmd(a: TrainNervArgs, device: &Device) -> CliResult {
    let job = NervFolderJob::from(a);
    let (model, report) = train_nerv_folder(&job, device)?;
    println!("{}", report.summary(model.config(), &job.out));
    // As the official script ends a run: the quantised, Huffman-coded model.
    let clip = (job.clip.as_path(), job.video.clone(), job.crop);
    let (figures, path) =
        compress_into(&model, clip, &CompressOptions::default(), &job.out, device)?;
    println!("{} -> {}", figures.summary(), path.display());
    Ok(())
}

/// The compression figures of `model` on its clip (root, video, crop), written to `dir`.
fn compress_into(
    model: &Nerv,
    (clip, video, crop): (&Path, Option<String>, Option<[usize; 2]>),
    opts: &CompressOptions,
    dir: &Path,
    device: &Device,
) -> CliResult<(Compression, PathBuf)> {
    let frames = nerv_frames(clip, model.config().frame_size(), video, crop)?;
    let (_, figures) = compress_nerv(model, &frames, opts, device)?;
    let path = figures.save(dir)?;
    Ok((figures, path))
}

pub fn compress_cmd(a: CompressArgs, device: &Device) -> CliResult {
    let (model, _) = ModelDir::new(&a.model).load_nerv(device)?;
    let opts = CompressOptions {
        model_bits: a.model_bits,
        embed_bits: a.embed_bits,
    };
    let clip = (a.clip.as_path(), a.video.clone(), a.crop);
    let (figures, path) = compress_into(&model, clip, &opts, &a.model, device)?;
    match a.json {
        true => {
            let text = serde_json::to_string(&figures)
                .map_err(|e| XincError::InvalidArgument(e.to_string()))?;
            println!("{text}");
        }
        false => println!("{} -> {}", figures.summary(), path.display()),
    }
    Ok(())
}

/// `xinc import ffn|siren`: `family` is the verb's model name, which the config must carry.
pub fn import_cmd(a: ImportFfnArgs, family: &'static str, device: &Device) -> CliResult {
    let out = ModelDir::new(&a.out);
    let job = FfnImport::from(a);
    let model = import_ffn_as(&job, Some(family), &out, device)?;
    let (shape, from) = (model.config().data_shape, job.checkpoint.display());
    println!(
        "imported {} {shape:?} from {from} -> {}",
        model.config().model_name(),
        out.path.display()
    );
    Ok(())
}

pub fn import_nerv_cmd(a: ImportNervArgs, device: &Device) -> CliResult {
    let out = ModelDir::new(&a.out);
    let job = NervImport::from(a);
    let config = import_nerv(&job, &out, device)?.config().clone();
    println!(
        "imported NeRV ({} params, {} frames of {:?}) from {} -> {}",
        config.num_params(),
        config.frames,
        config.frame_size(),
        job.checkpoint.display(),
        out.path.display()
    );
    Ok(())
}

/// The study of `xinc prune` and `xinc ablate`: one NeRV and its clip.
fn open_nerv_study(a: &NervStudyArgs, device: &Device) -> CliResult<Study> {
    Ok(Study::open(
        &a.data,
        std::slice::from_ref(&a.model),
        a.video.as_deref(),
        device,
    )?)
}

pub fn prune_cmd(a: PruneArgs, device: &Device) -> CliResult {
    let study = open_nerv_study(&a.study, device)?;
    let opts = CompressOptions {
        model_bits: a.model_bits,
        embed_bits: a.embed_bits,
    };
    let finetune = NervTrainParams {
        epochs: a.finetune_epochs,
        eval_every: a.finetune_epochs.max(1),
        lr: a.finetune_lr,
        progress: false,
        ..Default::default()
    };
    let finetune = (a.finetune_epochs > 0).then_some(&finetune);
    let mut table = study.nerv_pruning(&a.layer, &a.fractions, a.seed, (&opts, finetune))?;
    write_parquet(&mut table, &a.out)?;
    println!("{table}\n-> {}", a.out.display());
    Ok(())
}

pub fn ablate_cmd(a: AblateArgs, device: &Device) -> CliResult {
    let study = open_nerv_study(&a.study, device)?;
    let budget = AblationBudget {
        max_neurons: a.max_kernels,
        seconds: a.budget_s,
        batch: a.batch,
        seed: a.seed,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    budget.check()?;
    let key = format!(
        "model {}, clip {} video {}, layer {}, frame {}, seed {}",
        a.study.model.display(),
        a.study.data.display(),
        study.clip.video,
        a.layer,
        a.frame,
        a.seed
    );
    let checkpoint = Checkpoint::beside(&a.out, key);
    let layer = study.nerv_ablation(&a.layer, a.frame, &budget, Some(&checkpoint))?;
    let mut agreement = agreement_table(std::slice::from_ref(&layer))?;
    write_parquet(&mut agreement, &a.out.join("agreement.parquet"))?;
    write_parquet(&mut layer.neurons_table()?, &a.out.join("neurons.parquet"))?;
    write_parquet(&mut layer.objects_table()?, &a.out.join("objects.parquet"))?;
    checkpoint.remove()?;
    println!(
        "{} of {} kernels of {} removed (PSNR {:.2} dB)\n{agreement}\n-> {}",
        layer.removals.len(),
        layer.neurons,
        layer.layer,
        layer.psnr,
        a.out.display()
    );
    Ok(())
}

pub fn render_cmd(a: RenderArgs, device: &Device) -> CliResult {
    let (model, _) = ModelDir::new(&a.model).load_ffn(device)?;
    write_png(
        &a.out,
        &model.render(device)?.to_rgb8(),
        CompressionType::Fast,
    )?;
    println!("rendered -> {}", a.out.display());
    Ok(())
}

pub fn demo_cmd(a: DemoArgs, device: &Device) -> CliResult {
    let [h, w] = a.size;
    FfnConfig::with_width(a.width, h, w).check(&ffn_flag)?;
    print!("{}", run_demo(&a.into(), device)?);
    Ok(())
}

pub fn report_cmd(a: ReportArgs, device: &Device) -> CliResult {
    let study = Study::open(&a.data, &a.models, a.video.as_deref(), device)?;
    let opts = ReportOptions {
        out: a.out.clone(),
        findings: (&a).into(),
    };
    let out = write_report(&study, &opts)?;
    for c in &out.headlines.claims {
        let verdict = c.verdict.text();
        println!(
            "[{verdict}] {}\n    criterion: {}",
            c.statement, c.criterion
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

pub fn check_device_cmd(a: CheckDeviceArgs, device: &Device) -> CliResult {
    let report = check_device(&a.repo, device, &(&a).into())?;
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| XincError::InvalidArgument(e.to_string()))?;
    let path = a.out.join("device_check.json");
    xinc::io::write_atomic(&path, |w| w.write_all(&json))?;
    print_device_check(&report, device);
    if !report.pass {
        return fail("device check FAILED: see the rows marked FAIL".to_string());
    }
    println!("device check passed -> {}", path.display());
    Ok(())
}

/// The device check's table: one row per layer and frame, then one line per trainer.
fn print_device_check(report: &DeviceCheckReport, device: &Device) {
    let mark = |pass: bool| if pass { "" } else { "  FAIL" };
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
            mark(l.pass)
        );
    }
    for t in &report.training {
        println!(
            "train {}: {:.3} ms/step on the CPU, {:.3} ms/step on {:?}; losses cpu {:?} device {:?}; rel diff {:.2e}{}",
            t.model, t.cpu_ms_per_step, t.device_ms_per_step, device, t.cpu_loss, t.device_loss, t.max_rel_diff,
            mark(t.pass)
        );
        if let (Some(c), Some(d)) = (t.cpu_net_ms_per_step, t.device_net_ms_per_step) {
            println!(
                "train {} net step (long run less short run): {c:.3} ms on the CPU, {d:.3} ms on {device:?}",
                t.model
            );
        }
    }
}

pub fn batch_cmd(a: BatchArgs, device: &Device) -> CliResult {
    let config = match &a.config {
        Some(path) => BatchConfig::load(path)?,
        None => BatchConfig::default(),
    };
    let start = Instant::now();
    let r = run_task(&a.manifest, a.task_index, &a.out, &config, device)?;
    let task = format!("task {}: {}/{}", a.task_index, r.dataset, r.video);
    if r.skipped {
        println!("{task} already done");
        return Ok(());
    }
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|(s, t)| format!("{s} {t:.1} s"))
        .collect();
    println!(
        "{task}: {} ({} Parquet files, {} bytes, {:.1} s) -> {}",
        steps.join(", "),
        r.files,
        r.bytes,
        start.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

pub fn stats_cmd(a: StatsArgs) -> CliResult {
    let stats = Stats::new(&a.dir);
    println!("{} videos in {}", stats.video_count()?, a.dir.display());
    let headline = stats.headline_by_layer()?;
    println!("per-neuron statistics across videos:\n{headline}");
    println!("motion across videos:\n{}", stats.motion_by_layer()?);
    let lowest = stats.lowest_partition_by_layer()?;
    println!("lowest-variance partition:\n{lowest}");
    Ok(())
}

pub fn synth_cmd(a: SynthArgs) -> CliResult {
    let summary = generate(&(&a).into(), &a.out)?;
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

pub fn inspect_cmd(a: InspectArgs) -> CliResult {
    let opts = ClipOptions {
        size: a.size,
        video: a.video,
    };
    let clip = open_clip(&a.path, &opts)?;
    if a.json {
        println!("{}", clip_json(&clip)?);
    } else {
        print_clip(&clip);
    }
    Ok(())
}

/// The clip as JSON (its serialisation and its instance names), keys sorted.
fn clip_json(clip: &Clip) -> CliResult<String> {
    let json_error = |e: serde_json::Error| XincError::InvalidArgument(e.to_string());
    let mut json = serde_json::to_value(clip).map_err(json_error)?;
    json["instances"] = clip.instance_names().into();
    serde_json::to_string_pretty(&json).map_err(json_error)
}

/// The clip as tables: one line about the clip, then each annotated frame's segments.
fn print_clip(clip: &Clip) {
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
}
