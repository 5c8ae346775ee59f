//! A NeRV block's data on a candle device: the weights uploaded once per layer and the input
//! channels on demand. Read by the tensor-operation path (`device`) and by xinc's CUDA kernel
//! (`cuda`), so that neither reaches into the other.

use std::ops::Range;

use candle_core::{Device, Tensor};

use super::layer::NervBlockData;
use crate::error::Result;

/// The layer's weights on the device, uploaded once per layer.
pub(super) struct DeviceLayer<'a> {
    pub(super) data: &'a NervBlockData<'a>,
    /// `[Cin, Cout, 9]`.
    pub(super) weight: Tensor,
    /// `b / Cin`, `[1, Cout, 1]`.
    pub(super) bias_share: Tensor,
}

impl<'a> DeviceLayer<'a> {
    pub(super) fn new(data: &'a NervBlockData<'a>, device: &Device) -> Result<Self> {
        let (cin, cout) = (data.in_channels, data.out_channels());
        let weight = Tensor::from_slice(data.weight, (cout, cin, 9), device)?
            .transpose(0, 1)?
            .contiguous()?;
        let share: Vec<f32> = data.bias.iter().map(|b| b / cin as f32).collect();
        let bias_share = Tensor::from_vec(share, (1, cout, 1), device)?;
        Ok(DeviceLayer {
            data,
            weight,
            bias_share,
        })
    }

    /// The input channels `inputs` on the device, `[n, h, w]`.
    pub(super) fn input(&self, inputs: Range<usize>) -> Result<Tensor> {
        let d = self.data;
        let (h, w) = (d.height, d.width);
        Ok(Tensor::from_slice(
            &d.input[inputs.start * h * w..inputs.end * h * w],
            (inputs.len(), h, w),
            self.weight.device(),
        )?)
    }
}
