//! A fused CPU trainer for the FFN: hand-written forward and backward passes with candle's own
//! `gemm` kernels for the matrix products and Adam applied in place.
//!
//! candle's autograd allocates every intermediate of every step afresh (~15 tensors of P×width),
//! which on the CPU spends most of a step in page faults. This path allocates nothing per step,
//! and it never holds a whole layer's activations: the pixels are cut into groups (one parallel
//! task each) and a group into blocks small enough that a block's forward pass, loss gradient
//! and backward pass run from the cache. Each group sums its own gradients; the groups' sums are
//! added in order, so every result is the same whatever the thread count. It computes exactly
//! what the autograd path computes (the tests check one against the other).

use rayon::prelude::*;

use super::adam::{Adam, AdamParams};
use crate::models::ffn::{FfnConfig, FinalActivation};
use crate::tensor::{matmul_serial, MatRef};

/// Pixels per group: one parallel task, with its own gradient sums. Fixed, so that every sum is
/// taken in the same order whatever the thread count.
const GROUP_ROWS: usize = 1024;
/// Pixels per block: a block's activations and gradients (a few hundred KB at the paper's
/// width) stay in the cache between its forward and backward passes.
const BLOCK_ROWS: usize = 256;

/// Full-batch FFN training state on the CPU.
pub(crate) struct FusedFfn {
    pub(crate) net: Net,
    pixels: usize,
    /// The Fourier features, `[P, 2m]` (fixed: `B` is not trained).
    features: Vec<f32>,
    target: Vec<f32>,
    adam_w: Vec<Adam>,
    adam_b: Vec<Adam>,
    hyper: AdamParams,
    /// One per `GROUP_ROWS` pixels.
    groups: Vec<Group>,
    grad_w: Vec<Vec<f32>>,
    grad_b: Vec<Vec<f32>>,
    steps: usize,
}

/// The network: what a block's passes read, and what Adam updates.
pub(crate) struct Net {
    /// (fan_in, fan_out) of each Linear layer.
    dims: Vec<(usize, usize)>,
    final_act: Option<FinalActivation>,
    /// Per layer, row-major `[fan_out, fan_in]` and `[fan_out]`.
    pub(crate) weights: Vec<Vec<f32>>,
    pub(crate) biases: Vec<Vec<f32>>,
}

/// One group's buffers: the current block's activations and gradients, and the group's sums.
struct Group {
    /// Per layer, the block's outputs `[rows, fan_out]`: after ReLU for hidden layers, before
    /// the final activation for the last.
    acts: Vec<Vec<f32>>,
    grad_z: Vec<f32>,
    grad_a: Vec<f32>,
    grad_w: Vec<Vec<f32>>,
    grad_b: Vec<Vec<f64>>,
    /// Sum of squared errors.
    loss: f64,
}

impl FusedFfn {
    /// `weights`/`biases`: per layer, row-major `[fan_out, fan_in]` and `[fan_out]`.
    pub(crate) fn new(
        config: &FfnConfig,
        features: Vec<f32>,
        target: Vec<f32>,
        weights: Vec<Vec<f32>>,
        biases: Vec<Vec<f32>>,
        hyper: AdamParams,
    ) -> Self {
        let dims: Vec<_> = (0..config.num_layers)
            .map(|i| config.layer_dims(i))
            .collect();
        let p = config.num_pixels();
        let groups = (0..p.div_ceil(GROUP_ROWS))
            .map(|_| Group::new(&dims))
            .collect();
        FusedFfn {
            pixels: p,
            features,
            target,
            adam_w: weights.iter().map(|w| Adam::new(w.len())).collect(),
            adam_b: biases.iter().map(|b| Adam::new(b.len())).collect(),
            grad_w: weights.iter().map(|w| vec![0.0; w.len()]).collect(),
            grad_b: biases.iter().map(|b| vec![0.0; b.len()]).collect(),
            net: Net {
                dims,
                final_act: config.final_act,
                weights,
                biases,
            },
            hyper,
            groups,
            steps: 0,
        }
    }

