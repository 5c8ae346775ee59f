//! Builders for the figures of the paper's analyses, each returning a [`Figure`].
//!
//! Most take plain data (slices, names); the last two draw analysis results directly, for the
//! report and the notebooks.
//!
//! | builder | draws |
//! |---|---|
//! | [`map_grid_figure`] | contribution maps, one `heatmap` trace per map, titled, with colour bars ([`MapGridConfig`]) |
//! | [`strongest_maps_figure`] | the maps of a layer's strongest neurons (largest Σ|c|) |
//! | [`rgb_grid_figure`] | frames and reconstructions (planar RGB), laid out like the maps |
//! | [`heatmap`] | a matrix (neurons × instances shares, frac maps); hover: row, column, value |
//! | [`box_plots`] | distributions, one trace per name, optionally grouped by category (log-std per partition per layer) |
//! | [`sorted_curves`] | values sorted in decreasing order against their rank (pixels per neuron) |
//! | [`line_series`] | curves over a shared x (per-frame shares) |
//! | [`scatter_groups`] | a 2-D embedding coloured by group; hovering a point shows its map beside the plot |
//! | [`object_share_heatmap`] | [`ObjectShares`] of one layer: neurons × instances |
//! | [`neuron_group_scatter`] | [`NeuronGroups`] on their PCA embedding, maps on hover |
//!
//! **Map colours.** A grid's maps share one colour scale per kind, each with its colour bar:
//! maps with negative values (signed contributions, differences) on a diverging scale centred at
//! 0 (blue < 0 < red, symmetric about 0), the others (absolute values, magnitudes, fractions) on
//! the paper's sequential magma from the smallest to the largest value. Hovering a map shows its
//! title (the neuron, or the NeRV kernel `i→k`) and the value. Hover thumbnails are PNGs coloured
//! like [`map_grid`]: each min-max normalised on its own. User text (titles, names, labels) is
//! shown literally (entity-escaped for plotly).

use base64::Engine as _;
use image::{codecs::png::PngEncoder, RgbImage};
use plotly::color::Rgb;
use plotly::common::{
    Anchor, ColorBar, ColorScale, ColorScaleElement, ColorScalePalette, Font, Marker, Mode, Side,
    Title,
};
use plotly::layout::{
    Annotation, Axis, AxisRange, AxisType, BoxMode, CategoryOrder, HoverMode, Margin,
};
use plotly::{BoxPlot, HeatMap, Image, Layout, Plot, Scatter};
use polars::prelude::{DataFrame, DataType};

use super::figure::Figure;
use super::html::plotly_text;
use super::{magma, map_grid};
use crate::analysis::groups::{NeuronGroups, NeuronVectors};
use crate::analysis::objects::ObjectShares;
use crate::analysis::stats::neuron_rows;
use crate::analysis::{named_column, table_error};
use crate::canvas::maps::{neuron_label, NeuronMaps};
use crate::error::{Result, XincError};

fn invalid(message: String) -> XincError {
    XincError::InvalidArgument(message)
}

/// Checks that `len` values fill a non-empty `height × width` grid.
fn check_shape(len: usize, height: usize, width: usize, what: &str) -> Result<()> {
    match height.checked_mul(width) {
        Some(n) if n > 0 && n == len => Ok(()),
        _ => Err(invalid(format!(
            "{what}: {len} values do not fill a {height}×{width} grid"
        ))),
    }
}

/// A `data:image/png;base64,…` URI of one map (`height·width` values, row-major), min-max
/// normalised and magma-coloured like [`map_grid`].
pub(crate) fn map_data_uri(map: &[f32], height: usize, width: usize) -> Result<String> {
    check_shape(map.len(), height, width, "map")?;
    png_data_uri(&map_grid(&[map], height, width, 1, 0))
}

fn png_data_uri(img: &RgbImage) -> Result<String> {
    let mut png = Vec::new();
    img.write_with_encoder(PngEncoder::new(&mut png))
        .map_err(|e| invalid(format!("cannot encode a {:?} PNG: {e}", img.dimensions())))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    Ok(format!("data:image/png;base64,{b64}"))
}

/// Averages `factor × factor` blocks of a map (edge blocks over the pixels they have), e.g. to
/// make small hover thumbnails. Returns the map and its new height and width.
pub fn downsample_map(
    map: &[f32],
    height: usize,
    width: usize,
    factor: usize,
) -> Result<(Vec<f32>, usize, usize)> {
    check_shape(map.len(), height, width, "map")?;
    if factor == 0 {
        return Err(invalid("downsample_map: factor must be at least 1".into()));
    }
    let (oh, ow) = (height.div_ceil(factor), width.div_ceil(factor));
    let mut sum = vec![0.0f64; oh * ow];
    let mut count = vec![0u32; oh * ow];
    for (p, &v) in map.iter().enumerate() {
        let o = (p / width / factor) * ow + (p % width) / factor;
        sum[o] += f64::from(v);
        count[o] += 1;
    }
    let out = sum
        .iter()
        .zip(&count)
        .map(|(s, &c)| (s / f64::from(c)) as f32);
    Ok((out.collect(), oh, ow))
}

/// A layout with `title` and room for it.
fn base_layout(title: &str) -> Layout {
    Layout::new()
        .title(plotly_text(title))
        .hover_mode(HoverMode::Closest)
}

fn titled_axis(label: &str) -> Axis {
    Axis::new().title(plotly_text(label))
}

// ---------------------------------------------------------------------------------------------
// Map grids

/// Title of [`map_grid_figure`]'s figure (change it with [`Figure::with_title`]).
pub const MAP_GRID_TITLE: &str = "Contribution maps";

/// Where the maps of [`map_grid_figure`] sit in one shared pair of (hidden) axes, in map pixels.
struct Mosaic {
    cols: usize,
    rows: usize,
    height: usize,
    width: usize,
    /// Horizontal gap between maps.
    gap: usize,
    /// Band above each map for its title.
    band: usize,
    /// Screen pixels per map pixel.
    scale: f64,
}

impl Mosaic {
    /// The whole figure about this many screen pixels wide, colour bars included (small maps are
    /// enlarged at most 8×, so that a grid of small thumbnails is still wide enough for its title
    /// beside plotly's mode bar): it fits a notebook's output area and the report's column.
    const TARGET_PX: f64 = 1000.0;
    const MARGIN: usize = 10;
    const TOP: usize = 50;

    /// `n` maps of `height·width`, `cols` per row, leaving `beside_px` screen pixels of the
    /// target width to what sits beside them (colour bars).
    fn new(n: usize, height: usize, width: usize, cols: usize, beside_px: usize) -> Mosaic {
        let cols = cols.clamp(1, n.max(1));
        let maps_px = Self::TARGET_PX - (2 * Self::MARGIN + beside_px) as f64;
        let scale = (maps_px / (cols * width) as f64).min(8.0);
        Mosaic {
            cols,
            rows: n.div_ceil(cols),
            height,
            width,
            gap: (8.0 / scale).ceil() as usize,
            band: (18.0 / scale).ceil() as usize,
            scale,
        }
    }

    /// The centre of the top-left pixel of map `k`.
    fn origin(&self, k: usize) -> (f64, f64) {
        let x = (k % self.cols) * (self.width + self.gap);
        let y = (k / self.cols) * (self.height + self.band) + self.band;
        (x as f64, y as f64)
    }

