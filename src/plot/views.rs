//! How a study's values look in a notebook: [`FrameCanvas::figure`] (the target beside the
//! model's output), [`Layer::figure`] (the maps of the strongest neurons), the neuron groups'
//! figures, the partitions of a frame, and an `evcxr_display` for each of these and for the
//! analyses' results (their tables), so that a cell ending in one of them shows it; the
//! causal tests' figures (ablation, rate–distortion).

use polars::prelude::DataFrame;

use crate::analysis::distributed::Distributed;
use crate::analysis::intensity::Intensity;
use crate::analysis::motion::MotionResult;
use crate::analysis::objects::AreaNeurons;
use crate::analysis::partitions::{summary_frame, FramePartitions, PartitionVariances};
use crate::analysis::{f64_values, str_values};
use crate::error::{Result, XincError};
use crate::study::{FrameCanvas, Layer, LayerGroups};

use super::figure::Figure;
use super::figures::{
    map_grid_figure_with, neuron_group_scatter, rgb_grid_figure, scatter_groups,
    strongest_maps_figure, xy_curves, LineStyle, MapGridConfig, ScatterData,
};
use super::table::display_frame;

/// Maps a layer's display shows, and their columns.
const SHOWN: (usize, usize) = (8, 4);

impl FrameCanvas {
    /// What the model learned of the frame beside its output, titled with the PSNR.
    pub fn figure(&self) -> Result<Figure> {
        let (h, w) = self.size();
        let titles = [
            format!("{} frame {}", self.video(), self.frame()),
            format!("{} output", self.model()),
        ];
        let fig = rgb_grid_figure(&[self.target(), self.reconstruction()], h, w, &titles, 2)?;
        Ok(fig.with_title(&format!(
            "{} {}, frame {}: {:.2} dB",
            self.model(),
            self.model_name(),
            self.frame(),
            self.psnr()
        )))
    }

    /// Shows [`FrameCanvas::figure`] in an evcxr notebook.
    pub fn evcxr_display(&self) {
        match self.figure() {
            Ok(fig) => fig.evcxr_display(),
            Err(e) => println!("{self:?}: {e}"),
        }
    }
}

impl Layer {
    /// The maps of the `count` neurons with the largest total |contribution|, strongest first,
    /// titled by neuron and share of the layer's total.
    pub fn figure(&self, count: usize) -> Result<Figure> {
        let cols = count.clamp(1, SHOWN.1);
        let fig = strongest_maps_figure(self.maps(), count, cols)?;
        Ok(fig.with_title(&format!(
            "{} ({}, frame {}): the {} strongest of {} neurons",
            self.label(),
            self.frame().method(),
            self.frame().frame(),
            count.min(self.num_neurons()),
            self.num_neurons()
        )))
    }

    /// Shows the eight strongest maps ([`Layer::figure`]) in an evcxr notebook.
    pub fn evcxr_display(&self) {
        match self.figure(SHOWN.0) {
            Ok(fig) => fig.evcxr_display(),
            Err(e) => println!("{self:?}: {e}"),
        }
    }
}

impl LayerGroups {
    /// The groups on the first two principal components; hovering a point shows the neuron's
    /// map.
    pub fn figure(&self) -> Result<Figure> {
        neuron_group_scatter(&self.groups, &self.vectors, &self.model)
    }

    /// The mean thumbnail of each group, titled with its size: what each group looks at.
    pub fn means_figure(&self) -> Result<Figure> {
        let means = self.groups.mean_thumbnails(&self.vectors);
        let maps: Vec<&[f32]> = means.iter().map(|(m, _)| m.as_slice()).collect();
        let titles: Vec<String> = (means.iter().enumerate())
            .map(|(g, (_, n))| format!("group {g}: {n} neurons"))
            .collect();
        let config = MapGridConfig {
            cols: 3,
            value_label: "mean normalised |contribution|".into(),
        };
        let (h, w) = self.vectors.thumb_size;
        let fig = map_grid_figure_with(&maps, h, w, &titles, &config)?;
        Ok(fig.with_title(&format!(
            "{} {}: mean map per group",
            self.model, self.groups.layer
        )))
    }

