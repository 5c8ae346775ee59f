//! The section that puts the paper's conclusions side by side under both canvas methods
//! ([`crate::findings::compare`]): the claims and the headline numbers under both.

use super::page::Section;
use crate::findings::Findings;

/// The comparison section, from the findings' tables `claims_by_method` and `method_comparison`.
pub(super) fn section(findings: &Findings) -> Section {
    let mut sec = Section::new(
        "methods",
        "Which conclusions survive an exact decomposition",
        "Every analysis above, repeated on the other canvas. <b>Official</b>: the paper's code \
         (spec A): biases split evenly, the activation applied to each neuron's share, and \
         3×3 box filters and nearest upsampling standing in for the NeRV blocks after the \
         analysed one. <b>Conservative</b>: each neuron's contribution carried to the output \
         through the real downstream network, linearised at the frame by the rescale rule \
         (σ(z)/z: 1[z > 0] for ReLU, Φ(z) for GELU); the layer's own bias is split over the fan-in \
         as the official code does, the later layers' biases evenly over the layer's neurons, so \
         the maps of every layer sum exactly to the output (before OutImg). The last layers (FFN \
         layer L per channel, NeRV head) are the same under both; FFN layers 1..L−1 and the NeRV \
         blocks differ.",
    );
    sec.table_of(
        findings,
        "claims_by_method",
        "The paper's claims under both canvases",
    );
    sec.table_of(
        findings,
        "method_comparison",
        "Headline numbers under both canvases",
    );
    sec
}