    fn extent(&self) -> (f64, f64) {
        let w = self.cols * self.width + (self.cols - 1) * self.gap;
        (w as f64, (self.rows * (self.height + self.band)) as f64)
    }

    fn layout(&self, title: &str) -> Layout {
        let (w, h) = self.extent();
        base_layout(title)
            .width((w * self.scale).ceil() as usize + 2 * Self::MARGIN)
            .height((h * self.scale).ceil() as usize + Self::TOP + Self::MARGIN)
            .margin(
                Margin::new()
                    .left(Self::MARGIN)
                    .right(Self::MARGIN)
                    .top(Self::TOP)
                    .bottom(Self::MARGIN),
            )
            .x_axis(
                Axis::new()
                    .visible(false)
                    .range(AxisRange::new(-0.5, w - 0.5)),
            )
            .y_axis(
                Axis::new()
                    .visible(false)
                    .range(AxisRange::new(h - 0.5, -0.5))
                    .scale_anchor("x"),
            )
    }

    /// The title annotation of item `k`.
    fn note(&self, k: usize, name: &str) -> Annotation {
        let (x0, y0) = self.origin(k);
        Annotation::new()
            .text(plotly_text(name))
            .x(x0 + (self.width as f64 - 1.0) / 2.0)
            .y(y0 - 0.5)
            .x_ref("x")
            .y_ref("y")
            .y_anchor(Anchor::Bottom)
            .show_arrow(false)
            .font(Font::new().size(11))
    }

    /// The screen width of the maps' area, in pixels.
    fn plot_px(&self) -> f64 {
        self.extent().0 * self.scale
    }
}

/// Options of [`map_grid_figure_with`].
#[derive(Clone, Debug)]
pub struct MapGridConfig {
    /// Maps per row.
    pub cols: usize,
    /// What a value is ("contribution"): the colour bars' title and the hover's label.
    pub value_label: String,
}

impl Default for MapGridConfig {
    fn default() -> Self {
        MapGridConfig {
            cols: 4,
            value_label: "value".into(),
        }
    }
}

/// A grid of maps (each `height·width`, row-major), `cols` per row, titled by `titles` (one per
/// map, or empty for "map k"): [`map_grid_figure_with`] with the default value label.
pub fn map_grid_figure(
    maps: &[&[f32]],
    height: usize,
    width: usize,
    titles: &[impl AsRef<str>],
    cols: usize,
) -> Result<Figure> {
    let config = MapGridConfig {
        cols,
        ..MapGridConfig::default()
    };
    map_grid_figure_with(maps, height, width, titles, &config)
}

/// [`map_grid_figure_with`] over owned `(map, title)` panels, as a notebook builds them.
pub fn map_panels_figure(
    panels: &[(Vec<f32>, String)],
    height: usize,
    width: usize,
    config: &MapGridConfig,
) -> Result<Figure> {
    let maps: Vec<&[f32]> = panels.iter().map(|(m, _)| m.as_slice()).collect();
    let titles: Vec<&str> = panels.iter().map(|(_, t)| t.as_str()).collect();
    map_grid_figure_with(&maps, height, width, &titles, config)
}

/// A grid of maps (each `height·width`, row-major), each a `heatmap` trace titled by `titles`
/// (one per map, or empty for "map k"), coloured as the module header says: one shared
/// sequential scale for the maps without negative values, one diverging scale centred at 0 for
/// the others, each with its colour bar. Hovering a map shows its title and the value (three
/// significant digits, as the figure stores them). The figure is titled [`MAP_GRID_TITLE`].
pub fn map_grid_figure_with(
    maps: &[&[f32]],
    height: usize,
    width: usize,
    titles: &[impl AsRef<str>],
    config: &MapGridConfig,
) -> Result<Figure> {
    let names = grid_names(maps.len(), titles, "map")?;
    for (k, map) in maps.iter().enumerate() {
        check_shape(map.len(), height, width, &format!("map {k}"))?;
    }
    let mut scales = MapScales::new(maps, &config.value_label);
    let bars_px = scales.bars() * COLOR_BAR_PX;
    let mosaic = Mosaic::new(maps.len(), height, width, config.cols, bars_px);
    let hover = format!(
        "%{{fullData.name}}<br>{} %{{z:.3g}}<extra></extra>",
        plotly_text(&config.value_label)
    );
    let mut plot = Plot::new();
    let mut notes = Vec::with_capacity(maps.len());
    for (k, (map, name)) in maps.iter().zip(&names).enumerate() {
        let (x0, y0) = mosaic.origin(k);
        let z: Vec<Vec<f32>> = map
            .chunks(width)
            .map(|row| row.iter().map(|&v| round_significant(v, 3)).collect())
            .collect();
        let x: Vec<f64> = (0..width).map(|c| x0 + c as f64).collect();
        let y: Vec<f64> = (0..height).map(|r| y0 + r as f64).collect();
        let trace = HeatMap::new(x, y, z)
            .name(plotly_text(name))
            .hover_template(hover.clone());
        plot.add_trace(scales.style(trace, map, mosaic.plot_px()));
        notes.push(mosaic.note(k, name));
    }
    let layout = mosaic
        .layout(MAP_GRID_TITLE)
        .margin(
            Margin::new()
                .left(Mosaic::MARGIN)
                .right(Mosaic::MARGIN + bars_px)
                .top(Mosaic::TOP)
                .bottom(Mosaic::MARGIN),
        )
        .annotations(notes);
    let width_px = layout_width(&mosaic) + bars_px;
    plot.set_layout(layout.width(width_px));
    Ok(Figure::new(MAP_GRID_TITLE, plot))
}

/// One map of a grid: x and y in mosaic pixels, rows of values.
type MapTrace = HeatMap<f64, f64, Vec<f32>>;

/// Screen pixels a colour bar with its tick labels takes beside a map grid.
const COLOR_BAR_PX: usize = 90;

fn layout_width(mosaic: &Mosaic) -> usize {
    mosaic.plot_px().ceil() as usize + 2 * Mosaic::MARGIN
}

/// `titles` (one per item) or "`what` k".
fn grid_names(n: usize, titles: &[impl AsRef<str>], what: &str) -> Result<Vec<String>> {
    if n == 0 {
        return Err(invalid(format!(
            "a grid of {what}s needs at least one {what}"
        )));
    }
    if !titles.is_empty() && titles.len() != n {
        return Err(invalid(format!(
            "a grid of {what}s: {} titles for {n} {what}s",
            titles.len()
        )));
    }
    Ok((0..n)
        .map(|k| {
            titles
                .get(k)
                .map_or_else(|| format!("{what} {k}"), |t| t.as_ref().to_owned())
        })
        .collect())
}

/// `v` rounded to `digits` significant digits (what a figure needs; it keeps its JSON small).
pub(crate) fn round_significant(v: f32, digits: i32) -> f32 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let v = f64::from(v);
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    ((v * scale).round() / scale) as f32
}

/// The colour scales of one map grid: the range of its unsigned maps (sequential) and the
/// largest |value| of its signed ones (diverging), and where their colour bars go.
struct MapScales {
    sequential: Option<(f64, f64)>,
    diverging: Option<f64>,
    label: String,
    /// Whether a trace already shows the sequential (0) or the diverging (1) bar.
    shown: [bool; 2],
}

