//! Neuron groups (spec B.8): neurons described by where their contribution lies, clustered with
//! k-means, and shown in a 2-D embedding.
//!
//! **Vectors** ([`neuron_vectors`]), streamed one map per worker:
//! 1. take |C_n|; a neuron whose map sums to 0 is *dead* and dropped;
//! 2. min-max normalise the map to [0, 1] (left as it is when max = min);
//! 3. pool it: [`Features::Labels`] gives the mean of the normalised map over each label of a
//!    pixel label map (the official `rgb` and `gabor` vectors, whose label maps come from
//!    [`crate::analysis::partitions`]; an empty label gives 0), [`Features::Spatial`] the
//!    `cell`×`cell` average pooling (`spatial_16`: AvgPool2d(16), remainder rows and columns
//!    dropped, `(H/16)·(W/16)` dims);
//! 4. keep a thumbnail of the normalised map (average pooled to 16×32 by default) for figures.
//!
//! **Groups** ([`neuron_groups`]): seeded k-means (k = 6 by default, [`super::kmeans`]) on the
//! vectors, a 2-D PCA embedding for display, and the stability of the grouping across seeds (the
//! mean pairwise adjusted Rand index of k-means runs with seeds `seed, seed+1, …`).
//!
//! *Why PCA and not UMAP.* The official code embeds with UMAP and runs k-means on the 2-D UMAP
//! coordinates. The Rust UMAP crates do not fit this crate: `umap-rs` (0.4) needs ndarray 0.17
//! (linfa 0.8 is on 0.16), sparse-matrix and concurrent-map dependencies, precomputed k-NN
//! graphs and a caller-made initialisation, and optimises with parallel SGD (not reproducible
//! run to run); `fast-umap` trains a network with `burn`; `annembed` pulls in an HNSW index
//! and BLAS. So the embedding is PCA (`linfa-reduction`), deterministic and dependency-free.
//!
//! *Where k-means runs.* By default ([`ClusterSpace::Vectors`]) on the full vectors: UMAP's 2-D
//! coordinates keep each point's neighbourhood, so the official code could cluster there, but a
//! 2-D PCA keeps only the two directions of largest variance and would merge groups that differ
//! along the others. [`ClusterSpace::Embedding`] clusters the PCA coordinates instead, for
//! comparison with the official pipeline's shape.
//!
//! The explained variance reported is each component's share of the *total* variance of the
//! vectors (linfa's own `explained_variance_ratio` divides by the retained components only).
//!
//! Schema of [`NeuronGroups::to_frame`] (one row per live neuron, in neuron order):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `neuron` | u32 | the flat neuron index n |
//! | `unit` | u32 | the unit (FFN) or input channel (NeRV) |
//! | `out_channel` | u32, null | the NeRV output channel (null for FFN) |
//! | `group` | u32 | the k-means group, 0..k |
//! | `x`, `y` | f64 | the PCA embedding (components 1 and 2) |
//!
//! Schema of [`NeuronGroups::summary`] (one row):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `layer` | str | the layer |
//! | `features` | str | `rgb`, `gabor`, … (the label map's name) or `spatial_{cell}` |
//! | `space` | str | `vectors` or `embedding`: where k-means ran |
//! | `neurons` | u32 | live neurons clustered |
//! | `dead` | u32 | dead neurons dropped |
//! | `k` | u32 | number of groups |
//! | `ari_mean` | f64 | mean pairwise ARI of the k-means runs across seeds (NaN with < 2 runs) |
//! | `explained_variance_1`, `explained_variance_2` | f64 | share of the total variance of PCA components 1, 2 |

use linfa::prelude::*;
use linfa_reduction::Pca;
use ndarray::Array2;
use polars::prelude::*;
use rayon::prelude::*;

use super::source::per_neuron;
use super::{adjusted_rand_index, kmeans, table_error};
use crate::canvas::maps::NeuronMaps;
use crate::error::{Result, XincError};

