//! The conservative (exact) canvas of any NeRV/HNeRV variant: every block type (PixelShuffle,
//! transposed conv, bilinear interpolation), norm and activation, any number of blocks per
//! stride. The paper's form (PixelShuffle, GELU, no norm, 3×3 kernels) has its own fast path
//! (`conservative.rs`); this one is general and plain, with candle tensor operations.
//!
//! The frame's network after block n is linearised by the rescale rule. A block computes
//! `y = f(norm(z))` with `z` its conv output; the norm at this frame is an affine map per channel,
//! `u = a·z + β` (batch norm at inference: its running statistics; instance norm linearised at the
//! image: `a = 1/σ`, `β = −μ/σ` of this frame's plane; none: `a = 1`, `β = 0`), and the activation
//! is `f(u) = f(0) + m·u` with `m = (f(u) − f(0))/u` (its slope at 0 where u = 0; signed for
//! sine). So `y = M ⊙ z + K` with `M = m·a` and `K = m·β + f(0)`, exactly, at this frame.
//!
//! Neuron (i, k) of block n is kernel (input channel i, conv output channel k). Its share of the
//! block's output is `M ⊙ P[i, k] + K/Cin` on the pixels it writes, where `P[i, k]` is the conv of
//! input channel i with filter (k, i) plus `b[k]/Cin` (PixelShuffle: placed on k's sub-pixel
//! phase), since every output pixel gathers exactly Cin kernels. Its map is that share carried
//! through the later blocks as `X ↦ M_j ⊙ conv_j(X)` (no bias) and the head conv (no bias); the
//! later blocks' biases and constants and the head's bias make one map `B`, shared equally by
//! the layer's N = Cin·Cout neurons. The maps of a layer plus nothing else sum to the head output
//! (before OutImg), to rounding.
//!
//! Cost: one pass of the downstream network per kernel (batched by input channel), so a layer of
//! N kernels costs about N small forward passes; memory is one input channel's kernels at a time.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Conv2d, ConvTranspose2d, Module};

use super::layer::NervLayer;
use crate::canvas::maps::{neuron_label, NeuronMaps};
use crate::canvas::LayerSummary;
use crate::error::{Result, XincError};
use crate::models::nerv::layers::upsample_bilinear;
use crate::models::nerv::{Activation, BlockConv, Nerv, NervActivations, NervBlock, NormLayer};

/// Memory for one batch of kernels on their way through the downstream network.
const CHUNK_BYTES: usize = 256 << 20;

/// Memory for the maps of the input channels a layer keeps at hand.
const CACHE_BYTES: usize = 512 << 20;

/// One block of the linearised network at this frame.
struct LinearBlock {
    /// The block's conv, without its bias.
    conv: ConvNoBias,
    /// The conv bias, per conv output channel.
    bias: Tensor,
    /// The block's input, `[1, Cin, h, w]`.
    input: Tensor,
    /// `M = m·a` and `K = m·β + f(0)` at the block's output, `[1, C, H, W]`.
    mult: Tensor,
    konst: Tensor,
    cin: usize,
    /// Conv output channels (C·s² for PixelShuffle).
    kernels: usize,
}

/// A block's conv without bias (the linear part).
enum ConvNoBias {
    Pshuffel(Conv2d, usize),
    Conv(ConvTranspose2d),
    Interpolate(Conv2d, usize),
}

impl ConvNoBias {
    /// The block's conv, its weight in f64 on the CPU.
    fn new(block: &NervBlock) -> Result<Self> {
        Ok(match block.conv() {
            BlockConv::Pshuffel(c) => ConvNoBias::Pshuffel(
                Conv2d::new(wide(c.weight())?, None, *c.config()),
                block.scale(),
            ),
            BlockConv::Conv(c) => {
                ConvNoBias::Conv(ConvTranspose2d::new(wide(c.weight())?, None, *c.config()))
            }
            BlockConv::Interpolate(c) => ConvNoBias::Interpolate(
                Conv2d::new(wide(c.weight())?, None, *c.config()),
                block.scale(),
            ),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            ConvNoBias::Pshuffel(c, s) => candle_nn::ops::pixel_shuffle(&c.forward(x)?, *s)?,
            ConvNoBias::Conv(c) => c.forward(x)?,
            ConvNoBias::Interpolate(c, s) => c.forward(&upsample_bilinear(x, *s)?)?,
        })
    }

