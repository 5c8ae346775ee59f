//! The paper's conclusions side by side under both canvas methods: every headline number and
//! every claim, official (the paper's heuristic canvas) against conservative (the exact,
//! output-conserving one, [`Method::Conservative`]), and the two tables that show them
//! (`claims_by_method`, `method_comparison`).

use polars::prelude::*;
use serde::Serialize;

use super::headlines::{Headlines, LayerHeadline};
use super::verdict::ClaimKind;
use crate::analysis::table_error;
use crate::canvas::Method;
use crate::error::Result;

/// One claim's verdict under both methods.
#[derive(Clone, Debug, Serialize)]
pub struct ClaimComparison {
    pub kind: ClaimKind,
    /// The claim in the paper's words.
    pub claim: String,
    pub official: bool,
    pub conservative: bool,
}

impl ClaimComparison {
    /// `survives`, `fails under both`, or which method supports it.
    pub fn verdict(&self) -> &'static str {
        match (self.official, self.conservative) {
            (true, true) => "survives",
            (false, false) => "not supported under either",
            (true, false) => "official only: does not survive the exact canvas",
            (false, true) => "conservative only",
        }
    }
}

/// The headlines under both methods and the claims compared.
#[derive(Clone, Debug, Serialize)]
pub struct MethodComparison {
    pub official: Headlines,
    pub conservative: Headlines,
    pub claims: Vec<ClaimComparison>,
}

impl MethodComparison {
    /// From the headlines of the report's own method and those of the other one.
    pub fn new(method: Method, own: Headlines, other: Headlines) -> Self {
        let (official, conservative) = match method {
            Method::Official => (own, other),
            Method::Conservative => (other, own),
        };
        let claims = official
            .claims
            .iter()
            .map(|c| ClaimComparison {
                kind: c.kind,
                claim: c.statement.clone(),
                official: c.holds(),
                conservative: conservative
                    .claims
                    .iter()
                    .find(|d| d.kind == c.kind)
                    .is_some_and(|d| d.holds()),
            })
            .collect();
        MethodComparison {
            official,
            conservative,
            claims,
        }
    }
}

/// The numbers of one layer headline that the claims rest on.
fn quantities(l: &LayerHeadline) -> Vec<(String, f64)> {
    let mut q = vec![
        ("dead fraction".to_string(), l.dead_fraction),
        (
            "median pixels per live neuron (fraction of the frame)".into(),
            l.median_pixels_fraction,
        ),
        ("neurons per pixel, τ(0.1)".into(), l.neurons_per_pixel_t01),
        ("neurons per pixel, τ(0.5)".into(), l.neurons_per_pixel_t05),
        ("Pearson(heat, intensity)".into(), l.pearson_intensity),
        (
            "Spearman(|heat − intensity|, edges)".into(),
            l.spearman_absdiff_edges,
        ),
        ("semantics gap".into(), l.semantics_gap),
        ("Spearman(area, neurons)".into(), l.area_spearman),
        ("neuron groups: stability (ARI)".into(), l.group_ari),
    ];
    q.extend(
        l.median_log_std
            .iter()
            .map(|(p, v)| (format!("median log std, {p} partition"), *v)),
    );
    q
}

/// The per-layer numbers under both methods: model, layer, quantity, official, conservative.
pub(crate) fn numbers_table(cmp: &MethodComparison) -> Result<DataFrame> {
    let (mut model, mut layer, mut quantity) = (Vec::new(), Vec::new(), Vec::new());
    let (mut official, mut conservative) = (Vec::new(), Vec::new());
    for l in &cmp.official.layers {
        let other = cmp
            .conservative
            .layers
            .iter()
            .find(|c| c.model == l.model && c.layer == l.layer);
        let theirs = other.map(quantities).unwrap_or_default();
        for (name, v) in quantities(l) {
            model.push(l.model.clone());
            layer.push(l.layer.clone());
            official.push(v);
            conservative.push(
                theirs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(f64::NAN, |x| x.1),
            );
            quantity.push(name);
        }
    }
    for m in &cmp.official.motion {
        let other = cmp
            .conservative
            .motion
            .iter()
            .find(|c| c.layer == m.layer && c.frame == m.frame);
        model.push(m.model.clone());
        layer.push(m.layer.clone());
        quantity.push(format!("Pearson(D_t, flow), frame {}", m.frame));
        official.push(m.pearson);
        conservative.push(other.map_or(f64::NAN, |c| c.pearson));
    }
    df!(
        "model" => model,
        "layer" => layer,
        "quantity" => quantity,
        "official" => official,
        "conservative" => conservative,
    )
    .map_err(|e| table_error("method comparison", e))
}

/// The claims under both methods: claim, official, conservative, verdict.
pub(crate) fn claims_table(cmp: &MethodComparison) -> Result<DataFrame> {
    df!(
        "claim" => cmp.claims.iter().map(|c| c.claim.clone()).collect::<Vec<_>>(),
        "official" => cmp.claims.iter().map(|c| yes_no(c.official)).collect::<Vec<_>>(),
        "conservative" => cmp.claims.iter().map(|c| yes_no(c.conservative)).collect::<Vec<_>>(),
        "verdict" => cmp.claims.iter().map(|c| c.verdict().to_string()).collect::<Vec<_>>(),
    )
    .map_err(|e| table_error("claims by method", e))
}

fn yes_no(holds: bool) -> &'static str {
    if holds {
        "supported"
    } else {
        "not supported"
    }
}
