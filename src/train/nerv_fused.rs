//! NeRV training steps on the CPU through the fused network ([`FusedNerv`]): forward, backward
//! and Adam in place, no allocation per step. [`super::nerv`] takes this path on the CPU for the
//! configurations the fused network covers, with a pixel loss (L2, L1 or a mix of them), and
//! hands the weights and moments back to its training state at every evaluation.

use candle_core::{Device, Tensor};

use super::adam::{Adam, AdamParams};
use super::loss::Loss;
use crate::error::Result;
use crate::models::nerv::fused::{unsupported, FusedNerv};
use crate::models::nerv::Nerv;

/// The fused trainer: the network, one Adam per parameter, the masks of a pruned model.
pub struct FusedNervTrainer {
    net: FusedNerv,
    adam: Vec<Adam>,
    /// Per parameter: 0 where a pruned weight stays zero.
    masks: Vec<Option<Vec<f32>>>,
    weights: (f64, f64),
    /// Adam steps taken (continues the state's count).
    pub(crate) steps: usize,
}

/// The state a trainer starts from and hands back: per parameter (in the order of
/// `NervConfig::weight_specs`) its value, Adam moments and mask, and the step count.
pub(crate) struct Moments<'a> {
    pub m: &'a [Tensor],
    pub v: &'a [Tensor],
    pub masks: Vec<Option<&'a Tensor>>,
    pub steps: usize,
}

impl FusedNervTrainer {
    /// The fused trainer of `model` on the CPU, or `None` where it does not apply (another
    /// device, a configuration or a loss the fused network does not cover).
    pub(crate) fn new(
        model: &Nerv,
        loss: &Loss,
        state: Moments,
        device: &Device,
    ) -> Result<Option<Self>> {
        let Some(weights) = loss.pixel_weights() else {
            return Ok(None);
        };
        if !device.is_cpu() || unsupported(model.config()).is_some() {
            return Ok(None);
        }
        let net = FusedNerv::new(model)?;
        let to_vec = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
        let mut adam = Vec::new();
        for (m, v) in state.m.iter().zip(state.v) {
            adam.push(Adam {
                m: to_vec(m)?,
                v: to_vec(v)?,
            });
        }
        let masks = (state.masks.iter())
            .map(|m| m.map(to_vec).transpose())
            .collect::<Result<_>>()?;
        tracing::debug!("NeRV training on the fused CPU path");
        Ok(Some(FusedNervTrainer {
            net,
            adam,
            masks,
            weights,
            steps: state.steps,
        }))
    }

    /// A fresh trainer of `model` (Adam moments at zero), or `None` where the fused path does
    /// not apply (see [`unsupported`]; the loss must be a pixel loss).
    pub fn fresh(model: &Nerv, loss: &Loss) -> Result<Option<Self>> {
        let zeros: Vec<Tensor> = (model.named_tensors().iter())
            .map(|(_, t)| t.zeros_like())
            .collect::<candle_core::Result<_>>()?;
        let state = Moments {
            m: &zeros,
            v: &zeros,
            masks: vec![None; zeros.len()],
            steps: 0,
        };
        Self::new(model, loss, state, &Device::Cpu)
    }

    /// One Adam step at learning rate `lr` on decoder inputs `embedding` (`[B, E]`) and their
    /// frames `target` (`[B, 3, H, W]`); returns the loss before the step.
    pub fn step(&mut self, embedding: &[f32], target: &[f32], lr: f64) -> f32 {
        self.net.forward_train(embedding);
        let loss = self.net.backward(target, self.weights);
        self.steps += 1;
        let hyper = AdamParams {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let params = self.net.params_mut().iter_mut();
        for ((p, adam), mask) in params.zip(&mut self.adam).zip(&self.masks) {
            adam.update(&mut p.value, &p.grad, self.steps, hyper);
            if let Some(mask) = mask {
                p.value.iter_mut().zip(mask).for_each(|(w, m)| *w *= m);
            }
        }
        loss
    }

    /// The weights and the Adam moments as tensors of their official shapes, in the order of
    /// `NervConfig::weight_specs`: `(name, weight, m, v)`.
    pub(crate) fn tensors(&self) -> Result<Vec<(String, Tensor, Tensor, Tensor)>> {
        let dev = Device::Cpu;
        let params = self.net.params().iter().zip(&self.adam);
        params
            .map(|(p, a)| {
                let t = |v: &[f32]| Tensor::from_slice(v, p.shape.as_slice(), &dev);
                Ok((p.name.clone(), t(&p.value)?, t(&a.m)?, t(&a.v)?))
            })
            .collect()
    }
}
