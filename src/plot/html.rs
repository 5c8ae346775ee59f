//! HTML and notebook plumbing shared by figures and tables: the embedded plotly.js, HTML and
//! plotly-text escaping, script-safe JSON, DOM ids, and the evcxr MIME-bundle format.
//!
//! **Figure ids.** Every figure's DOM id comes from a [`FigureIds`]: `<scope>-<n>-<name>`, where
//! the scope names the page (`report`, `page` for a standalone figure page, `nb-<session>` in a
//! notebook kernel) and `n` counts the figures of that scope. Two figures of one page never share
//! an id, the report's ids are the same on every run, and a notebook's outputs (whose kernel
//! session is in the scope) never collide with a report's or with those of another kernel.
//!
//! **evcxr MIME bundles.** evcxr reads a value's display from stdout blocks
//! `EVCXR_BEGIN_CONTENT <mime>\n…\nEVCXR_END_CONTENT`. All blocks printed while one cell runs are
//! collected into a single map keyed by MIME type and sent as one Jupyter bundle, so printing
//! several blocks with *different* MIME types gives one output with alternative representations
//! (the frontend draws the richest one it can). Two displays of the *same* MIME type in one cell
//! overwrite each other: display one figure or table per cell.

use std::sync::{Mutex, OnceLock, PoisonError};

/// The MIME type of a plotly figure as JSON (JupyterLab with the plotly extension, VS Code).
pub const PLOTLY_MIME: &str = "application/vnd.plotly.v1+json";

/// The plotly.js bundle that the `plotly` crate embeds (feature `plotly_embed_js`), without its
/// `<script>` tags. Include it once per page (see [`plotly_script_tag`]); figure fragments assume it.
pub(crate) fn plotly_js() -> &'static str {
    static JS: OnceLock<String> = OnceLock::new();
    JS.get_or_init(|| first_script_body(&plotly::Plot::offline_js_sources()).to_owned())
}

/// [`plotly_js`] wrapped in one `<script>` element, ready for a page's `<head>`.
pub(crate) fn plotly_script_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| format!("<script type=\"text/javascript\">{}</script>", plotly_js()))
}

/// The text between the first `<script …>` element's opening tag and its `</script>`.
/// (`Plot::offline_js_sources` returns plotly.js followed by MathJax; only the first is wanted.)
fn first_script_body(html: &str) -> &str {
    let Some(open) = html.find("<script") else {
        return "";
    };
    let Some(body) = html[open..].find('>').map(|i| open + i + 1) else {
        return "";
    };
    match html[body..].find("</script>") {
        Some(end) => &html[body..body + end],
        None => "",
    }
}

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Text for plotly labels (titles, trace names, annotations). plotly.js reads a small HTML subset
/// in them (`<b>`, `<br>`, entities), so user text is entity-escaped to show literally.
pub(crate) fn plotly_text(text: &str) -> String {
    escape_html(text)
}

/// JSON that may sit inside a `<script>` element: `<`, `>` and `&` (which only occur inside JSON
/// strings) become `\u003c`, `\u003e`, `\u0026`, so no `</script>` can end the element early.
pub(crate) fn script_safe_json(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A DOM id made of ASCII letters, digits, `-` and `_` (anything else becomes `-`), starting with
/// a letter, so it is safe inside HTML attributes, CSS selectors and JS strings.
pub(crate) fn dom_id(text: &str) -> String {
    let mut id: String = text
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    let id = id.trim_matches('-');
    match id.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => id.to_owned(),
        Some(_) => format!("fig-{id}"),
        None => "figure".to_owned(),
    }
}

/// Issues the DOM ids of one page's figures (see the module header).
#[derive(Clone, Debug)]
pub struct FigureIds {
    scope: String,
    issued: u64,
}

impl FigureIds {
    /// Ids `<scope>-1-…`, `<scope>-2-…`, … (`scope` made safe by [`dom_id`]).
    pub fn new(scope: &str) -> FigureIds {
        FigureIds {
            scope: dom_id(scope),
            issued: 0,
        }
    }

    /// The next id, ending in `name` made safe (a figure's title or chosen id).
    pub fn issue(&mut self, name: &str) -> String {
        self.issued += 1;
        figure_dom_id(&self.scope, self.issued, name)
    }

    /// How many ids were issued.
    pub fn issued(&self) -> u64 {
        self.issued
    }
}

/// The one spelling of a figure's DOM id.
fn figure_dom_id(scope: &str, n: u64, name: &str) -> String {
    format!("{scope}-{n}-{}", dom_id(name))
}

