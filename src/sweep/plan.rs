//! Planning a sweep before it runs: workers × threads for this machine, the checks of its inputs,
//! and the `--dry-run` estimate.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};

use super::estimate::{self, architecture, train_examples};
pub use super::estimate::{Execution, History};
use super::grid::{DataHashes, Grid};
use super::store::identity::RunSpec;
use crate::data;
use crate::device;
use crate::model::{Architecture, Q_BINS, determination_ratio, q_bin};

/// Workers × threads for this machine: for the small nets of the grid, independent processes use
/// the cores better than one process's intra-op threads (see README "Performance"), so one
/// single-threaded worker per core unless told otherwise.
pub fn plan_workers(workers: Option<usize>, threads: Option<usize>) -> (usize, usize) {
    let cores = device::available_cores();
    match (workers, threads) {
        (Some(w), Some(t)) => (w.max(1), t.max(1)),
        (Some(w), None) => (w.max(1), (cores / w.max(1)).max(1)),
        (None, Some(t)) => ((cores / t.max(1)).max(1), t.max(1)),
        (None, None) => (cores, 1),
    }
}

/// What each dataset of a grid is (shape, classes, split sizes), as sizing needs it: read from
/// its files where they were read, else a built-in dataset's catalog entry.
#[derive(Debug, Default)]
pub struct DataFacts(BTreeMap<String, data::Facts>);

impl DataFacts {
    /// The facts of the built-in datasets only, from the catalog.
    pub fn catalog() -> Self {
        Self::default()
    }

    pub fn of(&self, dataset: &str) -> Result<data::Facts> {
        self.0
            .get(dataset)
            .copied()
            .or_else(|| data::builtin(dataset).map(data::Builtin::facts))
            .with_context(|| format!("dataset '{dataset}' has not been read: its size is unknown"))
    }
}

/// Checks, before anything is queued or trained, that every dataset of the grid can be had (with
/// `fetch`, downloading what is missing) and is usable, and that every run fits its images and
/// this machine's memory. A dataset that is missing but downloadable is not loaded without
/// `fetch`; its runs are checked against its known shape. Returns what each dataset is.
pub fn check_inputs(grid: &Grid, data_dir: &Path, offline: bool, fetch: bool) -> Result<DataFacts> {
    let mut facts = DataFacts::default();
    let mut labels = BTreeMap::new();
    for dataset in grid.datasets() {
        let raw = if fetch {
            data::ensure_available(data_dir, dataset, offline)?;
            Some(data::load(data_dir, dataset)?)
        } else if data::needs_download(data_dir, dataset, offline)?.is_some() {
            None
        } else {
            Some(data::load(data_dir, dataset)?)
        };
        if let Some(raw) = raw {
            facts.0.insert(dataset.clone(), raw.facts());
            labels.insert(dataset.as_str(), raw.train.labels);
        }
    }
    let available = device::available_memory();
    let mut splits_checked = HashSet::new();
    for run in grid.runs() {
        let run = run?;
        let cfg = &run.config;
        let dataset = cfg.dataset.as_str();
        let place = || format!("{}: run {} of the grid ({dataset})", grid.origin(), run.id);
        let known = facts.of(dataset)?;
        crate::train::check_fits_within(cfg, known.shape, known.classes, available)
            .with_context(place)?;
        if let (Some(h), Some(labels)) = (cfg.holdout, labels.get(dataset))
            && splits_checked.insert((dataset.to_owned(), h.to_string(), cfg.data_seed))
        {
            cfg.selection()
                .training_indices(labels)
                .with_context(|| format!("holdout = {h}"))
                .with_context(place)?;
        }
    }
    Ok(facts)
}

/// What a dry run knows beyond the grid: what each dataset is, the hashes of its user data files
/// (which the stored ids carry) and the runs already finished in the sweep's store.
pub struct Known {
    pub facts: DataFacts,
    pub hashes: DataHashes,
    pub history: History,
}

