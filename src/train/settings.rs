//! The run settings: one struct, [`RunConfig`], defines each setting's name, default, help text
//! and validation; `shallow train`'s flags, the grid's keys and defaults, and the store's run
//! identity all derive from it.
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use crate::data::{Holdout, Selection, Subset};
use crate::model::{Activation, Architecture, Head, Layout, Pool, Precision};
use crate::train::augment::Augment;
use crate::train::optim::{LBFGS_MIN_BATCH, LineSearch, Optimizer, Schedule};
use crate::train::stopping::StopRule;

/// Everything that determines a run's result (and so its identity in a sweep): every run
/// setting once — its name (the `shallow train` flag and the grid key), default, help text and,
/// in [`RunConfig::validate`], its checks. Where and how fast a run goes (device, threads) is
/// deliberately not part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Dataset: a built-in one (mnist, fashion, kmnist, cifar10, cifar100, cifar100-coarse;
    /// `shallow data fetch` lists them), or the folder name (under the data directory) of any
    /// IDX dataset laid out as MNIST's, of any number of classes (labels 0..M-1), or
    /// npz:PATH, a NumPy archive with x_train, y_train, x_test, y_test, or folder:PATH, images in
    /// PATH/train/<class>/ and PATH/test/<class>/ (PATH relative to the data directory unless
    /// absolute).
    #[arg(long, default_value = crate::data::MNIST)]
    pub dataset: String,
    /// The SHA-256 of a user's data file (`npz:`), filled in when its runs are queued or
    /// trained: two different files under one name never share run ids, and a worker refuses a
    /// file changed since. Not a setting to give.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hash: Option<String>,
    /// sequential = deep residual stack; parallel = the same units side by side; staged-D = D
    /// stages in sequence, each of L/D units side by side (D must divide L).
    #[arg(long)]
    pub layout: Layout,
    /// Number of residual units L.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Channels F of the stem and of every unit.
    #[arg(long, default_value_t = 32)]
    pub filters: usize,
    /// Kernel size k (odd) of every convolution.
    #[arg(long, default_value_t = 3)]
    pub kernel: usize,
    /// Activation φ of the stem and the units.
    #[arg(long, value_enum, default_value_t)]
    pub activation: Activation,
    /// Pooling after the stem.
    #[arg(long, value_enum, default_value_t)]
    pub pool: Pool,
    /// Batch norm in every unit: φ(BN(conv(h))).
    #[arg(long)]
    pub batchnorm: bool,
    /// The head before the linear layer.
    #[arg(long, value_enum, default_value_t)]
    pub head: Head,
    /// Learning rate (the base rate of the schedule).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Minibatch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Passes over the training set; with a stopping rule, the most it may take (the cap).
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Seeds the initial weights and the data order; both layouts of a configuration share it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on this many examples only (all if absent).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Validate on this many test-set examples only (all if absent).
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// How limits pick examples: stratified = balanced classes in file order; first = first N.
    #[arg(long, value_enum, default_value_t)]
    pub subset: Subset,
    /// Arithmetic of convolutions and linear layer; bf16 is about 2× faster on CPUs with AMX or
    /// AVX-512-BF16, final losses within 10 % of fp32 (weights, optimizer and loss stay f32).
    /// Left out of the serialised form when fp32, so that run ids of sweeps recorded before this
    /// setting existed stay valid.
    #[arg(long, value_enum, default_value_t)]
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// Training examples held out (a count, or a fraction of the training set) as the split that
    /// drives stopping and model selection: stratified, drawn with `data_seed`, carved before
    /// `train_limit` picks the examples trained on. The test set is then only reported.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<Holdout>,
    /// Seeds the held-out split (the same for every layout and seed of a configuration).
    #[arg(long, default_value_t = 0)]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data_seed: u64,
    /// Stopping rule on the held-out loss: none = train `epochs` epochs; plateau = stop when it
    /// has not improved by a relative `min_delta` for `patience` epochs; target = stop once it is
    /// at most `target_loss`. A rule restores the best held-out epoch's weights at the end.
    #[arg(long, value_enum, default_value_t)]
    #[serde(default, skip_serializing_if = "StopRule::is_none")]
    pub stop: StopRule,
    /// Epochs without a relative improvement of `min_delta` after which `plateau` stops (and
    /// beyond which a run at its cap counts as no longer improving).
    #[arg(long, default_value_t = DEFAULT_PATIENCE)]
    #[serde(
        default = "default_patience",
        skip_serializing_if = "is_default_patience"
    )]
    pub patience: usize,
    /// Relative improvement of the held-out loss that resets the patience.
    #[arg(long, default_value_t = DEFAULT_MIN_DELTA)]
    #[serde(
        default = "default_min_delta",
        skip_serializing_if = "is_default_min_delta"
    )]
    pub min_delta: f64,
    /// The held-out loss at which `target` stops.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_loss: Option<f64>,
    /// The optimizer.
    #[arg(long, value_enum, default_value_t)]
    #[serde(default, skip_serializing_if = "Optimizer::is_adam")]
    pub optimizer: Optimizer,
    /// Weight decay (default: PyTorch's for the optimizer: 0.01 for adamw, else 0).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Momentum of sgd.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub momentum: f64,
    /// Nesterov momentum for sgd.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nesterov: bool,
    /// L-BFGS iterations per batch (PyTorch's max_iter).
    #[arg(long, default_value_t = DEFAULT_LBFGS_ITERATIONS)]
    #[serde(
        default = "default_lbfgs_iterations",
        skip_serializing_if = "is_default_lbfgs_iterations"
    )]
    pub lbfgs_iterations: usize,
    /// Curvature pairs L-BFGS keeps (PyTorch's history_size).
    #[arg(long, default_value_t = DEFAULT_LBFGS_HISTORY)]
    #[serde(
        default = "default_lbfgs_history",
        skip_serializing_if = "is_default_lbfgs_history"
    )]
    pub lbfgs_history: usize,
    /// L-BFGS's line search.
    #[arg(long, value_enum, default_value_t)]
    #[serde(default, skip_serializing_if = "LineSearch::is_strong_wolfe")]
    pub line_search: LineSearch,
    /// Learning-rate schedule, stepped once per epoch after the warm-up.
    #[arg(long, value_enum, default_value_t)]
    #[serde(default, skip_serializing_if = "Schedule::is_constant")]
    pub schedule: Schedule,
    /// Epochs of linear warm-up (rate lr·e/(warmup+1) in epoch e) before the schedule.
    #[arg(long, default_value_t = 0)]
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub warmup: usize,
    /// Epochs between two reductions of the `step` schedule.
    #[arg(long, default_value_t = DEFAULT_LR_STEP)]
    #[serde(
        default = "default_lr_step",
        skip_serializing_if = "is_default_lr_step"
    )]
    pub lr_step: usize,
    /// Factor by which `step` and `plateau` schedules multiply the rate.
    #[arg(long, default_value_t = DEFAULT_LR_FACTOR)]
    #[serde(
        default = "default_lr_factor",
        skip_serializing_if = "is_default_lr_factor"
    )]
    pub lr_factor: f64,
    /// Epochs without improvement that the `plateau` schedule tolerates before reducing.
    #[arg(long, default_value_t = DEFAULT_LR_PATIENCE)]
    #[serde(
        default = "default_lr_patience",
        skip_serializing_if = "is_default_lr_patience"
    )]
    pub lr_patience: usize,
    /// Training-time augmentation (on the device, drawn from the seed): crop = pad by 4 and crop
    /// back at a random offset; crop-flip = and flip left–right with probability ½ (refused for
    /// digit and character datasets unless force_flip).
    #[arg(long, value_enum, default_value_t)]
    #[serde(default, skip_serializing_if = "Augment::is_none")]
    pub augment: Augment,
    /// Allow augment = crop-flip on a dataset whose classes a flip can change (digits,
    /// characters).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_flip: bool,
}

