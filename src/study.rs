//! A study: one panoptic clip and the models that learned it, ready for the analyses.
//!
//! This is the entry point of the notebooks and of [`crate::report`]. It sits above
//! [`crate::analysis`] (it hands out [`NeuronMaps`] sources) and below the report:
//! - [`Study::open`] reads a dataset root and model folders (an FFN of the clip's first frame, a
//!   NeRV of the clip, or both), at the FFN's resolution when there is one;
//! - [`Study::bundled`] opens the sample data and checkpoints shipped in the repository;
//! - [`Study::ffn_canvas`] and [`Study::nerv_frame`] compute what the analyses read, and
//!   [`Study::nerv_maps`] turns one NeRV layer of a frame into a streamed [`NeuronMaps`] source.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::analysis::source::{NervKernelMaps, NeuronMaps};
use crate::canvas::conservative::nerv::PreparedBlock;
use crate::canvas::ffn::{ffn_canvas_with, FfnLayer};
use crate::canvas::nerv::{NervFrameData, NervLayer};
use crate::canvas::{ContributionMap, Method};
use crate::data::clip::{open_clip, ClipOptions};
use crate::data::panoptic::{Clip, PanopticFrame};
use crate::error::{Result, XincError};
use crate::models::ffn::Ffn;
use crate::models::nerv::Nerv;
use crate::models::{Architecture, ModelDir};

/// The bundled sample clip, relative to the repository root.
pub const BUNDLED_DATA: &str = "data/cityscapes_vps";
/// The bundled FFN of the sample clip's first frame, relative to the repository root.
pub const BUNDLED_FFN: &str = "checkpoints/ffn_cityscapes_vps_0005";
/// The bundled NeRV of the sample clip, relative to the repository root.
pub const BUNDLED_NERV: &str = "checkpoints/nerv_cityscapes_vps_0005";
/// The working resolution `[H, W]` when no model fixes it (the official NeRV resolution).
pub const DEFAULT_SIZE: [usize; 2] = [128, 256];

/// A model with the name it is reported under (its folder's name).
pub struct Named<M> {
    pub name: String,
    pub model: M,
}

/// A clip and its models.
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

    /// The FFN's official summed-layer maps of the clip's first frame (`layer1..layerL`).
    pub fn ffn_canvas(&self) -> Result<Vec<ContributionMap>> {
        self.ffn_canvas_by(Method::Official)
    }

    /// The FFN's summed-layer maps of the clip's first frame under `method`.
    pub fn ffn_canvas_by(&self, method: Method) -> Result<Vec<ContributionMap>> {
        let ffn = self.ffn()?;
        let cfg = ffn.config();
        let (h, w) = (cfg.height(), cfg.width());
        if [h, w] != self.clip.size {
            return Err(XincError::InvalidArgument(format!(
                "the FFN learned {h}×{w} images, the clip is read at {:?}",
                self.clip.size
            )));
        }
        let acts = ffn.forward_image(&self.device)?;
        let layers: Vec<FfnLayer> = (1..=cfg.num_layers).map(FfnLayer::Summed).collect();
        Ok(ffn_canvas_with(ffn, &acts, &layers, method)?.layers)
    }

    /// The NeRV's activations of frame `f`, from which every layer's kernel maps are computed.
    pub fn nerv_frame(&self, f: usize) -> Result<NervFrameData> {
        let nerv = self.nerv()?;
        NervFrameData::new(nerv, &nerv.forward_frame(f, &self.device)?)
    }

    /// Every kernel of `layer` of a NeRV frame, as a streamed source of official maps.
    pub fn nerv_maps(data: &NervFrameData, layer: NervLayer) -> Result<NervKernelMaps<'_>> {
        NervKernelMaps::new(data.layer(layer)?, layer, data.inputs(layer, None)?)
    }

    /// Every kernel of `layer` of a NeRV frame under `method`. A conservative block output
    /// holds its whole-frame coefficients (46 MB for the official block 3, 260 MB for block 1);
    /// the head and the pre-GELU layers are the same in both methods.
    pub fn nerv_maps_by(
        data: &NervFrameData,
        layer: NervLayer,
        method: Method,
    ) -> Result<Box<dyn NeuronMaps + '_>> {
        let inputs = data.inputs(layer, None)?;
        Ok(match (method, layer) {
            (
                Method::Conservative,
                NervLayer::Block {
                    pre_gelu: false, ..
                },
            ) => Box::new(PreparedBlock::summed(data, layer, inputs)?),
            _ => Box::new(NervKernelMaps::new(data.layer(layer)?, layer, inputs)?),
        })
    }

    /// The NeRV layers the paper analyses: the head and the last block.
    pub fn paper_layers(&self) -> Result<Vec<NervLayer>> {
        Ok(vec![
            NervLayer::Head,
            NervLayer::Block {
                index: self.nerv()?.blocks().len(),
                pre_gelu: false,
            },
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
