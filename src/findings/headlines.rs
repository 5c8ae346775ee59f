//! The headline numbers: per analysed layer (first analysed frame) and per motion comparison,
//! with the claims checked against them. Serialised as they are into `summary.json`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::verdict::Claim;
use crate::analysis::distributed::Distributed;
use crate::analysis::stats::NeuronRow;
use crate::canvas::maps::NeuronMaps;

/// The headline numbers of one analysed layer (first analysed frame).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LayerHeadline {
    pub model: String,
    pub layer: String,
    pub neurons: usize,
    pub dead_fraction: f64,
    /// Median pixels per live neuron (share > 1/N), as a fraction of the frame.
    pub median_pixels_fraction: f64,
    /// Mean fraction of neurons above τ(0.1) per pixel.
    pub neurons_per_pixel_t01: f64,
    /// Mean fraction of neurons above τ(0.5) per pixel.
    pub neurons_per_pixel_t05: f64,
    pub pearson_intensity: f64,
    pub spearman_absdiff_edges: f64,
    /// Mean within-category minus mean between-category correlation of instance profiles.
    pub semantics_gap: f64,
    pub area_spearman: f64,
    /// The partition with the lowest median log std, official mode.
    pub lowest_partition_official: String,
    /// The partition with the lowest median log std, corrected mode.
    pub lowest_partition_corrected: String,
    /// Median log std of δ per partition (instances, rgb, gabor, grid), official mode.
    pub median_log_std: BTreeMap<String, f64>,
    pub group_ari: f64,
}

/// One motion comparison.
#[derive(Clone, Debug, Serialize)]
pub struct MotionHeadline {
    pub model: String,
    pub layer: String,
    pub frame: usize,
    pub pearson: f64,
    pub spearman: f64,
    pub iou_top10: f64,
    pub flow_source: String,
}

/// Everything the analyses conclude, as written to `summary.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Headlines {
    pub video: String,
    /// By model, then layer name.
    pub layers: Vec<LayerHeadline>,
    pub motion: Vec<MotionHeadline>,
    pub claims: Vec<Claim>,
}

/// The layer headlines under construction, keyed by model and layer.
#[derive(Default)]
pub(super) struct LayerHeadlines(BTreeMap<(String, String), LayerHeadline>);

impl LayerHeadlines {
    /// The headline of `src`'s layer of `model`, created on first use.
    pub(super) fn of(&mut self, model: &str, src: &dyn NeuronMaps) -> &mut LayerHeadline {
        self.0
            .entry((model.to_string(), src.layer().to_string()))
            .or_insert_with(|| LayerHeadline {
                model: model.to_string(),
                layer: src.layer().to_string(),
                neurons: src.num_neurons(),
                ..LayerHeadline::default()
            })
    }

    /// By model, then layer name.
    pub(super) fn into_layers(self) -> Vec<LayerHeadline> {
        self.0.into_values().collect()
    }
}

impl LayerHeadline {
    /// Dead fraction, median pixels per live neuron and neurons per pixel, from a layer's
    /// per-neuron rows and its distributedness over `pixels` pixels.
    pub(super) fn fill_distributed(&mut self, rows: &[NeuronRow], d: &Distributed, pixels: usize) {
        let n = rows.len().max(1) as f64;
        self.dead_fraction = d.pixels.dead as f64 / n;
        let mut live: Vec<u32> = rows
            .iter()
            .filter(|r| r.abs_sum > 0.0)
            .map(|r| r.pixels)
            .collect();
        live.sort_unstable();
        self.median_pixels_fraction =
            live.get(live.len() / 2).map_or(0.0, |&m| m as f64) / pixels as f64;
        let mean_at = |t: f64| {
            d.per_pixel
                .iter()
                .find(|npp| npp.t == t)
                .map_or(f64::NAN, |npp| npp.mean)
        };
        self.neurons_per_pixel_t01 = mean_at(0.1);
        self.neurons_per_pixel_t05 = mean_at(0.5);
    }
}
