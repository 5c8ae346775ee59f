//! The per-neuron statistics table: one row per neuron of one layer of one frame, streamed from
//! [`NeuronMaps`] (two passes over the maps, one map per worker at a time).
//!
//! Schema of [`neuron_stats`] (one row per neuron, in neuron order):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `model` | str | the model's name |
//! | `layer` | str | the layer (`layer1`, `head`, `block3`, …) |
//! | `frame` | u32 | the frame index (0 for an image model) |
//! | `neuron` | u32 | the flat neuron index n (NeRV: `input·Cout + output`) |
//! | `unit` | u32 | the unit (FFN) or input channel (NeRV) |
//! | `out_channel` | u32, null | the NeRV conv output channel (null for FFN) |
//! | `sum` | f64 | Σ_p C_n(p) |
//! | `abs_sum` | f64 | Σ_p \|C_n(p)\| |
//! | `max` | f64 | max_p C_n(p) |
//! | `max_abs` | f64 | max_p \|C_n(p)\| |
//! | `dead` | bool | the map is zero everywhere (`abs_sum == 0`) |
//! | `pixels` | u32 | pixels per neuron (spec B.2a): #{p : \|C_n(p)\| / Σ_n' \|C_n'(p)\| > 1/N} |

use polars::prelude::*;

use super::source::{abs_heat, per_neuron};
use super::table_error;
use crate::canvas::maps::NeuronMaps;
use crate::error::Result;

/// One neuron's statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NeuronRow {
    pub sum: f64,
    pub abs_sum: f64,
    pub max: f64,
    pub max_abs: f64,
    /// Pixels where the neuron's share of the absolute contribution exceeds 1/N.
    pub pixels: u32,
}

/// The statistics of every neuron of `src`, plus the layer's absolute heat `Σ_n |C_n(p)|`.
pub(crate) fn neuron_rows(src: &dyn NeuronMaps) -> (Vec<NeuronRow>, Vec<f64>) {
    let heat = abs_heat(src);
    let n = src.num_neurons() as f64;
    let rows = per_neuron(src, |_, map| {
        let mut r = NeuronRow {
            sum: 0.0,
            abs_sum: 0.0,
            max: f64::NEG_INFINITY,
            max_abs: 0.0,
            pixels: 0,
        };
        for (&v, &h) in map.iter().zip(&heat) {
            let (v, a) = (f64::from(v), f64::from(v.abs()));
            r.sum += v;
            r.abs_sum += a;
            r.max = r.max.max(v);
            r.max_abs = r.max_abs.max(a);
            // share > 1/N  ⇔  a·N > heat; a pixel with zero heat (0/0 = NaN) never passes.
            r.pixels += u32::from(a * n > h && h > 0.0);
        }
        r
    });
    (rows, heat)
}

/// The per-neuron statistics table of `src` (schema in the module docs).
pub(crate) fn neuron_stats(src: &dyn NeuronMaps, model: &str, frame: usize) -> Result<DataFrame> {
    let (rows, _) = neuron_rows(src);
    neuron_table(src, model, frame, &rows)
}

/// The table of already computed `rows` (one per neuron of `src`).
pub(crate) fn neuron_table(
    src: &dyn NeuronMaps,
    model: &str,
    frame: usize,
    rows: &[NeuronRow],
) -> Result<DataFrame> {
    let n = rows.len();
    let ids: Vec<(usize, Option<usize>)> = (0..n).map(|i| src.neuron_id(i)).collect();
    let col = |f: fn(&NeuronRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    df!(
        "model" => vec![model; n],
        "layer" => vec![src.layer(); n],
        "frame" => vec![frame as u32; n],
        "neuron" => (0..n as u32).collect::<Vec<_>>(),
        "unit" => ids.iter().map(|&(u, _)| u as u32).collect::<Vec<_>>(),
        "out_channel" => ids.iter().map(|&(_, c)| c.map(|c| c as u32)).collect::<Vec<_>>(),
        "sum" => col(|r| r.sum),
        "abs_sum" => col(|r| r.abs_sum),
        "max" => col(|r| r.max),
        "max_abs" => col(|r| r.max_abs),
        "dead" => rows.iter().map(|r| r.abs_sum == 0.0).collect::<Vec<_>>(),
        "pixels" => rows.iter().map(|r| r.pixels).collect::<Vec<_>>(),
    )
    .map_err(|e| table_error("per-neuron statistics", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::maps::InMemoryMaps;
    use crate::canvas::ContributionMap;

    #[test]
    fn hand_made_canvas_gives_known_statistics() {
        // Three neurons on 2×2 pixels: neuron 0 owns pixel 0, neuron 1 is dead, neuron 2 shares
        // pixels 1..3 evenly with neuron 0 (share 1/2 > 1/3) and owns pixel 3 with −2.
        let maps = ContributionMap {
            layer: "toy".into(),
            neuron_shape: vec![3],
            height: 2,
            width: 2,
            data: vec![
                4.0, 1.0, 1.0, 0.0, //
                0.0, 0.0, 0.0, 0.0, //
                0.0, -1.0, 1.0, -2.0,
            ],
        };
        let src = InMemoryMaps::new(maps.clone());
        let (rows, heat) = neuron_rows(&src);
        assert_eq!(heat, vec![4.0, 2.0, 2.0, 2.0]);
        assert_eq!(rows[0].pixels, 3);
        assert_eq!(rows[1].pixels, 0);
        assert_eq!(rows[2].pixels, 3);
        assert_eq!(
            (rows[2].sum, rows[2].abs_sum, rows[2].max, rows[2].max_abs),
            (-2.0, 4.0, 1.0, 2.0)
        );
        let df = neuron_stats(&src, "m", 5).unwrap();
        assert_eq!(df.height(), 3);
        let dead: Vec<Option<bool>> = df.column("dead").unwrap().bool().unwrap().iter().collect();
        assert_eq!(dead, vec![Some(false), Some(true), Some(false)]);
        assert_eq!(df.column("frame").unwrap().u32().unwrap().get(0), Some(5));
        assert_eq!(df.column("out_channel").unwrap().null_count(), 3);
    }
}
