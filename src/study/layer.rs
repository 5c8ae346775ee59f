//! One layer of a [`FrameCanvas`]: [`Layer`], an owned value (cheap to clone) whose methods are
//! the questions a researcher asks of a layer: its maps, per-neuron statistics, the strongest
//! neurons, the conservation error against the output, and each analysis of the paper. Figures
//! and the notebook display live above, in [`crate::plot::views`].

use std::fmt;
use std::sync::Arc;

use polars::prelude::{DataFrame, IntoLazy, SortMultipleOptions};

use crate::analysis::distributed::{distributed, Distributed, PAPER_TARGETS};
use crate::analysis::groups::{
    neuron_groups, neuron_vectors, Features, GroupOptions, NeuronGroups, NeuronVectors, THUMBNAIL,
};
use crate::analysis::intensity::{intensity, Intensity};
use crate::analysis::objects::{
    area_vs_neurons, object_shares, other_region, AreaNeurons, ObjectShares,
};
use crate::analysis::partitions::{neuron_variances, PartitionVariances};
use crate::analysis::source::per_channel_sum;
use crate::analysis::stats::neuron_stats;
use crate::analysis::{table_error, Fidelity};
use crate::canvas::maps::NeuronMaps;
use crate::data::panoptic::PanopticFrame;
use crate::error::{Result, XincError};

use super::frame::FrameCanvas;

impl FrameCanvas {
    /// The layer `name` (its maps computed at the first call and shared by later ones).
    pub fn layer(&self, name: &str) -> Result<Layer> {
        Ok(Layer::new(self.clone(), self.layer_maps(name)?))
    }

    /// The layers the paper analyses ([`FrameCanvas::paper_layer_names`]).
    pub fn paper_layers(&self) -> Result<Vec<Layer>> {
        self.paper_layer_names()
            .iter()
            .map(|name| self.layer(name))
            .collect()
    }
}

/// A layer's maps on one frame, with the frame they explain.
#[derive(Clone)]
pub struct Layer {
    frame: FrameCanvas,
    maps: Arc<dyn NeuronMaps>,
}

/// A layer's neurons as vectors, and their groups ([`Layer::groups`]).
#[derive(Clone, Debug)]
pub struct LayerGroups {
    /// The model's kind (`FFN`, `NeRV`), for titles.
    pub model: String,
    pub vectors: NeuronVectors,
    pub groups: NeuronGroups,
}

impl Layer {
    pub(crate) fn new(frame: FrameCanvas, maps: Arc<dyn NeuronMaps>) -> Self {
        Layer { frame, maps }
    }

    /// The layer's name (`layer2`, `head`, `block3_rgb`, …).
    pub fn name(&self) -> &str {
        self.maps.layer()
    }

    /// `FFN layer2`, `NeRV head`: the model's kind and the layer, for titles and tables.
    pub fn label(&self) -> String {
        format!("{} {}", self.frame.model(), self.name())
    }

    /// The frame whose canvas this layer is part of.
    pub fn frame(&self) -> &FrameCanvas {
        &self.frame
    }

    /// The maps, computed on demand, one neuron at a time.
    pub fn maps(&self) -> &dyn NeuronMaps {
        self.maps.as_ref()
    }

    pub fn num_neurons(&self) -> usize {
        self.maps.num_neurons()
    }

    /// The per-neuron statistics (sum, abs-sum, max, dead, pixels above 1/N, …), one row per
    /// neuron ([`crate::analysis::stats`]).
    pub fn stats(&self) -> Result<DataFrame> {
        neuron_stats(self.maps(), self.frame.model_name(), self.frame.frame())
    }

    /// The `count` neurons with the largest total |contribution|, strongest first: their rows of
    /// [`Layer::stats`].
    pub fn strongest(&self, count: usize) -> Result<DataFrame> {
        let order = SortMultipleOptions::default().with_order_descending(true);
        (self.stats()?.lazy())
            .sort(["abs_sum"], order)
            .limit(count as u32)
            .collect()
            .map_err(|e| table_error("strongest neurons", e))
    }