    /// The bias per conv output channel as the block's output of `(h, w)` pixels places it,
    /// `[1, C, h, w]` (PixelShuffle: the conv's channels moved onto the shuffled grid).
    fn place_bias(&self, bias: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        let k = bias.dim(0)?;
        let plane = |h: usize, w: usize| -> Result<Tensor> {
            Ok(bias
                .reshape((1, k, 1, 1))?
                .broadcast_as((1, k, h, w))?
                .contiguous()?)
        };
        Ok(match self {
            ConvNoBias::Pshuffel(_, s) => candle_nn::ops::pixel_shuffle(&plane(h / s, w / s)?, *s)?,
            _ => plane(h, w)?,
        })
    }

    /// The planes `P[i, k]` of input channel `i` for conv channels `ks` (bias share `b/Cin`
    /// included), each on its own batch element and placed at the block's output:
    /// `[|ks|, C, H, W]`, and the same placement of ones (the pixels each kernel writes).
    fn kernel_planes(
        &self,
        x: &Tensor,
        bias: &Tensor,
        i: usize,
        ks: Range<usize>,
    ) -> Result<(Tensor, Tensor)> {
        let cin = x.dim(1)?;
        let xi = x.narrow(1, i, 1)?;
        let nk = ks.len();
        let share = (bias.narrow(0, ks.start, nk)? / cin as f64)?.reshape((1, nk, 1, 1))?;
        let planes = match self {
            ConvNoBias::Pshuffel(c, _) => {
                let w = c
                    .weight()
                    .narrow(1, i, 1)?
                    .narrow(0, ks.start, nk)?
                    .contiguous()?;
                Conv2d::new(w, None, *c.config()).forward(&xi)?
            }
            ConvNoBias::Conv(c) => {
                let w = c
                    .weight()
                    .narrow(0, i, 1)?
                    .narrow(1, ks.start, nk)?
                    .contiguous()?;
                ConvTranspose2d::new(w, None, *c.config()).forward(&xi)?
            }
            ConvNoBias::Interpolate(c, s) => {
                let w = c
                    .weight()
                    .narrow(1, i, 1)?
                    .narrow(0, ks.start, nk)?
                    .contiguous()?;
                Conv2d::new(w, None, *c.config()).forward(&upsample_bilinear(&xi, *s)?)?
            }
        };
        let planes = planes.broadcast_add(&share)?; // [1, nk, h', w']
        let total = match self {
            ConvNoBias::Pshuffel(c, _) => c.weight().dim(0)?,
            ConvNoBias::Conv(c) => c.weight().dim(1)?,
            ConvNoBias::Interpolate(c, _) => c.weight().dim(0)?,
        };
        // Batch element b keeps channel ks.start + b only.
        let mut eye = vec![0f32; nk * total];
        for b in 0..nk {
            eye[b * total + ks.start + b] = 1.0;
        }
        let eye = Tensor::from_vec(eye, (nk, total, 1, 1), x.device())?.to_dtype(x.dtype())?;
        let (_, _, h, w) = planes.dims4()?;
        let planes = planes.reshape((nk, 1, h, w))?;
        let diag = eye.broadcast_mul(&planes)?;
        let ones = eye.broadcast_as((nk, total, h, w))?.contiguous()?;
        Ok(match self {
            ConvNoBias::Pshuffel(_, s) => (
                candle_nn::ops::pixel_shuffle(&diag, *s)?,
                candle_nn::ops::pixel_shuffle(&ones, *s)?,
            ),
            _ => (diag, ones),
        })
    }
}

/// `t` in f64 on the CPU: the linearised network is evaluated in double precision, so that the
/// maps of a layer sum to the output to the f32 rounding of the output itself (an instance norm
/// of a nearly flat plane multiplies by a large 1/σ, which f32 sums of many small maps would
/// amplify).
fn wide(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?)
}

