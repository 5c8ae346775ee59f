//! A study: one panoptic clip and the models that learned it, ready for the analyses.
//!
//! This is the entry point of the notebooks and of [`crate::findings`]. It sits above
//! [`crate::analysis`] and below the findings:
//! - [`Study::open`] reads a dataset root and model folders (an FFN of the clip's first frame, a
//!   NeRV of the clip, or both), at the FFN's resolution when there is one;
//! - [`Study::bundled`] opens the sample data and checkpoints shipped in the repository;
//! - [`Study::frame`] explains one frame by one model under a [`CanvasOptions`]: a
//!   [`FrameCanvas`], owned and cheap to clone, whose [`FrameCanvas::layer`] is a [`Layer`]
//!   with the analyses as methods; [`Study::motion`] compares the NeRV's canvas of a frame with
//!   the previous one;
//! - the causal tests: [`Study::ffn_ablation`] and [`Study::nerv_ablation`] (`ablation.rs`),
//!   [`Study::nerv_pruning`].
//!
//! ```no_run
//! use xinc::prelude::*;
//! let study = Study::bundled(".")?;
//! let frame = study.frame(Model::Ffn, 0, &CanvasOptions::default())?;
//! let layer = frame.layer("layer2")?;
//! println!("{:?}: {} live neurons", layer, layer.distributed()?.num_neurons);
//! # Ok::<(), xinc::XincError>(())
//! ```

mod ablation;
mod frame;
mod layer;

pub use frame::{FrameCanvas, Model};
pub use layer::{object_shares_over, Layer, LayerGroups};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use polars::prelude::DataFrame;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::analysis::motion::{frame_flow, motion_vs_flow, MotionResult, DEFAULT_TOP_PERCENTS};
use crate::canvas::ffn::{ffn_canvas, FfnLayer};
use crate::canvas::nerv::{nerv_canvas_summary, NervFrameData, NervLayer};
use crate::canvas::{CanvasOptions, ContributionMap, Method};
use crate::compress::prune::{kernel_norms, rate_distortion};
use crate::compress::CompressOptions;
use crate::data::clip::{open_clip, ClipOptions};
use crate::data::optical_flow::FarnebackParams;
use crate::data::panoptic::{Clip, PanopticFrame};
use crate::error::{Result, XincError};
use crate::models::ffn::Ffn;
use crate::models::nerv::Nerv;
use crate::models::{Architecture, ModelDir};
use crate::train::nerv::NervTrainParams;
use frame::{Activations, FrameParts};

/// The bundled sample clip, relative to the repository root.
pub const BUNDLED_DATA: &str = "data/cityscapes_vps";
/// The bundled FFN of the sample clip's first frame, relative to the repository root.
pub const BUNDLED_FFN: &str = "checkpoints/ffn_cityscapes_vps_0005";
/// The bundled NeRV of the sample clip, relative to the repository root.
pub const BUNDLED_NERV: &str = "checkpoints/nerv_cityscapes_vps_0005";
/// The working resolution `[H, W]` when no model fixes it (the official NeRV resolution).
pub const DEFAULT_SIZE: [usize; 2] = [128, 256];

/// A model with the name it is reported under (its folder's name).
#[derive(Clone, Debug)]
pub struct Named<M> {
    pub name: String,
    pub model: M,
}

/// A clip and its models. Cloning copies the clip's annotations and shares the models' weights.
#[derive(Clone)]
pub struct Study {
    pub clip: Clip,
    /// An FFN of the clip's first frame.
    pub ffn: Option<Named<Ffn>>,
    /// A NeRV of the clip.
    pub nerv: Option<Named<Nerv>>,
    /// Where the models live and their forward passes run.
    pub device: Device,
}

