//! Contributions to objects (spec B.3, B.4, B.7): how a layer's absolute contributions fall on
//! the annotated instances of a frame or a video, thing vs stuff, object area vs the number of
//! neurons that contribute, and whether same-category instances share their neurons.
//!
//! **Shares (B.3, B.4).** For each analysed frame t and each instance of the video-wide list
//! (sorted by (category, k), the pseudo-instance `other_0` last, spec B.0):
//! `A_t[n, i] = Σ_{p∈mask_t(i)} |C_n^t(p)| / area_t(i)`, 0 when i is absent from frame t (or its
//! mask is empty). A neuron is dead, and dropped, when `Σ_t Σ_i A_t[n, i] = 0`; the others get
//! `Â_t[n, i] = A_t[n, i] / Σ_{t'} Σ_{i'} A_{t'}[n, i']`. With one frame this is B.3's
//! normalisation over instances; with several, B.4's over the whole video. "other" is the union
//! of the masks ([`OtherRegion::Official`]) or their complement ([`OtherRegion::Corrected`]),
//! chosen by the caller ([`other_region`] maps a [`Fidelity`]). One pass over each frame's maps.
//!
//! **Thing vs stuff (B.7, a proposal: the code has none).** Per frame and live neuron, the mean
//! |c| per pixel over all thing pixels (`thing_mean = Σ_{i thing} A·area / Σ_{i thing} area`) and
//! over all stuff pixels (`stuff_mean` alike; "other" is neither). Summarised over the neurons
//! with a non-zero mean on either side: the medians, the median of `ln(thing/stuff)`, and the
//! fraction of neurons with `thing_mean > stuff_mean`.
//!
//! **Area vs neurons (B.7).** `n_i = #{n : mean_{p∈mask(i)} F[n, p] > 1/N}` with the share
//! `F[n, p] = |C_n(p)| / Σ_{n'} |C_{n'}(p)|` (0 where the heat is 0), over the real segments
//! ("other" excluded), and Spearman's ρ(area, n_i). Two passes: the heat, then the neurons.
//!
//! **Semantics (B.3's claim).** If neurons encoded categories, two instances of one category would
//! draw on the same neurons. Per frame, each present real instance gets a profile over the live
//! neurons, its column of the frame's own Â (normalised over that frame's instances, "other"
//! included, as B.3). `within_r` is the mean Pearson correlation of the profiles of instance pairs
//! of one category, `between_r` of pairs of different categories, `gap = within_r − between_r`.
//! A gap near 0 means no category semantics; colour and position also make same-category objects
//! alike, so a positive gap is an upper bound on semantics, not proof of it.
//!
//! Schema of [`ObjectShares::to_frame`] (one row per frame × live neuron × video instance):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `frame` | u32 | the frame index |
//! | `neuron` | u32 | the flat neuron index |
//! | `instance` | str | `"{category}_{k}"`, or `other_0` |
//! | `category` | str | the category (`other` for `other_0`) |
//! | `isthing` | bool | a thing category (false for `other_0`) |
//! | `area` | u32 | the mask's pixels in this frame (0: absent) |
//! | `mean_abs` | f64 | A_t[n, i] |
//! | `share` | f64 | Â_t[n, i] |
//!
//! Schema of [`ThingStuff::to_frame`] (one row per frame × live neuron): `layer` str, `frame` u32,
//! `neuron` u32, `thing_mean` f64, `stuff_mean` f64 (NaN when the frame has no such pixels),
//! `log_ratio` f64 (`ln(thing_mean / stuff_mean)`).
//!
//! Schema of [`ThingStuff::summary_frame`] (one row per frame): `layer` str, `frame` u32,
//! `neurons` u32 (compared), `median_thing` f64, `median_stuff` f64, `median_log_ratio` f64,
//! `frac_thing` f64 (fraction with `thing_mean > stuff_mean`).
//!
//! Schema of [`ObjectShares::semantics_frame`] (one row per frame): `layer` str, `frame` u32,
//! `instances` u32, `within_pairs` u32, `between_pairs` u32, `within_r` f64, `between_r` f64,
//! `gap` f64 (NaN when a kind of pair is missing).
//!
//! Schema of [`AreaNeurons::to_frame`] (one row per real segment): `layer` str, `frame` u32,
//! `instance` str, `category` str, `isthing` bool, `area` u32, `neurons` u32 (n_i), `fraction`
//! f64 (n_i / N). [`area_summary_frame`]: `layer` str, `frame` u32, `instances` u32,
//! `num_neurons` u32, `spearman` f64 (ρ(area, n_i)).

use polars::prelude::*;

use super::quantile;
use super::regions::Regions;
use super::source::{abs_heat, per_neuron};
use super::{mean, pearson, spearman, table_error, Fidelity};
use crate::canvas::maps::NeuronMaps;
use crate::data::panoptic::{OtherRegion, PanopticFrame};
use crate::error::{Result, XincError};

