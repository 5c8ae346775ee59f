//! What the analyses of a study conclude, without a figure: every table of the report's `stats/`,
//! the headline numbers, the verdict on each of the paper's claims, and the per-analysis results
//! a figure is drawn from (sorted curves, per-pixel maps, instance shares, partition variances,
//! motion maps, group embeddings), as plain data.
//!
//! [`findings`] is the one entry point: the HTML report ([`crate::report`]) renders its result,
//! a dataset-scale batch task ([`crate::dataset::batch`]) writes its tables, a notebook reads it.
//!
//! Layering: findings sit on the [`crate::study`] and the [`crate::analysis`] layer and never
//! draw; [`crate::plot`] and [`crate::report`] sit above. The FFN is analysed on the clip's first
//! frame (layers 1..L), the NeRV on the clip's annotated frames (head and the last block, as the
//! paper; the per-neuron table also covers every other block on the first analysed frame).
//!
//! Files: this module holds the options, the [`Findings`] and the driver; one file per finding
//! family ([`neurons`], [`objects`], [`partitions`], [`motion`], [`groups`], and the causal
//! tests, [`cause`]: ablation against both canvases, pruning of the NeRV head); the headline numbers
//! ([`headlines`]), the claim verdicts ([`claims`]), the comparison of both canvas methods
//! ([`compare`]) and how a number is quoted ([`numbers`]).

pub mod cause;
pub mod claims;
pub mod compare;
pub mod groups;
pub mod headlines;
pub mod motion;
pub mod neurons;
pub mod numbers;
pub mod objects;
pub mod partitions;
mod units;
mod verdict;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use polars::prelude::DataFrame;

use crate::analysis::stack_tables;
use crate::canvas::nerv::official_form;
use crate::canvas::Method;
use crate::error::{Result, XincError};
use crate::study::Study;

pub use compare::{ClaimComparison, MethodComparison};
pub use groups::GroupFinding;
pub use headlines::{Headlines, LayerHeadline, MotionHeadline};
pub use motion::MotionFinding;
pub use neurons::LayerFinding;
pub use objects::ObjectFinding;
pub use partitions::PartitionFinding;
pub use verdict::{Claim, ClaimKind, Evidence, EvidenceColumn, EvidenceRow, Verdict};

use headlines::LayerHeadlines;
use units::Units;

/// What the analyses need.
#[derive(Clone, Debug, PartialEq)]
pub struct FindingsOptions {
    /// The canvas every analysis reads (default: the official one).
    pub method: Method,
    /// Seed of every k-means (RGB and Gabor partitions, neuron groups).
    pub seed: u64,
    /// Neuron groups per layer (spec B.8: 6).
    pub groups: usize,
    /// Frames t whose contribution change D_t (t−1 → t) is compared with the flow (spec B.5:
    /// 1 and 10); frames beyond the clip are skipped.
    pub motion_frames: Vec<usize>,
    /// Analyse at most this many of the NeRV's annotated frames, evenly spaced, the first and
    /// the last included (all of them when `None`).
    pub max_frames: Option<usize>,
    /// Also run every analysis under the other method and compare the paper's conclusions
    /// under both ([`Findings::comparison`], tables `claims_by_method` and `method_comparison`).
    pub compare_methods: bool,
    /// Remove neurons and measure which canvas predicts what they do (tables `ablation` and
    /// `ablation_objects`, [`crate::analysis::ablation`]; it reads both canvases, whatever
    /// `method`): every FFN unit, every NeRV head kernel, and a sample of the NeRV's last block.
    pub ablation: bool,
    /// The kernels of the NeRV's last block removed in the ablation: a seeded uniform sample
    /// of this many; 0: the head only (`xinc ablate` runs a whole layer as a budgeted job).
    pub ablation_kernels: usize,
    /// Prune these fractions of the NeRV head by contribution, weight norm and at random, then
    /// quantise and code each pruned model (table `pruning`, [`crate::compress::prune`]); empty:
    /// no pruning.
    pub pruning: Vec<f64>,
}

impl Default for FindingsOptions {
    fn default() -> Self {
        FindingsOptions {
            method: Method::Official,
            seed: 0,
            groups: 6,
            motion_frames: vec![1, 10],
            max_frames: None,
            compare_methods: false,
            ablation: true,
            ablation_kernels: 256,
            pruning: cause::PRUNING_FRACTIONS.to_vec(),
        }
    }
}