/// The kernel process's notebook scope and figure count live in its environment: evcxr links
/// each cell with its own copy of xinc's statics, but every cell shares the process.
const NOTEBOOK_SESSION: &str = "XINC_NOTEBOOK_SESSION";
const NOTEBOOK_FIGURES: &str = "XINC_NOTEBOOK_FIGURES";
/// Serialises this copy's reads and writes of the kernel's environment (cells run one at a time).
pub(crate) static ENV_LOCK: Mutex<()> = Mutex::new(());

/// The next figure id of this notebook kernel: `nb-<session>-<n>-<name>`, the session made once
/// per kernel process (its pid and start time), `n` counting every figure the kernel displayed.
pub(crate) fn notebook_figure_id(name: &str) -> String {
    let _guard = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let session = std::env::var(NOTEBOOK_SESSION).unwrap_or_else(|_| {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let session = format!("nb-{:x}{clock:x}", std::process::id());
        std::env::set_var(NOTEBOOK_SESSION, &session);
        session
    });
    let n = std::env::var(NOTEBOOK_FIGURES)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    std::env::set_var(NOTEBOOK_FIGURES, n.to_string());
    figure_dom_id(&session, n, name)
}

/// Formats `(mime, content)` pairs as evcxr display blocks (one Jupyter bundle, see the module
/// header). Ends with a newline.
pub(crate) fn mime_bundle(parts: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (mime, content) in parts {
        out.push_str("EVCXR_BEGIN_CONTENT ");
        out.push_str(mime);
        out.push('\n');
        out.push_str(content);
        out.push_str("\nEVCXR_END_CONTENT\n");
    }
    out
}

/// Prints a bundle made by [`mime_bundle`] in one write, so no other output interleaves.
pub(crate) fn print_bundle(bundle: &str) {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    // A closed stdout leaves nothing to display to; ignoring the error is all we can do.
    let _ = lock.write_all(bundle.as_bytes());
    let _ = lock.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plotly_js_is_the_bundle_without_tags() {
        let js = plotly_js();
        assert!(js.len() > 1_000_000, "{} bytes", js.len());
        assert!(js.trim_start().starts_with("/**"));
        assert!(js.contains("plotly.js v"));
        assert!(!js.contains("</script>"));
        assert!(!js.contains("mjx-container"), "MathJax must not be bundled");
        let tag = plotly_script_tag();
        assert!(tag.starts_with("<script") && tag.ends_with("</script>"));
    }

    #[test]
    fn first_script_body_takes_the_first_element() {
        let html = "<script type=\"x\">A</script>\n<script>B</script>";
        assert_eq!(first_script_body(html), "A");
        assert_eq!(first_script_body("no script"), "");
        assert_eq!(first_script_body("<script>unterminated"), "");
    }

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            escape_html(r#"a<b & "c" 'd'>"#),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;"
        );
        assert_eq!(
            script_safe_json(r#"{"t":"</script>&"}"#),
            r#"{"t":"\u003c/script\u003e\u0026"}"#
        );
    }

    #[test]
    fn dom_ids_are_safe() {
        assert_eq!(
            dom_id("Log-std per Partition (layer 2)"),
            "log-std-per-partition-layer-2"
        );
        assert_eq!(dom_id("  "), "figure");
        assert_eq!(dom_id("3 maps"), "fig-3-maps");
        assert_eq!(dom_id("a\"<script>"), "a-script");
    }

    #[test]
    fn figure_ids_are_unique_per_scope_and_stable() {
        let mut ids = FigureIds::new("Report");
        assert_eq!(ids.issue("Contribution maps"), "report-1-contribution-maps");
        assert_eq!(ids.issue("Contribution maps"), "report-2-contribution-maps");
        assert_eq!(ids.issued(), 2);
        let mut again = FigureIds::new("report");
        assert_eq!(
            again.issue("Contribution maps"),
            "report-1-contribution-maps"
        );
        let a = notebook_figure_id("Contribution maps");
        let b = notebook_figure_id("Contribution maps");
        assert_ne!(a, b);
        assert!(
            a.starts_with("nb-") && a.ends_with("-contribution-maps"),
            "{a}"
        );
        let session = std::env::var(NOTEBOOK_SESSION).unwrap();
        assert!(a.starts_with(&format!("{session}-")), "{a}");
        assert!(b.starts_with(&format!("{session}-")), "{b}");
    }

    #[test]
    fn bundle_has_one_block_per_mime() {
        let b = mime_bundle(&[("text/html", "<b>x</b>"), ("text/plain", "x")]);
        assert_eq!(
            b,
            "EVCXR_BEGIN_CONTENT text/html\n<b>x</b>\nEVCXR_END_CONTENT\n\
             EVCXR_BEGIN_CONTENT text/plain\nx\nEVCXR_END_CONTENT\n"
        );
    }
}
