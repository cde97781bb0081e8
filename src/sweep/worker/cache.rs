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
    /// The content hash of each user data file loaded (see [`crate::train::RunConfig::data_hash`]).
    hashes: HashMap<String, Option<String>>,
    tensors: Option<(SubsetKey, Tensors)>,
}

impl DataCache {
    pub(super) fn new(data_dir: PathBuf, offline: bool, device: Device) -> DataCache {
        DataCache {
            data_dir,
            offline,
            device,
            raw: HashMap::new(),
            hashes: HashMap::new(),
            tensors: None,
        }
    }

    /// The tensors of `cfg`'s dataset and selection. A user data file that is not the one its
    /// runs were queued with (its hash differs) is this worker's data fault.
    pub(super) fn tensors_of(&mut self, cfg: &crate::train::RunConfig) -> Result<&Tensors> {
        self.load(&cfg.dataset)?;
        let here = self.hashes.get(&cfg.dataset).cloned().flatten();
        if let Some(queued) = &cfg.data_hash
            && here.as_ref() != Some(queued)
        {
            let path = crate::data::dataset_dir(&self.data_dir, &cfg.dataset);
            return Err(anyhow::anyhow!(
                "{} is not the data its runs were queued with (SHA-256 {} here, {queued} when \
                 queued): restore it, or run `shallow sweep GRID --requeue-changed-data` (with \
                 --no-train for workers elsewhere) to replace the pending runs of the old version \
                 by runs of this one",
                path.display(),
                here.as_deref().unwrap_or("unreadable")
            ))
            .map_err(environment(Cause::Data));
        }
        self.tensors(&cfg.dataset, &cfg.selection())
    }

    /// Loads a dataset and hashes its files, unless it is loaded.
    fn load(&mut self, dataset: &str) -> Result<()> {
        if !self.raw.contains_key(dataset) {
            // The grid was checked against the data when it was queued: a dataset missing or
            // unreadable here is this worker's data directory's fault, not the run's.
            let raw = data::ensure_available(&self.data_dir, dataset, self.offline)
                .and_then(|()| data::load(&self.data_dir, dataset))
                .map_err(environment(Cause::Data))?;
            let hash =
                data::content_hash(&self.data_dir, dataset).map_err(environment(Cause::Data))?;
            self.hashes.insert(dataset.to_owned(), hash);
            self.raw.insert(dataset.to_owned(), raw);
        }
        Ok(())
    }

    fn tensors(&mut self, dataset: &str, selection: &Selection) -> Result<&Tensors> {
        let key = (dataset.to_owned(), selection.clone());
        if self.tensors.as_ref().is_none_or(|(k, _)| *k != key) {
            self.tensors = None;
            self.load(dataset)?;
            let raw = &self.raw[dataset];
            let tensors = data::prepare(raw, selection, self.device)?;
            self.tensors = Some((key, tensors));
        }
        Ok(&self.tensors.as_ref().expect("just filled").1)
    }
}
