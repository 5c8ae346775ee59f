//! The layers of the NeRV canvas and the data their maps are computed from: [`NervLayer`] (the
//! names `head`, `block{n}`, `block{n}_pre_gelu`, `block{n}_rgb`, and which ones a model has
//! under each [`Method`]), [`NervBlockData`] (one layer's input activation and conv weights, a
//! borrowed view) and [`NervFrameData`] (every layer of one frame, owned and shared).
//!
//! A *kernel* is one (input channel i, conv output channel k) pair of a layer's 3×3 conv. Its
//! low-resolution plane is `P[i, k] = conv3x3(x[i], W[k, i]) + b[k]/Cin` (zero padding 1,
//! cross-correlation, [`NervBlockData::plane`]), at the layer's input resolution (h, w): both
//! rules compute a kernel's map from it.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::Tensor;

use super::general::GeneralNerv;
use crate::canvas::{unknown_layer, Method};
use crate::error::{Result, XincError};
use crate::models::nerv::{Activation, BlockConv, Nerv, NervActivations, NormLayer};
use crate::tensor::with_f32_slice;

/// One layer of the NeRV canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NervLayer {
    /// The head conv's per-(input, RGB channel) maps: `head`.
    Head,
    /// A NeRV block (1-based `index`), its output maps (`block{index}`) or its PixelShuffle-placed
    /// pre-GELU maps (`block{index}_pre_gelu`).
    Block { index: usize, pre_gelu: bool },
    /// A block's output maps (1-based index), one per output channel of the frame:
    /// `block{index}_rgb`, neuron shape `[Cin, Cout, 3]`. Only the conservative canvas has them
    /// (they sum to the output channel by channel).
    PerChannel(usize),
}

impl fmt::Display for NervLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NervLayer::Head => write!(f, "head"),
            NervLayer::Block { index, pre_gelu } => {
                write!(
                    f,
                    "block{index}{}",
                    if *pre_gelu { "_pre_gelu" } else { "" }
                )
            }
            NervLayer::PerChannel(index) => write!(f, "block{index}_rgb"),
        }
    }
}

impl FromStr for NervLayer {
    type Err = XincError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "head" {
            return Ok(NervLayer::Head);
        }
        let bad = || {
            XincError::InvalidArgument(format!(
                "`{s}` is not a NeRV layer name (head, block<n>, block<n>_pre_gelu or block<n>_rgb)"
            ))
        };
        let rest = s.strip_prefix("block").ok_or_else(bad)?;
        let index = |digits: &str| digits.parse().ok().filter(|&n| n >= 1).ok_or_else(bad);
        Ok(if let Some(d) = rest.strip_suffix("_pre_gelu") {
            NervLayer::Block {
                index: index(d)?,
                pre_gelu: true,
            }
        } else if let Some(d) = rest.strip_suffix("_rgb") {
            NervLayer::PerChannel(index(d)?)
        } else {
            NervLayer::block(index(rest)?)
        })
    }
}

impl NervLayer {
    /// The output maps of block `index` (1-based): `block{index}`.
    pub fn block(index: usize) -> NervLayer {
        NervLayer::Block {
            index,
            pre_gelu: false,
        }
    }

    /// Whether the layer is a block's output (summed, `block{n}`, or per channel,
    /// `block{n}_rgb`): the layers the conservative canvas carries through the downstream
    /// network. The head and the pre-GELU layers are exact decompositions already.
    pub fn is_block_output(self) -> bool {
        matches!(
            self,
            NervLayer::Block {
                pre_gelu: false,
                ..
            } | NervLayer::PerChannel(_)
        )
    }

    /// The block index (1-based), `None` for the head.
    pub fn index(self) -> Option<usize> {
        match self {
            NervLayer::Head => None,
            NervLayer::Block { index, .. } | NervLayer::PerChannel(index) => Some(index),
        }
    }

