//! Dataset-wide queries (`xinc stats`): polars `LazyFrame`s over the hive-partitioned Parquet
//! that [`super::batch`] writes for every video of a dataset, and the paper's headline numbers
//! across videos with confidence intervals over videos.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::analysis::read_parquet;
use crate::error::{Result, XincError};

/// The statistics folder of a batch run.
#[derive(Clone, Debug)]
pub struct Stats {
    root: PathBuf,
}

fn query_error(e: PolarsError) -> XincError {
    XincError::InvalidArgument(format!("dataset query: {e}"))
}

/// z of a two-sided 95 % normal interval.
const Z95: f64 = 1.959_963_984_540_054;

impl Stats {
    pub fn new(root: impl AsRef<Path>) -> Self {
        Stats {
            root: root.as_ref().to_path_buf(),
        }
    }

    /// Every partition's per-neuron statistics, with the hive keys `dataset`, `layer`, `video`
    /// as string columns.
    pub fn scan(root: impl AsRef<Path>) -> Result<LazyFrame> {
        Stats::new(root).table("part-0")
    }

    /// The number of distinct (dataset, video) pairs with per-neuron statistics.
    pub fn video_count(&self) -> Result<usize> {
        let videos = self
            .table("part-0")?
            .select([col("dataset"), col("video")])
            .unique(None, UniqueKeepStrategy::First)
            .collect()
            .map_err(query_error)?;
        Ok(videos.height())
    }

    /// Table `name` of every partition (`part-0` is the per-neuron table; the others are named
    /// as in the report's `stats/`: `object_shares`, `motion`, `partition_variances`, …), as one
    /// lazy frame with the hive keys added as string columns. Partitions that lack a column get
    /// nulls there. Each partition's file is read when the frame is built (they are small: one
    /// table of one video and layer); the query itself then runs lazily.
    pub fn table(&self, name: &str) -> Result<LazyFrame> {
        let file = format!("{name}.parquet");
        let mut parts = Vec::new();
        for dataset in hive_dirs(&self.root, "dataset")? {
            for layer in hive_dirs(&dataset.0, "layer")? {
                for video in hive_dirs(&layer.0, "video")? {
                    let path = video.0.join(&file);
                    if !path.is_file() {
                        continue;
                    }
                    let mut df = read_parquet(&path)?;
                    let height = df.height();
                    for (key, value) in [
                        ("dataset", &dataset.1),
                        ("layer", &layer.1),
                        ("video", &video.1),
                    ] {
                        let column = Column::new_scalar(
                            key.into(),
                            Scalar::from(PlSmallStr::from(value.as_str())),
                            height,
                        );
                        df.with_column(column).map_err(query_error)?;
                    }
                    parts.push(df.lazy());
                }
            }
        }
        if parts.is_empty() {
            return Err(XincError::InvalidArgument(format!(
                "dataset query: no partition of {} holds {file}",
                self.root.display()
            )));
        }
        concat_lf_diagonal(parts, UnionArgs::default()).map_err(query_error)
    }

    /// Per dataset and layer, across videos: the number of videos, and the mean with a 95 %
    /// confidence half-width over videos of each video's dead fraction and median pixels per
    /// live neuron (fraction of the frame, first analysed frame).
    pub fn headline_by_layer(&self) -> Result<DataFrame> {
        let per_video = self
            .table("part-0")?
            .group_by([col("dataset"), col("layer"), col("video")])
            .agg([
                col("dead")
                    .cast(DataType::Float64)
                    .mean()
                    .alias("dead_fraction"),
                col("pixels")
                    .filter(col("dead").not())
                    .cast(DataType::Float64)
                    .median()
                    .alias("median_pixels"),
            ]);
        across_videos(per_video, &["dead_fraction", "median_pixels"])
    }

    /// Per dataset and layer, across videos: the mean Pearson and Spearman correlation of the
    /// contribution change with the flow, with 95 % half-widths over videos.
    pub fn motion_by_layer(&self) -> Result<DataFrame> {
        let per_video = self
            .table("motion")?
            .group_by([col("dataset"), col("layer"), col("video")])
            .agg([col("pearson").mean(), col("spearman").mean()]);
        across_videos(per_video, &["pearson", "spearman"])
    }

