//! The ablation job over one layer's neurons: a budget, a progress bar, a checkpoint.
//!
//! The neurons are removed in a seeded random order ([`removal_order`]), so that the first m of
//! them are a uniform sample of the layer and a budget cut (a count, or seconds of this run)
//! leaves a sample, not the first input channels. Every `save_every` seconds (and at the end)
//! the removals so far are written atomically to a [`Checkpoint`]; a later run with the same
//! settings reads it and removes only the neurons not yet done, so a killed job loses at most
//! that interval.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Removal;
use crate::error::{Result, XincError};
use crate::io::files::{read_text, FileLimit};
use crate::io::write_atomic;

/// How much of a layer to remove, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct AblationBudget {
    /// At most this many neurons (of the seeded order); `None`: all.
    pub max_neurons: Option<usize>,
    /// Stop starting batches after this long (this run's time); `None`: no limit.
    pub seconds: Option<f64>,
    /// Neurons removed per batched pass.
    pub batch: usize,
    /// The seed of the removal order.
    pub seed: u64,
    /// Draw a progress bar (on stderr).
    pub progress: bool,
}

impl Default for AblationBudget {
    fn default() -> Self {
        AblationBudget {
            max_neurons: None,
            seconds: None,
            batch: 16,
            seed: 0,
            progress: false,
        }
    }
}

impl AblationBudget {
    /// Checks the settings (a bad setting, before any work).
    pub fn check(&self) -> Result<()> {
        let bad = |flag: &str, why: &str| Err(XincError::InvalidArgument(format!("{flag}: {why}")));
        if self.batch == 0 || self.batch > 4096 {
            return bad("--batch", "must be 1 to 4096 kernels per pass");
        }
        if self.max_neurons == Some(0) {
            return bad("--max-kernels", "must be at least 1");
        }
        match self.seconds {
            Some(s) if !(s.is_finite() && s > 0.0) => {
                bad("--budget-s", "must be a positive number")
            }
            _ => Ok(()),
        }
    }
}

/// The order in which a layer's `n` neurons are removed: a seeded shuffle of `0..n`.
pub fn removal_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// Where a job keeps its removals so far, and the settings they belong to.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    /// The job's settings in words (model, layer, frame, seed, canvases): a checkpoint made
    /// with other settings is refused, not mixed in.
    pub key: String,
    /// Seconds between two saves.
    pub save_every: f64,
}

#[derive(Serialize, Deserialize)]
struct State {
    key: String,
    removals: Vec<Removal>,
}

impl Checkpoint {
    /// The removals a previous run saved (none when there is no checkpoint), each checked to
    /// fit a layer of `neurons` measured by `views` canvases over `objects` objects.
    pub fn load(&self, neurons: usize, (views, objects): (usize, usize)) -> Result<Vec<Removal>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let text = read_text(&self.path, &FileLimit::ABLATION_STATE)?;
        let state: State = serde_json::from_str(&text).map_err(|e| {
            XincError::config(&self.path, format!("not an ablation checkpoint: {e}"))
        })?;
        if state.key != self.key {
            return Err(XincError::config(
                &self.path,
                format!(
                    "this checkpoint belongs to another job ({}), not to {}: remove it, or \
                     rerun with its settings",
                    state.key, self.key
                ),
            ));
        }
        let mut seen = HashSet::new();
        for r in &state.removals {
            let bad = if r.neuron >= neurons || !seen.insert(r.neuron) {
                Some(format!(
                    "neuron {} is outside the layer's {neurons} or repeated",
                    r.neuron
                ))
            } else if r.views.len() != views
                || r.object_drops.len() != objects
                || r.views.iter().any(|v| v.object_abs.len() != objects)
            {
                Some(format!(
                    "neuron {}: {} canvases and {} objects, this job measures {views} and {objects}",
                    r.neuron,
                    r.views.len(),
                    r.object_drops.len()
                ))
            } else {
                None
            };
            if let Some(why) = bad {
                return Err(XincError::config(&self.path, format!("removals: {why}")));
            }
        }
        Ok(state.removals)
    }

    fn save(&self, removals: &[Removal]) -> Result<()> {
        let state = State {
            key: self.key.clone(),
            removals: removals.to_vec(),
        };
        write_atomic(&self.path, |w| {
            serde_json::to_writer(w, &state).map_err(std::io::Error::other)
        })
    }

    /// Removes the checkpoint (once the job's results are written).
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(XincError::io(&self.path, e)),
            _ => Ok(()),
        }
    }

    /// `<out>.ablation-state.json` beside an output path.
    pub fn beside(out: &Path, key: String) -> Checkpoint {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(".ablation-state.json");
        Checkpoint {
            path: out.with_file_name(name),
            key,
            save_every: 30.0,
        }
    }
}