    /// Every layer of a NeRV with `blocks` upsampling blocks under `method`, from the head down:
    /// `head, block{n}, block{n}_pre_gelu, …, block1, block1_pre_gelu`; under the conservative
    /// method each block output is followed by its per-channel maps `block{n}_rgb`.
    pub fn all(blocks: usize, method: Method) -> Vec<NervLayer> {
        let mut v = vec![NervLayer::Head];
        for index in (1..=blocks).rev() {
            v.push(NervLayer::block(index));
            if method == Method::Conservative {
                v.push(NervLayer::PerChannel(index));
            }
            v.push(NervLayer::Block {
                index,
                pre_gelu: true,
            });
        }
        v
    }

    /// Parses a comma-separated list and checks each name against the model and `method`.
    pub fn parse_list(list: &str, blocks: usize, method: Method) -> Result<Vec<NervLayer>> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| NervLayer::from_str(s).and_then(|l| l.check(blocks, method)))
            .collect()
    }

    /// Checks the layer against a NeRV with `blocks` blocks and `method`: per-channel block maps
    /// exist under the conservative method only.
    pub fn check(self, blocks: usize, method: Method) -> Result<Self> {
        let all = NervLayer::all(blocks, method);
        if all.contains(&self) {
            Ok(self)
        } else {
            let known: Vec<String> = all.iter().map(ToString::to_string).collect();
            Err(unknown_layer(&self.to_string(), &known))
        }
    }
}

/// The plain data one layer's maps are computed from (batch element 0).
#[derive(Clone, Copy, Debug)]
pub struct NervBlockData<'a> {
    /// The layer's input activation, `[Cin, h, w]` row-major.
    pub input: &'a [f32],
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    /// The 3×3 conv weight, `[Cout, Cin, 3, 3]`.
    pub weight: &'a [f32],
    /// The conv bias, `[Cout]`.
    pub bias: &'a [f32],
    /// The PixelShuffle factor s; 1 for the head.
    pub scale: usize,
    /// Simulated blocks after this one: 0 for the last block (and the head), 1 for the one
    /// before, …; each doubles the map resolution.
    pub downstream: usize,
}

impl NervBlockData<'_> {
    /// Conv output channels, `weight.len() / (Cin·9)`.
    pub fn out_channels(&self) -> usize {
        self.weight.len() / (9 * self.in_channels).max(1)
    }

    /// The `(H, W)` of one map of `layer`.
    pub fn map_size(&self, layer: NervLayer) -> (usize, usize) {
        let f = match layer {
            NervLayer::Head => 1,
            NervLayer::Block { pre_gelu: true, .. } => self.scale,
            _ => self.scale << self.downstream,
        };
        (self.height * f, self.width * f)
    }

    /// Checks the buffer lengths against the shapes, and `layer` against the scale.
    pub fn validate(&self, layer: NervLayer) -> Result<()> {
        let (cin, cout, s) = (self.in_channels, self.out_channels(), self.scale);
        let bad = |what: String| Err(XincError::InvalidArgument(format!("NeRV {layer}: {what}")));
        if cin == 0 || self.height == 0 || self.width == 0 || s == 0 {
            return bad("zero-sized input or scale".into());
        }
        if self.input.len() != cin * self.height * self.width {
            return bad(format!(
                "input has {} values, not {cin}·h·w",
                self.input.len()
            ));
        }
        if self.weight.len() != cout * cin * 9 || self.bias.len() != cout || cout == 0 {
            return bad(format!(
                "weight/bias do not match [Cout, {cin}, 3, 3] / [Cout]"
            ));
        }
        match layer {
            NervLayer::Head if s != 1 || self.downstream != 0 => {
                bad("the head has scale 1 and nothing downstream".into())
            }
            NervLayer::Block { .. } | NervLayer::PerChannel(_) if cout % (s * s) != 0 => {
                bad(format!("Cout {cout} is not a multiple of s² = {}", s * s))
            }
            _ => Ok(()),
        }
    }

    /// Checks the layer and the input channels of an official kernel computation.
    pub(crate) fn check_kernels(&self, layer: NervLayer, inputs: &Range<usize>) -> Result<()> {
        self.validate(layer)?;
        if let NervLayer::PerChannel(_) = layer {
            return Err(XincError::InvalidArgument(format!(
                "the official canvas has no per-channel maps ({layer}): use the conservative method"
            )));
        }
        if inputs.start > inputs.end || inputs.end > self.in_channels {
            return Err(XincError::InvalidArgument(format!(
                "NeRV {layer}: input channels {inputs:?} out of 0..{}",
                self.in_channels
            )));
        }
        Ok(())
    }

    /// `P[i, k]`, the kernel's plane at the input resolution.
    #[inline]
    pub(crate) fn plane(&self, i: usize, k: usize) -> Vec<f32> {
        let mut out = Vec::new();
        self.plane_into(i, k, &mut out);
        out
    }

    /// [`Self::plane`] into `out` (resized to `[h, w]`), reusing its allocation.
    #[inline(always)]
    pub(crate) fn plane_into(&self, i: usize, k: usize, out: &mut Vec<f32>) {
        let hw = self.height * self.width;
        let x = &self.input[i * hw..(i + 1) * hw];
        let off = (k * self.in_channels + i) * 9;
        let kernel: &[f32; 9] = self.weight[off..off + 9].try_into().expect("9 taps");
        let share = self.bias[k] / self.in_channels as f32;
        out.resize(hw, 0.0);
        conv3x3_plane_into(x, (self.height, self.width), kernel, share, out);
    }
}

