//! NeRV's input: the positional encoding `pe_B_L` of the frame's time t = i / T.

use super::config::torch_pow_f32;

/// The positional encoding `pe_B_L`: `[sin(t·b_k), cos(t·b_k)]` with `b_k = B^k·π` rounded to f32
/// (the official bases are a float32 tensor) and the products and sines taken in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct PositionalEncoding {
    bases: Vec<f32>,
}

impl PositionalEncoding {
    pub fn new(base: f64, levels: usize) -> Self {
        let pi = std::f32::consts::PI;
        let bases = (0..levels)
            .map(|k| torch_pow_f32(base as f32, k) * pi)
            .collect();
        PositionalEncoding { bases }
    }

    /// The frequencies `B^k·π` as f32.
    pub fn bases(&self) -> &[f32] {
        &self.bases
    }

    /// The `2L` features of time `t`: sines, then cosines.
    pub fn encode(&self, t: f64) -> Vec<f32> {
        let v: Vec<f64> = self.bases.iter().map(|&b| t * b as f64).collect();
        v.iter()
            .map(|x| x.sin() as f32)
            .chain(v.iter().map(|x| x.cos() as f32))
            .collect()
    }
}