/// The rescale rule's `(M, K)` of a block whose conv output is `z` (`[1, C, H, W]`).
fn rescale(z: &Tensor, norm: &NormLayer, act: Activation) -> Result<(Tensor, Tensor)> {
    let (_, c, h, w) = z.dims4()?;
    let (a, beta): (Vec<f64>, Vec<f64>) = match norm {
        NormLayer::None => (vec![1.0; c], vec![0.0; c]),
        NormLayer::Bn(_) => {
            let (s, t) = norm.bn_affine()?.expect("a batch norm");
            (
                s.iter().map(|&v| f64::from(v)).collect(),
                t.iter().map(|&v| f64::from(v)).collect(),
            )
        }
        NormLayer::In => {
            let flat = z.reshape((c, h * w))?;
            let mean = flat.mean_keepdim(D::Minus1)?;
            let var = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(D::Minus1)?;
            let (mean, var) = (
                mean.flatten_all()?.to_vec1::<f32>()?,
                var.flatten_all()?.to_vec1::<f32>()?,
            );
            let a: Vec<f64> = var
                .iter()
                .map(|&v| 1.0 / (f64::from(v) + 1e-5).sqrt())
                .collect();
            let beta = mean
                .iter()
                .zip(&a)
                .map(|(&m, a)| -f64::from(m) * a)
                .collect();
            (a, beta)
        }
    };
    let zs = z.flatten_all()?.to_vec1::<f32>()?;
    let f0 = act.value(0.0);
    let (mut mult, mut konst) = (vec![0f64; zs.len()], vec![0f64; zs.len()]);
    for (p, &zv) in zs.iter().enumerate() {
        let ch = p / (h * w);
        let u = a[ch] * f64::from(zv) + beta[ch];
        let m = if u.abs() > 1e-6 {
            (act.value(u) - f0) / u
        } else {
            (act.value(1e-4) - act.value(-1e-4)) / 2e-4
        };
        mult[p] = m * a[ch];
        konst[p] = m * beta[ch] + f0;
    }
    Ok((
        Tensor::from_vec(mult, (1, c, h, w), &Device::Cpu)?,
        Tensor::from_vec(konst, (1, c, h, w), &Device::Cpu)?,
    ))
}

/// A frame's network, linearised after every block (see the module header).
pub(crate) struct GeneralNerv {
    blocks: Vec<LinearBlock>,
    head: Conv2d,
    head_bias: Tensor,
    height: usize,
    width: usize,
}

impl fmt::Debug for GeneralNerv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GeneralNerv({} blocks, {}×{})",
            self.blocks.len(),
            self.height,
            self.width
        )
    }
}

impl GeneralNerv {
    /// Linearises batch element 0 of a forward pass, on the CPU.
    pub(crate) fn new(model: &Nerv, acts: &NervActivations) -> Result<Self> {
        let cpu = Device::Cpu;
        let mut blocks = Vec::with_capacity(model.blocks().len());
        for (j, block) in model.blocks().iter().enumerate() {
            let input = acts.decoder[j + 1].get(0)?.unsqueeze(0)?.to_device(&cpu)?;
            let conv = ConvNoBias::new(block)?;
            let bias = match block.conv() {
                BlockConv::Pshuffel(c) | BlockConv::Interpolate(c) => c.bias().cloned(),
                BlockConv::Conv(c) => c.bias().cloned(),
            }
            .ok_or_else(|| XincError::InvalidArgument("NeRV convolutions have biases".into()))?;
            let cin = input.dim(1)?;
            // The conv output with its bias: what the norm and the activation see.
            let z = block.conv_forward(&input)?;
            let (input, bias) = (wide(&input)?, wide(&bias)?);
            let (mult, konst) = rescale(&z, block.norm(), block.act())?;
            blocks.push(LinearBlock {
                conv,
                kernels: bias.dim(0)?,
                bias,
                input,
                mult,
                konst,
                cin,
            });
        }
        let head = model.head();
        let head_bias = head
            .bias()
            .cloned()
            .ok_or_else(|| XincError::InvalidArgument("the NeRV head has a bias".into()))?;
        let (_, _, height, width) = acts.head_output.dims4()?;
        Ok(GeneralNerv {
            blocks,
            head: Conv2d::new(wide(head.weight())?, None, *head.config()),
            head_bias: wide(&head_bias)?,
            height,
            width,
        })
    }

