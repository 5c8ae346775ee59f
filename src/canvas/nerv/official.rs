//! The official NeRV canvas (spec A.7–A.12), computed kernel by kernel from plain data. The maps
//! of kernel (i, k), from its plane `P[i, k]` ([`NervBlockData::plane`]), are
//! - head (`head`): `P[i, c]` itself, shape `[Cin, 3, H, W]`; exact: Σ_i gives the head output
//!   before OutImg;
//! - block pre-GELU (`block{n}_pre_gelu`): `P[i, k]` placed on its PixelShuffle phase
//!   `k % s²` at (h·s, w·s), zero elsewhere; exact: GELU of the sum over i and the s² phases of
//!   output channel c gives the next block's input, channel c;
//! - block output (`block{n}`): `box3(GELU(placed))`, then for every simulated downstream block
//!   `box3(GELU(up2(·)))`, ending at the frame resolution.
//!
//! Since GELU(0) = 0, a placed map is zero off its phase lattice, so every map is a function of
//! the one h×w plane `P[i, k]`; nothing here ever holds a `[Cin, Cout, H, W]` canvas unless asked
//! to ([`nerv_layer_maps`]). [`nerv_layer_summary`] streams the kernels in parallel over output
//! channels; each kernel's map is computed by the fused path of `fused` (low-resolution GELUs,
//! full-resolution rows expanded one at a time and reduced on the fly).
//! [`nerv_layer_summaries`] does the same for a block's output and pre-GELU layers at once,
//! computing each kernel's conv plane once for both. `reference` keeps the
//! literal step-by-step computation that the fused path is tested against; `gelu` has the exact
//! GELU in f64 (reference) and vectorised f32 (fused). [`NervKernelMaps`] hands a layer's kernels
//! to the analyses one map at a time.
//!
//! The layer-level functions take a [`NervBlockData`], not a frame: the golden tests feed them the
//! official code's own layer data. Users call the driver ([`super::nerv_canvas_summary`],
//! [`super::write_nerv_canvas`], [`NervFrameData::maps`]).

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::fused::{fused_kernel_map_into, output_channel_sums};
use super::layer::{NervBlockData, NervFrameData, NervLayer};
use crate::canvas::maps::NeuronMaps;
use crate::canvas::{ContributionMap, LayerSummary};
use crate::error::{Result, XincError};
use crate::tensor::{unwritten_buffer, zeroed_buffer};

/// The map of kernel (input channel `i`, conv output channel `k`) of `layer`, `[H, W]` with
/// `(H, W)` = [`NervBlockData::map_size`]. For the head, `k` is the RGB channel.
#[doc(hidden)]
pub fn kernel_map(data: &NervBlockData, layer: NervLayer, i: usize, k: usize) -> Result<Vec<f32>> {
    let (h, w) = data.map_size(layer);
    let mut out = vec![0.0; h * w];
    kernel_map_into(data, layer, i, k, &mut out)?;
    Ok(out)
}

/// [`kernel_map`] written into `out`, which must hold exactly the map's `H·W` values.
pub(crate) fn kernel_map_into(
    data: &NervBlockData,
    layer: NervLayer,
    i: usize,
    k: usize,
    out: &mut [f32],
) -> Result<()> {
    data.check_kernels(layer, &(i..i + 1))?;
    let (h, w) = data.map_size(layer);
    if k >= data.out_channels() || out.len() != h * w {
        return Err(XincError::InvalidArgument(format!(
            "NeRV {layer}: output channel {k} out of 0..{}, or a buffer of {} values for a {h}×{w} map",
            data.out_channels(),
            out.len()
        )));
    }
    fused_kernel_map_into(data, layer, i, k, out);
    Ok(())
}

/// The reductions of `layer`'s canvas restricted to the input channels `inputs`, neuron shape
/// `[inputs.len(), Cout]`: `sum_hw` / `abssum_hw` per kernel, and `sum_neurons` = the sum over
/// the input channels, `[Cout, H, W]` (for the head: the head output before OutImg when
/// `inputs` covers every channel). The kernels are streamed in parallel over output channels,
/// each summed over its inputs in a fixed order (deterministic for any thread count); memory is
/// one map per thread plus the result. See [`sum_over_kernels`] for the `[H, W]` total.
#[doc(hidden)]
pub fn nerv_layer_summary(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
) -> Result<LayerSummary> {
    let mut one = nerv_layer_summaries(data, &[layer], inputs)?;
    Ok(one.remove(0))
}