impl MapScales {
    fn new(maps: &[&[f32]], label: &str) -> MapScales {
        let (mut sequential, mut diverging) = (None::<(f64, f64)>, None::<f64>);
        for map in maps {
            let (lo, hi) = finite_range(map);
            if lo < 0.0 {
                let m = lo.abs().max(hi.abs());
                diverging = Some(diverging.map_or(m, |d| d.max(m)));
            } else if lo <= hi {
                sequential = Some(sequential.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }
        MapScales {
            sequential,
            diverging,
            label: label.to_owned(),
            shown: [false; 2],
        }
    }

    /// How many colour bars the grid shows.
    fn bars(&self) -> usize {
        usize::from(self.sequential.is_some()) + usize::from(self.diverging.is_some())
    }

    /// Colours `trace` (of `map`) on its scale; the first trace of each scale shows its bar,
    /// beside the maps' area of `plot_px` screen pixels.
    fn style(&mut self, trace: Box<MapTrace>, map: &[f32], plot_px: f64) -> Box<MapTrace> {
        let signed = finite_range(map).0 < 0.0;
        let (lo, hi, scale, title, bar) = match (signed, self.sequential, self.diverging) {
            (true, _, Some(m)) => {
                let m = if m > 0.0 { m } else { 1.0 };
                let title = if self.sequential.is_some() {
                    format!("{} (signed)", self.label)
                } else {
                    self.label.clone()
                };
                (-m, m, diverging_scale(), title, self.bars() - 1)
            }
            (_, Some((lo, hi)), _) => {
                let hi = if hi > lo { hi } else { lo + 1.0 };
                (lo, hi, ColorMap::Magma.scale(), self.label.clone(), 0)
            }
            // A map of no finite value: nothing to colour.
            _ => (0.0, 1.0, ColorMap::Magma.scale(), self.label.clone(), 0),
        };
        let x = 1.0 + (10.0 + (bar * COLOR_BAR_PX) as f64) / plot_px.max(1.0);
        let kind = usize::from(signed && self.diverging.is_some());
        let show = !std::mem::replace(&mut self.shown[kind], true);
        trace
            .color_scale(scale)
            .zmin(lo)
            .zmax(hi)
            .show_scale(show)
            .color_bar(
                ColorBar::new()
                    .title(Title::with_text(bar_title(&title)).side(Side::Top))
                    .x(x)
                    .x_anchor(Anchor::Left)
                    .thickness(14),
            )
    }
}

/// A colour bar's title over its bar, wrapped into lines of about 12 characters so that it stays
/// within the bar's [`COLOR_BAR_PX`] and never reaches the next bar.
fn bar_title(label: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= 12 => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
        .iter()
        .map(|l| plotly_text(l))
        .collect::<Vec<_>>()
        .join("<br>")
}

/// The smallest and largest finite value of `map` (`(∞, −∞)` when it has none).
fn finite_range(map: &[f32]) -> (f64, f64) {
    map.iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(f64::from(v)), b.max(f64::from(v)))
        })
}

/// ColorBrewer's RdBu, blue for negative values, white at the centre, red for positive ones.
fn diverging_scale() -> ColorScale {
    const RDBU: [&str; 11] = [
        "#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582",
        "#d6604d", "#b2182b", "#67001f",
    ];
    ColorScale::Vector(
        RDBU.iter()
            .enumerate()
            .map(|(i, c)| ColorScaleElement(i as f64 / 10.0, (*c).to_owned()))
            .collect(),
    )
}

/// The maps of the `count` neurons of `src` with the largest total |contribution|, strongest
/// first, laid out like [`map_grid_figure`] and titled by neuron and share of the layer's total.
pub fn strongest_maps_figure(src: &dyn NeuronMaps, count: usize, cols: usize) -> Result<Figure> {
    let (rows, _) = neuron_rows(src);
    let total: f64 = rows.iter().map(|r| r.abs_sum).sum();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[b].abs_sum.total_cmp(&rows[a].abs_sum));
    order.truncate(count);
    let maps: Vec<Vec<f32>> = order.iter().map(|&n| src.map(n)).collect();
    let titles: Vec<String> = order
        .iter()
        .map(|&n| {
            let share = 100.0 * rows[n].abs_sum / total.max(f64::MIN_POSITIVE);
            format!("{} ({share:.1}%)", src.neuron_name(n))
        })
        .collect();
    let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
    let (h, w) = src.size();
    let config = MapGridConfig {
        cols,
        value_label: "contribution".into(),
    };
    let fig = map_grid_figure_with(&refs, h, w, &titles, &config)?;
    Ok(fig.with_title(&format!(
        "{}: the {} strongest neurons",
        src.layer(),
        refs.len()
    )))
}

/// A grid of RGB images (planar `[3, height, width]` values in [0, 1], as frames and model
/// outputs are), laid out and titled like [`map_grid_figure`], each a PNG `image` trace; the
/// figure is titled "Images".
pub fn rgb_grid_figure(
    images: &[&[f32]],
    height: usize,
    width: usize,
    titles: &[impl AsRef<str>],
    cols: usize,
) -> Result<Figure> {
    let names = grid_names(images.len(), titles, "image")?;
    let mosaic = Mosaic::new(images.len(), height, width, cols, 0);
    let mut plot = Plot::new();
    let mut notes = Vec::with_capacity(images.len());
    for (k, (planar, name)) in images.iter().zip(&names).enumerate() {
        check_shape(
            planar.len(),
            3 * height,
            width,
            &format!("image {k}: planar RGB image"),
        )?;
        let plane = height * width;
        let uri = png_data_uri(&RgbImage::from_fn(width as u32, height as u32, |x, y| {
            let p = y as usize * width + x as usize;
            let byte = |c: usize| (planar[c * plane + p].clamp(0.0, 1.0) * 255.0).round() as u8;
            image::Rgb([byte(0), byte(1), byte(2)])
        }))?;
        let (x0, y0) = mosaic.origin(k);
        plot.add_trace(
            Image::new(Vec::<Vec<Rgb>>::new())
                .source(uri)
                .x0(x0)
                .y0(y0)
                .name(plotly_text(name))
                .hover_template("%{fullData.name}<extra></extra>"),
        );
        notes.push(mosaic.note(k, name));
    }
    plot.set_layout(mosaic.layout("Images").annotations(notes));
    Ok(Figure::new("Images", plot))
}

// ---------------------------------------------------------------------------------------------
// Heatmaps

/// The colour scale of a [`heatmap`].
#[derive(Clone, Debug, Default)]
pub enum ColorMap {
    /// matplotlib's magma, as the paper's maps (sampled from [`magma`]).
    #[default]
    Magma,
    /// One of plotly's named scales (e.g. `RdBu` for signed values).
    Palette(ColorScalePalette),
}

impl ColorMap {
    fn scale(&self) -> ColorScale {
        match self {
            ColorMap::Magma => ColorScale::Vector(
                (0..=10)
                    .map(|i| {
                        let t = i as f32 / 10.0;
                        let [r, g, b] = magma(t).0;
                        ColorScaleElement(f64::from(t), format!("rgb({r},{g},{b})"))
                    })
                    .collect(),
            ),
            ColorMap::Palette(p) => ColorScale::Palette(p.clone()),
        }
    }
}

