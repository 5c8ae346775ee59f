//! Ablation: remove a neuron, measure what the model's output really loses, and ask which
//! canvas predicted it (issue 21, items 2 and 3).
//!
//! - [`ffn`]: every unit of an FFN layer, removed exactly (a rank-one term of the next
//!   pre-activation);
//! - [`nerv`]: NeRV kernels `i→k` of the head or a block, removed by batched partial forward
//!   passes ([`crate::models::nerv::Nerv::ablated_head_outputs`]), on the study's device;
//! - [`job`]: the budgeted job over a layer's neurons (a seeded random order, so that any prefix
//!   is a uniform sample), with a progress bar and a resumable checkpoint.
//!
//! What is measured per removal ([`Removal`], against a [`Scene`]): the change of the output
//! that the maps sum to (per pixel, summed over the RGB channels, as the summed maps are), the
//! drop of the official PSNR (prediction clamped and rounded to 8 bits), and the drop of the
//! same PSNR over each object (the panoptic instances of the frame, and "other"). Beside it, per
//! canvas ([`CanvasView`]): the map's total |contribution|, the Pearson correlation over pixels
//! of map and change, and the map's |contribution| inside each object. Nothing per pixel is
//! kept. [`Agreement`] then says how well each canvas predicted the removals of a layer.

pub mod ffn;
pub mod job;
pub mod nerv;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::regions::Regions;
use super::{mean, pearson, spearman, table_error};
use crate::canvas::maps::NeuronMaps;
use crate::canvas::Method;
use crate::error::{Result, XincError};

pub use ffn::ablate_ffn_layer;
pub use job::{AblationBudget, Checkpoint};
pub use nerv::NervAblation;

/// How a prediction and its target lay out their values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[P, 3]`, pixel by pixel (the FFN).
    PixelMajor,
    /// `[3, P]`, channel by channel (the NeRV).
    ChannelMajor,
}

/// What removals are measured against: the target, its objects, and the intact model's errors.
#[derive(Clone, Debug)]
pub struct Scene {
    target: Vec<f32>,
    layout: Layout,
    regions: Regions,
    intact: Errors,
}

/// Sums of squared quantised errors: over the frame and inside each object.
#[derive(Clone, Debug)]
struct Errors {
    total: f64,
    objects: Vec<f64>,
}

impl Scene {
    /// `intact`: the intact model's prediction of `target` (both `3·P` values in `layout`);
    /// `regions`: the objects, pixel indices below P (none when the frame has no annotation).
    pub fn new(target: Vec<f32>, layout: Layout, regions: Regions, intact: &[f32]) -> Result<Self> {
        let pixels = target.len() / 3;
        if target.len() != intact.len() || target.len() % 3 != 0 {
            return Err(XincError::InvalidArgument(format!(
                "the target has {} values, the prediction {}",
                target.len(),
                intact.len()
            )));
        }
        if regions
            .pixels
            .iter()
            .flatten()
            .any(|&p| p as usize >= pixels)
        {
            return Err(XincError::InvalidArgument(format!(
                "an object has pixels outside the {pixels}-pixel frame"
            )));
        }
        let mut scene = Scene {
            target,
            layout,
            regions,
            intact: Errors {
                total: 0.0,
                objects: Vec::new(),
            },
        };
        scene.intact = scene.errors(intact);
        Ok(scene)
    }

    /// The official PSNR of the intact model.
    pub fn psnr(&self) -> f64 {
        -10.0 * (self.intact.total / self.target.len().max(1) as f64).log10()
    }

    pub fn object_names(&self) -> &[String] {
        &self.regions.names
    }

    fn pixels(&self) -> usize {
        self.target.len() / 3
    }

    fn errors(&self, pred: &[f32]) -> Errors {
        let p = self.pixels();
        let mut per_pixel = vec![0f64; p];
        for (i, (&y, &t)) in pred.iter().zip(&self.target).enumerate() {
            let q = ((y.clamp(0.0, 1.0) * 255.0).round() / 255.0) as f64;
            let at = match self.layout {
                Layout::PixelMajor => i / 3,
                Layout::ChannelMajor => i % p,
            };
            per_pixel[at] += (q - t as f64).powi(2);
        }
        Errors {
            total: per_pixel.iter().sum(),
            objects: self.regions.sums_by(|q| per_pixel[q]),
        }
    }