/// The name of the "other" pseudo-instance.
pub const OTHER: &str = "other_0";
/// The category of the "other" pseudo-instance.
pub const OTHER_CATEGORY: &str = "other";

/// The "other" region a [`Fidelity`] implies (union of the masks when official, complement when
/// corrected).
pub(crate) fn other_region(fidelity: Fidelity) -> OtherRegion {
    match fidelity {
        Fidelity::Official => OtherRegion::Official,
        Fidelity::Corrected => OtherRegion::Corrected,
    }
}

/// An instance of a video (or the "other" pseudo-instance).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Instance {
    /// `"{category}_{k}"`, or [`OTHER`].
    pub name: String,
    pub category: String,
    pub isthing: bool,
}

impl Instance {
    fn other() -> Self {
        Instance {
            name: OTHER.into(),
            category: OTHER_CATEGORY.into(),
            isthing: false,
        }
    }

    pub fn is_other(&self) -> bool {
        self.name == OTHER && self.category == OTHER_CATEGORY
    }

    /// The `k` of `"{category}_{k}"` (0 when the name has none).
    fn k(&self) -> u32 {
        self.name
            .rsplit('_')
            .next()
            .and_then(|k| k.parse().ok())
            .unwrap_or(0)
    }
}

/// The real segments of a frame as regions of `height`×`width` maps, one per instance name
/// (segments sharing a name are merged), in frame order.
fn segment_regions(
    frame: &PanopticFrame,
    height: usize,
    width: usize,
) -> Result<(Vec<Instance>, Regions)> {
    let mut instances: Vec<Instance> = Vec::new();
    let mut pixels: Vec<Vec<u32>> = Vec::new();
    for s in &frame.segments {
        if (s.mask.height, s.mask.width) != (height, width) || s.mask.data.len() != height * width {
            return Err(XincError::InvalidArgument(format!(
                "frame {}: mask of {} is {}x{}, the maps are {height}x{width}",
                frame.frame_index, s.instance, s.mask.height, s.mask.width
            )));
        }
        let on = s.mask.data.iter().enumerate().filter(|(_, &b)| b);
        let on = on.map(|(p, _)| p as u32);
        match instances.iter().position(|i| i.name == s.instance) {
            Some(j) => pixels[j].extend(on),
            None => {
                instances.push(Instance {
                    name: s.instance.clone(),
                    category: s.category.clone(),
                    isthing: s.isthing,
                });
                pixels.push(on.collect());
            }
        }
    }
    let mut regions = Regions::default();
    for (inst, px) in instances.iter().zip(pixels) {
        regions.push(inst.name.clone(), px);
    }
    Ok((instances, regions))
}

/// The instances of a frame plus "other" (last), as regions of `height`×`width` maps. An error
/// when a mask has another size.
pub(crate) fn instance_regions(
    frame: &PanopticFrame,
    other: OtherRegion,
    height: usize,
    width: usize,
) -> Result<(Vec<Instance>, Regions)> {
    let (mut instances, mut regions) = segment_regions(frame, height, width)?;
    let mask = frame.other_mask(other, height, width);
    let on = mask.data.iter().enumerate().filter(|(_, &b)| b);
    regions.push(OTHER.into(), on.map(|(p, _)| p as u32).collect());
    instances.push(Instance::other());
    Ok((instances, regions))
}

/// The video-wide instance list of B.0: every instance of `frames`, sorted by (category, k),
/// then "other".
pub(crate) fn video_instances<'a>(
    frames: impl IntoIterator<Item = &'a PanopticFrame>,
) -> Vec<Instance> {
    let mut list: Vec<Instance> = Vec::new();
    for s in frames.into_iter().flat_map(|f| &f.segments) {
        if !list.iter().any(|i| i.name == s.instance) {
            list.push(Instance {
                name: s.instance.clone(),
                category: s.category.clone(),
                isthing: s.isthing,
            });
        }
    }
    list.sort_by(|a, b| (&a.category, a.k(), &a.name).cmp(&(&b.category, b.k(), &b.name)));
    list.push(Instance::other());
    list
}

// ---------------------------------------------------------------------------------------------
// Shares (B.3, B.4).

/// Per-instance contributions of one layer over one or more frames.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectShares {
    pub layer: String,
    /// Neurons of the layer, dead ones included.
    pub num_neurons: usize,
    /// The video-wide instances (columns), "other" last.
    pub instances: Vec<Instance>,
    /// The analysed frames' indices.
    pub frames: Vec<usize>,
    /// `[frame][instance]` mask areas, 0 when absent.
    pub areas: Vec<Vec<usize>>,
    /// The live neurons (rows), in order.
    pub neurons: Vec<usize>,
    /// `[frame]` of row-major `[live neuron, instance]` A_t.
    pub mean_abs: Vec<Vec<f64>>,
    /// `[frame]` of row-major `[live neuron, instance]` Â_t; each row sums to 1 over all frames.
    pub shares: Vec<Vec<f64>>,
}

