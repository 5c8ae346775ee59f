//! The sections of the page, one function per finding family, each drawn from the [`Findings`]
//! alone: their tables and figures, nothing recomputed.

use super::page::Section;
use super::{ablation, compare};
use crate::analysis::objects::{area_summary_frame, AreaNeurons};
use crate::error::Result;
use crate::findings::{Findings, LayerFinding};
use crate::plot::figures::{box_plots, map_grid_figure_with, sorted_curves, BoxGroup, LineStyle};
use crate::plot::figures::{neuron_group_scatter, object_share_heatmap, MapGridConfig};

/// Every section of the page, in order.
pub(super) fn sections(f: &Findings) -> Result<Vec<Section>> {
    let mut out = vec![distributed(f)?, intensity(f)?, objects(f)?, partitions(f)?];
    if !f.motion.is_empty() {
        out.push(motion(f)?);
    }
    out.push(groups(f)?);
    out.extend(ablation::section(f)?);
    out.extend(ablation::pruning_section(f)?);
    if f.comparison.is_some() {
        out.push(compare::section(f));
    }
    Ok(out)
}

/// "model layer", as figures name a layer.
fn label(l: &LayerFinding) -> String {
    format!("{} {}", l.model, l.layer)
}

/// B.2: the sorted pixels-per-neuron curves and the neurons-per-pixel maps.
fn distributed(f: &Findings) -> Result<Section> {
    let mut sec = Section::new(
        "distributed",
        "Representation is distributed (B.2)",
        "Pixels per neuron: the pixels where a neuron's share of the absolute contribution exceeds \
         1/N. Neurons per pixel: the fraction of neurons whose |contribution| exceeds τ(t), the \
         value above which the layer's largest contributions carry 1 − t of its total. Each layer \
         uses its own contributions (the official MLP notebook used layer 2's for layer 3).",
    );
    let curves: Vec<(String, Vec<f64>)> = f
        .layers
        .iter()
        .map(|l| {
            let sorted = &l.distributed.pixels.sorted;
            (label(l), sorted.iter().map(|&v| f64::from(v)).collect())
        })
        .collect();
    let style = LineStyle {
        x_label: "neuron rank / N".into(),
        y_label: "pixels above 1/N".into(),
        log_y: false,
    };
    sec.figure(sorted_curves(
        &curves,
        "Pixels per neuron, sorted",
        &style,
        true,
    )?);
    if let Some(first) = f.layers.first() {
        let (mut maps, mut titles) = (Vec::new(), Vec::new());
        for l in &f.layers {
            for npp in &l.distributed.per_pixel {
                maps.push(npp.fraction.as_slice());
                titles.push(format!("{}, t = {}", label(l), npp.t));
            }
        }
        let (h, w) = first.size;
        let config = grid(4, "fraction of neurons above τ");
        let fig = map_grid_figure_with(&maps, h, w, &titles, &config)?;
        sec.figure(fig.with_title("Neurons per pixel: the fraction of neurons above τ(t)"));
    }
    sec.table_of(f, "distributed_summary", "Pixels per neuron");
    sec.table_of(f, "neurons_per_pixel", "Neurons per pixel");
    Ok(sec)
}

/// B.1: heat, intensity and edge maps of each layer, and their correlations.
fn intensity(f: &Findings) -> Result<Section> {
    let mut sec = Section::new(
        "intensity",
        "Contribution vs intensity and edges (B.1)",
        "heat = Σ_n |C_n|, min-max normalised, against the normalised intensity of the frame; \
         diff = heat − intensity, compared with the Sobel edge magnitude.",
    );
    for l in &f.layers {
        let (titles, maps): (Vec<&str>, Vec<Vec<f32>>) = l.intensity.panels().into_iter().unzip();
        let refs: Vec<&[f32]> = maps.iter().map(|m| m.as_slice()).collect();
        let (h, w) = l.size;
        // The figure's title names the layer: the maps' titles stay short.
        let fig = map_grid_figure_with(&refs, h, w, &titles, &grid(4, "min-max normalised"))?;
        sec.figure(fig.with_title(&format!("{}: heat, intensity and edges", label(l))));
    }
    sec.table_of(f, "intensity", "Correlations");
    Ok(sec)
}

