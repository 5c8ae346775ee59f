//! Where the analyses get neuron maps from: [`NeuronMaps`], one signed `[H, W]` contribution map
//! per neuron, produced on demand, and the parallel drivers that stream them.
//!
//! An analysis never asks for a layer's whole canvas. It asks for a per-neuron result
//! ([`per_neuron`]) or a per-pixel sum over neurons ([`per_pixel_sum`]); each worker holds one map
//! at a time. FFN layers are small and come from a [`ContributionMap`] in memory
//! ([`InMemoryMaps`]); NeRV layers are computed kernel by kernel by the fused canvas
//! ([`NervKernelMaps`]), so block 1 (18,352 maps of 128×256) never exists whole.

use std::ops::Range;

use rayon::prelude::*;

use crate::canvas::conservative::nerv::PreparedBlock;
use crate::canvas::nerv::{kernel_map_into, NervBlockData, NervLayer};
use crate::canvas::ContributionMap;
use crate::error::{Result, XincError};

/// A layer's neurons, each with one signed contribution map of `H·W` pixels (row-major).
pub trait NeuronMaps: Sync {
    /// The layer's name (`layer2`, `head`, `block3`, …).
    fn layer(&self) -> &str;
    /// Number of neurons N.
    fn num_neurons(&self) -> usize;
    /// `(H, W)` of every map.
    fn size(&self) -> (usize, usize);
    /// The neuron's ids: `(unit, None)` for a one-axis layer (FFN), `(input channel, Some(output
    /// channel))` for a NeRV kernel. Neuron `n` of a NeRV layer is `input·Cout + output`, the
    /// official flattening.
    fn neuron_id(&self, n: usize) -> (usize, Option<usize>);
    /// Writes neuron `n`'s map into `out` (`H·W` values).
    fn map_into(&self, n: usize, out: &mut [f32]);

    /// Neuron `n`'s map as a new vector.
    fn map(&self, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.num_pixels()];
        self.map_into(n, &mut out);
        out
    }

    /// Neuron `n`'s name ([`neuron_label`]).
    fn neuron_name(&self, n: usize) -> String {
        neuron_label(self.neuron_id(n))
    }

    fn num_pixels(&self) -> usize {
        let (h, w) = self.size();
        h * w
    }
}

/// The name of a neuron with ids [`NeuronMaps::neuron_id`]: `neuron u` (one-axis layers) or
/// `kernel i→k` (NeRV: input channel i, output channel k).
pub fn neuron_label(id: (usize, Option<usize>)) -> String {
    match id {
        (u, None) => format!("neuron {u}"),
        (i, Some(k)) => format!("kernel {i}→{k}"),
    }
}

/// The maps of a [`ContributionMap`] held in memory, one neuron per map (flat index).
pub struct InMemoryMaps<'a> {
    maps: &'a ContributionMap,
}

impl<'a> InMemoryMaps<'a> {
    /// One neuron per map of `maps`. The neuron id is the flat index, or `(unit, channel)` for a
    /// two-axis map (`layer3_rgb`).
    pub fn new(maps: &'a ContributionMap) -> Self {
        InMemoryMaps { maps }
    }
}

impl NeuronMaps for InMemoryMaps<'_> {
    fn layer(&self) -> &str {
        &self.maps.layer
    }

    fn num_neurons(&self) -> usize {
        self.maps.num_maps()
    }

    fn size(&self) -> (usize, usize) {
        (self.maps.height, self.maps.width)
    }

    fn neuron_id(&self, n: usize) -> (usize, Option<usize>) {
        match self.maps.neuron_shape.as_slice() {
            [_, c] => (n / c, Some(n % c)),
            _ => (n, None),
        }
    }

    fn map_into(&self, n: usize, out: &mut [f32]) {
        out.copy_from_slice(self.maps.map(n));
    }
}

/// The kernels of one NeRV layer, maps computed on demand by the fused canvas.
pub struct NervKernelMaps<'a> {
    data: NervBlockData<'a>,
    layer: NervLayer,
    name: String,
    inputs: Range<usize>,
    cout: usize,
    size: (usize, usize),
}

impl<'a> NervKernelMaps<'a> {
    /// The kernels (i, k) of `layer` with i in `inputs`; neuron `(i − inputs.start)·Cout + k`.
    pub fn new(data: NervBlockData<'a>, layer: NervLayer, inputs: Range<usize>) -> Result<Self> {
        data.validate(layer)?;
        if inputs.is_empty() || inputs.end > data.in_channels {
            return Err(XincError::InvalidArgument(format!(
                "NeRV {layer}: input channels {inputs:?} outside 0..{}",
                data.in_channels
            )));
        }
        Ok(NervKernelMaps {
            cout: data.out_channels(),
            size: data.map_size(layer),
            name: layer.to_string(),
            data,
            layer,
            inputs,
        })
    }
}

impl NeuronMaps for NervKernelMaps<'_> {
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
        kernel_map_into(&self.data, self.layer, i, k.unwrap_or(0), out)
            .expect("kernels and map size validated at construction");
    }
}

