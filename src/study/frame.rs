//! A frame's canvas for one model under one set of [`CanvasOptions`]: [`FrameCanvas`], an owned
//! value that is cheap to clone (an `Arc` inside) and lives across notebook cells. It holds what
//! the model learned of the frame, its output, the frame's annotation, and the model's
//! activations, from which each layer's maps are computed once, at the first
//! [`FrameCanvas::layer`] that asks for them.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use crate::analysis::partitions::{
    frame_partitions, gabor_labels, gt_from_planar, FramePartitions, PartitionConfig,
};
use crate::analysis::Fidelity;
use crate::canvas::ffn::{ffn_canvas, FfnLayer};
use crate::canvas::maps::{InMemoryMaps, NeuronMaps};
use crate::canvas::nerv::{NervFrameData, NervLayer};
use crate::canvas::{CanvasOptions, Method};
use crate::data::panoptic::PanopticFrame;
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnActivations};

/// Which of a study's models a [`FrameCanvas`] explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// The FFN of the clip's first frame.
    Ffn,
    /// The NeRV of the clip.
    Nerv,
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Ffn => "FFN",
            Model::Nerv => "NeRV",
        })
    }
}

/// One frame of a study's clip, explained by one of its models under one method. Clone it
/// freely: clones share the activations and every layer computed so far.
#[derive(Clone)]
pub struct FrameCanvas {
    inner: Arc<Inner>,
}

/// What a [`FrameCanvas`] is made of (see [`FrameCanvas::new`]).
pub(crate) struct FrameParts {
    pub model: Model,
    pub model_name: String,
    pub video: String,
    pub frame: usize,
    pub opts: CanvasOptions,
    pub target: Vec<f32>,
    pub annotation: Option<PanopticFrame>,
    pub activations: Activations,
}

/// A model's activations of the frame.
pub(crate) enum Activations {
    Ffn(Box<(Ffn, FfnActivations)>),
    Nerv(NervFrameData),
}

struct Inner {
    parts: FrameParts,
    size: (usize, usize),
    output: Vec<f32>,
    /// The output after the model's final map (NeRV: OutImg), planar `[3, H, W]`.
    reconstruction: Vec<f32>,
    /// The layers computed so far.
    layers: Mutex<Vec<Arc<dyn NeuronMaps>>>,
    /// The partitions of the frame, official and corrected.
    partitions: [OnceLock<Arc<FramePartitions>>; 2],
    gabor: OnceLock<Arc<[usize]>>,
}

impl FrameCanvas {
    pub(crate) fn new(parts: FrameParts) -> Result<Self> {
        let (size, output, reconstruction) = match &parts.activations {
            Activations::Ffn(m) => {
                let (ffn, acts) = m.as_ref();
                let cfg = ffn.config();
                let planar = acts.output.t()?.contiguous()?.flatten_all()?;
                let output = planar.to_vec1::<f32>()?;
                ((cfg.height(), cfg.width()), output.clone(), output)
            }
            Activations::Nerv(data) => (
                (data.height, data.width),
                data.output.to_vec(),
                data.reconstruction.to_vec(),
            ),
        };
        if parts.target.len() != output.len() {
            return Err(XincError::InvalidArgument(format!(
                "{} frame {}: the target has {} values, the output {}",
                parts.model_name,
                parts.frame,
                parts.target.len(),
                output.len()
            )));
        }
        Ok(FrameCanvas {
            inner: Arc::new(Inner {
                parts,
                size,
                output,
                reconstruction,
                layers: Mutex::new(Vec::new()),
                partitions: [OnceLock::new(), OnceLock::new()],
                gabor: OnceLock::new(),
            }),
        })
    }

    pub fn model(&self) -> Model {
        self.inner.parts.model
    }

    /// The model's name (its folder's name).
    pub fn model_name(&self) -> &str {
        &self.inner.parts.model_name
    }

    /// The frame's index in the clip.
    pub fn frame(&self) -> usize {
        self.inner.parts.frame
    }

    pub fn method(&self) -> Method {
        self.inner.parts.opts.method
    }

    pub fn options(&self) -> &CanvasOptions {
        &self.inner.parts.opts
    }

    /// `(H, W)` of the frame and of every map.
    pub fn size(&self) -> (usize, usize) {
        self.inner.size
    }

    /// What the model learned of the frame: planar `[3, H, W]` values in [0, 1].
    pub fn target(&self) -> &[f32] {
        &self.inner.parts.target
    }

    /// The model's output, planar `[3, H, W]`, before clamping: what the maps of a conserving
    /// layer sum to. For a NeRV that is the head's output, before OutImg (see
    /// [`FrameCanvas::reconstruction`]).
    pub fn output(&self) -> &[f32] {
        &self.inner.output
    }

    /// The model's picture of the frame, planar `[3, H, W]`: the FFN's output, the NeRV's head
    /// output after OutImg (`tanh·0.5 + 0.5`, sigmoid or an offset).
    pub fn reconstruction(&self) -> &[f32] {
        &self.inner.reconstruction
    }

