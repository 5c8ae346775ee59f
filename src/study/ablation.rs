//! The study's ablations (issue 21, items 2 and 3): every FFN unit, and NeRV kernels under a
//! budget, removed against both canvases and the frame's objects
//! ([`crate::analysis::ablation`]).

use std::sync::Arc;

use super::Study;
use crate::analysis::ablation::{
    ablate_ffn_layer, job, AblationBudget, Checkpoint, LayerAblation, Layout, NervAblation, Scene,
};
use crate::analysis::objects::instance_regions;
use crate::analysis::regions::Regions;
use crate::canvas::maps::{InMemoryMaps, NeuronMaps};
use crate::canvas::nerv::{NervFrameData, NervLayer};
use crate::canvas::{CanvasOptions, Method};
use crate::data::panoptic::OtherRegion;
use crate::error::{Result, XincError};
use crate::models::nerv::KernelLayer;

/// Both canvases, in the order of every ablation's views.
const METHODS: [Method; 2] = [Method::Official, Method::Conservative];

impl Study {
    /// Which canvas predicts what an FFN unit does: every unit of every layer removed in turn
    /// on the clip's first frame ([`ablate_ffn_layer`]), against both canvases' maps and the
    /// frame's objects. One [`LayerAblation`] per layer.
    pub fn ffn_ablation(&self) -> Result<Vec<LayerAblation>> {
        let ffn = self.ffn()?;
        self.check_ffn_size(ffn)?;
        let acts = ffn.forward_image(&self.device)?;
        let intact: Vec<f32> = acts.output.flatten_all()?.to_vec1()?;
        let [h, w] = self.clip.size;
        let target = self.clip.frame_ffn(0)?.data;
        let scene = Scene::new(target, Layout::PixelMajor, self.objects(0, h, w)?, &intact)?;
        let canvases = METHODS
            .iter()
            .map(|&m| self.ffn_canvas_by(m))
            .collect::<Result<Vec<_>>>()?;
        (1..=ffn.config().num_layers)
            .map(|k| {
                let maps: Vec<InMemoryMaps> = (canvases.iter())
                    .map(|c| InMemoryMaps::new(Arc::clone(&c[k - 1])))
                    .collect();
                let views: Vec<&dyn NeuronMaps> = maps.iter().map(|m| m as _).collect();
                Ok(LayerAblation {
                    model: self.ffn.as_ref().expect("checked").name.clone(),
                    layer: format!("layer{k}"),
                    methods: METHODS.to_vec(),
                    objects: scene.object_names().to_vec(),
                    neurons: views[0].num_neurons(),
                    kernel_outputs: None,
                    psnr: scene.psnr(),
                    removals: ablate_ffn_layer(ffn, &acts, k, &scene, &views)?,
                })
            })
            .collect()
    }

    /// NeRV kernels of `layer` (`head` or `block{n}`) removed on frame `frame`, under
    /// `budget` (a seeded uniform sample when it cuts the layer short), on the study's device,
    /// against the canvases that define the layer and the frame's objects. With a
    /// `checkpoint`, a killed job resumes.
    pub fn nerv_ablation(
        &self,
        layer: &str,
        frame: usize,
        budget: &AblationBudget,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<LayerAblation> {
        let nerv = self.nerv()?;
        let target_layer: KernelLayer = layer.parse()?;
        let canvas_layer: NervLayer = layer.parse()?;
        let acts = nerv.forward_frame(frame, &self.device)?;
        let data = NervFrameData::new(nerv, &acts)?;
        let mut methods = Vec::new();
        let mut maps = Vec::new();
        for method in METHODS {
            if data.check(canvas_layer, method).is_ok() {
                methods.push(method);
                maps.push(data.maps(canvas_layer, &CanvasOptions::from(method))?);
            }
        }
        let [h, w] = nerv.config().frame_size();
        let intact: Vec<f32> = acts.output.flatten_all()?.to_vec1()?;
        let objects = match [h, w] == self.clip.size {
            true => self.objects(frame, h, w)?,
            false => Regions::default(),
        };
        let target = self.nerv_target(frame)?;
        let scene = Scene::new(target, Layout::ChannelMajor, objects, &intact)?;
        let views: Vec<&dyn NeuronMaps> = maps.iter().map(|m| m.as_ref()).collect();
        let ablation = NervAblation::new(nerv, &acts, target_layer, &scene, views)?;
        let neurons = ablation.neurons();
        if methods.is_empty() {
            return Err(XincError::InvalidArgument(format!(
                "{layer}: neither canvas defines this layer of this NeRV, so there is nothing to \
                 compare a removal with"
            )));
        }
        let shape = (methods.len(), scene.object_names().len());
        let removals = job::run((neurons, shape), budget, checkpoint, |chunk| {
            ablation.remove(chunk)
        })?;
        Ok(LayerAblation {
            model: self.nerv.as_ref().expect("checked").name.clone(),
            layer: layer.to_string(),
            methods,
            objects: scene.object_names().to_vec(),
            neurons,
            kernel_outputs: Some(nerv.kernel_shape(target_layer)?.1),
            psnr: scene.psnr(),
            removals,
        })
    }

    /// The objects of frame `f` at `h`×`w` (its instances and the pixels none covers), or none
    /// when the frame has no annotation.
    fn objects(&self, f: usize, h: usize, w: usize) -> Result<Regions> {
        Ok(match self.annotation(f) {
            Some(a) => instance_regions(a, OtherRegion::Corrected, h, w)?.1,
            None => Regions::default(),
        })
    }
}