    /// Shows [`LayerGroups::figure`] in an evcxr notebook.
    pub fn evcxr_display(&self) {
        match self.figure() {
            Ok(fig) => fig.evcxr_display(),
            Err(e) => println!("{}: {e}", self.groups.layer),
        }
    }
}

/// Each partition of each of `parts` as an image: a pixel coloured by its region (hues a golden
/// ratio apart, so that neighbouring labels differ; pixels in no region black), one row per
/// fidelity, titled by fidelity, partition and region count.
pub fn partitions_figure(parts: &[&FramePartitions]) -> Result<Figure> {
    let mut images: Vec<Vec<f32>> = Vec::new();
    let mut titles: Vec<String> = Vec::new();
    let Some(first) = parts.first() else {
        return Err(XincError::InvalidArgument("no partitions to draw".into()));
    };
    let (h, w) = (first.height, first.width);
    for p in parts {
        for part in &p.partitions {
            let mut image = vec![0.0f32; 3 * h * w];
            for (r, pixels) in part.regions.pixels.iter().enumerate() {
                let hue = (r as f32 * 0.618_034).fract();
                for c in 0..3 {
                    let phase = std::f32::consts::TAU * (hue + c as f32 / 3.0);
                    for &px in pixels {
                        image[c * h * w + px as usize] = 0.5 + 0.45 * phase.cos();
                    }
                }
            }
            images.push(image);
            titles.push(format!(
                "{} {} ({} regions)",
                p.fidelity.name(),
                part.kind.name(),
                part.regions.len()
            ));
        }
    }
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let cols = first.partitions.len().max(1);
    let fig = rgb_grid_figure(&refs, h, w, &titles, cols)?;
    Ok(fig.with_title(&format!("Partitions of frame {}", first.frame)))
}

/// The notebook display of an analysis result: its table (`display_frame`), or the error that
/// building it met.
fn display_table(what: &str, table: Result<DataFrame>) {
    match table {
        Ok(df) => display_frame(&df),
        Err(e) => println!("{what}: {e}"),
    }
}

impl Distributed {
    /// Shows the one-row summary (pixels per neuron, neurons per pixel at each target).
    pub fn evcxr_display(&self) {
        display_table(&self.layer, self.to_frame().map(|t| t.summary));
    }
}

impl Intensity {
    /// Shows the correlations with intensity and edges.
    pub fn evcxr_display(&self) {
        display_table(&self.layer, self.to_frame());
    }
}

impl PartitionVariances {
    /// Shows the summary per partition (median log std and rank).
    pub fn evcxr_display(&self) {
        display_table(&self.layer, summary_frame(std::slice::from_ref(self)));
    }
}

impl AreaNeurons {
    /// Shows each object's area and contributing neurons.
    pub fn evcxr_display(&self) {
        display_table(&self.layer, self.to_frame());
    }
}

impl MotionResult {
    /// Shows the agreement of the contribution change with the flow.
    pub fn evcxr_display(&self) {
        display_table(&self.layer, self.to_frame());
    }
}

/// The rate–distortion curves of a pruning table ([`crate::compress::prune::rate_distortion`]):
/// per ranking, the quantised PSNR against bits per pixel, in the table's order of fractions.
pub fn rate_distortion_figure(pruning: &DataFrame) -> Result<Figure> {
    pruning_curves(
        pruning,
        ("bits_per_pixel", "bits per pixel"),
        "Pruning: quantised PSNR against bits per pixel, per ranking",
    )
}

/// The same table's quantised PSNR against the fraction of the layer pruned, per ranking.
pub fn pruning_quality_figure(pruning: &DataFrame) -> Result<Figure> {
    pruning_curves(
        pruning,
        ("fraction", "fraction of the layer's kernels pruned"),
        "Pruning: quantised PSNR against the fraction pruned, per ranking",
    )
}