/// B.3 / B.4 / B.7: the instance shares of each model's last layer, the semantics, thing vs
/// stuff and area tables.
fn objects(f: &Findings) -> Result<Section> {
    let mut sec = Section::new(
        "objects",
        "Objects, things and stuff (B.3, B.4, B.7)",
        "A[n, instance] = mean |C_n| over the instance's mask (with the pseudo-instance \"other\" = \
         union of the masks, as the official code), normalised over instances (and, for the \
         video model, over the analysed frames). Semantics gap: the mean correlation of the \
         neuron profiles of same-category instance pairs minus that of different-category pairs \
         (near 0: no object semantics). Area vs neurons: Spearman ρ between an instance's area and \
         the number of neurons whose mean share on it exceeds 1/N.",
    );
    for (i, o) in f.objects.iter().enumerate() {
        let last_of_model = f
            .objects
            .get(i + 1)
            .is_none_or(|next| next.model != o.model);
        if last_of_model {
            sec.figure(object_share_heatmap(&o.shares, &o.model, 60)?);
        }
    }
    sec.table_of(f, "semantics", "Semantics (instance profiles by category)");
    sec.table_of(
        f,
        "thing_stuff",
        "Thing vs stuff (per neuron mean |c| per pixel)",
    );
    if !f.objects.is_empty() {
        let areas: Vec<AreaNeurons> = f.objects.iter().map(|o| o.area.clone()).collect();
        sec.table(
            "Object area vs contributing neurons",
            &area_summary_frame(&areas)?,
        );
    }
    Ok(sec)
}

/// B.6: per fidelity mode, the summary table and box plots of each layer's log std of δ.
fn partitions(f: &Findings) -> Result<Section> {
    let mut sec = Section::new(
        "partitions",
        "What neurons care about: colour, edges, space, objects (B.6)",
        "For each neuron, the variance over the regions of a partition of δ = (actual − expected) / \
         expected share of its |contribution|. A low variance means the neuron is indifferent to \
         that partition. Official mode: lattice grid cells, six θ = 0 Gabor kernels with uint8 \
         responses, signed grid δ. Corrected mode: contiguous cells, 24 float Gabor kernels, |δ| \
         everywhere, \"other\" = complement.",
    );
    for p in &f.partitions {
        let mut boxes = Vec::new();
        for (model, v) in &p.layers {
            for (kind, var) in v.kinds.iter().zip(&v.variance) {
                let logs: Vec<f64> = var
                    .iter()
                    .filter(|v| v.is_finite() && **v > 0.0)
                    .map(|v| 0.5 * v.ln())
                    .collect();
                let category = format!("{model} {}", v.layer);
                boxes.push(BoxGroup::new(kind.name(), logs).in_category(category));
            }
        }
        let mode = p.fidelity.name();
        sec.table(&format!("{mode} mode"), &p.summary);
        sec.figure(box_plots(
            &boxes,
            &format!("log std of δ per partition ({mode} mode)"),
            "log std",
        )?);
    }
    Ok(sec)
}

/// B.5: per frame t, the flow magnitude and each layer's D_t; the agreement table.
fn motion(f: &Findings) -> Result<Section> {
    let mut sec = Section::new(
        "motion",
        "Motion vs change in contribution (B.5)",
        "D_t(p) = Σ_n ||C_n^t(p)| − |C_n^(t−1)(p)||, against the flow magnitude of frame t: the \
         clip's own flow files where it has them (ground truth on synthetic clips), else \
         Farnebäck's dense optical flow estimated from the frames.",
    );
    for m in &f.motion {
        let Some(first) = m.layers.first() else {
            continue;
        };
        let t = m.frame;
        let mut maps = vec![first.flow_norm.as_slice()];
        let mut titles = vec![format!("flow magnitude, frame {t}")];
        for r in &m.layers {
            maps.push(&r.change_norm);
            titles.push(format!("D_t {}, frame {t}", r.layer));
        }
        let config = grid(3, "min-max normalised");
        let fig = map_grid_figure_with(&maps, first.height, first.width, &titles, &config)?;
        sec.figure(fig.with_title(&format!("Flow and contribution change, frame {t}")));
    }
    sec.table_of(f, "motion", "Agreement of D_t with the flow");
    Ok(sec)
}

/// B.8: each layer's neuron groups on the first two principal components.
fn groups(f: &Findings) -> Result<Section> {
    let mut sec = Section::new(
        "groups",
        "Neuron groups (B.8)",
        "Each live neuron's min-max normalised |contribution| averaged over 32 Gabor-texture \
         clusters of the frame (official Gabor features), grouped by k-means; shown on the first \
         two principal components (PCA from linfa-reduction: no maintained Rust UMAP fits this \
         stack). Hover a point to see the neuron's map. Stability: mean pairwise adjusted Rand \
         index of the grouping over 5 k-means seeds.",
    );
    for g in &f.groups {
        sec.figure(neuron_group_scatter(&g.groups, &g.vectors, &g.model)?);
    }
    sec.table_of(f, "groups_summary", "Groups");
    Ok(sec)
}

/// A map grid of `cols` columns whose values are `value_label`.
fn grid(cols: usize, value_label: &str) -> MapGridConfig {
    MapGridConfig {
        cols,
        value_label: value_label.into(),
    }
}
