//! Ablation of NeRV kernels (see [`super`]).
//!
//! A NeRV neuron is a kernel i→k of the head or of a block's conv (flat index `i·Cout + k`, as
//! the canvas numbers them). Its removal sets the kernel to zero
//! ([`Nerv::ablated_head_outputs`]): on the head that is exact and linear (the change of the
//! head output is the kernel's map less its bias share, a test), in a block a partial forward
//! pass from the block's conv on, batched over kernels, on the study's device (CPU or CUDA).
//! The change is measured on the head output, which the maps sum to; the PSNR on the
//! reconstruction after OutImg.

use candle_core::Tensor;

use super::{Removal, Scene};
use crate::canvas::maps::NeuronMaps;
use crate::error::{Result, XincError};
use crate::models::nerv::{KernelLayer, Nerv, NervActivations};

/// Everything needed to remove kernels of one layer of one frame: the model, the frame's
/// activations, the scene and the canvases' maps of the layer.
pub struct NervAblation<'a> {
    model: &'a Nerv,
    acts: &'a NervActivations,
    layer: KernelLayer,
    cout: usize,
    scene: &'a Scene,
    maps: Vec<&'a dyn NeuronMaps>,
}

impl<'a> NervAblation<'a> {
    /// Checks that every canvas has one map per kernel of `layer`.
    pub fn new(
        model: &'a Nerv,
        acts: &'a NervActivations,
        layer: KernelLayer,
        scene: &'a Scene,
        maps: Vec<&'a dyn NeuronMaps>,
    ) -> Result<Self> {
        let (cin, cout) = model.kernel_shape(layer)?;
        if let Some(m) = maps.iter().find(|m| m.num_neurons() != cin * cout) {
            return Err(XincError::InvalidArgument(format!(
                "{}: {} maps for the {} kernels of {layer}",
                m.layer(),
                m.num_neurons(),
                cin * cout
            )));
        }
        Ok(NervAblation {
            model,
            acts,
            layer,
            cout,
            scene,
            maps,
        })
    }

    /// The layer's kernels.
    pub fn neurons(&self) -> usize {
        self.maps.first().map_or(0, |m| m.num_neurons())
    }

    /// The head output `[B, 3, H, W]` with each of `neurons` removed in turn.
    pub fn head_outputs(&self, neurons: &[usize]) -> Result<Tensor> {
        let kernels: Vec<(usize, usize)> = neurons
            .iter()
            .map(|&n| (n / self.cout, n % self.cout))
            .collect();
        self.model
            .ablated_head_outputs(self.acts, self.layer, &kernels)
    }

    /// Removes each of `neurons` in turn (one batched pass) and measures the removals.
    pub fn remove(&self, neurons: &[usize]) -> Result<Vec<Removal>> {
        if neurons.is_empty() {
            return Ok(Vec::new());
        }
        let outs = self.head_outputs(neurons)?;
        let b = neurons.len();
        let change: Vec<Vec<f32>> = self
            .acts
            .head_output
            .broadcast_sub(&outs)?
            .sum(1)?
            .reshape((b, ()))?
            .to_vec2()?;
        let pred: Vec<Vec<f32>> = self.model.out_img(&outs)?.reshape((b, ()))?.to_vec2()?;
        use rayon::prelude::*;
        (neurons.par_iter().zip(pred.par_iter().zip(&change)))
            .map(|(&n, (p, c))| self.scene.removal(n, p, c, &self.maps))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, IndexOp};

