//! Per-neuron statistics of every analysed layer and frame (table `neurons`), and on the first
//! analysed frame of each model: how distributed the representation is (B.2) and how the
//! contribution follows intensity and edges (B.1).

use crate::analysis::distributed::{distributed_from_rows, Distributed, PAPER_TARGETS};
use crate::analysis::intensity::{intensity_from_heat, Intensity};
use crate::analysis::stats::{neuron_rows, neuron_table};
use crate::canvas::nerv::{NervFrameData, NervLayer};
use crate::canvas::Method;
use crate::error::Result;
use crate::study::Study;

use super::units::{nerv_source, Analysed};
use super::Run;

/// B.1 and B.2 on one layer, first analysed frame of its model.
#[derive(Clone, Debug)]
pub struct LayerFinding {
    pub model: String,
    pub layer: String,
    /// `(H, W)` of the layer's maps.
    pub size: (usize, usize),
    /// Pixels per neuron (sorted) and neurons per pixel (maps) at the paper's targets.
    pub distributed: Distributed,
    /// Heat, intensity and edge maps and their correlations.
    pub intensity: Intensity,
}

/// The `neurons` table of every analysed layer and frame; B.1 and B.2 on the first frames
/// (`firsts`, indices into `units`), with their tables and headline numbers.
pub(super) fn layers(
    run: &mut Run,
    units: &[Analysed],
    firsts: &[usize],
) -> Result<Vec<LayerFinding>> {
    let mut out = Vec::new();
    for (i, u) in units.iter().enumerate() {
        for src in &u.layers {
            let (rows, heat) = neuron_rows(src.as_ref());
            run.add_table(
                "neurons",
                neuron_table(src.as_ref(), &u.model, u.frame, &rows)?,
            );
            if !firsts.contains(&i) {
                continue;
            }
            let d = distributed_from_rows(src.as_ref(), &rows, &PAPER_TARGETS)?;
            let tables = d.to_frame()?;
            run.add_table("pixels_per_neuron", tables.pixels_per_neuron);
            run.add_table("distributed_curve", tables.curve);
            run.add_table("distributed_summary", tables.summary);
            run.add_table("neurons_per_pixel", tables.neurons_per_pixel);
            let it = intensity_from_heat(src.layer(), &heat, src.size(), &u.gt)?;
            run.add_table("intensity", it.to_frame()?);
            let h = run.heads.of(&u.model, src.as_ref());
            h.fill_distributed(&rows, &d, src.num_pixels());
            h.pearson_intensity = it.pearson_intensity;
            h.spearman_absdiff_edges = it.spearman_absdiff_edges;
            out.push(LayerFinding {
                model: u.model.clone(),
                layer: src.layer().to_string(),
                size: src.size(),
                distributed: d,
                intensity: it,
            });
        }
    }
    Ok(out)
}

/// The `neurons` table of the NeRV blocks before the last, on one frame, streamed.
pub(super) fn inner_blocks(
    run: &mut Run,
    study: &Study,
    frame: &(usize, NervFrameData),
    method: Method,
) -> Result<()> {
    let model = study.nerv.as_ref().map_or("", |n| n.name.as_str());
    for index in (1..study.nerv()?.blocks().len()).rev() {
        let layer = NervLayer::block(index);
        let src = nerv_source(&frame.1, layer, method)?;
        let (rows, _) = neuron_rows(src.as_ref());
        run.add_table(
            "neurons",
            neuron_table(src.as_ref(), model, frame.0, &rows)?,
        );
    }
    Ok(())
}
