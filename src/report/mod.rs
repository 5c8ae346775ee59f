//! `xinc report`: every analysis of the paper (spec B) on one clip and its models, written as
//! - `index.html`: one offline page (plotly.js embedded once) with a section per finding, its
//!   tables and interactive figures;
//! - `stats/*.parquet`: every table, one file per analysis (schemas in the analysis modules);
//! - `summary.json`: the headline numbers and the verdict on each of the paper's claims.
//!
//! The sections analyse one canvas ([`ReportOptions::method`], official by default); unless told
//! otherwise the report then repeats every analysis under the other method and adds a section
//! with the claims and headline numbers under both ([`compare`]).
//!
//! The FFN is analysed on the clip's first frame (layers 1..L), the NeRV on the clip's annotated
//! frames (head and the last block, as the paper; the per-neuron table also covers every other
//! block on the first analysed frame, streamed). Sections live in [`sections`]; this module holds
//! the page and the table collection.

mod claims;
mod compare;
mod sections;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use polars::prelude::*;
use serde::Serialize;

use crate::analysis::{stack_tables, write_parquet};
use crate::canvas::Method;
use crate::data::panoptic::Clip;
use crate::error::{Result, XincError};
use crate::plot::figure::Figure;
use crate::plot::html::{escape_html, plotly_script_tag, FigureIds};
use crate::plot::table::{frame_to_html, TableStyle};
use crate::study::Study;

pub use claims::{Claim, ClaimKind, Evidence, EvidenceColumn, EvidenceRow, Verdict};
pub use compare::{ClaimComparison, MethodComparison};
pub use sections::{Headlines, LayerHeadline, MotionHeadline};

/// What to analyse and where to write.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub out: PathBuf,
    /// Seed of every k-means (RGB and Gabor partitions, neuron groups).
    pub seed: u64,
    /// Neuron groups per layer (spec B.8: 6).
    pub groups: usize,
    /// Frames t whose contribution change D_t (t−1 → t) is compared with the flow (spec B.5:
    /// 1 and 10); frames beyond the clip are skipped.
    pub motion_frames: Vec<usize>,
    /// The canvas every section analyses (default: the official one).
    pub method: Method,
    /// Also run every analysis under the other method and add the section comparing the
    /// paper's conclusions under both.
    pub compare_methods: bool,
    /// Analyse at most this many of the NeRV's annotated frames, evenly spaced, the first and
    /// the last included (all of them when `None`).
    pub max_frames: Option<usize>,
}

impl ReportOptions {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        ReportOptions {
            out: out.into(),
            seed: 0,
            groups: 6,
            motion_frames: vec![1, 10],
            method: Method::Official,
            compare_methods: true,
            max_frames: None,
        }
    }
}

/// One section of the page: a heading, an explanation, then tables and figures in order.
struct Section {
    id: &'static str,
    title: &'static str,
    intro: String,
    items: Vec<Item>,
}

/// A table (its HTML) or a figure (drawn when the page is, with the page's figure ids).
enum Item {
    Html(String),
    Figure(Box<Figure>),
}

impl Section {
    fn new(id: &'static str, title: &'static str, intro: &str) -> Self {
        Section {
            id,
            title,
            intro: intro.to_string(),
            items: Vec::new(),
        }
    }

    fn figure(&mut self, fig: Figure) {
        self.items.push(Item::Figure(Box::new(fig)));
    }

    /// The section's HTML, its figures' ids issued by `ids`.
    fn to_html(&self, ids: &mut FigureIds) -> String {
        let mut html = format!(
            "<section id=\"{}\"><h2>{}</h2>\n<p>{}</p>\n",
            self.id,
            escape_html(self.title),
            self.intro
        );
        for item in &self.items {
            match item {
                Item::Html(h) => html += h,
                Item::Figure(fig) => html += &fig.to_html_fragment(ids),
            }
            html += "\n";
        }
        html + "</section>\n"
    }

    /// `df` as a report table (caption, three significant digits; `stats/` keeps every digit).
    fn table(&mut self, caption: &str, df: &DataFrame) {
        self.items
            .push(Item::Html(frame_to_html(df, &TableStyle::report(caption))));
    }
}

/// The report under construction: sections for the page, tables for `stats/`, timings.
struct Report {
    sections: Vec<Section>,
    tables: BTreeMap<&'static str, Vec<DataFrame>>,
    timings: Vec<(String, f64)>,
}

impl Report {
    fn new() -> Self {
        Report {
            sections: Vec::new(),
            tables: BTreeMap::new(),
            timings: Vec::new(),
        }
    }

    fn add_table(&mut self, name: &'static str, df: DataFrame) {
        self.tables.entry(name).or_default().push(df);
    }

    /// Runs one section builder, timing it.
    fn timed<T>(&mut self, what: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let start = Instant::now();
        tracing::info!("report: {what}");
        let out = f(self)?;
        let seconds = start.elapsed().as_secs_f64();
        tracing::info!("report: {what} done in {seconds:.2} s");
        self.timings.push((what.to_string(), seconds));
        Ok(out)
    }

    /// Stacks each table's parts and writes `stats/<name>.parquet`.
    fn write_tables(&mut self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for (name, parts) in std::mem::take(&mut self.tables) {
            let mut df = stack_tables(name, parts)?;
            let path = dir.join(format!("{name}.parquet"));
            write_parquet(&mut df, &path)?;
            written.push(path);
        }
        Ok(written)
    }

