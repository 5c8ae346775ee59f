//! The conservative canvas of an FFN layer: neuron i of layer k (input i of Linear layer k) gets
//! `map[i, c](p) = G_k[p, c, i]·x_i(p) + B_k[p, c]/fan_in`, where
//! - `G_k` is the gradient of output c with respect to x under the rescale rule:
//!   `G_L = W_L`, `G_k = (G_{k+1} ⊙ m_k)·W_k` with `m_k = 1[a_k > 0]` the ReLU multipliers of
//!   the units between Linear k and k + 1 (exact: a_k = m_k·z_k also where z_k = 0);
//! - `B_k` collects the biases from Linear k on: `B_L = b_L`,
//!   `B_k = B_{k+1} + (G_{k+1} ⊙ m_k)·b_k`, split evenly over the fan-in.
//!
//! So `Σ_i map[i, c] = G_k·x + B_k = y_c`, the output before the final activation, exactly. The
//! last layer's maps are the official `layer{L}_rgb`. The gradients are candle GEMMs (two per
//! layer crossed, on the activations' device); the summed maps back-propagate the single probe
//! Σ_c y_c. [`layer_maps`] stays in tensor operations (any device); [`layer_maps_into`] writes
//! the CPU maps directly.

use candle_core::{DType, Tensor, D};
use candle_nn::Module;
use rayon::prelude::*;

use super::layer::FfnLayer;
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnActivations, HiddenActivation};

/// The rescale multipliers `m = a/z` of the units between Linear j and j + 1 (`[t, units]`):
/// `1[a > 0]` for ReLU; `sin(w₀·z)/z` for SIREN's sine (w₀ where z = 0), so that `a = m·z`
/// exactly and no constant is left (both activations vanish at 0).
fn multipliers(model: &Ffn, acts: &FfnActivations, j: usize) -> Result<Tensor> {
    let a = &acts.hidden[j - 1];
    match model.config().activation {
        HiddenActivation::Relu => Ok(a.gt(0.0)?.to_dtype(DType::F32)?),
        act @ HiddenActivation::Sine { .. } => {
            let w0 = act.w0(j - 1);
            let z = model.layers()[j - 1].forward(acts.layer_input(j)?)?;
            let small = z.abs()?.lt(1e-12)?;
            let safe = small.where_cond(&z.ones_like()?, &z)?;
            let limit = (z.zeros_like()? + w0)?;
            Ok(small.where_cond(&limit, &(a / safe)?)?)
        }
    }
}

/// `(G_k, B_k)` for the pixels of `acts`: `[t, R, fan_in]` and `[t, R]`, where the R rows are
/// the output channels, or one row for their sum (`summed`: the probe Σ_c y_c, back-propagated
/// once instead of three times).
fn linearised(
    model: &Ffn,
    acts: &FfnActivations,
    k: usize,
    summed: bool,
) -> Result<(Tensor, Tensor)> {
    let layers = model.layers();
    let l = layers.len();
    if !(1..=l).contains(&k) {
        return Err(XincError::InvalidArgument(format!("FFN has no layer {k}")));
    }
    let t = acts.features.dim(0)?;
    let last = &layers[l - 1];
    let (w, bl) = (last.weight().clone(), bias_of(last, last.weight().dim(0)?)?);
    let (w, bl) = if summed {
        (w.sum_keepdim(0)?, bl.sum_keepdim(0)?)
    } else {
        (w, bl)
    };
    let rows = w.dim(0)?;
    let mut g = w.unsqueeze(0)?.repeat((t, 1, 1))?;
    let mut b = bl.unsqueeze(0)?.repeat((t, 1))?;
    for j in (k..l).rev() {
        let m = multipliers(model, acts, j)?;
        let gm = g.broadcast_mul(&m.unsqueeze(1)?)?;
        let lin = &layers[j - 1];
        let (fan_out, fan_in) = lin.weight().dims2()?;
        let bj = bias_of(lin, fan_out)?.unsqueeze(1)?;
        b = (b + gm.broadcast_matmul(&bj)?.squeeze(D::Minus1)?)?;
        g = gm
            .reshape((t * rows, fan_out))?
            .matmul(lin.weight())?
            .reshape((t, rows, fan_in))?;
    }
    Ok((g, b))
}

fn bias_of(lin: &candle_nn::Linear, n: usize) -> Result<Tensor> {
    Ok(match lin.bias() {
        Some(b) => b.clone(),
        None => Tensor::zeros(n, DType::F32, lin.weight().device())?,
    })
}