/// Labels, names and colours of a [`heatmap`].
#[derive(Clone, Debug)]
pub struct HeatmapStyle {
    /// What a row is ("neuron"): the y-axis title and the hover's first line.
    pub row_label: String,
    /// What a column is ("instance").
    pub col_label: String,
    /// What a value is ("share"): the colour bar's title.
    pub value_label: String,
    /// One name per row, or empty for the row index.
    pub row_names: Vec<String>,
    /// One name per column, or empty for the column index.
    pub col_names: Vec<String>,
    pub colors: ColorMap,
    /// Colour-scale bounds; `None` lets plotly use the data's range.
    pub zmin: Option<f64>,
    pub zmax: Option<f64>,
    /// Square cells (for maps); otherwise the matrix fills the plot.
    pub square_cells: bool,
}

impl Default for HeatmapStyle {
    fn default() -> Self {
        HeatmapStyle {
            row_label: "row".into(),
            col_label: "column".into(),
            value_label: "value".into(),
            row_names: Vec::new(),
            col_names: Vec::new(),
            colors: ColorMap::Magma,
            zmin: None,
            zmax: None,
            square_cells: false,
        }
    }
}

/// `names` (checked to be `n` long) or the indices `0..n`, as axis categories.
fn axis_names(names: &[String], n: usize, what: &str) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok((0..n).map(|i| i.to_string()).collect());
    }
    if names.len() != n {
        return Err(invalid(format!("heatmap: {} {what} for {n}", names.len())));
    }
    Ok(names.iter().map(|s| plotly_text(s)).collect())
}

/// A `height × width` matrix (row-major `values`) as a heatmap, row 0 at the top. Hovering a cell
/// shows its row, column and value under the style's labels.
pub fn heatmap<T: Copy + Into<f64>>(
    values: &[T],
    height: usize,
    width: usize,
    title: &str,
    style: &HeatmapStyle,
) -> Result<Figure> {
    check_shape(values.len(), height, width, "heatmap")?;
    let rows = axis_names(&style.row_names, height, "row names")?;
    let cols = axis_names(&style.col_names, width, "column names")?;
    let z: Vec<Vec<f64>> = values
        .chunks(width)
        .map(|r| r.iter().map(|&v| v.into()).collect())
        .collect();
    let hover = format!(
        "{} %{{y}}<br>{} %{{x}}<br>{} %{{z:.4g}}<extra></extra>",
        plotly_text(&style.row_label),
        plotly_text(&style.col_label),
        plotly_text(&style.value_label)
    );
    let mut trace = HeatMap::new(cols, rows, z)
        .color_scale(style.colors.scale())
        .color_bar(ColorBar::new().title(plotly_text(&style.value_label)))
        .hover_template(hover);
    if let Some(lo) = style.zmin {
        trace = trace.zmin(lo);
    }
    if let Some(hi) = style.zmax {
        trace = trace.zmax(hi);
    }
    let mut y_axis = titled_axis(&style.row_label).range(AxisRange::new(height as f64 - 0.5, -0.5));
    let mut layout = base_layout(title).x_axis(titled_axis(&style.col_label));
    if style.square_cells {
        y_axis = y_axis.scale_anchor("x");
        let h = 150 + 700 * height / width;
        layout = layout.height(h.clamp(300, 900));
    }
    let mut plot = Plot::new();
    plot.add_trace(trace);
    plot.set_layout(layout.y_axis(y_axis));
    Ok(Figure::new(title, plot))
}

// ---------------------------------------------------------------------------------------------
// Box plots

/// One distribution of [`box_plots`]: `values` under the legend entry `name`, at x-category
/// `category` if any (e.g. name = partition, category = layer).
#[derive(Clone, Debug, PartialEq)]
pub struct BoxGroup {
    pub name: String,
    pub category: Option<String>,
    pub values: Vec<f64>,
}

impl BoxGroup {
    /// A distribution without a category.
    pub fn new(name: impl Into<String>, values: Vec<f64>) -> BoxGroup {
        BoxGroup {
            name: name.into(),
            category: None,
            values,
        }
    }

    /// Places the distribution at x-category `category`.
    pub fn in_category(mut self, category: impl Into<String>) -> BoxGroup {
        self.category = Some(category.into());
        self
    }

    /// One distribution per distinct `(name, category)` pair of a table's rows, in order of
    /// first appearance: the values of column `value` (cast to f64), named by column `name`
    /// and placed at column `category` (both cast to strings).
    pub fn from_frame(
        df: &DataFrame,
        name: &str,
        category: &str,
        value: &str,
    ) -> Result<Vec<BoxGroup>> {
        let bad = |e| table_error("box groups", e);
        let text = |c: &str| -> Result<Vec<String>> {
            let col = named_column(df, c)?.cast(&DataType::String).map_err(bad)?;
            let strings = col.str().map_err(bad)?;
            Ok((0..strings.len())
                .map(|i| strings.get(i).unwrap_or("").to_string())
                .collect())
        };
        let (names, categories) = (text(name)?, text(category)?);
        let values = named_column(df, value)?
            .cast(&DataType::Float64)
            .map_err(bad)?;
        let values = values.f64().map_err(bad)?;
        let mut groups: Vec<BoxGroup> = Vec::new();
        for (i, (n, c)) in names.into_iter().zip(categories).enumerate() {
            let v = values.get(i).unwrap_or(f64::NAN);
            match groups
                .iter_mut()
                .find(|g| g.name == n && g.category.as_ref() == Some(&c))
            {
                Some(g) => g.values.push(v),
                None => groups.push(BoxGroup::new(n, vec![v]).in_category(c)),
            }
        }
        Ok(groups)
    }
}

/// The distinct items in order of first appearance.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Box plots with one trace (legend entry, colour) per distinct name. If the groups have
/// categories (all of them must), boxes are grouped side by side per category, categories in
/// order of first appearance, like the paper's log-std per partition per layer.
pub fn box_plots(groups: &[BoxGroup], title: &str, y_label: &str) -> Result<Figure> {
    let Some(first) = groups.first() else {
        return Err(invalid("box_plots: no groups".into()));
    };
    let categorised = first.category.is_some();
    if groups.iter().any(|g| g.category.is_some() != categorised) {
        return Err(invalid(
            "box_plots: either every group has a category or none has".into(),
        ));
    }
    let mut plot = Plot::new();
    for name in distinct(groups.iter().map(|g| g.name.as_str())) {
        let members: Vec<&BoxGroup> = groups.iter().filter(|g| g.name == name).collect();
        let ys: Vec<f64> = members.iter().flat_map(|g| g.values.clone()).collect();
        let name = plotly_text(name);
        if categorised {
            let xs: Vec<String> = members
                .iter()
                .flat_map(|g| {
                    let cat = plotly_text(g.category.as_deref().unwrap_or_default());
                    std::iter::repeat_n(cat, g.values.len())
                })
                .collect();
            plot.add_trace(BoxPlot::new_xy(xs, ys).name(name));
        } else {
            plot.add_trace(BoxPlot::new(ys).name(name));
        }
    }
    let mut layout = base_layout(title).y_axis(titled_axis(y_label));
    if categorised {
        let cats = distinct(groups.iter().filter_map(|g| g.category.as_deref()));
        let cats: Vec<String> = cats.into_iter().map(plotly_text).collect();
        layout = layout.box_mode(BoxMode::Group).x_axis(
            Axis::new()
                .category_order(CategoryOrder::Array)
                .category_array(cats),
        );
    }
    plot.set_layout(layout);
    Ok(Figure::new(title, plot))
}

