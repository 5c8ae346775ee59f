//! Pixel regions of a frame ([`Regions`]): the instances of an annotation, the clusters and grid
//! cells of a partition. Below both [`super::objects`] and [`super::partitions`], which build
//! them.

/// Pixel regions of one frame, each a sorted list of row-major pixel indices. Regions may overlap
/// and need not cover the frame (instances, lattices).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Regions {
    pub names: Vec<String>,
    pub pixels: Vec<Vec<u32>>,
}

impl Regions {
    /// The non-empty regions of a label map (`None`: in no region), named `{prefix}_{label}`.
    pub fn from_labels(labels: &[Option<usize>], prefix: &str) -> Self {
        let count = labels.iter().flatten().max().map_or(0, |m| m + 1);
        let mut pixels = vec![Vec::new(); count];
        for (p, l) in labels.iter().enumerate() {
            if let Some(l) = l {
                pixels[*l].push(p as u32);
            }
        }
        let (names, pixels) = pixels
            .into_iter()
            .enumerate()
            .filter(|(_, px)| !px.is_empty())
            .map(|(l, px)| (format!("{prefix}_{l}"), px))
            .unzip();
        Regions { names, pixels }
    }

    /// Adds a region (its pixel indices sorted here).
    pub fn push(&mut self, name: String, mut pixels: Vec<u32>) {
        pixels.sort_unstable();
        self.names.push(name);
        self.pixels.push(pixels);
    }

    pub fn len(&self) -> usize {
        self.pixels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Pixel count of each region.
    pub fn areas(&self) -> Vec<usize> {
        self.pixels.iter().map(Vec::len).collect()
    }

    /// `Σ_{p∈R} value(p)` for every region R, in f64.
    pub fn sums_by(&self, value: impl Fn(usize) -> f64) -> Vec<f64> {
        self.pixels
            .iter()
            .map(|px| px.iter().map(|&p| value(p as usize)).sum())
            .collect()
    }

    /// `Σ_{p∈R} |map(p)|` for every region R.
    pub fn abs_sums(&self, map: &[f32]) -> Vec<f64> {
        self.sums_by(|p| f64::from(map[p].abs()))
    }
}