/// Checks that every frame's maps come from one layer of one size and neuron count.
fn check_layers(frames: &[(&dyn NeuronMaps, &PanopticFrame)]) -> Result<()> {
    let Some((first, _)) = frames.first() else {
        return Err(XincError::InvalidArgument(
            "object shares need at least one frame".into(),
        ));
    };
    for (src, frame) in frames {
        if (src.layer(), src.num_neurons(), src.size())
            != (first.layer(), first.num_neurons(), first.size())
        {
            return Err(XincError::InvalidArgument(format!(
                "frame {}: layer {} ({} neurons, {:?}) differs from layer {} ({} neurons, {:?})",
                frame.frame_index,
                src.layer(),
                src.num_neurons(),
                src.size(),
                first.layer(),
                first.num_neurons(),
                first.size()
            )));
        }
    }
    Ok(())
}

/// A_t of one frame: `[neuron][video instance]` and the areas per video instance.
fn frame_mean_abs(
    src: &dyn NeuronMaps,
    frame: &PanopticFrame,
    other: OtherRegion,
    video: &[Instance],
) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
    let (h, w) = src.size();
    let (instances, regions) = instance_regions(frame, other, h, w)?;
    let slots = instances
        .iter()
        .map(|i| {
            video.iter().position(|v| v.name == i.name).ok_or_else(|| {
                XincError::InvalidArgument(format!("instance {} not in the video list", i.name))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let mut areas = vec![0; video.len()];
    for (&slot, area) in slots.iter().zip(regions.areas()) {
        areas[slot] = area;
    }
    let rows = per_neuron(src, |_, map| {
        let mut row = vec![0.0; video.len()];
        for ((&slot, sum), area) in slots.iter().zip(regions.abs_sums(map)).zip(regions.areas()) {
            if area > 0 {
                row[slot] = sum / area as f64;
            }
        }
        row
    });
    Ok((rows, areas))
}

/// B.3 / B.4: per-instance shares of one layer over the given frames (one [`NeuronMaps`] per
/// frame, with that frame's annotations). One frame gives B.3.
pub fn object_shares(
    frames: &[(&dyn NeuronMaps, &PanopticFrame)],
    other: OtherRegion,
) -> Result<ObjectShares> {
    check_layers(frames)?;
    let instances = video_instances(frames.iter().map(|(_, f)| *f));
    let per_frame = frames
        .iter()
        .map(|(src, frame)| frame_mean_abs(*src, frame, other, &instances))
        .collect::<Result<Vec<_>>>()?;
    let n = frames[0].0.num_neurons();
    let totals: Vec<f64> = (0..n)
        .map(|k| {
            per_frame
                .iter()
                .map(|(rows, _)| rows[k].iter().sum::<f64>())
                .sum()
        })
        .collect();
    let neurons: Vec<usize> = (0..n).filter(|&k| totals[k] > 0.0).collect();
    // Rows of the live neurons, flattened; divided by the neuron's video total when `scale`.
    let flat = |rows: &[Vec<f64>], scale: bool| -> Vec<f64> {
        let mut out = Vec::with_capacity(neurons.len() * instances.len());
        for &k in &neurons {
            let d = if scale { totals[k] } else { 1.0 };
            out.extend(rows[k].iter().map(|&a| a / d));
        }
        out
    };
    Ok(ObjectShares {
        layer: frames[0].0.layer().to_string(),
        num_neurons: n,
        frames: frames.iter().map(|(_, f)| f.frame_index).collect(),
        areas: per_frame.iter().map(|(_, a)| a.clone()).collect(),
        mean_abs: per_frame
            .iter()
            .map(|(rows, _)| flat(rows, false))
            .collect(),
        shares: per_frame.iter().map(|(rows, _)| flat(rows, true)).collect(),
        instances,
        neurons,
    })
}

/// B.3: the per-instance shares of one frame.
pub fn frame_shares(
    src: &dyn NeuronMaps,
    frame: &PanopticFrame,
    other: OtherRegion,
) -> Result<ObjectShares> {
    object_shares(&[(src, frame)], other)
}

impl ObjectShares {
    /// A_t of live neuron row `row` (index into [`Self::neurons`]), all instances.
    pub fn mean_abs_row(&self, t: usize, row: usize) -> &[f64] {
        let i = self.instances.len();
        &self.mean_abs[t][row * i..(row + 1) * i]
    }

    /// Â_t of live neuron row `row`, all instances.
    pub fn share_row(&self, t: usize, row: usize) -> &[f64] {
        let i = self.instances.len();
        &self.shares[t][row * i..(row + 1) * i]
    }

    /// Each instance's mean share per live neuron in each analysed frame: `(instance name,
    /// [frame] values)`, how an instance's claim on the layer moves through the video.
    pub fn instance_means(&self) -> Vec<(String, Vec<f64>)> {
        let rows = self.neurons.len().max(1) as f64;
        self.instances
            .iter()
            .enumerate()
            .map(|(i, inst)| {
                let per_frame = (0..self.frames.len())
                    .map(|t| {
                        let total: f64 = (0..self.neurons.len())
                            .map(|k| self.share_row(t, k)[i])
                            .sum();
                        total / rows
                    })
                    .collect();
                (inst.name.clone(), per_frame)
            })
            .collect()
    }

    /// The long table (schema in the module docs).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let (ni, nk) = (self.instances.len(), self.neurons.len());
        let idx: Vec<(usize, usize, usize)> = (0..self.frames.len())
            .flat_map(|t| (0..nk).flat_map(move |k| (0..ni).map(move |i| (t, k, i))))
            .collect();
        let inst = |f: fn(&Instance) -> &str| {
            idx.iter()
                .map(|&(_, _, i)| f(&self.instances[i]))
                .collect::<Vec<_>>()
        };
        df!(
            "layer" => vec![self.layer.as_str(); idx.len()],
            "frame" => idx.iter().map(|&(t, _, _)| self.frames[t] as u32).collect::<Vec<_>>(),
            "neuron" => idx.iter().map(|&(_, k, _)| self.neurons[k] as u32).collect::<Vec<_>>(),
            "instance" => inst(|i| &i.name),
            "category" => inst(|i| &i.category),
            "isthing" => idx.iter().map(|&(_, _, i)| self.instances[i].isthing).collect::<Vec<_>>(),
            "area" => idx.iter().map(|&(t, _, i)| self.areas[t][i] as u32).collect::<Vec<_>>(),
            "mean_abs" => self.mean_abs.concat(),
            "share" => self.shares.concat(),
        )
        .map_err(|e| table_error("object shares", e))
    }

    /// B.7 thing vs stuff, from A_t and the areas.
    pub fn thing_vs_stuff(&self) -> ThingStuff {
        let side = |t: usize, row: usize, thing: bool| {
            let (mut num, mut den) = (0.0, 0usize);
            for (i, inst) in self.instances.iter().enumerate() {
                if !inst.is_other() && inst.isthing == thing {
                    num += self.mean_abs_row(t, row)[i] * self.areas[t][i] as f64;
                    den += self.areas[t][i];
                }
            }
            if den == 0 {
                f64::NAN
            } else {
                num / den as f64
            }
        };
        let means = |thing: bool| {
            (0..self.frames.len())
                .map(|t| (0..self.neurons.len()).map(|r| side(t, r, thing)).collect())
                .collect()
        };
        ThingStuff {
            layer: self.layer.clone(),
            frames: self.frames.clone(),
            neurons: self.neurons.clone(),
            thing: means(true),
            stuff: means(false),
        }
    }

    /// The semantics measure of frame `t` (module docs).
    pub fn semantics(&self, t: usize) -> Semantics {
        let real: Vec<usize> = (0..self.instances.len())
            .filter(|&i| !self.instances[i].is_other() && self.areas[t][i] > 0)
            .collect();
        // Profiles over the neurons live in this frame, normalised over this frame's instances.
        let live: Vec<(usize, f64)> = (0..self.neurons.len())
            .map(|r| (r, self.mean_abs_row(t, r).iter().sum::<f64>()))
            .filter(|&(_, s)| s > 0.0)
            .collect();
        let profile = |i: usize| -> Vec<f64> {
            live.iter()
                .map(|&(r, s)| self.mean_abs_row(t, r)[i] / s)
                .collect()
        };
        let profiles: Vec<Vec<f64>> = real.iter().map(|&i| profile(i)).collect();
        let (mut within, mut between) = (Vec::new(), Vec::new());
        for a in 0..real.len() {
            for b in a + 1..real.len() {
                let r = pearson(&profiles[a], &profiles[b]);
                let same = self.instances[real[a]].category == self.instances[real[b]].category;
                match (r.is_nan(), same) {
                    (true, _) => {}
                    (false, true) => within.push(r),
                    (false, false) => between.push(r),
                }
            }
        }
        Semantics {
            frame: self.frames[t],
            instances: real.len(),
            within_pairs: within.len(),
            between_pairs: between.len(),
            within_r: mean(&within),
            between_r: mean(&between),
        }
    }

    /// The semantics table, one row per frame (schema in the module docs).
    pub fn semantics_frame(&self) -> Result<DataFrame> {
        let s: Vec<Semantics> = (0..self.frames.len()).map(|t| self.semantics(t)).collect();
        df!(
            "layer" => vec![self.layer.as_str(); s.len()],
            "frame" => s.iter().map(|x| x.frame as u32).collect::<Vec<_>>(),
            "instances" => s.iter().map(|x| x.instances as u32).collect::<Vec<_>>(),
            "within_pairs" => s.iter().map(|x| x.within_pairs as u32).collect::<Vec<_>>(),
            "between_pairs" => s.iter().map(|x| x.between_pairs as u32).collect::<Vec<_>>(),
            "within_r" => s.iter().map(|x| x.within_r).collect::<Vec<_>>(),
            "between_r" => s.iter().map(|x| x.between_r).collect::<Vec<_>>(),
            "gap" => s.iter().map(Semantics::gap).collect::<Vec<_>>(),
        )
        .map_err(|e| table_error("object semantics", e))
    }
}

/// Whether same-category instances draw on the same neurons, in one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Semantics {
    pub frame: usize,
    /// Present real instances.
    pub instances: usize,
    pub within_pairs: usize,
    pub between_pairs: usize,
    /// Mean Pearson r of same-category profile pairs (NaN without such pairs).
    pub within_r: f64,
    /// Mean Pearson r of different-category profile pairs.
    pub between_r: f64,
}

impl Semantics {
    pub fn gap(&self) -> f64 {
        self.within_r - self.between_r
    }
}

// ---------------------------------------------------------------------------------------------
// Thing vs stuff (B.7).

/// Per frame and live neuron, the mean |c| per thing pixel and per stuff pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct ThingStuff {
    pub layer: String,
    pub frames: Vec<usize>,
    pub neurons: Vec<usize>,
    /// `[frame][live neuron]`.
    pub thing: Vec<Vec<f64>>,
    pub stuff: Vec<Vec<f64>>,
}