// ---------------------------------------------------------------------------------------------
// Line figures

/// Axis labels and scale of [`sorted_curves`] and [`line_series`].
#[derive(Clone, Debug, Default)]
pub struct LineStyle {
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic y axis (non-positive values are not drawn).
    pub log_y: bool,
}

/// One named line; markers too when it has few points.
fn line_trace(name: &str, x: Vec<f64>, y: Vec<f64>, style: &LineStyle) -> Box<Scatter<f64, f64>> {
    let mode = if x.len() <= 60 {
        Mode::LinesMarkers
    } else {
        Mode::Lines
    };
    let hover = format!(
        "%{{fullData.name}}<br>{} %{{x:.4g}}<br>{} %{{y:.4g}}<extra></extra>",
        plotly_text(&style.x_label),
        plotly_text(&style.y_label)
    );
    Scatter::new(x, y)
        .mode(mode)
        .name(plotly_text(name))
        .hover_template(hover)
}

fn line_figure(
    traces: impl IntoIterator<Item = Box<Scatter<f64, f64>>>,
    title: &str,
    style: &LineStyle,
) -> Figure {
    let mut y_axis = titled_axis(&style.y_label);
    if style.log_y {
        y_axis = y_axis.type_(AxisType::Log);
    }
    let mut plot = Plot::new();
    for trace in traces {
        plot.add_trace(trace);
    }
    plot.set_layout(
        base_layout(title)
            .x_axis(titled_axis(&style.x_label))
            .y_axis(y_axis),
    );
    Figure::new(title, plot)
}

/// Each curve's finite values sorted in decreasing order, against their rank (1, 2, …; or
/// rank / count with `normalised_rank`, to compare curves of different lengths).
pub fn sorted_curves<S: AsRef<str>, V: AsRef<[f64]>>(
    curves: &[(S, V)],
    title: &str,
    style: &LineStyle,
    normalised_rank: bool,
) -> Result<Figure> {
    if curves.is_empty() {
        return Err(invalid("sorted_curves: no curves".into()));
    }
    let traces = curves.iter().map(|(name, values)| {
        let mut y: Vec<f64> = values
            .as_ref()
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        y.sort_by(|a, b| b.total_cmp(a));
        let n = y.len() as f64;
        let x = (1..=y.len())
            .map(|r| {
                if normalised_rank {
                    r as f64 / n
                } else {
                    r as f64
                }
            })
            .collect();
        line_trace(name.as_ref(), x, y, style)
    });
    Ok(line_figure(traces, title, style))
}

/// Curves over the shared `x` (e.g. frame index), one per `(name, values)`.
pub fn line_series<S: AsRef<str>, V: AsRef<[f64]>>(
    x: &[f64],
    series: &[(S, V)],
    title: &str,
    style: &LineStyle,
) -> Result<Figure> {
    if series.is_empty() {
        return Err(invalid("line_series: no series".into()));
    }
    let mut traces = Vec::with_capacity(series.len());
    for (name, values) in series {
        let values = values.as_ref();
        if values.len() != x.len() {
            return Err(invalid(format!(
                "line_series: series {:?} has {} values for {} x values",
                name.as_ref(),
                values.len(),
                x.len()
            )));
        }
        traces.push(line_trace(
            name.as_ref(),
            x.to_vec(),
            values.to_vec(),
            style,
        ));
    }
    Ok(line_figure(traces, title, style))
}

/// Curves with their own x values, one per `(name, x, y)` (e.g. a rate–distortion curve per
/// ranking: bits per pixel against PSNR), each drawn in the order given.
pub fn xy_curves<S: AsRef<str>>(
    curves: &[(S, Vec<f64>, Vec<f64>)],
    title: &str,
    style: &LineStyle,
) -> Result<Figure> {
    if curves.is_empty() {
        return Err(invalid("xy_curves: no curves".into()));
    }
    if let Some((name, x, y)) = curves.iter().find(|(_, x, y)| x.len() != y.len()) {
        return Err(invalid(format!(
            "xy_curves: curve {:?} has {} x and {} y values",
            name.as_ref(),
            x.len(),
            y.len()
        )));
    }
    let traces =
        (curves.iter()).map(|(name, x, y)| line_trace(name.as_ref(), x.clone(), y.clone(), style));
    Ok(line_figure(traces, title, style))
}

// ---------------------------------------------------------------------------------------------
// Embedding scatter with hover thumbnails

/// The points of [`scatter_groups`]. Every non-empty per-point slice has one entry per point.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScatterData<'a> {
    pub x: &'a [f64],
    pub y: &'a [f64],
    /// Each point's group (one trace and colour per group); empty puts all in group 0.
    pub group: &'a [usize],
    /// Name of group `g` at index `g`; empty for "group g".
    pub group_names: &'a [String],
    /// Each point's label (e.g. "layer 2 neuron 17"); empty for "point i".
    pub labels: &'a [String],
    /// Each point's map (`thumb_height·thumb_width`, row-major), shown beside the plot on hover;
    /// empty for none. Keep them small (see [`downsample_map`]): each is inlined as a PNG.
    pub thumbnails: &'a [Vec<f32>],
    pub thumb_height: usize,
    pub thumb_width: usize,
    pub x_label: &'a str,
    pub y_label: &'a str,
}

impl ScatterData<'_> {
    fn check(&self) -> Result<()> {
        let n = self.x.len();
        let lengths = [
            ("y", self.y.len(), false),
            ("group", self.group.len(), true),
            ("labels", self.labels.len(), true),
            ("thumbnails", self.thumbnails.len(), true),
        ];
        for (what, len, may_be_empty) in lengths {
            if len != n && !(may_be_empty && len == 0) {
                return Err(invalid(format!(
                    "scatter_groups: {len} {what} for {n} points"
                )));
            }
        }
        let groups = self.group.iter().max().map_or(1, |g| g + 1);
        if !self.group_names.is_empty() && self.group_names.len() < groups {
            return Err(invalid(format!(
                "scatter_groups: {} group names for {groups} groups",
                self.group_names.len()
            )));
        }
        Ok(())
    }

    fn group_of(&self, i: usize) -> usize {
        self.group.get(i).copied().unwrap_or(0)
    }

    fn group_name(&self, g: usize) -> String {
        self.group_names
            .get(g)
            .map_or_else(|| format!("group {g}"), |s| plotly_text(s))
    }

    fn label(&self, i: usize) -> String {
        self.labels
            .get(i)
            .map_or_else(|| format!("point {i}"), |s| plotly_text(s))
    }

    fn thumbnail_uris(&self) -> Result<Vec<String>> {
        self.thumbnails
            .iter()
            .enumerate()
            .map(|(i, t)| {
                check_shape(
                    t.len(),
                    self.thumb_height,
                    self.thumb_width,
                    &format!("thumbnail {i}"),
                )?;
                map_data_uri(t, self.thumb_height, self.thumb_width)
            })
            .collect()
    }
}

