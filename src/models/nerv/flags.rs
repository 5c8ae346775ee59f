//! The official command-line flags of `HNeRV/train_nerv_all.py` → [`NervConfig`]: every flag that
//! shapes the model (`--embed --fc_hw --dec_strds --ks --reduce --modelsize --lower_width
//! --conv_type --act --norm --num_blks --out_bias --enc_strds --enc_dim --resize_list
//! --crop_list`); the others (training, data, quantisation) are ignored.

use super::config::{NervConfig, OutBias};
use super::encoder::EncoderConfig;
use super::layers::{Activation, BlockType, Norm};
use crate::error::{Result, XincError};

/// The values of the flags that only HNeRV uses, gathered before the configuration is completed.
#[derive(Default)]
struct HnervFlags {
    enc_strides: Vec<usize>,
    enc_dim: Option<(usize, f64)>,
    enc_blocks: usize,
    encoder_type: Option<String>,
    resize: Option<[usize; 2]>,
    crop: Option<[usize; 2]>,
}

impl NervConfig {
    /// Parses the official command-line flags (`--embed pe_1.25_80 --fc_hw 8_16 --dec_strds 4 2 2
    /// --ks 0_3_3 --reduce 1.2 --modelsize 1.0 --lower_width 6 --conv_type convnext pshuffel --act
    /// gelu --norm none --out_bias tanh …`) for a clip of `frames` frames. HNeRV when the flags
    /// carry `--enc_strds` (ConvNeXt encoder, `--enc_dim`, the frame size from `--resize_list
    /// H_W` or `--crop_list H_W`). Flags that do not shape the model are ignored; unknown values
    /// are errors naming the flag.
    pub fn from_official_args(args: &str, frames: usize) -> Result<Self> {
        let mut cfg = NervConfig {
            frames,
            ..NervConfig::default()
        };
        let mut h = HnervFlags {
            enc_blocks: 1,
            ..HnervFlags::default()
        };
        for (flag, values) in split_flags(args)? {
            let one = || single(&flag, &values);
            match flag.as_str() {
                // HNeRV's `--embed` is empty.
                "embed" if values.is_empty() => {}
                "embed" => (cfg.pe_base, cfg.pe_levels) = parse_embed(one()?)?,
                "fc_hw" => cfg.fc_hw = parse_tuple(&flag, one()?)?,
                "dec_strds" => cfg.dec_strides = parse_list(&flag, &values)?,
                "enc_strds" => h.enc_strides = parse_list(&flag, &values)?,
                "enc_dim" => h.enc_dim = Some(parse_enc_dim(one()?)?),
                "ks" => cfg.ks = parse_tuple(&flag, one()?)?,
                "reduce" => cfg.reduce = parse_num(&flag, one()?)?,
                "modelsize" => cfg.modelsize = parse_num(&flag, one()?)?,
                "lower_width" => cfg.lower_width = parse_num(&flag, one()?)?,
                "out_bias" => cfg.out_bias = parse_out_bias(one()?)?,
                "act" => cfg.act = parse_named(&flag, one()?, &Activation::ALL)?,
                "norm" => cfg.norm = parse_named(&flag, one()?, &Norm::ALL)?,
                "num_blks" => [h.enc_blocks, cfg.dec_blocks] = parse_tuple(&flag, one()?)?,
                "conv_type" => {
                    let last = values.last().map_or("", String::as_str);
                    cfg.block = parse_named(&flag, last, &BlockType::ALL)?;
                    h.encoder_type = values.first().filter(|_| values.len() > 1).cloned();
                }
                "resize_list" => h.resize = parse_size(&flag, one()?)?,
                "crop_list" => h.crop = parse_size(&flag, one()?)?,
                _ => tracing::debug!(flag, "ignoring a flag that does not shape the NeRV model"),
            }
        }
        if !h.enc_strides.is_empty() {
            cfg.encoder = Some(h.encoder(&mut cfg)?);
        }
        cfg.check(&flag_names).map_err(|e| match e {
            XincError::InvalidArgument(m) => bad_args(m),
            other => other,
        })?;
        Ok(cfg)
    }
}

impl HnervFlags {
    /// The encoder, and HNeRV's frame size and `fc_hw` set in `cfg`, as the official trainer
    /// derives them (the embedding's channels from the budget when `--enc_dim`'s ratio is < 1).
    fn encoder(&self, cfg: &mut NervConfig) -> Result<EncoderConfig> {
        if let Some(t) = self.encoder_type.as_deref() {
            require("conv_type", t, &["convnext"])?;
        }
        let [fh, fw] = self.resize.or(self.crop).ok_or_else(|| {
            bad_args("HNeRV (--enc_strds) needs the frame size: --resize_list H_W".into())
        })?;
        cfg.frame_hw = Some([fh, fw]);
        let total: usize = self.enc_strides.iter().product();
        let dec: usize = cfg.dec_strides.iter().product();
        let side = if dec == 0 { 0 } else { total / dec };
        cfg.fc_hw = [side, side];
        let (dim, ratio) = self.enc_dim.unwrap_or((64, 16.0));
        let embed_dim = if ratio < 1.0 {
            let cells = (fh * fw) as f64 / (total as f64).powi(2);
            (ratio * cfg.modelsize * 1e6 / cfg.frames.max(1) as f64 / cells) as usize
        } else {
            ratio as usize
        };
        Ok(EncoderConfig {
            strides: self.enc_strides.clone(),
            dim,
            embed_dim,
            blocks: self.enc_blocks,
        })
    }
}

