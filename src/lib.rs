//! `shallow`: can a deep residual stack be replaced by a shallow, wide, parallel one?
//!
//! Modules, each one concern: [`data`] (formats, download, tensors), [`model`] (the two layouts),
//! [`train`] (one run, and in [`train::settings`] every run setting once), [`trace`] (a run recorded for replay in PyTorch), [`sweep`] (grid, results store, workers) and [`report`] (tables,
//! statistics, plots), which only reads the store, as does [`serve`] (the live dashboard); [`files`] writes files whole or not at all; [`human`] writes quantities as people read them.
pub mod bench;
pub mod data;
pub mod device;
pub mod files;
pub mod human;
pub mod model;
pub mod report;
pub mod serve;
pub mod sweep;
pub mod trace;
pub mod train;