/// The thing-vs-stuff summary of one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct ThingStuffSummary {
    pub frame: usize,
    /// Neurons compared (both means defined, at least one non-zero).
    pub neurons: usize,
    pub median_thing: f64,
    pub median_stuff: f64,
    pub median_log_ratio: f64,
    /// Fraction of the compared neurons with `thing_mean > stuff_mean`.
    pub frac_thing: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

impl ThingStuff {
    /// The summary of frame `t` (module docs).
    pub fn summary(&self, t: usize) -> ThingStuffSummary {
        let pairs: Vec<(f64, f64)> = self.thing[t]
            .iter()
            .zip(&self.stuff[t])
            .map(|(&a, &b)| (a, b))
            .filter(|&(a, b)| !a.is_nan() && !b.is_nan() && a + b > 0.0)
            .collect();
        let prefer = pairs.iter().filter(|(a, b)| a > b).count();
        ThingStuffSummary {
            frame: self.frames[t],
            neurons: pairs.len(),
            median_thing: median(pairs.iter().map(|p| p.0).collect()),
            median_stuff: median(pairs.iter().map(|p| p.1).collect()),
            median_log_ratio: median(pairs.iter().map(|(a, b)| (a / b).ln()).collect()),
            frac_thing: prefer as f64 / pairs.len() as f64,
        }
    }

