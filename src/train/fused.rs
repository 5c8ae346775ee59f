//! A fused CPU trainer for the FFN: hand-written forward and backward passes over preallocated
//! buffers, with candle's own `gemm` kernels for the matrix products and Adam applied in place.
//!
//! candle's autograd allocates every intermediate of every step afresh (~15 tensors of P×width),
//! which on the CPU spends most of a step in page faults. This path allocates nothing per step.
//! It computes exactly what the autograd path computes (the tests check one against the other).

use rayon::prelude::*;

use super::adam::{Adam, AdamParams};
use crate::models::ffn::{FfnConfig, FinalActivation};
use crate::tensor::{matmul, MatRef};

/// Rows per parallel chunk of the elementwise and reduction kernels. Fixed, so that every sum
/// is taken in the same order whatever the thread count.
const ROWS_PER_CHUNK: usize = 1024;

/// Full-batch FFN training state on the CPU.
pub(crate) struct FusedFfn {
    /// (fan_in, fan_out) of each Linear layer.
    dims: Vec<(usize, usize)>,
    final_act: Option<FinalActivation>,
    pixels: usize,
    /// The Fourier features, `[P, 2m]` (fixed: `B` is not trained).
    features: Vec<f32>,
    target: Vec<f32>,
    pub(crate) weights: Vec<Vec<f32>>,
    pub(crate) biases: Vec<Vec<f32>>,
    adam_w: Vec<Adam>,
    adam_b: Vec<Adam>,
    hyper: AdamParams,
    /// Layer outputs `[P, fan_out]`: after ReLU for hidden layers, before the final activation
    /// for the last.
    outputs: Vec<Vec<f32>>,
    grad_z: Vec<f32>,
    grad_a: Vec<f32>,
    grad_w: Vec<Vec<f32>>,
    grad_b: Vec<Vec<f32>>,
    steps: usize,
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
        let widest = dims
            .iter()
            .map(|&(_, o)| o)
            .chain(dims.iter().skip(1).map(|&(i, _)| i))
            .max()
            .unwrap_or(0);
        FusedFfn {
            final_act: config.final_act,
            pixels: p,
            features,
            target,
            adam_w: weights.iter().map(|w| Adam::new(w.len())).collect(),
            adam_b: biases.iter().map(|b| Adam::new(b.len())).collect(),
            grad_w: weights.iter().map(|w| vec![0.0; w.len()]).collect(),
            grad_b: biases.iter().map(|b| vec![0.0; b.len()]).collect(),
            weights,
            biases,
            hyper,
            outputs: dims.iter().map(|&(_, o)| vec![0.0; p * o]).collect(),
            grad_z: vec![0.0; p * widest],
            grad_a: vec![0.0; p * widest],
            dims,
            steps: 0,
        }
    }

    fn forward(&mut self) {
        let last = self.dims.len() - 1;
        for (l, &(fan_in, fan_out)) in self.dims.iter().enumerate() {
            let (done, rest) = self.outputs.split_at_mut(l);
            let input = if l == 0 { &self.features } else { &done[l - 1] };
            let out = &mut rest[0];
            matmul(
                out,
                MatRef::row_major(input, self.pixels, fan_in),
                MatRef::row_major(&self.weights[l], fan_out, fan_in).t(),
                false,
            );
            let (bias, relu) = (&self.biases[l], l < last);
            out.par_chunks_mut(fan_out).for_each(|row| {
                for (z, b) in row.iter_mut().zip(bias) {
                    *z += b;
                    if relu {
                        *z = z.max(0.0);
                    }
                }
            });
        }
    }

    /// The prediction after the final activation, `[P, C]`.
    pub(crate) fn predict(&mut self) -> Vec<f32> {
        self.forward();
        let act = self.final_act;
        self.outputs
            .last()
            .expect("at least 2 layers")
            .iter()
            .map(|&z| activate(act, z))
            .collect()
    }

    /// One Adam step on the MSE loss; returns the loss before the step.
    pub(crate) fn step(&mut self) -> f32 {
        self.forward();
        let loss = self.output_gradient();
        for l in (0..self.dims.len()).rev() {
            self.backward_layer(l);
        }
        self.steps += 1;
        for l in 0..self.dims.len() {
            self.adam_w[l].update(
                &mut self.weights[l],
                &self.grad_w[l],
                self.steps,
                self.hyper,
            );
            self.adam_b[l].update(&mut self.biases[l], &self.grad_b[l], self.steps, self.hyper);
        }
        loss
    }

    /// Writes dLoss/dZ of the last layer into `grad_z` and returns the loss.
    fn output_gradient(&mut self) -> f32 {
        let z = self.outputs.last().expect("at least 2 layers");
        let n = z.len();
        let scale = 2.0 / n as f32;
        let act = self.final_act;
        let chunk = ROWS_PER_CHUNK * self.dims.last().expect("layers").1;
        let partial: Vec<f64> = self.grad_z[..n]
            .par_chunks_mut(chunk)
            .zip(z.par_chunks(chunk).zip(self.target.par_chunks(chunk)))
            .map(|(g, (z, t))| {
                let mut sq = 0.0f64;
                for ((g, &z), &t) in g.iter_mut().zip(z).zip(t) {
                    let y = activate(act, z);
                    sq += ((y - t) as f64).powi(2);
                    *g = scale * (y - t) * activation_slope(act, z, y);
                }
                sq
            })
            .collect();
        (partial.iter().sum::<f64>() / n as f64) as f32
    }

    /// Given dLoss/dZ of layer `l` in `grad_z`, computes its weight and bias gradients and, below
    /// the first layer, dLoss/dZ of layer `l − 1` (through its ReLU) back into `grad_z`.
    fn backward_layer(&mut self, l: usize) {
        let (fan_in, fan_out) = self.dims[l];
        let p = self.pixels;
        let input = if l == 0 {
            &self.features
        } else {
            &self.outputs[l - 1]
        };
        let dz = &self.grad_z[..p * fan_out];
        matmul(
            &mut self.grad_w[l],
            MatRef::row_major(dz, p, fan_out).t(),
            MatRef::row_major(input, p, fan_in),
            false,
        );
        column_sums(dz, fan_out, &mut self.grad_b[l]);
        if l == 0 {
            return;
        }
        let da = &mut self.grad_a[..p * fan_in];
        matmul(
            da,
            MatRef::row_major(dz, p, fan_out),
            MatRef::row_major(&self.weights[l], fan_out, fan_in),
            false,
        );
        self.grad_z[..p * fan_in]
            .par_chunks_mut(fan_in)
            .zip(da.par_chunks(fan_in).zip(input.par_chunks(fan_in)))
            .for_each(|(g, (d, a))| {
                for ((g, &d), &a) in g.iter_mut().zip(d).zip(a) {
                    *g = if a > 0.0 { d } else { 0.0 };
                }
            });
    }
}

/// Sums of the columns of a row-major `[rows, cols]` matrix, in a fixed order.
fn column_sums(m: &[f32], cols: usize, out: &mut [f32]) {
    let partial: Vec<Vec<f64>> = m
        .par_chunks(ROWS_PER_CHUNK * cols)
        .map(|chunk| {
            let mut s = vec![0.0f64; cols];
            for row in chunk.chunks_exact(cols) {
                for (s, &v) in s.iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            s
        })
        .collect();
    for (c, o) in out.iter_mut().enumerate() {
        *o = partial.iter().map(|s| s[c]).sum::<f64>() as f32;
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
