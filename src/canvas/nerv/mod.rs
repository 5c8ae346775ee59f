//! The NeRV canvas: the driver. A NeRV frame's layers ([`NervFrameData`]) are computed kernel by
//! kernel; every entry point takes a [`CanvasOptions`], and the one place that turns its method
//! and a layer into a rule is `Driver::rule`: the official kernel maps (`official.rs`), or for a
//! conservative block output (`block{n}`, `block{n}_rgb`) the linearised network
//! (`conservative.rs`, which also documents how it is computed). The head and the pre-GELU layers are exact decompositions already and
//! are the official maps under both methods. The official maps run on the CPU (fused path) or on
//! any candle device ([`device`]); the conservative ones on the CPU.
//!
//! - [`nerv_canvas_summary`]: per-layer reductions, streamed;
//! - [`write_nerv_canvas`]: the full maps to a safetensors file, in chunks of input channels;
//! - [`NervFrameData::maps`]: one layer as an owned [`NeuronMaps`] source for the analyses.

mod conservative;
#[cfg(feature = "cuda")]
mod cuda;
pub mod device;
mod device_layer;
mod fused;
mod general;

mod layer;
mod official;
#[cfg(test)]
mod reference;

use std::cell::OnceCell;
use std::ops::Range;

use candle_core::Device;

use crate::canvas::maps::NeuronMaps;
use crate::canvas::{CanvasFileWriter, CanvasOptions, CanvasSummary, LayerSummary, Method};
use crate::error::{Result, XincError};
use general::{GeneralLayer, GeneralNerv};
use official::NervKernelMaps;
use std::sync::Arc;

pub use layer::{official_form, NervBlockData, NervFrameData, NervLayer};
#[doc(hidden)]
pub use official::{
    kernel_map, nerv_layer_maps, nerv_layer_summaries, nerv_layer_summary, sum_over_kernels,
};

/// The exact GELU. Public for the golden test's sanity check (the next block's input from the
/// pre-GELU maps).
#[doc(hidden)]
pub use crate::models::nerv::gelu::gelu_erf;

/// The conservative linearisation of a frame. Public for the benchmark `conservative_maps`
/// (`LinearisedNerv::layer_maps`); users reach it through [`NervFrameData::maps`] and the
/// entry points.
#[doc(hidden)]
pub use conservative::LinearisedNerv;

impl NervFrameData {
    /// The kernels of `layer` (input channels `opts.inputs`) under `opts.method`, as an owned
    /// source of maps computed on demand: the official kernel maps, or for a conservative block
    /// output (`block{n}` or `block{n}_rgb`) the linearised block, which holds its whole-frame
    /// coefficients (46 MB for the official block 3, 260 MB for block 1; three times that per
    /// channel). Neuron `(i − inputs.start)·Cout + k` is kernel (i, k); per channel, each
    /// kernel has three neurons in a row, one per output channel.
    pub fn maps(&self, layer: NervLayer, opts: &CanvasOptions) -> Result<Box<dyn NeuronMaps>> {
        let inputs = self.inputs(layer, opts.inputs.clone())?;
        Ok(match Driver::new(self, opts).rule(layer)? {
            Rule::Linearised(lin) => Box::new(lin.prepare(self, layer, inputs)?),
            Rule::General(g) => Box::new(GeneralLayer::new(g, layer, inputs)?),
            Rule::Kernels => Box::new(NervKernelMaps::new(self.clone(), layer, inputs)?),
        })
    }
}

/// How one layer's maps are computed.
enum Rule<'d> {
    /// The official kernel maps (the head and the pre-GELU layers under either method).
    Kernels,
    /// The conservative linearisation of a block output.
    Linearised(&'d LinearisedNerv),
    /// The conservative canvas of a block output of a variant outside the paper's form.
    General(Arc<GeneralNerv>),
}

/// A frame's canvas under one set of options: the one place that turns the method and a layer
/// into a [`Rule`]. The linearisation is built once, at the first layer that needs it.
struct Driver<'f> {
    frame: &'f NervFrameData,
    opts: &'f CanvasOptions,
    lin: OnceCell<LinearisedNerv>,
}

