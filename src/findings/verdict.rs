//! What a checked claim is: the claim in the paper's words, its criterion, the verdict, and the
//! evidence table (one row per model and layer, or layer and frame). [`super::claims`] fills them
//! in from the headline numbers; `summary.json` serialises them and the report shows each as a
//! small table ([`Claim::to_frame`]).

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::Serialize;

use super::numbers::format_significant;
use crate::analysis::table_error;
use crate::error::Result;

/// Which of the paper's claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    Distributed,
    IntensityEdges,
    SpaceAgnostic,
    ColourEdgeBias,
    NoObjectSemantics,
    MotionDominated,
}

impl ClaimKind {
    /// The claim in the paper's words, and where they are.
    pub fn statement(self) -> (&'static str, &'static str) {
        match self {
            ClaimKind::Distributed => (
                "“INRs tend to have highly distributed representations.”",
                "abstract",
            ),
            ClaimKind::IntensityEdges => (
                "Contribution heatmaps follow the frame's intensity, and where they depart from \
                 it they mark edges.",
                "the paper's contribution-vs-intensity figures (paraphrased; no sentence of the \
                 abstract)",
            ),
            ClaimKind::SpaceAgnostic => ("INRs “are almost entirely space-agnostic.”", "abstract"),
            ClaimKind::ColourEdgeBias => (
                "INRs “have a significant bias for color and edges.”",
                "abstract",
            ),
            ClaimKind::NoObjectSemantics => (
                "INRs are “lacking high-level object semantics.”",
                "abstract",
            ),
            ClaimKind::MotionDominated => (
                "How objects are represented across time in video INRs “is dominated by motion.”",
                "abstract",
            ),
        }
    }
}

/// Whether the numbers support a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Supported,
    NotSupported,
}

impl Verdict {
    fn from_holds(holds: bool) -> Verdict {
        if holds {
            Verdict::Supported
        } else {
            Verdict::NotSupported
        }
    }

    /// "supported" or "not supported".
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Supported => "supported",
            Verdict::NotSupported => "not supported",
        }
    }
}

/// One number (or name) that decides a claim.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    /// A measured value (`null` in JSON when not a number).
    Number(f64),
    /// A name, e.g. the partition that varies least.
    Text(String),
}

/// A column of a claim's table: its key in [`EvidenceRow::values`] and its heading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvidenceColumn {
    pub key: String,
    pub label: String,
}

/// The numbers of one model and layer (and frame, for motion).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvidenceRow {
    pub model: String,
    pub layer: String,
    pub frame: Option<usize>,
    /// Keyed by [`EvidenceColumn::key`].
    pub values: BTreeMap<String, Evidence>,
    /// Whether this row meets the criterion (`None` where the criterion is on all rows together).
    pub meets: Option<bool>,
}

/// One of the paper's claims, checked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Claim {
    pub kind: ClaimKind,
    /// The claim in the paper's words.
    pub statement: String,
    /// Where in the paper the words are.
    pub source: String,
    /// The test, in one sentence.
    pub criterion: String,
    pub verdict: Verdict,
    /// The columns of [`Claim::rows`], in order.
    pub columns: Vec<EvidenceColumn>,
    pub rows: Vec<EvidenceRow>,
}

impl Claim {
    pub(super) fn new(kind: ClaimKind, criterion: String, holds: bool) -> Claim {
        let (statement, source) = kind.statement();
        Claim {
            kind,
            statement: statement.to_owned(),
            source: source.to_owned(),
            criterion,
            verdict: Verdict::from_holds(holds),
            columns: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Whether the numbers support the claim.
    pub fn holds(&self) -> bool {
        self.verdict == Verdict::Supported
    }

    /// The claim's table: model, layer, frame (for motion), one column per [`EvidenceColumn`]
    /// (floats, or strings for names), and `meets criterion` (yes / no).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let fail = |e| table_error("claim evidence", e);
        let text = |f: &dyn Fn(&EvidenceRow) -> String| -> Vec<String> {
            self.rows.iter().map(f).collect()
        };
        let mut cols: Vec<Column> = vec![
            Column::new("model".into(), text(&|r| r.model.clone())),
            Column::new("layer".into(), text(&|r| r.layer.clone())),
        ];
        if self.rows.iter().any(|r| r.frame.is_some()) {
            let frames: Vec<Option<u32>> = self
                .rows
                .iter()
                .map(|r| r.frame.map(|f| f as u32))
                .collect();
            cols.push(Column::new("frame".into(), frames));
        }
        for c in &self.columns {
            let cells: Vec<Option<&Evidence>> =
                self.rows.iter().map(|r| r.values.get(&c.key)).collect();
            let numbers: Option<Vec<f64>> = cells
                .iter()
                .map(|e| match e {
                    Some(Evidence::Number(v)) => Some(*v),
                    _ => None,
                })
                .collect();
            cols.push(match numbers {
                Some(v) => Column::new(c.label.as_str().into(), v),
                None => {
                    let t: Vec<Option<String>> = cells
                        .iter()
                        .map(|e| match e {
                            Some(Evidence::Text(s)) => Some(s.clone()),
                            Some(Evidence::Number(v)) => Some(format_significant(*v, 3)),
                            None => None,
                        })
                        .collect();
                    Column::new(c.label.as_str().into(), t)
                }
            });
        }
        if self.rows.iter().any(|r| r.meets.is_some()) {
            let meets: Vec<Option<&str>> = self
                .rows
                .iter()
                .map(|r| r.meets.map(|m| if m { "yes" } else { "no" }))
                .collect();
            cols.push(Column::new("meets criterion".into(), meets));
        }
        DataFrame::new(self.rows.len(), cols).map_err(fail)
    }
}
