//! DataFrames as HTML tables, for reports and notebooks (polars has no HTML renderer in Rust).
//!
//! [`frame_to_html`] renders an escaped `<table>` (header with names and dtypes, the first rows,
//! a shape caption); [`display_frame`] shows it in an evcxr notebook as a `text/html` bundle with
//! polars' text table as the `text/plain` alternative.

use polars::prelude::{AnyValue, DataFrame};

use super::html::{escape_html, mime_bundle, print_bundle};

/// Rows that [`display_frame`] shows.
pub const DISPLAY_ROWS: usize = 25;

/// An HTML `<table>` of `df`: a header of column names and dtypes, at most `max_rows` rows, a
/// "… n more rows" row when rows were left out, and a `shape: (rows, columns)` caption. Every
/// name and value is HTML-escaped; strings are shown without quotes.
pub fn frame_to_html(df: &DataFrame, max_rows: usize) -> String {
    let (height, width) = df.shape();
    let mut html = String::from("<table class=\"xinc-frame\">\n");
    html.push_str(&format!(
        "<caption>shape: ({height}, {width})</caption>\n<thead>\n<tr>"
    ));
    for col in df.columns() {
        html.push_str(&format!(
            "<th>{}<br><small>{}</small></th>",
            escape_html(col.name()),
            escape_html(&col.dtype().to_string())
        ));
    }
    html.push_str("</tr>\n</thead>\n<tbody>\n");
    let shown = height.min(max_rows);
    for row in 0..shown {
        html.push_str("<tr>");
        for col in df.columns() {
            let cell = col
                .get(row)
                .map_or_else(|e| format!("<{e}>"), |v| cell_text(&v));
            html.push_str(&format!("<td>{}</td>", escape_html(&cell)));
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

/// A cell's text: strings without polars' quotes, everything else as polars prints it.
fn cell_text(value: &AnyValue<'_>) -> String {
    match value.get_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    }
}

/// The evcxr display blocks of `df` (see [`html`](super::html)): the table of
/// [`frame_to_html`] as `text/html`, polars' text table as `text/plain`.
pub fn frame_bundle(df: &DataFrame, max_rows: usize) -> String {
    let html = frame_to_html(df, max_rows);
    let plain = df.to_string();
    mime_bundle(&[("text/html", &html), ("text/plain", &plain)])
}

/// Shows `df` in an evcxr notebook as an HTML table of its first [`DISPLAY_ROWS`] rows.
pub fn display_frame(df: &DataFrame) {
    print_bundle(&frame_bundle(df, DISPLAY_ROWS));
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    fn sample() -> DataFrame {
        df![
            "name" => ["a<b", "c&d", "e", "f"],
            "value" => [1.5f64, -2.0, 3.25, 4.0],
        ]
        .unwrap()
    }

    #[test]
    fn table_escapes_and_truncates() {
        let html = frame_to_html(&sample(), 2);
        assert!(html.contains("<caption>shape: (4, 2)</caption>"));
        assert!(
            html.contains("<th>name<br><small>str</small></th>"),
            "{html}"
        );
        assert!(html.contains("<td>a&lt;b</td>"));
        assert!(html.contains("<td>c&amp;d</td>"));
        assert!(
            html.contains("<td>-2.0</td>") || html.contains("<td>-2</td>"),
            "{html}"
        );
        assert!(!html.contains("<td>e</td>"), "row 3 is cut");
        assert!(html.contains("… 2 more rows"));
        assert_eq!(html.matches("<tr>").count(), 4, "header, 2 rows, ellipsis");
        let all = frame_to_html(&sample(), 10);
        assert!(all.contains("<td>f</td>") && !all.contains("more rows"));
    }

    #[test]
    fn bundle_is_html_then_text() {
        let bundle = frame_bundle(&sample(), 3);
        assert!(bundle.starts_with("EVCXR_BEGIN_CONTENT text/html\n<table"));
        assert!(bundle.contains("EVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT text/plain\n"));
        assert!(bundle.contains("a<b"), "the text table is not escaped");
        assert!(bundle.ends_with("EVCXR_END_CONTENT\n"));
    }
}
