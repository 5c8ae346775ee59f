//! The upper limit of every size that a model configuration (`config.json`, `exp_config.yaml`,
//! the NeRV flags) or a command-line flag can ask for, in one place, so that one spelling exists.
//!
//! Each limit is far above what the paper and its datasets use and at or below what one GPU can
//! hold (its reason is next to it, and part of the error). A size above its limit is refused before
//! any work, by [`Limit::check`], with an error that names the field or flag, the value, the limit
//! and the reason. Products of sizes go through [`checked_product`](crate::io::files::checked_product)
//! and never wrap. None of these limits can be raised: a size beyond them cannot be trained or
//! analysed on one machine anyway. The file-size limits, which a real dataset may need to raise,
//! are [`FileLimit`](crate::io::files::FileLimit)s.

use crate::error::{Result, XincError};
use crate::io::files::check_size;

/// How a validation message names a configuration field: by its `config.json` name, its YAML
/// path, or the flag it came from (`layer_size` is `network.layer_size` in `exp_config.yaml` and
/// `--width` on the command line).
pub type FieldNames<'a> = &'a dyn Fn(&'static str) -> String;

/// Names every field as it is spelled in the configuration struct.
pub(crate) fn plain_names(field: &'static str) -> String {
    field.to_string()
}

/// An upper limit on a size, with the reason it was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub max: usize,
    /// What the size is and why this is its limit (part of the error message).
    pub why: &'static str,
}

impl Limit {
    /// Refuses `value` above the limit; the error names `field` (a flag such as `--size`, or a
    /// configuration field such as `data_shape`).
    pub fn check(&self, field: &str, value: usize) -> Result<()> {
        check_size(field, value as u64, self.max as u64, self.why)
    }

    /// Refuses `value` outside `min..=max`.
    pub fn check_range(&self, field: &str, value: usize, min: usize) -> Result<()> {
        if value < min {
            return Err(XincError::InvalidArgument(format!(
                "{field} = {value} is less than {min}"
            )));
        }
        self.check(field, value)
    }
}

/// An image side in pixels (`--size`, `--crop`, `data_shape`, a NeRV frame). 8K video is
/// 7680×4320; the paper works at 128×256 and its datasets at 2048×1024 at most. An FFN trained
/// full-batch on 8192×8192 pixels already needs ~60 GB of activations.
pub const IMAGE_SIDE: Limit = Limit {
    max: 8192,
    why: "fixed: an image side in pixels; 8K video is 7680x4320, the paper works at 128x256",
};

/// FFN hidden width and Fourier mapping size (`--width`, `layer_size`,
/// `fourier_mapping_size`). The paper uses 104; one 65536×65536 f32 layer is 16 GiB.
pub const FFN_WIDTH: Limit = Limit {
    max: 65_536,
    why: "fixed: an FFN width; the paper uses 104, one 65536x65536 layer is 16 GiB",
};

/// FFN Linear layers (`num_layers`). The paper uses 3; deeper INRs use at most ~10.
pub const FFN_LAYERS: Limit = Limit {
    max: 64,
    why: "fixed: FFN Linear layers; the paper uses 3",
};

/// Parameters of one model. 2^31 f32 values are 8 GiB, the largest weights file xinc reads
/// ([`FileLimit::WEIGHTS`](crate::io::files::FileLimit::WEIGHTS)); the paper's models have
/// 33 thousand (FFN) and 1 million (NeRV).
pub const PARAMS: Limit = Limit {
    max: 1 << 31,
    why: "fixed: parameters of a model; 2^31 f32 values are 8 GiB, the paper's models have 1 million at most",
};

/// Values of one forward pass over a whole image or frame (every layer's activation). 2^34 f32
/// values are 64 GiB: more than a GPU holds beside the model and its gradients. The paper's FFN
/// needs 10^7, its NeRV 10^6 per frame.
pub const ACTIVATIONS: Limit = Limit {
    max: 1 << 34,
    why:
        "fixed: values of one forward pass over a whole image or frame; 2^34 f32 values are 64 GiB",
};

/// NeRV positional-encoding levels L (`--embed pe_B_L`). The paper uses 80.
pub const PE_LEVELS: Limit = Limit {
    max: 1024,
    why: "fixed: positional-encoding levels; the paper uses 80",
};

/// NeRV decoder blocks (entries of `--dec_strds`). The paper uses 3, NeRV at 1080p 5.
pub const NERV_BLOCKS: Limit = Limit {
    max: 16,
    why: "fixed: NeRV decoder blocks; the paper uses 3",
};

/// NeRV kernel sizes (`--ks`). The paper uses 3, HNeRV up to 7.
pub const NERV_KERNEL: Limit = Limit {
    max: 15,
    why: "fixed: a NeRV kernel size; the paper uses 3",
};