/// 3×3 cross-correlation of the `[h, w]` plane `x` with `kernel` (row-major `[3, 3]`), zero
/// padding 1, plus `bias`: `out[y][x] = Σ_{ky,kx} kernel[ky][kx]·x[y+ky−1][x+kx−1] + bias`
/// ([`conv3x3_plane_into`]).
#[cfg(test)]
pub(crate) fn conv3x3_plane(
    x: &[f32],
    h: usize,
    w: usize,
    kernel: &[f32; 9],
    bias: f32,
) -> Vec<f32> {
    let mut out = vec![0.0f32; h * w];
    conv3x3_plane_into(x, (h, w), kernel, bias, &mut out);
    out
}

/// The 3×3 cross-correlation of the `[h, w]` plane `x` with `kernel` (row-major `[3, 3]`),
/// zero padding 1, plus `bias`, written into `out` (`[h, w]`). Each output value sums the three taps of each kernel row in a register (three independent
/// chains, so their latencies overlap), then the three row sums in order, then the bias. With
/// AVX2 and FMA each tap is a fused multiply-add; elsewhere a multiply and an add. Rows outside
/// the plane read a zero row, and a border column's missing taps read zero (a zero tap adds
/// ±0, which changes no sum).
pub(crate) fn conv3x3_plane_into(
    x: &[f32],
    hw: (usize, usize),
    kernel: &[f32; 9],
    bias: f32,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        return unsafe { conv3x3_plane_fma(x, hw, kernel, bias, out) };
    }
    conv3x3_plane_with(x, hw, kernel, bias, out, |a, b, c| a * b + c)
}

/// [`conv3x3_plane_into`] with fused multiply-adds (`mul_add` is one instruction here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv3x3_plane_fma(
    x: &[f32],
    hw: (usize, usize),
    kernel: &[f32; 9],
    bias: f32,
    out: &mut [f32],
) {
    conv3x3_plane_with(x, hw, kernel, bias, out, f32::mul_add)
}