impl Study {
    /// Opens `video` (default: the first) of the dataset at `data` with the models in `models`
    /// (model folders; their architecture is read from `config.json`).
    pub fn open(
        data: impl AsRef<Path>,
        models: &[PathBuf],
        video: Option<&str>,
        device: &Device,
    ) -> Result<Study> {
        let (mut ffn, mut nerv) = (None, None);
        for path in models {
            let dir = ModelDir::new(path);
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match dir.config()?.architecture {
                Architecture::Ffn(_) => {
                    let (model, _) = dir.load_ffn(device)?;
                    ffn = Some(Named { name, model });
                }
                Architecture::Nerv(_) => {
                    let (model, _) = dir.load_nerv(device)?;
                    nerv = Some(Named { name, model });
                }
            }
        }
        // The FFN's image size, else the NeRV's frame size.
        let size = match (&ffn, &nerv) {
            (Some(f), _) => [f.model.config().height(), f.model.config().width()],
            (None, Some(n)) => n.model.config().frame_size(),
            (None, None) => DEFAULT_SIZE,
        };
        let opts = ClipOptions {
            size,
            video: video.map(str::to_string),
        };
        let clip = open_clip(data.as_ref(), &opts)?;
        Ok(Study {
            clip,
            ffn,
            nerv,
            device: device.clone(),
        })
    }

    /// The bundled clip with both bundled models; `repo` is the repository root (`..` from
    /// `notebooks/`).
    pub fn bundled(repo: impl AsRef<Path>) -> Result<Study> {
        let repo = repo.as_ref();
        let models = [repo.join(BUNDLED_FFN), repo.join(BUNDLED_NERV)];
        Study::open(repo.join(BUNDLED_DATA), &models, None, &Device::Cpu)
    }

    /// This study with `model` as its FFN, reported as `name`: a model trained or imported in a
    /// notebook, explained on the study's clip. The FFN must have learned the clip's size.
    pub fn with_ffn(mut self, name: &str, model: Ffn) -> Result<Study> {
        self.check_ffn_size(&model)?;
        self.ffn = Some(Named {
            name: name.to_string(),
            model,
        });
        Ok(self)
    }

    /// This study with `model` as its NeRV, reported as `name`.
    pub fn with_nerv(mut self, name: &str, model: Nerv) -> Study {
        self.nerv = Some(Named {
            name: name.to_string(),
            model,
        });
        self
    }

    /// The FFN, or an error saying the study has none.
    pub fn ffn(&self) -> Result<&Ffn> {
        self.ffn
            .as_ref()
            .map(|f| &f.model)
            .ok_or_else(|| XincError::InvalidArgument("this study has no FFN model".into()))
    }

    /// The NeRV, or an error saying the study has none.
    pub fn nerv(&self) -> Result<&Nerv> {
        self.nerv
            .as_ref()
            .map(|n| &n.model)
            .ok_or_else(|| XincError::InvalidArgument("this study has no NeRV model".into()))
    }

    /// Frame `f` of the clip explained by `model` under `opts`: its target, the model's output,
    /// its annotation, and the activations from which each layer is computed on demand. The FFN
    /// learned frame 0 only.
    pub fn frame(&self, model: Model, f: usize, opts: &CanvasOptions) -> Result<FrameCanvas> {
        let (model_name, target, activations) = match model {
            Model::Ffn => {
                if f != 0 {
                    return Err(XincError::InvalidArgument(format!(
                        "the FFN learned frame 0 of the clip, not frame {f}"
                    )));
                }
                let ffn = self.ffn()?;
                self.check_ffn_size(ffn)?;
                let acts = ffn.forward_image(&self.device)?;
                let name = self
                    .ffn
                    .as_ref()
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                (
                    name,
                    self.ffn_target()?,
                    Activations::Ffn(Box::new((ffn.clone(), acts))),
                )
            }
            Model::Nerv => {
                let name = self
                    .nerv
                    .as_ref()
                    .map(|n| n.name.clone())
                    .unwrap_or_default();
                let data = self.nerv_frame(f)?;
                (name, self.nerv_target(f)?, Activations::Nerv(data))
            }
        };
        FrameCanvas::new(FrameParts {
            model,
            model_name,
            video: self.clip.video.clone(),
            frame: f,
            opts: opts.clone(),
            target,
            annotation: self.annotation(f).cloned(),
            activations,
        })
    }

