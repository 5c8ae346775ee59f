//! The official training losses and frame metrics of the HNeRV code (`hnerv_utils.loss_fn`,
//! `psnr_fn_single`, `msssim_fn_single`), as differentiable candle operations.
//!
//! [`Loss`] is `--loss`: `L2`, `L1`, `SSIM` and the mixes `Fusion1`…`Fusion12`, each computed per
//! frame (mean over channels and pixels) and then averaged over the batch, as `loss_fn` does.
//! SSIM and MS-SSIM follow `pytorch_msssim` (which the official code calls with `data_range=1`):
//! an 11-tap Gaussian window with σ = 1.5 applied separably without padding (a side shorter than
//! the window is not smoothed), K₁ = 0.01, K₂ = 0.03; MS-SSIM over 5 scales with weights
//! `[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]`, 2×2 average pooling (odd sides padded with zeros
//! that count) between scales, the contrast terms and the last SSIM clipped at 0. The blur is a
//! custom operation with its own gradient on the CPU ([`super::blur`]), the pooling a matrix
//! product, so gradients flow through everything.

use candle_core::{DType, Device, Tensor, D};

use super::blur::correlate_valid;
use crate::error::{Result, XincError};

/// Window size and σ of the Gaussian, and the SSIM constants (data range 1).
const WIN: usize = 11;
const SIGMA: f32 = 1.5;
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;
/// MS-SSIM's scale weights.
const MS_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// A training loss (`--loss`): the weights of its terms, per frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    name: &'static str,
    l2: f64,
    l1: f64,
    /// Weight of 1 − SSIM.
    ssim: f64,
    /// Weight of 1 − MS-SSIM.
    ms_ssim: f64,
}

impl Default for Loss {
    /// `L2`, the loss of the paper's NeRV runs.
    fn default() -> Self {
        Loss::ALL[0]
    }
}

const fn loss(name: &'static str, l2: f64, l1: f64, ssim: f64, ms_ssim: f64) -> Loss {
    Loss {
        name,
        l2,
        l1,
        ssim,
        ms_ssim,
    }
}

impl Loss {
    /// Every official loss.
    pub const ALL: [Loss; 15] = [
        loss("L2", 1.0, 0.0, 0.0, 0.0),
        loss("L1", 0.0, 1.0, 0.0, 0.0),
        loss("SSIM", 0.0, 0.0, 1.0, 0.0),
        loss("Fusion1", 0.3, 0.0, 0.7, 0.0),
        loss("Fusion2", 0.0, 0.3, 0.7, 0.0),
        loss("Fusion3", 0.5, 0.0, 0.5, 0.0),
        loss("Fusion4", 0.0, 0.5, 0.5, 0.0),
        loss("Fusion5", 0.7, 0.0, 0.3, 0.0),
        loss("Fusion6", 0.0, 0.7, 0.3, 0.0),
        loss("Fusion7", 0.7, 0.3, 0.0, 0.0),
        loss("Fusion8", 0.5, 0.5, 0.0, 0.0),
        loss("Fusion9", 0.0, 0.9, 0.1, 0.0),
        loss("Fusion10", 0.0, 0.7, 0.0, 0.3),
        loss("Fusion11", 0.0, 0.9, 0.0, 0.1),
        loss("Fusion12", 0.0, 0.8, 0.0, 0.2),
    ];

    /// The loss of an official `--loss` value.
    pub fn from_name(name: &str) -> Result<Loss> {
        Loss::ALL
            .iter()
            .copied()
            .find(|l| l.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Loss::ALL.iter().map(|l| l.name).collect();
                XincError::InvalidArgument(format!(
                    "--loss `{name}` is not an official loss ({})",
                    names.join(", ")
                ))
            })
    }

    /// The `--loss` of an official flag string, `L2` when it has none.
    pub fn from_official_args(args: &str) -> Result<Loss> {
        let mut tokens = args.split_whitespace();
        while let Some(t) = tokens.next() {
            if t == "--loss" {
                let v = tokens
                    .next()
                    .ok_or_else(|| XincError::InvalidArgument("--loss takes one value".into()))?;
                return Loss::from_name(v);
            }
        }
        Ok(Loss::default())
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the loss needs MS-SSIM (frames with both sides above 160 pixels).
    /// The weights `(l2, l1)` of a loss made of pixel terms only (`None` with an SSIM term).
    pub fn pixel_weights(&self) -> Option<(f64, f64)> {
        (self.ssim == 0.0 && self.ms_ssim == 0.0).then_some((self.l2, self.l1))
    }

    pub fn needs_ms_ssim(&self) -> bool {
        self.ms_ssim != 0.0
    }

    /// The loss of predictions `pred` against `target` (`[N, C, H, W]`): per frame, then the
    /// batch mean; a scalar, differentiable in `pred`.
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(self.per_frame(pred, target)?.mean_all()?)
    }

    /// The loss of each frame, `[N]`.
    pub fn per_frame(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = pred.dim(0)?;
        let diff = (pred - target)?;
        let mut total = Tensor::zeros(n, pred.dtype(), pred.device())?;
        if self.l2 != 0.0 {
            total = (total + (diff.sqr()?.flatten_from(1)?.mean(1)? * self.l2)?)?;
        }
        if self.l1 != 0.0 {
            total = (total + (diff.abs()?.flatten_from(1)?.mean(1)? * self.l1)?)?;
        }
        if self.ssim != 0.0 {
            let s = ssim(pred, target)?;
            total = (total + (s.affine(-1.0, 1.0)? * self.ssim)?)?;
        }
        if self.ms_ssim != 0.0 {
            let s = ms_ssim(pred, target)?;
            total = (total + (s.affine(-1.0, 1.0)? * self.ms_ssim)?)?;
        }
        Ok(total)
    }
}