/// One curve per ranking of `pruning`: `x.0` (a column, with axis label `x.1`) against the
/// quantised PSNR.
fn pruning_curves(pruning: &DataFrame, x: (&str, &str), title: &str) -> Result<Figure> {
    let rankings = str_values(pruning, "ranking")?;
    let (xs, psnr) = (
        f64_values(pruning, x.0)?,
        f64_values(pruning, "quant_psnr")?,
    );
    let mut curves: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for (i, name) in rankings.iter().enumerate() {
        let at = match curves.iter().position(|c| c.0 == *name) {
            Some(at) => at,
            None => {
                curves.push((name.to_string(), Vec::new(), Vec::new()));
                curves.len() - 1
            }
        };
        curves[at].1.push(xs[i]);
        curves[at].2.push(psnr[i]);
    }
    let style = LineStyle {
        x_label: x.1.into(),
        y_label: "quantised PSNR (dB)".into(),
        log_y: false,
    };
    xy_curves(&curves, title, &style)
}

/// One layer's removals ([`crate::analysis::ablation::LayerAblation::neurons_table`], possibly filtered to one layer):
/// each neuron's PSNR drop against the rank of its Σ|map| under each canvas (0: the smallest
/// map, 1: the largest), one colour per canvas. A canvas that predicts the ablation puts the
/// large drops on the right.
pub fn ablation_figure(neurons: &DataFrame) -> Result<Figure> {
    let text = |name: &str| -> Result<String> {
        Ok(str_values(neurons, name)?
            .into_iter()
            .next()
            .unwrap_or_default())
    };
    let drops = f64_values(neurons, "psnr_drop")?;
    let n = drops.len();
    let methods: Vec<String> = (neurons.get_column_names().iter())
        .filter_map(|c| c.strip_prefix("total_").map(str::to_string))
        .collect();
    let (mut x, mut y, mut group) = (Vec::new(), Vec::new(), Vec::new());
    for (m, method) in methods.iter().enumerate() {
        let ranks = crate::analysis::ranks(&f64_values(neurons, &format!("total_{method}"))?);
        for (rank, drop) in ranks.into_iter().zip(&drops) {
            x.push((rank - 1.0) / (n.max(2) - 1) as f64);
            y.push(*drop);
            group.push(m);
        }
    }
    let names: Vec<String> = methods.iter().map(|m| format!("{m} canvas")).collect();
    let title = format!(
        "{} {}: the PSNR drop of each removal against the rank of its map",
        text("model")?,
        text("layer")?
    );
    scatter_groups(
        &ScatterData {
            x: &x,
            y: &y,
            group: &group,
            group_names: &names,
            x_label: "rank of Σ|map| (0 smallest, 1 largest)",
            y_label: "PSNR drop (dB)",
            ..Default::default()
        },
        &title,
    )
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::compress::prune::{kernel_norms, rate_distortion};
    use crate::compress::CompressOptions;

    #[test]
    fn a_pruning_table_draws_both_curves_per_ranking() {
        let model = crate::models::nerv::tiny_nerv("");
        let frames: Vec<Vec<f32>> = (0..4)
            .map(|t| {
                (0..3 * 24 * 36)
                    .map(|i| ((i + t) % 5) as f32 / 5.0)
                    .collect()
            })
            .collect();
        let norms = kernel_norms(&model, "head").unwrap();
        let random: Vec<f32> = (0..norms.len()).map(|i| (i * 7 % 5) as f32).collect();
        let table = rate_distortion(
            &model,
            &frames,
            "head",
            &[("weight norm".into(), norms), ("random".into(), random)],
            &[0.0, 0.5],
            (&CompressOptions::default(), None),
            &Device::Cpu,
        )
        .unwrap();
        for figure in [
            rate_distortion_figure(&table).unwrap(),
            pruning_quality_figure(&table).unwrap(),
        ] {
            let json = figure.to_json();
            assert_eq!(
                json.matches("\"name\":\"weight norm\"").count(),
                1,
                "{json}"
            );
            assert_eq!(json.matches("\"name\":\"random\"").count(), 1);
        }
    }
}