/// NeRV channels of one layer (`fc_dim` from `--modelsize`, `--lower_width`, every block's
/// width). The paper's model has 37; NeRV-L at 1080p a few hundred.
pub const NERV_CHANNELS: Limit = Limit {
    max: 16_384,
    why: "fixed: NeRV channels of a layer; the paper's model has 37",
};

/// Kernels of one NeRV layer (`--max-kernels`, `--ablation-kernels`): Cin·Cout, at most
/// [`NERV_CHANNELS`]² in principle; the paper's block 1 has about 18,000.
pub const KERNELS: Limit = Limit {
    max: 100_000_000,
    why: "fixed: kernels of a NeRV layer; the paper's block 1 has about 18000",
};

/// Frames of a clip (`--frames`, `--frame`, `--max-frames`, `--motion-frames`, a NeRV's
/// `frames`): an hour of video at 25 fps is 90,000; the paper's clips have 30 to a few hundred.
pub const FRAMES: Limit = Limit {
    max: 100_000,
    why: "fixed: frames of a clip; an hour of video at 25 fps is 90000",
};

/// Training iterations or epochs (`--iters`, `--epochs`, `--nerv-epochs`, `--eval-every`,
/// `--until-epoch`, `--ffn-iters`). The paper trains its FFN 1000 iterations and NeRV 300 to 4800
/// epochs.
pub const STEPS: Limit = Limit {
    max: 10_000_000,
    why: "fixed: training iterations or epochs; the paper uses at most a few thousand",
};

/// Pixels per streamed canvas tile (`--tile`, default 4096). 2^20 is a whole 1024×1024 image;
/// one tile of the paper's FFN then holds 0.9 GB of maps.
pub const TILE: Limit = Limit {
    max: 1 << 20,
    why: "fixed: pixels per tile; the default is 4096, 2^20 is a whole 1024x1024 image",
};

/// k-means neuron groups per layer (`--groups`). The paper uses 6; a layer with fewer neurons
/// than groups is skipped.
pub const GROUPS: Limit = Limit {
    max: 1024,
    why: "fixed: neuron groups per layer; the paper uses 6",
};

/// Timed repetitions of a device check (`--repeats`, default 10).
pub const REPEATS: Limit = Limit {
    max: 10_000,
    why: "fixed: timed repetitions; the default is 10",
};

/// The largest learning rate (`--lr`): Adam moves every weight by about the learning rate per
/// step, and the paper's weights are smaller than 1 (its rates are 9e-4 and 1e-3).
pub const MAX_LEARNING_RATE: f64 = 1.0;

/// Refuses a NaN or infinite `value` of `field`.
pub(crate) fn check_finite(field: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(XincError::InvalidArgument(format!(
            "{field} = {value:?} is not a finite number"
        )))
    }
}

/// Refuses `value` of `field` unless it is finite and greater than zero.
pub(crate) fn check_positive(field: &str, value: f64) -> Result<()> {
    check_finite(field, value)?;
    if value > 0.0 {
        Ok(())
    } else {
        Err(XincError::InvalidArgument(format!(
            "{field} = {value:?} must be greater than 0"
        )))
    }
}

/// Refuses a learning rate outside (0, [`MAX_LEARNING_RATE`]].
pub fn check_learning_rate(field: &str, value: f64) -> Result<()> {
    check_positive(field, value)?;
    if value <= MAX_LEARNING_RATE {
        Ok(())
    } else {
        Err(XincError::InvalidArgument(format!(
            "{field} = {value:?} is more than the limit {MAX_LEARNING_RATE} (fixed: Adam moves \
             every weight by about the learning rate per step; the paper uses 1e-3)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_field_the_value_and_the_reason() {
        assert!(IMAGE_SIDE.check("--size", 8192).is_ok());
        let e = IMAGE_SIDE.check("--size", 100_000).unwrap_err().to_string();
        assert!(
            e.contains("--size = 100000 is more than the limit 8192 (fixed: an image side"),
            "{e}"
        );
        let e = FRAMES
            .check_range("--frames", 0, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--frames = 0 is less than 1"), "{e}");
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = check_finite("--out_bias", bad).unwrap_err().to_string();
            assert!(
                e.contains("--out_bias") && e.contains("not a finite number"),
                "{e}"
            );
        }
        let e = check_positive("--reduce", 0.0).unwrap_err().to_string();
        assert!(e.contains("--reduce = 0.0 must be greater than 0"), "{e}");
        assert!(check_learning_rate("--lr", 1e-3).is_ok());
        let e = check_learning_rate("--lr", 3.0).unwrap_err().to_string();
        assert!(e.contains("--lr = 3.0 is more than the limit 1"), "{e}");
    }
}