    /// The page; every figure's DOM id is issued here, from one [`FigureIds`], in page order.
    fn page(&self, clip: &Clip, headlines: &Headlines, method: Method) -> Result<String> {
        let mut ids = FigureIds::new("report");
        let mut html = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n");
        html += &format!(
            "<title>xinc report: {}</title>\n{}\n<style>{STYLE}</style></head><body>\n",
            escape_html(&clip.video),
            plotly_script_tag()
        );
        html += &format!(
            "<h1>Explaining the implicit neural canvas: video {}</h1>\n",
            escape_html(&clip.video)
        );
        html += &format!(
            "<p>Canvas: <b>{method}</b> (<code>--method official|conservative</code>; the section \
             <a href=\"#methods\">Which conclusions survive an exact decomposition</a> compares \
             both when it is present).</p>\n"
        );
        html += "<nav><ul><li><a href=\"#findings\">Findings</a></li>";
        for s in &self.sections {
            html += &format!(
                "<li><a href=\"#{}\">{}</a></li>",
                s.id,
                escape_html(s.title)
            );
        }
        html += "</ul></nav>\n";
        html += &headlines.to_html()?;
        for s in &self.sections {
            html += &s.to_html(&mut ids);
        }
        html += "<h2>Timings</h2><table class=\"xinc-frame\"><caption>Wall time of each step \
                 of this report</caption><tr><th>step</th><th>seconds</th></tr>";
        for (what, s) in &self.timings {
            html += &format!(
                "<tr><td>{}</td><td class=\"num\">{s:.2}</td></tr>",
                escape_html(what)
            );
        }
        html += "</table></body></html>\n";
        Ok(html)
    }
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}\
    table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}\
    td,th{border:1px solid #ccc;padding:2px 6px}th{background:#f4f4f4}td.num{text-align:right;\
    font-variant-numeric:tabular-nums}caption{caption-side:top;text-align:left;font-weight:bold;\
    padding:4px 0}section{margin-top:2em}.claim{margin:1em 0 2em}.claim h3{margin-bottom:0.2em}\
    .source{color:#666;font-size:0.85em;margin-top:0}.claim-yes{color:#060}.claim-no{color:#a00}";

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

/// Every analysis of `study` under `opts.method`, without the page: the headlines and every
/// table (the report's `stats/`), by name. This is what a dataset-scale batch job keeps.
pub fn analyse(
    study: &Study,
    opts: &ReportOptions,
) -> Result<(Headlines, Vec<(String, DataFrame)>)> {
    let mut report = Report::new();
    let headlines = sections::build(&mut report, study, opts)?;
    let tables = std::mem::take(&mut report.tables)
        .into_iter()
        .map(|(name, parts)| Ok((name.to_string(), stack_tables(name, parts)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((headlines, tables))
}

/// Runs every analysis of `study` and writes the report into `opts.out`.
pub fn write_report(study: &Study, opts: &ReportOptions) -> Result<ReportOutput> {
    if study.ffn.is_none() && study.nerv.is_none() {
        return Err(XincError::InvalidArgument(
            "a report needs an FFN or a NeRV model".into(),
        ));
    }
    let start = Instant::now();
    let mut report = Report::new();
    let headlines = sections::build(&mut report, study, opts)?;
    let comparison = if opts.compare_methods {
        let other = match opts.method {
            Method::Official => Method::Conservative,
            Method::Conservative => Method::Official,
        };
        let other_opts = ReportOptions {
            method: other,
            compare_methods: false,
            ..opts.clone()
        };
        let other_heads = report
            .timed(&format!("every analysis under the {other} canvas"), |_| {
                sections::build(&mut Report::new(), study, &other_opts)
            })?;
        let cmp = MethodComparison::new(opts.method, headlines.clone(), other_heads);
        compare::section(&mut report, &cmp)?;
        Some(cmp)
    } else {
        None
    };
    let tables = report.write_tables(&opts.out.join("stats"))?;
    let index = opts.out.join("index.html");
    let page = report.page(&study.clip, &headlines, opts.method)?;
    crate::io::write_atomic(&index, |f| f.write_all(page.as_bytes()))?;
    let summary = opts.out.join("summary.json");
    let seconds = start.elapsed().as_secs_f64();
    let out = ReportOutput {
        index,
        tables,
        summary: summary.clone(),
        method: opts.method,
        headlines,
        comparison,
        seconds,
    };
    crate::io::save_json(&summary, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::figures::map_grid_figure;

    #[test]
    fn figures_of_a_page_never_share_an_id() {
        // Two sections, each with two map grids of the same default title (the old collision).
        let map = [0.0f32, 1.0, -1.0, 2.0];
        let grid = || map_grid_figure(&[&map[..]], 2, 2, &["m"], 1).unwrap();
        let mut ids = FigureIds::new("report");
        let mut html = String::new();
        for id in ["a", "b"] {
            let mut sec = Section::new(id, "t", "");
            sec.figure(grid());
            sec.table("numbers", &df!("x" => [1.23456f64]).unwrap());
            sec.figure(grid());
            html += &sec.to_html(&mut ids);
        }
        let found: Vec<String> = html
            .match_indices("<div id=\"")
            .map(|(i, _)| {
                let rest = &html[i + 9..];
                rest[..rest.find('"').unwrap()].to_owned()
            })
            .collect();
        assert_eq!(
            found,
            [
                "report-1-contribution-maps",
                "report-2-contribution-maps",
                "report-3-contribution-maps",
                "report-4-contribution-maps"
            ]
        );
        for id in &found {
            assert_eq!(
                html.matches(&format!("\"{id}\"")).count(),
                2,
                "{id}: div and script"
            );
        }
        assert!(html.contains("<caption>numbers</caption>"));
        assert!(html.contains(">1.23<"));
    }
}
