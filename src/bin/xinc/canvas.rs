//! `xinc canvas`: a model's contribution maps (or their reductions) written to safetensors.

use std::time::Instant;

use candle_core::Device;
use xinc::canvas::ffn::{ffn_canvas_summary, write_ffn_canvas, FfnLayer};
use xinc::canvas::nerv::{nerv_canvas_summary, write_nerv_canvas, NervFrameData, NervLayer};
use xinc::canvas::{CanvasOptions, Method};
use xinc::models::{Architecture, ModelDir};

use crate::args::CanvasArgs;
use crate::{fail, CliResult};

pub fn canvas_cmd(a: CanvasArgs, device: &Device) -> CliResult {
    let opts = CanvasOptions {
        method: a.method,
        tile: a.tile,
        inputs: a.in_channels.clone(),
        ..Default::default()
    };
    match ModelDir::new(&a.model).config()?.architecture {
        Architecture::Ffn(_) => ffn_canvas_cmd(a, &opts, device),
        Architecture::Nerv(_) => nerv_canvas_cmd(a, &opts, device),
    }
}

pub fn nerv_canvas_cmd(a: CanvasArgs, opts: &CanvasOptions, device: &Device) -> CliResult {
    let (model, _) = ModelDir::new(&a.model).load_nerv(device)?;
    let frames = model.config().frames;
    if a.frame >= frames {
        return fail(format!(
            "frame {} is outside the model's {frames} frames",
            a.frame
        ));
    }
    let start = Instant::now();
    let frame = NervFrameData::new(&model, &model.forward_frame(a.frame, device)?)?;
    let layers = match &a.layers {
        Some(list) => NervLayer::parse_list(list, model.blocks().len(), Method::Conservative)?
            .into_iter()
            .map(|l| frame.check(l, a.method))
            .collect::<xinc::Result<Vec<_>>>()?,
        None => frame.all_layers(a.method),
    };
    if a.summary {
        nerv_canvas_summary(&frame, &layers, device, opts)?.save(&a.out)?;
    } else {
        write_nerv_canvas(&frame, &layers, &a.out, device, opts)?;
    }
    let names: Vec<String> = layers.iter().map(ToString::to_string).collect();
    println!(
        "{} canvas of frame {} [{}] in {:.3} s -> {}",
        a.method,
        a.frame,
        names.join(", "),
        start.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

pub fn ffn_canvas_cmd(a: CanvasArgs, opts: &CanvasOptions, device: &Device) -> CliResult {
    let (model, _) = ModelDir::new(&a.model).load_ffn(device)?;
    let layers = match &a.layers {
        Some(list) => FfnLayer::parse_list(list, model.config(), a.method)?,
        None => FfnLayer::all(model.config(), a.method),
    };
    let start = Instant::now();
    if a.summary {
        ffn_canvas_summary(&model, device, &layers, opts)?.save(&a.out)?;
    } else {
        write_ffn_canvas(&model, device, &layers, &a.out, opts)?;
    }
    let names: Vec<String> = layers.iter().map(ToString::to_string).collect();
    println!(
        "{} canvas [{}] in {:.3} s -> {}",
        a.method,
        names.join(", "),
        start.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
