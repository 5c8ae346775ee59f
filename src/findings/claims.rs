//! The paper's claims checked against the headline numbers: for each, the claim in the paper's
//! words, the criterion in one sentence, the verdict, and the numbers that decide it, one row per
//! model and layer (or layer and frame). The same [`Claim`] values go to `summary.json` (typed
//! fields) and, as a small table per claim ([`Claim::to_frame`]), to the report's page.

use super::headlines::{Headlines, LayerHeadline, MotionHeadline};
use super::numbers::format_significant;
use super::verdict::{Claim, ClaimKind, Evidence, EvidenceColumn, EvidenceRow};

/// A table under construction: columns, then one row per layer.
struct Evidences {
    columns: Vec<EvidenceColumn>,
    rows: Vec<EvidenceRow>,
}

impl Evidences {
    fn new(columns: &[(&str, &str)]) -> Evidences {
        Evidences {
            columns: columns
                .iter()
                .map(|(key, label)| EvidenceColumn {
                    key: (*key).to_owned(),
                    label: (*label).to_owned(),
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// A row of `values` (in column order).
    fn row(
        &mut self,
        model: &str,
        layer: &str,
        frame: Option<usize>,
        values: Vec<Evidence>,
        meets: Option<bool>,
    ) {
        let values = self
            .columns
            .iter()
            .map(|c| c.key.clone())
            .zip(values)
            .collect();
        self.rows.push(EvidenceRow {
            model: model.to_owned(),
            layer: layer.to_owned(),
            frame,
            values,
            meets,
        });
    }

    /// A row per layer headline, `values` and `meets` from it.
    fn per_layer(
        mut self,
        layers: &[LayerHeadline],
        values: impl Fn(&LayerHeadline) -> Vec<Evidence>,
        meets: impl Fn(&LayerHeadline) -> bool,
    ) -> Evidences {
        for l in layers {
            self.row(&l.model, &l.layer, None, values(l), Some(meets(l)));
        }
        self
    }

    fn into_claim(self, mut claim: Claim) -> Claim {
        claim.columns = self.columns;
        claim.rows = self.rows;
        claim
    }
}

use Evidence::{Number, Text};

/// The paper's claims, each checked against its criterion on `h`'s numbers.
pub fn claims(h: &Headlines) -> Vec<Claim> {
    let layers = &h.layers;
    let all = |f: &dyn Fn(&LayerHeadline) -> bool| !layers.is_empty() && layers.iter().all(f);
    let mut out = vec![
        distributed(layers, all(&distributed_meets)),
        intensity(layers, all(&intensity_meets)),
        space_agnostic(layers),
        colour_edges(layers, all(&colour_edges_meets)),
        no_semantics(layers, all(&no_semantics_meets)),
    ];
    if !h.motion.is_empty() {
        out.push(motion(&h.motion));
    }
    out
}

fn distributed_meets(l: &LayerHeadline) -> bool {
    l.neurons_per_pixel_t01 >= 0.1
}

fn distributed(layers: &[LayerHeadline], holds: bool) -> Claim {
    let claim = Claim::new(
        ClaimKind::Distributed,
        "in every layer, a pixel's mean fraction of neurons above τ(0.1) (the level above which \
         the largest contributions carry 90 % of the total) is at least 0.1."
            .into(),
        holds,
    );
    Evidences::new(&[
        ("neurons_per_pixel_t01", "neurons per pixel, τ(0.1)"),
        ("neurons_per_pixel_t05", "neurons per pixel, τ(0.5)"),
        (
            "median_pixels_fraction",
            "median pixels per live neuron (fraction of the frame)",
        ),
        ("dead_fraction", "dead neurons (fraction)"),
    ])
    .per_layer(
        layers,
        |l| {
            vec![
                Number(l.neurons_per_pixel_t01),
                Number(l.neurons_per_pixel_t05),
                Number(l.median_pixels_fraction),
                Number(l.dead_fraction),
            ]
        },
        distributed_meets,
    )
    .into_claim(claim)
}

fn intensity_meets(l: &LayerHeadline) -> bool {
    l.pearson_intensity > 0.3
}

fn intensity(layers: &[LayerHeadline], holds: bool) -> Claim {
    let claim = Claim::new(
        ClaimKind::IntensityEdges,
        "in every layer, the Pearson correlation of the contribution heatmap Σ|C_n| with the \
         frame's intensity exceeds 0.3 (the edge correlation is shown, not tested)."
            .into(),
        holds,
    );
    Evidences::new(&[
        ("pearson_intensity", "Pearson(heat, intensity)"),
        (
            "spearman_absdiff_edges",
            "Spearman(|heat − intensity|, Sobel edges)",
        ),
    ])
    .per_layer(
        layers,
        |l| {
            vec![
                Number(l.pearson_intensity),
                Number(l.spearman_absdiff_edges),
            ]
        },
        intensity_meets,
    )
    .into_claim(claim)
}

/// The median log std of δ of `partition` (official mode), NaN if absent.
fn log_std(l: &LayerHeadline, partition: &str) -> f64 {
    l.median_log_std.get(partition).copied().unwrap_or(f64::NAN)
}

const PARTITIONS: [(&str, &str); 4] = [
    ("instances", "instances"),
    ("rgb", "RGB clusters"),
    ("gabor", "Gabor clusters"),
    ("grid", "grid cells"),
];

fn space_agnostic(layers: &[LayerHeadline]) -> Claim {
    let meets = |l: &LayerHeadline| l.lowest_partition_official == "grid";
    let count = layers.iter().filter(|l| meets(l)).count();
    let corrected = layers
        .iter()
        .filter(|l| l.lowest_partition_corrected == "grid")
        .count();
    let claim = Claim::new(
        ClaimKind::SpaceAgnostic,
        format!(
            "grid cells have the lowest median log std of δ of the four partitions (official \
             mode) in most layers: here in {count} of {} (corrected mode, contiguous cells: \
             {corrected} of {}).",
            layers.len(),
            layers.len()
        ),
        count * 2 > layers.len(),
    );
    let mut columns: Vec<(String, String)> = PARTITIONS
        .iter()
        .map(|(k, label)| (format!("log_std_{k}"), format!("median log std, {label}")))
        .collect();
    columns.push(("lowest_official".into(), "lowest (official)".into()));
    columns.push(("lowest_corrected".into(), "lowest (corrected)".into()));
    let refs: Vec<(&str, &str)> = columns
        .iter()
        .map(|(k, l)| (k.as_str(), l.as_str()))
        .collect();
    Evidences::new(&refs)
        .per_layer(
            layers,
            |l| {
                let mut v: Vec<Evidence> = PARTITIONS
                    .iter()
                    .map(|(k, _)| Number(log_std(l, k)))
                    .collect();
                v.push(Text(l.lowest_partition_official.clone()));
                v.push(Text(l.lowest_partition_corrected.clone()));
                v
            },
            meets,
        )
        .into_claim(claim)
}

fn colour_edges_meets(l: &LayerHeadline) -> bool {
    log_std(l, "rgb").max(log_std(l, "gabor")) > log_std(l, "instances")
}

fn colour_edges(layers: &[LayerHeadline], holds: bool) -> Claim {
    let claim = Claim::new(
        ClaimKind::ColourEdgeBias,
        "in every layer, the RGB or the Gabor clusters have a higher median log std of δ than the \
         instances (official mode): neurons are more uneven over colours and textures than over \
         objects."
            .into(),
        holds,
    );
    Evidences::new(&[
        ("log_std_rgb", "median log std, RGB clusters"),
        ("log_std_gabor", "median log std, Gabor clusters"),
        ("log_std_instances", "median log std, instances"),
    ])
    .per_layer(
        layers,
        |l| {
            ["rgb", "gabor", "instances"]
                .map(|p| Number(log_std(l, p)))
                .to_vec()
        },
        colour_edges_meets,
    )
    .into_claim(claim)
}

fn no_semantics_meets(l: &LayerHeadline) -> bool {
    l.semantics_gap.is_nan() || l.semantics_gap <= 0.2
}

fn no_semantics(layers: &[LayerHeadline], holds: bool) -> Claim {
    let claim = Claim::new(
        ClaimKind::NoObjectSemantics,
        "in every layer, the neuron profiles of same-category instances correlate at most 0.2 \
         more than those of different categories (the semantics gap; no gap when a frame has no \
         category with two instances)."
            .into(),
        holds,
    );
    Evidences::new(&[
        ("semantics_gap", "semantics gap"),
        ("area_spearman", "Spearman(area, neurons)"),
    ])
    .per_layer(
        layers,
        |l| vec![Number(l.semantics_gap), Number(l.area_spearman)],
        no_semantics_meets,
    )
    .into_claim(claim)
}

fn motion(motion: &[MotionHeadline]) -> Claim {
    let mean = motion.iter().map(|m| m.pearson).sum::<f64>() / motion.len() as f64;
    let claim = Claim::new(
        ClaimKind::MotionDominated,
        format!(
            "the Pearson correlation of the change in contribution D_t with the flow magnitude, \
             averaged over the layers and frames below, exceeds 0.3 (here {}).",
            format_significant(mean, 3)
        ),
        mean > 0.3,
    );
    let mut e = Evidences::new(&[
        ("pearson", "Pearson(D_t, flow)"),
        ("spearman", "Spearman(D_t, flow)"),
        ("iou_top10", "IoU of the top 10 %"),
        ("flow_source", "flow"),
    ]);
    for m in motion {
        e.row(
            &m.model,
            &m.layer,
            Some(m.frame),
            vec![
                Number(m.pearson),
                Number(m.spearman),
                Number(m.iou_top10),
                Text(m.flow_source.clone()),
            ],
            None,
        );
    }
    e.into_claim(claim)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn layer(name: &str, npp: f64, pearson: f64, lowest: &str, stds: [f64; 4]) -> LayerHeadline {
        LayerHeadline {
            model: "ffn".into(),
            layer: name.into(),
            neurons: 4,
            neurons_per_pixel_t01: npp,
            pearson_intensity: pearson,
            lowest_partition_official: lowest.into(),
            lowest_partition_corrected: "rgb".into(),
            median_log_std: PARTITIONS
                .iter()
                .zip(stds)
                .map(|((k, _), v)| (k.to_string(), v))
                .collect(),
            semantics_gap: f64::NAN,
            ..LayerHeadline::default()
        }
    }

    /// Three FFN layers and one motion comparison, with known verdicts.
    pub(crate) fn headlines() -> Headlines {
        Headlines {
            video: "v".into(),
            layers: vec![
                // instances, rgb, gabor, grid
                layer(
                    "layer1",
                    0.26464,
                    0.05,
                    "grid",
                    [-2.5654, -2.1441, -2.18, -6.66],
                ),
                layer("layer2", 0.09, 0.5, "grid", [-1.27, -1.39, -1.69, -3.97]),
                layer("layer3", 0.2, 0.6, "rgb", [-1.0, -0.5, -0.7, -0.9]),
            ],
            motion: vec![MotionHeadline {
                model: "nerv".into(),
                layer: "head".into(),
                frame: 10,
                pearson: 0.5,
                spearman: 0.4,
                iou_top10: 0.25,
                flow_source: "given".into(),
            }],
            claims: Vec::new(),
        }
    }

    #[test]
    fn verdicts_follow_the_criteria() {
        let c = claims(&headlines());
        let verdict = |k: ClaimKind| c.iter().find(|x| x.kind == k).unwrap().holds();
        assert!(!verdict(ClaimKind::Distributed), "layer2 has 0.09 < 0.1");
        assert!(!verdict(ClaimKind::IntensityEdges), "layer1 has r = 0.05");
        assert!(verdict(ClaimKind::SpaceAgnostic), "grid lowest in 2 of 3");
        assert!(
            !verdict(ClaimKind::ColourEdgeBias),
            "layer2: max(−1.39, −1.69) < −1.27"
        );
        assert!(verdict(ClaimKind::NoObjectSemantics), "no gap measured");
        assert!(verdict(ClaimKind::MotionDominated), "mean r 0.5");
        let space = &c[2];
        assert_eq!(space.rows[2].meets, Some(false));
        assert!(space.criterion.contains("in 2 of 3"), "{}", space.criterion);
        assert!(space
            .criterion
            .contains("corrected mode, contiguous cells: 0 of 3"));
    }

    #[test]
    fn tables_have_a_column_per_number_and_json_is_typed() {
        let c = claims(&headlines());
        let frame = c[2].to_frame().unwrap();
        assert_eq!(frame.shape(), (3, 9));
        let motion = c[5].to_frame().unwrap();
        assert_eq!(
            motion.get_column_names(),
            [
                "model",
                "layer",
                "frame",
                "Pearson(D_t, flow)",
                "Spearman(D_t, flow)",
                "IoU of the top 10 %",
                "flow"
            ]
        );

        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json[0]["kind"], "distributed");
        assert_eq!(json[0]["verdict"], "not_supported");
        assert_eq!(
            json[0]["rows"][0]["values"]["neurons_per_pixel_t01"],
            0.26464
        );
        assert_eq!(json[0]["rows"][1]["meets"], false);
        assert_eq!(json[2]["rows"][0]["values"]["lowest_official"], "grid");
        assert!(json[4]["rows"][0]["values"]["semantics_gap"].is_null());
        assert_eq!(json[5]["rows"][0]["frame"], 10);
        assert!(json[5]["rows"][0]["meets"].is_null());
    }
}
