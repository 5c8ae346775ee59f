//! # xinc: explaining implicit neural representations
//!
//! xinc rebuilds the method of *Explaining the Implicit Neural Canvas* (XINC, CVPR 2024). A model
//! that has learned an image (FFN, a Fourier-feature MLP) is taken apart neuron by neuron: each
//! neuron gets a contribution map of how much it adds to every output pixel, and the stack of those
//! maps is the model's *canvas*.
//!
//! The crate is layered so that data flows one way:
//! [`data`] → [`models`] → [`canvas`] → [`analysis`] → [`study`] → [`plot`] → [`report`], with
//! [`io`] (file formats) below the models and [`train`] beside the canvas. A lower layer never
//! imports a higher one. [`dataset`] sits on the report: batch jobs per video and queries across
//! a dataset. [`device_check`] sits on top: it compares a GPU run of every canvas layer
//! and of both trainers with the CPU.
//!
//! Most users want the [`prelude`]. Notebooks need one dependency: the crate re-exports the
//! [`polars`], [`plotly`] and [`candle`] versions its API uses, so a notebook's `DataFrame` is the
//! analyses' `DataFrame`.

pub mod analysis;
pub mod canvas;
pub mod data;
pub mod dataset;
pub mod device_check;
pub mod error;
pub mod io;
pub mod models;
pub mod plot;
pub mod report;
pub mod study;
pub mod tensor;
pub mod train;

pub use error::{Result, XincError};

pub use candle_core as candle;
pub use plotly;
pub use polars;

/// The types and functions a notebook or program usually needs.
pub mod prelude {
    pub use crate::analysis::source::{InMemoryMaps, NervKernelMaps, NeuronMaps};
    pub use crate::analysis::Fidelity;
    pub use crate::canvas::ffn::{
        ffn_canvas, ffn_canvas_into, ffn_canvas_summary, ffn_canvas_summary_with, ffn_canvas_with,
        FfnLayer,
    };
    pub use crate::canvas::nerv::{
        nerv_canvas_summary, nerv_canvas_summary_with, NervFrameData, NervLayer,
    };
    pub use crate::canvas::{Canvas, CanvasSummary, ContributionMap, Method};
    pub use crate::data::clip::{open_clip, ClipOptions};
    pub use crate::data::coords::coordinate_grid;
    pub use crate::data::image::{load_rgb_resized, ImageTensor};
    pub use crate::data::panoptic::{Clip, PanopticFrame};
    pub use crate::error::{Result, XincError};
    pub use crate::models::ffn::{Ffn, FfnActivations, FfnConfig};
    pub use crate::models::nerv::{Nerv, NervConfig};
    pub use crate::models::ModelDir;
    pub use crate::plot::figure::Figure;
    pub use crate::plot::table::display_frame;
    pub use crate::study::Study;
    pub use crate::train::ffn::{train_ffn, FfnTrainParams, TrainReport};
}
