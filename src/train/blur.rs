//! A 1-D "valid" correlation with a short symmetric kernel along one axis of a tensor, with its
//! gradient: the separable Gaussian blur of SSIM ([`crate::train::ssim`]).
//!
//! On the CPU it is a candle custom operation: each output line is Σ_k g[k]·x[i + k], written as
//! one multiply-add over a contiguous block per tap, so the compiler vectorises it, with the
//! blocks of independent planes spread over threads. Its gradient is the transposed operation
//! (each input receives Σ_k g[k]·grad[j − k]), which is also its own custom operation. candle's
//! `conv2d` would do the same job, but its CPU backward pass (a transposed convolution and a
//! kernel gradient nobody asked for) made one SSIM forward and backward on a batch of two
//! 128×256 frames take ~430 ms; this takes a few ms. On other devices `conv2d` is used.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Result, XincError};

/// Valid correlation of `t` with `taps` along dimension `axis`: that dimension shrinks from L to
/// L − taps + 1 (L must be at least the number of taps). Differentiable.
pub(crate) fn correlate_valid(t: &Tensor, taps: &[f32], axis: usize) -> Result<Tensor> {
    let len = t.dim(axis)?;
    if taps.is_empty() || len < taps.len() {
        return Err(XincError::InvalidArgument(format!(
            "a {}-tap blur along a dimension of {len}",
            taps.len()
        )));
    }
    if !t.device().is_cpu() {
        return conv_fallback(t, taps, axis);
    }
    let op = Correlate {
        taps: taps.to_vec(),
        axis,
        transposed: false,
    };
    Ok(t.contiguous()?.apply_op1(op)?)
}

/// The same with candle's `conv2d` (any device): the axis moved last, one channel.
fn conv_fallback(t: &Tensor, taps: &[f32], axis: usize) -> Result<Tensor> {
    let last = t.rank() - 1;
    let moved = t.transpose(axis, last)?.contiguous()?;
    let dims = moved.dims().to_vec();
    let (rows, len) = (dims[..last].iter().product::<usize>(), dims[last]);
    let kernel =
        Tensor::from_slice(taps, (1, 1, 1, taps.len()), t.device())?.to_dtype(t.dtype())?;
    let out = moved
        .reshape((rows, 1, 1, len))?
        .conv2d(&kernel, 0, 1, 1, 1)?;
    let mut out_dims = dims;
    out_dims[last] = len + 1 - taps.len();
    Ok(out.reshape(out_dims)?.transpose(axis, last)?.contiguous()?)
}

/// The custom operation: forward (valid correlation, L → L − K + 1) or transposed
/// (L − K + 1 → L, the gradient of the forward one).
#[derive(Clone)]
struct Correlate {
    taps: Vec<f32>,
    axis: usize,
    transposed: bool,
}

impl Correlate {
    /// `(outer, inner)`: the products of the dimensions before and after the axis.
    fn split(&self, dims: &[usize]) -> (usize, usize) {
        (
            dims[..self.axis].iter().product(),
            dims[self.axis + 1..].iter().product(),
        )
    }

    fn run<T>(&self, x: &[T], dims: &[usize]) -> (Vec<T>, Vec<usize>)
    where
        T: Copy
            + Send
            + Sync
            + Default
            + From<f32>
            + std::ops::Mul<Output = T>
            + std::ops::AddAssign,
    {
        let (outer, inner) = self.split(dims);
        let k = self.taps.len();
        let len = dims[self.axis];
        let out_len = if self.transposed {
            len + k - 1
        } else {
            len + 1 - k
        };
        let short = len.min(out_len) * inner;
        let (in_block, out_block) = (len * inner, out_len * inner);
        let taps: Vec<T> = self.taps.iter().map(|&g| T::from(g)).collect();
        let mut out = vec![T::default(); outer * out_block];
        out.par_chunks_mut(out_block)
            .zip(x.par_chunks(in_block))
            .with_min_len((1 << 14) / out_block.max(1) + 1)
            .for_each(|(o, x)| {
                for (j, &g) in taps.iter().enumerate() {
                    let at = j * inner;
                    let (dst, src) = if self.transposed {
                        (&mut o[at..at + short], &x[..short])
                    } else {
                        (&mut o[..short], &x[at..at + short])
                    };
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d += g * s;
                    }
                }
            });
        let mut out_dims = dims.to_vec();
        out_dims[self.axis] = out_len;
        (out, out_dims)
    }
}

impl CustomOp1 for Correlate {
    fn name(&self) -> &'static str {
        if self.transposed {
            "correlate-valid-transposed"
        } else {
            "correlate-valid"
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: the input must be contiguous", self.name());
        };
        let dims = layout.dims();
        match storage {
            CpuStorage::F32(v) => {
                let (out, d) = self.run(&v[start..end], dims);
                Ok((CpuStorage::F32(out), Shape::from(d)))
            }
            CpuStorage::F64(v) => {
                let (out, d) = self.run(&v[start..end], dims);
                Ok((CpuStorage::F64(out), Shape::from(d)))
            }
            _ => candle_core::bail!("{}: only f32 and f64 are supported", self.name()),
        }
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let back = Correlate {
            transposed: !self.transposed,
            ..self.clone()
        };
        Ok(Some(grad.contiguous()?.apply_op1(back)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    type Blur = fn(&Tensor, &[f32], usize) -> Result<Tensor>;

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn correlation_along_each_axis_by_hand() {
        let dev = Device::Cpu;
        // [1, 2, 4]: 2 rows of 4.
        let t = Tensor::new(&[[[1f64, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]]], &dev).unwrap();
        let taps = [0.5f32, 0.25];
        // Along the rows: out[i] = 0.5·x[i] + 0.25·x[i+1].
        assert_eq!(
            values(&correlate_valid(&t, &taps, 2).unwrap()),
            [1.0, 1.75, 2.5, 10.0, 17.5, 25.0]
        );
        // Along the columns: one row, 0.5·row0 + 0.25·row1.
        assert_eq!(
            values(&correlate_valid(&t, &taps, 1).unwrap()),
            [3.0, 6.0, 9.0, 12.0]
        );
        let err = correlate_valid(&t, &[1.0; 5], 2).unwrap_err().to_string();
        assert!(err.contains("a 5-tap blur along a dimension of 4"), "{err}");
    }

    #[test]
    fn the_custom_op_equals_conv2d_with_its_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::rand(0f64, 1.0, (2, 3, 13, 17), &dev).unwrap();
        let w = Tensor::rand(0f64, 1.0, (2, 3, 13 - 2, 17 - 4), &dev).unwrap();
        let taps = [0.1f32, 0.2, 0.4, 0.2, 0.1];
        let taps3 = [0.25f32, 0.5, 0.25];
        // Blur along H (3 taps) then W (5 taps), weighted sum as a scalar to differentiate.
        let run = |f: Blur| {
            let var = Var::from_tensor(&x).unwrap();
            let b = f(var.as_tensor(), &taps3, 2).unwrap();
            let b = f(&b, &taps, 3).unwrap();
            let s = (&b * &w).unwrap().sum_all().unwrap();
            let g = s.backward().unwrap();
            (values(&b), values(g.get(var.as_tensor()).unwrap()))
        };
        let (ours, our_grad) = run(correlate_valid);
        let (conv, conv_grad) = run(conv_fallback);
        for (a, b) in ours
            .iter()
            .zip(&conv)
            .chain(our_grad.iter().zip(&conv_grad))
        {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
}