    pub(crate) fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// `(Cin, Cout)` of block `index` (1-based): the kernel grid of its layer.
    pub(crate) fn kernel_grid(&self, index: usize) -> Result<(usize, usize)> {
        let b = self.block(index)?;
        Ok((b.cin, b.kernels))
    }

    fn block(&self, index: usize) -> Result<&LinearBlock> {
        index
            .checked_sub(1)
            .and_then(|j| self.blocks.get(j))
            .ok_or_else(|| XincError::InvalidArgument(format!("this NeRV has no block {index}")))
    }

    /// `X` (block `index`'s output perturbation, batched) carried to the head output, linear
    /// part only: `[B, 3, H, W]`.
    fn downstream(&self, index: usize, mut x: Tensor) -> Result<Tensor> {
        for b in &self.blocks[index..] {
            x = b.conv.forward(&x)?.broadcast_mul(&b.mult)?;
        }
        Ok(self.head.forward(&x)?)
    }

    /// The downstream constants (biases, norm shifts, f(0)) after block `index`, carried to the
    /// head output: `[1, 3, H, W]`.
    fn downstream_constant(&self, index: usize) -> Result<Tensor> {
        let b = self.block(index)?;
        let mut x = b.mult.zeros_like()?;
        for b in &self.blocks[index..] {
            let z = b.conv.forward(&x)?;
            let placed = b.conv.place_bias(&b.bias, (z.dim(2)?, z.dim(3)?))?;
            x = ((z + placed)?.broadcast_mul(&b.mult)? + &b.konst)?;
        }
        Ok(self
            .head
            .forward(&x)?
            .broadcast_add(&self.head_bias.reshape((1, 3, 1, 1))?)?)
    }

    /// The maps of every kernel (i, k) of block `index` for input channel `i`, per output
    /// channel: `[Cout·3·H·W]` (kernel-major), the constant share included.
    fn input_channel_maps(&self, index: usize, i: usize, constant: &Tensor) -> Result<Vec<f32>> {
        let b = self.block(index)?;
        let per_kernel = 3 * self.height * self.width;
        // The widest activation a kernel's batch element reaches on its way down (f64, with a
        // few temporaries of that size alive at once) sets how many kernels go at a time.
        let widest = self.blocks[index - 1..]
            .iter()
            .map(|b| b.mult.elem_count())
            .chain([per_kernel])
            .max()
            .unwrap_or(per_kernel);
        let chunk = (CHUNK_BYTES / (4 * 8 * widest)).clamp(1, b.kernels);
        let mut out = Vec::with_capacity(b.kernels * per_kernel);
        let share = (&b.konst / b.cin as f64)?;
        for start in (0..b.kernels).step_by(chunk) {
            let ks = start..(start + chunk).min(b.kernels);
            let (planes, ones) = b.conv.kernel_planes(&b.input, &b.bias, i, ks)?;
            let q = (planes.broadcast_mul(&b.mult)? + ones.broadcast_mul(&share)?)?;
            let maps = self.downstream(index, q)?.broadcast_add(constant)?;
            out.extend(maps.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// The constant map `B/N` of block `index`'s layer, `[1, 3, H, W]`.
    fn constant_share(&self, index: usize) -> Result<Tensor> {
        let (cin, k) = self.kernel_grid(index)?;
        Ok((self.downstream_constant(index)? / (cin * k) as f64)?)
    }
}

/// One layer of the general canvas as an owned source of maps (`block{n}` or `block{n}_rgb`),
/// computed one input channel at a time and kept while the neurons of that channel are read.
pub(crate) struct GeneralLayer {
    lin: Arc<GeneralNerv>,
    layer: NervLayer,
    name: String,
    index: usize,
    inputs: Range<usize>,
    kernels: usize,
    constant: Tensor,
    /// The maps of the last few input channels read, newest last.
    cache: Mutex<VecDeque<(usize, Arc<Vec<f32>>)>>,
    /// How many input channels the cache keeps.
    cache_len: usize,
}

impl fmt::Debug for GeneralLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneralLayer({}, inputs {:?})", self.name, self.inputs)
    }
}

impl GeneralLayer {
    pub(crate) fn new(
        lin: Arc<GeneralNerv>,
        layer: NervLayer,
        inputs: Range<usize>,
    ) -> Result<Self> {
        let index = layer
            .index()
            .filter(|_| layer.is_block_output())
            .ok_or_else(|| XincError::InvalidArgument(format!("{layer} is not a block output")))?;
        let (cin, kernels) = lin.kernel_grid(index)?;
        if inputs.start >= inputs.end || inputs.end > cin {
            return Err(XincError::InvalidArgument(format!(
                "input channels {inputs:?} outside 0..{cin} of {layer}"
            )));
        }
        let constant = lin.constant_share(index)?;
        // The parallel analyses read neurons in runs, a few runs at a time: keep a couple of
        // input channels per worker, within the budget.
        let channel_bytes = kernels * 3 * lin.height * lin.width * 4;
        let cache_len =
            (CACHE_BYTES / channel_bytes.max(1)).clamp(1, 2 * rayon::current_num_threads() + 2);
        Ok(GeneralLayer {
            name: layer.to_string(),
            lin,
            layer,
            index,
            inputs,
            kernels,
            constant,
            cache: Mutex::new(VecDeque::new()),
            cache_len,
        })
    }