/// `--dry-run`: what the sweep holds and roughly how long what is left of it takes here. Streams
/// the runs, once.
pub fn dry_run(grid: &Grid, known: Known, e: &Execution) -> Result<String> {
    let Known {
        facts,
        hashes,
        mut history,
    } = known;
    let mut params = 0.0;
    let mut work = estimate::Work::default();
    let mut compared = Compared::default();
    let mut left = 0;
    for run in grid.runs() {
        let run = hashes.stamp(run?);
        let known = facts.of(&run.config.dataset)?;
        let arch = architecture(&run.config, &known);
        params += arch.parameter_count() as f64;
        compared.add(&run, &arch, &known)?;
        if !history.ended(&run.id) {
            left += 1;
            let epochs = history.expected_epochs(&run.config);
            work.add(&run.config, arch, &known, epochs);
        }
    }
    let (seconds, timed) = work.seconds(e)?;
    let finished = match grid.len() - left {
        0 => String::new(),
        done => format!(" for the {left} run(s) left ({done} already ended in the store)"),
    };
    Ok(format!(
        "sweep '{}': {} runs ({} pairs) on {}\n\
         total parameters: {:.3e} (mean {:.0} per run)\n\
         estimated time: {}{finished} with {} worker(s) × {} thread(s) on {:?}, up to {} run(s) \
         fused per array (rough: each run's multiply-adds ÷ the rate measured just now on \
         training steps of {timed} of the grid's architectures, the nearest in size)\n{}{}{}",
        grid.name,
        grid.len(),
        grid.pairs(),
        grid.datasets().join(", "),
        params,
        params / grid.len() as f64,
        crate::human::duration(seconds),
        e.workers,
        e.threads,
        e.device,
        e.fuse,
        history.note(),
        q_bin_table(&compared.per_q_bin()),
        compared.same_network_note(),
    ))
}

/// The configurations a report can compare, per dataset and Q bin (indices of
/// [`crate::model::Q_BINS`]): pair ids (a configuration and seed) with at least two different
/// networks (numbers of stages D; at L = 1 sequential and parallel are one network). Q
/// depends on the parameters and the training examples, never on the layout, so every run of a
/// pair id falls in the same bin.
pub fn compared_per_q_bin(grid: &Grid, facts: &DataFacts) -> Result<BTreeMap<String, [usize; 4]>> {
    let mut compared = Compared::default();
    for run in grid.runs() {
        let run = run?;
        let known = facts.of(&run.config.dataset)?;
        compared.add(&run, &architecture(&run.config, &known), &known)?;
    }
    Ok(compared.per_q_bin())
}

/// Per dataset and pair id (its 64 bits, so that a grid of millions of runs stays small): the Q
/// bin and the numbers of stages D of its runs — runs of one D are the same network (sequential
/// and parallel at L = 1, staged-L and sequential) — and how many runs repeat a network already
/// in their family.
#[derive(Default)]
struct Compared {
    families: HashMap<(String, u64), (usize, Vec<usize>)>,
    same_network: usize,
}

impl Compared {
    fn add(&mut self, run: &RunSpec, arch: &Architecture, facts: &data::Facts) -> Result<()> {
        let cfg = &run.config;
        let examples = train_examples(cfg, facts);
        let bin = q_bin(determination_ratio(
            examples,
            arch.classes,
            arch.parameter_count(),
        ));
        let pair_bits = u64::from_str_radix(&run.pair_id, 16)
            .with_context(|| format!("pair id {} is not a 64-bit hex hash", run.pair_id))?;
        let stages = cfg.layout.stages(cfg.layers);
        let (_, seen) = self
            .families
            .entry((cfg.dataset.clone(), pair_bits))
            .or_insert((bin, Vec::new()));
        if seen.contains(&stages) {
            self.same_network += 1;
        } else {
            seen.push(stages);
        }
        Ok(())
    }

    fn per_q_bin(&self) -> BTreeMap<String, [usize; 4]> {
        let mut counts: BTreeMap<String, [usize; 4]> = BTreeMap::new();
        for ((dataset, _), (bin, stages)) in &self.families {
            let row = counts.entry(dataset.clone()).or_default();
            if stages.len() >= 2 {
                row[*bin] += 1;
            }
        }
        counts
    }

    /// A note on runs that train a network their family already has, if there are any.
    fn same_network_note(&self) -> String {
        match self.same_network {
            0 => String::new(),
            n => format!(
                "\nnote: {n} run(s) train the same network as another run of their configuration and \
                 seed (at L = 1 sequential and parallel are one network; staged-1 is parallel, \
                 staged-L sequential): the report leaves such pairs out; an [[exclude]] in the grid \
                 saves their compute"
            ),
        }
    }
}

fn q_bin_table(counts: &BTreeMap<String, [usize; 4]>) -> String {
    let width = counts
        .keys()
        .map(|d| d.chars().count())
        .max()
        .unwrap_or(0)
        .max(10);
    let mut out = format!(
        "configurations in ≥ 2 different arrangements (pairs, or families of staged layouts) per Q bin:\n  {:<width$}",
        "dataset"
    );
    for label in Q_BINS {
        out += &format!("{label:>9}");
    }
    for (dataset, row) in counts {
        out += &format!("\n  {dataset:<width$}");
        for compared in row {
            out += &format!("{compared:>9}");
        }
    }
    out
}
