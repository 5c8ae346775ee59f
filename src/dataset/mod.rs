//! Dataset scale: one idempotent job per video ([`batch`], `xinc batch`, run as a Slurm array by
//! `scripts/slurm/xinc-array.sbatch` or with GNU parallel), writing hive-partitioned Parquet
//! statistics, and lazy polars queries across every video of a dataset ([`query::Stats`],
//! `xinc stats`).
//!
//! This module sits on the findings ([`crate::findings`]): a task keeps their tables, not the
//! canvases, and draws nothing.

pub mod batch;
pub mod query;

pub use batch::{run_task, BatchConfig, ManifestEntry, TaskRecord};
pub use query::Stats;
