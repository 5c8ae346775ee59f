//! The layers of the FFN canvas: their names (`layer{k}`, `layer{k}_rgb`), which ones a model has
//! under each [`Method`], and their neuron shapes.

use std::fmt;
use std::str::FromStr;

use crate::canvas::{unknown_layer, Method};
use crate::error::{Result, XincError};
use crate::models::ffn::FfnConfig;

/// One layer of the FFN canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FfnLayer {
    /// The inputs of Linear layer k (1-based), each summed over the layer's outputs: `layer{k}`.
    Summed(usize),
    /// The inputs of the last Linear layer, one map per output channel: `layer{L}_rgb`.
    PerChannel(usize),
}

impl fmt::Display for FfnLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FfnLayer::Summed(k) => write!(f, "layer{k}"),
            FfnLayer::PerChannel(k) => write!(f, "layer{k}_rgb"),
        }
    }
}

impl FromStr for FfnLayer {
    type Err = XincError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            XincError::InvalidArgument(format!(
                "`{s}` is not an FFN layer name (layer<k> or layer<k>_rgb)"
            ))
        };
        let rest = s.strip_prefix("layer").ok_or_else(bad)?;
        let (digits, per_channel) = match rest.strip_suffix("_rgb") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        let k: usize = digits.parse().map_err(|_| bad())?;
        Ok(if per_channel {
            FfnLayer::PerChannel(k)
        } else {
            FfnLayer::Summed(k)
        })
    }
}

impl FfnLayer {
    /// Every layer of a model under `method`: `layer1..layerL`, then the per-channel layers
    /// (the last one only for the official canvas; every one for the conservative canvas).
    pub fn all(config: &FfnConfig, method: Method) -> Vec<FfnLayer> {
        let l = config.num_layers;
        let mut v: Vec<_> = (1..=l).map(FfnLayer::Summed).collect();
        let first_rgb = if method == Method::Official { l } else { 1 };
        v.extend((first_rgb..=l).map(FfnLayer::PerChannel));
        v
    }

    /// Parses a comma-separated list and checks each name against the model and `method`.
    pub fn parse_list(list: &str, config: &FfnConfig, method: Method) -> Result<Vec<FfnLayer>> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| FfnLayer::from_str(s).and_then(|l| l.check(config, method)))
            .collect()
    }

    /// Checks the layer against the model and `method`: per-channel maps exist for the last
    /// layer under the official method, for every layer under the conservative one.
    pub fn check(self, config: &FfnConfig, method: Method) -> Result<Self> {
        if FfnLayer::all(config, method).contains(&self) {
            Ok(self)
        } else {
            let known: Vec<String> = FfnLayer::all(config, method)
                .iter()
                .map(|l| l.to_string())
                .collect();
            Err(unknown_layer(&self.to_string(), &known))
        }
    }

    /// The Linear layer (1-based) whose inputs are this layer's neurons.
    pub fn linear_index(&self) -> usize {
        match *self {
            FfnLayer::Summed(k) | FfnLayer::PerChannel(k) => k,
        }
    }

    /// `[fan_in]` or `[fan_in, dim_out]`.
    pub fn neuron_shape(&self, config: &FfnConfig) -> Vec<usize> {
        let fan_in = config.layer_dims(self.linear_index() - 1).0;
        match self {
            FfnLayer::Summed(_) => vec![fan_in],
            FfnLayer::PerChannel(_) => vec![fan_in, config.dim_out],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_round_trip_and_are_checked() {
        let cfg = FfnConfig::paper(8, 8);
        let all = FfnLayer::all(&cfg, Method::Official);
        let names: Vec<String> = all.iter().map(|l| l.to_string()).collect();
        assert_eq!(names, ["layer1", "layer2", "layer3", "layer3_rgb"]);
        assert_eq!(
            FfnLayer::parse_list("layer3_rgb, layer1", &cfg, Method::Official).unwrap(),
            vec![all[3], all[0]]
        );
        assert!(FfnLayer::parse_list("layer4", &cfg, Method::Official).is_err());
        assert!(FfnLayer::parse_list("layer2_rgb", &cfg, Method::Official).is_err());
        assert!(FfnLayer::parse_list("conv1", &cfg, Method::Official).is_err());
    }
}
