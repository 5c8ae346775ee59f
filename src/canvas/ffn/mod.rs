//! The FFN canvas: the driver. Every entry point takes a [`CanvasOptions`]; the one place that
//! turns its method into a rule is `TileRule::new`, which picks the official closed form
//! (`official.rs`) or the conservative linearisation (`conservative.rs`) of each requested layer.
//! The maps are computed from the forward pass's activations (the whole image in memory,
//! [`ffn_canvas`]) or tile by tile of `opts.tile` pixels, forward pass included
//! ([`for_each_ffn_tile`], [`ffn_canvas_summary`], [`write_ffn_canvas`]).

mod conservative;
mod layer;
mod official;

use std::sync::Arc;

use candle_core::{Device, Tensor};

pub use layer::FfnLayer;
pub use official::{unit_pair_map, unit_pair_reductions};

use crate::canvas::{
    Canvas, CanvasFileWriter, CanvasOptions, CanvasSummary, ContributionMap, Method,
    SummaryAccumulator,
};
use crate::error::{Result, XincError};
use crate::models::ffn::{Ffn, FfnActivations};
use crate::tensor::{transpose, with_f32_slice, zeroed_buffer};
use official::LayerRule;

/// Pixels per tile of the conservative maps' tensor operations.
const CONSERVATIVE_TILE: usize = 2048;

/// How one requested layer's maps are made: the official closed form, or the conservative
/// linearisation.
enum TileRule {
    Official(LayerRule),
    Conservative(FfnLayer),
}

impl TileRule {
    fn new(model: &Ffn, layer: FfnLayer, method: Method) -> Result<Self> {
        Ok(match method {
            Method::Official => TileRule::Official(LayerRule::new(model, layer)?),
            Method::Conservative => TileRule::Conservative(layer.check(model.config(), method)?),
        })
    }

    fn layer(&self) -> FfnLayer {
        match self {
            TileRule::Official(rule) => rule.layer,
            TileRule::Conservative(layer) => *layer,
        }
    }

    /// Maps per pixel: fan_in · rows.
    fn maps(&self, model: &Ffn) -> usize {
        self.layer().neuron_shape(model.config()).iter().product()
    }

    /// Writes the `[maps, t]` maps of the `t` pixels whose activations are `acts` into `out`.
    fn write(&self, model: &Ffn, acts: &FfnActivations, t: usize, out: &mut [f32]) -> Result<()> {
        match self {
            TileRule::Official(rule) => {
                with_f32_slice(acts.layer_input(rule.layer.linear_index())?, |x| {
                    rule.write_maps(x, t, out)
                })
            }
            TileRule::Conservative(layer) => {
                conservative::layer_maps_into(model, acts, *layer, CONSERVATIVE_TILE, out)
            }
        }
    }
}

/// The canvas of the requested layers under `opts.method` from a forward pass over the model's
/// whole image. The maps are computed in parallel straight from the activations (no
/// temporaries).
pub fn ffn_canvas(
    model: &Ffn,
    acts: &FfnActivations,
    layers: &[FfnLayer],
    opts: &CanvasOptions,
) -> Result<Canvas> {
    let mut canvas = Canvas::default();
    ffn_canvas_into(model, acts, layers, opts, &mut canvas)?;
    Ok(canvas)
}

/// [`ffn_canvas`] written into `canvas`, reusing its buffers where they have the right size and
/// are not shared: a loop over many images or models then pays for the maps' memory (95 MB at
/// the paper's size) once instead of faulting fresh pages in every time.
pub fn ffn_canvas_into(
    model: &Ffn,
    acts: &FfnActivations,
    layers: &[FfnLayer],
    opts: &CanvasOptions,
    canvas: &mut Canvas,
) -> Result<()> {
    let config = model.config();
    let [height, width] = config.data_shape;
    let p = config.num_pixels();
    if acts.features.dims()[0] != p {
        return Err(XincError::InvalidArgument(format!(
            "activations cover {} pixels, the model's image has {p}",
            acts.features.dims()[0]
        )));
    }
    let mut old = std::mem::take(&mut canvas.layers).into_iter();
    for &layer in layers {
        let rule = TileRule::new(model, layer, opts.method)?;
        let len = rule.maps(model) * p;
        let mut data = match old.next().map(Arc::try_unwrap) {
            Some(Ok(m)) if m.data.len() == len => m.data,
            _ => zeroed_buffer(len),
        };
        rule.write(model, acts, p, &mut data)?;
        canvas.layers.push(Arc::new(ContributionMap {
            layer: layer.to_string(),
            neuron_shape: layer.neuron_shape(config),
            height,
            width,
            data,
        }));
    }
    canvas.output = with_f32_slice(&acts.pre_output, |y| transpose(y, p, config.dim_out))?;
    (canvas.height, canvas.width) = (height, width);
    Ok(())
}