    fn per_channel(&self) -> bool {
        matches!(self.layer, NervLayer::PerChannel(_))
    }

    /// (input channel, kernel, colour) of neuron `n`.
    fn kernel_of(&self, n: usize) -> (usize, usize, usize) {
        let per = if self.per_channel() { 3 } else { 1 };
        let (kernel, c) = (n / per, n % per);
        (
            self.inputs.start + kernel / self.kernels,
            kernel % self.kernels,
            c,
        )
    }

    /// The maps of input channel `i`'s kernels, `[Cout, 3, H, W]`, cached (computed outside the
    /// lock, so workers on different channels do not wait for each other).
    fn channel_maps(&self, i: usize) -> Result<Arc<Vec<f32>>> {
        let lock = || self.cache.lock().expect("the cache lock is never poisoned");
        if let Some((_, maps)) = lock().iter().find(|(ci, _)| *ci == i) {
            return Ok(Arc::clone(maps));
        }
        let maps = Arc::new(self.lin.input_channel_maps(self.index, i, &self.constant)?);
        let mut cache = lock();
        if !cache.iter().any(|(ci, _)| *ci == i) {
            if cache.len() == self.cache_len {
                cache.pop_front();
            }
            cache.push_back((i, Arc::clone(&maps)));
        }
        Ok(maps)
    }

    /// The maps of input channels `part` in file order: `[|part|, Cout, H, W]` summed over the
    /// colours, or `[|part|, Cout, 3, H, W]` per channel.
    pub(crate) fn maps(&self, part: Range<usize>) -> Result<Vec<f32>> {
        let hw = self.lin.height * self.lin.width;
        let mut out = Vec::new();
        for i in part {
            let maps = self.channel_maps(i)?;
            if self.per_channel() {
                out.extend_from_slice(&maps);
            } else {
                for kernel in maps.chunks_exact(3 * hw) {
                    out.extend((0..hw).map(|p| kernel[p] + kernel[hw + p] + kernel[2 * hw + p]));
                }
            }
        }
        Ok(out)
    }

    /// The layer's reductions, streamed one input channel at a time.
    pub(crate) fn summary(&self) -> Result<LayerSummary> {
        let (h, w) = (self.lin.height, self.lin.width);
        let per = if self.per_channel() { 3 } else { 1 };
        let mut neuron_shape = vec![self.inputs.len(), self.kernels];
        if self.per_channel() {
            neuron_shape.push(3);
        }
        let map_len = h * w;
        let mut sum_neurons = vec![0f32; self.kernels * per * map_len];
        let (mut sum_hw, mut abssum_hw) = (Vec::new(), Vec::new());
        for i in self.inputs.clone() {
            let maps = self.maps(i..i + 1)?;
            for (m, map) in maps.chunks_exact(map_len).enumerate() {
                sum_hw.push(map.iter().map(|&v| f64::from(v)).sum::<f64>() as f32);
                abssum_hw.push(map.iter().map(|&v| f64::from(v).abs()).sum::<f64>() as f32);
                let dst = &mut sum_neurons[m * map_len..(m + 1) * map_len];
                dst.iter_mut().zip(map).for_each(|(d, v)| *d += v);
            }
        }
        Ok(LayerSummary {
            layer: self.name.clone(),
            neuron_shape,
            height: h,
            width: w,
            sum_hw,
            abssum_hw,
            sum_neurons,
        })
    }
}

impl NeuronMaps for GeneralLayer {
    fn layer(&self) -> &str {
        &self.name
    }

