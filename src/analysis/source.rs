//! How the analyses read neuron maps: the parallel drivers that stream a [`NeuronMaps`] source
//! (the sources themselves live in [`crate::canvas::maps`]).
//!
//! An analysis never asks for a layer's whole canvas. It asks for a per-neuron result
//! ([`per_neuron`]) or a per-pixel sum over neurons ([`per_pixel_sum`]); each worker holds one map
//! at a time. FFN layers are small and come from a canvas in memory
//! ([`crate::canvas::maps::InMemoryMaps`]); NeRV layers are computed kernel by kernel
//! ([`crate::canvas::nerv::NervFrameData::maps`]), so block 1 (18,352 maps of 128×256) never
//! exists whole.

use std::ops::Range;

use rayon::prelude::*;

use crate::canvas::maps::NeuronMaps;

/// Neurons per parallel task: enough to amortise the scheduling, few enough to balance.
const CHUNK: usize = 16;

/// `f(n, map)` for every neuron, in parallel (one map buffer per task), results in neuron order.
pub(crate) fn per_neuron<T, F>(src: &dyn NeuronMaps, f: F) -> Vec<T>
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
pub(crate) fn per_pixel_sum<G>(src: &dyn NeuronMaps, g: G) -> Vec<f64>
where
    G: Fn(usize, &[f32], &mut [f32]) + Sync,
{
    ordered_sum(src, src.num_pixels(), |m, map, val, acc| {
        g(m, map, val);
        acc.iter_mut()
            .zip(val.iter())
            .for_each(|(a, &v)| *a += f64::from(v));
    })
}

/// `Σ_n C_n(p)` per output channel, in f64: `channels·H·W` values, channel-major. Neuron n is
/// added to channel [`NeuronMaps::channel`] (channel 0 where a layer's maps explain the output
/// summed over its channels: pass `channels = 1` for those). Summed in a fixed order, as
/// [`per_pixel_sum`].
pub(crate) fn per_channel_sum(src: &dyn NeuronMaps, channels: usize) -> Vec<f64> {
    let p = src.num_pixels();
    ordered_sum(src, channels * p, |m, map, _, acc| {
        let c = src.channel(m).unwrap_or(0).min(channels.max(1) - 1);
        acc[c * p..][..p]
            .iter_mut()
            .zip(map)
            .for_each(|(a, &v)| *a += f64::from(v));
    })
}

/// The `len` sums that `add(n, map_n, scratch, sums)` accumulates over every neuron: neurons in
/// chunks, one partial sum per chunk, partials added in chunk order.
fn ordered_sum<F>(src: &dyn NeuronMaps, len: usize, add: F) -> Vec<f64>
where
    F: Fn(usize, &[f32], &mut [f32], &mut [f64]) + Sync,
{
    let (n, p) = (src.num_neurons(), src.num_pixels());
    let chunks: Vec<Range<usize>> = (0..n)
        .step_by(CHUNK)
        .map(|s| s..(s + CHUNK).min(n))
        .collect();
    let partials: Vec<Vec<f64>> = chunks
        .into_par_iter()
        .map(|range| {
            let (mut map, mut scratch, mut acc) =
                (vec![0.0f32; p], vec![0.0f32; p], vec![0.0f64; len]);
            for m in range {
                src.map_into(m, &mut map);
                add(m, &map, &mut scratch, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f64; len];
    for part in partials {
        total.iter_mut().zip(&part).for_each(|(t, &v)| *t += v);
    }
    total
}

/// `heat(p) = Σ_n |C_n(p)|`, the layer's absolute contribution per pixel (spec B.1).
pub(crate) fn abs_heat(src: &dyn NeuronMaps) -> Vec<f64> {
    per_pixel_sum(src, |_, map, out| {
        out.iter_mut().zip(map).for_each(|(o, &v)| *o = v.abs())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canvas::maps::InMemoryMaps;
    use crate::canvas::ContributionMap;

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
        let src = InMemoryMaps::new(maps.clone());
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
    fn channel_sums_follow_each_neurons_channel() {
        // 40 maps as 20 units × 2 channels of a per-channel layer.
        let maps = ContributionMap {
            layer: "layer1_rgb".into(),
            neuron_shape: vec![20, 2],
            ..toy()
        };
        let src = InMemoryMaps::new(maps.clone());
        let sums = per_channel_sum(&src, 2);
        assert_eq!(sums.len(), 2 * 6);
        for c in 0..2 {
            for p in 0..6 {
                let want: f64 = (0..20).map(|u| f64::from(maps.map(u * 2 + c)[p])).sum();
                assert!((sums[c * 6 + p] - want).abs() < 1e-12);
            }
        }
        // A summed layer puts every neuron in channel 0: the per-pixel sum.
        let summed = InMemoryMaps::new(toy());
        let plain = per_pixel_sum(&summed, |_, m, out| out.copy_from_slice(m));
        assert_eq!(per_channel_sum(&summed, 1), plain);
    }
}
