//! The paper's analyses of a canvas (spec B), each returning a polars [`DataFrame`] with a
//! documented schema plus the numbers the paper only drew.
//!
//! Layering: `analysis` reads the canvas (through [`crate::canvas::maps::NeuronMaps`], one map
//! at a time) and the data layer (frames, masks, flow); it never draws. Figures live in [`crate::plot`], the HTML
//! report in [`crate::report`].
//!
//! Shared here: the [`Fidelity`] switch between the official code's conventions and the corrected
//! ones, correlation and normalisation helpers, seeded k-means, and atomic Parquet output.

pub mod ablation;
pub mod distributed;
pub mod groups;
pub mod intensity;
pub mod motion;
pub mod objects;
pub mod partitions;
pub mod regions;
pub mod source;
pub mod stats;

use std::path::Path;

use linfa::prelude::*;
use linfa_clustering::KMeans;
use ndarray::Array2;
use polars::prelude::*;
use polars_io::prelude::{ParquetReader, ParquetWriter, SerReader};
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

use crate::error::{Result, XincError};

/// Which conventions an analysis follows where the official code has a bug or an open choice
/// (spec B.6, B.10, F).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fidelity {
    /// As the released code computes it, bugs included (lattice grid cells, six θ = 0 Gabor
    /// kernels with uint8 responses, signed grid δ, "other" = union of masks).
    #[default]
    Official,
    /// As intended (contiguous grid cells, 24 float Gabor kernels, |δ| everywhere, "other" =
    /// complement of the masks).
    Corrected,
}

impl Fidelity {
    pub fn name(self) -> &'static str {
        match self {
            Fidelity::Official => "official",
            Fidelity::Corrected => "corrected",
        }
    }
}

/// The `q`-quantile of sorted values, linear interpolation (numpy's default); NaN when empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if frac == 0.0 {
        return sorted[i];
    }
    sorted[i] * (1.0 - frac) + sorted[i + 1] * frac
}

/// Pearson's correlation of two equally long samples; NaN when either is constant or empty.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return f64::NAN;
    }
    let (ma, mb) = (mean(&a[..n]), mean(&b[..n]));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    sab / (saa * sbb).sqrt()
}

/// Spearman's rank correlation: Pearson's of the ranks, ties sharing their mean rank (as scipy).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// 1-based ranks with ties averaged (`scipy.stats.rankdata(method='average')`); NaNs rank last.
pub(crate) fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut s = 0;
    while s < idx.len() {
        let mut e = s + 1;
        while e < idx.len() && v[idx[e]] == v[idx[s]] {
            e += 1;
        }
        let avg = (s + e + 1) as f64 / 2.0;
        idx[s..e].iter().for_each(|&i| r[i] = avg);
        s = e;
    }
    r
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Min-max normalisation to [0, 1]; a constant input becomes all zeros.
pub(crate) fn min_max(v: &[f64]) -> Vec<f64> {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi.is_nan() || lo.is_nan() || hi <= lo {
        return vec![0.0; v.len()];
    }
    v.iter().map(|&x| (x - lo) / (hi - lo)).collect()
}

/// Points a k-means is fitted on at most: larger inputs (a frame's 32,768 pixels) are fitted on a
/// seeded random sample of this many points, then every point is assigned to its nearest centroid.
/// linfa's k-means takes about 4 s per restart on a full 128×256 frame with k = 32 on this 2-core
/// machine; the sample makes the paper's label maps (RGB: 1 restart, Gabor: 10) 8× cheaper while
/// the centroids of such dense, low-dimensional data barely move.
pub const KMEANS_MAX_FIT: usize = 4096;

