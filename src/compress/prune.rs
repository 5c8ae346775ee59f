//! Kernel pruning of a NeRV and its rate–distortion curve (issue 21, item 4).
//!
//! A NeRV neuron is a kernel: input channel i → conv output channel k of one layer (`head` or
//! `block{n}`), flat index `i·K + k` as the canvas numbers them. Pruning a fraction f of the
//! layer zeroes the kernels with the lowest scores (ties: the lower index first). The scores come
//! from the caller: a canvas's total |contribution| per kernel, the kernel's weight norm
//! ([`kernel_norms`]), or a seeded random order. Then the pruned model is quantised and
//! Huffman-coded as the official pipeline does ([`super::compress_nerv`]): zeroed weights become
//! frequent symbols, so the bits fall with the fraction. Optionally each pruned model is first
//! fine-tuned a few epochs with its zeroed kernels held at zero
//! ([`crate::train::nerv::finetune_nerv`]).

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use polars::prelude::*;

use super::{compress_nerv, CompressOptions, Compression};
use crate::error::{Result, XincError};
use crate::models::nerv::{BlockType, KernelLayer, Nerv};
use crate::train::nerv::{finetune_nerv, NervTrainParams};

/// The official name of the conv weight whose kernels are `layer`'s neurons, and whether its
/// layout is `[Cin, K, kh, kw]` (a transposed conv) rather than `[K, Cin, kh, kw]`.
fn kernel_weight(model: &Nerv, layer: &str) -> Result<(String, bool)> {
    let n = match layer.parse::<KernelLayer>()? {
        KernelLayer::Head => return Ok(("head_layer.weight".into(), false)),
        block @ KernelLayer::Block(n) => {
            model.kernel_shape(block)?; // the block exists
            n
        }
    };
    let kind = model.config().block;
    Ok((
        format!("{}.weight", kind.conv_prefix(n)),
        kind == BlockType::Conv,
    ))
}

/// The weights of `layer`'s conv, its (Cin, K, window) and its layout.
fn kernels(model: &Nerv, layer: &str) -> Result<(String, Vec<f32>, Vec<usize>, bool)> {
    let (name, transposed) = kernel_weight(model, layer)?;
    let t = model
        .named_tensors()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| XincError::InvalidArgument(format!("the model has no tensor `{name}`")))?;
    let dims = t.dims().to_vec();
    Ok((name, t.flatten_all()?.to_vec1()?, dims, transposed))
}

/// The flat weight offset of kernel (i, k) and the window length.
fn kernel_offset(dims: &[usize], transposed: bool, i: usize, k: usize) -> (usize, usize) {
    let window = dims[2] * dims[3];
    let at = match transposed {
        true => i * dims[1] + k,
        false => k * dims[1] + i,
    };
    (at * window, window)
}

/// (Cin, K) of a weight of `dims`.
fn shape(dims: &[usize], transposed: bool) -> (usize, usize) {
    match transposed {
        true => (dims[0], dims[1]),
        false => (dims[1], dims[0]),
    }
}

/// The L2 norm of every kernel of `layer`, flat index `i·K + k`.
pub fn kernel_norms(model: &Nerv, layer: &str) -> Result<Vec<f32>> {
    let (_, w, dims, transposed) = kernels(model, layer)?;
    let (cin, kout) = shape(&dims, transposed);
    Ok((0..cin * kout)
        .map(|n| {
            let (at, len) = kernel_offset(&dims, transposed, n / kout, n % kout);
            w[at..at + len].iter().map(|v| v * v).sum::<f32>().sqrt()
        })
        .collect())
}