/// The normalised 11-tap Gaussian as `pytorch_msssim` builds it in f32: each tap the f32 of
/// exp(−c²/2σ²), their sum rounded once to f32 (PyTorch's rounding: SSIM to 1e-5 of it).
fn gaussian() -> Vec<f32> {
    let two_var = 2.0 * SIGMA * SIGMA;
    let g: Vec<f32> = (0..WIN)
        .map(|i| {
            let c = i as f32 - (WIN / 2) as f32;
            f64::from(-(c * c) / two_var).exp() as f32
        })
        .collect();
    let sum = g.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
    g.iter().map(|v| v / sum).collect()
}

/// The separable Gaussian filter of `x` (`[N, C, H, W]`) along H and W, without padding; a side
/// shorter than the window is not smoothed.
fn blur(x: &Tensor) -> Result<Tensor> {
    let g = gaussian();
    let mut out = x.clone();
    for axis in [2, 3] {
        if out.dim(axis)? >= WIN {
            out = correlate_valid(&out, &g, axis)?;
        }
    }
    Ok(out)
}

/// SSIM and the contrast-structure term per frame and channel, `([N, C], [N, C])`.
fn ssim_terms(x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
    let f = blur;
    let (mu1, mu2) = (f(x)?, f(y)?);
    let (mu1_sq, mu2_sq, mu12) = (mu1.sqr()?, mu2.sqr()?, (&mu1 * &mu2)?);
    let s1 = (f(&x.sqr()?)? - &mu1_sq)?;
    let s2 = (f(&y.sqr()?)? - &mu2_sq)?;
    let s12 = (f(&(x * y)?)? - &mu12)?;
    let cs = ((s12 * 2.0)? + C2)?.div(&((s1 + s2)? + C2)?)?;
    let lum = ((mu12 * 2.0)? + C1)?.div(&((mu1_sq + mu2_sq)? + C1)?)?;
    let map = (lum * &cs)?;
    let mean = |t: Tensor| -> Result<Tensor> { Ok(t.flatten_from(2)?.mean(D::Minus1)?) };
    Ok((mean(map)?, mean(cs)?))
}

/// SSIM of each frame (mean over channels), `[N]`.
pub fn ssim(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(ssim_terms(x, y)?.0.mean(1)?)
}

/// 2×2 average pooling with `pytorch_msssim`'s padding (1 on odd sides, zeros counted), as the
/// `[n', n]` matrix of one axis.
fn pool_matrix(n: usize, device: &Device) -> Result<Tensor> {
    let p = n % 2;
    let m = (n + 2 * p - 2) / 2 + 1;
    let mut a = vec![0f32; m * n];
    for i in 0..m {
        for q in [2 * i, 2 * i + 1] {
            if let Some(src) = q.checked_sub(p).filter(|&s| s < n) {
                a[i * n + src] = 0.5;
            }
        }
    }
    Ok(Tensor::from_vec(a, (m, n), device)?)
}

fn pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ph, pw) = (pool_matrix(h, x.device())?, pool_matrix(w, x.device())?);
    let (h2, w2) = (ph.dim(0)?, pw.dim(0)?);
    let rows = x.reshape((n * c * h, w))?.matmul(&pw.t()?)?;
    let rows = rows.reshape((n * c, h, w2))?;
    Ok(ph
        .broadcast_left(n * c)?
        .matmul(&rows)?
        .reshape((n, c, h2, w2))?)
}

/// The smallest side MS-SSIM accepts (more than (11 − 1)·2⁴ pixels).
pub const MS_SSIM_MIN_SIDE: usize = (WIN - 1) * 16 + 1;