/// Seeded k-means (linfa, k-means++ initialisation, `n_init` restarts keeping the lowest
/// inertia) of `rows` points with `dims` features each (`data` row-major), fitted on at most
/// [`KMEANS_MAX_FIT`] of them. Returns each point's cluster and the centroids `[k, dims]`.
/// Reproducible for a given seed.
pub fn kmeans(
    data: &[f64],
    dims: usize,
    k: usize,
    n_init: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<f64>)> {
    let rows = data.len() / dims.max(1);
    if dims == 0 || rows * dims != data.len() || k == 0 || rows < k {
        return Err(XincError::InvalidArgument(format!(
            "k-means of {} values as {dims}-dimensional points into {k} clusters",
            data.len()
        )));
    }
    let array = |rows: usize, values: Vec<f64>| {
        Array2::from_shape_vec((rows, dims), values)
            .map_err(|e| XincError::InvalidArgument(format!("k-means input: {e}")))
    };
    let all = DatasetBase::from(array(rows, data.to_vec())?);
    let fit = if rows > KMEANS_MAX_FIT {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let mut pick = rand::seq::index::sample(&mut rng, rows, KMEANS_MAX_FIT).into_vec();
        pick.sort_unstable();
        let values = pick
            .iter()
            .flat_map(|&r| data[r * dims..(r + 1) * dims].iter().copied())
            .collect();
        DatasetBase::from(array(KMEANS_MAX_FIT, values)?)
    } else {
        all.clone()
    };
    let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))
        .n_runs(n_init.max(1))
        .max_n_iterations(300)
        .tolerance(1e-4)
        .fit(&fit)
        .map_err(|e| XincError::InvalidArgument(format!("k-means: {e}")))?;
    let labels = model.predict(&all);
    Ok((
        labels.iter().copied().collect(),
        model.centroids().iter().copied().collect(),
    ))
}

/// The adjusted Rand index of two labelings of the same points (Hubert & Arabie): 1 for
/// identical partitions up to relabelling, about 0 for independent ones.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len().min(b.len());
    let (ka, kb) = (
        a.iter().max().map_or(0, |m| m + 1),
        b.iter().max().map_or(0, |m| m + 1),
    );
    let mut table = vec![0u64; ka * kb];
    for (&x, &y) in a.iter().zip(b) {
        table[x * kb + y] += 1;
    }
    let pairs = |c: u64| (c * c.saturating_sub(1)) as f64 / 2.0;
    let sum_ij: f64 = table.iter().map(|&c| pairs(c)).sum();
    let row = |i: usize| table[i * kb..(i + 1) * kb].iter().sum::<u64>();
    let col = |j: usize| (0..ka).map(|i| table[i * kb + j]).sum::<u64>();
    let sum_a: f64 = (0..ka).map(|i| pairs(row(i))).sum();
    let sum_b: f64 = (0..kb).map(|j| pairs(col(j))).sum();
    let expected = sum_a * sum_b / pairs(n as u64);
    let max = (sum_a + sum_b) / 2.0;
    if max == expected {
        return 1.0;
    }
    (sum_ij - expected) / (max - expected)
}

/// Writes `df` to `path` as Parquet, atomically (a temporary file in the same folder, renamed).
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    crate::io::write_atomic(path, |file| {
        ParquetWriter::new(file)
            .finish(df)
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
}

/// Reads a Parquet file written by [`write_parquet`].
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = std::fs::File::open(path).map_err(|e| XincError::io(path, e))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| XincError::dataset(path, format!("not a readable Parquet table: {e}")))
}

/// Stacks the parts of one table (same schema; `name` names it in errors), e.g. one analysis's
/// tables of several layers.
pub fn stack_tables(name: &str, parts: Vec<DataFrame>) -> Result<DataFrame> {
    let mut iter = parts.into_iter();
    let mut df = iter
        .next()
        .ok_or_else(|| XincError::InvalidArgument(format!("table {name} has no rows")))?;
    for part in iter {
        df.vstack_mut(&part).map_err(|e| {
            XincError::InvalidArgument(format!("table {name}: parts do not stack: {e}"))
        })?;
    }
    Ok(df)
}

/// Column `name` of `df`, found by comparing names, not by polars' hashed schema. A notebook's
/// DataFrame may have cached its schema in another evcxr cell, whose own copy of polars hashes
/// names with another seed (each cell is a separate library, with its own statics): there,
/// `DataFrame::column` does not find a column that exists.
pub(crate) fn named_column<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Column> {
    df.columns()
        .iter()
        .find(|c| c.name().as_str() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = df.columns().iter().map(|c| c.name().as_str()).collect();
            XincError::InvalidArgument(format!(
                "the table has no column `{name}` (it has {names:?})"
            ))
        })
}

