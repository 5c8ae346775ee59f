//! The sections of the report, one function per finding, and the headline numbers they yield.
//!
//! Every section reads the analysed layers through [`NeuronMaps`] (FFN maps in memory, NeRV
//! kernels computed on demand), adds its tables to the report's `stats/` and its figures to the
//! page, and records its headline numbers per layer in [`Headlines`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::claims::{claims, Claim};
use super::{Report, ReportOptions, Section};
use crate::analysis::distributed::{distributed_from_rows, PAPER_TARGETS};
use crate::analysis::groups::{neuron_groups, neuron_vectors, Features, GroupOptions, THUMBNAIL};
use crate::analysis::intensity::intensity_from_heat;
use crate::analysis::motion::{frame_flow, motion_table, motion_vs_flow, DEFAULT_TOP_PERCENTS};
use crate::analysis::objects::{
    area_summary_frame, area_vs_neurons, object_shares, other_region, ObjectShares,
};
use crate::analysis::partitions::{
    frame_partitions, gabor_labels, gt_from_planar, neuron_variances, summary_frame,
    PartitionConfig,
};
use crate::analysis::source::{InMemoryMaps, NeuronMaps};
use crate::analysis::stats::{neuron_rows, neuron_table, NeuronRow};
use crate::analysis::{stack_tables, Fidelity};
use crate::canvas::nerv::{NervFrameData, NervLayer};
use crate::canvas::Method;
use crate::data::optical_flow::FarnebackParams;
use crate::data::panoptic::{Clip, PanopticFrame};
use crate::error::Result;
use crate::models::nerv::Nerv;
use crate::plot::figures::MapGridConfig;
use crate::plot::figures::{box_plots, map_grid_figure_with, sorted_curves, BoxGroup, LineStyle};
use crate::plot::figures::{neuron_group_scatter, object_share_heatmap};
use crate::study::Study;

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

/// Everything the report concludes, also written to `summary.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Headlines {
    pub video: String,
    pub layers: Vec<LayerHeadline>,
    pub motion: Vec<MotionHeadline>,
    pub claims: Vec<Claim>,
}

/// The analysed layers of one model on one frame.
struct Analysed<'a> {
    model: String,
    frame: usize,
    gt: Vec<f32>,
    annotation: Option<&'a PanopticFrame>,
    layers: Vec<Box<dyn NeuronMaps + 'a>>,
}

/// Builds every section; returns the headlines.
pub(super) fn build(report: &mut Report, study: &Study, opts: &ReportOptions) -> Result<Headlines> {
    let clip = &study.clip;
    let mut heads: BTreeMap<(String, String), LayerHeadline> = BTreeMap::new();
    let ffn_canvas_maps = match &study.ffn {
        Some(_) => Some(report.timed("FFN canvas", |_| study.ffn_canvas_by(opts.method))?),
        None => None,
    };
    let nerv_frames = match &study.nerv {
        Some(_) => Some(report.timed("NeRV forward passes", |_| {
            nerv_frame_data(
                study,
                &evenly_spaced(&study.analysed_frames(), opts.max_frames),
            )
        })?),
        None => None,
    };
    let mut units: Vec<Analysed> = Vec::new();
    if let (Some(ffn), Some(canvas)) = (&study.ffn, &ffn_canvas_maps) {
        units.push(Analysed {
            model: ffn.name.clone(),
            frame: 0,
            gt: study.ffn_target()?,
            annotation: study.annotation(0),
            layers: canvas
                .iter()
                .map(|m| Box::new(InMemoryMaps::new(m)) as Box<dyn NeuronMaps>)
                .collect(),
        });
    }
    if let (Some(nerv), Some(frames)) = (&study.nerv, &nerv_frames) {
        for (f, data) in frames {
            units.push(Analysed {
                model: nerv.name.clone(),
                frame: *f,
                gt: study.nerv_target(*f)?,
                annotation: study.annotation(*f),
                layers: study
                    .paper_layers()?
                    .into_iter()
                    .map(|l| nerv_source(data, l, opts.method))
                    .collect::<Result<_>>()?,
            });
        }
    }
    let firsts = first_units(&units);
    report.timed("per-neuron statistics, distributed, intensity", |r| {
        neurons_distributed_intensity(r, &units, &firsts, &mut heads)
    })?;
    if let (Some(nerv), Some(frames)) = (&study.nerv, &nerv_frames) {
        report.timed("per-neuron statistics of the inner NeRV blocks", |r| {
            inner_blocks(r, &nerv.model, &nerv.name, &frames[0], opts.method)
        })?;
    }
    report.timed("objects", |r| objects(r, &units, &mut heads))?;
    report.timed("what neurons care about", |r| {
        partitions(r, clip, &units, &firsts, opts, &mut heads)
    })?;
    let mut headlines = Headlines {
        video: clip.video.clone(),
        ..Headlines::default()
    };
    if study.nerv.is_some() {
        headlines.motion = report.timed("motion", |r| motion(r, study, opts))?;
    }
    report.timed("neuron groups", |r| {
        groups(r, &units, &firsts, opts, &mut heads)
    })?;
    headlines.layers = heads.into_values().collect();
    headlines.claims = claims(&headlines);
    Ok(headlines)
}