    /// The prediction after the final activation, `[P, C]`.
    pub(crate) fn predict(&mut self) -> Vec<f32> {
        let net = &self.net;
        let (f0, c) = (net.dims[0].0, net.outputs());
        let features = &self.features;
        let mut out = vec![0.0; self.pixels * c];
        (self.groups.par_iter_mut())
            .zip(out.par_chunks_mut(GROUP_ROWS * c))
            .enumerate()
            .for_each(|(g, (group, out))| {
                for (b, out) in out.chunks_mut(BLOCK_ROWS * c).enumerate() {
                    let (r, rows) = (g * GROUP_ROWS + b * BLOCK_ROWS, out.len() / c);
                    group.forward(net, &features[r * f0..(r + rows) * f0], rows);
                    let z = group.acts.last().expect("at least 2 layers");
                    for (o, &z) in out.iter_mut().zip(z) {
                        *o = activate(net.final_act, z);
                    }
                }
            });
        out
    }

    /// One Adam step on the MSE loss; returns the loss before the step.
    pub(crate) fn step(&mut self) -> f32 {
        let loss = self.gradients();
        self.steps += 1;
        let net = &mut self.net;
        for l in 0..net.dims.len() {
            self.adam_w[l].update(&mut net.weights[l], &self.grad_w[l], self.steps, self.hyper);
            self.adam_b[l].update(&mut net.biases[l], &self.grad_b[l], self.steps, self.hyper);
        }
        loss
    }

    /// Writes the loss's gradients into `grad_w` and `grad_b` and returns the loss.
    fn gradients(&mut self) -> f32 {
        let net = &self.net;
        let (p, f0, c) = (self.pixels, net.dims[0].0, net.outputs());
        let scale = 2.0 / (p * c) as f32;
        let (features, target) = (&self.features, &self.target);
        self.groups
            .par_iter_mut()
            .enumerate()
            .for_each(|(g, group)| {
                group.clear();
                let end = ((g + 1) * GROUP_ROWS).min(p);
                for r in (g * GROUP_ROWS..end).step_by(BLOCK_ROWS) {
                    let rows = BLOCK_ROWS.min(end - r);
                    let x = &features[r * f0..(r + rows) * f0];
                    group.step_block(net, x, &target[r * c..(r + rows) * c], rows, scale);
                }
            });
        for (l, (gw, gb)) in self.grad_w.iter_mut().zip(&mut self.grad_b).enumerate() {
            gw.fill(0.0);
            for group in &self.groups {
                gw.iter_mut()
                    .zip(&group.grad_w[l])
                    .for_each(|(s, v)| *s += v);
            }
            for (j, o) in gb.iter_mut().enumerate() {
                *o = self.groups.iter().fold(0.0f64, |s, g| s + g.grad_b[l][j]) as f32;
            }
        }
        let sq: f64 = self.groups.iter().map(|g| g.loss).sum();
        (sq / (p * c) as f64) as f32
    }
}

impl Net {
    /// The output channels.
    fn outputs(&self) -> usize {
        self.dims.last().expect("at least 2 layers").1
    }
}

impl Group {
    fn new(dims: &[(usize, usize)]) -> Self {
        // dLoss/dZ of every layer's output, and of every input but the features.
        let widest = (dims.iter().map(|&(_, o)| o))
            .chain(dims.iter().skip(1).map(|&(i, _)| i))
            .max()
            .unwrap_or(0);
        Group {
            acts: dims
                .iter()
                .map(|&(_, o)| vec![0.0; BLOCK_ROWS * o])
                .collect(),
            grad_z: vec![0.0; BLOCK_ROWS * widest],
            grad_a: vec![0.0; BLOCK_ROWS * widest],
            grad_w: dims.iter().map(|&(i, o)| vec![0.0; i * o]).collect(),
            grad_b: dims.iter().map(|&(_, o)| vec![0.0; o]).collect(),
            loss: 0.0,
        }
    }