/// The f64 column `name` of `df` (found by [`named_column`]), nulls as NaN.
pub(crate) fn f64_values(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = named_column(df, name)?
        .f64()
        .map_err(|e| table_error(name, e))?;
    Ok((0..c.len()).map(|i| c.get(i).unwrap_or(f64::NAN)).collect())
}

/// The string column `name` of `df` (found by [`named_column`]), nulls as empty strings.
pub(crate) fn str_values(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = named_column(df, name)?
        .str()
        .map_err(|e| table_error(name, e))?;
    Ok((0..c.len())
        .map(|i| c.get(i).unwrap_or_default().to_string())
        .collect())
}

/// A polars error as an [`XincError`], naming what was being built.
pub(crate) fn table_error(what: &str, e: PolarsError) -> XincError {
    XincError::InvalidArgument(format!("building the {what} table: {e}"))
}

/// A one-axis canvas of `data.len() / (H·W)` maps named `toy`, for the analyses' unit tests.
#[cfg(test)]
pub(crate) fn toy_maps(
    height: usize,
    width: usize,
    data: Vec<f32>,
) -> crate::canvas::ContributionMap {
    crate::canvas::ContributionMap {
        layer: "toy".into(),
        neuron_shape: vec![data.len() / (height * width)],
        height,
        width,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlations_match_hand_computed_values() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [2.0, 4.0, 6.0, 8.0, 10.0];
        assert!((pearson(&a, &b) - 1.0).abs() < 1e-12);
        // A monotone but non-linear relation: Spearman 1, Pearson below 1.
        let c = [1.0, 8.0, 27.0, 64.0, 125.0];
        assert!((spearman(&a, &c) - 1.0).abs() < 1e-12);
        assert!(pearson(&a, &c) < 0.99);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert!(pearson(&a, &[1.0; 5]).is_nan());
        // scipy.stats.spearmanr([1,2,3,4,5],[5,6,7,8,7]) = 0.8207826816681233
        assert!((spearman(&a, &[5.0, 6.0, 7.0, 8.0, 7.0]) - 0.820_782_681_668_123_3).abs() < 1e-12);
    }

    #[test]
    fn min_max_and_ari() {
        assert_eq!(min_max(&[2.0, 4.0, 3.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(min_max(&[1.0, 1.0]), vec![0.0, 0.0]);
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0);
        // sklearn.metrics.adjusted_rand_score([0,0,1,1,2,2],[0,0,1,2,2,2]) = 0.4444444444444444
        let ari = adjusted_rand_index(&[0, 0, 1, 1, 2, 2], &[0, 0, 1, 2, 2, 2]);
        assert!((ari - 0.444_444_444_444_444_4).abs() < 1e-12, "{ari}");
    }

    #[test]
    fn seeded_kmeans_finds_separated_blobs_reproducibly() {
        let mut data = Vec::new();
        for c in 0..3 {
            for j in 0..20 {
                data.extend([c as f64 * 10.0 + (j as f64 * 0.1).sin(), c as f64 * -5.0]);
            }
        }
        let (labels, centroids) = kmeans(&data, 2, 3, 3, 7).unwrap();
        assert_eq!(centroids.len(), 6);
        for c in 0..3 {
            let block = &labels[c * 20..(c + 1) * 20];
            assert!(block.iter().all(|&l| l == block[0]));
        }
        assert_eq!(kmeans(&data, 2, 3, 3, 7).unwrap().0, labels);
        assert!(kmeans(&data, 2, 100, 1, 0).is_err());
    }

    #[test]
    fn parquet_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut df = df!("neuron" => [0u32, 1, 2], "sum" => [1.5f64, -2.0, 0.25]).unwrap();
        write_parquet(&mut df, &path).unwrap();
        assert_eq!(read_parquet(&path).unwrap(), df);
        std::fs::write(dir.path().join("bad.parquet"), b"not parquet").unwrap();
        assert!(read_parquet(&dir.path().join("bad.parquet")).is_err());
    }
}
