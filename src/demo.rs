//! The demo, `xinc demo` (the earlier main job): an FFN trained on one frame, its full canvas
//! and a grid of its strongest maps, then the canvas summary of a NeRV's frame 0.
//!
//! [`run_demo`] writes everything into [`DemoOptions::out`] and returns a [`DemoReport`] of the
//! numbers, which prints as the command's output. It sits at the top of the layering, beside the
//! report: it trains, computes canvases and draws a map grid.
//!
//! ```text
//! OUT/input.png                          the learned image
//! OUT/ffn/                               the trained FFN (a model folder)
//! OUT/reconstruction.png                 its rendering
//! OUT/canvas.safetensors                 its full official canvas (every layer)
//! OUT/canvas_summary.safetensors         the canvas's reductions
//! OUT/canvas_grid.png                    per summed layer, the maps of largest |C|
//! OUT/nerv_frame0.png                    the NeRV's frame 0
//! OUT/nerv_canvas_summary.safetensors    the canvas summary of every NeRV layer for frame 0
//! OUT/nerv/                              a NeRV trained on the clip, when `nerv` has no model
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use image::codecs::png::CompressionType;

use crate::canvas::ffn::{ffn_canvas, FfnLayer};
use crate::canvas::nerv::{nerv_canvas_summary, NervFrameData, NervLayer};
use crate::canvas::{Canvas, CanvasOptions, CanvasSummary, LayerSummary, Method};
use crate::data::clip::{open_clip, ClipOptions};
use crate::data::image::{load_rgb_resized, write_png, ImageTensor};
use crate::data::synth::scene::street_scene;
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnConfig};
use crate::models::nerv::Nerv;
use crate::models::{ModelDir, Provenance};
use crate::train::ffn::{train_ffn, FfnTrainParams, TrainReport};
use crate::train::nerv::{train_nerv_folder, NervFolderJob, NervTrainParams, NervTrainReport};

/// The PNG compression of the demo's pictures.
const FAST: CompressionType = CompressionType::Fast;

/// What the demo learns and where it writes (the defaults are `xinc demo`'s).
#[derive(Clone, Debug, PartialEq)]
pub struct DemoOptions {
    /// Output folder.
    pub out: PathBuf,
    /// Learn this image instead of the first frame of `clip`.
    pub image: Option<PathBuf>,
    /// Dataset root whose first frame is learned (a generated scene when it does not exist); the
    /// clip a NeRV is trained on when `nerv` holds none.
    pub clip: PathBuf,
    /// `[H, W]` of the learned image.
    pub size: [usize; 2],
    /// The FFN's hidden width (and Fourier mapping size).
    pub width: usize,
    /// FFN training iterations.
    pub iters: usize,
    pub seed: u64,
    /// The NeRV model folder to explain; when it has no `config.json`, a NeRV is trained on
    /// `clip` for `nerv_epochs` epochs into `OUT/nerv`.
    pub nerv: PathBuf,
    pub nerv_epochs: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            out: PathBuf::from("out"),
            image: None,
            clip: PathBuf::from("data/cityscapes_vps"),
            size: [128, 256],
            width: 104,
            iters: 1000,
            seed: 0,
            nerv: PathBuf::from("checkpoints/nerv_cityscapes_vps_0005"),
            nerv_epochs: 20,
        }
    }
}

/// The totals of one layer's maps.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTotals {
    pub layer: String,
    /// Maps (FFN) or kernels (NeRV).
    pub maps: usize,
    /// Maps that are zero everywhere.
    pub all_zero: usize,
    /// Σ |C| over every map and pixel.
    pub abs_sum: f32,
}

impl LayerTotals {
    fn of(s: &LayerSummary) -> Self {
        LayerTotals {
            layer: s.layer.clone(),
            maps: s.abssum_hw.len(),
            all_zero: s.abssum_hw.iter().filter(|&&v| v == 0.0).count(),
            abs_sum: s.abssum_hw.iter().sum(),
        }
    }
}