    /// The largest `|Σ_n C_n(p) − y(p)|` over the frame: the maps of a per-channel layer
    /// (`layer3_rgb`, `head`, `block2_rgb`) against each output channel, the maps of a summed
    /// layer against the output summed over its channels. Zero up to rounding for every layer
    /// of the conservative canvas and for the official last layer.
    pub fn conservation_error(&self) -> Result<f32> {
        let src = self.maps();
        let output = self.frame.output();
        let p = src.num_pixels();
        let channels = output.len() / p.max(1);
        let per_channel = (0..src.num_neurons().min(1)).any(|n| src.channel(n).is_some());
        let want: Vec<f64> = if per_channel {
            output.iter().map(|&v| f64::from(v)).collect()
        } else {
            (0..p)
                .map(|i| (0..channels).map(|c| f64::from(output[c * p + i])).sum())
                .collect()
        };
        let sums = per_channel_sum(src, if per_channel { channels } else { 1 });
        Ok(sums
            .iter()
            .zip(&want)
            .map(|(s, w)| (s - w).abs())
            .fold(0.0f64, f64::max) as f32)
    }

    /// Is the representation distributed: pixels per neuron and neurons per pixel at the
    /// paper's target areas τ(0.1) and τ(0.5) ([`crate::analysis::distributed`]).
    pub fn distributed(&self) -> Result<Distributed> {
        distributed(self.maps(), &PAPER_TARGETS)
    }

    /// The layer's |contribution| per pixel against the frame's intensity and Sobel edges
    /// ([`crate::analysis::intensity`]).
    pub fn intensity(&self) -> Result<Intensity> {
        intensity(self.maps(), self.frame.target())
    }

    /// The share of each instance of the frame's annotation in each neuron's contribution
    /// ([`crate::analysis::objects`]); [`object_shares_over`] for several frames.
    pub fn object_shares(&self, fidelity: Fidelity) -> Result<ObjectShares> {
        object_shares_over(std::slice::from_ref(self), fidelity)
    }

    /// The objects' areas against the number of neurons contributing to them.
    pub fn area_vs_neurons(&self) -> Result<AreaNeurons> {
        area_vs_neurons(self.maps(), self.annotation()?)
    }

    /// The per-neuron variance of δ over each partition of the frame (RGB and Gabor clusters,
    /// grid cells, instances) under `fidelity` ([`crate::analysis::partitions`]).
    pub fn variances(&self, fidelity: Fidelity) -> Result<PartitionVariances> {
        neuron_variances(self.maps(), self.frame.partitions(fidelity)?.as_ref())
    }

    /// The neurons as vectors of their mean map over the frame's Gabor texture clusters, grouped
    /// by k-means ([`crate::analysis::groups`]).
    pub fn groups(&self, opts: &GroupOptions) -> Result<LayerGroups> {
        let labels = self.frame.gabor_labels()?;
        let features = Features::Labels {
            name: "gabor",
            labels: &labels,
        };
        let vectors = neuron_vectors(self.maps(), &features, THUMBNAIL)?;
        let groups = neuron_groups(&vectors, opts)?;
        Ok(LayerGroups {
            model: self.frame.model().to_string(),
            vectors,
            groups,
        })
    }

    fn annotation(&self) -> Result<&PanopticFrame> {
        self.frame
            .annotation()
            .ok_or_else(|| self.frame.no_annotation())
    }
}

/// The instance shares of one layer over several frames (the same layer of one model on each):
/// the instances of the video, each frame measured against its own annotation.
pub fn object_shares_over(layers: &[Layer], fidelity: Fidelity) -> Result<ObjectShares> {
    if let Some(l) = layers.iter().find(|l| l.name() != layers[0].name()) {
        return Err(XincError::InvalidArgument(format!(
            "object shares over frames of one layer: got {} and {}",
            layers[0].label(),
            l.label()
        )));
    }
    let pairs: Vec<(&dyn NeuronMaps, &PanopticFrame)> = layers
        .iter()
        .map(|l| Ok((l.maps(), l.annotation()?)))
        .collect::<Result<_>>()?;
    object_shares(&pairs, other_region(fidelity))
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, w) = self.maps.size();
        write!(
            f,
            "Layer({} of {}, frame {}, {}: {} neurons, {h}×{w})",
            self.label(),
            self.frame.model_name(),
            self.frame.frame(),
            self.frame.method(),
            self.num_neurons()
        )
    }
}
