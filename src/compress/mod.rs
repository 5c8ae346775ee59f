//! Compression of a NeRV or HNeRV as the official training script reports it after every run
//! (`HNeRV/train_nerv_all.py`: `quant_model`, then `evaluate(huffman_coding=True)`).
//!
//! 1. Every weight tensor but the encoder's is quantised on its own to `model_bits` bits
//!    ([`quant::quantise`], `hnerv_utils.quant_tensor`), and so are the decoder inputs of all
//!    frames together (`embed_list[0]`: the positional encodings of a NeRV, the content
//!    embeddings of an HNeRV) to `embed_bits` bits.
//! 2. All quantised values are Huffman-coded together ([`huffman`], `dahuffman`): the bits are
//!    Σ frequency × code length; bits per parameter divide them by the number of values, with
//!    and without the overhead of 16 bits per stored minimum and scale; bits per pixel divide the
//!    bits with overhead by H·W and the frame count.
//! 3. The model with the restored weights decodes every frame from its restored input: the
//!    quantised PSNR (`psnr_fn_single`, averaged over the frames) and MS-SSIM (frames larger than
//!    160 pixels a side).
//!
//! One official detail is reproduced although it is a quirk: a batch norm's
//! `num_batches_tracked` counter is in the official state dict, so the official code quantises
//! it too (its scale is 0: the value becomes 0) and counts one value and two overhead entries per
//! batch norm. xinc does not store the counter and adds that count.
//!
//! [`prune`] zeroes a layer's lowest-scored kernels and traces the rate–distortion curve of the
//! pruned, quantised model.
//!
//! Data flow: models, frames (and, for pruning, per-kernel scores) in, numbers out; nothing here
//! reads a canvas: [`crate::study::Study::nerv_pruning`] brings the canvases' scores.

pub mod huffman;
pub mod prune;
pub mod quant;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::{Result, XincError};
use crate::models::nerv::Nerv;
use crate::train::loss::{ms_ssim, psnr, MS_SSIM_MIN_SIDE};
use quant::{quantise, QuantTensor};

/// The bit widths (official `--quant_model_bit`, `--quant_embed_bit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressOptions {
    pub model_bits: u8,
    pub embed_bits: u8,
}

impl Default for CompressOptions {
    /// The official defaults: 8 bits per weight, 6 per embedding value.
    fn default() -> Self {
        CompressOptions {
            model_bits: 8,
            embed_bits: 6,
        }
    }
}

/// A quantised NeRV: every quantised tensor, and the model and decoder inputs restored from them.
#[derive(Clone)]
pub struct QuantisedNerv {
    /// The quantised weights by official name (the encoder's are not quantised).
    pub tensors: Vec<(String, QuantTensor)>,
    /// The quantised decoder inputs of all frames, `[T, d, h, w]`.
    pub inputs: QuantTensor,
    /// The model with the restored weights (an HNeRV keeps its encoder).
    pub model: Nerv,
    /// The restored decoder inputs, `[T, d, h, w]`.
    pub restored_inputs: Tensor,
    /// Batch norms, whose official `num_batches_tracked` counter is counted as one more value.
    pub batch_norms: usize,
}

/// What the official pipeline prints, and the PSNR of every frame before and after.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Compression {
    pub model_bits: u8,
    pub embed_bits: u8,
    /// Quantised values (weights, decoder inputs, batch-norm counters).
    pub values: usize,
    /// Stored minima and scales (16 bits each).
    pub overhead_entries: usize,
    /// The Huffman-coded bits of the values.
    pub total_bits: u64,
    pub bits_per_param: f64,
    pub bits_per_param_with_overhead: f64,
    pub bits_per_pixel: f64,
    /// Mean over the frames of the official PSNR of the model as it is.
    pub psnr: f64,
    /// The same for the quantised model on the restored inputs.
    pub quant_psnr: f64,
    /// Mean MS-SSIM of the quantised model (`None` for frames of 160 pixels a side or fewer).
    pub quant_msssim: Option<f64>,
    pub psnr_per_frame: Vec<f64>,
    pub quant_psnr_per_frame: Vec<f64>,
}

impl Compression {
    /// The file the figures are written to in a model folder.
    pub const FILE: &'static str = "compression.json";

    /// Writes the figures to `dir/compression.json`, atomically.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(Self::FILE);
        crate::io::save_json(&path, self)?;
        Ok(path)
    }

    /// One paragraph, as the official script prints it, with the PSNR before and after.
    pub fn summary(&self) -> String {
        format!(
            "quantised M{}/E{}: {} values, {:.4} bits per parameter ({:.4} with the overhead of {} \
             minima and scales), {:.4} bits per pixel; PSNR {:.2} dB, quantised {:.2} dB{}",
            self.model_bits,
            self.embed_bits,
            self.values,
            self.bits_per_param,
            self.bits_per_param_with_overhead,
            self.overhead_entries,
            self.bits_per_pixel,
            self.psnr,
            self.quant_psnr,
            self.quant_msssim
                .map_or(String::new(), |m| format!(", MS-SSIM {m:.4}")),
        )
    }
}