/// What the demo computed; `Display` gives the command's output.
#[derive(Clone, Debug)]
pub struct DemoReport {
    pub out: PathBuf,
    /// The trained FFN (saved in `OUT/ffn`) and its training.
    pub ffn: Ffn,
    pub ffn_training: TrainReport,
    /// Seconds of the FFN canvas (forward pass and every map).
    pub canvas_seconds: f64,
    /// max |Σ of the last layer's maps − output| over pixels and channels.
    pub conservation: f32,
    pub ffn_layers: Vec<LayerTotals>,
    /// The NeRV's model folder, the NeRV, and where its weights came from.
    pub nerv_dir: PathBuf,
    pub nerv: Nerv,
    pub nerv_provenance: Provenance,
    /// The training of the NeRV, when the demo trained it.
    pub nerv_training: Option<NervTrainReport>,
    /// Seconds of the NeRV canvas summary of frame 0.
    pub nerv_seconds: f64,
    /// Every NeRV layer of the summary (pre-GELU ones included).
    pub nerv_layers: Vec<LayerTotals>,
}

/// Runs the demo (see the module documentation for what it writes). Every input is read before
/// anything is written: the image, and the NeRV folder when it holds a model.
pub fn run_demo(opts: &DemoOptions, device: &Device) -> Result<DemoReport> {
    let [h, w] = opts.size;
    let config = FfnConfig::with_width(opts.width, h, w);
    config.validate()?;
    let (target, input) = demo_input(opts)?;
    let loaded = existing_nerv(opts, device)?;
    let out = opts.out.as_path();
    std::fs::create_dir_all(out).map_err(|e| XincError::io(out, e))?;
    write_png(&out.join("input.png"), &target.to_rgb8(), FAST)?;
    let params = FfnTrainParams {
        iters: opts.iters,
        seed: opts.seed,
        ..FfnTrainParams::default()
    };
    let (ffn, ffn_training) = train_ffn(config, &target, &params, device)?;
    ModelDir::new(out.join("ffn")).save_trained(&ffn, ffn_training.record(&params, &input))?;
    let reconstruction = ffn.render(device)?.to_rgb8();
    write_png(&out.join("reconstruction.png"), &reconstruction, FAST)?;
    let ffn_part = ffn_demo_canvas(&ffn, out, device)?;

    let (nerv_dir, nerv_training) = match loaded {
        Some(dir) => (dir, None),
        None => train_demo_nerv(opts, device)?,
    };
    let (nerv, cfg) = ModelDir::new(&nerv_dir).load_nerv(device)?;
    let (nerv_seconds, nerv_layers) = nerv_demo_canvas(&nerv, out, device)?;
    Ok(DemoReport {
        out: out.to_path_buf(),
        ffn,
        ffn_training,
        canvas_seconds: ffn_part.seconds,
        conservation: ffn_part.conservation,
        ffn_layers: ffn_part.layers,
        nerv_dir,
        nerv,
        nerv_provenance: cfg.provenance,
        nerv_training,
        nerv_seconds,
        nerv_layers,
    })
}

/// The FFN half's canvas numbers.
struct FfnDemoCanvas {
    seconds: f64,
    conservation: f32,
    layers: Vec<LayerTotals>,
}

/// The FFN's full official canvas, its summary and the map grid, written into `out`.
fn ffn_demo_canvas(ffn: &Ffn, out: &Path, device: &Device) -> Result<FfnDemoCanvas> {
    let start = Instant::now();
    let acts = ffn.forward_image(device)?;
    let layers = FfnLayer::all(ffn.config(), Method::Official);
    let canvas = ffn_canvas(ffn, &acts, &layers, &CanvasOptions::default())?;
    let seconds = start.elapsed().as_secs_f64();
    canvas.save(&out.join("canvas.safetensors"))?;
    let summary = canvas.summary();
    summary.save(&out.join("canvas_summary.safetensors"))?;
    let grid = demo_grid(&canvas, &summary, 6);
    write_png(&out.join("canvas_grid.png"), &grid, FAST)?;
    let rgb = summary.layers.last().expect("layerL_rgb is requested");
    let conservation = rgb
        .sum_neurons
        .iter()
        .zip(&canvas.output)
        .map(|(s, y)| (s - y).abs())
        .fold(0.0f32, f32::max);
    Ok(FfnDemoCanvas {
        seconds,
        conservation,
        layers: summary.layers.iter().map(LayerTotals::of).collect(),
    })
}