    /// The frames the paper analyses of `model`: frame 0 of the FFN, every annotated frame the
    /// NeRV learned ([`Study::analysed_frames`]).
    pub fn frames(&self, model: Model, opts: &CanvasOptions) -> Result<Vec<FrameCanvas>> {
        let frames = match model {
            Model::Ffn => vec![0],
            Model::Nerv => self.analysed_frames(),
        };
        frames.iter().map(|&f| self.frame(model, f, opts)).collect()
    }

    /// The change of the NeRV's paper layers from frame `t − 1` to `t` against the motion of
    /// frame `t` (the clip's flow, or Farnebäck optical flow), one result per layer.
    pub fn motion(&self, t: usize, opts: &CanvasOptions) -> Result<Vec<MotionResult>> {
        if t == 0 {
            return Err(XincError::InvalidArgument(
                "motion: frame 0 has no previous frame".into(),
            ));
        }
        let prev = self.frame(Model::Nerv, t - 1, opts)?;
        let cur = self.frame(Model::Nerv, t, opts)?;
        let (flow, source) = frame_flow(&self.clip, t, &FarnebackParams::default())?;
        prev.paper_layer_names()
            .iter()
            .map(|name| {
                let (a, b) = (prev.layer(name)?, cur.layer(name)?);
                motion_vs_flow(a.maps(), b.maps(), t, &flow, source, &DEFAULT_TOP_PERCENTS)
            })
            .collect()
    }

    /// The FFN's official summed-layer maps of the clip's first frame (`layer1..layerL`).
    pub fn ffn_canvas(&self) -> Result<Vec<Arc<ContributionMap>>> {
        self.ffn_canvas_by(Method::Official)
    }

    /// The FFN's summed-layer maps of the clip's first frame under `method`.
    pub fn ffn_canvas_by(&self, method: Method) -> Result<Vec<Arc<ContributionMap>>> {
        let ffn = self.ffn()?;
        self.check_ffn_size(ffn)?;
        let acts = ffn.forward_image(&self.device)?;
        let layers: Vec<FfnLayer> = (1..=ffn.config().num_layers)
            .map(FfnLayer::Summed)
            .collect();
        Ok(ffn_canvas(ffn, &acts, &layers, &method.into())?.layers)
    }

