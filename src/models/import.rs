//! Import of official checkpoints: PyTorch / Lightning files (read without executing pickle code)
//! or safetensors files with the official names, plus the official Hydra `exp_config.yaml`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_norway::Value;

use super::ffn::{FfnConfig, FinalActivation};
use crate::error::{Result, XincError};

/// The container format of a weights file, told from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    /// A `torch.save` zip archive (`.pth`, Lightning `.ckpt`).
    TorchZip,
    /// A safetensors file.
    Safetensors,
}

/// Tells a torch zip archive from a safetensors file by content, not by extension.
pub fn sniff_format(path: &Path) -> Result<WeightsFormat> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(path).map_err(|e| XincError::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| XincError::io(path, e))?;
    if n >= 4 && head[..4] == *b"PK\x03\x04" {
        Ok(WeightsFormat::TorchZip)
    } else if n == 9 && head[8] == b'{' {
        Ok(WeightsFormat::Safetensors)
    } else {
        Err(XincError::checkpoint(
            path,
            "neither a torch.save zip archive nor a safetensors file (legacy pre-1.6 torch files are not supported)",
        ))
    }
}

/// Reads every tensor of an official weights file onto `device`, with the Lightning `model.`
/// prefix (and DataParallel `module.` prefix) stripped. For torch files the `state_dict` entry
/// is used when present.
pub fn read_official_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let named: Vec<(String, Tensor)> = match sniff_format(path)? {
        WeightsFormat::TorchZip => crate::io::torch::read_torch_tensors(path, None)?,
        WeightsFormat::Safetensors => crate::io::load_safetensors(path, device)?
            .into_iter()
            .collect(),
    };
    named
        .into_iter()
        .map(|(k, t)| Ok((strip_prefixes(&k).to_string(), t.to_device(device)?)))
        .collect()
}

/// Reads an official NeRV weights file (`model_best.pth` holds `{epoch, state_dict, optimizer}`):
/// as [`read_official_tensors`], with the `blocks.0.` infix of HNeRV's wrapped blocks removed, as
/// the official loader does.
pub fn read_nerv_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    Ok(read_official_tensors(path, device)?
        .into_iter()
        .map(|(k, t)| (k.replace("blocks.0.", ""), t))
        .collect())
}

fn strip_prefixes(key: &str) -> &str {
    let mut k = key;
    for prefix in ["module.", "model."] {
        k = k.strip_prefix(prefix).unwrap_or(k);
    }
    k
}

/// Reads the FFN architecture and image shape from an official `exp_config.yaml`.
pub fn ffn_config_from_yaml(path: &Path) -> Result<FfnConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| XincError::io(path, e))?;
    let root: Value =
        serde_norway::from_str(&text).map_err(|e| XincError::config(path, e.to_string()))?;
    let yaml = YamlDoc { path, root: &root };
    let model_name = yaml.string("network.model_name")?;
    if model_name != "ffn" {
        return Err(XincError::config(
            path,
            format!("network.model_name is `{model_name}`, expected `ffn`"),
        ));
    }
    let encoding = yaml.string("network.pos_encoding.type")?;
    if encoding != "fourier" {
        return Err(XincError::config(
            path,
            format!("network.pos_encoding.type `{encoding}` is not supported (only `fourier`)"),
        ));
    }
    let activation = yaml.string("network.activation")?;
    if activation != "relu" {
        return Err(XincError::config(
            path,
            format!("network.activation `{activation}` is not supported (only `relu`)"),
        ));
    }
    let layer_size = yaml.usize("network.layer_size")?;
    let shape = yaml.usize_list("data.data_shape")?;
    let [height, width] = shape[..] else {
        return Err(XincError::config(
            path,
            format!("data.data_shape must be [H, W], got {shape:?}"),
        ));
    };
    Ok(FfnConfig {
        dim_in: yaml.usize("network.dim_in")?,
        dim_out: yaml.usize("network.dim_out")?,
        layer_size,
        num_layers: yaml.usize("network.num_layers")?,
        // `${..layer_size}` is an OmegaConf interpolation: the mapping size follows the width.
        fourier_mapping_size: yaml
            .usize_or_interpolated("network.pos_encoding.fourier_mapping_size", layer_size)?,
        fourier_noise_scale: yaml.f64("network.pos_encoding.fourier_noise_scale")?,
        final_act: yaml.final_act("network.final_act")?,
        data_shape: [height, width],
    })
}