/// What a neuron's vector holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Features<'a> {
    /// The mean of the normalised map over each label (0..k, k = max label + 1) of a pixel label
    /// map (`H·W` labels, row-major), named `name` (`rgb`, `gabor`).
    Labels { name: &'a str, labels: &'a [usize] },
    /// `cell`×`cell` average pooling of the normalised map (`spatial_16` with cell 16).
    Spatial { cell: usize },
}

impl Features<'_> {
    /// The features' name in tables: the label map's name or `spatial_{cell}`.
    pub fn name(&self) -> String {
        match self {
            Features::Labels { name, .. } => name.to_string(),
            Features::Spatial { cell } => format!("spatial_{cell}"),
        }
    }
}

/// The default thumbnail size `(rows, columns)`: 8×8 averages of a 128×256 map.
pub const THUMBNAIL: (usize, usize) = (16, 32);

/// The live neurons of one layer as vectors, with their thumbnails.
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronVectors {
    pub layer: String,
    /// [`Features::name`].
    pub features: String,
    /// Dimensions of a vector.
    pub dims: usize,
    /// The flat indices of the live neurons, ascending; row i of `data` is `neurons[i]`.
    pub neurons: Vec<usize>,
    /// [`NeuronMaps::neuron_id`] of each live neuron.
    pub ids: Vec<(usize, Option<usize>)>,
    /// `neurons.len() × dims` values, row-major.
    pub data: Vec<f64>,
    /// Each live neuron's normalised map, average pooled to `thumb_size` (row-major).
    pub thumbnails: Vec<Vec<f32>>,
    /// `(rows, columns)` of a thumbnail.
    pub thumb_size: (usize, usize),
    /// Number of dead neurons dropped.
    pub dead: usize,
}

impl NeuronVectors {
    /// Row `i` (the live neuron `neurons[i]`).
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.dims..(i + 1) * self.dims]
    }
}

/// Average pooling into bins: each pixel's bin (or none) and each bin's pixel count.
struct Pooling {
    bins: Vec<Option<usize>>,
    counts: Vec<usize>,
}

impl Pooling {
    fn new(bins: Vec<Option<usize>>, num_bins: usize) -> Self {
        let mut counts = vec![0; num_bins];
        bins.iter().flatten().for_each(|&b| counts[b] += 1);
        Pooling { bins, counts }
    }

    /// Pixels grouped by label; labels must be below `H·W`.
    fn labels(labels: &[usize], pixels: usize) -> Result<Self> {
        if labels.len() != pixels {
            return Err(XincError::InvalidArgument(format!(
                "label map of {} labels for maps of {pixels} pixels",
                labels.len()
            )));
        }
        let max = labels.iter().copied().max().unwrap_or(0);
        if max >= pixels {
            return Err(XincError::InvalidArgument(format!(
                "label map with label {max} for {pixels} pixels (labels must be 0..k, k ≤ pixels)"
            )));
        }
        Ok(Pooling::new(
            labels.iter().map(|&l| Some(l)).collect(),
            max + 1,
        ))
    }

    /// Contiguous `rows × cols` bins; bin edges at `⌊i·H/rows⌋` unless `cell` fixes them at
    /// multiples of `cell` (remainder pixels in no bin).
    fn grid(h: usize, w: usize, rows: usize, cols: usize, cell: Option<usize>) -> Self {
        let bin = |i: usize, n: usize, parts: usize| match cell {
            Some(c) => Some(i / c).filter(|&b| b < parts),
            None => Some(i * parts / n),
        };
        let bins = (0..h * w)
            .map(|p| Some(bin(p / w, h, rows)? * cols + bin(p % w, w, cols)?))
            .collect();
        Pooling::new(bins, rows * cols)
    }

