//! DataFrames as HTML tables, for reports and notebooks (polars has no HTML renderer in Rust).
//!
//! [`frame_to_html`] renders an escaped `<table>` in a [`TableStyle`]:
//! * [`TableStyle::report`] (the report): a caption saying what the table is, column names, and
//!   numbers rounded to three significant digits for reading (the Parquet files keep full
//!   precision); no dtypes, no shape;
//! * [`TableStyle::notebook`] ([`display_frame`]): the richer form a notebook reader works with:
//!   a caption with the shape, each column's dtype under its name (the reader writes polars
//!   expressions against them), four significant digits; the cell's `text/plain` alternative is
//!   polars' own table at full precision.
//!
//! Floats print in plain notation between 10⁻³ and 10⁶ (`9310`, `0.0123`), otherwise as
//! `1.23e-5`; integers, strings and booleans print as they are, nulls as `–`.

use polars::prelude::{AnyValue, DataFrame};

use super::html::{escape_html, mime_bundle, print_bundle};
pub(crate) use crate::findings::numbers::format_significant;

/// Rows that [`display_frame`] shows.
pub const DISPLAY_ROWS: usize = 25;

/// How [`frame_to_html`] shows a table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableStyle {
    /// What the table is (escaped); `None` for none.
    pub caption: Option<String>,
    /// Add `(rows × columns)` to the caption.
    pub shape: bool,
    /// Show each column's dtype under its name.
    pub dtypes: bool,
    /// Significant digits of floats; `None` prints them as polars does.
    pub digits: Option<usize>,
    /// Rows shown; a "… n more rows" row says how many were left out.
    pub max_rows: usize,
}

impl Default for TableStyle {
    fn default() -> Self {
        TableStyle {
            caption: None,
            shape: false,
            dtypes: false,
            digits: Some(3),
            max_rows: 40,
        }
    }
}

impl TableStyle {
    /// A report table: `caption`, three significant digits, no dtypes or shape, 40 rows.
    pub fn report(caption: &str) -> TableStyle {
        TableStyle {
            caption: Some(caption.to_owned()),
            ..TableStyle::default()
        }
    }

    /// A notebook table: shape and dtypes, four significant digits, [`DISPLAY_ROWS`] rows.
    pub fn notebook() -> TableStyle {
        TableStyle {
            shape: true,
            dtypes: true,
            digits: Some(4),
            max_rows: DISPLAY_ROWS,
            ..TableStyle::default()
        }
    }
}

/// An HTML `<table class="xinc-frame">` of `df` in `style`. Every name and value is
/// HTML-escaped; strings are shown without quotes.
pub fn frame_to_html(df: &DataFrame, style: &TableStyle) -> String {
    let (height, width) = df.shape();
    let mut html = String::from("<table class=\"xinc-frame\">\n");
    let shape = style
        .shape
        .then(|| format!("({height} rows × {width} columns)"));
    let caption: Vec<String> = [style.caption.as_deref().map(escape_html), shape]
        .into_iter()
        .flatten()
        .collect();
    if !caption.is_empty() {
        html.push_str(&format!("<caption>{}</caption>\n", caption.join(" ")));
    }
    html.push_str("<thead>\n<tr>");
    for col in df.columns() {
        let name = escape_html(col.name());
        if style.dtypes {
            let dtype = escape_html(&col.dtype().to_string());
            html.push_str(&format!("<th>{name}<br><small>{dtype}</small></th>"));
        } else {
            html.push_str(&format!("<th>{name}</th>"));
        }
    }
    html.push_str("</tr>\n</thead>\n<tbody>\n");
    let shown = height.min(style.max_rows);
    for row in 0..shown {
        html.push_str("<tr>");
        for col in df.columns() {
            let cell = col
                .get(row)
                .map_or_else(|e| format!("<{e}>"), |v| cell_text(&v, style.digits));
            let class = if cell_is_number(&col.dtype().to_string()) {
                " class=\"num\""
            } else {
                ""
            };
            html.push_str(&format!("<td{class}>{}</td>", escape_html(&cell)));
        }
        html.push_str("</tr>\n");
    }
    if shown < height {
        html.push_str(&format!(
            "<tr><td colspan=\"{}\">… {} more rows</td></tr>\n",
            width.max(1),
            height - shown
        ));
    }
    html.push_str("</tbody>\n</table>");
    html
}