/// Removes the neurons of a layer of `neurons` under `budget`: `remove` measures one batch,
/// each removal with `shape.0` canvases' views over `shape.1` objects. With a checkpoint,
/// resumes from it (its removals checked against that shape) and saves to it. Returns every removal, the resumed ones
/// first, then in removal order.
pub fn run(
    (neurons, shape): (usize, (usize, usize)),
    budget: &AblationBudget,
    checkpoint: Option<&Checkpoint>,
    mut remove: impl FnMut(&[usize]) -> Result<Vec<Removal>>,
) -> Result<Vec<Removal>> {
    budget.check()?;
    let mut removals = match checkpoint {
        Some(c) => c.load(neurons, shape)?,
        None => Vec::new(),
    };
    let done: HashSet<usize> = removals.iter().map(|r| r.neuron).collect();
    let wanted = budget.max_neurons.unwrap_or(neurons).min(neurons);
    let todo: Vec<usize> = removal_order(neurons, budget.seed)
        .into_iter()
        .take(wanted)
        .filter(|n| !done.contains(n))
        .collect();
    if !done.is_empty() {
        tracing::info!(resumed = done.len(), left = todo.len(), "ablation resumed");
    }
    let bar = progress_bar(budget, wanted as u64, (wanted - todo.len()) as u64);
    let start = Instant::now();
    let mut saved = Instant::now();
    let deadline = budget.seconds.map(Duration::from_secs_f64);
    for chunk in todo.chunks(budget.batch) {
        if deadline.is_some_and(|d| start.elapsed() >= d) {
            tracing::info!(
                removed = removals.len(),
                of = wanted,
                "ablation stopped at its time budget"
            );
            break;
        }
        removals.extend(remove(chunk)?);
        bar.inc(chunk.len() as u64);
        if let Some(c) = checkpoint {
            if saved.elapsed().as_secs_f64() >= c.save_every {
                c.save(&removals)?;
                saved = Instant::now();
            }
        }
    }
    bar.finish_and_clear();
    if let Some(c) = checkpoint {
        c.save(&removals)?;
    }
    tracing::info!(
        removed = removals.len(),
        seconds = start.elapsed().as_secs_f64(),
        "ablation done"
    );
    Ok(removals)
}

fn progress_bar(budget: &AblationBudget, len: u64, done: u64) -> ProgressBar {
    if !budget.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_position(done);
    bar.set_style(
        ProgressStyle::with_template(
            "ablating {bar:30} {pos}/{len} kernels [{elapsed_precise}<{eta_precise}]",
        )
        .expect("static template is valid"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::ablation::CanvasView;

    fn fake(n: usize) -> Removal {
        Removal {
            neuron: n,
            psnr_drop: n as f64,
            object_drops: vec![f64::NAN, 1.0],
            views: vec![CanvasView {
                total: 2.0 * n as f64,
                pixel_pearson: f64::NAN,
                object_abs: vec![0.5, 0.25],
            }],
        }
    }

    #[test]
    fn a_budget_takes_a_prefix_of_the_seeded_order() {
        let order = removal_order(50, 7);
        assert_eq!(order.len(), 50);
        assert_ne!(order, (0..50).collect::<Vec<_>>());
        assert_eq!(order, removal_order(50, 7));
        let budget = AblationBudget {
            max_neurons: Some(12),
            batch: 5,
            seed: 7,
            ..Default::default()
        };
        let mut batches = Vec::new();
        let got = run((50, (1, 2)), &budget, None, |c| {
            batches.push(c.len());
            Ok(c.iter().map(|&n| fake(n)).collect())
        })
        .unwrap();
        assert_eq!(batches, [5, 5, 2]);
        let neurons: Vec<usize> = got.iter().map(|r| r.neuron).collect();
        assert_eq!(neurons, order[..12]);
        assert!(AblationBudget {
            batch: 0,
            ..budget.clone()
        }
        .check()
        .is_err());
        assert!(AblationBudget {
            seconds: Some(f64::NAN),
            ..budget
        }
        .check()
        .is_err());
    }

    #[test]
    fn a_killed_job_resumes_from_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.parquet");
        let checkpoint = Checkpoint::beside(&out, "job A".into());
        let budget = AblationBudget {
            batch: 4,
            ..Default::default()
        };
        // The first run dies in its third batch, after a save.
        let mut calls = 0;
        let killed = run(
            (20, (1, 2)),
            &budget,
            Some(&Checkpoint {
                save_every: 0.0,
                ..checkpoint.clone()
            }),
            |c| {
                calls += 1;
                if calls == 3 {
                    return Err(XincError::InvalidArgument("killed".into()));
                }
                Ok(c.iter().map(|&n| fake(n)).collect())
            },
        );
        assert!(killed.is_err());
        let saved = checkpoint.load(20, (1, 2)).unwrap();
        // A checkpoint that does not fit the layer or the canvases is refused.
        assert!(checkpoint.load(5, (1, 2)).is_err());
        assert!(checkpoint.load(20, (2, 2)).is_err());
        assert!(checkpoint.load(20, (1, 3)).is_err());
        assert_eq!(saved.len(), 8);
        assert!(saved[0].object_drops[0].is_nan() && saved[0].views[0].pixel_pearson.is_nan());
        // The second run removes only the other 12.
        let mut again = Vec::new();
        let all = run((20, (1, 2)), &budget, Some(&checkpoint), |c| {
            again.extend_from_slice(c);
            Ok(c.iter().map(|&n| fake(n)).collect())
        })
        .unwrap();
        assert_eq!(again.len(), 12);
        let mut neurons: Vec<usize> = all.iter().map(|r| r.neuron).collect();
        neurons.sort();
        assert_eq!(neurons, (0..20).collect::<Vec<_>>());
        // Another job's checkpoint is refused.
        let other = Checkpoint::beside(&out, "job B".into());
        assert!(other
            .load(20, (1, 2))
            .unwrap_err()
            .to_string()
            .contains("another job"));
        checkpoint.remove().unwrap();
        assert!(!checkpoint.path.exists());
    }
}
