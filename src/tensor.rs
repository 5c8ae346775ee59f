//! Small helpers between candle tensors and plain slices, shared by every layer of the crate.

use std::mem::MaybeUninit;

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

    /// The view of columns `cols` (no copy).
    fn columns(self, cols: std::ops::Range<usize>) -> Self {
        assert!(
            cols.start < cols.end && cols.end <= self.cols,
            "column range out of the matrix"
        );
        MatRef {
            data: &self.data[cols.start * self.col_stride..],
            cols: cols.len(),
            ..self
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
///
/// A wide product (at least two blocks of [`MATMUL_COLUMNS`] output columns) runs as one serial
/// `gemm` per block of columns, the blocks in parallel: each thread then packs its own part of
/// `b`, where `gemm`'s own parallel mode packed it on the calling thread while the others
/// waited. A deep, narrow one goes to [`matmul_deep`] for the same reason (measured: the NeRV
/// training step, 50.6 → 37.4 ms; with the deep blocks alone, 43.8 and 44.5 ms). The blocks are
/// the same for any thread count.
pub(crate) fn matmul(out: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    let n = b.cols;
    if a.cols >= 2 * MATMUL_DEPTH && n < 2 * MATMUL_COLUMNS {
        return matmul_deep(out, a, b, accumulate);
    }
    if n < 2 * MATMUL_COLUMNS {
        let threads = rayon::current_num_threads();
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        return gemm_into(out, a, b, accumulate, par);
    }
    use rayon::prelude::*;
    assert!(out.len() >= a.rows * n, "output buffer too short");
    let dst = SendPtr(out.as_mut_ptr());
    (0..n.div_ceil(MATMUL_COLUMNS))
        .into_par_iter()
        .for_each(|j| {
            let cols = j * MATMUL_COLUMNS..n.min((j + 1) * MATMUL_COLUMNS);
            // SAFETY: `out` holds `a.rows` rows of `n` values (asserted above) and outlives the
            // loop; block j writes only columns `cols` of each row, so the blocks write disjoint
            // elements.
            unsafe {
                gemm_raw(
                    dst.at(cols.start),
                    n,
                    a,
                    b.columns(cols),
                    accumulate,
                    gemm::Parallelism::None,
                )
            }
        });
}

/// Output columns per block of a wide [`matmul`].
const MATMUL_COLUMNS: usize = 1024;
/// Inner-dimension values per block of a deep [`matmul`].
const MATMUL_DEPTH: usize = 2048;

/// A deep, narrow [`matmul`] (e.g. a weight gradient, summed over batch × pixels): the product
/// over each block of [`MATMUL_DEPTH`] inner values in parallel, each packed by its own thread,
/// then the blocks' products added in block order (the same for any thread count).
fn matmul_deep(out: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    use rayon::prelude::*;
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let parts: Vec<Vec<f32>> = (0..k.div_ceil(MATMUL_DEPTH))
        .into_par_iter()
        .map(|j| {
            let depth = j * MATMUL_DEPTH..k.min((j + 1) * MATMUL_DEPTH);
            let mut part = vec![0.0f32; m * n];
            let (a, b) = (a.columns(depth.clone()), b.t().columns(depth).t());
            gemm_into(&mut part, a, b, false, gemm::Parallelism::None);
            part
        })
        .collect();
    let out = &mut out[..m * n];
    if !accumulate {
        out.fill(0.0);
    }
    for part in &parts {
        out.iter_mut().zip(part).for_each(|(o, &p)| *o += p);
    }
}

/// A pointer to an output buffer whose disjoint parts parallel tasks write.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: only used to hand disjoint parts of one `&mut [f32]` to the tasks of one parallel loop
// that the borrow outlives.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `offset` values on (a method, so that closures capture the whole wrapper).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// [`matmul`] on the calling thread alone: for small products inside a task that is already
/// one of many parallel ones.
pub(crate) fn matmul_serial(out: &mut [f32], a: MatRef, b: MatRef, accumulate: bool) {
    gemm_into(out, a, b, accumulate, gemm::Parallelism::None);
}

fn gemm_into(out: &mut [f32], a: MatRef, b: MatRef, accumulate: bool, par: gemm::Parallelism) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert!(out.len() >= a.rows * b.cols, "output buffer too short");
    // SAFETY: `out` holds `a.rows` rows of `b.cols` values, asserted above.
    unsafe { gemm_raw(out.as_mut_ptr(), b.cols, a, b, accumulate, par) }
}

/// `dst = a·b` (or `+=`), `dst` row-major with row stride `dst_row_stride`.
///
/// # Safety
/// `dst` must be valid for writes at every `r·dst_row_stride + c`, r < `a.rows`, c < `b.cols`,
/// and nothing else may access those elements meanwhile.
unsafe fn gemm_raw(
    dst: *mut f32,
    dst_row_stride: usize,
    a: MatRef,
    b: MatRef,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    // SAFETY: `dst` as the caller guarantees; `a` and `b` stay inside their slices: `MatRef`
    // bounds its largest offset, (rows−1)·row_stride + (cols−1)·col_stride, by its slice length.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            dst_row_stride as isize,
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
    fault_in(&mut v, 0.0);
    v
}

/// An empty f32 buffer with room for `n` values, for a large output that is written in full
/// before it is read: its memory is not zeroed by a `memset` on the calling thread, and is
/// prepared as [`zeroed_buffer`]'s (huge pages, faulted in by all threads). The caller writes
/// the values through [`Vec::spare_capacity_mut`], then sets the length.
pub(crate) fn unwritten_buffer(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    let spare = &mut v.spare_capacity_mut()[..n];
    #[cfg(target_os = "linux")]
    advise_huge_pages(spare);
    fault_in(spare, MaybeUninit::new(0.0));
    v
}

/// Copies `src` into `dst` (of the same length), on x86_64 with non-temporal stores where `dst`
/// is 16-byte aligned: an output that is written once and not read back here is then not read
/// into the cache first. Call [`stream_fence`] before the values are handed to another thread.
#[inline(always)]
pub(crate) fn stream_copy(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "a streamed copy between slices of different lengths"
    );
    let plain = |d: &mut [MaybeUninit<f32>], s: &[f32]| {
        d.iter_mut().zip(s).for_each(|(d, &v)| {
            d.write(v);
        })
    };
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        let head = dst.as_ptr().align_offset(16).min(dst.len());
        let body = (dst.len() - head) / 4 * 4;
        let (lead, rest) = dst.split_at_mut(head);
        let (mid, tail) = rest.split_at_mut(body);
        plain(lead, &src[..head]);
        for (d, s) in mid.chunks_exact_mut(4).zip(src[head..].chunks_exact(4)) {
            // SAFETY: SSE is part of x86_64; `d` and `s` hold 4 values each, and `d` is 16-byte
            // aligned: `mid` starts at the first 16-byte boundary of `dst`, and each chunk 16
            // bytes after the last.
            unsafe { _mm_stream_ps(d.as_mut_ptr().cast(), _mm_loadu_ps(s.as_ptr())) };
        }
        plain(tail, &src[head + body..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    plain(dst, src);
}

/// Orders the non-temporal stores of [`stream_copy`] before what the thread does next (e.g.
/// rayon's completion signal); nothing where there are none.
#[inline(always)]
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Touches every page of a large fresh buffer (`value`, a zero, written once per 4 KiB page:
/// a zeroed buffer already holds it, an unwritten one is overwritten later), each thread of
/// rayon's pool on its own 2 MiB spans. The kernel's zeroing of
/// fresh pages then runs on every thread at once: the workers that fill a buffer touch its
/// pages in an interleaved order, so their faults queue on the same huge pages (measured: the
/// FFN maps' fresh output).
fn fault_in<T: Copy + Send + Sync>(v: &mut [T], value: T) {
    use rayon::prelude::*;
    let (page, span) = (4096 / size_of::<T>(), (2 << 20) / size_of::<T>());
    if v.len() >= 2 * span && rayon::current_num_threads() > 1 {
        v.par_chunks_mut(span)
            .for_each(|span| span.iter_mut().step_by(page).for_each(|x| *x = value));
    }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &[T]) {
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

    #[test]
    fn wide_and_deep_products_in_blocks_equal_the_plain_sums() {
        // Small integers: every product and sum is exact in f32, whatever the order.
        let int = |i: usize, m: usize| ((i * 7 + 3) % m) as f32 - (m / 2) as f32;
        for (m, k, n) in [
            (3, 5, 2 * MATMUL_COLUMNS + 3),            // wide: blocks of columns
            (3, 2 * MATMUL_DEPTH + 5, 7),              // deep: blocks of the inner dimension
            (2, 2 * MATMUL_DEPTH, 2 * MATMUL_COLUMNS), // both: the deep path
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| int(i, 5)).collect();
            // b stored transposed ([n, k]) so that the blocks read a strided view.
            let bt: Vec<f32> = (0..n * k).map(|i| int(i, 3)).collect();
            let expect: Vec<f32> = (0..m * n)
                .map(|o| (0..k).map(|j| a[o / n * k + j] * bt[o % n * k + j]).sum())
                .collect();
            for accumulate in [false, true] {
                let mut out = vec![1.0f32; m * n];
                let (ma, mb) = (
                    MatRef::row_major(&a, m, k),
                    MatRef::row_major(&bt, n, k).t(),
                );
                matmul(&mut out, ma, mb, accumulate);
                let plus = if accumulate { 1.0 } else { 0.0 };
                assert!(
                    out.iter().zip(&expect).all(|(o, e)| *o == e + plus),
                    "{m}×{k}·{k}×{n}, accumulate {accumulate}"
                );
            }
        }
    }
}