/// The NeRV's frame 0 and the canvas summary of every layer for it, written into `out`; the
/// seconds of the summary and its layers.
fn nerv_demo_canvas(nerv: &Nerv, out: &Path, device: &Device) -> Result<(f64, Vec<LayerTotals>)> {
    let frame0 = nerv.render_frame(0, device)?.to_rgb8();
    write_png(&out.join("nerv_frame0.png"), &frame0, FAST)?;
    let acts = nerv.forward_frame(0, device)?;
    let start = Instant::now();
    let layers = NervLayer::all(nerv.blocks().len(), Method::Official);
    let frame = NervFrameData::new(nerv, &acts)?;
    let summary = nerv_canvas_summary(&frame, &layers, device, &CanvasOptions::default())?;
    summary.save(&out.join("nerv_canvas_summary.safetensors"))?;
    let seconds = start.elapsed().as_secs_f64();
    Ok((
        seconds,
        summary.layers.iter().map(LayerTotals::of).collect(),
    ))
}

/// The `nerv` folder when it holds a `config.json` (anything by that name, so that a broken one
/// is an error, not a reason to train), loaded and checked; `None` when it has none.
fn existing_nerv(opts: &DemoOptions, device: &Device) -> Result<Option<PathBuf>> {
    if std::fs::symlink_metadata(opts.nerv.join(ModelDir::CONFIG)).is_err() {
        return Ok(None);
    }
    ModelDir::new(&opts.nerv).load_nerv(device)?;
    Ok(Some(opts.nerv.clone()))
}

/// Trains the demo's NeRV on `clip` into `OUT/nerv` (the paper's flags).
fn train_demo_nerv(
    opts: &DemoOptions,
    device: &Device,
) -> Result<(PathBuf, Option<NervTrainReport>)> {
    tracing::warn!(
        "{} not found: training a NeRV on {} for {} epochs",
        opts.nerv.display(),
        opts.clip.display(),
        opts.nerv_epochs
    );
    let job = NervFolderJob {
        clip: opts.clip.clone(),
        params: NervTrainParams {
            epochs: opts.nerv_epochs,
            eval_every: opts.nerv_epochs.clamp(1, 10),
            seed: opts.seed,
            ..NervTrainParams::default()
        },
        out: opts.out.join("nerv"),
        ..NervFolderJob::default()
    };
    let (_, report) = train_nerv_folder(&job, device)?;
    Ok((job.out, Some(report)))
}

/// The image the demo learns, and how its training record names it: `image`, else the first
/// frame of `clip`, else a generated street scene.
fn demo_input(opts: &DemoOptions) -> Result<(ImageTensor, String)> {
    let [h, w] = opts.size;
    if let Some(path) = &opts.image {
        return Ok((load_rgb_resized(path, h, w)?, path.display().to_string()));
    }
    if opts.clip.exists() {
        let clip_opts = ClipOptions {
            size: opts.size,
            video: None,
        };
        let clip = open_clip(&opts.clip, &clip_opts)?;
        let first = clip
            .frames
            .first()
            .map(|f| f.display().to_string())
            .unwrap_or_default();
        return Ok((clip.frame_ffn(0)?, first));
    }
    tracing::warn!(
        "{} not found: learning a generated street scene",
        opts.clip.display()
    );
    Ok((
        ImageTensor::from_rgb8(&street_scene(h, w)),
        format!("generated street scene {h}x{w}"),
    ))
}