/// Width of the hover panel: thumbnails enlarged by a whole factor to about 256 CSS pixels.
fn hover_panel_width(thumb_width: usize) -> usize {
    if thumb_width >= 256 {
        thumb_width.min(512)
    } else {
        thumb_width * (256 / thumb_width.max(1))
    }
}

/// A scatter of a 2-D embedding (e.g. neurons), one trace per group. Hovering a point shows its
/// label and coordinates; with thumbnails, its map also appears in a panel beside the plot (see
/// [`figure`](super::figure): the PNG data URIs travel in `customdata`).
pub fn scatter_groups(data: &ScatterData<'_>, title: &str) -> Result<Figure> {
    data.check()?;
    let uris = data.thumbnail_uris()?;
    let labels: Vec<String> = (0..data.x.len()).map(|i| data.label(i)).collect();
    let mut ids: Vec<usize> = (0..data.x.len()).map(|i| data.group_of(i)).collect();
    ids.sort_unstable();
    ids.dedup();
    let hover = format!(
        "%{{text}}<br>{} %{{x:.3g}}, {} %{{y:.3g}}<extra>%{{fullData.name}}</extra>",
        plotly_text(data.x_label),
        plotly_text(data.y_label)
    );
    let mut plot = Plot::new();
    for g in ids {
        let members: Vec<usize> = (0..data.x.len())
            .filter(|&i| data.group_of(i) == g)
            .collect();
        let pick_f = |v: &[f64]| members.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        let pick_s = |v: &[String]| members.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
        let mut trace = Scatter::new(pick_f(data.x), pick_f(data.y))
            .mode(Mode::Markers)
            .name(data.group_name(g))
            .text_array(pick_s(&labels))
            .hover_template(hover.clone())
            .marker(Marker::new().size(7).opacity(0.85));
        if !uris.is_empty() {
            trace = trace.custom_data(pick_s(&uris));
        }
        plot.add_trace(trace);
    }
    plot.set_layout(
        base_layout(title)
            .height(600)
            .x_axis(titled_axis(data.x_label))
            .y_axis(titled_axis(data.y_label)),
    );
    let figure = Figure::new(title, plot);
    Ok(if uris.is_empty() {
        figure
    } else {
        figure.with_hover_panel(hover_panel_width(data.thumb_width))
    })
}

/// The shares of the first `max_neurons` live neurons over the instances, first analysed frame
/// (rows: neurons, columns: instances); `model` names the figure.
pub fn object_share_heatmap(
    shares: &ObjectShares,
    model: &str,
    max_neurons: usize,
) -> Result<Figure> {
    let ni = shares.instances.len();
    let rows = shares.neurons.len().min(max_neurons);
    let values: Vec<f64> = (0..rows)
        .flat_map(|k| shares.share_row(0, k).to_vec())
        .collect();
    let style = HeatmapStyle {
        row_label: "neuron".into(),
        col_label: "instance".into(),
        value_label: "share".into(),
        row_names: shares.neurons[..rows]
            .iter()
            .map(|n| n.to_string())
            .collect(),
        col_names: shares.instances.iter().map(|i| i.name.clone()).collect(),
        ..HeatmapStyle::default()
    };
    let title = format!(
        "{model} {}: instance shares, frame {}",
        shares.layer, shares.frames[0]
    );
    heatmap(&values, rows, ni, &title, &style)
}

/// The neuron groups on their PCA embedding, one colour per group, each neuron's map on hover.
pub fn neuron_group_scatter(g: &NeuronGroups, v: &NeuronVectors, model: &str) -> Result<Figure> {
    let x: Vec<f64> = g.embedding.iter().map(|p| p[0]).collect();
    let y: Vec<f64> = g.embedding.iter().map(|p| p[1]).collect();
    let names: Vec<String> = (0..g.k).map(|k| format!("group {k}")).collect();
    let labels: Vec<String> = g.ids.iter().map(|&id| neuron_label(id)).collect();
    let data = ScatterData {
        x: &x,
        y: &y,
        group: &g.group,
        group_names: &names,
        labels: &labels,
        thumbnails: &v.thumbnails,
        thumb_height: v.thumb_size.0,
        thumb_width: v.thumb_size.1,
        x_label: "PC 1",
        y_label: "PC 2",
    };
    scatter_groups(&data, &format!("{model} {}: neuron groups", g.layer))
}

#[cfg(test)]
mod tests {

    #[test]
    fn box_groups_come_from_table_rows() {
        let df = polars::df!(
            "dataset" => ["a", "a", "b", "a"],
            "layer" => ["head", "head", "head", "block3"],
            "share" => [0.5f64, 0.25, 1.0, 0.75],
        )
        .unwrap();
        let groups = BoxGroup::from_frame(&df, "dataset", "layer", "share").unwrap();
        let got: Vec<(&str, Option<&str>, &[f64])> = groups
            .iter()
            .map(|g| (g.name.as_str(), g.category.as_deref(), g.values.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", Some("head"), &[0.5, 0.25][..]),
                ("b", Some("head"), &[1.0][..]),
                ("a", Some("block3"), &[0.75][..]),
            ]
        );
        assert!(BoxGroup::from_frame(&df, "dataset", "nope", "share").is_err());
    }

    use super::*;
    use serde_json::Value;

    fn json(fig: &Figure) -> Value {
        serde_json::from_str(&fig.to_json()).unwrap()
    }

    fn decode_png(uri: &str) -> image::RgbImage {
        let b64 = uri.strip_prefix("data:image/png;base64,").expect(uri);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8()
    }

    fn assert_invalid<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
        match r {
            Err(XincError::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected InvalidArgument({needle}), got {other:?}"),
        }
    }

    #[test]
    fn map_grid_draws_heatmaps_with_colour_bars() {
        // 2×3 maps: an unsigned one (0..5), a constant one, a signed one (−2..1).
        let a = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.123_456];
        let b = [7.0f32; 6];
        let c = [-2.0f32, 1.0, 0.0, 0.5, 0.25, -0.125];
        let config = MapGridConfig {
            cols: 2,
            value_label: "contribution".into(),
        };
        let fig = map_grid_figure_with(&[&a, &b, &c], 2, 3, &["n0", "n<1>", "kernel 2→5"], &config)
            .unwrap();
        let v = json(&fig);
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        assert!(data.iter().all(|t| t["type"] == "heatmap"));
        assert_eq!(data[1]["name"], "n&lt;1&gt;");
        // Values as stored: three significant digits.
        assert_eq!(data[0]["z"][1][2].as_f64().unwrap() as f32, 5.12);
        assert_eq!(data[2]["z"][0][0], -2.0);
        // The unsigned maps share one sequential scale over their range (0..7.0) ...
        assert_eq!(
            (data[0]["zmin"].clone(), data[0]["zmax"].clone()),
            (0.0.into(), 7.0.into())
        );
        assert_eq!(data[1]["zmax"], 7.0);
        assert_eq!(data[0]["colorscale"][0][1], {
            let [r, g, b] = magma(0.0).0;
            format!("rgb({r},{g},{b})")
        });
        // ... the signed one a diverging scale symmetric about 0, white in the middle.
        assert_eq!(
            (data[2]["zmin"].clone(), data[2]["zmax"].clone()),
            ((-2.0).into(), 2.0.into())
        );
        assert_eq!(
            data[2]["colorscale"][5],
            serde_json::json!([0.5, "#f7f7f7"])
        );
        // Two colour bars side by side (one per scale, not one per map), titled by what the
        // values are.
        let shown: Vec<bool> = data.iter().map(|t| t["showscale"] == true).collect();
        assert_eq!(shown, [true, false, true]);
        assert_eq!(data[0]["colorbar"]["title"]["text"], "contribution");
        assert_eq!(
            data[2]["colorbar"]["title"]["text"],
            "contribution<br>(signed)"
        );
        assert!(data[2]["colorbar"]["x"].as_f64() > data[0]["colorbar"]["x"].as_f64());
        // Hover: the map's title and the value.
        assert_eq!(
            data[2]["hovertemplate"],
            "%{fullData.name}<br>contribution %{z:.3g}<extra></extra>"
        );
        // Placement: 8× enlargement, 1-pixel gaps, a 3-pixel title band; map 1 right of map 0,
        // map 2 on the second row.
        assert_eq!(data[0]["x"], serde_json::json!([0.0, 1.0, 2.0]));
        assert_eq!(data[1]["x"][0], 4.0);
        assert_eq!(data[1]["y"], serde_json::json!([3.0, 4.0]));
        assert_eq!(data[2]["y"], serde_json::json!([8.0, 9.0]));
        assert_eq!(
            v["layout"]["yaxis"]["range"],
            serde_json::json!([9.5, -0.5])
        );
        let notes = v["layout"]["annotations"].as_array().unwrap();
        assert_eq!(notes[2]["text"], "kernel 2→5");
        assert_eq!(fig.title(), MAP_GRID_TITLE);
        assert_eq!(v["layout"]["margin"]["r"], 10 + 2 * COLOR_BAR_PX);

