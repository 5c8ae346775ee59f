//! Adam as PyTorch applies it (bias-corrected moments, `eps` added to the corrected root), in
//! place over f32 slices: the update of the fused CPU trainers.

use crate::tensor::simd_fn;

/// Adam moments of one parameter vector (PyTorch's update rule).
pub(crate) struct Adam {
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
}

/// Adam hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Adam {
    pub fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// One Adam step (`step` counts from 1) on `param` with its gradient.
    pub fn update(&mut self, param: &mut [f32], grad: &[f32], step: usize, h: AdamParams) {
        let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
        let bc1 = 1.0 - h.beta1.powi(step as i32);
        let bc2_sqrt = (1.0 - h.beta2.powi(step as i32)).sqrt() as f32;
        let step_size = (h.lr / bc1) as f32;
        let eps = h.eps as f32;
        let moments = (&mut self.m[..], &mut self.v[..]);
        adam_update(param, grad, moments, [b1, b2, step_size, bc2_sqrt, eps]);
    }
}

simd_fn! {
    /// `param −= step·m / (√v / √bc₂ + eps)` after the moments take `grad`; `h` holds
    /// `[β₁, β₂, step, √bc₂, eps]`.
    fn adam_update(param: &mut [f32], grad: &[f32], moments: (&mut [f32], &mut [f32]), h: [f32; 5]) {
        let [b1, b2, step_size, bc2_sqrt, eps] = h;
        let moments = moments.0.iter_mut().zip(moments.1.iter_mut());
        for ((p, g), (m, v)) in param.iter_mut().zip(grad).zip(moments) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
        }
    }
}