/// The conservative maps of `layer` for the pixels of `acts`, `[fan_in, rows, t]` on the
/// activations' device (tensor operations): rows = the output channels (`layer{k}_rgb`) or 1
/// (`layer{k}`, their sum).
pub(super) fn layer_maps(model: &Ffn, acts: &FfnActivations, layer: FfnLayer) -> Result<Tensor> {
    let k = layer.linear_index();
    let x = acts.layer_input(k)?;
    let fan_in = x.dim(1)?;
    let (g, b) = linearised(model, acts, k, matches!(layer, FfnLayer::Summed(_)))?;
    let maps = g
        .broadcast_mul(&x.unsqueeze(1)?)?
        .broadcast_add(&(b / fan_in as f64)?.unsqueeze(2)?)?;
    Ok(maps.permute((2, 1, 0))?.contiguous()?)
}

/// The conservative maps of every pixel of `acts` on the CPU, written into `out`
/// (`[fan_in·rows, P]`): the gradients of `tile` pixels at a time by two GEMMs per layer
/// crossed, then `G·x + B/fan_in` written straight into the map rows, in parallel over neurons.
pub(super) fn layer_maps_into(
    model: &Ffn,
    acts: &FfnActivations,
    layer: FfnLayer,
    tile: usize,
    out: &mut [f32],
) -> Result<()> {
    let k = layer.linear_index();
    let p = acts.features.dim(0)?;
    let tile = tile.max(1);
    for p0 in (0..p).step_by(tile) {
        let t = tile.min(p - p0);
        let sub = acts.narrow(p0, t)?;
        let (g, b) = linearised(model, &sub, k, matches!(layer, FfnLayer::Summed(_)))?;
        let (rows, fan_in) = (g.dim(1)?, g.dim(2)?);
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        let b = b.flatten_all()?.to_vec1::<f32>()?;
        let x = sub.layer_input(k)?.flatten_all()?.to_vec1::<f32>()?;
        let share = 1.0 / fan_in as f32;
        out.par_chunks_mut(rows * p)
            .enumerate()
            .for_each(|(i, unit)| {
                for (r, row) in unit.chunks_exact_mut(p).enumerate() {
                    for (q, d) in row[p0..p0 + t].iter_mut().enumerate() {
                        *d = g[(q * rows + r) * fan_in + i] * x[q * fan_in + i]
                            + b[q * rows + r] * share;
                    }
                }
            });
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Module};

    use super::*;
    use crate::models::ffn::FfnConfig;

    /// A small FFN (width 12, 3 layers, 5×7 image); `bias`·12^i is added to hidden layer i's
    /// bias, enough to keep every ReLU active when one unit is removed.
    pub(in crate::canvas::ffn) fn model(bias: f32) -> Ffn {
        let cfg = FfnConfig::with_width(12, 5, 7);
        let mut t: HashMap<_, _> = cfg
            .init_tensors(7, &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
        for i in 0..cfg.num_layers - 1 {
            let name = format!("net.{i}.linear.bias");
            t.insert(
                name.clone(),
                (t[&name].clone() + f64::from(bias) * 12f64.powi(i as i32)).unwrap(),
            );
        }
        Ffn::from_tensors(cfg, t, "test", &Device::Cpu).unwrap()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    /// With every ReLU active the network is linear, and removing neuron i changes the output by
    /// exactly its map less the common bias share.
    #[test]
    fn single_neuron_ablation_agrees_in_the_linear_regime() {
        let m = model(5.0);
        let acts = m.forward_image(&Device::Cpu).unwrap();
        for a in &acts.hidden {
            assert!(rows(a).iter().flatten().all(|&v| v > 0.0), "not all active");
        }
        let y = rows(&acts.pre_output);
        for k in 1..=3 {
            let x = acts.layer_input(k).unwrap();
            let fan_in = x.dim(1).unwrap();
            let maps = layer_maps(&m, &acts, FfnLayer::PerChannel(k)).unwrap(); // [fan_in, 3, P]
            let maps: Vec<Vec<Vec<f32>>> = maps.to_vec3().unwrap();
            let mut shares: Vec<Vec<Vec<f32>>> = Vec::new();
            for i in 0..fan_in {
                let mask: Vec<f32> = (0..fan_in).map(|j| f32::from(u8::from(j != i))).collect();
                let mut h = x
                    .broadcast_mul(&Tensor::new(mask.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                for (j, lin) in m.layers().iter().enumerate().skip(k - 1) {
                    h = lin.forward(&h).unwrap();
                    if j + 1 < m.layers().len() {
                        h = h.relu().unwrap();
                    }
                }
                let ablated = rows(&h);
                shares.push(
                    (0..3)
                        .map(|c| {
                            (0..35)
                                .map(|p| maps[i][c][p] - (y[p][c] - ablated[p][c]))
                                .collect()
                        })
                        .collect(),
                );
            }
            for c in 0..3 {
                for p in 0..35 {
                    let s0 = shares[0][c][p];
                    for s in &shares {
                        assert!(
                            (s[c][p] - s0).abs() <= 1e-5 * y[p][c].abs().max(1.0),
                            "layer {k}: {} vs {s0}",
                            s[c][p]
                        );
                    }
                }
            }
        }
    }
}