    /// What removing `neuron` did: `pred`, the ablated prediction; `change`, the intact minus
    /// the ablated output that the maps sum to, summed over channels (`[P]`). `maps`: the
    /// canvases' maps of the layer, one view each.
    pub fn removal(
        &self,
        neuron: usize,
        pred: &[f32],
        change: &[f32],
        maps: &[&dyn NeuronMaps],
    ) -> Result<Removal> {
        if pred.len() != self.target.len() || change.len() != self.pixels() {
            return Err(XincError::InvalidArgument(format!(
                "neuron {neuron}: a prediction of {} values and a change of {} pixels for a \
                 {}-pixel target",
                pred.len(),
                change.len(),
                self.pixels()
            )));
        }
        let errors = self.errors(pred);
        let drop = |after: f64, before: f64| 10.0 * (after / before).log10();
        let change: Vec<f64> = change.iter().map(|&v| f64::from(v)).collect();
        let views = maps
            .iter()
            .map(|m| CanvasView::of(*m, neuron, &change, &self.regions))
            .collect::<Result<Vec<_>>>()?;
        Ok(Removal {
            neuron,
            psnr_drop: drop(errors.total, self.intact.total),
            object_drops: (errors.objects.iter().zip(&self.intact.objects))
                .map(|(&a, &b)| drop(a, b))
                .collect(),
            views,
        })
    }
}

/// What removing one neuron did, and what each canvas said of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Removal {
    /// The neuron's flat index in its layer (a NeRV kernel i→k is `i·Cout + k`).
    pub neuron: usize,
    /// The drop of the official PSNR (intact − ablated), dB.
    #[serde(deserialize_with = "nan_null::one")]
    pub psnr_drop: f64,
    /// The same over each object of the scene (NaN where the intact model was exact there).
    #[serde(deserialize_with = "nan_null::many")]
    pub object_drops: Vec<f64>,
    /// One per canvas, in the order of the maps given.
    pub views: Vec<CanvasView>,
}

/// What one canvas says of a removed neuron.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanvasView {
    /// Σ|map| over the frame.
    #[serde(deserialize_with = "nan_null::one")]
    pub total: f64,
    /// The Pearson correlation, over pixels, of the map and the change (NaN where either is
    /// constant).
    #[serde(deserialize_with = "nan_null::one")]
    pub pixel_pearson: f64,
    /// Σ|map| inside each object.
    #[serde(deserialize_with = "nan_null::many")]
    pub object_abs: Vec<f64>,
}

/// JSON has no NaN: serde_json writes it as `null`, read back here as NaN.
mod nan_null {
    use serde::{Deserialize, Deserializer};

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let values = Vec::<Option<f64>>::deserialize(d)?;
        Ok(values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    }
}

impl CanvasView {
    fn of(
        maps: &dyn NeuronMaps,
        neuron: usize,
        change: &[f64],
        regions: &Regions,
    ) -> Result<CanvasView> {
        if neuron >= maps.num_neurons() || maps.num_pixels() != change.len() {
            return Err(XincError::InvalidArgument(format!(
                "{}: no map of {} pixels for neuron {neuron}",
                maps.layer(),
                change.len()
            )));
        }
        let map = maps.map(neuron);
        let values: Vec<f64> = map.iter().map(|&v| f64::from(v)).collect();
        Ok(CanvasView {
            total: values.iter().map(|v| v.abs()).sum(),
            pixel_pearson: pearson(&values, change),
            object_abs: regions.abs_sums(&map),
        })
    }
}

/// The removals of one layer, measured against both canvases.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerAblation {
    pub model: String,
    pub layer: String,
    /// The canvases of [`CanvasView`]s, in order.
    pub methods: Vec<Method>,
    /// The objects of [`Removal::object_drops`], in order.
    pub objects: Vec<String>,
    /// The layer's neurons (the removals may be a sample of them).
    pub neurons: usize,
    /// NeRV: the conv's output channels (neuron n is kernel `n / Cout → n % Cout`); FFN: `None`.
    pub kernel_outputs: Option<usize>,
    /// The official PSNR of the intact model.
    pub psnr: f64,
    pub removals: Vec<Removal>,
}