/// Numeric dtypes are right-aligned.
fn cell_is_number(dtype: &str) -> bool {
    dtype.starts_with('f') || dtype.starts_with('i') || dtype.starts_with('u')
}

/// A cell's text: strings without polars' quotes, floats to `digits` significant digits, nulls as
/// `–`, everything else as polars prints it.
fn cell_text(value: &AnyValue<'_>, digits: Option<usize>) -> String {
    match (value, digits) {
        (AnyValue::Null, _) => "–".to_owned(),
        (AnyValue::Float64(v), Some(d)) => format_significant(*v, d),
        (AnyValue::Float32(v), Some(d)) => format_significant(f64::from(*v), d),
        _ => match value.get_str() {
            Some(s) => s.to_owned(),
            None => value.to_string(),
        },
    }
}

/// The evcxr display blocks of `df` (see [`html`](super::html)): the table of
/// [`frame_to_html`] as `text/html`, polars' text table as `text/plain`.
pub fn frame_bundle(df: &DataFrame, style: &TableStyle) -> String {
    let html = frame_to_html(df, style);
    let plain = df.to_string();
    mime_bundle(&[("text/html", &html), ("text/plain", &plain)])
}

/// Shows `df` in an evcxr notebook in [`TableStyle::notebook`].
pub fn display_frame(df: &DataFrame) {
    print_bundle(&frame_bundle(df, &TableStyle::notebook()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    fn sample() -> DataFrame {
        df![
            "name" => ["a<b", "c&d", "e", "f"],
            "value" => [9312.894231f64, -2.0, 0.012345, f64::NAN],
            "count" => [1i64, 20, 300, 4000],
        ]
        .unwrap()
    }

    #[test]
    fn report_table_has_caption_and_rounded_numbers_no_dtypes() {
        let style = TableStyle {
            max_rows: 2,
            ..TableStyle::report("Pixels & neurons")
        };
        let html = frame_to_html(&sample(), &style);
        assert!(
            html.contains("<caption>Pixels &amp; neurons</caption>"),
            "{html}"
        );
        assert!(html.contains("<th>name</th><th>value</th><th>count</th>"));
        assert!(!html.contains("<small>"), "no dtype row");
        assert!(!html.contains("shape"));
        assert!(html.contains("<td>a&lt;b</td>"));
        assert!(html.contains("<td class=\"num\">9310</td>"), "{html}");
        assert!(html.contains("<td class=\"num\">-2</td>"));
        assert!(html.contains("<td class=\"num\">20</td>"));
        assert!(!html.contains("<td>e</td>"), "row 3 is cut");
        assert!(html.contains("… 2 more rows"));
        assert_eq!(html.matches("<tr>").count(), 4, "header, 2 rows, ellipsis");
    }

    #[test]
    fn notebook_table_keeps_dtypes_and_shape() {
        let html = frame_to_html(&sample(), &TableStyle::notebook());
        assert!(
            html.contains("<caption>(4 rows × 3 columns)</caption>"),
            "{html}"
        );
        assert!(html.contains("<th>name<br><small>str</small></th>"));
        assert!(html.contains("<th>value<br><small>f64</small></th>"));
        assert!(html.contains(">9313<") && html.contains(">0.01235<") && html.contains(">NaN<"));
        assert!(!html.contains("more rows"));
    }

    #[test]
    fn bundle_is_html_then_text() {
        let bundle = frame_bundle(&sample(), &TableStyle::notebook());
        assert!(bundle.starts_with("EVCXR_BEGIN_CONTENT text/html\n<table"));
        assert!(bundle.contains("EVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/plain\n"));
        assert!(bundle.contains("a<b"), "the text table is not escaped");
        assert!(
            bundle.contains("9312.894231"),
            "the text table keeps full precision"
        );
        assert!(bundle.ends_with("EVCXR_END_CONTENT\n"));
    }
}
