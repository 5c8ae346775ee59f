//! Small helpers between candle tensors and plain slices, shared by every layer of the crate.

use candle_core::{DType, Device, Storage, Tensor};

use crate::error::{Result, XincError};

/// Runs `f` on the values of a tensor as a contiguous f32 slice, without a copy when the tensor
/// already is a contiguous f32 CPU tensor.
pub fn with_f32_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let all = cpu.as_slice::<f32>()?;
            let start = layout.start_offset();
            Ok(f(&all[start..start + t.elem_count()]))
        }
        _ => Err(XincError::InvalidArgument(
            "tensor is not on the CPU".into(),
        )),
    }
}

/// Runs `f` compiled for AVX2 and FMA when the CPU has them, else as it is. Whatever `f` inlines
/// (the canvas kernels mark their hot loops `#[inline]`) is then vectorised 8 lanes wide. Rust
/// never contracts `a·b + c` into an FMA on its own, so the results are bit-identical either way.
#[inline(always)]
pub(crate) fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { run(f) };
    }
    f()
}

/// Defines a function whose body is compiled twice, for AVX2 and FMA and as it is, and runs the
/// first where the CPU has them. Unlike [`with_avx2`], whose closure LLVM may leave un-inlined
/// (and so unvectorised) when it is large, the body here is always inlined into the AVX2 copy.
/// Rust never contracts `a·b + c` into an FMA on its own, and `mul_add` is correctly rounded
/// everywhere, so both copies give the same bits. (An AVX-512 copy measured no faster.)
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident $(<$(const $c:ident: $ct:ty),*>)?
        ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fast $(<$(const $c: $ct),*>)? ($($arg: $ty),*) $(-> $ret)? {
                body $(::<$($c),*>)? ($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                return unsafe { fast $(::<$($c),*>)? ($($arg),*) };
            }
            body $(::<$($c),*>)? ($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Transposes a row-major `[rows, cols]` buffer into `[cols, rows]`.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    for (r, row) in src.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

/// A read-only view of a strided f32 matrix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows`×`cols` matrix. Panics if `data` is too short (a programming error).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix buffer too short");
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// `out = a·b` (or `out += a·b` with `accumulate`), `out` row-major `[a.rows, b.cols]`, with
/// the `gemm` kernels candle uses on the CPU, parallel over rayon's threads. Deterministic: the
/// reduction order of each output element does not depend on the thread count.
pub(crate) fn matmul(out: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm_into(out, a, b, accumulate, par);
}

/// [`matmul`] on the calling thread alone: for small products inside a task that is already
/// one of many parallel ones.
pub(crate) fn matmul_serial(out: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    gemm_into(out, a, b, accumulate, gemm::Parallelism::None);
}

fn gemm_into(out: &mut [f32], a: MatRef, b: MatRef, accumulate: bool, par: gemm::Parallelism) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert!(out.len() >= a.rows * b.cols, "output buffer too short");
    // SAFETY: every pointer stays inside its slice: the asserts above and in `MatRef` bound the
    // largest offset, (rows−1)·row_stride + (cols−1)·col_stride, by the slice length.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            out.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// A zero-filled f32 buffer for large outputs. On Linux the buffer is marked for transparent
/// huge pages before it is first touched, which halves the cost of faulting in a fresh canvas
/// (hundreds of MB) where THP is in `madvise` mode. Elsewhere it is a plain `vec![0.0; n]`.
/// A large buffer is then faulted in by all of rayon's threads ([`fault_in`]).
pub fn zeroed_buffer(n: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    #[cfg(target_os = "linux")]
    advise_huge_pages(&v);
    fault_in(&mut v);
    v
}

/// Touches every page of a large fresh buffer (one zero written per 4 KiB page, a value it
/// already has), each thread of rayon's pool on its own 2 MiB spans. The kernel's zeroing of
/// fresh pages then runs on every thread at once: the workers that fill a buffer touch its
/// pages in an interleaved order, so their faults queue on the same huge pages (measured: the
/// FFN maps' fresh output).
fn fault_in(v: &mut [f32]) {
    use rayon::prelude::*;
    const PAGE: usize = 4096 / size_of::<f32>();
    const SPAN: usize = (2 << 20) / size_of::<f32>();
    if v.len() >= 2 * SPAN && rayon::current_num_threads() > 1 {
        v.par_chunks_mut(SPAN)
            .for_each(|span| span.iter_mut().step_by(PAGE).for_each(|x| *x = 0.0));
    }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(v: &[f32]) {
    const HUGE: usize = 2 << 20;
    let start = v.as_ptr() as usize;
    let end = start + std::mem::size_of_val(v);
    let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if hi > lo {
        // SAFETY: [lo, hi) lies inside the buffer we own; MADV_HUGEPAGE changes no contents or
        // semantics, only how the kernel backs the pages. A failure is harmless and ignored.
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_handles_transposed_views_and_accumulation() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2x3
        let b = [1.0, 0.0, -1.0, 2.0, 0.5, 1.0]; // 3x2
        let mut out = [0.0; 4];
        matmul(
            &mut out,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            false,
        );
        assert_eq!(out, [0.5, 7.0, 2.0, 16.0]);
        // (bᵀ·aᵀ) = (a·b)ᵀ, through transposed views.
        let mut t = [0.0; 4];
        matmul(
            &mut t,
            MatRef::row_major(&b, 3, 2).t(),
            MatRef::row_major(&a, 2, 3).t(),
            false,
        );
        assert_eq!(t, [0.5, 2.0, 7.0, 16.0]);
        matmul(
            &mut t,
            MatRef::row_major(&b, 3, 2).t(),
            MatRef::row_major(&a, 2, 3).t(),
            true,
        );
        assert_eq!(t, [1.0, 4.0, 14.0, 32.0]);
        assert_eq!(transpose(&a, 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