/// MS-SSIM of each frame (mean over channels), `[N]`. Frames with a side of 160 pixels or fewer
/// are refused, as `pytorch_msssim` refuses them.
pub fn ms_ssim(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h.min(w) < MS_SSIM_MIN_SIDE {
        return Err(XincError::InvalidArgument(format!(
            "MS-SSIM needs frames larger than 160 pixels on each side, these are {h}×{w}"
        )));
    }
    let (mut x, mut y) = (x.clone(), y.clone());
    let mut product: Option<Tensor> = None;
    for (level, &wt) in MS_WEIGHTS.iter().enumerate() {
        let (s, cs) = ssim_terms(&x, &y)?;
        let term = if level + 1 < MS_WEIGHTS.len() {
            x = pool(&x)?;
            y = pool(&y)?;
            cs.relu()?.powf(wt)?
        } else {
            s.relu()?.powf(wt)?
        };
        product = Some(match product {
            None => term,
            Some(p) => (p * term)?,
        });
    }
    Ok(product.expect("five levels").mean(1)?)
}

/// The official per-frame PSNR of the NeRV code: `−10·log10(MSE + 1e-9)`, unclamped, `[N]`.
pub fn psnr(pred: &Tensor, target: &Tensor) -> Result<Vec<f64>> {
    let mse = (pred - target)?.sqr()?.flatten_from(1)?.mean(1)?;
    Ok(mse
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .iter()
        .map(|m| -10.0 * (m + 1e-9).log10())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_parse_by_their_official_names() {
        assert_eq!(Loss::from_name("Fusion6").unwrap().name(), "Fusion6");
        assert_eq!(
            Loss::from_official_args("--lr 1 --loss L1 -e 3")
                .unwrap()
                .name(),
            "L1"
        );
        assert_eq!(Loss::from_official_args("--lr 1").unwrap(), Loss::default());
        assert!(Loss::from_name("Fusion13")
            .unwrap_err()
            .to_string()
            .contains("--loss"));
        // Each mix weighs its terms to 1.
        for l in Loss::ALL {
            assert!(
                (l.l2 + l.l1 + l.ssim + l.ms_ssim - 1.0).abs() < 1e-12,
                "{}",
                l.name
            );
        }
    }

    #[test]
    fn identical_frames_have_ssim_one_and_zero_loss() {
        let x = Tensor::rand(0f32, 1f32, (2, 3, 24, 30), &Device::Cpu).unwrap();
        let s = ssim(&x, &x).unwrap().to_vec1::<f32>().unwrap();
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-6), "{s:?}");
        for l in Loss::ALL.iter().filter(|l| !l.needs_ms_ssim()) {
            let v = l.forward(&x, &x).unwrap().to_scalar::<f32>().unwrap();
            assert!(v.abs() < 1e-6, "{}: {v}", l.name);
        }
    }

    #[test]
    fn pooling_and_filtering_match_their_definitions() {
        // Odd side 3: padding 1, windows [pad, 0], [1, 2] → [x0/2, (x1 + x2)/2].
        let p = pool_matrix(3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(p, vec![vec![0.5, 0.0, 0.0], vec![0.0, 0.5, 0.5]]);
        let g = gaussian();
        assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-6 && g[5] > g[4]);
        // A constant plane stays constant under the valid filter; a side under 11 is kept.
        let x = (Tensor::ones((1, 1, 12, 13), DType::F32, &Device::Cpu).unwrap() * 0.25).unwrap();
        assert_eq!(
            blur(&x.narrow(2, 0, 10).unwrap()).unwrap().dims(),
            &[1, 1, 10, 3]
        );
        let b = blur(&x).unwrap();
        assert_eq!(b.dims(), &[1, 1, 2, 3]);
        assert!(b
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn the_ssim_loss_has_gradients() {
        let dev = Device::Cpu;
        // Fixed, smooth inputs: the check is deterministic.
        let wave = |phase: f32| -> Vec<f32> {
            (0..768)
                .map(|i| 0.5 + 0.4 * ((i as f32) * 0.37 + phase).sin())
                .collect()
        };
        let target = Tensor::from_vec(wave(0.0), (1, 3, 16, 16), &dev).unwrap();
        let var = candle_core::Var::from_vec(wave(0.9), (1, 3, 16, 16), &dev).unwrap();
        // Fusion1 (L2 and SSIM): smooth, so a central difference checks it.
        let loss = Loss::from_name("Fusion1").unwrap();
        let l = loss.forward(var.as_tensor(), &target).unwrap();
        let g = l.backward().unwrap();
        let grad = g.get(var.as_tensor()).unwrap();
        // Finite difference along the gradient's own direction at one value.
        let gv = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let k = 100;
        let eps = 1e-2f32;
        let mut x = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        x[k] += eps;
        let plus = Tensor::from_vec(x.clone(), (1, 3, 16, 16), &dev).unwrap();
        x[k] -= 2.0 * eps;
        let minus = Tensor::from_vec(x, (1, 3, 16, 16), &dev).unwrap();
        let f = |t: &Tensor| {
            loss.forward(t, &target)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let numeric = (f(&plus) - f(&minus)) / (2.0 * eps);
        assert!(
            (numeric - gv[k]).abs() < 1e-2 * gv[k].abs().max(1e-3),
            "{numeric} vs {}",
            gv[k]
        );
    }
}
