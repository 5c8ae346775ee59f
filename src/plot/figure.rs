//! [`Figure`]: a plotly figure with an id and a title, rendered three ways:
//!
//! * [`Figure::to_html_fragment`]: a `<div>` and a `<script>` that draws it, *without* plotly.js,
//!   for a report page that includes [`plotly_js`](super::html::plotly_js) once in its `<head>`;
//!   its DOM id comes from the page's [`FigureIds`], so no two figures of a page share one;
//! * [`Figure::write_html`]: a standalone offline page (plotly.js embedded, no CDN), written
//!   atomically;
//! * [`Figure::evcxr_display`]: a notebook display (see below).
//!
//! **Hover images.** plotly hover labels cannot show images. A figure built with a hover panel
//! ([`scatter_groups`](super::figures::scatter_groups) with thumbnails) carries each point's map
//! as a PNG data URI in the trace's `customdata`; its fragment adds an `<img>` beside the plot and
//! a script that listens to `plotly_hover` and shows the hovered point's image and label there.
//!
//! **Notebook display (evcxr).** evcxr merges the display blocks a cell prints into one Jupyter
//! MIME bundle (see [`html`](super::html)), so [`Figure::evcxr_display`] prints alternatives:
//! * `application/vnd.plotly.v1+json` (the plot JSON): drawn by JupyterLab with the plotly
//!   extension and by VS Code, with no script;
//! * `text/html`: the fragment, preceded by plotly.js inlined *once per kernel session* (the first
//!   figure displayed carries it; later ones reuse `window.Plotly`). Classic Notebook, JupyterLab
//!   without the plotly extension, and `nbconvert --to html` use this, offline. evcxr links each
//!   cell's code with its own copy of xinc's statics, so "already sent" is kept in the kernel
//!   process's environment (`XINC_NOTEBOOK_PLOTLY_JS`), which every cell shares, and so are the
//!   kernel's figure ids (see [`FigureIds`]);
//! * `text/plain`: a one-line summary for the terminal REPL.
//!
//! evcxr keeps only the last display of a cell, so a notebook shows one figure per cell (a
//! second `evcxr_display` in the same cell replaces the first, plotly.js included).
//!
//! Figures with a hover panel emit only `text/html` and `text/plain` (the JSON renderer cannot run
//! the hover script), and always inline plotly.js: in a frontend that draws the other figures from
//! JSON, no earlier HTML output has loaded it. If a notebook's outputs were cleared and plotly.js
//! is gone from the page, the figure shows a note instead of a blank; call
//! [`reset_notebook_plotly_js`] and display again.

use std::fmt;
use std::path::Path;
use std::sync::PoisonError;

use plotly::Plot;

use super::html::{
    dom_id, escape_html, mime_bundle, notebook_figure_id, plotly_script_tag, plotly_text,
    print_bundle, script_safe_json, FigureIds, ENV_LOCK, PLOTLY_MIME,
};
use crate::error::Result;

/// Set in the kernel's environment once a `text/html` display has carried plotly.js.
const PLOTLY_JS_SENT: &str = "XINC_NOTEBOOK_PLOTLY_JS";

/// Makes the next notebook display inline plotly.js again (after clearing a notebook's outputs).
pub fn reset_notebook_plotly_js() {
    let _guard = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    std::env::remove_var(PLOTLY_JS_SENT);
}

/// True for the first call in this kernel process (and after [`reset_notebook_plotly_js`]).
fn first_plotly_js() -> bool {
    let _guard = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if std::env::var_os(PLOTLY_JS_SENT).is_some() {
        return false;
    }
    std::env::set_var(PLOTLY_JS_SENT, "1");
    true
}

/// A plotly figure with a name (the end of its DOM ids) and a title. Build one with the functions of
/// [`figures`](super::figures), or wrap any [`Plot`] with [`Figure::new`].
#[derive(Clone)]
pub struct Figure {
    id: String,
    title: String,
    plot: Plot,
    /// Width in CSS pixels of the hover-image panel, if the figure has one.
    hover_panel_px: Option<usize>,
}

impl fmt::Debug for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Figure")
            .field("id", &self.id)
            .field("title", &self.title)
            .field("traces", &self.plot.data().len())
            .field("hover_panel_px", &self.hover_panel_px)
            .finish()
    }
}

impl Figure {
    /// Wraps `plot`. The name is derived from `title` (see [`dom_id`]); the plot's layout is
    /// left as it is.
    pub fn new(title: &str, plot: Plot) -> Figure {
        Figure {
            id: dom_id(title),
            title: title.to_owned(),
            plot,
            hover_panel_px: None,
        }
    }

    /// Sets the name (sanitised) that ends the figure's DOM ids; the page's [`FigureIds`] keep
    /// them distinct.
    pub fn with_id(mut self, id: &str) -> Figure {
        self.id = dom_id(id);
        self
    }

    /// Sets the title, in the figure and in the plot's layout.
    pub fn with_title(mut self, title: &str) -> Figure {
        let layout = self.plot.layout().clone().title(plotly_text(title));
        self.plot.set_layout(layout);
        self.title = title.to_owned();
        self
    }