fn bad_args(reason: String) -> XincError {
    XincError::InvalidArgument(format!("NeRV arguments: {reason}"))
}

/// The official flag that sets each field of [`NervConfig`], for messages about flags.
fn flag_names(field: &'static str) -> String {
    match field {
        "pe_base" => "--embed pe_B_L: B",
        "pe_levels" => "--embed pe_B_L: L",
        "dec_strides" => "--dec_strds",
        "frames" => "frames",
        "block" => "--conv_type",
        "dec_blocks" | "enc_blocks" => "--num_blks",
        "enc_strides" => "--enc_strds",
        "frame_hw" => "--resize_list",
        other => return format!("--{other}"),
    }
    .to_string()
}

/// `--flag v1 v2 --other v3` → [(flag, [v1, v2]), (other, [v3])].
fn split_flags(args: &str) -> Result<Vec<(String, Vec<String>)>> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for token in args.split_whitespace() {
        if let Some(flag) = token.strip_prefix("--").or_else(|| {
            token
                .strip_prefix('-')
                .filter(|t| t.parse::<f64>().is_err())
        }) {
            out.push((flag.to_string(), Vec::new()));
        } else if let Some((_, values)) = out.last_mut() {
            values.push(token.to_string());
        } else {
            return Err(bad_args(format!("`{token}` comes before any --flag")));
        }
    }
    Ok(out)
}

fn single<'a>(flag: &str, values: &'a [String]) -> Result<&'a str> {
    match values {
        [v] => Ok(v),
        _ => Err(bad_args(format!(
            "--{flag} takes one value, got {values:?}"
        ))),
    }
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.parse().map_err(|_| {
        let why = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            "is too large"
        } else {
            "is not a number"
        };
        bad_args(format!("--{flag} `{v}` {why}"))
    })
}

/// `A_B` / `A_B_C` → `[A, B]` / `[A, B, C]`.
fn parse_tuple<const N: usize>(flag: &str, v: &str) -> Result<[usize; N]> {
    let parts: Vec<usize> = v
        .split('_')
        .map(|p| parse_num(flag, p))
        .collect::<Result<_>>()?;
    parts
        .try_into()
        .map_err(|_| bad_args(format!("--{flag} `{v}` is not {N} numbers joined by `_`")))
}

fn parse_embed(v: &str) -> Result<(f64, usize)> {
    let mut parts = v.split('_');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("pe"), Some(base), Some(levels), None) => {
            Ok((parse_num("embed", base)?, parse_num("embed", levels)?))
        }
        _ => Err(bad_args(format!(
            "--embed `{v}`: only positional encodings pe_B_L are supported"
        ))),
    }
}

fn parse_out_bias(v: &str) -> Result<OutBias> {
    match v {
        "tanh" => Ok(OutBias::Tanh),
        "sigmoid" => Ok(OutBias::Sigmoid),
        other => Ok(OutBias::Offset(parse_num("out_bias", other)?)),
    }
}

fn require(flag: &str, v: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(bad_args(format!(
            "--{flag} `{v}` is not supported (only {})",
            allowed.join(", ")
        )))
    }
}

fn parse_list(flag: &str, values: &[String]) -> Result<Vec<usize>> {
    values.iter().map(|v| parse_num(flag, v)).collect()
}

/// `--enc_dim A_B`: A channels, B channels (≥ 1) or a share of the budget (< 1).
fn parse_enc_dim(v: &str) -> Result<(usize, f64)> {
    let bad = || {
        bad_args(format!(
            "--enc_dim `{v}` is not A_B (A channels, B channels or a ratio)"
        ))
    };
    let (a, b) = v.split_once('_').ok_or_else(bad)?;
    let ratio: f64 = parse_num("enc_dim", b)?;
    if !ratio.is_finite() || ratio <= 0.0 {
        return Err(bad());
    }
    Ok((parse_num("enc_dim", a)?, ratio))
}

/// `H_W` → Some([H, W]); `-1` → None.
fn parse_size(flag: &str, v: &str) -> Result<Option<[usize; 2]>> {
    if v == "-1" {
        return Ok(None);
    }
    let parts: Vec<&str> = v.split('_').collect();
    match parts.as_slice() {
        [h, w] | [h, w, _] => Ok(Some([parse_num(flag, h)?, parse_num(flag, w)?])),
        _ => Err(bad_args(format!(
            "--{flag} `{v}`: only H_W sizes are supported"
        ))),
    }
}

/// One of `allowed`'s official names.
fn parse_named<T: Copy>(flag: &str, v: &str, allowed: &[(&str, T)]) -> Result<T> {
    allowed
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            bad_args(format!(
                "--{flag} `{v}` is not supported (only {})",
                names.join(", ")
            ))
        })
}
