//! # xinc: explaining implicit neural representations
//!
//! xinc rebuilds the method of *Explaining the Implicit Neural Canvas* (XINC, CVPR 2024). A model
//! that has learned an image (FFN, a Fourier-feature MLP) is taken apart neuron by neuron: each
//! neuron gets a contribution map of how much it adds to every output pixel, and the stack of those
//! maps is the model's *canvas*.
//!
//! The crate is layered so that data flows one way:
//! [`data`] → [`models`] → [`canvas`] → [`analysis`] → [`study`] → [`findings`] → [`plot`] →
//! [`report`], with [`io`] (file formats) below the models, [`train`] beside the canvas and
//! [`compress`] (the official quantisation and Huffman bit count) on the models and `train`'s
//! metrics. A
//! lower layer never imports a higher one. [`findings`] runs the analyses of a study (tables,
//! headline numbers, claim verdicts, no figures); the report renders them. [`dataset`] sits on
//! the findings: batch jobs per video and queries across a dataset. [`device_check`] sits on
//! top: it compares a GPU run of every canvas layer and of both trainers with the CPU; so does
//! [`demo`], the demo main job (`xinc demo`).
//!
//! Most users want the [`prelude`]. Notebooks need one dependency: the crate re-exports the
//! [`polars`], [`plotly`] and [`candle`] versions its API uses, so a notebook's `DataFrame` is the
//! analyses' `DataFrame`.

pub mod analysis;
pub mod canvas;
pub mod compress;
pub mod data;
pub mod dataset;
pub mod demo;
pub mod device_check;
pub mod error;
pub mod findings;
pub mod io;
pub mod models;
pub mod plot;
pub mod report;
pub mod study;
pub(crate) mod tensor;
pub mod train;

pub use error::{Result, XincError};

pub use candle_core as candle;
pub use plotly;
pub use polars;

/// What a notebook or program usually needs: the study route (a [`study::Study`], a frame's
/// [`study::FrameCanvas`] for a model and a method, its [`study::Layer`]s with the analyses as
/// methods), the analyses' result types and table helpers, the figure builders, the models and
/// their training, and the polars names a query over the tables uses.
pub mod prelude {
    pub use crate::analysis::ablation::{
        agreement_table, object_agreement_table, AblationBudget, LayerAblation,
    };
    pub use crate::analysis::distributed::{Distributed, DistributedTables, PAPER_TARGETS};
    pub use crate::analysis::groups::{GroupOptions, NeuronGroups, NeuronVectors};
    pub use crate::analysis::intensity::Intensity;
    pub use crate::analysis::motion::{motion_table, MotionResult};
    pub use crate::analysis::objects::{area_summary_frame, AreaNeurons, ObjectShares};
    pub use crate::analysis::partitions::{summary_frame, FramePartitions, PartitionVariances};
    pub use crate::analysis::{stack_tables, Fidelity};
    pub use crate::canvas::ffn::{ffn_canvas, ffn_canvas_summary, FfnLayer};
    pub use crate::canvas::maps::{InMemoryMaps, NeuronMaps};
    pub use crate::canvas::nerv::{nerv_canvas_summary, NervFrameData, NervLayer};
    pub use crate::canvas::{Canvas, CanvasOptions, CanvasSummary, ContributionMap, Method};
    pub use crate::data::clip::{open_clip, ClipOptions};
    pub use crate::data::image::{load_rgb_resized, ImageTensor};
    pub use crate::data::panoptic::{Clip, PanopticFrame};
    pub use crate::error::{Result, XincError};
    pub use crate::findings::{findings, Findings, FindingsOptions};
    pub use crate::models::ffn::{Ffn, FfnConfig};
    pub use crate::models::nerv::{Nerv, NervConfig};
    pub use crate::models::ModelDir;
    pub use crate::plot::figure::Figure;
    pub use crate::plot::figures::{
        box_plots, line_series, map_grid_figure_with, map_panels_figure, neuron_group_scatter,
        object_share_heatmap, rgb_grid_figure, sorted_curves, xy_curves, BoxGroup, LineStyle,
        MapGridConfig,
    };
    pub use crate::plot::table::display_frame;
    pub use crate::plot::views::{
        ablation_figure, partitions_figure, pruning_quality_figure, rate_distortion_figure,
    };
    pub use crate::study::{object_shares_over, FrameCanvas, Layer, LayerGroups, Model, Study};
    pub use crate::train::ffn::{train_ffn, FfnTrainParams, TrainReport};
    pub use crate::train::nerv::{train_nerv, NervTrainParams, NervTrainReport};
    pub use candle_core::Device;
    pub use polars::prelude::{
        col, lit, DataFrame, DataType, Expr, IntoLazy, JoinArgs, JoinType, LazyFrame,
        SortMultipleOptions,
    };
}