    /// The per-neuron table (schema in the module docs).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let nk = self.neurons.len();
        let rows = self.frames.len() * nk;
        let (thing, stuff) = (self.thing.concat(), self.stuff.concat());
        df!(
            "layer" => vec![self.layer.as_str(); rows],
            "frame" => (0..rows).map(|r| self.frames[r / nk.max(1)] as u32).collect::<Vec<_>>(),
            "neuron" => (0..rows).map(|r| self.neurons[r % nk.max(1)] as u32).collect::<Vec<_>>(),
            "log_ratio" => thing.iter().zip(&stuff).map(|(a, b)| (a / b).ln()).collect::<Vec<_>>(),
            "thing_mean" => thing,
            "stuff_mean" => stuff,
        )
        .map_err(|e| table_error("thing vs stuff", e))
    }

    /// The per-frame summary table (schema in the module docs).
    pub fn summary_frame(&self) -> Result<DataFrame> {
        let s: Vec<ThingStuffSummary> = (0..self.frames.len()).map(|t| self.summary(t)).collect();
        let col = |f: fn(&ThingStuffSummary) -> f64| s.iter().map(f).collect::<Vec<_>>();
        df!(
            "layer" => vec![self.layer.as_str(); s.len()],
            "frame" => s.iter().map(|x| x.frame as u32).collect::<Vec<_>>(),
            "neurons" => s.iter().map(|x| x.neurons as u32).collect::<Vec<_>>(),
            "median_thing" => col(|x| x.median_thing),
            "median_stuff" => col(|x| x.median_stuff),
            "median_log_ratio" => col(|x| x.median_log_ratio),
            "frac_thing" => col(|x| x.frac_thing),
        )
        .map_err(|e| table_error("thing vs stuff summary", e))
    }
}

