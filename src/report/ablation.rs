//! The section that tests the canvases against ablation ([`crate::analysis::ablation`]): every
//! FFN unit removed in turn, and how well each canvas's maps predicted the change.

use polars::prelude::DataFrame;

use super::page::Section;
use crate::error::Result;
use crate::findings::Findings;

/// The ablation section, from the findings' table `ablation` (`None` when there is none).
pub(super) fn section(findings: &Findings) -> Result<Option<Section>> {
    let Some(table) = findings.table("ablation") else {
        return Ok(None);
    };
    let mut sec = Section::new(
        "ablation",
        "Which canvas predicts what a neuron does",
        "A canvas claims that a neuron with a large map matters for those pixels. Here each unit of \
         every FFN layer is removed in turn (its input to the next Linear layer set to zero, the \
         rest of the network run as it is) and the real change of the output is measured: per \
         pixel (summed over RGB) and as the drop of the official PSNR. <b>Spearman</b>: the rank \
         correlation, over the layer's units, between a map's total |contribution| and the PSNR \
         drop its removal causes. <b>Pixel Pearson</b>: the correlation, over pixels, between a \
         unit's map and the change its removal causes, averaged over units. On the last layer \
         the network after the unit is linear and both canvases are the same (the change is the \
         map less its bias share).",
    );
    sec.table("Verdict per layer", &verdicts(table)?);
    sec.table("Ablation against both canvases, per layer", table);
    Ok(Some(sec))
}

/// Per layer: the official and conservative Spearman and pixel Pearson, and which method
/// predicts the ablation better on each (a tie where they differ by under 0.01).
fn verdicts(table: &DataFrame) -> Result<DataFrame> {
    let err = |e| crate::analysis::table_error("ablation verdicts", e);
    let layers = table.column("layer").map_err(err)?.str().map_err(err)?;
    let methods = table.column("method").map_err(err)?.str().map_err(err)?;
    let col = |name: &str| -> Result<Vec<f64>> {
        let values = table.column(name).map_err(err)?.f64().map_err(err)?;
        Ok((0..values.len())
            .map(|i| values.get(i).unwrap_or(f64::NAN))
            .collect())
    };
    let (rho, pixel) = (col("spearman_total_psnr_drop")?, col("mean_pixel_pearson")?);
    let mut out: (Vec<String>, [Vec<f64>; 4], Vec<String>, Vec<String>) = Default::default();
    for i in 0..table.height() {
        if methods.get(i) != Some("official") {
            continue;
        }
        let layer = layers.get(i).unwrap_or_default();
        let Some(j) = (0..table.height())
            .find(|&j| layers.get(j) == Some(layer) && methods.get(j) == Some("conservative"))
        else {
            continue;
        };
        out.0.push(layer.to_string());
        for (k, v) in [rho[i], rho[j], pixel[i], pixel[j]].into_iter().enumerate() {
            out.1[k].push(v);
        }
        out.2.push(better(rho[i], rho[j]).into());
        out.3.push(better(pixel[i], pixel[j]).into());
    }
    let [a, b, c, d] = out.1;
    polars::df!(
        "layer" => out.0,
        "Spearman official" => a,
        "Spearman conservative" => b,
        "pixel Pearson official" => c,
        "pixel Pearson conservative" => d,
        "better by Spearman" => out.2,
        "better by pixel Pearson" => out.3,
    )
    .map_err(err)
}

fn better(official: f64, conservative: f64) -> &'static str {
    if (official - conservative).abs() < 0.01 {
        "tie"
    } else if conservative > official {
        "conservative"
    } else {
        "official"
    }
}
