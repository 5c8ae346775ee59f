//! The synthetic street clip, in two steps:
//!
//! - [`scene`] *renders* it: [`scene::StreetVideo`] (a procedural street with moving things, its
//!   frames, per-pixel labels and exact flow) and [`scene::street_scene`] (one frame, the demo's
//!   fallback image). Pure computation, no files.
//! - [`dataset`] *writes* a rendered clip as a Cityscapes-VPS or VIPSeg dataset root
//!   ([`dataset::generate`], [`dataset::SynthParams`], `xinc synth`), which the loaders of
//!   [`crate::data::clip`] read back.

pub mod dataset;
pub mod scene;