/// A setting's value as a grid file writes it (`plateau`, not `Plateau`).
fn serde_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The serde default of a setting whose default is the constant `$value`, and the test that
/// leaves it out of the serialised form (so that run ids recorded before it existed stay valid).
macro_rules! serde_default {
    ($value:ident: $ty:ty, $default:ident, $is_default:ident) => {
        fn $default() -> $ty {
            $value
        }
        fn $is_default(v: &$ty) -> bool {
            *v == $value
        }
    };
}

/// Plateau stopping's defaults: 10 epochs and a relative 1e-4, the patience and threshold of
/// PyTorch's `ReduceLROnPlateau`, a rule its users know. A longer patience costs at most that
/// many epochs per run; stopping on a noisy plateau too soon is the worse error for a verdict
/// about converged nets.
pub const DEFAULT_PATIENCE: usize = 10;
pub const DEFAULT_MIN_DELTA: f64 = 1e-4;
/// Step schedule: ×0.1 every 10 epochs; plateau schedule: ×0.1 after 5 bad epochs, half the
/// stopping patience, so the rate can drop before the run stops.
pub const DEFAULT_LR_STEP: usize = 10;
pub const DEFAULT_LR_FACTOR: f64 = 0.1;
pub const DEFAULT_LR_PATIENCE: usize = 5;
/// L-BFGS: PyTorch's defaults.
pub const DEFAULT_LBFGS_ITERATIONS: usize = 20;
pub const DEFAULT_LBFGS_HISTORY: usize = 100;