    /// The mean of `map` over each bin (0 for an empty bin).
    fn pool(&self, map: &[f32]) -> Vec<f64> {
        let mut sums = vec![0.0f64; self.counts.len()];
        for (&b, &v) in self.bins.iter().zip(map) {
            if let Some(b) = b {
                sums[b] += f64::from(v);
            }
        }
        sums.iter()
            .zip(&self.counts)
            .map(|(s, &c)| if c == 0 { 0.0 } else { s / c as f64 })
            .collect()
    }
}

/// The pooling of `features` for `h × w` maps.
fn feature_pooling(features: &Features, h: usize, w: usize) -> Result<Pooling> {
    match *features {
        Features::Labels { labels, .. } => Pooling::labels(labels, h * w),
        Features::Spatial { cell } => {
            if cell == 0 || cell > h || cell > w {
                return Err(XincError::InvalidArgument(format!(
                    "spatial pooling cell {cell} for {h}×{w} maps (needs 1 ≤ cell ≤ both sides)"
                )));
            }
            Ok(Pooling::grid(h, w, h / cell, w / cell, Some(cell)))
        }
    }
}

/// `|map|` min-max normalised (left as it is when constant), or `None` when it sums to 0.
fn normalised_abs(map: &[f32]) -> Option<Vec<f32>> {
    let abs: Vec<f32> = map.iter().map(|v| v.abs()).collect();
    if abs.iter().map(|&v| f64::from(v)).sum::<f64>() == 0.0 {
        return None;
    }
    let (lo, hi) = abs
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if hi > lo {
        Some(abs.into_iter().map(|v| (v - lo) / (hi - lo)).collect())
    } else {
        Some(abs)
    }
}

/// The vectors of the live neurons of `src` (module docs), with thumbnails of `thumb`
/// `(rows, columns)` (clamped to the map size).
pub(crate) fn neuron_vectors(
    src: &dyn NeuronMaps,
    features: &Features,
    thumb: (usize, usize),
) -> Result<NeuronVectors> {
    let (h, w) = src.size();
    if h == 0 || w == 0 || thumb.0 == 0 || thumb.1 == 0 {
        return Err(XincError::InvalidArgument(format!(
            "neuron vectors of {h}×{w} maps with {}×{} thumbnails",
            thumb.0, thumb.1
        )));
    }
    let pooling = feature_pooling(features, h, w)?;
    let thumb_size = (thumb.0.min(h), thumb.1.min(w));
    let thumbs = Pooling::grid(h, w, thumb_size.0, thumb_size.1, None);
    let rows = per_neuron(src, |_, map| {
        let norm = normalised_abs(map)?;
        let thumb: Vec<f32> = thumbs.pool(&norm).into_iter().map(|v| v as f32).collect();
        Some((pooling.pool(&norm), thumb))
    });
    let mut out = NeuronVectors {
        layer: src.layer().to_string(),
        features: features.name(),
        dims: pooling.counts.len(),
        neurons: Vec::new(),
        ids: Vec::new(),
        data: Vec::new(),
        thumbnails: Vec::new(),
        thumb_size,
        dead: 0,
    };
    for (n, row) in rows.into_iter().enumerate() {
        match row {
            Some((vector, thumb)) => {
                out.neurons.push(n);
                out.ids.push(src.neuron_id(n));
                out.data.extend(vector);
                out.thumbnails.push(thumb);
            }
            None => out.dead += 1,
        }
    }
    Ok(out)
}