/// At most `max` of `frames`, evenly spaced, the first and the last included.
fn evenly_spaced(frames: &[usize], max: Option<usize>) -> Vec<usize> {
    match max {
        Some(k) if k < frames.len() => {
            let n = frames.len();
            (0..k.max(1))
                .map(|i| {
                    frames[if k <= 1 {
                        0
                    } else {
                        (i * (n - 1) + (k - 1) / 2) / (k - 1)
                    }]
                })
                .collect()
        }
        _ => frames.to_vec(),
    }
}

fn nerv_frame_data(study: &Study, frames: &[usize]) -> Result<Vec<(usize, NervFrameData)>> {
    frames
        .iter()
        .map(|&f| Ok((f, study.nerv_frame(f)?)))
        .collect()
}

fn nerv_source(
    data: &NervFrameData,
    layer: NervLayer,
    method: Method,
) -> Result<Box<dyn NeuronMaps + '_>> {
    Study::nerv_maps_by(data, layer, method)
}

/// The first analysed frame of each model (indices into `units`).
fn first_units(units: &[Analysed]) -> Vec<usize> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (i, u) in units.iter().enumerate() {
        if !seen.contains(&u.model.as_str()) {
            seen.push(&u.model);
            out.push(i);
        }
    }
    out
}

fn headline<'h>(
    heads: &'h mut BTreeMap<(String, String), LayerHeadline>,
    model: &str,
    src: &dyn NeuronMaps,
) -> &'h mut LayerHeadline {
    heads
        .entry((model.to_string(), src.layer().to_string()))
        .or_insert_with(|| LayerHeadline {
            model: model.to_string(),
            layer: src.layer().to_string(),
            neurons: src.num_neurons(),
            ..LayerHeadline::default()
        })
}