/// How well one canvas layer predicts the removals of its neurons.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    /// The neurons removed.
    pub units: usize,
    /// Spearman, over the removed neurons, of Σ|map| against the PSNR drop.
    pub spearman_total_psnr_drop: f64,
    /// Mean over neurons of the Pearson correlation, over pixels, of map and change (neurons
    /// whose map or change is constant are left out, as a correlation is not defined there).
    pub mean_pixel_pearson: f64,
    /// Mean over objects of the Spearman, over neurons, of the map's |contribution| inside the
    /// object against the object's PSNR drop (objects where it is undefined left out).
    pub mean_object_spearman: f64,
    /// The objects that mean is over.
    pub objects: usize,
}

impl LayerAblation {
    /// The agreement of canvas `m` (an index into [`LayerAblation::methods`]).
    pub fn agreement(&self, m: usize) -> Agreement {
        let drops: Vec<f64> = self.removals.iter().map(|r| r.psnr_drop).collect();
        let totals: Vec<f64> = self.removals.iter().map(|r| r.views[m].total).collect();
        let pixel: Vec<f64> = (self.removals.iter())
            .map(|r| r.views[m].pixel_pearson)
            .filter(|r| r.is_finite())
            .collect();
        let objects: Vec<f64> = (0..self.objects.len())
            .map(|o| {
                let (share, drop) = self.object_pairs(m, o);
                spearman(&share, &drop)
            })
            .filter(|r| r.is_finite())
            .collect();
        Agreement {
            units: self.removals.len(),
            spearman_total_psnr_drop: spearman(&totals, &drops),
            mean_pixel_pearson: mean(&pixel),
            mean_object_spearman: mean(&objects),
            objects: objects.len(),
        }
    }

    /// Canvas `m`'s |contribution| inside object `o` and the object's PSNR drop, per removal
    /// (removals whose drop is undefined left out).
    fn object_pairs(&self, m: usize, o: usize) -> (Vec<f64>, Vec<f64>) {
        (self.removals.iter())
            .map(|r| (r.views[m].object_abs[o], r.object_drops[o]))
            .filter(|(_, d)| d.is_finite())
            .unzip()
    }

    fn ids(&self, n: usize) -> (u32, Option<u32>) {
        match self.kernel_outputs {
            Some(k) => ((n / k) as u32, Some((n % k) as u32)),
            None => (n as u32, None),
        }
    }

    /// One row per removed neuron: `model`, `layer`, `neuron`, `input`, `output` (null for an
    /// FFN unit), `psnr_drop`, then per canvas `total_{method}` and `pixel_pearson_{method}`.
    pub fn neurons_table(&self) -> Result<DataFrame> {
        let n = self.removals.len();
        let ids: Vec<_> = self.removals.iter().map(|r| self.ids(r.neuron)).collect();
        let mut cols = vec![
            Column::new("model".into(), vec![self.model.clone(); n]),
            Column::new("layer".into(), vec![self.layer.clone(); n]),
            Column::new(
                "neuron".into(),
                self.removals
                    .iter()
                    .map(|r| r.neuron as u32)
                    .collect::<Vec<_>>(),
            ),
            Column::new("input".into(), ids.iter().map(|i| i.0).collect::<Vec<_>>()),
            Column::new("output".into(), ids.iter().map(|i| i.1).collect::<Vec<_>>()),
            Column::new(
                "psnr_drop".into(),
                self.removals
                    .iter()
                    .map(|r| r.psnr_drop)
                    .collect::<Vec<_>>(),
            ),
        ];
        for (m, method) in self.methods.iter().enumerate() {
            let view = |f: fn(&CanvasView) -> f64| -> Vec<f64> {
                self.removals.iter().map(|r| f(&r.views[m])).collect()
            };
            cols.push(Column::new(
                format!("total_{method}").into(),
                view(|v| v.total),
            ));
            cols.push(Column::new(
                format!("pixel_pearson_{method}").into(),
                view(|v| v.pixel_pearson),
            ));
        }
        DataFrame::new(n, cols).map_err(|e| table_error("ablated neurons", e))
    }