impl<'f> Driver<'f> {
    fn new(frame: &'f NervFrameData, opts: &'f CanvasOptions) -> Self {
        Driver {
            frame,
            opts,
            lin: OnceCell::new(),
        }
    }

    /// Checks `layer` against the model and the method, and says how its maps are computed.
    fn rule(&self, layer: NervLayer) -> Result<Rule<'_>> {
        self.frame.check(layer, self.opts.method)?;
        if let (Some(g), true) = (&self.frame.general, layer.is_block_output()) {
            return Ok(Rule::General(Arc::clone(g)));
        }
        if self.opts.method == Method::Conservative && layer.is_block_output() {
            if self.lin.get().is_none() {
                let _ = self.lin.set(LinearisedNerv::new(self.frame)?);
            }
            Ok(Rule::Linearised(self.lin.get().expect("just set")))
        } else {
            Ok(Rule::Kernels)
        }
    }

    fn inputs(&self, layer: NervLayer) -> Result<Range<usize>> {
        self.frame.inputs(layer, self.opts.inputs.clone())
    }

    /// The reductions of `layer`'s maps; official kernels on `device`.
    fn summary(&self, layer: NervLayer, device: &Device) -> Result<LayerSummary> {
        let rule = self.rule(layer)?;
        let inputs = self.inputs(layer)?;
        if let Rule::General(g) = rule {
            return GeneralLayer::new(g, layer, inputs)?.summary();
        }
        let data = self.frame.layer(layer)?;
        match rule {
            Rule::General(_) => unreachable!("handled above"),
            Rule::Linearised(lin) => lin.layer_summary(&data, layer, inputs, self.opts.budget),
            Rule::Kernels if device.is_cpu() => nerv_layer_summary(&data, layer, inputs),
            Rule::Kernels => {
                device::layer_summary_on(&data, layer, inputs, device, &Default::default())
            }
        }
    }

    /// The position in `rest` of the layer whose maps come from the same conv planes as
    /// `layer`'s (a block's output and its pre-GELU maps), when both are official kernels on
    /// the CPU: the two are then summarised in one pass ([`Self::shared_summaries`]).
    fn plane_partner(
        &self,
        layer: NervLayer,
        rest: &[NervLayer],
        device: &Device,
    ) -> Result<Option<usize>> {
        let NervLayer::Block { index, pre_gelu } = layer else {
            return Ok(None);
        };
        let other = NervLayer::Block {
            index,
            pre_gelu: !pre_gelu,
        };
        let Some(m) = rest
            .iter()
            .position(|&l| l == other)
            .filter(|_| device.is_cpu())
        else {
            return Ok(None);
        };
        let kernels = |l| Ok::<_, XincError>(matches!(self.rule(l)?, Rule::Kernels));
        Ok((kernels(layer)? && kernels(other)?).then_some(m))
    }

    /// The reductions of two layers that share their conv planes, computed in one pass.
    fn shared_summaries(&self, a: NervLayer, b: NervLayer) -> Result<[LayerSummary; 2]> {
        let data = self.frame.layer(a)?;
        let mut both = nerv_layer_summaries(&data, &[a, b], self.inputs(a)?)?;
        let second = both.pop().expect("two summaries");
        Ok([both.pop().expect("two summaries"), second])
    }

    /// The full shape of `layer`'s maps, `[n, Cout, H, W]`, or `[n, Cout, C, H, W]` per channel.
    fn shape(&self, layer: NervLayer) -> Result<Vec<usize>> {
        self.frame.check(layer, self.opts.method)?;
        let mut shape = vec![self.inputs(layer)?.len(), self.frame.kernel_grid(layer)?.1];
        if let NervLayer::PerChannel(_) = layer {
            shape.push(self.frame.output.len() / (self.frame.height * self.frame.width));
        }
        let (h, w) = match self.frame.general {
            Some(_) => (self.frame.height, self.frame.width),
            None => self.frame.layer(layer)?.map_size(layer),
        };
        shape.extend([h, w]);
        Ok(shape)
    }

    /// Writes `layer`'s maps as tensor `name` of `writer`, a few input channels at a time so
    /// that memory stays near the budget; official kernels on `device`.
    fn write(
        &self,
        layer: NervLayer,
        (name, shape): &(String, Vec<usize>),
        writer: &mut CanvasFileWriter,
        device: &Device,
    ) -> Result<()> {
        let inputs = self.inputs(layer)?;
        let rule = self.rule(layer)?;
        if let Rule::General(g) = rule {
            let general = GeneralLayer::new(g, layer, inputs.clone())?;
            let per_input: usize = shape[1..].iter().product();
            for i in inputs.clone() {
                let values = general.maps(i..i + 1)?;
                writer.write_at(name, (i - inputs.start) * per_input, &values)?;
            }
            return Ok(());
        }
        let data = self.frame.layer(layer)?;
        let prepared = match rule {
            Rule::Linearised(lin) => Some(lin.prepare(self.frame, layer, inputs.clone())?),
            Rule::General(_) | Rule::Kernels => None,
        };
        let per_input: usize = shape[1..].iter().product();
        let chunk = (self.opts.budget / (4 * per_input).max(1)).max(1);
        for start in inputs.clone().step_by(chunk) {
            let part = start..(start + chunk).min(inputs.end);
            let values = match &prepared {
                Some(p) => p.maps(part)?,
                None if device.is_cpu() => nerv_layer_maps(&data, layer, part)?.data,
                None => device::layer_maps_on(&data, layer, part, device)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            };
            writer.write_at(name, (start - inputs.start) * per_input, &values)?;
        }
        Ok(())
    }
}