/// Per-neuron statistics of every analysed layer and frame; B.2 and B.1 on the first frames.
fn neurons_distributed_intensity(
    r: &mut Report,
    units: &[Analysed],
    firsts: &[usize],
    heads: &mut BTreeMap<(String, String), LayerHeadline>,
) -> Result<()> {
    let mut dist = Section::new(
        "distributed",
        "Representation is distributed (B.2)",
        "Pixels per neuron: the pixels where a neuron's share of the absolute contribution exceeds \
         1/N. Neurons per pixel: the fraction of neurons whose |contribution| exceeds τ(t), the \
         value above which the layer's largest contributions carry 1 − t of its total. Each layer \
         uses its own contributions (the official MLP notebook used layer 2's for layer 3).",
    );
    let mut inten = Section::new(
        "intensity",
        "Contribution vs intensity and edges (B.1)",
        "heat = Σ_n |C_n|, min-max normalised, against the normalised intensity of the frame; \
         diff = heat − intensity, compared with the Sobel edge magnitude.",
    );
    let (mut curves, mut frac_maps, mut frac_titles) = (Vec::new(), Vec::new(), Vec::new());
    for (i, u) in units.iter().enumerate() {
        for src in &u.layers {
            let (rows, heat) = neuron_rows(src.as_ref());
            r.add_table(
                "neurons",
                neuron_table(src.as_ref(), &u.model, u.frame, &rows)?,
            );
            if !firsts.contains(&i) {
                continue;
            }
            let d = distributed_from_rows(src.as_ref(), &rows, &PAPER_TARGETS)?;
            let tables = d.to_frame()?;
            r.add_table("pixels_per_neuron", tables.pixels_per_neuron);
            r.add_table("distributed_curve", tables.curve);
            r.add_table("distributed_summary", tables.summary);
            r.add_table("neurons_per_pixel", tables.neurons_per_pixel);
            let label = format!("{} {}", u.model, src.layer());
            curves.push((
                label.clone(),
                d.pixels
                    .sorted
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect::<Vec<f64>>(),
            ));
            for npp in &d.per_pixel {
                frac_maps.push(npp.fraction.clone());
                frac_titles.push(format!("{label}, t = {}", npp.t));
            }
            let h = headline(heads, &u.model, src.as_ref());
            fill_distributed(h, &rows, &d, src.num_pixels());
            let it = intensity_from_heat(src.layer(), &heat, src.size(), &u.gt)?;
            r.add_table("intensity", it.to_frame()?);
            h.pearson_intensity = it.pearson_intensity;
            h.spearman_absdiff_edges = it.spearman_absdiff_edges;
            let (titles, maps): (Vec<&str>, Vec<Vec<f32>>) = it.panels().into_iter().unzip();
            let (hh, ww) = src.size();
            let refs: Vec<&[f32]> = maps.iter().map(|m| m.as_slice()).collect();
            // The figure's title names the layer: the maps' titles stay short.
            let fig = map_grid_figure_with(&refs, hh, ww, &titles, &grid(4, "min-max normalised"))?;
            inten.figure(fig.with_title(&format!("{label}: heat, intensity and edges")));
        }
    }
    let style = LineStyle {
        x_label: "neuron rank / N".into(),
        y_label: "pixels above 1/N".into(),
        log_y: false,
    };
    dist.figure(sorted_curves(
        &curves,
        "Pixels per neuron, sorted",
        &style,
        true,
    )?);
    if let Some(first) = units.first().and_then(|u| u.layers.first()) {
        let (hh, ww) = first.size();
        let refs: Vec<&[f32]> = frac_maps.iter().map(|m| m.as_slice()).collect();
        let config = grid(4, "fraction of neurons above τ");
        let fig = map_grid_figure_with(&refs, hh, ww, &frac_titles, &config)?;
        dist.figure(fig.with_title("Neurons per pixel: the fraction of neurons above τ(t)"));
    }
    for (name, caption) in [
        ("distributed_summary", "Pixels per neuron"),
        ("neurons_per_pixel", "Neurons per pixel"),
    ] {
        if let Some(parts) = r.tables.get(name) {
            dist.table(caption, &stack_tables(name, parts.clone())?);
        }
    }
    if let Some(parts) = r.tables.get("intensity") {
        inten.table("Correlations", &stack_tables("intensity", parts.clone())?);
    }
    r.sections.push(dist);
    r.sections.push(inten);
    Ok(())
}

fn fill_distributed(
    h: &mut LayerHeadline,
    rows: &[NeuronRow],
    d: &crate::analysis::distributed::Distributed,
    pixels: usize,
) {
    let n = rows.len().max(1) as f64;
    h.dead_fraction = d.pixels.dead as f64 / n;
    let mut live: Vec<u32> = rows
        .iter()
        .filter(|r| r.abs_sum > 0.0)
        .map(|r| r.pixels)
        .collect();
    live.sort_unstable();
    h.median_pixels_fraction = live.get(live.len() / 2).map_or(0.0, |&m| m as f64) / pixels as f64;
    let mean_at = |t: f64| {
        d.per_pixel
            .iter()
            .find(|npp| npp.t == t)
            .map_or(f64::NAN, |npp| npp.mean)
    };
    h.neurons_per_pixel_t01 = mean_at(0.1);
    h.neurons_per_pixel_t05 = mean_at(0.5);
}