        // Only unsigned maps: one bar, named by the label alone.
        let one = json(&map_grid_figure(&[&a], 2, 3, &[] as &[&str], 1).unwrap());
        assert_eq!(one["data"][0]["colorbar"]["title"]["text"], "value");
        assert_eq!(one["data"][0]["name"], "map 0");
        assert_eq!(one["layout"]["margin"]["r"], 10 + COLOR_BAR_PX);
    }

    #[test]
    fn bar_titles_wrap_at_word_boundaries() {
        assert_eq!(bar_title("contribution"), "contribution");
        assert_eq!(
            bar_title("min-max normalised (signed)"),
            "min-max<br>normalised<br>(signed)"
        );
        assert_eq!(
            bar_title("fraction of neurons above τ"),
            "fraction of<br>neurons<br>above τ"
        );
        assert_eq!(bar_title("a <b>"), "a &lt;b&gt;");
    }

    #[test]
    fn significant_rounding() {
        assert_eq!(round_significant(5.123_456, 3), 5.12);
        assert_eq!(round_significant(-0.000_123_46, 3), -0.000_123);
        assert_eq!(round_significant(98_765.0, 3), 98_800.0);
        assert_eq!(round_significant(0.0, 3), 0.0);
        assert!(round_significant(f32::NAN, 3).is_nan());
    }

    #[test]
    fn map_grid_rejects_bad_input() {
        let a = [0.0f32; 6];
        let short = [0.0f32; 5];
        assert_invalid(
            map_grid_figure(&[&a, &short], 2, 3, &[] as &[&str], 2),
            "map 1",
        );
        assert_invalid(map_grid_figure(&[&a], 2, 3, &["x", "y"], 1), "2 titles");
        assert_invalid(
            map_grid_figure(&[], 2, 3, &[] as &[&str], 1),
            "at least one map",
        );
        assert_invalid(map_data_uri(&[], 0, 0), "0×0");
    }

    #[test]
    fn strongest_maps_come_first_with_their_share() {
        // Three 1×2 maps: Σ|c| = 1, 6, 3 (total 10).
        let canvas = crate::analysis::toy_maps(1, 2, vec![1.0, 0.0, -4.0, 2.0, 0.0, 3.0]);
        let src = crate::canvas::maps::InMemoryMaps::new(canvas.clone());
        let fig = strongest_maps_figure(&src, 2, 2).unwrap();
        assert_eq!(fig.title(), "toy: the 2 strongest neurons");
        let v = json(&fig);
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][0]["name"], "neuron 1 (60.0%)");
        assert_eq!(v["data"][1]["name"], "neuron 2 (30.0%)");
        // neuron 1 = [−4, 2] is signed: diverging ±4; neuron 2 = [0, 3]: sequential 0..3.
        assert_eq!(v["data"][0]["zmin"], -4.0);
        assert_eq!(v["data"][0]["zmax"], 4.0);
        assert_eq!(
            (v["data"][1]["zmin"].clone(), v["data"][1]["zmax"].clone()),
            (0.0.into(), 3.0.into())
        );
        assert!(v["data"][1]["hovertemplate"]
            .as_str()
            .unwrap()
            .contains("contribution %{z"));
    }

    #[test]
    fn rgb_grid_draws_the_pixels() {
        // 1×2 planar image: pixel 0 red, pixel 1 (0.5, 1.5 → clamped, −1 → 0).
        let planar = [1.0f32, 0.5, 0.0, 1.5, 0.0, -1.0];
        let fig = rgb_grid_figure(&[&planar], 1, 2, &["frame 0"], 1).unwrap();
        assert_eq!(fig.title(), "Images");
        let v = json(&fig);
        let uri = v["data"][0]["source"].as_str().unwrap();
        let img = decode_png(uri);
        assert_eq!(img.dimensions(), (2, 1));
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [128, 255, 0]);
        assert_eq!(v["data"][0]["name"], "frame 0");
        assert_invalid(
            rgb_grid_figure(&[&planar[..5]], 1, 2, &[] as &[&str], 1),
            "image 0",
        );
    }

    #[test]
    fn downsample_averages_blocks() {
        let map: Vec<f32> = (0..12).map(|v| v as f32).collect(); // 3×4
        let (small, h, w) = downsample_map(&map, 3, 4, 2).unwrap();
        assert_eq!((h, w), (2, 2));
        assert_eq!(small, vec![2.5, 4.5, 8.5, 10.5]);
        assert_invalid(downsample_map(&map, 3, 4, 0), "factor");
    }

    #[test]
    fn heatmap_hover_shows_row_column_value() {
        let style = HeatmapStyle {
            row_label: "neuron".into(),
            col_label: "instance".into(),
            value_label: "share".into(),
            col_names: vec!["cat".into(), "dog & co".into(), "sky".into()],
            zmin: Some(0.0),
            zmax: Some(1.0),
            ..HeatmapStyle::default()
        };
        let values = [0.1f32, 0.2, 0.7, 0.5, 0.25, 0.25];
        let fig = heatmap(&values, 2, 3, "Shares", &style).unwrap();
        let v = json(&fig);
        let t = &v["data"][0];
        assert_eq!(t["type"], "heatmap");
        assert_eq!(t["z"][1][0], 0.5);
        assert_eq!(t["z"][0][2].as_f64().unwrap() as f32, 0.7);
        assert_eq!(t["x"][1], "dog &amp; co");
        assert_eq!(t["y"], serde_json::json!(["0", "1"]));
        assert_eq!(t["zmin"], 0.0);
        assert_eq!(t["zmax"], 1.0);
        let hover = t["hovertemplate"].as_str().unwrap();
        assert!(hover.contains("neuron %{y}") && hover.contains("instance %{x}"));
        assert!(hover.contains("share %{z"));
        assert_eq!(t["colorscale"][10][1], {
            let [r, g, b] = magma(1.0).0;
            format!("rgb({r},{g},{b})")
        });
        assert_eq!(
            v["layout"]["yaxis"]["range"],
            serde_json::json!([1.5, -0.5])
        );
        assert_invalid(heatmap(&values, 3, 3, "x", &style), "6 values");
        let bad = HeatmapStyle {
            row_names: vec!["a".into()],
            ..HeatmapStyle::default()
        };
        assert_invalid(heatmap(&values, 2, 3, "x", &bad), "1 row names for 2");
    }

    #[test]
    fn box_plots_group_partitions_by_layer() {
        let groups = vec![
            BoxGroup::new("object", vec![1.0, 2.0]).in_category("layer 1"),
            BoxGroup::new("background", vec![3.0]).in_category("layer 1"),
            BoxGroup::new("object", vec![4.0, 5.0, 6.0]).in_category("layer 2"),
            BoxGroup::new("background", vec![7.0]).in_category("layer 2"),
        ];
        let fig = box_plots(&groups, "log std", "log σ").unwrap();
        let v = json(&fig);
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 2, "one trace per partition");
        assert_eq!(data[0]["name"], "object");
        assert_eq!(data[0]["y"], serde_json::json!([1.0, 2.0, 4.0, 5.0, 6.0]));
        assert_eq!(
            data[0]["x"],
            serde_json::json!(["layer 1", "layer 1", "layer 2", "layer 2", "layer 2"])
        );
        assert_eq!(v["layout"]["boxmode"], "group");
        assert_eq!(
            v["layout"]["xaxis"]["categoryarray"],
            serde_json::json!(["layer 1", "layer 2"])
        );
        let plain = box_plots(&[BoxGroup::new("a", vec![1.0])], "t", "y").unwrap();
        assert!(json(&plain)["data"][0].get("x").is_none());
        let mixed = [BoxGroup::new("a", vec![1.0]), groups[0].clone()];
        assert_invalid(box_plots(&mixed, "t", "y"), "category");
        assert_invalid(box_plots(&[], "t", "y"), "no groups");
    }

    #[test]
    fn sorted_curves_rank_values_descending() {
        let style = LineStyle {
            x_label: "rank".into(),
            y_label: "pixels".into(),
            log_y: true,
        };
        let curves = [("layer 1", vec![3.0, f64::NAN, 10.0, 1.0])];
        let v = json(&sorted_curves(&curves, "ppn", &style, false).unwrap());
        assert_eq!(v["data"][0]["y"], serde_json::json!([10.0, 3.0, 1.0]));
        assert_eq!(v["data"][0]["x"], serde_json::json!([1.0, 2.0, 3.0]));
        assert_eq!(v["layout"]["yaxis"]["type"], "log");
        let v = json(&sorted_curves(&curves, "ppn", &style, true).unwrap());
        assert_eq!(v["data"][0]["x"][2], 1.0);
        let empty: [(&str, Vec<f64>); 0] = [];
        assert_invalid(sorted_curves(&empty, "t", &style, false), "no curves");
    }

    #[test]
    fn line_series_share_x() {
        let x = [0.0, 1.0, 2.0];
        let series = [
            ("object", vec![0.5, 0.6, 0.7]),
            ("background", vec![0.5, 0.4, 0.3]),
        ];
        let fig = line_series(&x, &series, "per-frame share", &LineStyle::default()).unwrap();
        let v = json(&fig);
        assert_eq!(v["data"][1]["name"], "background");
        assert_eq!(v["data"][1]["y"], serde_json::json!([0.5, 0.4, 0.3]));
        assert_eq!(v["data"][0]["mode"], "lines+markers");
        let bad = [("object", vec![0.5])];
        assert_invalid(
            line_series(&x, &bad, "t", &LineStyle::default()),
            "1 values for 3",
        );
    }

    #[test]
    fn scatter_hover_shows_thumbnails() {
        let x = [0.0, 1.0, 2.0];
        let y = [1.0, 0.0, -1.0];
        let group = [1, 0, 1];
        let names = ["low".to_string(), "high".to_string()];
        let labels = ["n0".to_string(), "n1".to_string(), "n<2>".to_string()];
        let thumbs = vec![vec![0.0, 1.0], vec![1.0, 0.0], vec![2.0, 2.0]];
        let data = ScatterData {
            x: &x,
            y: &y,
            group: &group,
            group_names: &names,
            labels: &labels,
            thumbnails: &thumbs,
            thumb_height: 1,
            thumb_width: 2,
            x_label: "PC 1",
            y_label: "PC 2",
        };
        let fig = scatter_groups(&data, "Neuron embedding").unwrap();
        assert!(fig.has_hover_panel());
        let v = json(&fig);
        let traces = v["data"].as_array().unwrap();
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0]["name"], "low");
        assert_eq!(traces[1]["x"], serde_json::json!([0.0, 2.0]));
        assert_eq!(traces[1]["text"], serde_json::json!(["n0", "n&lt;2&gt;"]));
        let uri = traces[0]["customdata"][0].as_str().unwrap();
        let img = decode_png(uri);
        assert_eq!(img.dimensions(), (2, 1));
        assert_eq!(*img.get_pixel(0, 0), magma(1.0)); // point 1's map is [1, 0]

        let mut ids = crate::plot::html::FigureIds::new("t");
        let html = fig.to_html_fragment(&mut ids);
        assert!(html.contains("plotly_hover"));
        assert!(html.contains("xinc hover images"));
        assert!(html.contains(&format!("id=\"t-1-{}-hover\"", fig.id())));
        assert!(html.contains(uri), "thumbnails travel in the fragment");
        let bundle = fig.evcxr_bundle(true);
        assert!(bundle.starts_with("EVCXR_BEGIN_CONTENT text/html\n"));
        assert!(!bundle.contains(crate::plot::html::PLOTLY_MIME));
        assert!(bundle.contains("plotly_hover"));

        let plain = ScatterData {
            thumbnails: &[],
            ..data
        };
        let plain_fig = scatter_groups(&plain, "t").unwrap();
        assert!(!plain_fig.has_hover_panel());
        assert!(!plain_fig
            .to_html_fragment(&mut ids)
            .contains("plotly_hover"));
    }

    #[test]
    fn scatter_rejects_mismatched_input() {
        let x = [0.0, 1.0];
        let data = ScatterData {
            x: &x,
            y: &[0.0],
            ..ScatterData::default()
        };
        assert_invalid(scatter_groups(&data, "t"), "1 y for 2");
        let thumbs = vec![vec![0.0; 3], vec![0.0; 4]];
        let data = ScatterData {
            x: &x,
            y: &x,
            thumbnails: &thumbs,
            thumb_height: 2,
            thumb_width: 2,
            ..ScatterData::default()
        };
        assert_invalid(scatter_groups(&data, "t"), "thumbnail 0");
        let names = ["only".to_string()];
        let data = ScatterData {
            x: &x,
            y: &x,
            group: &[0, 3],
            group_names: &names,
            ..ScatterData::default()
        };
        assert_invalid(scatter_groups(&data, "t"), "1 group names for 4");
    }
}