    /// Adds the hover-image panel (`width_px` wide): the traces' `customdata` must hold image URIs.
    pub(crate) fn with_hover_panel(mut self, width_px: usize) -> Figure {
        self.hover_panel_px = Some(width_px);
        self
    }

    /// The name that ends the DOM ids of the figure's displays.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The plotly plot.
    pub fn plot(&self) -> &Plot {
        &self.plot
    }

    /// Whether the figure shows hovered points' images beside the plot.
    pub fn has_hover_panel(&self) -> bool {
        self.hover_panel_px.is_some()
    }

    /// The plot as plotly JSON (`{"data": …, "layout": …, "config": …}`).
    pub fn to_json(&self) -> String {
        self.plot.to_json()
    }

    /// A `<div>` and the `<script>` that draws the figure into it, without plotly.js (include
    /// [`plotly_script_tag`] once in the page's `<head>`). The `<div>`'s id is the next of `ids`.
    pub fn to_html_fragment(&self, ids: &mut FigureIds) -> String {
        self.fragment(&ids.issue(&self.id))
    }

    /// A standalone offline HTML page: plotly.js inlined, no network access needed.
    pub fn to_html_page(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{}</title>\n{}\n</head>\n<body>\n{}\n</body>\n</html>\n",
            escape_html(&self.title),
            plotly_script_tag(),
            self.to_html_fragment(&mut FigureIds::new("page"))
        )
    }

    /// Writes [`Figure::to_html_page`] to `path`, atomically.
    pub fn write_html(&self, path: impl AsRef<Path>) -> Result<()> {
        let page = self.to_html_page();
        crate::io::write_atomic(path.as_ref(), |w| w.write_all(page.as_bytes()))
    }

    /// The evcxr display blocks (see the module header); `embed_plotly_js` puts plotly.js before
    /// the HTML fragment. [`Figure::evcxr_display`] prints this.
    pub fn evcxr_bundle(&self, embed_plotly_js: bool) -> String {
        let dom = notebook_figure_id(&self.id);
        let mut html = String::new();
        if embed_plotly_js {
            html.push_str(plotly_script_tag());
            html.push('\n');
        }
        html.push_str(&self.fragment(&dom));
        let plain = format!(
            "Figure {:?} ({} traces)",
            self.title,
            self.plot.data().len()
        );
        if self.has_hover_panel() {
            mime_bundle(&[("text/html", &html), ("text/plain", &plain)])
        } else {
            let json = self.to_json();
            mime_bundle(&[
                (PLOTLY_MIME, &json),
                ("text/html", &html),
                ("text/plain", &plain),
            ])
        }
    }

    /// Displays the figure in an evcxr notebook (called by evcxr for a cell's trailing `Figure`).
    pub fn evcxr_display(&self) {
        // Any HTML output that carries plotly.js loads it for the later ones too.
        let embed = first_plotly_js() || self.has_hover_panel();
        print_bundle(&self.evcxr_bundle(embed));
    }

    /// The fragment with the plot's `<div>` id `dom` (already a safe id).
    fn fragment(&self, dom: &str) -> String {
        let panel = self.hover_panel_px.map(|px| hover_panel_html(dom, px));
        let hook = if panel.is_some() { HOVER_HOOK } else { "" };
        format!(
            "<div class=\"xinc-figure\" id=\"{dom}-figure\" \
             style=\"display:flex;align-items:flex-start;gap:12px\">\n\
             <div id=\"{dom}\" class=\"plotly-graph-div\" style=\"flex:1 1 auto;min-width:0\"></div>\n\
             {panel}\
             <script type=\"text/javascript\">\n(function () {{\n\
             var gd = document.getElementById(\"{dom}\");\n\
             if (!window.Plotly) {{ gd.textContent = \"{NO_PLOTLY}\"; return; }}\n\
             Plotly.newPlot(gd, {json}).then(function () {{{hook}}});\n\
             }})();\n</script>\n</div>",
            panel = panel.unwrap_or_default(),
            json = script_safe_json(&self.to_json()),
        )
    }
}

/// Shown in place of the plot when the page has not loaded plotly.js.
const NO_PLOTLY: &str = "plotly.js is not loaded on this page (in a notebook: call \
                         xinc::plot::figure::reset_notebook_plotly_js() and display again)";

/// The `<img>` and caption beside a plot with hover images; the ids derive from the plot's `dom`.
fn hover_panel_html(dom: &str, width_px: usize) -> String {
    format!(
        "<div class=\"xinc-hover-panel\" \
         style=\"flex:none;width:{width_px}px;text-align:center;font:12px sans-serif\">\n\
         <img id=\"{dom}-hover\" alt=\"map of the hovered point\" \
         style=\"width:{width_px}px;image-rendering:pixelated;visibility:hidden\">\n\
         <div id=\"{dom}-hover-caption\">hover a point to see its map</div>\n</div>\n"
    )
}