/// A 2-D PCA of `rows` points (`data` row-major, `dims` ≥ 2 each): the coordinates, and each
/// component's share of the total variance. Components are oriented so that their largest
/// loading is positive. Points without variance all map to the origin (shares NaN).
pub(crate) fn pca_2d(data: &[f64], dims: usize) -> Result<(Vec<[f64; 2]>, [f64; 2])> {
    let rows = data.len() / dims.max(1);
    if dims < 2 || rows < 2 || rows * dims != data.len() {
        return Err(XincError::InvalidArgument(format!(
            "a 2-D PCA needs at least 2 points of at least 2 dimensions, got {} values as \
             {dims}-dimensional points",
            data.len()
        )));
    }
    let records = Array2::from_shape_vec((rows, dims), data.to_vec())
        .map_err(|e| XincError::InvalidArgument(format!("PCA input: {e}")))?;
    let mean = records.mean_axis(ndarray::Axis(0)).expect("rows ≥ 2");
    let total: f64 = (&records - &mean).mapv(|v| v * v).sum();
    if total == 0.0 {
        return Ok((vec![[0.0; 2]; rows], [f64::NAN; 2]));
    }
    let dataset = DatasetBase::from(records);
    let pca = Pca::params(2)
        .fit(&dataset)
        .map_err(|e| XincError::InvalidArgument(format!("PCA: {e}")))?;
    let coords: Array2<f64> = pca.predict(&dataset);
    // linfa returns fewer components when the data has fewer directions of variance: the
    // missing ones are 0 (coordinates and share).
    let found = pca.singular_values().len().min(2);
    let sigma = pca.singular_values();
    let share = [0, 1].map(|c| {
        if c < found {
            sigma[c] * sigma[c] / total
        } else {
            0.0
        }
    });
    let signs = [0, 1].map(|c| {
        if c >= found {
            return 0.0;
        }
        let comp = pca.components().row(c);
        let largest = comp
            .iter()
            .copied()
            .fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
        if largest < 0.0 {
            -1.0
        } else {
            1.0
        }
    });
    let points = coords
        .rows()
        .into_iter()
        .map(|r| [0, 1].map(|c| if c < found { r[c] * signs[c] } else { 0.0 }))
        .collect();
    Ok((points, share))
}

/// Where k-means runs (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClusterSpace {
    /// On the full neuron vectors.
    #[default]
    Vectors,
    /// On the 2-D PCA coordinates.
    Embedding,
}

impl ClusterSpace {
    pub fn name(self) -> &'static str {
        match self {
            ClusterSpace::Vectors => "vectors",
            ClusterSpace::Embedding => "embedding",
        }
    }
}

/// Options of [`neuron_groups`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupOptions {
    /// Number of groups.
    pub k: usize,
    /// k-means restarts per run (the lowest inertia is kept).
    pub n_init: usize,
    /// Seed of the reported grouping; the stability runs use `seed + 1, seed + 2, …`.
    pub seed: u64,
    /// Number of k-means runs (seeds) whose pairwise ARI is averaged, the reported one included.
    pub stability_runs: usize,
    pub space: ClusterSpace,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            k: 6,
            n_init: 10,
            seed: 0,
            stability_runs: 5,
            space: ClusterSpace::Vectors,
        }
    }
}

/// The groups of one layer's live neurons; row i is row i of the [`NeuronVectors`] (and its
/// thumbnail).
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronGroups {
    pub layer: String,
    pub features: String,
    pub space: ClusterSpace,
    pub k: usize,
    pub neurons: Vec<usize>,
    pub ids: Vec<(usize, Option<usize>)>,
    /// Each live neuron's group, 0..k.
    pub group: Vec<usize>,
    /// The 2-D PCA coordinates.
    pub embedding: Vec<[f64; 2]>,
    /// Share of the total variance of PCA components 1 and 2.
    pub explained_variance: [f64; 2],
    /// Mean pairwise ARI of the k-means runs across seeds (NaN with fewer than 2 runs).
    pub ari_mean: f64,
    pub dead: usize,
}