/// [`conv3x3_plane_into`] with each tap `k·x + a` taken by `madd(k, x, a)`.
#[inline(always)]
fn conv3x3_plane_with(
    x: &[f32],
    (h, w): (usize, usize),
    kernel: &[f32; 9],
    bias: f32,
    out: &mut [f32],
    madd: impl Fn(f32, f32, f32) -> f32,
) {
    // The value at one pixel from its 3×3 neighbourhood, `n[row][column]`.
    let taps = |n: [[f32; 3]; 3]| {
        let row = |r: usize| {
            let k = &kernel[3 * r..3 * r + 3];
            madd(k[2], n[r][2], madd(k[1], n[r][1], k[0] * n[r][0]))
        };
        row(0) + row(1) + row(2) + bias
    };
    let zeros = vec![0.0f32; w];
    let plane_row = |y: usize| match y.checked_sub(1) {
        Some(r) if r < h => &x[r * w..][..w],
        _ => &zeros[..],
    };
    for (y, o) in out.chunks_exact_mut(w).enumerate() {
        // Rows y−1, y, y+1 of the plane (`plane_row` is shifted by one).
        let rows = [plane_row(y), plane_row(y + 1), plane_row(y + 2)];
        if w >= 3 {
            let shifted = |r: usize, d: usize| &rows[r][d..][..w - 2];
            let s: [[&[f32]; 3]; 3] =
                std::array::from_fn(|r| std::array::from_fn(|d| shifted(r, d)));
            for (j, o) in o[1..w - 1].iter_mut().enumerate() {
                *o = taps(std::array::from_fn(|r| std::array::from_fn(|d| s[r][d][j])));
            }
        }
        for c in [0, w - 1] {
            let at = |r: usize, d: usize| {
                (c + d)
                    .checked_sub(1)
                    .filter(|&s| s < w)
                    .map_or(0.0, |s| rows[r][s])
            };
            o[c] = taps(std::array::from_fn(|r| std::array::from_fn(|d| at(r, d))));
        }
    }
}

/// One layer's input activation and conv weights, owned.
struct OwnedLayer {
    input: Vec<f32>,
    in_channels: usize,
    height: usize,
    width: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    scale: usize,
}

/// The layer inputs and weights of one NeRV frame (batch element 0), what every
/// [`NervBlockData`] view reads, and the output they explain. Shared (`Arc`): a clone copies
/// nothing, so map sources ([`NervFrameData::maps`]) own one.
///
/// A model of the paper's form (PixelShuffle blocks with 3×3 kernels, GELU, no norm, one block
/// per stride: the only one the official code defines maps for) keeps every block's data for
/// both methods; any other variant keeps the head's data and the frame's linearised network
/// (`general.rs`): its blocks have conservative maps only.
#[derive(Clone)]
pub struct NervFrameData {
    /// Blocks 1..=B, then the head (the head only for a general variant).
    layers: Arc<[OwnedLayer]>,
    /// A general variant's linearised network.
    pub(super) general: Option<Arc<GeneralNerv>>,
    /// The head output before OutImg, `[3, H, W]`: what the head maps sum to.
    pub output: Arc<[f32]>,
    /// The reconstruction after OutImg, `[3, H, W]`: what the frame is compared with.
    pub reconstruction: Arc<[f32]>,
    pub height: usize,
    pub width: usize,
}

impl fmt::Debug for NervFrameData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NervFrameData({} blocks, {}×{})",
            self.blocks(),
            self.height,
            self.width
        )
    }
}