/// Runs once the plot is drawn (`gd` is its `<div>`): shows the hovered point's `customdata`
/// image and `text` label in the panel of [`hover_panel_html`]. Labels are already HTML-escaped.
const HOVER_HOOK: &str = r#"
  /* xinc hover images: show the hovered point's map beside the plot */
  var img = document.getElementById(gd.id + "-hover");
  var caption = document.getElementById(gd.id + "-hover-caption");
  gd.on("plotly_hover", function (ev) {
    var p = ev && ev.points && ev.points[0];
    if (!p || typeof p.customdata !== "string") { return; }
    img.src = p.customdata;
    img.style.visibility = "visible";
    caption.innerHTML = p.text === undefined ? "" : String(p.text);
  });
"#;

#[cfg(test)]
mod tests {
    use super::super::html::plotly_js;
    use super::*;
    use plotly::{Layout, Scatter};

    fn sample() -> Figure {
        let mut plot = Plot::new();
        plot.add_trace(Scatter::new(vec![1.0, 2.0], vec![3.5, -7.25]).name("curve </script>"));
        plot.set_layout(Layout::new().title("Sample"));
        Figure::new("Sample figure", plot)
    }

    /// A distinctive piece of plotly.js (its licence banner) to count copies of it.
    fn plotly_marker() -> &'static str {
        &plotly_js()[..120]
    }

    #[test]
    fn fragment_has_data_and_no_plotly_js() {
        let fig = sample();
        assert_eq!(fig.id(), "sample-figure");
        let mut ids = FigureIds::new("test");
        let html = fig.to_html_fragment(&mut ids);
        assert!(html.contains("id=\"test-1-sample-figure\""));
        assert!(fig
            .to_html_fragment(&mut ids)
            .contains("id=\"test-2-sample-figure\""));
        assert!(html.contains("[3.5,-7.25]"), "{html}");
        assert!(html.contains("curve \\u003c/script\\u003e"));
        assert_eq!(
            html.matches("</script>").count(),
            1,
            "the name must not end the script"
        );
        assert!(!html.contains(plotly_marker()));
        assert!(!html.contains("plotly_hover"));
        assert!(html.len() < 10_000);
    }

    #[test]
    fn page_embeds_plotly_once_and_needs_no_network() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/fig.html");
        sample().write_html(&path).unwrap();
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches(plotly_marker()).count(), 1);
        let tags: Vec<&str> = page.split("<script").skip(1).collect();
        assert_eq!(tags.len(), 2, "plotly.js and the figure's script");
        assert!(
            tags.iter()
                .all(|t| !t[..t.find('>').unwrap()].contains("src")),
            "no external script"
        );
        assert!(!page.contains("https://cdn.plot.ly/plotly"));
        assert!(!page.contains("require(["));
        assert!(page.contains("<title>Sample figure</title>"));
        assert!(page.contains("[3.5,-7.25]"));
        assert!(page.contains("id=\"page-1-sample-figure\""));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn with_title_updates_layout() {
        let fig = sample().with_title("A < B").with_id("my id");
        assert_eq!(fig.title(), "A < B");
        assert_eq!(fig.id(), "my-id");
        assert!(fig.to_json().contains("A &lt; B"));
    }

    #[test]
    fn plotly_js_is_sent_once_per_process_until_reset() {
        reset_notebook_plotly_js();
        assert!(first_plotly_js());
        assert!(!first_plotly_js());
        assert_eq!(std::env::var(PLOTLY_JS_SENT).as_deref(), Ok("1"));
        reset_notebook_plotly_js();
        assert!(first_plotly_js());
    }

    #[test]
    fn evcxr_bundle_offers_json_html_and_text() {
        let fig = sample();
        let with_js = fig.evcxr_bundle(true);
        assert!(with_js.starts_with("EVCXR_BEGIN_CONTENT application/vnd.plotly.v1+json\n{"));
        assert_eq!(with_js.matches("EVCXR_BEGIN_CONTENT").count(), 3);
        assert_eq!(with_js.matches("\nEVCXR_END_CONTENT\n").count(), 3);
        assert!(with_js.contains("EVCXR_BEGIN_CONTENT text/html\n"));
        assert!(with_js.contains("EVCXR_BEGIN_CONTENT text/plain\nFigure \"Sample figure\""));
        assert_eq!(with_js.matches(plotly_marker()).count(), 1);
        let json_block = with_js.lines().nth(1).unwrap();
        let value: serde_json::Value = serde_json::from_str(json_block).unwrap();
        assert_eq!(value["data"][0]["y"][1], -7.25);

        let without = fig.evcxr_bundle(false);
        assert!(!without.contains(plotly_marker()));
        // Each display gets its own DOM id, so showing a figure twice draws it twice.
        let id_of = |b: &str| {
            let b = &b[b.find("xinc-figure").unwrap()..];
            let start = b.find("<div id=\"").unwrap() + 9;
            b[start..start + b[start..].find('"').unwrap()].to_owned()
        };
        assert_ne!(id_of(&with_js), id_of(&without));
        assert!(id_of(&without).starts_with("nb-"));
        assert!(id_of(&without).ends_with("-sample-figure"));
    }
}