/// Per-layer reductions of a frame's canvas under `opts` (method, input channels, budget),
/// streamed kernel by kernel: official kernels on the CPU by the fused path
/// ([`nerv_layer_summary`]), on any other device by tensor operations
/// ([`device::layer_summary_on`]); conservative block outputs on the CPU by the linearisation
/// (built once for all the layers), in bands of output rows within `opts.budget`.
pub fn nerv_canvas_summary(
    frame: &NervFrameData,
    layers: &[NervLayer],
    device: &Device,
    opts: &CanvasOptions,
) -> Result<CanvasSummary> {
    let driver = Driver::new(frame, opts);
    let mut done: Vec<Option<LayerSummary>> = layers.iter().map(|_| None).collect();
    for (n, &layer) in layers.iter().enumerate() {
        if done[n].is_some() {
            continue;
        }
        match driver.plane_partner(layer, &layers[n + 1..], device)? {
            Some(m) => {
                let partner = n + 1 + m;
                let [a, b] = driver.shared_summaries(layer, layers[partner])?;
                (done[n], done[partner]) = (Some(a), Some(b));
            }
            None => done[n] = Some(driver.summary(layer, device)?),
        }
    }
    Ok(CanvasSummary {
        height: frame.height,
        width: frame.width,
        layers: done
            .into_iter()
            .map(|s| s.expect("every layer is summarised"))
            .collect(),
        output: frame.output.to_vec(),
    })
}