serde_default!(DEFAULT_PATIENCE: usize, default_patience, is_default_patience);
serde_default!(DEFAULT_MIN_DELTA: f64, default_min_delta, is_default_min_delta);
serde_default!(DEFAULT_LR_STEP: usize, default_lr_step, is_default_lr_step);
serde_default!(DEFAULT_LR_FACTOR: f64, default_lr_factor, is_default_lr_factor);
serde_default!(DEFAULT_LR_PATIENCE: usize, default_lr_patience, is_default_lr_patience);
serde_default!(DEFAULT_LBFGS_ITERATIONS: usize, default_lbfgs_iterations, is_default_lbfgs_iterations);
serde_default!(DEFAULT_LBFGS_HISTORY: usize, default_lbfgs_history, is_default_lbfgs_history);

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}
fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// The defaults of every setting, with `layout` (which has none: `shallow train` asks for it)
/// as given.
pub fn defaults(layout: Layout) -> RunConfig {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        config: RunConfig,
    }
    let layout = layout.to_string();
    <Defaults as clap::Parser>::parse_from(["defaults", "--layout", layout.as_str()]).config
}

/// Every setting of [`described`], in its order, with its value in `cfg` as a grid file writes
/// it (`head` → `gap`, `batchnorm` → `true`, `holdout` → `1000`): a setting left out of the
/// serialised form (at its default) by its default; `None` for one without a value.
pub fn values(cfg: &RunConfig) -> Vec<(&'static Described, Option<String>)> {
    let serialised = match serde_json::to_value(cfg) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    described()
        .iter()
        .map(|s| {
            let text = match serialised.get(s.name) {
                None | Some(serde_json::Value::Null) => s.default.clone(),
                Some(serde_json::Value::String(v)) => Some(v.clone()),
                Some(v) => Some(v.to_string()),
            };
            (s, text)
        })
        .collect()
}

/// [`values`] by setting name, `none` for a setting without a value.
pub fn value_texts(cfg: &RunConfig) -> std::collections::BTreeMap<String, String> {
    values(cfg)
        .into_iter()
        .map(|(s, v)| (s.name.to_owned(), v.unwrap_or_else(|| "none".to_owned())))
        .collect()
}

/// A run setting as [`RunConfig`] defines it: its name (the grid key; the `shallow train` flag
/// with `-` for `_`), its default as text (`None` where it has none) and its named choices, if
/// any (`stop`: none, plateau, target).
#[derive(Debug)]
pub struct Described {
    pub name: &'static str,
    pub default: Option<String>,
    /// It must be given (it has no default).
    pub required: bool,
    pub choices: Vec<String>,
    /// Its help text (the field's doc comment).
    pub help: String,
}

/// The names of [`described`], in the same order.
pub fn names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| described().iter().map(|s| s.name).collect())
}

/// Every run setting of [`RunConfig`], in the order of its fields; read once from its derived
/// command-line arguments, so that a field added to `RunConfig` is a grid key, a store column
/// and a `--help` entry with nothing else to edit.
pub fn described() -> &'static [Described] {
    use clap::Args;
    static DESCRIBED: std::sync::OnceLock<Vec<Described>> = std::sync::OnceLock::new();
    DESCRIBED.get_or_init(|| {
        // Built, so that flags carry the defaults clap gives them (`false`).
        let mut command = RunConfig::augment_args(clap::Command::new("settings"));
        command.build();
        command
            .get_arguments()
            .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
            .map(|a| Described {
                name: Box::leak(a.get_id().as_str().to_owned().into_boxed_str()),
                default: a
                    .get_default_values()
                    .first()
                    .map(|v| v.to_string_lossy().into_owned()),
                required: a.is_required_set(),
                choices: a
                    .get_possible_values()
                    .iter()
                    .map(|v| v.get_name().to_owned())
                    .collect(),
                help: a
                    .get_long_help()
                    .or(a.get_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default(),
            })
            .collect()
    })
}