    fn clear(&mut self) {
        self.grad_w.iter_mut().for_each(|g| g.fill(0.0));
        self.grad_b.iter_mut().for_each(|g| g.fill(0.0));
        self.loss = 0.0;
    }

    /// The forward pass of the `rows` pixels whose features are `x`, into `acts`.
    fn forward(&mut self, net: &Net, x: &[f32], rows: usize) {
        let last = net.dims.len() - 1;
        for (l, &(fan_in, fan_out)) in net.dims.iter().enumerate() {
            let (done, rest) = self.acts.split_at_mut(l);
            let input = if l == 0 {
                x
            } else {
                &done[l - 1][..rows * fan_in]
            };
            let out = &mut rest[0][..rows * fan_out];
            matmul_serial(
                out,
                MatRef::row_major(input, rows, fan_in),
                MatRef::row_major(&net.weights[l], fan_out, fan_in).t(),
                false,
            );
            let (bias, relu) = (&net.biases[l], l < last);
            for row in out.chunks_exact_mut(fan_out) {
                for (z, b) in row.iter_mut().zip(bias) {
                    *z += b;
                    if relu {
                        *z = z.max(0.0);
                    }
                }
            }
        }
    }

    /// The forward and backward pass of one block of `rows` pixels (features `x`, target
    /// `target`), its loss and gradients added to the group's sums. `scale`: dLoss/d(error²).
    fn step_block(&mut self, net: &Net, x: &[f32], target: &[f32], rows: usize, scale: f32) {
        self.forward(net, x, rows);
        let last = net.dims.len() - 1;
        let c = net.dims[last].1;
        let Group {
            acts,
            grad_z,
            grad_a,
            grad_w,
            grad_b,
            loss,
        } = self;
        let act = net.final_act;
        for ((g, &z), &t) in grad_z[..rows * c].iter_mut().zip(&acts[last]).zip(target) {
            let y = activate(act, z);
            *loss += ((y - t) as f64).powi(2);
            *g = scale * (y - t) * activation_slope(act, z, y);
        }
        for l in (0..=last).rev() {
            let (fan_in, fan_out) = net.dims[l];
            let input = if l == 0 {
                x
            } else {
                &acts[l - 1][..rows * fan_in]
            };
            let dz = &grad_z[..rows * fan_out];
            matmul_serial(
                &mut grad_w[l],
                MatRef::row_major(dz, rows, fan_out).t(),
                MatRef::row_major(input, rows, fan_in),
                true,
            );
            for row in dz.chunks_exact(fan_out) {
                for (s, &v) in grad_b[l].iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            if l == 0 {
                break;
            }
            // dLoss/dZ of layer l − 1, through its ReLU.
            let da = &mut grad_a[..rows * fan_in];
            matmul_serial(
                da,
                MatRef::row_major(dz, rows, fan_out),
                MatRef::row_major(&net.weights[l], fan_out, fan_in),
                false,
            );
            for (d, &a) in da.iter_mut().zip(input) {
                *d = if a > 0.0 { *d } else { 0.0 };
            }
            std::mem::swap(grad_z, grad_a);
        }
    }
}

fn activate(act: Option<FinalActivation>, z: f32) -> f32 {
    match act {
        None => z,
        Some(FinalActivation::Sigmoid) => 1.0 / (1.0 + (-z).exp()),
        Some(FinalActivation::Tanh) => z.tanh(),
        Some(FinalActivation::Relu) => z.max(0.0),
    }
}

/// dy/dz of the final activation, given z and y = act(z).
fn activation_slope(act: Option<FinalActivation>, z: f32, y: f32) -> f32 {
    match act {
        None => 1.0,
        Some(FinalActivation::Sigmoid) => y * (1.0 - y),
        Some(FinalActivation::Tanh) => 1.0 - y * y,
        Some(FinalActivation::Relu) => f32::from(z > 0.0),
    }
}