/// The per-neuron table of the NeRV blocks before the last, first analysed frame, streamed.
fn inner_blocks(
    r: &mut Report,
    nerv: &Nerv,
    model: &str,
    frame: &(usize, NervFrameData),
    method: Method,
) -> Result<()> {
    let blocks = nerv.blocks().len();
    for index in (1..blocks).rev() {
        let layer = NervLayer::Block {
            index,
            pre_gelu: false,
        };
        let src = nerv_source(&frame.1, layer, method)?;
        let (rows, _) = neuron_rows(src.as_ref());
        r.add_table(
            "neurons",
            neuron_table(src.as_ref(), model, frame.0, &rows)?,
        );
    }
    Ok(())
}

/// B.3 / B.4 / B.7: instance shares, semantics, thing vs stuff, area vs neurons.
fn objects(
    r: &mut Report,
    units: &[Analysed],
    heads: &mut BTreeMap<(String, String), LayerHeadline>,
) -> Result<()> {
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
    let other = other_region(Fidelity::Official);
    let models: Vec<&str> = dedup(units.iter().map(|u| u.model.as_str()));
    let mut area_results = Vec::new();
    for model in models {
        let frames: Vec<&Analysed> = units
            .iter()
            .filter(|u| u.model == model && u.annotation.is_some())
            .collect();
        let Some(first) = frames.first() else {
            continue;
        };
        for (l, src0) in first.layers.iter().enumerate() {
            let pairs: Vec<(&dyn NeuronMaps, &PanopticFrame)> = frames
                .iter()
                .filter_map(|u| Some((u.layers[l].as_ref(), u.annotation?)))
                .collect();
            let shares = object_shares(&pairs, other)?;
            add_object_tables(r, &shares)?;
            let area = area_vs_neurons(src0.as_ref(), pairs[0].1)?;
            let h = headline(heads, model, src0.as_ref());
            h.semantics_gap = shares.semantics(0).gap();
            h.area_spearman = area.spearman;
            r.add_table("area_neurons", area.to_frame()?);
            area_results.push(area);
            if l + 1 == first.layers.len() {
                sec.figure(object_share_heatmap(&shares, model, 60)?);
            }
        }
    }
    for (name, caption) in [
        ("semantics", "Semantics (instance profiles by category)"),
        (
            "thing_stuff",
            "Thing vs stuff (per neuron mean |c| per pixel)",
        ),
    ] {
        if let Some(parts) = r.tables.get(name) {
            sec.table(caption, &stack_tables(name, parts.clone())?);
        }
    }
    if !area_results.is_empty() {
        sec.table(
            "Object area vs contributing neurons",
            &area_summary_frame(&area_results)?,
        );
    }
    r.sections.push(sec);
    Ok(())
}

fn add_object_tables(r: &mut Report, shares: &ObjectShares) -> Result<()> {
    r.add_table("object_shares", shares.to_frame()?);
    r.add_table("semantics", shares.semantics_frame()?);
    r.add_table("thing_stuff", shares.thing_vs_stuff().summary_frame()?);
    Ok(())
}