/// The conservative maps of one NeRV block (summed over the output channels), kernel by kernel
/// from whole-frame coefficients ([`PreparedBlock`]); neuron `(i − inputs.start)·Cout + k`.
impl NeuronMaps for PreparedBlock<'_> {
    fn layer(&self) -> &str {
        self.name()
    }

    fn num_neurons(&self) -> usize {
        self.inputs().len() * self.out_channels()
    }

    fn size(&self) -> (usize, usize) {
        PreparedBlock::size(self)
    }

    fn neuron_id(&self, n: usize) -> (usize, Option<usize>) {
        let k = self.out_channels();
        (self.inputs().start + n / k, Some(n % k))
    }

    fn map_into(&self, n: usize, out: &mut [f32]) {
        let (i, k) = self.neuron_id(n);
        self.kernel_map_into(i, k.unwrap_or(0), 0, out);
    }
}

/// Neurons per parallel task: enough to amortise the scheduling, few enough to balance.
const CHUNK: usize = 16;

/// `f(n, map)` for every neuron, in parallel (one map buffer per task), results in neuron order.
pub fn per_neuron<T, F>(src: &dyn NeuronMaps, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &[f32]) -> T + Sync,
{
    let p = src.num_pixels();
    (0..src.num_neurons())
        .into_par_iter()
        .with_min_len(CHUNK)
        .map_init(
            || vec![0.0f32; p],
            |buf, n| {
                src.map_into(n, buf);
                f(n, buf)
            },
        )
        .collect()
}

/// `Σ_n g(n, map_n)(p)` for every pixel p, in f64: each task adds `g`'s `H·W` values for its
/// neurons into its own buffer (`g` writes them into its second argument), and the partial sums
/// are added in a fixed order, so the result does not depend on the thread count.
pub fn per_pixel_sum<G>(src: &dyn NeuronMaps, g: G) -> Vec<f64>
where
    G: Fn(usize, &[f32], &mut [f32]) + Sync,
{
    let (n, p) = (src.num_neurons(), src.num_pixels());
    let chunks: Vec<Range<usize>> = (0..n)
        .step_by(CHUNK)
        .map(|s| s..(s + CHUNK).min(n))
        .collect();
    let partials: Vec<Vec<f64>> = chunks
        .into_par_iter()
        .map(|range| {
            let (mut map, mut val, mut acc) = (vec![0.0f32; p], vec![0.0f32; p], vec![0.0f64; p]);
            for m in range {
                src.map_into(m, &mut map);
                g(m, &map, &mut val);
                acc.iter_mut()
                    .zip(&val)
                    .for_each(|(a, &v)| *a += f64::from(v));
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f64; p];
    for part in partials {
        total.iter_mut().zip(&part).for_each(|(t, &v)| *t += v);
    }
    total
}

/// `heat(p) = Σ_n |C_n(p)|`, the layer's absolute contribution per pixel (spec B.1).
pub fn abs_heat(src: &dyn NeuronMaps) -> Vec<f64> {
    per_pixel_sum(src, |_, map, out| {
        out.iter_mut().zip(map).for_each(|(o, &v)| *o = v.abs())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> ContributionMap {
        ContributionMap {
            layer: "toy".into(),
            neuron_shape: vec![40],
            height: 2,
            width: 3,
            data: (0..240).map(|v| (v as f32 * 0.7).sin()).collect(),
        }
    }

    #[test]
    fn drivers_visit_every_neuron_in_order() {
        let maps = toy();
        let src = InMemoryMaps::new(&maps);
        let sums = per_neuron(&src, |n, m| (n, m.iter().sum::<f32>()));
        assert_eq!(sums.len(), 40);
        for (n, (idx, s)) in sums.iter().enumerate() {
            assert_eq!(*idx, n);
            assert_eq!(*s, maps.map(n).iter().sum::<f32>());
        }
        let heat = abs_heat(&src);
        for (p, h) in heat.iter().enumerate() {
            let want: f64 = (0..40).map(|n| f64::from(maps.map(n)[p].abs())).sum();
            assert!((h - want).abs() < 1e-12);
        }
    }

    #[test]
    fn nerv_kernels_follow_the_official_flattening() {
        let input: Vec<f32> = (0..2 * 3 * 4).map(|v| (v as f32 * 0.37).sin()).collect();
        let weight: Vec<f32> = (0..8 * 2 * 9).map(|v| (v as f32 * 0.11).cos()).collect();
        let bias = vec![0.1; 8];
        let data = NervBlockData {
            input: &input,
            in_channels: 2,
            height: 3,
            width: 4,
            weight: &weight,
            bias: &bias,
            scale: 2,
            downstream: 0,
        };
        let layer = NervLayer::Block {
            index: 1,
            pre_gelu: false,
        };
        let src = NervKernelMaps::new(data, layer, 1..2).unwrap();
        assert_eq!((src.num_neurons(), src.size()), (8, (6, 8)));
        assert_eq!(src.neuron_id(5), (1, Some(5)));
        let mut buf = vec![0.0; 48];
        src.map_into(5, &mut buf);
        let want = crate::canvas::nerv::kernel_map(&data, layer, 1, 5).unwrap();
        assert_eq!(buf, want);
        assert!(NervKernelMaps::new(data, layer, 1..3).is_err());
    }
}