/// `model` with the `round(fraction·N)` lowest-scored kernels of `layer` set to zero.
pub fn prune(model: &Nerv, layer: &str, scores: &[f32], fraction: f64) -> Result<(Nerv, usize)> {
    let (name, mut w, dims, transposed) = kernels(model, layer)?;
    let (cin, kout) = shape(&dims, transposed);
    if scores.len() != cin * kout || !(0.0..=1.0).contains(&fraction) {
        return Err(XincError::InvalidArgument(format!(
            "pruning {layer}: {} scores for {} kernels, fraction {fraction}",
            scores.len(),
            cin * kout
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let count = (fraction * scores.len() as f64).round() as usize;
    for &n in &order[..count] {
        let (at, len) = kernel_offset(&dims, transposed, n / kout, n % kout);
        w[at..at + len].fill(0.0);
    }
    let device = model.head().weight().device().clone();
    let mut tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    tensors.insert(name, Tensor::from_vec(w, dims, &device)?);
    let mut pruned = Nerv::from_tensors(model.config().clone(), tensors, "pruned", &device)?;
    if let Some(e) = model.embeddings() {
        pruned = pruned.with_embeddings(e.clone())?;
    }
    Ok((pruned, count))
}

/// The rate–distortion points of pruning `layer` by each ranking `(name, scores)` at each
/// fraction, fine-tuned with `finetune` when given, then quantised and coded with `opts`:
/// columns `layer`, `ranking`, `fraction`, `pruned`, `finetune_epochs`, `bits_per_pixel`,
/// `bits_per_param_with_overhead`, `psnr` (pruned, before quantisation) and `quant_psnr`.
pub fn rate_distortion(
    model: &Nerv,
    frames: &[Vec<f32>],
    layer: &str,
    rankings: &[(String, Vec<f32>)],
    fractions: &[f64],
    (opts, finetune): (&CompressOptions, Option<&NervTrainParams>),
    device: &Device,
) -> Result<DataFrame> {
    let mut cols: (Vec<String>, Vec<f64>, Vec<u32>, [Vec<f64>; 4]) = Default::default();
    // Nothing pruned is the same model under every ranking: compressed once.
    let mut unpruned: Option<Compression> = None;
    for (ranking, scores) in rankings {
        for &fraction in fractions {
            let (mut pruned, count) = prune(model, layer, scores, fraction)?;
            if let (Some(params), true) = (finetune, count > 0) {
                pruned = finetune_pruned(&pruned, layer, frames, params, device)?;
            }
            let c = match (count, &unpruned) {
                (0, Some(c)) => c.clone(),
                _ => compress_nerv(&pruned, frames, opts, device)?.1,
            };
            if count == 0 && unpruned.is_none() {
                unpruned = Some(c.clone());
            }
            tracing::info!(
                layer,
                ranking,
                fraction,
                bpp = c.bits_per_pixel,
                psnr = c.quant_psnr,
                "pruned"
            );
            cols.0.push(ranking.clone());
            cols.1.push(fraction);
            cols.2.push(count as u32);
            for (v, x) in cols.3.iter_mut().zip([
                c.bits_per_pixel,
                c.bits_per_param_with_overhead,
                c.psnr,
                c.quant_psnr,
            ]) {
                v.push(x);
            }
        }
    }
    let [bpp, bpparam, psnr, qpsnr] = cols.3;
    let epochs = finetune.map_or(0, |p| p.epochs) as u32;
    let tuned: Vec<u32> = cols
        .2
        .iter()
        .map(|&c| if c > 0 { epochs } else { 0 })
        .collect();
    df!(
        "layer" => vec![layer.to_string(); cols.0.len()],
        "ranking" => cols.0,
        "fraction" => cols.1,
        "pruned" => cols.2,
        "finetune_epochs" => tuned,
        "bits_per_pixel" => bpp,
        "bits_per_param_with_overhead" => bpparam,
        "psnr" => psnr,
        "quant_psnr" => qpsnr,
    )
    .map_err(|e| XincError::InvalidArgument(format!("the pruning table: {e}")))
}

/// `pruned` fine-tuned with its zeroed kernels of `layer` held at zero.
fn finetune_pruned(
    pruned: &Nerv,
    layer: &str,
    frames: &[Vec<f32>],
    params: &NervTrainParams,
    device: &Device,
) -> Result<Nerv> {
    let (name, w, dims, _) = kernels(pruned, layer)?;
    let mask: Vec<f32> = w.iter().map(|&v| f32::from(u8::from(v != 0.0))).collect();
    let masks = HashMap::from([(name, Tensor::from_vec(mask, dims, device)?)]);
    let (tuned, report) = finetune_nerv(pruned, frames, params, masks, device)?;
    tracing::info!(layer, psnr = report.best_psnr, "fine-tuned");
    Ok(tuned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random NeRV of 4 frames of 24×36, and frames to compress it against.
    fn tiny() -> (Nerv, Vec<Vec<f32>>) {
        let frames = (0..4)
            .map(|t| {
                (0..3 * 24 * 36)
                    .map(|i| ((i + 7 * t) % 11) as f32 / 11.0)
                    .collect()
            })
            .collect();
        (crate::models::nerv::tiny_nerv(""), frames)
    }

    #[test]
    fn the_lowest_scored_kernels_are_zeroed_and_the_others_kept() {
        let (model, _) = tiny();
        let norms = kernel_norms(&model, "head").unwrap();
        let (_, before, dims, transposed) = kernels(&model, "head").unwrap();
        assert_eq!(shape(&dims, transposed), (3, 3)); // head: 3 input channels → RGB
        assert_eq!(norms.len(), 9);
        // Kernel n = i·3 + k. Score them so that kernels 4 and 7 are the lowest.
        let scores: Vec<f32> = (0..9)
            .map(|n| if n == 4 || n == 7 { -1.0 } else { n as f32 })
            .collect();
        let (pruned, count) = prune(&model, "head", &scores, 0.25).unwrap();
        assert_eq!(count, 2); // round(0.25 · 9)
        let (_, after, ..) = kernels(&pruned, "head").unwrap();
        for n in 0..9 {
            let (at, len) = kernel_offset(&dims, transposed, n / 3, n % 3);
            let zeroed = after[at..at + len].iter().all(|&v| v == 0.0);
            assert_eq!(zeroed, n == 4 || n == 7, "kernel {n}");
            if n != 4 && n != 7 {
                assert_eq!(after[at..at + len], before[at..at + len]);
            }
        }
        assert_eq!(kernel_norms(&pruned, "head").unwrap()[4], 0.0);
        assert!(prune(&model, "block4", &scores, 0.5).is_err());
        assert!(prune(&model, "head", &scores[..3], 0.5).is_err());
    }

    #[test]
    fn pruning_more_codes_fewer_bits() {
        let (model, frames) = tiny();
        let norms = kernel_norms(&model, "block3").unwrap();
        let table = rate_distortion(
            &model,
            &frames,
            "block3",
            &[("weight norm".into(), norms)],
            &[0.0, 0.5, 0.9],
            (&CompressOptions::default(), None),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(table.height(), 3);
        let bpp: Vec<f64> = table
            .column("bits_per_pixel")
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert!(bpp[0] > bpp[1] && bpp[1] > bpp[2], "{bpp:?}");
        // Nothing pruned: the figures of the model itself.
        let (_, whole) =
            compress_nerv(&model, &frames, &CompressOptions::default(), &Device::Cpu).unwrap();
        assert_eq!(bpp[0], whole.bits_per_pixel);
    }

    #[test]
    fn fine_tuning_keeps_the_pruned_kernels_at_zero() {
        let (model, frames) = tiny();
        let norms = kernel_norms(&model, "block2").unwrap();
        let (pruned, count) = prune(&model, "block2", &norms, 0.5).unwrap();
        assert!(count > 0);
        let params = NervTrainParams {
            epochs: 3,
            eval_every: 1,
            progress: false,
            ..Default::default()
        };
        let tuned = finetune_pruned(&pruned, "block2", &frames, &params, &Device::Cpu).unwrap();
        let (_, before, dims, transposed) = kernels(&pruned, "block2").unwrap();
        let (_, after, ..) = kernels(&tuned, "block2").unwrap();
        let (cin, kout) = shape(&dims, transposed);
        let mut moved = 0;
        for n in 0..cin * kout {
            let (at, len) = kernel_offset(&dims, transposed, n / kout, n % kout);
            let was_zero = before[at..at + len].iter().all(|&v| v == 0.0);
            if was_zero {
                assert!(after[at..at + len].iter().all(|&v| v == 0.0), "kernel {n}");
            } else if after[at..at + len] != before[at..at + len] {
                moved += 1;
            }
        }
        assert!(moved > 0, "fine-tuning changed no kept kernel");
        // The table says which rows were fine-tuned.
        let table = rate_distortion(
            &model,
            &frames,
            "block2",
            &[("weight norm".into(), norms)],
            &[0.0, 0.5],
            (&CompressOptions::default(), Some(&params)),
            &Device::Cpu,
        )
        .unwrap();
        let epochs: Vec<u32> = table
            .column("finetune_epochs")
            .unwrap()
            .u32()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(epochs, [0, 3]);
    }
}