// ---------------------------------------------------------------------------------------------
// Area vs number of contributing neurons (B.7).

/// Per real segment of one frame, its area and the number of neurons whose mean share over it
/// exceeds 1/N.
#[derive(Clone, Debug, PartialEq)]
pub struct AreaNeurons {
    pub layer: String,
    pub frame: usize,
    pub num_neurons: usize,
    pub instances: Vec<Instance>,
    pub areas: Vec<usize>,
    /// n_i per instance.
    pub counts: Vec<usize>,
    /// Spearman's ρ(area, n_i); NaN when either is constant.
    pub spearman: f64,
}

/// B.7 area vs neurons of one frame (heat pass, then one pass over the neurons).
pub fn area_vs_neurons(src: &dyn NeuronMaps, frame: &PanopticFrame) -> Result<AreaNeurons> {
    let (h, w) = src.size();
    let (instances, regions) = segment_regions(frame, h, w)?;
    let heat = abs_heat(src);
    let (n, areas) = (src.num_neurons() as f64, regions.areas());
    let passes: Vec<Vec<bool>> = per_neuron(src, |_, map| {
        let share = |p: usize| {
            if heat[p] > 0.0 {
                f64::from(map[p].abs()) / heat[p]
            } else {
                0.0
            }
        };
        // mean_{p∈mask} F > 1/N  ⇔  Σ_{p∈mask} F · N > area.
        let sums = regions.sums_by(share);
        sums.iter()
            .zip(&areas)
            .map(|(s, &a)| a > 0 && s * n > a as f64)
            .collect()
    });
    let counts: Vec<usize> = (0..instances.len())
        .map(|i| passes.iter().filter(|row| row[i]).count())
        .collect();
    let as_f64 = |v: &[usize]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    Ok(AreaNeurons {
        layer: src.layer().to_string(),
        frame: frame.frame_index,
        num_neurons: src.num_neurons(),
        spearman: spearman(&as_f64(&areas), &as_f64(&counts)),
        instances,
        areas,
        counts,
    })
}

impl AreaNeurons {
    /// The per-instance table (schema in the module docs).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let m = self.instances.len();
        df!(
            "layer" => vec![self.layer.as_str(); m],
            "frame" => vec![self.frame as u32; m],
            "instance" => self.instances.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            "category" => self.instances.iter().map(|i| i.category.as_str()).collect::<Vec<_>>(),
            "isthing" => self.instances.iter().map(|i| i.isthing).collect::<Vec<_>>(),
            "area" => self.areas.iter().map(|&a| a as u32).collect::<Vec<_>>(),
            "neurons" => self.counts.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            "fraction" => self.counts.iter().map(|&c| c as f64 / self.num_neurons as f64).collect::<Vec<_>>(),
        )
        .map_err(|e| table_error("area vs neurons", e))
    }
}