/// Writes a frame's full canvas of `layers` under `opts` to a safetensors file (`[Cin, Cout, H,
/// W]` per layer, `[Cin, Cout, 3, H, W]` for `block{n}_rgb`, plus `output`), a few input
/// channels at a time so that memory stays near `opts.budget` bytes whatever the layer's size
/// (block 1 is 2.4 GB). Official maps are computed on `device`.
pub fn write_nerv_canvas(
    frame: &NervFrameData,
    layers: &[NervLayer],
    path: &std::path::Path,
    device: &Device,
    opts: &CanvasOptions,
) -> Result<()> {
    let driver = Driver::new(frame, opts);
    let specs = layers
        .iter()
        .map(|&l| Ok((l.to_string(), driver.shape(l)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut writer = CanvasFileWriter::create(path, &specs, 3, frame.height, frame.width)?;
    for (&layer, spec) in layers.iter().zip(&specs) {
        driver.write(layer, spec, &mut writer, device)?;
    }
    writer.write_at("output", 0, &frame.output)?;
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_pre_gelu_layers_are_the_official_ones_under_both_methods() {
        let frame = NervFrameData::tiny();
        for layer in [
            NervLayer::Head,
            NervLayer::Block {
                index: 2,
                pre_gelu: true,
            },
        ] {
            let all = frame.inputs(layer, None).unwrap();
            let opts = CanvasOptions::from(Method::Conservative);
            let ours = nerv_canvas_summary(&frame, &[layer], &Device::Cpu, &opts).unwrap();
            let official = nerv_layer_summary(&frame.layer(layer).unwrap(), layer, all).unwrap();
            assert_eq!(ours.layers[0], official);
        }
    }

    #[test]
    fn a_block_and_its_pre_gelu_maps_summarised_in_one_pass_equal_each_alone() {
        let frame = NervFrameData::tiny();
        let pre = NervLayer::Block {
            index: 2,
            pre_gelu: true,
        };
        let layers = [
            pre,
            NervLayer::Head,
            NervLayer::block(2),
            NervLayer::block(1),
        ];
        for method in [Method::Official, Method::Conservative] {
            let opts = CanvasOptions {
                inputs: Some(1..2),
                ..CanvasOptions::from(method)
            };
            let together = nerv_canvas_summary(&frame, &layers, &Device::Cpu, &opts).unwrap();
            for (n, &layer) in layers.iter().enumerate() {
                let alone = nerv_canvas_summary(&frame, &[layer], &Device::Cpu, &opts).unwrap();
                assert_eq!(together.layers[n], alone.layers[0], "{layer} ({method:?})");
            }
        }
    }

    #[test]
    fn frame_maps_dispatch_on_the_method_and_own_their_data() {
        let frame = NervFrameData::tiny();
        let (official, conservative) = (
            CanvasOptions::default(),
            CanvasOptions {
                inputs: Some(1..3),
                ..CanvasOptions::from(Method::Conservative)
            },
        );
        let lin = LinearisedNerv::new(&frame).unwrap();
        let data = frame.layer(NervLayer::block(2)).unwrap();
        let cout = data.out_channels();
        // Per channel: three neurons per kernel, the probes of the prepared block.
        let rgb = frame.maps(NervLayer::PerChannel(2), &conservative).unwrap();
        let prepared = lin.prepare(&frame, NervLayer::PerChannel(2), 1..3).unwrap();
        assert_eq!(rgb.layer(), "block2_rgb");
        assert_eq!(rgb.num_neurons(), 2 * cout * 3);
        let n = (cout + 2) * 3 + 1; // kernel (2, 2), channel 1
        assert_eq!(rgb.neuron_id(n), (2, Some(2)));
        assert_eq!(rgb.neuron_name(n), "kernel 2→2, channel 1");
        let mut want = vec![0.0; frame.height * frame.width];
        prepared.kernel_map_into(2, 2, 1, &mut want);
        assert_eq!(rgb.map(n), want);
        // Summed: the maps of the three channels add up.
        let summed = frame.maps(NervLayer::block(2), &conservative).unwrap();
        let s = summed.map(cout + 2);
        for (o, v) in s.iter().enumerate() {
            let total: f32 = (0..3).map(|c| rgb.map((cout + 2) * 3 + c)[o]).sum();
            assert!(
                (v - total).abs() <= 1e-5 * v.abs().max(1.0),
                "{v} vs {total}"
            );
        }
        // Official: the kernel maps; no per-channel maps.
        let kernels = frame.maps(NervLayer::block(2), &official).unwrap();
        assert_eq!(kernels.num_neurons(), data.in_channels * cout);
        assert_eq!(
            kernels.map(5),
            kernel_map(&data, NervLayer::block(2), 0, 5).unwrap()
        );
        let err = frame
            .maps(NervLayer::PerChannel(2), &official)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("block2_rgb"), "{err}");
        // The source outlives the frame it came from.
        drop(frame);
        assert_eq!(rgb.map(n), want);
    }
}