/// Groups the neurons of `vectors` (module docs).
pub(crate) fn neuron_groups(vectors: &NeuronVectors, opts: &GroupOptions) -> Result<NeuronGroups> {
    let (embedding, explained_variance) = pca_2d(&vectors.data, vectors.dims)?;
    let flat: Vec<f64>;
    let (points, dims) = match opts.space {
        ClusterSpace::Vectors => (vectors.data.as_slice(), vectors.dims),
        ClusterSpace::Embedding => {
            flat = embedding.iter().flatten().copied().collect();
            (flat.as_slice(), 2)
        }
    };
    let runs: Vec<Vec<usize>> = (0..opts.stability_runs.max(1) as u64)
        .into_par_iter()
        .map(|r| kmeans(points, dims, opts.k, opts.n_init, opts.seed + r).map(|(l, _)| l))
        .collect::<Result<_>>()?;
    Ok(NeuronGroups {
        layer: vectors.layer.clone(),
        features: vectors.features.clone(),
        space: opts.space,
        k: opts.k,
        neurons: vectors.neurons.clone(),
        ids: vectors.ids.clone(),
        ari_mean: mean_pairwise_ari(&runs),
        group: runs.into_iter().next().expect("at least one run"),
        embedding,
        explained_variance,
        dead: vectors.dead,
    })
}

/// The mean adjusted Rand index over all pairs of labelings (NaN with fewer than 2).
pub(crate) fn mean_pairwise_ari(labelings: &[Vec<usize>]) -> f64 {
    let pairs: Vec<f64> = (0..labelings.len())
        .flat_map(|i| (i + 1..labelings.len()).map(move |j| (i, j)))
        .map(|(i, j)| adjusted_rand_index(&labelings[i], &labelings[j]))
        .collect();
    if pairs.is_empty() {
        f64::NAN
    } else {
        pairs.iter().sum::<f64>() / pairs.len() as f64
    }
}

impl NeuronGroups {
    /// The mean thumbnail of each group's neurons (`vectors` are the ones grouped) and the
    /// group's size: what each group looks at.
    pub fn mean_thumbnails(&self, vectors: &NeuronVectors) -> Vec<(Vec<f32>, usize)> {
        let (th, tw) = vectors.thumb_size;
        let mut means = vec![(vec![0.0f32; th * tw], 0usize); self.k];
        for (thumb, &g) in vectors.thumbnails.iter().zip(&self.group) {
            let (mean, n) = &mut means[g];
            *n += 1;
            mean.iter_mut().zip(thumb).for_each(|(m, x)| *m += x);
        }
        for (mean, n) in &mut means {
            mean.iter_mut().for_each(|x| *x /= (*n).max(1) as f32);
        }
        means
    }