/// One tile of a streamed canvas: pixels `p0..p0 + len`.
pub(crate) struct CanvasTile<'a> {
    pub p0: usize,
    pub len: usize,
    /// The output the maps explain, `[C, len]`.
    pub output: &'a [f32],
    /// Per requested layer, its maps `[maps, len]`.
    pub maps: &'a [Vec<f32>],
}

/// Streams the canvas over tiles of `opts.tile` pixels: each tile runs the forward pass on its
/// own coordinates and computes every requested layer's maps under `opts.method`, so memory
/// stays at one tile whatever the image size. `sink` sees the tiles in pixel order.
pub(crate) fn for_each_ffn_tile(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    opts: &CanvasOptions,
    mut sink: impl FnMut(&CanvasTile) -> Result<()>,
) -> Result<()> {
    let config = model.config();
    let rules = layers
        .iter()
        .map(|&l| TileRule::new(model, l, opts.method))
        .collect::<Result<Vec<_>>>()?;
    let tile = opts.tile.max(1);
    let mut buffers: Vec<Vec<f32>> = rules
        .iter()
        .map(|r| vec![0.0; r.maps(model) * tile])
        .collect();
    for_each_forward(model, device, tile, |p0, t, acts| {
        for (rule, buf) in rules.iter().zip(buffers.iter_mut()) {
            buf.truncate(rule.maps(model) * t);
            rule.write(model, acts, t, buf)?;
        }
        let output = with_f32_slice(&acts.pre_output, |y| transpose(y, t, config.dim_out))?;
        sink(&CanvasTile {
            p0,
            len: t,
            output: &output,
            maps: &buffers,
        })
    })
}

/// Runs the forward pass on `device` over pixel tiles of the model's image, in pixel order:
/// `f(p0, len, activations)`.
fn for_each_forward(
    model: &Ffn,
    device: &Device,
    tile: usize,
    mut f: impl FnMut(usize, usize, &FfnActivations) -> Result<()>,
) -> Result<()> {
    let config = model.config();
    let coords = crate::data::coords::coordinate_grid(config.height(), config.width());
    let p = config.num_pixels();
    let tile = tile.max(1);
    for p0 in (0..p).step_by(tile) {
        let t = tile.min(p - p0);
        let xy = Tensor::from_slice(&coords[2 * p0..2 * (p0 + t)], (t, 2), device)?;
        f(p0, t, &model.forward(&xy)?)?;
    }
    Ok(())
}

/// Per-layer reductions (`sum_hw`, `abssum_hw`, `sum_neurons`) and the output of the canvas
/// under `opts.method`, streamed tile by tile: the canvas itself is never held. On the CPU each
/// tile's maps are written by the fused rule and reduced; on any other device (CUDA) they are
/// built and reduced there with tensor operations, and only the reductions come back.
pub fn ffn_canvas_summary(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    opts: &CanvasOptions,
) -> Result<CanvasSummary> {
    let config = model.config();
    let [height, width] = config.data_shape;
    let p = config.num_pixels();
    let mut accs: Vec<_> = layers
        .iter()
        .map(|l| SummaryAccumulator::new(&l.to_string(), &l.neuron_shape(config), height, width))
        .collect();
    let mut output = vec![0.0f32; config.dim_out * p];
    if device.is_cpu() {
        for_each_ffn_tile(model, device, layers, opts, |tile| {
            for (acc, maps) in accs.iter_mut().zip(tile.maps) {
                acc.add_tile(tile.p0, tile.len, maps);
            }
            scatter_rows(&mut output, p, tile.p0, tile.len, tile.output);
            Ok(())
        })?;
    } else {
        reduce_with_tensor_ops(model, device, layers, opts, &mut accs, &mut output)?;
    }
    Ok(CanvasSummary {
        height,
        width,
        layers: accs.into_iter().map(SummaryAccumulator::finish).collect(),
        output,
    })
}

