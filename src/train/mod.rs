//! Training of INRs with candle, and the official quality metrics.

mod adam;
mod blur;
pub mod ffn;
mod fused;
pub mod loss;
pub mod nerv;
pub mod nerv_fused;
mod py_random;
pub mod split;

/// The official FFN PSNR (`image_inr`): the prediction is clamped to [0, 1] and rounded to 8 bits
/// before the MSE against the ground truth, `−10·log10(MSE)`.
pub fn psnr_quantised(pred: &[f32], target: &[f32]) -> f64 {
    let mse = pred
        .iter()
        .zip(target)
        .map(|(&p, &t)| {
            let q = ((p.clamp(0.0, 1.0) * 255.0).round() / 255.0) as f64;
            (q - t as f64).powi(2)
        })
        .sum::<f64>()
        / pred.len().max(1) as f64;
    -10.0 * mse.log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_uses_the_quantised_prediction() {
        // A prediction within half a grey level of the target rounds onto it: infinite PSNR.
        let t = [0.2f32, 0.4, 0.6];
        let p = [0.2 + 0.001, 0.4 - 0.001, 0.6];
        assert!(psnr_quantised(&p, &[51.0 / 255.0, 102.0 / 255.0, 153.0 / 255.0]).is_infinite());
        // An error of one grey level everywhere: MSE = (1/255)^2 -> 48.13 dB.
        let q: Vec<f32> = t.iter().map(|v| (v * 255.0 + 1.0) / 255.0).collect();
        let psnr = psnr_quantised(&q, &t);
        assert!((psnr - 48.1308).abs() < 1e-3, "{psnr}");
        // Clamping: a prediction of 2.0 against 1.0 costs nothing.
        assert!(psnr_quantised(&[2.0], &[1.0]).is_infinite());
    }
}