/// [`nerv_layer_summary`] of several layers of the same block data in one pass, in the order
/// of `layers`: a block's output maps and its pre-GELU maps come from the same conv planes,
/// which are computed once per kernel for both.
#[doc(hidden)]
pub fn nerv_layer_summaries(
    data: &NervBlockData,
    layers: &[NervLayer],
    inputs: Range<usize>,
) -> Result<Vec<LayerSummary>> {
    for &layer in layers {
        data.check_kernels(layer, &inputs)?;
    }
    let cout = data.out_channels();
    let sizes: Vec<(usize, usize)> = layers.iter().map(|&l| data.map_size(l)).collect();
    // Written in full by the workers, so never zeroed first (zeroing on the calling thread
    // took 10–15 % of block 2's call: measured).
    let mut sum_neurons: Vec<Vec<f32>> = sizes
        .iter()
        .map(|&(h, w)| unwritten_buffer(cout * h * w))
        .collect();
    // Output channel k's slice of every layer's `sum_neurons`.
    let mut dsts: Vec<Vec<&mut [MaybeUninit<f32>]>> = (0..cout).map(|_| Vec::new()).collect();
    for (buf, &(h, w)) in sum_neurons.iter_mut().zip(&sizes) {
        let spare = &mut buf.spare_capacity_mut()[..cout * h * w];
        for (d, chunk) in dsts.iter_mut().zip(spare.chunks_exact_mut(h * w)) {
            d.push(chunk);
        }
    }
    let per_k: Vec<Vec<Vec<(f64, f64)>>> = dsts
        .into_par_iter()
        .enumerate()
        .map(|(k, mut dst)| output_channel_sums(data, layers, inputs.clone(), k, &mut dst))
        .collect();
    for (buf, &(h, w)) in sum_neurons.iter_mut().zip(&sizes) {
        // SAFETY: the capacity holds `cout·h·w` values, and `output_channel_sums` wrote every
        // value of each output channel's slice of them.
        unsafe { buf.set_len(cout * h * w) };
    }
    let n = inputs.len();
    Ok(layers
        .iter()
        .zip(sum_neurons)
        .zip(&sizes)
        .enumerate()
        .map(|(l, ((&layer, sum_neurons), &(height, width)))| {
            let (mut sum_hw, mut abssum_hw) = (vec![0.0; n * cout], vec![0.0; n * cout]);
            for (k, per_layer) in per_k.iter().enumerate() {
                for (m, &(s, a)) in per_layer[l].iter().enumerate() {
                    sum_hw[m * cout + k] = s as f32;
                    abssum_hw[m * cout + k] = a as f32;
                }
            }
            LayerSummary {
                layer: layer.to_string(),
                neuron_shape: vec![n, cout],
                height,
                width,
                sum_hw,
                abssum_hw,
                sum_neurons,
            }
        })
        .collect())
}

