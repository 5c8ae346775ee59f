//! `xinc report`: every analysis of the paper (spec B) on one clip and its models, written as
//! - `index.html`: one offline page (plotly.js embedded once) with a section per finding, its
//!   tables and interactive figures;
//! - `stats/*.parquet`: every table, one file per analysis (schemas in the analysis modules);
//! - `summary.json`: the headline numbers and the verdict on each of the paper's claims.
//!
//! The analyses run in [`crate::findings`]; this module renders what they found. The sections
//! show one canvas ([`FindingsOptions::method`], official by default); unless told otherwise the
//! findings also cover the other method, and a last section compares the claims and headline
//! numbers under both. Files: the page and its sections (`page.rs`), one section per finding
//! family (`sections.rs`), the claims (`claims.rs`) and the method comparison (`compare.rs`).

mod ablation;
mod claims;
mod compare;
mod page;
mod sections;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::analysis::write_parquet;
use crate::canvas::Method;
use crate::error::Result;
use crate::findings::{findings, Findings, FindingsOptions, Headlines, MethodComparison};
use crate::study::Study;

/// What to analyse and where to write.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// The folder of `index.html`, `stats/` and `summary.json`.
    pub out: PathBuf,
    /// What the analyses need.
    pub findings: FindingsOptions,
}

impl ReportOptions {
    /// Into `out`, with the default analyses and the comparison of both canvas methods.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        ReportOptions {
            out: out.into(),
            findings: FindingsOptions {
                compare_methods: true,
                ..FindingsOptions::default()
            },
        }
    }
}

/// What [`write_report`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ReportOutput {
    pub index: PathBuf,
    pub tables: Vec<PathBuf>,
    pub summary: PathBuf,
    /// The canvas the sections analysed.
    pub method: Method,
    pub headlines: Headlines,
    /// Headlines and claims under both methods, when compared.
    pub comparison: Option<MethodComparison>,
    pub seconds: f64,
}

/// Runs every analysis of `study` ([`findings`]) and writes the report into `opts.out`.
pub fn write_report(study: &Study, opts: &ReportOptions) -> Result<ReportOutput> {
    let start = Instant::now();
    let found = findings(study, &opts.findings)?;
    let tables = write_tables(&found, &opts.out.join("stats"))?;
    let index = opts.out.join("index.html");
    let html = page::page(&found, &sections::sections(&found)?)?;
    crate::io::write_atomic(&index, |f| f.write_all(html.as_bytes()))?;
    let summary = opts.out.join("summary.json");
    let out = ReportOutput {
        index,
        tables,
        summary: summary.clone(),
        method: found.method,
        headlines: found.headlines,
        comparison: found.comparison,
        seconds: start.elapsed().as_secs_f64(),
    };
    crate::io::save_json(&summary, &out)?;
    Ok(out)
}

/// Writes each table of `found` to `dir/<name>.parquet`.
fn write_tables(found: &Findings, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, table) in &found.tables {
        let path = dir.join(format!("{name}.parquet"));
        write_parquet(&mut table.clone(), &path)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use polars::prelude::{AnyValue, DataFrame};

    use super::*;
    use crate::analysis::read_parquet;

    /// Equal shapes, schemas and cells (NaN equal to NaN).
    fn same_frame(a: &DataFrame, b: &DataFrame) -> bool {
        let cell_eq = |u: AnyValue, v: AnyValue| match (&u, &v) {
            (AnyValue::Float64(x), AnyValue::Float64(y)) => x == y || x.is_nan() && y.is_nan(),
            (AnyValue::Float32(x), AnyValue::Float32(y)) => x == y || x.is_nan() && y.is_nan(),
            _ => u == v,
        };
        a.schema() == b.schema()
            && a.height() == b.height()
            && a.columns()
                .iter()
                .zip(b.columns())
                .all(|(x, y)| (0..x.len()).all(|i| cell_eq(x.get(i).unwrap(), y.get(i).unwrap())))
    }

    #[test]
    fn findings_are_what_the_report_writes() {
        let study = Study::bundled(env!("CARGO_MANIFEST_DIR")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = ReportOptions {
            out: dir.path().to_path_buf(),
            findings: FindingsOptions {
                max_frames: Some(2),
                motion_frames: vec![1],
                compare_methods: false,
                ablation_kernels: 24,
                pruning: vec![0.0, 0.5],
                ..FindingsOptions::default()
            },
        };
        let out = write_report(&study, &opts).unwrap();
        let found = findings(&study, &opts.findings).unwrap();

        // Every table, by name, with the report's stats/ content.
        let names: Vec<&str> = found.tables.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "neurons",
            "distributed_summary",
            "intensity",
            "object_shares",
            "motion",
            "ablation",
            "ablation_neurons",
            "ablation_objects",
            "pruning",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert_eq!(out.tables.len(), found.tables.len());
        for ((name, table), path) in found.tables.iter().zip(&out.tables) {
            assert_eq!(
                path,
                &dir.path().join("stats").join(format!("{name}.parquet"))
            );
            let written = read_parquet(path).unwrap();
            assert!(table.height() > 0, "{name} is empty");
            assert!(same_frame(table, &written), "{name}: {table} vs {written}");
        }

        // The same headline numbers and verdicts as summary.json.
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out.summary).unwrap()).unwrap();
        // Through text both (serde_json's parser may be one ulp off, the same way for both).
        let text = serde_json::to_string(&found.headlines).unwrap();
        let headlines: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(headlines, summary["headlines"]);
        assert!(summary["comparison"].is_null());
        let layers = &found.headlines.layers;
        // FFN layers 1..L and the NeRV's head and last block, each with its numbers.
        assert!(layers.len() >= 4, "{layers:?}");
        for l in layers {
            assert!(
                l.neurons > 0 && (0.0..=1.0).contains(&l.neurons_per_pixel_t01),
                "{l:?}"
            );
            assert!(l.pearson_intensity.is_finite(), "{l:?}");
        }
        assert_eq!(found.claims().len(), 6, "five claims and motion");
        assert_eq!(found.motion.len(), 1);
        assert_eq!(
            found.headlines.motion.len(),
            2,
            "head and last block at t = 1"
        );
        assert!(found.motion[0].layers[0].pearson.is_finite());

        // What the figures are drawn from, with no figure in it.
        assert_eq!(found.layers.len(), layers.len());
        assert!(!found.objects.is_empty() && !found.groups.is_empty());
        assert_eq!(found.partitions.len(), 2, "official and corrected");
        let debug = format!("{found:?}");
        assert!(debug.len() < 2000 && debug.contains("neurons"), "{debug}");
        let page = std::fs::read_to_string(&out.index).unwrap();
        let claims_on_page = page.matches("<div class=\"claim\">").count();
        assert_eq!(claims_on_page, found.claims().len());
        assert!(!page.contains("id=\"methods\""), "no comparison section");
    }
}