/// One row per layer and frame: Spearman's ρ(area, n_i) (schema in the module docs).
pub fn area_summary_frame(results: &[AreaNeurons]) -> Result<DataFrame> {
    df!(
        "layer" => results.iter().map(|r| r.layer.as_str()).collect::<Vec<_>>(),
        "frame" => results.iter().map(|r| r.frame as u32).collect::<Vec<_>>(),
        "instances" => results.iter().map(|r| r.instances.len() as u32).collect::<Vec<_>>(),
        "num_neurons" => results.iter().map(|r| r.num_neurons as u32).collect::<Vec<_>>(),
        "spearman" => results.iter().map(|r| r.spearman).collect::<Vec<_>>(),
    )
    .map_err(|e| table_error("area vs neurons summary", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::toy_maps as maps;

    #[test]
    fn instance_means_average_each_frames_shares_over_the_live_neurons() {
        let inst = |n: &str| Instance {
            name: n.into(),
            category: "car".into(),
            isthing: true,
        };
        // Two frames, two live neurons, two instances: shares[t] is row-major [neuron, instance].
        let s = ObjectShares {
            layer: "toy".into(),
            num_neurons: 3,
            instances: vec![inst("car_0"), inst("car_1")],
            frames: vec![0, 5],
            areas: vec![vec![1, 1], vec![1, 1]],
            neurons: vec![0, 2],
            mean_abs: vec![vec![0.0; 4]; 2],
            shares: vec![vec![0.1, 0.3, 0.2, 0.0], vec![0.4, 0.2, 0.3, 0.5]],
        };
        let means = s.instance_means();
        assert_eq!(means.len(), 2);
        assert_eq!(means[0].0, "car_0");
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(close(&means[0].1, &[0.15, 0.35]), "{:?}", means[0].1);
        assert!(close(&means[1].1, &[0.15, 0.35]), "{:?}", means[1].1);
    }
    use crate::canvas::maps::InMemoryMaps;
    use crate::data::panoptic::{Mask, Segment};

    fn segment(name: &str, isthing: bool, on: &[usize]) -> Segment {
        let mask = Mask {
            height: 2,
            width: 4,
            data: (0..8).map(|p| on.contains(&p)).collect(),
        };
        Segment {
            segment_id: 1,
            category_id: 0,
            category: name.rsplit_once('_').unwrap().0.into(),
            isthing,
            iscrowd: false,
            instance: name.into(),
            area: mask.area(),
            bbox: mask.bbox().unwrap_or([0; 4]),
            mask,
        }
    }

    fn frame(index: usize, segments: Vec<Segment>) -> PanopticFrame {
        PanopticFrame {
            frame_index: index,
            image_id: format!("f{index}"),
            segments,
        }
    }

    /// A 2×4 frame: car_0 = pixels {0, 1}, road_0 = {4, 5, 6}, car_1 = {3}; pixels 2 and 7 void.
    fn street() -> PanopticFrame {
        frame(
            0,
            vec![
                segment("car_0", true, &[0, 1]),
                segment("road_0", false, &[4, 5, 6]),
                segment("car_1", true, &[3]),
            ],
        )
    }

    #[test]
    fn a_neuron_on_one_mask_gets_all_of_its_share() {
        // Neuron 0 = −2 on car_0's mask, neuron 1 dead, neuron 2 = 1 on the void pixels 2 and 7.
        let mut data = vec![-2.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        data.extend([0.0; 8]);
        data.extend([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let m = maps(2, 4, data);
        let src = InMemoryMaps::new(m.clone());
        let f = street();
        // Corrected: "other" is the void complement {2, 7}.
        let s = frame_shares(&src, &f, OtherRegion::Corrected).unwrap();
        let names: Vec<&str> = s.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["car_0", "car_1", "road_0", "other_0"]);
        assert_eq!(s.areas, vec![vec![2, 1, 3, 2]]);
        assert_eq!(s.neurons, vec![0, 2]);
        assert_eq!(s.mean_abs_row(0, 0), [2.0, 0.0, 0.0, 0.0]);
        assert_eq!(s.share_row(0, 0), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(s.share_row(0, 1), [0.0, 0.0, 0.0, 1.0]);
        // Official: "other" is the union {0, 1, 3, 4, 5, 6}: A = (2, 0, 0, 4/6), Â = (3/4, 0, 0, 1/4).
        // Neuron 2 touches no mask of the union and is dropped as dead.
        let s = frame_shares(&src, &f, OtherRegion::Official).unwrap();
        assert_eq!(s.neurons, vec![0]);
        let share = s.share_row(0, 0);
        assert!((share[0] - 0.75).abs() < 1e-12 && (share[3] - 0.25).abs() < 1e-12);
        let df = s.to_frame().unwrap();
        assert_eq!(df.height(), 4);
        assert_eq!(df.column("area").unwrap().u32().unwrap().get(3), Some(6));
        assert_eq!(
            df.column("category").unwrap().str().unwrap().get(3),
            Some("other")
        );
    }

    #[test]
    fn video_shares_normalise_over_all_frames() {
        // Frame 0: street(); frame 5: only road_0 = {4..8} (car_0 and car_1 absent).
        let f0 = street();
        let f5 = frame(5, vec![segment("road_0", false, &[4, 5, 6, 7])]);
        let m0 = maps(2, 4, vec![1.0; 8]);
        let m5 = maps(2, 4, vec![0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0]);
        let (s0, s5) = (InMemoryMaps::new(m0.clone()), InMemoryMaps::new(m5.clone()));
        let s = object_shares(&[(&s0, &f0), (&s5, &f5)], OtherRegion::Official).unwrap();
        assert_eq!(s.frames, vec![0, 5]);
        assert_eq!(s.areas[1], vec![0, 0, 4, 4]);
        // A_0 = (1, 1, 1, 1), A_5 = (0, 0, 3, 3): total 10.
        assert_eq!(s.mean_abs_row(1, 0), [0.0, 0.0, 3.0, 3.0]);
        assert_eq!(s.share_row(0, 0), [0.1, 0.1, 0.1, 0.1]);
        assert_eq!(s.share_row(1, 0), [0.0, 0.0, 0.3, 0.3]);
        let total: f64 = s.shares.iter().flatten().sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(s.to_frame().unwrap().height(), 8);
        // Maps of another layer size are refused.
        let other = maps(2, 2, vec![1.0; 4]);
        let so = InMemoryMaps::new(other.clone());
        assert!(object_shares(&[(&s0, &f0), (&so, &f5)], OtherRegion::Official).is_err());
        assert!(frame_shares(&so, &f0, OtherRegion::Official).is_err());
        assert!(object_shares(&[], OtherRegion::Official).is_err());
    }

    #[test]
    fn thing_vs_stuff_from_hand_made_means() {
        // Neuron 0: 4 on car_0, 1 on car_1, 1 on road → thing = (2·4 + 1·1)/3 = 3, stuff = 1.
        // Neuron 1: 0 on things, 2 on road → thing 0, stuff 2.
        let m = maps(
            2,
            4,
            vec![
                4.0, 4.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
                0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0,
            ],
        );
        let src = InMemoryMaps::new(m.clone());
        let s = frame_shares(&src, &street(), OtherRegion::Corrected).unwrap();
        let ts = s.thing_vs_stuff();
        assert_eq!(ts.thing, vec![vec![3.0, 0.0]]);
        assert_eq!(ts.stuff, vec![vec![1.0, 2.0]]);
        let sum = ts.summary(0);
        assert_eq!((sum.neurons, sum.frac_thing), (2, 0.5));
        assert_eq!((sum.median_thing, sum.median_stuff), (1.5, 1.5));
        // log ratios ln 3 and −∞: the median of two is their mean, −∞.
        assert_eq!(sum.median_log_ratio, f64::NEG_INFINITY);
        assert_eq!(ts.to_frame().unwrap().height(), 2);
        assert_eq!(ts.summary_frame().unwrap().height(), 1);
    }

    #[test]
    fn semantics_compares_same_and_different_category_profiles() {
        // Three neurons; car_0 and car_1 draw on neurons 0 and 1 alike, road_0 on neuron 2.
        let m = maps(
            2,
            4,
            vec![
                5.0, 5.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, //
                1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
                0.0, 0.0, 0.0, 0.0, 4.0, 4.0, 4.0, 0.0,
            ],
        );
        let src = InMemoryMaps::new(m.clone());
        let s = frame_shares(&src, &street(), OtherRegion::Corrected).unwrap();
        // Profiles (frame-normalised columns): car_0 = car_1 = (1, 1/3, 0), road = (0, 1/3, 1).
        let sem = s.semantics(0);
        assert_eq!(
            (sem.instances, sem.within_pairs, sem.between_pairs),
            (3, 1, 2)
        );
        assert!((sem.within_r - 1.0).abs() < 1e-12);
        assert!((sem.between_r + 1.0).abs() < 1e-12);
        assert!((sem.gap() - 2.0).abs() < 1e-12);
        let df = s.semantics_frame().unwrap();
        assert_eq!(
            df.column("within_pairs").unwrap().u32().unwrap().get(0),
            Some(1)
        );
    }

    #[test]
    fn area_vs_neurons_counts_neurons_above_one_over_n() {
        // Two neurons. Neuron 0 owns car_0 and shares road_0 evenly; neuron 1 owns car_1.
        // Shares F: car_0 (1, 0); road_0 (½, ½); car_1 (0, 1). Threshold 1/N = ½ (strict):
        // car_0 → 1 neuron, road_0 → 0, car_1 → 1.
        let m = maps(
            2,
            4,
            vec![
                2.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, //
                0.0, 0.0, 0.0, -3.0, 1.0, -1.0, 1.0, 0.0,
            ],
        );
        let src = InMemoryMaps::new(m.clone());
        let a = area_vs_neurons(&src, &street()).unwrap();
        let names: Vec<&str> = a.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["car_0", "road_0", "car_1"]);
        assert_eq!(a.areas, vec![2, 3, 1]);
        assert_eq!(a.counts, vec![1, 0, 1]);
        // spearman((2, 3, 1), (1, 0, 1)) = pearson((2, 3, 1), (2.5, 1, 2.5)) = −√3/2.
        assert!(
            (a.spearman + 3f64.sqrt() / 2.0).abs() < 1e-12,
            "{}",
            a.spearman
        );
        assert_eq!(a.to_frame().unwrap().height(), 3);
        assert_eq!(area_summary_frame(&[a]).unwrap().height(), 1);
    }

    #[test]
    fn instances_are_named_and_sorted_as_the_official_code() {
        let f = frame(
            0,
            vec![
                segment("person_10", true, &[0]),
                segment("car_1", true, &[1]),
                segment("person_2", true, &[2]),
                segment("car_0", true, &[3]),
            ],
        );
        let names: Vec<String> = video_instances([&f]).into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            ["car_0", "car_1", "person_2", "person_10", "other_0"]
        );
        assert_eq!(other_region(Fidelity::Corrected), OtherRegion::Corrected);
        let mut bad = street();
        bad.segments[0].mask.width = 3;
        assert!(instance_regions(&bad, OtherRegion::Official, 2, 4).is_err());
    }
}