    /// One row per (removed neuron, object): `layer`, `neuron`, `object`, `psnr_drop` (the
    /// object's), then per canvas `abs_{method}` (the map's |contribution| inside the object).
    pub fn objects_table(&self) -> Result<DataFrame> {
        let rows: Vec<(&Removal, usize)> = (self.removals.iter())
            .flat_map(|r| (0..self.objects.len()).map(move |o| (r, o)))
            .collect();
        let n = rows.len();
        let mut cols = vec![
            Column::new("layer".into(), vec![self.layer.clone(); n]),
            Column::new(
                "neuron".into(),
                rows.iter()
                    .map(|(r, _)| r.neuron as u32)
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "object".into(),
                rows.iter()
                    .map(|(_, o)| self.objects[*o].clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "psnr_drop".into(),
                rows.iter()
                    .map(|(r, o)| r.object_drops[*o])
                    .collect::<Vec<_>>(),
            ),
        ];
        for (m, method) in self.methods.iter().enumerate() {
            cols.push(Column::new(
                format!("abs_{method}").into(),
                rows.iter()
                    .map(|(r, o)| r.views[m].object_abs[*o])
                    .collect::<Vec<_>>(),
            ));
        }
        DataFrame::new(n, cols).map_err(|e| table_error("ablated objects", e))
    }
}

/// One row per (layer, canvas): `model`, `layer`, `method`, `units` (removed), `layer_units`,
/// `spearman_total_psnr_drop`, `mean_pixel_pearson`, `mean_object_spearman`, `objects`, and the
/// largest and mean PSNR drop of the removals.
pub fn agreement_table(layers: &[LayerAblation]) -> Result<DataFrame> {
    let rows: Vec<(&LayerAblation, Method, Agreement)> = (layers.iter())
        .flat_map(|l| {
            (l.methods.iter().enumerate()).map(move |(m, &method)| (l, method, l.agreement(m)))
        })
        .collect();
    let text = |f: &dyn Fn(&(&LayerAblation, Method, Agreement)) -> String| -> Vec<String> {
        rows.iter().map(f).collect()
    };
    let num = |f: &dyn Fn(&(&LayerAblation, Method, Agreement)) -> f64| -> Vec<f64> {
        rows.iter().map(f).collect()
    };
    let count = |f: &dyn Fn(&(&LayerAblation, Method, Agreement)) -> usize| -> Vec<u32> {
        rows.iter().map(|r| f(r) as u32).collect()
    };
    let drops =
        |l: &LayerAblation| -> Vec<f64> { l.removals.iter().map(|r| r.psnr_drop).collect() };
    df!(
        "model" => text(&|r| r.0.model.clone()),
        "layer" => text(&|r| r.0.layer.clone()),
        "method" => text(&|r| r.1.to_string()),
        "units" => count(&|r| r.2.units),
        "layer_units" => count(&|r| r.0.neurons),
        "spearman_total_psnr_drop" => num(&|r| r.2.spearman_total_psnr_drop),
        "mean_pixel_pearson" => num(&|r| r.2.mean_pixel_pearson),
        "mean_object_spearman" => num(&|r| r.2.mean_object_spearman),
        "objects" => count(&|r| r.2.objects),
        "max_psnr_drop" => num(&|r| drops(r.0).into_iter().fold(f64::NEG_INFINITY, f64::max)),
        "mean_psnr_drop" => num(&|r| mean(&drops(r.0))),
    )
    .map_err(|e| table_error("ablation", e))
}

/// Per (layer, canvas, object): `model`, `layer`, `method`, `object`, the Spearman, over the
/// removed neurons, of the map's |contribution| inside the object against the object's PSNR
/// drop (`spearman_abs_psnr_drop`), and the neurons it is over (`units`).
pub fn object_agreement_table(layers: &[LayerAblation]) -> Result<DataFrame> {
    let mut cols: ([Vec<String>; 4], Vec<f64>, Vec<u32>) = Default::default();
    for l in layers {
        for (m, method) in l.methods.iter().enumerate() {
            for (o, object) in l.objects.iter().enumerate() {
                let (share, drop) = l.object_pairs(m, o);
                let row = [&l.model, &l.layer, &method.to_string(), object];
                for (c, v) in cols.0.iter_mut().zip(row) {
                    c.push(v.clone());
                }
                cols.1.push(spearman(&share, &drop));
                cols.2.push(share.len() as u32);
            }
        }
    }
    let [model, layer, method, object] = cols.0;
    df!(
        "model" => model,
        "layer" => layer,
        "method" => method,
        "object" => object,
        "spearman_abs_psnr_drop" => cols.1,
        "units" => cols.2,
    )
    .map_err(|e| table_error("ablation_objects", e))
}