    /// The δ-variance ranking of the partitions: per dataset, layer and mode, how many videos
    /// rank each partition lowest (median log std over neurons), and that share.
    pub fn lowest_partition_by_layer(&self) -> Result<DataFrame> {
        let per_video = self
            .table("partition_variances")?
            .group_by([
                col("dataset"),
                col("layer"),
                col("video"),
                col("mode"),
                col("partition"),
            ])
            .agg([col("log_std").median().alias("median_log_std")])
            .sort(["median_log_std"], SortMultipleOptions::default())
            .group_by([col("dataset"), col("layer"), col("video"), col("mode")])
            .agg([col("partition").first().alias("lowest")]);
        let total = col("videos")
            .sum()
            .over([col("dataset"), col("layer"), col("mode")])
            .map_err(query_error)?;
        per_video
            .group_by([col("dataset"), col("layer"), col("mode"), col("lowest")])
            .agg([col("video").count().alias("videos")])
            .with_column(
                (col("videos").cast(DataType::Float64) / total.cast(DataType::Float64))
                    .alias("share"),
            )
            .sort(
                ["dataset", "layer", "mode", "videos"],
                SortMultipleOptions::default()
                    .with_order_descending_multi([false, false, false, true]),
            )
            .collect()
            .map_err(query_error)
    }
}

/// The sub-folders `key=value` of `dir`, sorted by name, as (path, value).
fn hive_dirs(dir: &Path, key: &str) -> Result<Vec<(PathBuf, String)>> {
    let prefix = format!("{key}=");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| XincError::io(dir, e))? {
        let entry = entry.map_err(|e| XincError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(value) = name.strip_prefix(&prefix) else {
            continue;
        };
        if entry
            .file_type()
            .map_err(|e| XincError::io(entry.path(), e))?
            .is_dir()
        {
            out.push((entry.path(), value.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// Mean, standard deviation and 95 % half-width over videos of each `columns` of a per-video
/// frame, per dataset and layer, plus the number of videos.
fn across_videos(per_video: LazyFrame, columns: &[&str]) -> Result<DataFrame> {
    let mut aggs = vec![col("video").count().alias("videos")];
    for c in columns {
        aggs.push(col(*c).mean().alias(format!("{c}_mean")));
        aggs.push(col(*c).std(1).alias(format!("{c}_std")));
    }
    let mut out = per_video.group_by([col("dataset"), col("layer")]).agg(aggs);
    for c in columns {
        out = out.with_column(
            (lit(Z95) * col(format!("{c}_std")) / col("videos").cast(DataType::Float64).sqrt())
                .alias(format!("{c}_ci95")),
        );
    }
    out.sort(["dataset", "layer"], SortMultipleOptions::default())
        .collect()
        .map_err(query_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::write_parquet;

    #[test]
    fn videos_are_counted_once_across_layers() {
        let dir = tempfile::tempdir().unwrap();
        for (dataset, layer, video) in [
            ("city", "head", "0005"),
            ("city", "block3", "0005"),
            ("city", "head", "0006"),
            ("vip", "head", "0005"),
        ] {
            let part = dir
                .path()
                .join(format!("dataset={dataset}/layer={layer}/video={video}"));
            let mut df = df!("dead" => [false, true], "pixels" => [10u32, 0]).unwrap();
            write_parquet(&mut df, &part.join("part-0.parquet")).unwrap();
        }
        let stats = Stats::new(dir.path());
        assert_eq!(stats.video_count().unwrap(), 3);
        let headline = stats.headline_by_layer().unwrap();
        assert_eq!(headline.height(), 3);
        let empty = tempfile::tempdir().unwrap();
        let e = Stats::new(empty.path()).video_count().unwrap_err();
        assert!(e.to_string().contains("no partition"), "{e}");
    }
}