    /// One row per live neuron (schema in the module docs).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let n = self.neurons.len();
        df!(
            "layer" => vec![self.layer.as_str(); n],
            "neuron" => self.neurons.iter().map(|&v| v as u32).collect::<Vec<_>>(),
            "unit" => self.ids.iter().map(|&(u, _)| u as u32).collect::<Vec<_>>(),
            "out_channel" => self.ids.iter().map(|&(_, c)| c.map(|c| c as u32)).collect::<Vec<_>>(),
            "group" => self.group.iter().map(|&g| g as u32).collect::<Vec<_>>(),
            "x" => self.embedding.iter().map(|p| p[0]).collect::<Vec<_>>(),
            "y" => self.embedding.iter().map(|p| p[1]).collect::<Vec<_>>(),
        )
        .map_err(|e| table_error("neuron groups", e))
    }

    /// The one-row summary (schema in the module docs).
    pub fn summary(&self) -> Result<DataFrame> {
        df!(
            "layer" => [self.layer.as_str()],
            "features" => [self.features.as_str()],
            "space" => [self.space.name()],
            "neurons" => [self.neurons.len() as u32],
            "dead" => [self.dead as u32],
            "k" => [self.k as u32],
            "ari_mean" => [self.ari_mean],
            "explained_variance_1" => [self.explained_variance[0]],
            "explained_variance_2" => [self.explained_variance[1]],
        )
        .map_err(|e| table_error("neuron-group summary", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::maps::InMemoryMaps;
    use crate::canvas::ContributionMap;

    #[test]
    fn mean_thumbnails_average_each_groups_members() {
        let vectors = NeuronVectors {
            layer: "toy".into(),
            features: "gabor".into(),
            dims: 1,
            neurons: vec![0, 1, 2],
            ids: vec![(0, None), (1, None), (2, None)],
            data: vec![0.0; 3],
            thumbnails: vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 7.0]],
            thumb_size: (1, 2),
            dead: 0,
        };
        let groups = NeuronGroups {
            layer: "toy".into(),
            features: "gabor".into(),
            space: ClusterSpace::Vectors,
            k: 3,
            neurons: vec![0, 1, 2],
            ids: vectors.ids.clone(),
            group: vec![1, 0, 1],
            embedding: vec![[0.0; 2]; 3],
            explained_variance: [0.0; 2],
            ari_mean: f64::NAN,
            dead: 0,
        };
        let means = groups.mean_thumbnails(&vectors);
        assert_eq!(
            means,
            vec![
                (vec![3.0, 4.0], 1),
                (vec![3.0, 4.5], 2),
                (vec![0.0, 0.0], 0)
            ]
        );
    }

    const H: usize = 32;
    const W: usize = 64;

    /// Label map of four vertical stripes of 16 columns.
    fn stripes() -> Vec<usize> {
        (0..H * W).map(|p| (p % W) / 16).collect()
    }

    /// 10 neurons lighting up the left half (stripes 0, 1), 8 the right half (stripes 2, 3),
    /// with varied amplitudes, signs and a faint texture; neurons 3 and 12 are dead.
    fn canvas() -> (ContributionMap, Vec<usize>) {
        let mut data = Vec::new();
        let mut truth = Vec::new();
        for n in 0..20 {
            let left = n < 10;
            let dead = n == 3 || n == 12;
            let amp = if n % 2 == 0 {
                1.0 + n as f32
            } else {
                -0.5 * (1 + n) as f32
            };
            data.extend((0..H * W).map(|p| {
                let on = ((p % W) < W / 2) == left;
                let texture = 0.05 * ((p * (n + 3)) as f32 * 0.37).sin().abs();
                if dead {
                    0.0
                } else {
                    amp * (if on { 1.0 } else { 0.0 } + texture)
                }
            }));
            if !dead {
                truth.push(usize::from(!left));
            }
        }
        let maps = ContributionMap {
            layer: "toy".into(),
            neuron_shape: vec![20],
            height: H,
            width: W,
            data,
        };
        (maps, truth)
    }

    #[test]
    fn two_obvious_groups_are_separated_and_dead_neurons_dropped() {
        let (maps, truth) = canvas();
        let src = InMemoryMaps::new(maps.clone());
        let labels = stripes();
        let features = Features::Labels {
            name: "stripes",
            labels: &labels,
        };
        let vectors = neuron_vectors(&src, &features, THUMBNAIL).unwrap();
        assert_eq!(vectors.dead, 2);
        assert_eq!(vectors.neurons.len(), 18);
        assert!(!vectors.neurons.contains(&3) && !vectors.neurons.contains(&12));
        assert_eq!(vectors.dims, 4);
        // A left neuron: ≈ 1 on stripes 0, 1 and ≈ 0 on 2, 3 (normalisation removes the
        // amplitude and sign).
        let row = vectors.row(0);
        assert!(
            row[0] > 0.9 && row[1] > 0.9 && row[2] < 0.1 && row[3] < 0.1,
            "{row:?}"
        );
        let opts = GroupOptions {
            k: 2,
            ..GroupOptions::default()
        };
        for space in [ClusterSpace::Vectors, ClusterSpace::Embedding] {
            let groups = neuron_groups(&vectors, &GroupOptions { space, ..opts }).unwrap();
            assert_eq!(adjusted_rand_index(&groups.group, &truth), 1.0, "{space:?}");
            assert_eq!(groups.ari_mean, 1.0);
            // Two tight groups: the first component explains nearly everything.
            assert!(
                groups.explained_variance[0] > 0.95,
                "{:?}",
                groups.explained_variance
            );
            assert_eq!(
                groups,
                neuron_groups(&vectors, &GroupOptions { space, ..opts }).unwrap()
            );
        }
        let groups = neuron_groups(&vectors, &opts).unwrap();
        let df = groups.to_frame().unwrap();
        let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["layer", "neuron", "unit", "out_channel", "group", "x", "y"]
        );
        assert_eq!(df.height(), 18);
        assert_eq!(df.column("neuron").unwrap().u32().unwrap().get(3), Some(4));
        let summary = groups.summary().unwrap();
        assert_eq!(
            summary.column("dead").unwrap().u32().unwrap().get(0),
            Some(2)
        );
        assert_eq!(
            summary.column("features").unwrap().str().unwrap().get(0),
            Some("stripes")
        );
        assert_eq!(
            summary.column("ari_mean").unwrap().f64().unwrap().get(0),
            Some(1.0)
        );
    }

    #[test]
    fn normalisation_spatial_pooling_and_thumbnails() {
        // Neuron 0: |C| = x + 64·y (min 0, max 2047); neuron 1: 10× neuron 0 with flipped sign
        // (same normalised map); neuron 2: constant 0.3 (kept as it is).
        let ramp: Vec<f32> = (0..H * W).map(|p| p as f32).collect();
        let mut data = ramp.clone();
        data.extend(ramp.iter().map(|v| -10.0 * v));
        data.extend(vec![0.3; H * W]);
        let maps = ContributionMap {
            layer: "toy".into(),
            neuron_shape: vec![3],
            height: H,
            width: W,
            data,
        };
        let src = InMemoryMaps::new(maps.clone());
        let v = neuron_vectors(&src, &Features::Spatial { cell: 16 }, (4, 8)).unwrap();
        assert_eq!((v.dims, v.features.as_str()), (2 * 4, "spatial_16"));
        // Cell (0, 0) averages x, y in 0..16: mean(x + 64y) = 7.5 + 64·7.5.
        let max = (H * W - 1) as f64;
        assert!((v.row(0)[0] - (7.5 + 64.0 * 7.5) / max).abs() < 1e-6);
        assert!((v.row(0)[5] - (16.0 + 7.5 + 64.0 * 23.5) / max).abs() < 1e-6);
        for (a, b) in v.row(0).iter().zip(v.row(1)) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(v.row(2).iter().all(|&x| (x - 0.3).abs() < 1e-7));
        // 4×8 thumbnails of 8×8 blocks.
        assert_eq!(v.thumb_size, (4, 8));
        assert!((f64::from(v.thumbnails[0][0]) - (3.5 + 64.0 * 3.5) / max).abs() < 1e-5);
        assert_eq!(v.thumbnails[2], vec![0.3; 32]);
        // Thumbnails never exceed the map.
        let v = neuron_vectors(&src, &Features::Spatial { cell: 16 }, (100, 100)).unwrap();
        assert_eq!(v.thumb_size, (H, W));
    }

    #[test]
    fn pca_of_points_on_a_line_has_one_component() {
        let dir = [1.0, -2.0, 0.5, 3.0, 0.0];
        let data: Vec<f64> = (0..30)
            .flat_map(|i| {
                let t = (i as f64 * 0.7).sin() * 5.0;
                dir.map(|d| 2.0 + t * d)
            })
            .collect();
        let (points, share) = pca_2d(&data, 5).unwrap();
        assert!(share[0] > 1.0 - 1e-9, "{share:?}");
        assert!(share[1] < 1e-9, "{share:?}");
        // The first coordinate is the position along the line (up to scale and sign).
        let xs: Vec<f64> = points.iter().map(|p| p[0]).collect();
        let ts: Vec<f64> = (0..30).map(|i| (i as f64 * 0.7).sin()).collect();
        assert!((crate::analysis::pearson(&xs, &ts).abs() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn pca_shares_are_of_the_total_variance() {
        // A 3×3×3 grid stretched ×2 along x: variances 4 : 1 : 1 → shares 2/3 and 1/6.
        let data: Vec<f64> = (0..27)
            .flat_map(|i| [2.0 * (i % 3) as f64, ((i / 3) % 3) as f64, (i / 9) as f64])
            .collect();
        let (points, share) = pca_2d(&data, 3).unwrap();
        assert!((share[0] - 2.0 / 3.0).abs() < 1e-9, "{share:?}");
        assert!((share[1] - 1.0 / 6.0).abs() < 1e-9, "{share:?}");
        // Oriented with the largest loading positive: x grows with the stretched axis.
        assert!(points[2][0] > points[0][0]);
        let (flat, none) = pca_2d(&[1.0; 6], 2).unwrap();
        assert_eq!(flat, vec![[0.0; 2]; 3]);
        assert!(none[0].is_nan());
        assert!(pca_2d(&[1.0, 2.0, 3.0], 3).is_err());
    }

    #[test]
    fn seeded_groups_are_reproducible_and_ari_averages_pairs() {
        assert!(mean_pairwise_ari(&[vec![0, 0, 1, 1]]).is_nan());
        let runs = [vec![0, 0, 1, 1], vec![1, 1, 0, 0], vec![0, 1, 0, 1]];
        // Pairs: 1, ARI([0,0,1,1],[0,1,0,1]) = −0.5 twice.
        assert!((mean_pairwise_ari(&runs) - 0.0).abs() < 1e-12);
        // Noisy vectors in 3 dims, k = 4: reproducible for a seed.
        let data: Vec<f64> = (0..60).map(|i| ((i * 7919) % 101) as f64 / 101.0).collect();
        let vectors = NeuronVectors {
            layer: "toy".into(),
            features: "x".into(),
            dims: 3,
            neurons: (0..20).collect(),
            ids: (0..20).map(|n| (n, None)).collect(),
            data,
            thumbnails: vec![Vec::new(); 20],
            thumb_size: (1, 1),
            dead: 0,
        };
        let opts = GroupOptions {
            k: 4,
            n_init: 1,
            seed: 3,
            ..GroupOptions::default()
        };
        let a = neuron_groups(&vectors, &opts).unwrap();
        assert_eq!(a, neuron_groups(&vectors, &opts).unwrap());
        // The reported grouping is the run of `seed`; the ARI averages the runs of seeds 3..8.
        let runs: Vec<Vec<usize>> = (3..8)
            .map(|seed| kmeans(&vectors.data, 3, 4, 1, seed).unwrap().0)
            .collect();
        assert_eq!(a.group, runs[0]);
        assert_eq!(a.ari_mean, mean_pairwise_ari(&runs));
        assert!(a.group.iter().all(|&g| g < 4));
        assert!(neuron_groups(&vectors, &GroupOptions { k: 21, ..opts }).is_err());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let (maps, _) = canvas();
        let src = InMemoryMaps::new(maps.clone());
        let short = vec![0usize; 10];
        let features = Features::Labels {
            name: "short",
            labels: &short,
        };
        assert!(neuron_vectors(&src, &features, THUMBNAIL).is_err());
        let huge = vec![usize::MAX; H * W];
        let features = Features::Labels {
            name: "huge",
            labels: &huge,
        };
        assert!(neuron_vectors(&src, &features, THUMBNAIL).is_err());
        assert!(neuron_vectors(&src, &Features::Spatial { cell: 33 }, THUMBNAIL).is_err());
        assert!(neuron_vectors(&src, &Features::Spatial { cell: 0 }, THUMBNAIL).is_err());
        assert!(neuron_vectors(&src, &Features::Spatial { cell: 16 }, (0, 4)).is_err());
    }
}
