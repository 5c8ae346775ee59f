//! Dataset scale: one idempotent job per video ([`batch`], `xinc batch`, run as a Slurm array by
//! `scripts/slurm/xinc-array.sbatch` or with GNU parallel), writing hive-partitioned Parquet
//! statistics, and lazy polars queries across every video of a dataset ([`stats::Stats`]).
//!
//! This module sits on top of the report: a task keeps the report's tables, not the canvases.

pub mod batch;
pub mod stats;

pub use batch::{read_manifest, run_task, BatchConfig, ManifestEntry, TaskRecord};
pub use stats::Stats;
