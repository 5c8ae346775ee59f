//! The conservative canvas: every layer's maps sum exactly to the model's output, pixel by pixel
//! and channel by channel ([`crate::canvas::Method::Conservative`]).
//!
//! The official canvas (spec A) is a heuristic: it splits each bias evenly, applies the
//! activation to each neuron's share, and stands in 3×3 box filters for the NeRV layers after the
//! analysed one. Here a neuron's contribution is instead carried to the output RGB through the
//! real downstream network — its real convolutions or linear layers, the real PixelShuffle, and
//! the real activations — linearised at the frame by the **rescale rule** (DeepLIFT-rescale with a
//! zero reference, LRP-z): a unit with pre-activation z and output σ(z) passes on the share
//! σ(z)/z of whatever reaches z. For ReLU that multiplier is 1[z > 0]; for the exact GELU
//! z·Φ(z) it is Φ(z) itself, so the z → 0 limit (Φ(0) = ½) needs no special case. With the
//! multipliers fixed the network is linear, and the output is exactly
//! `y = Σ_neurons J·x_neuron + B`, where B collects the biases.
//!
//! **Bias treatment.** The analysed layer's own bias is split evenly over the fan-in of each
//! unit, as the official code does (`b[k]/Cin` goes with each kernel (i, k) of a NeRV block, and
//! `b[j]/fan_in` with each FFN input), and is carried downstream with that share. The biases of
//! the later layers, carried to the output by the same linearisation (the *downstream-bias map*
//! B_down, `[3, H, W]`), are split evenly over the layer's N neurons. So every map equals
//! `J·(neuron's share of the layer's pre-activation) + B_down/N`, and the N maps sum to the
//! output with no remainder. Two consequences:
//! - for the last layer (FFN `layer{L}_rgb`, NeRV `head`) there is nothing downstream, and the
//!   conservative maps *are* the official ones;
//! - a neuron that never fires still carries the constant `B_down/N`, as the official last layer
//!   carries `b/fan_in` (spec A.2, "oddity"); the downstream-bias map is reported on its own for
//!   users who prefer an explicit bias neuron.
//!
//! [`ffn`] computes FFN layers with candle tensor operations (any device); [`nerv`] computes NeRV
//! blocks on the CPU by exact local back-propagation of the linearised network from every output
//! pixel to the block's output, streamed over bands of output rows.

pub mod ffn;
pub mod nerv;

/// Which output channels a conservative map explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The sum over the output channels (the summed map, what the analyses read).
    Sum,
    /// One output channel.
    Channel(usize),
}

impl Probe {
    /// The weights of the output channels, `[dim_out]`.
    pub fn weights(self, dim_out: usize) -> Vec<f32> {
        (0..dim_out)
            .map(|c| match self {
                Probe::Sum => 1.0,
                Probe::Channel(k) => f32::from(u8::from(k == c)),
            })
            .collect()
    }
}