/// Infers the FFN architecture from the tensor shapes alone (for weights without a config).
pub fn ffn_config_from_tensors(
    origin: &str,
    tensors: &HashMap<String, Tensor>,
    data_shape: [usize; 2],
) -> Result<FfnConfig> {
    let dims = |name: &str| {
        tensors
            .get(name)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| XincError::MissingTensor {
                origin: origin.to_string(),
                name: name.to_string(),
            })
    };
    let b = dims("positional_encoding.B")?;
    let first = dims("net.0.linear.weight")?;
    let num_layers = (0..)
        .take_while(|i| tensors.contains_key(&format!("net.{i}.linear.weight")))
        .count();
    let last = dims(&format!("net.{}.linear.weight", num_layers - 1))?;
    let (Some(&mapping), Some(&dim_in), Some(&layer_size), Some(&dim_out)) =
        (b.first(), b.get(1), first.first(), last.first())
    else {
        return Err(XincError::InvalidArgument(format!(
            "{origin}: FFN tensors have unexpected ranks"
        )));
    };
    Ok(FfnConfig {
        dim_in,
        dim_out,
        layer_size,
        num_layers,
        fourier_mapping_size: mapping,
        fourier_noise_scale: 10.0,
        final_act: None,
        data_shape,
    })
}

/// Dotted-path access to a YAML document with errors that name the file and the field.
struct YamlDoc<'a> {
    path: &'a Path,
    root: &'a Value,
}

impl YamlDoc<'_> {
    fn get(&self, field: &str) -> Result<&Value> {
        field
            .split('.')
            .try_fold(self.root, |v, key| v.get(key))
            .ok_or_else(|| XincError::config(self.path, format!("missing field `{field}`")))
    }

    fn wrong(&self, field: &str, expected: &str, v: &Value) -> XincError {
        XincError::config(
            self.path,
            format!("field `{field}` must be {expected}, got {v:?}"),
        )
    }

    fn string(&self, field: &str) -> Result<String> {
        let v = self.get(field)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.wrong(field, "a string", v))
    }

    fn usize(&self, field: &str) -> Result<usize> {
        let v = self.get(field)?;
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| self.wrong(field, "a non-negative integer", v))
    }

    fn f64(&self, field: &str) -> Result<f64> {
        let v = self.get(field)?;
        v.as_f64().ok_or_else(|| self.wrong(field, "a number", v))
    }

    fn usize_or_interpolated(&self, field: &str, interpolated: usize) -> Result<usize> {
        match self.get(field)? {
            Value::String(s) if s.starts_with("${") => Ok(interpolated),
            _ => self.usize(field),
        }
    }

    fn usize_list(&self, field: &str) -> Result<Vec<usize>> {
        let v = self.get(field)?;
        let seq = v
            .as_sequence()
            .ok_or_else(|| self.wrong(field, "a list of integers", v))?;
        seq.iter()
            .map(|x| {
                x.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| self.wrong(field, "a list of integers", v))
            })
            .collect()
    }

    fn final_act(&self, field: &str) -> Result<Option<FinalActivation>> {
        match self.get(field) {
            Err(_) => Ok(None),
            Ok(Value::Null) => Ok(None),
            Ok(v) => match v.as_str() {
                Some("identity") | Some("none") => Ok(None),
                Some("sigmoid") => Ok(Some(FinalActivation::Sigmoid)),
                Some("tanh") => Ok(Some(FinalActivation::Tanh)),
                Some("relu") => Ok(Some(FinalActivation::Relu)),
                _ => Err(self.wrong(field, "null, sigmoid, tanh or relu", v)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped() {
        assert_eq!(
            strip_prefixes("model.net.0.linear.weight"),
            "net.0.linear.weight"
        );
        assert_eq!(
            strip_prefixes("module.model.positional_encoding.B"),
            "positional_encoding.B"
        );
        assert_eq!(strip_prefixes("net.2.linear.bias"), "net.2.linear.bias");
    }

    #[test]
    fn yaml_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp_config.yaml");
        std::fs::write(&path, "network:\n  model_name: ffn\n  layer_size: wide\n").unwrap();
        let err = ffn_config_from_yaml(&path).unwrap_err().to_string();
        assert!(
            err.contains("exp_config.yaml") && err.contains("network.pos_encoding.type"),
            "{err}"
        );
        std::fs::write(
            &path,
            "network:\n  model_name: ffn\n  activation: relu\n  layer_size: wide\n  pos_encoding:\n    type: fourier\n",
        )
        .unwrap();
        let err = ffn_config_from_yaml(&path).unwrap_err().to_string();
        assert!(
            err.contains("`network.layer_size` must be a non-negative integer"),
            "{err}"
        );
    }
}
