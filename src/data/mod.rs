//! The data layer: images read and resized exactly as the official pipelines do, and the
//! coordinate grids that image INRs take as input. Nothing here knows about models.

pub mod cityscapes;
pub mod clip;
pub mod coords;
pub mod flow;
pub mod frames;
pub mod image;
pub mod loader;
pub mod optical_flow;
pub mod panoptic;
pub mod resize;
pub mod synth;
pub mod vipseg;