/// B.6 in both fidelity modes: δ-variance per partition, box plots of log std.
fn partitions(
    r: &mut Report,
    clip: &Clip,
    units: &[Analysed],
    firsts: &[usize],
    opts: &ReportOptions,
    heads: &mut BTreeMap<(String, String), LayerHeadline>,
) -> Result<()> {
    let mut sec = Section::new(
        "partitions",
        "What neurons care about: colour, edges, space, objects (B.6)",
        "For each neuron, the variance over the regions of a partition of δ = (actual − expected) / \
         expected share of its |contribution|. A low variance means the neuron is indifferent to \
         that partition. Official mode: lattice grid cells, six θ = 0 Gabor kernels with uint8 \
         responses, signed grid δ. Corrected mode: contiguous cells, 24 float Gabor kernels, |δ| \
         everywhere, \"other\" = complement.",
    );
    for fidelity in [Fidelity::Official, Fidelity::Corrected] {
        let mut results = Vec::new();
        let mut boxes = Vec::new();
        for &i in firsts {
            let u = &units[i];
            let Some(ann) = u.annotation else { continue };
            let (h, w) = (clip.size[0], clip.size[1]);
            let mut cfg = PartitionConfig::for_video(&clip.video, fidelity);
            cfg.seed = opts.seed;
            let parts = frame_partitions(&gt_from_planar(&u.gt, h, w)?, ann, &cfg)?;
            for src in &u.layers {
                let v = neuron_variances(src.as_ref(), &parts)?;
                let summary = v.summary();
                let lowest = summary.iter().find(|s| s.rank == 1).map(|s| s.kind.name());
                let hl = headline(heads, &u.model, src.as_ref());
                let lowest = lowest.unwrap_or("none").to_string();
                match fidelity {
                    Fidelity::Official => hl.lowest_partition_official = lowest,
                    Fidelity::Corrected => hl.lowest_partition_corrected = lowest,
                }
                if fidelity == Fidelity::Official {
                    hl.median_log_std = summary
                        .iter()
                        .map(|s| (s.kind.name().to_string(), s.median_log_std))
                        .collect();
                }
                for (kind, var) in v.kinds.iter().zip(&v.variance) {
                    let logs: Vec<f64> = var
                        .iter()
                        .filter(|v| v.is_finite() && **v > 0.0)
                        .map(|v| 0.5 * v.ln())
                        .collect();
                    boxes.push(BoxGroup::new(kind.name(), logs).in_category(format!(
                        "{} {}",
                        u.model,
                        src.layer()
                    )));
                }
                r.add_table("partition_variances", v.to_frame()?);
                results.push(v);
            }
        }
        if results.is_empty() {
            continue;
        }
        let summary = summary_frame(&results)?;
        sec.table(&format!("{} mode", fidelity.name()), &summary);
        r.add_table("partitions_summary", summary);
        sec.figure(box_plots(
            &boxes,
            &format!("log std of δ per partition ({} mode)", fidelity.name()),
            "log std",
        )?);
    }
    r.sections.push(sec);
    Ok(())
}

/// B.5: contribution change against the flow, head and last block, frames of `opts`.
fn motion(r: &mut Report, study: &Study, opts: &ReportOptions) -> Result<Vec<MotionHeadline>> {
    let (clip, nerv) = (&study.clip, study.nerv()?);
    let nerv_name = study
        .nerv
        .as_ref()
        .map_or_else(String::new, |n| n.name.clone());
    let mut sec = Section::new(
        "motion",
        "Motion vs change in contribution (B.5)",
        "D_t(p) = Σ_n ||C_n^t(p)| − |C_n^(t−1)(p)||, against the flow magnitude of frame t: the \
         clip's own flow files where it has them (ground truth on synthetic clips), else \
         Farnebäck's dense optical flow estimated from the frames.",
    );
    let limit = nerv.config().frames.min(clip.frames.len());
    let mut results = Vec::new();
    for &t in opts.motion_frames.iter().filter(|&&t| t >= 1 && t < limit) {
        let data = nerv_frame_data(study, &[t - 1, t])?;
        let (flow, source) = frame_flow(clip, t, &FarnebackParams::default())?;
        let (mut maps, mut titles) = (Vec::new(), Vec::new());
        for layer in study.paper_layers()? {
            let (prev, cur) = (
                nerv_source(&data[0].1, layer, opts.method)?,
                nerv_source(&data[1].1, layer, opts.method)?,
            );
            let m = motion_vs_flow(
                prev.as_ref(),
                cur.as_ref(),
                t,
                &flow,
                source,
                &DEFAULT_TOP_PERCENTS,
            )?;
            if maps.is_empty() {
                maps.push(m.flow_norm.clone());
                titles.push(format!("flow magnitude, frame {t}"));
            }
            maps.push(m.change_norm.clone());
            titles.push(format!("D_t {layer}, frame {t}"));
            results.push(m);
        }
        let [h, w] = clip.size;
        let refs: Vec<&[f32]> = maps.iter().map(|m| m.as_slice()).collect();
        let fig = map_grid_figure_with(&refs, h, w, &titles, &grid(3, "min-max normalised"))?;
        sec.figure(fig.with_title(&format!("Flow and contribution change, frame {t}")));
    }
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let table = motion_table(&results)?;
    sec.table("Agreement of D_t with the flow", &table);
    r.add_table("motion", table);
    r.sections.push(sec);
    Ok(results
        .iter()
        .map(|m| MotionHeadline {
            model: nerv_name.clone(),
            layer: m.layer.clone(),
            frame: m.frame,
            pearson: m.pearson,
            spearman: m.spearman,
            iou_top10: m
                .iou
                .iter()
                .find(|(k, _)| *k == 10.0)
                .map_or(f64::NAN, |x| x.1),
            flow_source: m.flow_source.name().to_string(),
        })
        .collect())
}