/// Everything the analyses of a study conclude. The per-analysis results cover the first
/// analysed frame of each model, except [`Findings::motion`] (frames t−1, t) and the objects
/// (every annotated analysed frame).
#[derive(Clone)]
pub struct Findings {
    /// The clip's video id.
    pub video: String,
    /// The canvas the analyses read.
    pub method: Method,
    /// The headline numbers and the claims checked against them (`summary.json`).
    pub headlines: Headlines,
    /// Every table, stacked, by name in name order (the report's `stats/<name>.parquet`).
    pub tables: Vec<(String, DataFrame)>,
    /// Per-neuron statistics, distributedness and intensity of each analysed layer.
    pub layers: Vec<LayerFinding>,
    /// Instance shares and area vs neurons of each analysed layer with an annotation.
    pub objects: Vec<ObjectFinding>,
    /// The δ-variances per partition, in each fidelity mode that had an annotated frame.
    pub partitions: Vec<PartitionFinding>,
    /// Contribution change against the flow, one entry per compared frame t.
    pub motion: Vec<MotionFinding>,
    /// Neuron groups of each layer with at least as many live neurons as groups.
    pub groups: Vec<GroupFinding>,
    /// The headlines and claims under both methods, when [`FindingsOptions::compare_methods`].
    pub comparison: Option<MethodComparison>,
    /// Wall time of each step, in seconds.
    pub timings: Vec<(String, f64)>,
}

impl Findings {
    /// The paper's claims, checked (the same as `headlines.claims`).
    pub fn claims(&self) -> &[Claim] {
        &self.headlines.claims
    }

    /// The table `name` (`neurons`, `motion`, …), if the analyses produced it.
    pub fn table(&self, name: &str) -> Option<&DataFrame> {
        self.tables.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Short: the video, the method, each claim's verdict and each table's shape.
impl fmt::Debug for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let claims: Vec<String> = self
            .claims()
            .iter()
            .map(|c| format!("{:?}: {}", c.kind, c.verdict.text()))
            .collect();
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|(n, t)| format!("{n} {}×{}", t.height(), t.width()))
            .collect();
        f.debug_struct("Findings")
            .field("video", &self.video)
            .field("method", &self.method)
            .field("claims", &claims)
            .field("tables", &tables)
            .field("compared", &self.comparison.is_some())
            .finish_non_exhaustive()
    }
}

/// Runs every analysis of `study` under `opts.method` (and, when asked, under the other method
/// too) and collects what they conclude.
pub fn findings(study: &Study, opts: &FindingsOptions) -> Result<Findings> {
    if study.ffn.is_none() && study.nerv.is_none() {
        return Err(XincError::InvalidArgument(
            "findings need an FFN or a NeRV model".into(),
        ));
    }
    let only_exact = study
        .nerv
        .as_ref()
        .is_some_and(|n| !official_form(&n.model));
    if only_exact && opts.method == Method::Official {
        tracing::warn!(
            "the official code defines no block maps for this NeRV (not the paper's form): \
             every analysis uses the conservative canvas, and nothing is compared"
        );
    }
    let adjusted = FindingsOptions {
        method: if only_exact {
            Method::Conservative
        } else {
            opts.method
        },
        compare_methods: opts.compare_methods && !only_exact,
        ..opts.clone()
    };
    let opts = &adjusted;
    let mut run = Run::default();
    let units = Units::compute(&mut run, study, opts)?;
    let analysed = units.analysed(study, opts.method)?;
    let firsts = units::first_units(&analysed);
    let layers = run.timed("per-neuron statistics, distributed, intensity", |r| {
        neurons::layers(r, &analysed, &firsts)
    })?;
    if let Some(frame) = units.nerv_frames.first() {
        run.timed("per-neuron statistics of the inner NeRV blocks", |r| {
            neurons::inner_blocks(r, study, frame, opts.method)
        })?;
    }
    let objects = run.timed("objects", |r| objects::objects(r, &analysed))?;
    let partitions = run.timed("what neurons care about", |r| {
        partitions::partitions(r, &study.clip, &analysed, &firsts, opts.seed)
    })?;
    let motion = match study.nerv {
        Some(_) => run.timed("motion", |r| motion::motion(r, study, opts))?,
        None => Vec::new(),
    };
    let groups = run.timed("neuron groups", |r| {
        groups::groups(r, &analysed, &firsts, opts)
    })?;
    if opts.ablation {
        run.timed("ablation against both canvases", |r| {
            cause::ablation(r, study, opts)
        })?;
    }
    if !opts.pruning.is_empty() && study.nerv.is_some() {
        run.timed("contribution-guided pruning of the NeRV head", |r| {
            cause::pruning(r, study, opts)
        })?;
    }
    drop(analysed);
    let mut headlines = Headlines {
        video: study.clip.video.clone(),
        layers: std::mem::take(&mut run.heads).into_layers(),
        motion: motion.iter().flat_map(MotionFinding::headlines).collect(),
        claims: Vec::new(),
    };
    headlines.claims = claims::claims(&headlines);
    let comparison = match opts.compare_methods {
        true => Some(compare_other_method(&mut run, study, opts, &headlines)?),
        false => None,
    };
    Ok(Findings {
        video: study.clip.video.clone(),
        method: opts.method,
        headlines,
        tables: run.stacked_tables()?,
        layers,
        objects,
        partitions,
        motion,
        groups,
        comparison,
        timings: run.timings,
    })
}