impl NervFrameData {
    /// Extracts batch element 0 of a forward pass, with the model's weights.
    pub fn new(model: &Nerv, acts: &NervActivations) -> Result<Self> {
        let plane = |t: &Tensor| -> Result<(Vec<f32>, usize, usize, usize)> {
            let (_, c, h, w) = t.dims4()?;
            Ok((with_f32_slice(&t.get(0)?, <[f32]>::to_vec)?, c, h, w))
        };
        let conv = |c: &candle_nn::Conv2d| -> Result<(Vec<f32>, Vec<f32>)> {
            let bias = c.bias().ok_or_else(|| {
                XincError::InvalidArgument("NeRV convolutions have biases".into())
            })?;
            Ok((
                with_f32_slice(c.weight(), <[f32]>::to_vec)?,
                with_f32_slice(bias, <[f32]>::to_vec)?,
            ))
        };
        let layer = |x: &Tensor, c: &candle_nn::Conv2d, scale: usize| -> Result<OwnedLayer> {
            let (input, in_channels, height, width) = plane(x)?;
            let (weight, bias) = conv(c)?;
            Ok(OwnedLayer {
                input,
                in_channels,
                height,
                width,
                weight,
                bias,
                scale,
            })
        };
        let mut layers = Vec::new();
        let general = if official_form(model) {
            for (b, block) in model.blocks().iter().enumerate() {
                if let BlockConv::Pshuffel(conv) = block.conv() {
                    layers.push(layer(&acts.decoder[b + 1], conv, block.scale())?);
                }
            }
            None
        } else {
            Some(Arc::new(GeneralNerv::new(model, acts)?))
        };
        layers.push(layer(
            acts.decoder.last().expect("decoder results"),
            model.head(),
            1,
        )?);
        let (output, _, height, width) = plane(&acts.head_output)?;
        Ok(NervFrameData {
            layers: layers.into(),
            general,
            output: output.into(),
            reconstruction: plane(&acts.output)?.0.into(),
            height,
            width,
        })
    }

    /// Number of NeRV blocks.
    pub fn blocks(&self) -> usize {
        match &self.general {
            Some(g) => g.blocks(),
            None => self.layers.len() - 1,
        }
    }

    /// Whether the official code defines this model's block maps (the paper's form of NeRV).
    pub fn has_official_blocks(&self) -> bool {
        self.general.is_none()
    }

    /// Every layer of this frame's model under `method`, from the head down
    /// ([`NervLayer::all`]); a variant outside the paper's form has the head and, under the
    /// conservative method, its block outputs (summed and per channel).
    pub fn all_layers(&self, method: Method) -> Vec<NervLayer> {
        if self.general.is_none() {
            return NervLayer::all(self.blocks(), method);
        }
        let mut v = vec![NervLayer::Head];
        if method == Method::Conservative {
            for index in (1..=self.blocks()).rev() {
                v.extend([NervLayer::block(index), NervLayer::PerChannel(index)]);
            }
        }
        v
    }

    /// Checks `layer` against this frame's model and `method` ([`NervFrameData::all_layers`]).
    pub fn check(&self, layer: NervLayer, method: Method) -> Result<NervLayer> {
        let all = self.all_layers(method);
        if all.contains(&layer) {
            return Ok(layer);
        }
        if self.general.is_some() && layer.index().is_some_and(|i| i <= self.blocks()) {
            return Err(XincError::InvalidArgument(format!(
                "{layer}: the official code defines block maps only for NeRVs of the paper's form \
                 (PixelShuffle blocks with 3×3 kernels, GELU, no norm, one block per stride); \
                 this model's blocks have the conservative canvas (--method conservative)"
            )));
        }
        let known: Vec<String> = all.iter().map(ToString::to_string).collect();
        Err(unknown_layer(&layer.to_string(), &known))
    }