    use super::*;
    use crate::analysis::ablation::Layout;
    use crate::analysis::regions::Regions;
    use crate::canvas::nerv::{NervFrameData, NervLayer};
    use crate::canvas::CanvasOptions;
    use crate::compress::prune::prune;
    use crate::models::nerv::tiny_nerv as tiny;
    use crate::train::psnr_quantised;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn removing_a_head_kernel_subtracts_its_map_less_the_bias_share() {
        let model = tiny("");
        let acts = model.forward_frame(1, &Device::Cpu).unwrap();
        let data = NervFrameData::new(&model, &acts).unwrap();
        let maps = data
            .maps(NervLayer::Head, &CanvasOptions::default())
            .unwrap();
        let (cin, cout) = model.kernel_shape(KernelLayer::Head).unwrap();
        assert_eq!(cout, 3);
        let kernels: Vec<(usize, usize)> = (0..cin * cout).map(|n| (n / cout, n % cout)).collect();
        let outs = model
            .ablated_head_outputs(&acts, KernelLayer::Head, &kernels)
            .unwrap();
        let bias = values(model.head().bias().unwrap());
        for (b, &(i, k)) in kernels.iter().enumerate() {
            let change = (&acts.head_output.i(0).unwrap() - outs.i(b).unwrap()).unwrap();
            let map = maps.map(i * cout + k);
            for c in 0..3 {
                let got = values(&change.i(c).unwrap());
                for (p, g) in got.iter().enumerate() {
                    let want = if c == k {
                        map[p] - bias[k] / cin as f32
                    } else {
                        0.0
                    };
                    assert!(
                        (g - want).abs() < 1e-5,
                        "kernel {i}→{k} ch {c} px {p}: {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn removing_a_block_kernel_is_the_forward_pass_of_the_model_without_it() {
        // Every block type and a norm: the batched partial pass against the whole forward pass
        // of a model whose kernel is zeroed.
        for extra in [
            "",
            "--conv_type convnext conv --ks 0_4_4",
            "--conv_type convnext interpolate --dec_strds 2 2 2",
            "--norm bn --act relu",
        ] {
            let model = tiny(extra);
            let acts = model.forward_frame(2, &Device::Cpu).unwrap();
            let intact = values(&acts.head_output);
            for n in 1..=3 {
                let layer = KernelLayer::Block(n);
                let (cin, cout) = model.kernel_shape(layer).unwrap();
                // Whether removing kernel `m` changed the output, after checking the batched
                // partial pass against the pruned model's whole forward pass.
                let check = |picks: &[usize]| -> Vec<bool> {
                    let kernels: Vec<(usize, usize)> =
                        picks.iter().map(|&m| (m / cout, m % cout)).collect();
                    let outs = model.ablated_head_outputs(&acts, layer, &kernels).unwrap();
                    let fraction = 0.5 / (cin * cout) as f64 + 1e-12;
                    (picks.iter().enumerate())
                        .map(|(b, &m)| {
                            let mut scores = vec![1.0; cin * cout];
                            scores[m] = -1.0;
                            let (pruned, count) =
                                prune(&model, &layer.to_string(), &scores, fraction).unwrap();
                            assert_eq!(count, 1);
                            let want =
                                values(&pruned.forward_frame(2, &Device::Cpu).unwrap().head_output);
                            let got = values(&outs.i(b).unwrap());
                            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                            for (g, w) in got.iter().zip(&want) {
                                assert!(
                                    (g - w).abs() <= 1e-5 * scale.max(1.0),
                                    "{extra:?} {layer} kernel {m}: {g} vs {w}"
                                );
                            }
                            intact.iter().zip(&want).any(|(a, w)| a != w)
                        })
                        .collect()
                };
                let mut mattered = check(&[0, cin * cout / 2 + 1, cin * cout - 1]).contains(&true);
                // Some kernel must matter (else the test could not fail), but those three may all
                // be dead behind a ReLU in a random model: then look on, a few at a time.
                let rest: Vec<usize> = (1..cin * cout - 1).collect();
                for picks in rest.chunks(8) {
                    if mattered {
                        break;
                    }
                    mattered = check(picks).contains(&true);
                }
                assert!(mattered, "{extra:?} {layer}: no removal changed the output");
            }
            assert!(model
                .ablated_head_outputs(&acts, KernelLayer::Block(4), &[(0, 0)])
                .is_err());
        }
    }

    #[test]
    fn a_removal_measures_the_psnr_drop_of_the_reconstruction() {
        let model = tiny("");
        let acts = model.forward_frame(0, &Device::Cpu).unwrap();
        let data = NervFrameData::new(&model, &acts).unwrap();
        let opts = CanvasOptions::default();
        let maps = data.maps(NervLayer::block(3), &opts).unwrap();
        let target: Vec<f32> = (0..3 * 24 * 36).map(|i| (i % 13) as f32 / 13.0).collect();
        let intact = values(&acts.output);
        let mut regions = Regions::default();
        regions.push("top".into(), (0..12 * 36).collect());
        let scene = Scene::new(target.clone(), Layout::ChannelMajor, regions, &intact).unwrap();
        let ablation = NervAblation::new(
            &model,
            &acts,
            KernelLayer::Block(3),
            &scene,
            vec![maps.as_ref()],
        )
        .unwrap();
        let removals = ablation.remove(&[5, 17]).unwrap();
        let outs = ablation.head_outputs(&[5, 17]).unwrap();
        for (b, r) in removals.iter().enumerate() {
            let pred = values(&model.out_img(&outs.i(b).unwrap()).unwrap());
            let drop = psnr_quantised(&intact, &target) - psnr_quantised(&pred, &target);
            assert!(
                (r.psnr_drop - drop).abs() < 1e-9,
                "{} vs {drop}",
                r.psnr_drop
            );
            let top = |v: &[f32]| -> Vec<f32> {
                (0..3)
                    .flat_map(|c| v[c * 864..c * 864 + 432].to_vec())
                    .collect()
            };
            let object = psnr_quantised(&top(&intact), &top(&target))
                - psnr_quantised(&top(&pred), &top(&target));
            assert!((r.object_drops[0] - object).abs() < 1e-9);
            assert_eq!(r.views.len(), 1);
            assert!(r.views[0].total > 0.0);
        }
        let wrong = NervAblation::new(
            &model,
            &acts,
            KernelLayer::Head,
            &scene,
            vec![maps.as_ref()],
        );
        assert!(wrong.is_err());
    }
}