    /// Contribution-guided pruning of the NeRV's `layer` (`head` or `block{n}`): its kernels
    /// ranked by total |contribution| on frame 0 under each canvas (where the method defines
    /// the layer), by weight norm and at random (`seed`), pruned at each fraction, fine-tuned
    /// with `finetune` when given, quantised and coded as the official pipeline does
    /// ([`crate::compress::prune::rate_distortion`]).
    pub fn nerv_pruning(
        &self,
        layer: &str,
        fractions: &[f64],
        seed: u64,
        (opts, finetune): (&CompressOptions, Option<&NervTrainParams>),
    ) -> Result<DataFrame> {
        let nerv = self.nerv()?;
        let frame = self.nerv_frame(0)?;
        let target: NervLayer = layer.parse()?;
        let mut rankings = Vec::new();
        for method in [Method::Official, Method::Conservative] {
            if frame.check(target, method).is_err() {
                continue;
            }
            let summary = nerv_canvas_summary(
                &frame,
                &[target],
                &self.device,
                &CanvasOptions::from(method),
            )?;
            let scores = summary.layers[0].abssum_hw.clone();
            match rankings.iter_mut().find(|(_, s)| *s == scores) {
                // The head: both canvases have the same maps, so one ranking.
                Some((name, _)) => *name = "contribution (both canvases)".into(),
                None => rankings.push((format!("contribution ({method})"), scores)),
            }
        }
        rankings.push(("weight norm".into(), kernel_norms(nerv, layer)?));
        let n = rankings.last().map_or(0, |r| r.1.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rankings.push((
            "random".into(),
            (0..n).map(|_| rng.random::<f32>()).collect(),
        ));
        let frames = (0..nerv.config().frames)
            .map(|f| self.nerv_target(f))
            .collect::<Result<Vec<_>>>()?;
        rate_distortion(
            nerv,
            &frames,
            layer,
            &rankings,
            fractions,
            (opts, finetune),
            &self.device,
        )
    }

    pub(crate) fn check_ffn_size(&self, ffn: &Ffn) -> Result<()> {
        let (h, w) = (ffn.config().height(), ffn.config().width());
        if [h, w] != self.clip.size {
            return Err(XincError::InvalidArgument(format!(
                "the FFN learned {h}×{w} images, the clip is read at {:?}",
                self.clip.size
            )));
        }
        Ok(())
    }

    /// The NeRV's activations of frame `f`, from which every layer's kernel maps are computed.
    pub fn nerv_frame(&self, f: usize) -> Result<NervFrameData> {
        let nerv = self.nerv()?;
        NervFrameData::new(nerv, &nerv.forward_frame(f, &self.device)?)
    }

    /// The NeRV layers the paper analyses: the head and the last block.
    pub fn paper_layers(&self) -> Result<Vec<NervLayer>> {
        Ok(vec![
            NervLayer::Head,
            NervLayer::block(self.nerv()?.blocks().len()),
        ])
    }

    /// The annotated frames the NeRV learned (frame 0 when none is annotated or there is no NeRV).
    pub fn analysed_frames(&self) -> Vec<usize> {
        let t = self.nerv.as_ref().map_or(1, |n| n.model.config().frames);
        let frames: Vec<usize> = self
            .clip
            .annotations
            .iter()
            .map(|a| a.frame_index)
            .filter(|&f| f < t)
            .collect();
        if frames.is_empty() {
            vec![0]
        } else {
            frames
        }
    }

    /// The panoptic annotation of frame `f`, when it has one.
    pub fn annotation(&self, f: usize) -> Option<&PanopticFrame> {
        self.clip.annotations.iter().find(|a| a.frame_index == f)
    }

    /// What the FFN learned: the clip's first frame as planar `[3, H, W]` values in [0, 1]
    /// (Pillow's antialiased resize, as the official image pipeline).
    pub fn ffn_target(&self) -> Result<Vec<f32>> {
        Ok(self.clip.frame_ffn(0)?.to_chw())
    }

    /// What the NeRV learned of frame `f`: planar `[3, H, W]` values in [0, 1] (the official
    /// video pipeline's crop and resize).
    pub fn nerv_target(&self, f: usize) -> Result<Vec<f32>> {
        self.clip.frame_nerv(f)
    }
}

impl std::fmt::Debug for Study {
    /// One line: the clip (video, format, frames, annotated frames, working size) and the
    /// models' names.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.clip;
        let name = |n: Option<&str>| n.unwrap_or("none").to_string();
        write!(
            f,
            "Study(video {} ({:?}): {} frames, {} annotated, at {}×{}; FFN {}, NeRV {})",
            c.video,
            c.format,
            c.frames.len(),
            c.annotations.len(),
            c.size[0],
            c.size[1],
            name(self.ffn.as_ref().map(|m| m.name.as_str())),
            name(self.nerv.as_ref().map(|m| m.name.as_str())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn bundled_study_opens_both_models_at_the_ffn_size() {
        let s = Study::bundled(repo()).unwrap();
        assert_eq!(s.clip.size, [128, 256]);
        assert_eq!(s.ffn.as_ref().unwrap().name, "ffn_cityscapes_vps_0005");
        assert_eq!(s.nerv.as_ref().unwrap().name, "nerv_cityscapes_vps_0005");
        let frames = s.analysed_frames();
        assert!(!frames.is_empty());
        assert!(frames.iter().all(|&f| s.annotation(f).is_some()));
        assert_eq!(s.paper_layers().unwrap()[0], NervLayer::Head);
        assert_eq!(
            format!("{s:?}"),
            "Study(video 0005 (CityscapesVps): 30 frames, 6 annotated, at 128×256; \
             FFN ffn_cityscapes_vps_0005, NeRV nerv_cityscapes_vps_0005)"
        );
    }

    #[test]
    fn a_frame_canvas_conserves_and_shares_its_layers() {
        let study = Study::bundled(repo()).unwrap();
        let exact = study
            .frame(Model::Ffn, 0, &Method::Conservative.into())
            .unwrap();
        // Every conservative layer sums to the output; the official inner layers do not.
        for name in exact.layer_names() {
            let err = exact.layer(&name).unwrap().conservation_error().unwrap();
            assert!(err < 1e-4, "{name}: {err}");
        }
        let official = study.frame(Model::Ffn, 0, &Default::default()).unwrap();
        assert!(
            official
                .layer("layer3_rgb")
                .unwrap()
                .conservation_error()
                .unwrap()
                < 1e-4
        );
        assert!(
            official
                .layer("layer2")
                .unwrap()
                .conservation_error()
                .unwrap()
                > 1e-2
        );
        // A layer is computed once and shared by every clone of the frame.
        let (a, b) = (
            official.layer("layer2").unwrap(),
            official.clone().layer("layer2").unwrap(),
        );
        assert!(std::ptr::addr_eq(a.maps(), b.maps()));
        // The same statistics as the canvas route.
        let maps = study.ffn_canvas().unwrap();
        let direct = crate::analysis::stats::neuron_stats(
            &crate::canvas::maps::InMemoryMaps::new(Arc::clone(&maps[1])),
            "ffn_cityscapes_vps_0005",
            0,
        )
        .unwrap();
        assert!(a.stats().unwrap().equals_missing(&direct));
        let top = a.strongest(3).unwrap();
        assert_eq!(top.height(), 3);
        assert_eq!(
            format!("{a:?}"),
            "Layer(FFN layer2 of ffn_cityscapes_vps_0005, frame 0, official: 104 neurons, 128×256)"
        );
        assert!((official.psnr() - exact.psnr()).abs() < 1e-12);
        assert!(official.psnr() > 20.0, "{}", official.psnr());
    }

    #[test]
    fn a_nerv_frame_explains_its_head_exactly() {
        let study = Study::bundled(repo()).unwrap();
        let frame = study.frame(Model::Nerv, 1, &Default::default()).unwrap();
        assert_eq!(frame.paper_layer_names()[0], "head");
        let head = frame.layer("head").unwrap();
        let err = head.conservation_error().unwrap();
        assert!(err < 1e-4, "{err}");
        assert_eq!(head.label(), "NeRV head");
        // The picture is the head output after OutImg (tanh·0.5 + 0.5 for the bundled model),
        // and the PSNR is of that picture: the bundled NeRV's 30 dB, not that of the raw head.
        for (o, r) in frame.output().iter().zip(frame.reconstruction()) {
            assert!((o.tanh() * 0.5 + 0.5 - r).abs() < 1e-6, "{o} → {r}");
        }
        assert!(frame.psnr() > 28.0, "{}", frame.psnr());
        let err = study
            .frame(Model::Ffn, 1, &Default::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("frame 0"), "{err}");
        let err = frame.layer("layer2").err().unwrap();
        assert!(err.to_string().contains("not a NeRV layer"), "{err}");
    }

    #[test]
    fn missing_models_are_typed_errors() {
        let s = Study::open(repo().join(BUNDLED_DATA), &[], None, &Device::Cpu).unwrap();
        assert_eq!(s.clip.size, DEFAULT_SIZE);
        let err = s.ffn_canvas().err().unwrap().to_string();
        assert!(err.contains("no FFN"), "{err}");
        let err = s.nerv_frame(0).err().unwrap().to_string();
        assert!(err.contains("no NeRV"), "{err}");
        assert_eq!(s.analysed_frames(), vec![0]);
        let bad = Study::open(
            repo().join(BUNDLED_DATA),
            &[repo().join("no-such-model")],
            None,
            &Device::Cpu,
        );
        let err = bad.err().unwrap().to_string();
        assert!(err.contains("no-such-model"), "{err}");
    }
}
