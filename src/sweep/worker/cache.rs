//! The datasets a worker has decoded, and the tensors of the subset it trains on.
use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use tch::Device;

use super::super::fault::{Cause, environment};
use crate::data::{self, RawDataset, Selection, Tensors};

/// A dataset and which of its examples a run uses.
type SubsetKey = (String, Selection);

/// Datasets decoded once per process; the tensors of the latest subset kept on the device (runs
/// are ordered so that consecutive ones share their data).
pub(super) struct DataCache {
    data_dir: PathBuf,
    offline: bool,
    device: Device,
    raw: HashMap<String, RawDataset>,
    tensors: Option<(SubsetKey, Tensors)>,
}

impl DataCache {
    pub(super) fn new(data_dir: PathBuf, offline: bool, device: Device) -> DataCache {
        DataCache {
            data_dir,
            offline,
            device,
            raw: HashMap::new(),
            tensors: None,
        }
    }

    pub(super) fn tensors(&mut self, dataset: &str, selection: &Selection) -> Result<&Tensors> {
        let key = (dataset.to_owned(), selection.clone());
        if self.tensors.as_ref().is_none_or(|(k, _)| *k != key) {
            self.tensors = None;
            if !self.raw.contains_key(dataset) {
                // The grid was checked against the data when it was queued: a dataset missing or
                // unreadable here is this worker's data directory's fault, not the run's.
                let raw = data::ensure_available(&self.data_dir, dataset, self.offline)
                    .and_then(|()| data::load(&self.data_dir, dataset))
                    .map_err(environment(Cause::Data))?;
                self.raw.insert(dataset.to_owned(), raw);
            }
            let raw = &self.raw[dataset];
            let tensors = data::prepare(raw, selection, self.device)?;
            self.tensors = Some((key, tensors));
        }
        Ok(&self.tensors.as_ref().expect("just filled").1)
    }
}