    /// The data of `layer` (block indices are 1-based).
    pub fn layer(&self, layer: NervLayer) -> Result<NervBlockData<'_>> {
        let blocks = self.blocks();
        let (slot, downstream) = match layer.index() {
            None => (self.layers.len() - 1, 0),
            Some(index) if self.general.is_some() && index <= blocks => {
                return Err(XincError::InvalidArgument(format!(
                    "block {index} of this NeRV has no official kernel data (not the paper's form)"
                )))
            }
            Some(index) if (1..=blocks).contains(&index) => (index - 1, blocks - index),
            Some(index) => {
                return Err(XincError::InvalidArgument(format!(
                    "this NeRV has no block {index}"
                )))
            }
        };
        let l = &self.layers[slot];
        Ok(NervBlockData {
            input: &l.input,
            in_channels: l.in_channels,
            height: l.height,
            width: l.width,
            weight: &l.weight,
            bias: &l.bias,
            scale: l.scale,
            downstream,
        })
    }

    /// `(Cin, Cout)` of `layer`'s kernel grid.
    pub fn kernel_grid(&self, layer: NervLayer) -> Result<(usize, usize)> {
        match (&self.general, layer.index()) {
            (Some(g), Some(index)) => g.kernel_grid(index),
            _ => {
                let data = self.layer(layer)?;
                Ok((data.in_channels, data.out_channels()))
            }
        }
    }

    /// The input-channel range of `layer`: all of them, or `only` when it fits.
    pub fn inputs(&self, layer: NervLayer, only: Option<Range<usize>>) -> Result<Range<usize>> {
        let cin = self.kernel_grid(layer)?.0;
        match only {
            None => Ok(0..cin),
            Some(r) if r.start < r.end && r.end <= cin => Ok(r),
            Some(r) => Err(XincError::InvalidArgument(format!(
                "input channels {r:?} outside 0..{cin} of {layer}"
            ))),
        }
    }
}

/// Whether `model` has the paper's form, the only one whose block maps the official code defines:
/// PixelShuffle blocks with 3×3 kernels, GELU, no norm, one block per stride.
pub fn official_form(model: &Nerv) -> bool {
    model.config().dec_blocks == 1
        && model.blocks().iter().all(|b| {
            matches!(b.conv(), BlockConv::Pshuffel(c) if c.weight().dims()[2..] == [3, 3])
                && b.act() == Activation::Gelu
                && matches!(b.norm(), NormLayer::None)
        })
}

#[cfg(test)]
impl NervFrameData {
    /// Frame 1 of a random NeRV with PixelShuffle factors 3, 2, 2 (output 24×36): small enough
    /// for brute-force checks.
    pub(crate) fn tiny() -> NervFrameData {
        let model = crate::models::nerv::tiny_nerv("");
        let frame = model.forward_frame(1, &candle_core::Device::Cpu).unwrap();
        NervFrameData::new(&model, &frame).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_round_trip() {
        let names: Vec<String> = NervLayer::all(3, Method::Official)
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "head",
                "block3",
                "block3_pre_gelu",
                "block2",
                "block2_pre_gelu",
                "block1",
                "block1_pre_gelu"
            ]
        );
        for n in &names {
            assert_eq!(&n.parse::<NervLayer>().unwrap().to_string(), n);
        }
        for bad in [
            "block0",
            "block",
            "blockx_pre_gelu",
            "layer1",
            "block0_rgb",
            "head_rgb",
        ] {
            assert!(bad.parse::<NervLayer>().is_err(), "{bad}");
        }
        let conservative = NervLayer::all(2, Method::Conservative);
        let names: Vec<String> = conservative.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            names,
            [
                "head",
                "block2",
                "block2_rgb",
                "block2_pre_gelu",
                "block1",
                "block1_rgb",
                "block1_pre_gelu"
            ]
        );
        for l in &conservative {
            assert_eq!(l.to_string().parse::<NervLayer>().unwrap(), *l);
        }
        assert_eq!(
            NervLayer::parse_list("block2_rgb, head", 2, Method::Conservative).unwrap(),
            vec![NervLayer::PerChannel(2), NervLayer::Head]
        );
        let err = NervLayer::parse_list("block2_rgb", 2, Method::Official)
            .unwrap_err()
            .to_string();
        assert!(err.contains("block2_rgb"), "{err}");
        assert!(NervLayer::parse_list("block3", 2, Method::Official).is_err());
        assert!(
            NervLayer::block(2).is_block_output() && NervLayer::PerChannel(2).is_block_output()
        );
        assert!(!NervLayer::Head.is_block_output());
        assert_eq!(NervLayer::PerChannel(2).index(), Some(2));
    }
}