    fn num_neurons(&self) -> usize {
        self.inputs.len() * self.kernels * if self.per_channel() { 3 } else { 1 }
    }

    fn size(&self) -> (usize, usize) {
        (self.lin.height, self.lin.width)
    }

    fn neuron_id(&self, n: usize) -> (usize, Option<usize>) {
        let (i, k, _) = self.kernel_of(n);
        (i, Some(k))
    }

    fn neuron_name(&self, n: usize) -> String {
        let (i, k, c) = self.kernel_of(n);
        if self.per_channel() {
            format!("{}, channel {c}", neuron_label((i, Some(k))))
        } else {
            neuron_label((i, Some(k)))
        }
    }

    /// A failure to compute (out of memory in candle) leaves the map at zero and is logged:
    /// the trait has no error path, and the inputs were checked when the layer was built.
    fn map_into(&self, n: usize, out: &mut [f32]) {
        let (i, k, c) = self.kernel_of(n);
        let hw = self.lin.height * self.lin.width;
        match self.channel_maps(i) {
            Ok(maps) => {
                let kernel = &maps[k * 3 * hw..(k + 1) * 3 * hw];
                if self.per_channel() {
                    out.copy_from_slice(&kernel[c * hw..(c + 1) * hw]);
                } else {
                    for (p, o) in out.iter_mut().enumerate() {
                        *o = kernel[p] + kernel[hw + p] + kernel[2 * hw + p];
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, layer = %self.name, "a general NeRV map failed");
                out.fill(0.0);
            }
        }
    }

    fn channel(&self, n: usize) -> Option<usize> {
        let (_, _, c) = self.kernel_of(n);
        self.per_channel().then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layer::NervFrameData;
    use super::*;
    use crate::canvas::{CanvasOptions, Method};
    use crate::models::nerv::{nerv, NervConfig};
    use candle_core::DType;
    use candle_nn::{Init, VarBuilder, VarMap};

    /// Frame 1 of a random model of `args` (batch-norm statistics randomised too, so that the
    /// norm is a real affine map).
    fn frame(args: &str) -> NervFrameData {
        let config = NervConfig::from_official_args(args, 4).unwrap();
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let mut model = nerv(config, vb).unwrap();
        if model.config().is_hnerv() {
            let [h, w] = model.config().frame_size();
            let frames = Tensor::rand(0f32, 1f32, (4, 3, h, w), &Device::Cpu).unwrap();
            model = model.embed_clip(&frames).unwrap();
        }
        for (name, var) in vm.data().lock().unwrap().iter() {
            if name.contains(".norm.") {
                let n = var.elem_count();
                let lo = if name.ends_with("running_var") {
                    0.5
                } else {
                    -0.5
                };
                let t = Init::Uniform { lo, up: lo + 1.0 }
                    .var(n, DType::F32, &Device::Cpu)
                    .unwrap();
                var.set(&t.as_tensor().reshape(var.shape()).unwrap())
                    .unwrap();
            }
        }
        NervFrameData::new(&model, &model.forward_frame(1, &Device::Cpu).unwrap()).unwrap()
    }

    fn sum_over_neurons(s: &LayerSummary, per_channel: bool) -> Vec<f32> {
        let hw = s.height * s.width;
        let per = if per_channel { 3 * hw } else { hw };
        let mut total = vec![0f32; per];
        for chunk in s.sum_neurons.chunks_exact(per) {
            total.iter_mut().zip(chunk).for_each(|(t, v)| *t += v);
        }
        total
    }

    #[test]
    fn every_variant_conserves_the_output_in_every_block() {
        let base = "--embed pe_1.25_4 --fc_hw 2_3 --dec_strds 2 2 --reduce 1.2 --modelsize 0.002 \
                    --lower_width 3";
        for variant in [
            "--conv_type convnext pshuffel --act relu --norm bn --ks 0_3_3",
            "--conv_type convnext conv --act leaky01 --norm bn --ks 0_2_2",
            "--conv_type convnext interpolate --act swish --norm none --ks 0_1_1",
            "--conv_type convnext pshuffel --act sin --norm none --ks 0_3_5 --num_blks 1_2",
            "--conv_type convnext pshuffel --act softplus --norm bn --ks 0_1_1",
            "--conv_type convnext conv --act hardswish --norm bn --ks 0_2_2",
            "--conv_type convnext interpolate --act relu6 --norm none --ks 0_3_3",
            "--conv_type convnext pshuffel --act leaky --norm none --ks 0_3_3",
            "--conv_type convnext interpolate --act relu --norm in --ks 0_3_3",
            "--conv_type convnext pshuffel --act relu6 --norm in --ks 0_3_3 --out_bias sigmoid",
            "--conv_type convnext conv --act leaky01 --norm in --ks 0_2_2",
        ] {
            let args = if variant.contains("--norm in") {
                // HNeRV: instance norm needs an embedding larger than one pixel.
                format!(
                    "{variant} --enc_strds 2 2 --enc_dim 4_3 --dec_strds 2 2 --resize_list 8_12 \
                         --reduce 1.2 --modelsize 0.002 --lower_width 3 --embed"
                )
            } else {
                format!("{base} {variant}")
            };
            let f = frame(&args);
            assert!(!f.has_official_blocks(), "{variant}");
            let opts = CanvasOptions::from(Method::Conservative);
            let hw = f.height * f.width;
            let scale = f.output.iter().fold(1f32, |m, v| m.max(v.abs()));
            for index in 1..=f.blocks() {
                for layer in [NervLayer::block(index), NervLayer::PerChannel(index)] {
                    let s = super::super::nerv_canvas_summary(&f, &[layer], &Device::Cpu, &opts)
                        .unwrap();
                    let total = sum_over_neurons(&s.layers[0], layer != NervLayer::block(index));
                    let want: Vec<f32> = if layer == NervLayer::block(index) {
                        (0..hw)
                            .map(|p| (0..3).map(|c| f.output[c * hw + p]).sum())
                            .collect()
                    } else {
                        f.output.to_vec()
                    };
                    for (p, (t, w)) in total.iter().zip(&want).enumerate() {
                        assert!(
                            (t - w).abs() <= 1e-4 * scale * 3.0,
                            "{variant} {layer} pixel {p}: maps sum to {t}, the output is {w}"
                        );
                    }
                }
            }
            // The official method has the head only, and says why for a block.
            let err = f
                .check(NervLayer::block(1), Method::Official)
                .unwrap_err()
                .to_string();
            assert!(err.contains("paper's form"), "{err}");
        }
    }

    #[test]
    fn a_kernel_map_is_its_own_share_carried_downstream() {
        // ReLU, no norm, interpolate: check kernel (1, 2) of block 2 (the last block) against
        // the head applied to its share by hand: the head conv of M ⊙ P[1, 2] + K/Cin, plus the
        // head bias over N.
        let f = frame(
            "--embed pe_1.25_4 --fc_hw 2_3 --dec_strds 2 2 --reduce 1.2 --modelsize 0.002 \
             --lower_width 3 --conv_type convnext interpolate --act relu --ks 0_1_1",
        );
        let g = f.general.clone().unwrap();
        let b = g.block(2).unwrap();
        let (cin, k) = g.kernel_grid(2).unwrap();
        let layer = GeneralLayer::new(Arc::clone(&g), NervLayer::PerChannel(2), 0..cin).unwrap();
        let n = (k + 2) * 3; // kernel (1, 2), channel 0
        let ours = layer.map(n);
        let (planes, ones) = b.conv.kernel_planes(&b.input, &b.bias, 1, 2..3).unwrap();
        let share = (planes.broadcast_mul(&b.mult).unwrap()
            + ones
                .broadcast_mul(&(&b.konst / cin as f64).unwrap())
                .unwrap())
        .unwrap();
        let head = g.head.forward(&share).unwrap();
        let bias = g.head_bias.to_vec1::<f64>().unwrap()[0] / (cin * k) as f64;
        let want: Vec<f64> = head
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|v| v + bias)
            .collect();
        for (a, b) in ours.iter().zip(&want) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
