//! Small helpers between candle tensors and plain slices, shared by every layer of the crate.

use candle_core::{DType, Device, Storage, Tensor};

use crate::error::{Result, XincError};

/// Runs `f` on the values of a tensor as a contiguous f32 slice, without a copy when the tensor
/// already is a contiguous f32 CPU tensor.
pub fn with_f32_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let all = cpu.as_slice::<f32>()?;
            let start = layout.start_offset();
            Ok(f(&all[start..start + t.elem_count()]))
        }
        _ => Err(XincError::InvalidArgument("tensor is not on the CPU".into())),
    }
}

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