    /// The PSNR of the reconstruction (clamped to [0, 1]) against the target, in dB.
    pub fn psnr(&self) -> f64 {
        let (t, o) = (self.target(), self.reconstruction());
        let se: f64 = t
            .iter()
            .zip(o)
            .map(|(t, o)| (f64::from(*t) - f64::from(o.clamp(0.0, 1.0))).powi(2))
            .sum();
        -10.0 * (se / t.len().max(1) as f64).log10()
    }

    /// The frame's panoptic annotation, when it has one.
    pub fn annotation(&self) -> Option<&PanopticFrame> {
        self.inner.parts.annotation.as_ref()
    }

    /// The name of the clip's video.
    pub fn video(&self) -> &str {
        &self.inner.parts.video
    }

    /// Every layer the method defines for this model (`layer1`, …, `layer3_rgb`; `head`,
    /// `block1`, `block1_pre_gelu`, `block1_rgb`, …).
    pub fn layer_names(&self) -> Vec<String> {
        let method = self.method();
        match &self.inner.parts.activations {
            Activations::Ffn(m) => FfnLayer::all(m.0.config(), method)
                .iter()
                .map(ToString::to_string)
                .collect(),
            Activations::Nerv(data) => data
                .all_layers(method)
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    /// The layers the paper analyses: the FFN's summed layers `layer1..layerL`; the NeRV's head
    /// and last block.
    pub fn paper_layer_names(&self) -> Vec<String> {
        match &self.inner.parts.activations {
            Activations::Ffn(m) => (1..=m.0.config().num_layers)
                .map(|k| FfnLayer::Summed(k).to_string())
                .collect(),
            Activations::Nerv(data) => vec![
                NervLayer::Head.to_string(),
                NervLayer::block(data.blocks()).to_string(),
            ],
        }
    }

    /// The layer `name`'s maps, computed at the first call and shared by later ones (the route
    /// to them is [`FrameCanvas::layer`]).
    pub(super) fn layer_maps(&self, name: &str) -> Result<Arc<dyn NeuronMaps>> {
        if let Some(maps) = self.cached(name) {
            return Ok(maps);
        }
        let maps = self.compute(name)?;
        self.lock().push(Arc::clone(&maps));
        Ok(maps)
    }

    /// The partitions of the frame (RGB and Gabor clusters, grid cells, instances) under
    /// `fidelity`, computed once; an error when the frame has no annotation.
    pub fn partitions(&self, fidelity: Fidelity) -> Result<Arc<FramePartitions>> {
        let slot = &self.inner.partitions[fidelity as usize];
        if let Some(p) = slot.get() {
            return Ok(Arc::clone(p));
        }
        let annotation = self.annotation().ok_or_else(|| self.no_annotation())?;
        let cfg = PartitionConfig::for_video(self.video(), fidelity);
        let parts = frame_partitions(&self.target_image()?, annotation, &cfg)?;
        Ok(Arc::clone(slot.get_or_init(|| Arc::new(parts))))
    }

    /// The frame's Gabor texture labels (32 clusters, seed 0, the official bank), computed once:
    /// the features the neuron groups are built from.
    pub fn gabor_labels(&self) -> Result<Arc<[usize]>> {
        if let Some(l) = self.inner.gabor.get() {
            return Ok(Arc::clone(l));
        }
        let labels = gabor_labels(&self.target_image()?, 32, 0, Fidelity::Official)?;
        Ok(Arc::clone(self.inner.gabor.get_or_init(|| labels.into())))
    }

    pub(crate) fn no_annotation(&self) -> XincError {
        XincError::InvalidArgument(format!(
            "frame {} of {} has no panoptic annotation",
            self.frame(),
            self.video()
        ))
    }

    fn target_image(&self) -> Result<crate::data::image::ImageTensor> {
        let (h, w) = self.size();
        gt_from_planar(self.target(), h, w)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn NeuronMaps>>> {
        // A panic while the lock was held cannot leave the list half-written (push only).
        self.inner.layers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, name: &str) -> Option<Arc<dyn NeuronMaps>> {
        self.lock().iter().find(|m| m.layer() == name).cloned()
    }

    fn compute(&self, name: &str) -> Result<Arc<dyn NeuronMaps>> {
        let opts = &self.inner.parts.opts;
        Ok(match &self.inner.parts.activations {
            Activations::Ffn(m) => {
                let (ffn, acts) = m.as_ref();
                let layer = name.parse::<FfnLayer>()?.check(ffn.config(), opts.method)?;
                let mut canvas = ffn_canvas(ffn, acts, &[layer], opts)?;
                Arc::new(InMemoryMaps::new(canvas.layers.remove(0)))
            }
            Activations::Nerv(data) => Arc::from(data.maps(name.parse::<NervLayer>()?, opts)?),
        })
    }
}

impl fmt::Debug for FrameCanvas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, w) = self.size();
        write!(
            f,
            "FrameCanvas({} {}, frame {}, {}, {h}×{w})",
            self.model(),
            self.model_name(),
            self.frame(),
            self.method()
        )
    }
}
