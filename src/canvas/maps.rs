//! Map sources: [`NeuronMaps`], one signed `[H, W]` contribution map per neuron of a layer,
//! produced on demand, and [`InMemoryMaps`], the source of a [`ContributionMap`] held in memory.
//!
//! A source owns what it reads (an `Arc` of the maps, or of a NeRV frame's data), so it lives as
//! long as its holder wants, across notebook cells, and is cheap to clone. The FFN's layers come
//! from a [`crate::canvas::Canvas`] ([`crate::canvas::Canvas::maps`]); a NeRV layer is computed
//! kernel by kernel ([`crate::canvas::nerv::NervFrameData::maps`]). The analyses stream the maps
//! through the drivers of [`crate::analysis::source`].

use std::fmt;
use std::sync::Arc;

use super::{Canvas, ContributionMap};

/// A layer's neurons, each with one signed contribution map of `H·W` pixels (row-major).
pub trait NeuronMaps: Send + Sync {
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

    /// The output colour channel that neuron `n`'s map explains, in a per-channel layer
    /// (`layer{k}_rgb`, `block{n}_rgb`, the NeRV `head`); `None` where a map explains the output
    /// summed over its channels.
    fn channel(&self, _n: usize) -> Option<usize> {
        None
    }

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

/// The maps of a [`ContributionMap`] held in memory, one neuron per map (flat index). Owns an
/// `Arc` of the maps: cloning it copies nothing.
#[derive(Clone)]
pub struct InMemoryMaps {
    maps: Arc<ContributionMap>,
}

impl InMemoryMaps {
    /// One neuron per map of `maps` (a `ContributionMap` or an `Arc` of one). The neuron id is
    /// the flat index, or `(unit, channel)` for a two-axis map (`layer3_rgb`).
    pub fn new(maps: impl Into<Arc<ContributionMap>>) -> Self {
        InMemoryMaps { maps: maps.into() }
    }

    /// The maps read.
    pub fn contribution_map(&self) -> &ContributionMap {
        &self.maps
    }
}

impl Canvas {
    /// The layer `name` as an owned map source (shares the maps, copies nothing).
    pub fn maps(&self, name: &str) -> Option<InMemoryMaps> {
        self.layers
            .iter()
            .find(|m| m.layer == name)
            .map(|m| InMemoryMaps::new(Arc::clone(m)))
    }
}

impl fmt::Debug for InMemoryMaps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InMemoryMaps({} {:?})",
            self.maps.layer,
            self.maps.shape()
        )
    }
}

impl NeuronMaps for InMemoryMaps {
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

    /// Per-channel layers are named so: `layer{k}_rgb`, `block{n}_rgb`, or the NeRV `head`;
    /// their last neuron axis is the output channel.
    fn channel(&self, n: usize) -> Option<usize> {
        let name = &self.maps.layer;
        let per_channel = name.ends_with("_rgb") || name == "head";
        self.neuron_id(n).1.filter(|_| per_channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_maps_share_their_data_and_name_their_neurons() {
        let maps = ContributionMap {
            layer: "layer3_rgb".into(),
            neuron_shape: vec![2, 3],
            height: 1,
            width: 2,
            data: (0..12).map(|v| v as f32).collect(),
        };
        let src = InMemoryMaps::new(maps);
        let copy = src.clone();
        assert!(std::ptr::eq(
            src.contribution_map(),
            copy.contribution_map()
        ));
        assert_eq!((src.num_neurons(), src.size()), (6, (1, 2)));
        assert_eq!(src.neuron_id(4), (1, Some(1)));
        assert_eq!(src.map(4), vec![8.0, 9.0]);
        assert_eq!(src.neuron_name(4), "kernel 1→1");
        assert_eq!(src.channel(5), Some(2));
        assert_eq!(format!("{src:?}"), "InMemoryMaps(layer3_rgb [2, 3, 1, 2])");
    }
}
