//! The report's HTML page: sections of tables and figures, the findings at the top, the timings
//! at the bottom; every figure's DOM id issued from one [`FigureIds`], in page order.

use polars::prelude::DataFrame;

use super::claims::findings_html;
use crate::error::Result;
use crate::findings::Findings;
use crate::plot::figure::Figure;
use crate::plot::html::{escape_html, plotly_script_tag, FigureIds};
use crate::plot::table::{frame_to_html, TableStyle};

/// One section of the page: a heading, an explanation, then tables and figures in order.
pub(super) struct Section {
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
    pub(super) fn new(id: &'static str, title: &'static str, intro: &str) -> Self {
        Section {
            id,
            title,
            intro: intro.to_string(),
            items: Vec::new(),
        }
    }

    pub(super) fn figure(&mut self, fig: Figure) {
        self.items.push(Item::Figure(Box::new(fig)));
    }

    /// `df` as a report table (caption, three significant digits; `stats/` keeps every digit).
    pub(super) fn table(&mut self, caption: &str, df: &DataFrame) {
        self.items
            .push(Item::Html(frame_to_html(df, &TableStyle::report(caption))));
    }

    /// The findings' table `name` under `caption`, when the analyses produced it.
    pub(super) fn table_of(&mut self, findings: &Findings, name: &str, caption: &str) {
        if let Some(df) = findings.table(name) {
            self.table(caption, df);
        }
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
}

/// The page of `findings` with `sections`.
pub(super) fn page(findings: &Findings, sections: &[Section]) -> Result<String> {
    let mut ids = FigureIds::new("report");
    let video = escape_html(&findings.video);
    let mut html = String::from("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n");
    html += &format!(
        "<title>xinc report: {video}</title>\n{}\n<style>{STYLE}</style></head><body>\n",
        plotly_script_tag()
    );
    html += &format!("<h1>Explaining the implicit neural canvas: video {video}</h1>\n");
    html += &format!(
        "<p>Canvas: <b>{}</b> (<code>--method official|conservative</code>; the section \
         <a href=\"#methods\">Which conclusions survive an exact decomposition</a> compares \
         both when it is present).</p>\n",
        findings.method
    );
    html += "<nav><ul><li><a href=\"#findings\">Findings</a></li>";
    for s in sections {
        html += &format!(
            "<li><a href=\"#{}\">{}</a></li>",
            s.id,
            escape_html(s.title)
        );
    }
    html += "</ul></nav>\n";
    html += &findings_html(findings.claims())?;
    for s in sections {
        html += &s.to_html(&mut ids);
    }
    html += "<h2>Timings</h2><table class=\"xinc-frame\"><caption>Wall time of each step \
             of this report</caption><tr><th>step</th><th>seconds</th></tr>";
    for (what, s) in &findings.timings {
        html += &format!(
            "<tr><td>{}</td><td class=\"num\">{s:.2}</td></tr>",
            escape_html(what)
        );
    }
    html += "</table></body></html>\n";
    Ok(html)
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}\
    table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}\
    td,th{border:1px solid #ccc;padding:2px 6px}th{background:#f4f4f4}td.num{text-align:right;\
    font-variant-numeric:tabular-nums}caption{caption-side:top;text-align:left;font-weight:bold;\
    padding:4px 0}section{margin-top:2em}.claim{margin:1em 0 2em}.claim h3{margin-bottom:0.2em}\
    .source{color:#666;font-size:0.85em;margin-top:0}.claim-yes{color:#060}.claim-no{color:#a00}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::figures::map_grid_figure;
    use polars::prelude::df;

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