/// One row per summed layer: its `per_row` maps with the largest absolute contribution.
fn demo_grid(canvas: &Canvas, summary: &CanvasSummary, per_row: usize) -> image::RgbImage {
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
    crate::plot::map_grid(&maps, canvas.height, canvas.width, per_row, 4)
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let out = self.out.display();
        let ffn_dir = self.out.join("ffn");
        writeln!(
            f,
            "{}",
            self.ffn_training.summary(self.ffn.config(), &ffn_dir)
        )?;
        writeln!(
            f,
            "canvas of {} layers (forward + maps) in {:.3} s",
            self.ffn_layers.len(),
            self.canvas_seconds
        )?;
        let rgb = self.ffn_layers.last().map_or("", |l| l.layer.as_str());
        writeln!(
            f,
            "conservation: max |sum of {rgb} maps - output| = {:.2e}",
            self.conservation
        )?;
        for l in &self.ffn_layers {
            writeln!(
                f,
                "  {:<11} {:>4} maps, {:>3} all-zero, sum |C| = {:.1}",
                l.layer, l.maps, l.all_zero, l.abs_sum
            )?;
        }
        writeln!(f, "wrote {out}/{{input.png, reconstruction.png, canvas.safetensors, canvas_summary.safetensors, canvas_grid.png, ffn/}}")?;
        if let Some(t) = &self.nerv_training {
            writeln!(f, "{}", t.summary(self.nerv.config(), &self.nerv_dir))?;
        }
        let psnr = match &self.nerv_provenance {
            Provenance::Trained(t) => format!("{:.2} dB", t.best_psnr),
            Provenance::Imported { .. } => "imported".to_string(),
        };
        writeln!(
            f,
            "NeRV {} ({psnr}): canvas summary of {} layers for frame 0 in {:.2} s",
            self.nerv_dir.display(),
            self.nerv_layers.len(),
            self.nerv_seconds
        )?;
        for l in self
            .nerv_layers
            .iter()
            .filter(|l| !l.layer.ends_with("pre_gelu"))
        {
            writeln!(
                f,
                "  {:<7} {:>6} kernels, {:>5} all-zero, sum |C| = {:.1}",
                l.layer, l.maps, l.all_zero, l.abs_sum
            )?;
        }
        writeln!(
            f,
            "wrote {out}/{{nerv_frame0.png, nerv_canvas_summary.safetensors}}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_demo_writes_every_file_and_reports_conservation() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let opts = DemoOptions {
            out: dir.path().join("out"),
            clip: root.join("data/cityscapes_vps"),
            nerv: root.join("checkpoints/nerv_cityscapes_vps_0005"),
            size: [16, 32],
            width: 8,
            iters: 4,
            ..DemoOptions::default()
        };
        let report = run_demo(&opts, &Device::Cpu).unwrap();
        for name in [
            "input.png",
            "reconstruction.png",
            "canvas.safetensors",
            "canvas_summary.safetensors",
            "canvas_grid.png",
            "ffn/config.json",
            "nerv_frame0.png",
            "nerv_canvas_summary.safetensors",
        ] {
            assert!(opts.out.join(name).is_file(), "{name}");
        }
        assert!(report.conservation < 1e-5, "{}", report.conservation);
        let names: Vec<&str> = report.ffn_layers.iter().map(|l| l.layer.as_str()).collect();
        assert_eq!(names, ["layer1", "layer2", "layer3", "layer3_rgb"]);
        assert_eq!(report.ffn_layers[3].maps, 8 * 3);
        assert_eq!(report.nerv_layers.len(), 7);
        assert!(report.nerv_training.is_none());
        let text = report.to_string();
        assert!(text.starts_with("trained FFN ("), "{text}");
        assert!(text.contains("NeRV ") && text.ends_with("nerv_canvas_summary.safetensors}\n"));
    }
}