/// Quantises `model` and its decoder `inputs` as `quant_model` and `evaluate` do.
pub fn quantise_nerv(
    model: &Nerv,
    inputs: &Tensor,
    opts: &CompressOptions,
    device: &Device,
) -> Result<QuantisedNerv> {
    let mut tensors = Vec::new();
    let mut restored: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in model.named_tensors() {
        if name.contains("encoder") {
            restored.insert(name, t);
            continue;
        }
        let (q, values) = quantise_tensor(&t, opts.model_bits)?;
        restored.insert(name.clone(), Tensor::from_vec(values, t.dims(), device)?);
        tensors.push((name, q));
    }
    let batch_norms = tensors
        .iter()
        .filter(|(n, _)| n.ends_with(".running_mean"))
        .count();
    let (inputs_q, values) = quantise_tensor(inputs, opts.embed_bits)?;
    let restored_inputs = Tensor::from_vec(values, inputs.dims(), device)?;
    let mut quantised = Nerv::from_tensors(
        model.config().clone(),
        restored,
        "quantised weights",
        device,
    )?;
    if model.config().is_hnerv() {
        quantised = quantised.with_embeddings(restored_inputs.clone())?;
    }
    Ok(QuantisedNerv {
        tensors,
        inputs: inputs_q,
        model: quantised,
        restored_inputs,
        batch_norms,
    })
}

fn quantise_tensor(t: &Tensor, bits: u8) -> Result<(QuantTensor, Vec<f32>)> {
    let values: Vec<f32> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    quantise(&values, t.dims(), bits)
}

impl QuantisedNerv {
    /// The Huffman-coded bits of every quantised value: `(bits, values, overhead entries)`.
    pub fn bits(&self) -> (u64, usize, usize) {
        let mut counts = [0u64; 256];
        let mut values = 0;
        let mut overhead = 2 * self.batch_norms;
        for q in self.tensors.iter().map(|(_, q)| q).chain([&self.inputs]) {
            for &v in &q.quant {
                counts[usize::from(v)] += 1;
            }
            values += q.quant.len();
            overhead += q.overhead_entries();
        }
        counts[0] += self.batch_norms as u64;
        values += self.batch_norms;
        (huffman::coded_bits(&counts), values, overhead)
    }
}

/// Frames decoded at once by [`compress_nerv`].
const DECODE_BATCH: usize = 6;

/// The official compression figures of `model` on `frames` (`[3, H, W]` each, the clip it
/// represents), and the quantised model.
pub fn compress_nerv(
    model: &Nerv,
    frames: &[Vec<f32>],
    opts: &CompressOptions,
    device: &Device,
) -> Result<(QuantisedNerv, Compression)> {
    let config = model.config();
    let [h, w] = config.frame_size();
    if frames.len() != config.frames || frames.iter().any(|f| f.len() != 3 * h * w) {
        return Err(XincError::InvalidArgument(format!(
            "compression needs the {} frames of 3x{h}x{w} the model represents ({} given)",
            config.frames,
            frames.len()
        )));
    }
    let inputs = model.decoder_inputs(device)?;
    let quantised = quantise_nerv(model, &inputs, opts, device)?;
    let (total_bits, values, overhead_entries) = quantised.bits();
    let full = total_bits as f64 + 16.0 * overhead_entries as f64;
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut msssim = Vec::new();
    // Frames in batches: fewer, larger convolutions.
    let all: Vec<usize> = (0..frames.len()).collect();
    for batch in all.chunks(DECODE_BATCH) {
        let (start, n) = (batch[0], batch.len());
        let data: Vec<f32> = batch
            .iter()
            .flat_map(|&i| frames[i].iter().copied())
            .collect();
        let target = Tensor::from_vec(data, (n, 3, h, w), device)?;
        let t: Vec<f64> = batch.iter().map(|&i| config.time_of(i)).collect();
        let ours = model
            .decode(inputs.narrow(0, start, n)?, t.clone(), false)?
            .output;
        let theirs = quantised
            .model
            .decode(quantised.restored_inputs.narrow(0, start, n)?, t, false)?
            .output;
        before.extend(psnr(&ours, &target)?);
        after.extend(psnr(&theirs, &target)?);
        if h.min(w) >= MS_SSIM_MIN_SIDE {
            let values = ms_ssim(&theirs, &target)?.to_vec1::<f32>()?;
            msssim.extend(values.into_iter().map(f64::from));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let compression = Compression {
        model_bits: opts.model_bits,
        embed_bits: opts.embed_bits,
        values,
        overhead_entries,
        total_bits,
        bits_per_param: total_bits as f64 / values as f64,
        bits_per_param_with_overhead: full / values as f64,
        bits_per_pixel: full / (h * w) as f64 / frames.len() as f64,
        psnr: mean(&before),
        quant_psnr: mean(&after),
        quant_msssim: (!msssim.is_empty()).then(|| mean(&msssim)),
        psnr_per_frame: before,
        quant_psnr_per_frame: after,
    };
    Ok((quantised, compression))
}