/// Runs every analysis under the method other than `opts.method` and compares its headlines
/// with `own`; adds the comparison's tables.
fn compare_other_method(
    run: &mut Run,
    study: &Study,
    opts: &FindingsOptions,
    own: &Headlines,
) -> Result<MethodComparison> {
    let other = match opts.method {
        Method::Official => Method::Conservative,
        Method::Conservative => Method::Official,
    };
    let other_opts = FindingsOptions {
        method: other,
        compare_methods: false,
        ablation: false,
        pruning: Vec::new(),
        ..opts.clone()
    };
    let theirs = run.timed(&format!("every analysis under the {other} canvas"), |_| {
        findings(study, &other_opts)
    })?;
    let cmp = MethodComparison::new(opts.method, own.clone(), theirs.headlines);
    run.add_table("claims_by_method", compare::claims_table(&cmp)?);
    run.add_table("method_comparison", compare::numbers_table(&cmp)?);
    Ok(cmp)
}

/// The findings under construction: table parts by name, the layer headlines, the timings.
#[derive(Default)]
struct Run {
    tables: BTreeMap<&'static str, Vec<DataFrame>>,
    heads: LayerHeadlines,
    timings: Vec<(String, f64)>,
}

impl Run {
    fn add_table(&mut self, name: &'static str, df: DataFrame) {
        self.tables.entry(name).or_default().push(df);
    }

    /// Runs one step, timing it.
    fn timed<T>(&mut self, what: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let start = Instant::now();
        tracing::info!("findings: {what}");
        let out = f(self)?;
        let seconds = start.elapsed().as_secs_f64();
        tracing::info!("findings: {what} done in {seconds:.2} s");
        self.timings.push((what.to_string(), seconds));
        Ok(out)
    }

    /// Each table's parts stacked, by name.
    fn stacked_tables(&mut self) -> Result<Vec<(String, DataFrame)>> {
        std::mem::take(&mut self.tables)
            .into_iter()
            .map(|(name, parts)| Ok((name.to_string(), stack_tables(name, parts)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use candle_core::Device;

    use super::*;
    use crate::study::BUNDLED_DATA;

    #[test]
    fn options_default_to_the_papers_protocol_without_comparison() {
        let o = FindingsOptions::default();
        assert_eq!(o.method, Method::Official);
        assert_eq!((o.seed, o.groups), (0, 6));
        assert_eq!(o.motion_frames, [1, 10]);
        assert_eq!(o.max_frames, None);
        assert!(!o.compare_methods);
    }

    #[test]
    fn findings_need_a_model() {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let study = Study::open(repo.join(BUNDLED_DATA), &[], None, &Device::Cpu).unwrap();
        let err = findings(&study, &FindingsOptions::default()).unwrap_err();
        assert!(err.to_string().contains("FFN or a NeRV"), "{err}");
    }
}
