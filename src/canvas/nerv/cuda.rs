//! xinc's own CUDA kernel for the NeRV canvas (`box_place.cu`, compiled to PTX by `build.rs`).
//!
//! The summary of a block's output maps when no block is simulated downstream (the last block,
//! block 3 of the paper's NeRV) is `box3(place(GELU(P)))` reduced over pixels. With candle's
//! operations this materialises the full-resolution maps several times over (placement, padding,
//! shifted sums, absolute values). The kernel computes each kernel's low-resolution plane in
//! shared memory and reduces its full-resolution map on the fly, so the only large write is the
//! low-resolution plane, which the sum over input channels needs.

use std::ops::Range;

use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::device::{DeviceLayer, LastStep};
use super::NervLayer;
use crate::error::Result;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/box_place.ptx"));

/// The shared memory one plane may take (the default per-block limit).
const MAX_SHARED_BYTES: usize = 48 * 1024;

/// The chunk's GELU planes `[n, Cout, h, w]` and its maps' pixel sums and absolute sums, by the
/// kernel; `None` when it does not apply (not CUDA, not a last-block output map, or a plane too
/// large for shared memory).
pub(super) fn box_place_chunk(
    dl: &DeviceLayer,
    layer: NervLayer,
    part: Range<usize>,
) -> Result<Option<(Tensor, Vec<f32>, Vec<f32>)>> {
    let d = dl.data;
    let (h, w, cout, n) = (d.height, d.width, d.out_channels(), part.len());
    let applies = dl.weight.device().is_cuda()
        && matches!(LastStep::of(d, layer), LastStep::BoxPlace(_))
        && 4 * h * w <= MAX_SHARED_BYTES;
    if !applies {
        return Ok(None);
    }
    let x = dl.input(part.clone())?;
    let weight = dl.weight.narrow(0, part.start, n)?;
    let op = BoxPlaceSums {
        cout,
        h,
        w,
        s: d.scale,
    };
    let out = x.apply_op3_no_bwd(&weight, &dl.bias_share, &op)?; // [n·Cout, h·w + 2]
    let planes = out.narrow(1, 0, h * w)?.reshape((n, cout, h, w))?;
    let sums = out.narrow(1, h * w, 2)?.flatten_all()?.to_vec1::<f32>()?;
    let (s, a) = sums.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
    Ok(Some((planes, s, a)))
}

/// The f32 values of a contiguous CUDA tensor.
fn view<'a>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("box-place: non-contiguous input".into()))?;
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

/// The kernel as a candle operation on (input `[n, h, w]`, weight `[n, Cout, 9]`, bias share
/// `[1, Cout, 1]`), giving `[n·Cout, h·w + 2]`: each kernel's GELU plane, its map's sum and
/// absolute sum.
struct BoxPlaceSums {
    cout: usize,
    h: usize,
    w: usize,
    s: usize,
}

impl CustomOp3 for BoxPlaceSums {
    fn name(&self) -> &'static str {
        "xinc-box-place-sums"
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
        candle_core::bail!("the box-place kernel runs on CUDA; the CPU has the fused path")
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
        let maps = lx.dims()[0] * self.cout;
        let hw = self.h * self.w;
        let dev = x.device.clone();
        // SAFETY: the kernel writes every element of `out` (each block its own row).
        let out = unsafe { dev.alloc::<f32>(maps * (hw + 2)) }?;
        let func = dev.get_or_load_custom_func("box_place_sums", "xinc_box_place", PTX)?;
        let (cout, h, w, s) = (
            self.cout as i32,
            self.h as i32,
            self.w as i32,
            self.s as i32,
        );
        let cfg = LaunchConfig {
            grid_dim: (maps as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: (4 * hw) as u32,
        };
        {
            let mut launch = func.builder();
            launch.arg(&xs).arg(&ws).arg(&bs).arg(&out);
            launch.arg(&cout).arg(&h).arg(&w).arg(&s);
            // SAFETY: the argument list matches the kernel's signature; the grid covers `maps`
            // rows of `out`, and the shared memory holds one h×w plane.
            unsafe { launch.launch(cfg) }.w()?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((maps, hw + 2)),
        ))
    }
}