/// The sum of a layer's maps over all its kernels, `[H, W]`: `summary.sum_neurons`
/// (`[Cout, H, W]`) summed over the output channels, in f64.
#[doc(hidden)]
pub fn sum_over_kernels(summary: &LayerSummary) -> Vec<f32> {
    let p = summary.height * summary.width;
    let mut acc = vec![0.0f64; p];
    for plane in summary.sum_neurons.chunks_exact(p) {
        for (a, &v) in acc.iter_mut().zip(plane) {
            *a += v as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// The full maps of `layer` for the input channels `inputs`, `[inputs.len(), Cout, H, W]`
/// (neuron index `(i − inputs.start)·Cout + k`). Block 1's full canvas is 2.4 GB: prefer
/// [`nerv_layer_summary`], or a few input channels at a time.
#[doc(hidden)]
pub fn nerv_layer_maps(
    data: &NervBlockData,
    layer: NervLayer,
    inputs: Range<usize>,
) -> Result<ContributionMap> {
    data.check_kernels(layer, &inputs)?;
    let (cout, (h, w)) = (data.out_channels(), data.map_size(layer));
    let mut out = zeroed_buffer(inputs.len() * cout * h * w);
    out.par_chunks_mut(h * w).enumerate().for_each(|(m, dst)| {
        fused_kernel_map_into(data, layer, inputs.start + m / cout, m % cout, dst);
    });
    Ok(ContributionMap {
        layer: layer.to_string(),
        neuron_shape: vec![inputs.len(), cout],
        height: h,
        width: w,
        data: out,
    })
}

/// The official kernels of one NeRV layer of a frame, maps computed on demand by the fused
/// canvas; neuron `(i − inputs.start)·Cout + k` is kernel (i, k).
#[derive(Clone)]
pub(crate) struct NervKernelMaps {
    frame: NervFrameData,
    layer: NervLayer,
    name: String,
    inputs: Range<usize>,
    cout: usize,
    size: (usize, usize),
}

impl NervKernelMaps {
    /// The kernels (i, k) of `layer` with i in `inputs`.
    pub(crate) fn new(
        frame: NervFrameData,
        layer: NervLayer,
        inputs: Range<usize>,
    ) -> Result<Self> {
        let data = frame.layer(layer)?;
        if inputs.is_empty() {
            return Err(XincError::InvalidArgument(format!(
                "NeRV {layer}: no input channels in {inputs:?}"
            )));
        }
        data.check_kernels(layer, &inputs)?;
        let (cout, size) = (data.out_channels(), data.map_size(layer));
        Ok(NervKernelMaps {
            cout,
            size,
            name: layer.to_string(),
            frame,
            layer,
            inputs,
        })
    }
}

impl fmt::Debug for NervKernelMaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NervKernelMaps({}, inputs {:?} × {} outputs, {}×{})",
            self.name, self.inputs, self.cout, self.size.0, self.size.1
        )
    }
}

impl NeuronMaps for NervKernelMaps {
    fn layer(&self) -> &str {
        &self.name
    }

    fn num_neurons(&self) -> usize {
        self.inputs.len() * self.cout
    }

    fn size(&self) -> (usize, usize) {
        self.size
    }

    fn neuron_id(&self, n: usize) -> (usize, Option<usize>) {
        (self.inputs.start + n / self.cout, Some(n % self.cout))
    }

    fn map_into(&self, n: usize, out: &mut [f32]) {
        let (i, k) = self.neuron_id(n);
        let data = self
            .frame
            .layer(self.layer)
            .expect("layer checked at construction");
        kernel_map_into(&data, self.layer, i, k.unwrap_or(0), out)
            .expect("kernels and map size validated at construction");
    }

    /// The head's kernel (i, k) writes output channel k.
    fn channel(&self, n: usize) -> Option<usize> {
        (self.layer == NervLayer::Head).then_some(n % self.cout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_full_maps_and_checks_arguments() {
        let input: Vec<f32> = (0..2 * 3 * 4).map(|v| (v as f32 * 0.37).sin()).collect();
        let weight: Vec<f32> = (0..8 * 2 * 9)
            .map(|v| (v as f32 * 0.11).cos() * 0.3)
            .collect();
        let bias: Vec<f32> = (0..8).map(|v| v as f32 * 0.01).collect();
        let data = NervBlockData {
            input: &input,
            in_channels: 2,
            height: 3,
            width: 4,
            weight: &weight,
            bias: &bias,
            scale: 2,
            downstream: 1,
        };
        for layer in [
            NervLayer::Block {
                index: 2,
                pre_gelu: false,
            },
            NervLayer::Block {
                index: 2,
                pre_gelu: true,
            },
        ] {
            let full = nerv_layer_maps(&data, layer, 0..2).unwrap().summarise();
            let streamed = nerv_layer_summary(&data, layer, 0..2).unwrap();
            assert_eq!(full.neuron_shape, streamed.neuron_shape);
            for (a, b) in full.sum_hw.iter().zip(&streamed.sum_hw) {
                assert!((a - b).abs() < 1e-5);
            }
            for (a, b) in full.sum_neurons.iter().zip(&streamed.sum_neurons) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        assert_eq!(data.map_size(NervLayer::block(2)), (12, 16));
        assert!(kernel_map(&data, NervLayer::Head, 0, 0).is_err());
        let pre_gelu = NervLayer::Block {
            index: 2,
            pre_gelu: true,
        };
        // Input channel 2 of 2, output channel 8 of 8: out of range.
        assert!(kernel_map(&data, pre_gelu, 2, 0).is_err());
        assert!(kernel_map(&data, pre_gelu, 0, 8).is_err());
        assert!(nerv_layer_summary(&data, NervLayer::PerChannel(2), 0..2).is_err());
    }
}