/// The README's table of every run setting: its name (grid key; `--name-with-dashes` on
/// `shallow train`), default, choices and help text, as [`described`] reads them.
pub fn markdown_table() -> String {
    let mut table = String::from("| setting | default | choices | what |\n|---|---|---|---|\n");
    for s in described() {
        let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        table += &format!(
            "| `{}` | {} | {} | {} |\n",
            s.name,
            match (&s.default, s.required) {
                (_, true) => "(required)".to_owned(),
                (Some(d), false) => cell(d),
                (None, false) => "none".to_owned(),
            },
            cell(&s.choices.join(", ")),
            cell(&s.help)
        );
    }
    table
}

/// A dataset name is a folder under the data directory and part of plot file names: letters,
/// digits, `_`, `-` and `.`, not starting with `.` (so never `..`, a path or a hidden file) — or
/// `npz:PATH`, a user's NumPy archive.
fn check_dataset_name(name: &str) -> Result<()> {
    for prefix in [crate::data::NPZ, crate::data::FOLDER] {
        if let Some(path) = name.strip_prefix(prefix) {
            ensure!(
                !path.is_empty(),
                "dataset '{name}': {prefix} needs a path, e.g. npz:mydata.npz or folder:photos"
            );
            return Ok(());
        }
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    ensure!(
        !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.chars().all(safe),
        "dataset '{}': a dataset name is 1–64 letters, digits, '_', '-' or '.', not starting \
         with '.' (the name of a folder in the data directory)",
        name.escape_debug()
    );
    Ok(())
}

/// Bounds far beyond any net these datasets can train, that keep sizes from overflowing.
const MAX_LAYERS: usize = 10_000;
const MAX_FILTERS: usize = 65_536;
const MAX_KERNEL: usize = 99;

impl RunConfig {
    /// The settings that runs trained together as one fused array must share: all but the
    /// learning rate and the seed, which each member has its own of.
    pub fn fusion_group(&self) -> RunConfig {
        RunConfig {
            lr: 1.0,
            seed: 0,
            ..self.clone()
        }
    }

    /// Whether runs of this configuration can train as members of a fused array: fused arrays
    /// train with Adam at a constant rate (each member's own [`crate::train::adam`] state), on
    /// batches without augmentation.
    pub fn fusable(&self) -> bool {
        self.augment.is_none()
            && self.optimizer == Optimizer::Adam
            && self.weight_decay.unwrap_or(0.0) == 0.0
            && self.schedule == Schedule::Constant
            && self.warmup == 0
    }

    /// Every setting of [`described`] with the value in force in this run (its default where
    /// it was not given; the weight decay of its optimizer; empty without a value), in that
    /// order: `shallow export`'s setting columns.
    pub fn values_in_force(&self) -> Vec<String> {
        values(self)
            .into_iter()
            .map(|(s, v)| match s.name {
                "weight_decay" => self.weight_decay().to_string(),
                _ => v.unwrap_or_default(),
            })
            .collect()
    }

    /// The weight decay in force: the setting, else the optimizer's PyTorch default.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
            .unwrap_or_else(|| self.optimizer.default_weight_decay())
    }

    /// The examples this run uses.
    pub fn selection(&self) -> Selection {
        Selection {
            train_limit: self.train_limit,
            val_limit: self.val_limit,
            subset: self.subset,
            holdout: self.holdout,
            data_seed: self.data_seed,
        }
    }

    /// Every check: each setting's own, then those between settings
    /// ([`RunConfig::validate_combination`]).
    pub fn validate(&self) -> Result<()> {
        self.validate_settings()?;
        self.validate_combination()
    }

    /// The checks of each setting on its own (a grid checks each of its values this way, against
    /// the defaults of the other settings).
    pub fn validate_settings(&self) -> Result<()> {
        check_dataset_name(&self.dataset)?;
        self.validate_training()?;
        ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "lr must be a positive number, got {}",
            self.lr
        );
        ensure!(self.batch_size >= 1, "batch_size must be at least 1");
        ensure!(self.epochs >= 1, "epochs must be at least 1");
        ensure!(
            self.train_limit != Some(0),
            "train_limit must be at least 1"
        );
        ensure!(self.val_limit != Some(0), "val_limit must be at least 1");
        ensure!(
            (1..=MAX_LAYERS).contains(&self.layers),
            "layers must be between 1 and {MAX_LAYERS}, got {}",
            self.layers
        );
        self.layout.check(self.layers)?;
        ensure!(
            (1..=MAX_FILTERS).contains(&self.filters),
            "filters must be between 1 and {MAX_FILTERS}, got {}",
            self.filters
        );
        ensure!(
            self.kernel <= MAX_KERNEL,
            "kernel must be at most {MAX_KERNEL}, got {}",
            self.kernel
        );
        ensure!(
            !self.kernel.is_multiple_of(2),
            "kernel must be odd (same padding), got {}",
            self.kernel
        );
        Ok(())
    }

    /// The checks of the training procedure's settings, each on its own.
    fn validate_training(&self) -> Result<()> {
        if let Some(h) = self.holdout {
            h.validate()?;
        }
        ensure!(self.patience >= 1, "patience must be at least 1 epoch");
        ensure!(
            self.min_delta.is_finite() && (0.0..1.0).contains(&self.min_delta),
            "min_delta must be a relative improvement in [0, 1), got {}",
            self.min_delta
        );
        if let Some(t) = self.target_loss {
            ensure!(
                t.is_finite() && t > 0.0,
                "target_loss must be a positive loss, got {t}"
            );
        }
        if let Some(wd) = self.weight_decay {
            ensure!(
                wd.is_finite() && wd >= 0.0,
                "weight_decay must be a non-negative number, got {wd}"
            );
        }
        ensure!(
            self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum),
            "momentum must be in [0, 1), got {}",
            self.momentum
        );
        ensure!(self.lr_step >= 1, "lr_step must be at least 1 epoch");
        ensure!(
            self.lbfgs_iterations >= 1,
            "lbfgs_iterations must be at least 1"
        );
        ensure!(self.lbfgs_history >= 1, "lbfgs_history must be at least 1");
        ensure!(
            self.lr_factor.is_finite() && self.lr_factor > 0.0 && self.lr_factor < 1.0,
            "lr_factor must be in (0, 1), got {}",
            self.lr_factor
        );
        Ok(())
    }

    /// The checks between settings: what a stopping rule or schedule needs, which settings
    /// belong to which optimizer, warm-up within the epochs.
    pub fn validate_combination(&self) -> Result<()> {
        let flips = crate::data::builtin(&self.dataset).is_none_or(|b| b.flips);
        ensure!(
            self.augment != Augment::CropFlip || flips || self.force_flip,
            "augment = crop-flip on {}: a left–right flip can change a digit's or character's \
             class; use augment = crop, or set force_flip = true to flip anyway",
            self.dataset
        );
        ensure!(
            !self.force_flip || self.augment == Augment::CropFlip,
            "force_flip is used only with augment = crop-flip"
        );
        let decides = [
            (!self.stop.is_none()).then(|| format!("stop = {}", serde_name(&self.stop))),
            (self.schedule == Schedule::Plateau).then(|| "schedule = plateau".to_owned()),
        ];
        let decides: Vec<String> = decides.into_iter().flatten().collect();
        ensure!(
            self.holdout.is_some() || decides.is_empty(),
            "{} decide(s) on the held-out loss: set holdout (e.g. holdout = 5000); the test set \
             is never used for a decision",
            decides.join(" and ")
        );
        match (self.stop, self.target_loss) {
            (StopRule::Target, None) => anyhow::bail!("stop = target needs target_loss"),
            (StopRule::Target, Some(_)) | (_, None) => {}
            (_, Some(_)) => anyhow::bail!("target_loss is used only with stop = target"),
        }
        ensure!(
            self.optimizer == Optimizer::Sgd || (self.momentum == 0.0 && !self.nesterov),
            "momentum and nesterov are settings of optimizer = sgd (optimizer is {})",
            serde_name(&self.optimizer)
        );
        ensure!(
            !self.nesterov || self.momentum > 0.0,
            "nesterov needs a momentum above 0"
        );
        ensure!(
            self.warmup < self.epochs,
            "warmup ({}) must be shorter than epochs ({})",
            self.warmup,
            self.epochs
        );
        ensure!(
            self.optimizer != Optimizer::Lbfgs
                || self.batch_size >= LBFGS_MIN_BATCH
                || self.train_limit.is_some_and(|n| self.batch_size >= n),
            "optimizer = lbfgs needs batch_size of at least {LBFGS_MIN_BATCH} (or the whole \
             training set: batch_size ≥ train_limit), got {}: its curvature pairs are \
             differences of gradients of different batches, which small batches drown in noise",
            self.batch_size
        );
        Ok(())
    }

    /// The net of this run for images of shape `input` in `classes` classes.
    pub fn architecture(&self, input: [usize; 3], classes: usize) -> Architecture {
        Architecture {
            layout: self.layout,
            input,
            classes,
            layers: self.layers,
            filters: self.filters,
            kernel: self.kernel,
            activation: self.activation,
            pool: self.pool,
            batchnorm: self.batchnorm,
            head: self.head,
        }
    }
}
