//! xinc's own CUDA kernel for the NeRV canvas (`block_sums.cu`, compiled to PTX by `build.rs`).
//!
//! With candle's operations a block's summary materialises every full-resolution map several
//! times over (placement, padding, shifted sums, upsampling, absolute values): for block 1 of the
//! paper's NeRV that is tens of GB of memory traffic per frame. The kernel runs each kernel's
//! chain of GELUs on its low-resolution planes in shared memory and reduces its full-resolution
//! map on the fly; the only writes are the per-kernel sums and the last planes' sum over input
//! channels, from which the summed maps are expanded.

use std::ops::Range;

use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::device_layer::DeviceLayer;
use super::layer::NervLayer;
use crate::error::Result;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/block_sums.ptx"));

/// The shared memory the planes of one kernel may take (the default per-block limit, less the
/// kernel's own reduction buffer).
const MAX_SHARED_BYTES: usize = 47 * 1024;

/// Thread blocks to aim for (several per SM on an H100/H200).
const TARGET_BLOCKS: usize = 528;

/// The geometry of one launch.
#[derive(Clone, Copy, Debug)]
struct BlockSums {
    cout: usize,
    h: usize,
    w: usize,
    s: usize,
    downstream: usize,
    per_group: usize,
    groups: usize,
}

impl BlockSums {
    /// The sizes `[h, w]` of the chain's planes L0 … L_D.
    fn planes(&self) -> Vec<(usize, usize)> {
        let mut v = vec![(self.h, self.w)];
        for d in 1..=self.downstream {
            let f = if d == 1 { self.s } else { 2 };
            let (h, w) = v[d - 1];
            v.push((h * f, w * f));
        }
        v
    }

    fn shared_bytes(&self) -> usize {
        4 * self.planes().iter().map(|(h, w)| h * w).sum::<usize>()
    }

    fn last_plane(&self) -> (usize, usize) {
        *self.planes().last().expect("L0 at least")
    }
}

/// The reductions of a block's output maps over `inputs` by the kernel: pixel sums and absolute
/// sums (`[n·Cout]`) and the last planes' sum over the input channels (`[1, Cout, h', w']`).
/// `None` when it does not apply: not CUDA, not a block's output maps, or planes too large for
/// shared memory.
pub(super) fn block_sums(
    dl: &DeviceLayer,
    layer: NervLayer,
    inputs: Range<usize>,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let d = dl.data;
    let n = inputs.len();
    let groups = (TARGET_BLOCKS / d.out_channels().max(1)).clamp(1, n.max(1));
    let op = BlockSums {
        cout: d.out_channels(),
        h: d.height,
        w: d.width,
        s: d.scale,
        downstream: d.downstream,
        per_group: n.div_ceil(groups),
        groups,
    };
    let applies = dl.weight.device().is_cuda()
        && matches!(
            layer,
            NervLayer::Block {
                pre_gelu: false,
                ..
            }
        )
        && n > 0
        && op.shared_bytes() <= MAX_SHARED_BYTES;
    if !applies {
        return Ok(None);
    }
    let x = dl.input(inputs.clone())?;
    let weight = dl.weight.narrow(0, inputs.start, n)?;
    let out = x.apply_op3_no_bwd(&weight, &dl.bias_share, &op)?;
    let sums = out
        .narrow(0, 0, 2 * n * op.cout)?
        .reshape((n * op.cout, 2))?;
    let (lh, lw) = op.last_plane();
    let acc = out
        .narrow(0, 2 * n * op.cout, op.groups * op.cout * lh * lw)?
        .reshape((op.groups, op.cout, lh, lw))?
        .sum_keepdim(0)?;
    Ok(Some((
        sums.narrow(1, 0, 1)?.flatten_all()?,
        sums.narrow(1, 1, 1)?.flatten_all()?,
        acc,
    )))
}

/// The f32 values of a contiguous CUDA tensor.
fn view<'a>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("block sums: non-contiguous input".into()))?;
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

/// The kernel as a candle operation on (input `[n, h, w]`, weight `[n, Cout, 9]`, bias share
/// `[1, Cout, 1]`). The output is flat: `[n·Cout, 2]` sums and absolute sums, then the
/// accumulators `[groups, Cout, h', w']`.
impl CustomOp3 for BlockSums {
    fn name(&self) -> &'static str {
        "xinc-nerv-block-sums"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the block-sums kernel runs on CUDA; the CPU has the fused path")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        wt: &CudaStorage,
        lw: &Layout,
        b: &CudaStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (xs, ws, bs) = (view(x, lx)?, view(wt, lw)?, view(b, lb)?);
        let n = lx.dims()[0];
        let (lh, lwid) = self.last_plane();
        let len = 2 * n * self.cout + self.groups * self.cout * lh * lwid;
        let dev = x.device.clone();
        let out = dev.alloc_zeros::<f32>(len)?;
        let func = dev.get_or_load_custom_func("nerv_block_sums", "xinc_block_sums", PTX)?;
        let ints = [
            n,
            self.cout,
            self.h,
            self.w,
            self.s,
            self.downstream,
            self.per_group,
        ]
        .map(|v| v as i32);
        let cfg = LaunchConfig {
            grid_dim: (self.cout as u32, self.groups as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: self.shared_bytes() as u32,
        };
        {
            let sums = out.slice(0..2 * n * self.cout);
            let acc = out.slice(2 * n * self.cout..len);
            let mut launch = func.builder();
            launch.arg(&xs).arg(&ws).arg(&bs).arg(&sums).arg(&acc);
            for v in &ints {
                launch.arg(v);
            }
            // SAFETY: the arguments match the kernel's signature (three inputs, two outputs,
            // seven ints); every index the kernel writes lies within `out`, and the shared
            // memory holds the chain's planes.
            unsafe { launch.launch(cfg) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(len)))
    }
}