/// B.8: Gabor-cluster neuron vectors, k-means groups, PCA embedding, seed stability.
fn groups(
    r: &mut Report,
    units: &[Analysed],
    firsts: &[usize],
    opts: &ReportOptions,
    heads: &mut BTreeMap<(String, String), LayerHeadline>,
) -> Result<()> {
    let mut sec = Section::new(
        "groups",
        "Neuron groups (B.8)",
        "Each live neuron's min-max normalised |contribution| averaged over 32 Gabor-texture \
         clusters of the frame (official Gabor features), grouped by k-means; shown on the first \
         two principal components (PCA from linfa-reduction: no maintained Rust UMAP fits this \
         stack). Hover a point to see the neuron's map. Stability: mean pairwise adjusted Rand \
         index of the grouping over 5 k-means seeds.",
    );
    let group_opts = GroupOptions {
        k: opts.groups,
        seed: opts.seed,
        ..GroupOptions::default()
    };
    for &i in firsts {
        let u = &units[i];
        let [h, w] = [u.layers[0].size().0, u.layers[0].size().1];
        let labels = gabor_labels(
            &gt_from_planar(&u.gt, h, w)?,
            32,
            opts.seed,
            Fidelity::Official,
        )?;
        for src in &u.layers {
            let features = Features::Labels {
                name: "gabor",
                labels: &labels,
            };
            let vectors = neuron_vectors(src.as_ref(), &features, THUMBNAIL)?;
            if vectors.neurons.len() < group_opts.k {
                continue;
            }
            let g = neuron_groups(&vectors, &group_opts)?;
            headline(heads, &u.model, src.as_ref()).group_ari = g.ari_mean;
            r.add_table("neuron_groups", g.to_frame()?);
            r.add_table("groups_summary", g.summary()?);
            sec.figure(neuron_group_scatter(&g, &vectors, &u.model)?);
        }
    }
    if let Some(parts) = r.tables.get("groups_summary") {
        sec.table("Groups", &stack_tables("groups_summary", parts.clone())?);
    }
    r.sections.push(sec);
    Ok(())
}

/// A map grid of `cols` columns whose values are `value_label`.
fn grid(cols: usize, value_label: &str) -> MapGridConfig {
    MapGridConfig {
        cols,
        value_label: value_label.into(),
    }
}

fn dedup<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

impl Headlines {
    /// The findings for the top of the page: each claim in the paper's words, its verdict, the
    /// criterion and the table of the numbers that decide it.
    pub(super) fn to_html(&self) -> Result<String> {
        let mut html = String::from(
            "<h2 id=\"findings\">Findings</h2>\n<p>Each of the paper's claims, checked against \
             the numbers of the sections below.</p>\n",
        );
        for c in &self.claims {
            html += &c.to_html()?;
        }
        Ok(html)
    }
}

#[cfg(test)]
mod tests {
    use super::evenly_spaced;

    #[test]
    fn frame_subsets_are_evenly_spaced_with_both_ends() {
        let frames: Vec<usize> = (0..24).map(|i| i * 5).collect();
        assert_eq!(evenly_spaced(&frames, None), frames);
        assert_eq!(evenly_spaced(&frames, Some(30)), frames);
        assert_eq!(evenly_spaced(&frames, Some(1)), vec![0]);
        assert_eq!(evenly_spaced(&frames, Some(2)), vec![0, 115]);
        let six = evenly_spaced(&frames, Some(6));
        assert_eq!(six.len(), 6);
        assert_eq!((six[0], six[5]), (0, 115));
        assert!(six.windows(2).all(|w| w[1] > w[0]));
    }
}