/// The device half of [`ffn_canvas_summary`]: each tile's maps are built and reduced on
/// `device` with tensor operations; `accs` (one per layer) and `output` (`[C, P]`) receive the
/// results.
fn reduce_with_tensor_ops(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    opts: &CanvasOptions,
    accs: &mut [SummaryAccumulator],
    output: &mut [f32],
) -> Result<()> {
    let p = model.config().num_pixels();
    let rules = layers
        .iter()
        .map(|&l| {
            Ok(match TileRule::new(model, l, opts.method)? {
                TileRule::Official(rule) => {
                    let (rule, dev) = rule.on(device)?;
                    (TileRule::Official(rule), Some(dev))
                }
                conservative => (conservative, None),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let sums = |m: &Tensor| -> Result<Vec<f32>> { Ok(m.sum(2)?.flatten_all()?.to_vec1::<f32>()?) };
    for_each_forward(model, device, opts.tile, |p0, t, acts| {
        for (acc, (rule, dev_rule)) in accs.iter_mut().zip(&rules) {
            let maps = match (rule, dev_rule) {
                (TileRule::Official(rule), Some(dev)) => {
                    dev.maps(rule, acts.layer_input(rule.layer.linear_index())?)?
                }
                _ => conservative::layer_maps(model, acts, rule.layer())?,
            };
            let neuron_sums = maps.sum(0)?.flatten_all()?.to_vec1::<f32>()?;
            acc.add_reduced(p0, t, &sums(&maps)?, &sums(&maps.abs()?)?, &neuron_sums);
        }
        let y = acts.pre_output.t()?.flatten_all()?.to_vec1::<f32>()?;
        scatter_rows(output, p, p0, t, &y);
        Ok(())
    })
}

/// Writes the full canvas of the requested layers under `opts.method` to a safetensors file,
/// streamed tile by tile (memory: one tile), named by layer, plus `output`.
pub fn write_ffn_canvas(
    model: &Ffn,
    device: &Device,
    layers: &[FfnLayer],
    path: &std::path::Path,
    opts: &CanvasOptions,
) -> Result<()> {
    let config = model.config();
    let [height, width] = config.data_shape;
    let specs: Vec<(String, Vec<usize>)> = layers
        .iter()
        .map(|l| {
            let mut shape = l.neuron_shape(config);
            shape.extend([height, width]);
            (l.to_string(), shape)
        })
        .collect();
    let mut writer = CanvasFileWriter::create(path, &specs, config.dim_out, height, width)?;
    for_each_ffn_tile(model, device, layers, opts, |tile| {
        for ((name, _), maps) in specs.iter().zip(tile.maps) {
            writer.write_tile(name, tile.p0, tile.len, maps)?;
        }
        writer.write_tile("output", tile.p0, tile.len, tile.output)
    })?;
    writer.finish()
}

/// Copies a `[rows, t]` tile into columns `p0..p0+t` of a `[rows, p]` buffer.
fn scatter_rows(dst: &mut [f32], p: usize, p0: usize, t: usize, tile: &[f32]) {
    for (r, row) in tile.chunks_exact(t).enumerate() {
        dst[r * p + p0..r * p + p0 + t].copy_from_slice(row);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::models::ffn::FfnConfig;

    fn small_model(final_act: bool) -> Ffn {
        let mut cfg = FfnConfig::with_width(20, 6, 10);
        if final_act {
            cfg.final_act = Some(crate::models::ffn::FinalActivation::Sigmoid);
        }
        let t: HashMap<_, _> = cfg
            .init_tensors(3, &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect();
        Ffn::from_tensors(cfg, t, "test", &Device::Cpu).unwrap()
    }

    #[test]
    fn rgb_maps_sum_to_the_pre_activation_output() {
        let m = small_model(true);
        let acts = m.forward_image(&Device::Cpu).unwrap();
        let opts = CanvasOptions::default();
        let c = ffn_canvas(
            &m,
            &acts,
            &FfnLayer::all(m.config(), Method::Official),
            &opts,
        )
        .unwrap();
        let rgb = c.layer("layer3_rgb").unwrap().summarise();
        let max_err = rgb
            .sum_neurons
            .iter()
            .zip(&c.output)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max_err < 1e-5, "conservation error {max_err}");
        // The summed layer-3 map is the channel sum of the per-channel maps.
        let l3 = c.layer("layer3").unwrap();
        let l3rgb = c.layer("layer3_rgb").unwrap();
        let p = 60;
        for i in [0, 7, 19] {
            for q in [0, 33, 59] {
                let s: f32 = (0..3).map(|ch| l3rgb.map(i * 3 + ch)[q]).sum();
                assert!((s - l3.map(i)[q]).abs() < 1e-5);
            }
        }
        assert_eq!(l3.data.len(), 20 * p);
        // Inner layers are ReLU'd aggregates: never negative.
        assert!(c.layer("layer1").unwrap().data.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn canvas_into_reuses_buffers_and_equals_a_fresh_canvas() {
        let m = small_model(false);
        let acts = m.forward_image(&Device::Cpu).unwrap();
        let layers = FfnLayer::all(m.config(), Method::Official);
        let opts = CanvasOptions::default();
        let fresh = ffn_canvas(&m, &acts, &layers, &opts).unwrap();
        let mut reused = ffn_canvas(&m, &acts, &layers[..1], &opts).unwrap();
        let first = reused.layers[0].data.as_ptr();
        Arc::get_mut(&mut reused.layers[0])
            .unwrap()
            .data
            .iter_mut()
            .for_each(|v| *v = f32::NAN);
        ffn_canvas_into(&m, &acts, &layers, &opts, &mut reused).unwrap();
        assert_eq!(reused, fresh);
        assert_eq!(reused.layers[0].data.as_ptr(), first);
    }

    #[test]
    fn tensor_ops_summary_matches_the_fused_one() {
        let m = small_model(false);
        let dev = Device::Cpu;
        let layers = FfnLayer::all(m.config(), Method::Official);
        let opts = CanvasOptions {
            tile: 13,
            ..Default::default()
        };
        let fused = ffn_canvas_summary(&m, &dev, &layers, &opts).unwrap();
        let cfg = m.config();
        let mut accs: Vec<_> = layers
            .iter()
            .map(|l| SummaryAccumulator::new(&l.to_string(), &l.neuron_shape(cfg), 6, 10))
            .collect();
        let mut output = vec![0.0; 3 * 60];
        reduce_with_tensor_ops(&m, &dev, &layers, &opts, &mut accs, &mut output).unwrap();
        assert_eq!(output, fused.output);
        for (acc, f) in accs.into_iter().zip(&fused.layers) {
            let t = acc.finish();
            assert_eq!(t.neuron_shape, f.neuron_shape);
            for (a, b) in [
                (&t.sum_hw, &f.sum_hw),
                (&t.abssum_hw, &f.abssum_hw),
                (&t.sum_neurons, &f.sum_neurons),
            ] {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                        "{}: {x} vs {y}",
                        t.layer
                    );
                }
            }
        }
    }

    fn opts(tile: usize) -> CanvasOptions {
        CanvasOptions {
            tile,
            ..Default::default()
        }
    }

    #[test]
    fn streamed_summary_and_file_match_the_in_memory_canvas() {
        let m = small_model(false);
        let dev = Device::Cpu;
        let layers = FfnLayer::all(m.config(), Method::Official);
        let c = ffn_canvas(&m, &m.forward_image(&dev).unwrap(), &layers, &opts(7)).unwrap();
        let s = ffn_canvas_summary(&m, &dev, &layers, &opts(7)).unwrap();
        for (full, streamed) in c.layers.iter().zip(&s.layers) {
            let direct = full.summarise();
            for (a, b) in direct.abssum_hw.iter().zip(&streamed.abssum_hw) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{} {a} vs {b}",
                    full.layer
                );
            }
            for (a, b) in direct.sum_neurons.iter().zip(&streamed.sum_neurons) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        write_ffn_canvas(&m, &dev, &layers, &path, &opts(13)).unwrap();
        let t = crate::io::load_safetensors(&path, &dev).unwrap();
        let l2 = t["layer2"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max_err = l2
            .iter()
            .zip(&c.layer("layer2").unwrap().data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(max_err < 1e-5);
        assert_eq!(t["layer3_rgb"].dims(), &[20, 3, 6, 10]);
        assert_eq!(t["output"].dims(), &[3, 6, 10]);
    }

    #[test]
    fn every_layer_sums_to_the_output_and_the_last_is_the_official_one() {
        let m = conservative::tests::model(0.0);
        let acts = m.forward_image(&Device::Cpu).unwrap();
        let layers = FfnLayer::all(m.config(), Method::Conservative);
        assert_eq!(layers.len(), 6);
        let (official, conservative) = (
            CanvasOptions::default(),
            CanvasOptions::from(Method::Conservative),
        );
        let canvas = ffn_canvas(&m, &acts, &layers, &conservative).unwrap();
        let y = &canvas.output; // [3, P]
        let p = 35;
        for maps in &canvas.layers {
            let s = maps.summarise();
            let per_channel = maps.neuron_shape.len() == 2;
            for (o, v) in s.sum_neurons.iter().enumerate() {
                let want = if per_channel {
                    y[o]
                } else {
                    (0..3).map(|c| y[c * p + o]).sum()
                };
                assert!(
                    (v - want).abs() <= 1e-5,
                    "{} value {o}: {v} vs {want}",
                    maps.layer
                );
            }
        }
        let last = ffn_canvas(&m, &acts, &[FfnLayer::PerChannel(3)], &official).unwrap();
        let ours = canvas.layer("layer3_rgb").unwrap();
        for (a, b) in ours.data.iter().zip(&last.layers[0].data) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
        // Inner layers differ from the official heuristic.
        let off2 = ffn_canvas(&m, &acts, &[FfnLayer::Summed(2)], &official).unwrap();
        assert_ne!(canvas.layer("layer2").unwrap().data, off2.layers[0].data);
        // The streamed summary agrees with the maps in memory.
        let tiled = CanvasOptions {
            tile: 8,
            ..conservative
        };
        let streamed = ffn_canvas_summary(&m, &Device::Cpu, &layers, &tiled).unwrap();
        for (a, b) in streamed.layers.iter().zip(canvas.summary().layers.iter()) {
            for (x, y) in a.sum_hw.iter().zip(&b.sum_hw) {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0));
            }
        }
        assert!(FfnLayer::PerChannel(1)
            .check(m.config(), Method::Official)
            .is_err());
    }

    /// The encodings and activations of the image families: the conservative maps of every layer
    /// sum to the output (per channel and summed), and the official ones exist for every layer.
    #[test]
    fn nerf_ffn_and_siren_canvases_conserve_the_output() {
        use crate::models::ffn::{HiddenActivation, PosEncoding};
        let nerf = FfnConfig {
            encoding: PosEncoding::Nerf { num_frequencies: 3 },
            ..FfnConfig::with_width(12, 5, 7)
        };
        let siren = FfnConfig {
            activation: HiddenActivation::Sine {
                w0: 30.0,
                w0_initial: 10.0,
            },
            ..FfnConfig::siren(12, 5, 7)
        };
        assert_eq!((nerf.encoding_dim(), siren.encoding_dim()), (14, 2));
        for cfg in [nerf, siren] {
            let t: HashMap<_, _> = cfg
                .init_tensors(5, &Device::Cpu)
                .unwrap()
                .into_iter()
                .collect();
            let m = Ffn::from_tensors(cfg.clone(), t, "test", &Device::Cpu).unwrap();
            let acts = m.forward_image(&Device::Cpu).unwrap();
            let layers = FfnLayer::all(m.config(), Method::Conservative);
            let canvas = ffn_canvas(
                &m,
                &acts,
                &layers,
                &CanvasOptions::from(Method::Conservative),
            )
            .unwrap();
            let (y, p) = (&canvas.output, 35);
            let scale = y.iter().fold(1f32, |a, v| a.max(v.abs()));
            for maps in &canvas.layers {
                let s = maps.summarise();
                let per_channel = maps.neuron_shape.len() == 2;
                for (o, v) in s.sum_neurons.iter().enumerate() {
                    let want = if per_channel {
                        y[o]
                    } else {
                        (0..3).map(|c| y[c * p + o]).sum()
                    };
                    assert!(
                        (v - want).abs() <= 1e-5 * scale,
                        "{} {} value {o}: {v} vs {want}",
                        cfg.model_name(),
                        maps.layer
                    );
                }
            }
            let official = FfnLayer::all(m.config(), Method::Official);
            let canvas = ffn_canvas(&m, &acts, &official, &CanvasOptions::default()).unwrap();
            assert_eq!(canvas.layers.len(), official.len());
        }
    }

    #[test]
    fn unit_pair_reductions_match_brute_force() {
        let m = small_model(false);
        let acts = m.forward_image(&Device::Cpu).unwrap();
        let (sum, abs) = unit_pair_reductions(&m, &acts, 2).unwrap();
        for (i, j) in [(0, 0), (3, 17), (19, 5)] {
            let z = unit_pair_map(&m, &acts, 2, i, j).unwrap();
            let s: f32 = z.iter().sum();
            let a: f32 = z.iter().map(|v| v.abs()).sum();
            assert!(
                (sum[i * 20 + j] - s).abs() < 1e-4,
                "{} vs {s}",
                sum[i * 20 + j]
            );
            assert!(
                (abs[i * 20 + j] - a).abs() < 1e-4,
                "{} vs {a}",
                abs[i * 20 + j]
            );
        }
    }
}
