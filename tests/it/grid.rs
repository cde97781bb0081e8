//! Grid specs: expansion, stable identities, pairing and error messages.
use std::collections::{BTreeMap, BTreeSet};

use shallow::model::{Layout, Precision};
use shallow::sweep::grid::{self, Grid};
use shallow::sweep::store::identity::RunSpec;

fn runs(g: &Grid) -> Vec<RunSpec> {
    g.runs().collect::<anyhow::Result<_>>().unwrap()
}

#[test]
fn paper_preset_expands_to_6912_runs_in_3456_pairs() {
    let g = grid::load(std::path::Path::new("configs/paper.toml")).unwrap();
    assert_eq!(g.len(), 6912);
    assert_eq!(g.pairs(), 3456);
    let runs = runs(&g);
    assert_eq!(runs.len(), 6912);
    for pair in runs.chunks(2) {
        assert_eq!(
            pair[0].pair_id, pair[1].pair_id,
            "layouts of a pair are neighbours"
        );
        assert_eq!(
            (pair[0].config.layout, pair[1].config.layout),
            (Layout::Sequential, Layout::Parallel)
        );
        assert_eq!(pair[0].config.seed, pair[1].config.seed);
    }
}

#[test]
fn quick_preset_is_small_and_paired() {
    let g = grid::load(std::path::Path::new("configs/quick.toml")).unwrap();
    assert_eq!((g.len(), g.pairs()), (96, 48));
    let seeds: BTreeSet<u64> = runs(&g).iter().map(|r| r.config.seed).collect();
    assert_eq!(seeds.len(), 3, "seeds, for the report's seed-noise columns");
}

const A: &str = r#"
name = "t"
[runs]
dataset = ["mnist", "cifar10"]
layers = [2, 4]
lr = 1e-3
epochs = 2
"#;

const A_REORDERED: &str = r#"
[runs]
epochs = 2
lr = 0.001
layers = [4, 2]
dataset = ["cifar10", "mnist"]
"#;

#[test]
fn ids_do_not_depend_on_key_or_value_order() {
    let ids = |text| {
        let mut ids: Vec<String> = runs(&grid::parse(text, "x.toml").unwrap())
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(A).len(), 8);
    assert_eq!(ids(A), ids(A_REORDERED));
}

#[test]
fn ids_change_with_any_setting_and_pairs_ignore_only_the_layout() {
    let g = grid::parse(A, "x.toml").unwrap();
    let mut ids: Vec<_> = runs(&g).iter().map(|r| r.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 8);
    assert_eq!(g.pairs(), 4);
    let other = grid::parse(&A.replace("epochs = 2", "epochs = 3"), "x.toml").unwrap();
    assert!(runs(&other).iter().all(|r| !ids.contains(&r.id)));
}

/// Precision is an axis like any other, but fp32 runs keep the ids they had before the setting
/// existed, so databases recorded then stay valid.
#[test]
fn precision_axis_adds_bf16_runs_and_keeps_fp32_ids() {
    let before: Vec<String> = runs(&grid::parse(A, "x.toml").unwrap())
        .into_iter()
        .map(|r| r.id)
        .collect();
    let explicit = grid::parse(&format!("{A}precision = \"fp32\"\n"), "x.toml").unwrap();
    assert_eq!(
        runs(&explicit)
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>(),
        before
    );
    let both = grid::parse(&format!("{A}precision = [\"fp32\", \"bf16\"]\n"), "x.toml").unwrap();
    assert_eq!(both.len(), 16);
    assert_eq!(both.pairs(), 8);
    let both = runs(&both);
    let bf16: Vec<_> = both
        .iter()
        .filter(|r| r.config.precision == Precision::Bf16)
        .collect();
    assert_eq!(bf16.len(), 8);
    assert!(bf16.iter().all(|r| !before.contains(&r.id)));
}

#[test]
fn exclude_rules_remove_matching_runs() {
    let text = format!("{A}\n[[exclude]]\ndataset = \"cifar10\"\nlayers = 4\n");
    let g = grid::parse(&text, "x.toml").unwrap();
    assert_eq!(g.len(), 6);
    assert!(
        !runs(&g)
            .iter()
            .any(|r| r.config.dataset == "cifar10" && r.config.layers == 4)
    );
}

fn error_of(text: &str) -> String {
    format!("{:#}", grid::parse(text, "grid.toml").unwrap_err())
}

#[test]
fn malformed_toml_names_the_line() {
    let err = error_of("[runs]\nlayers = [2, 4\nlr = 1e-3\n");
    assert!(
        err.starts_with("grid.toml:2") || err.starts_with("grid.toml:3"),
        "{err}"
    );
}

#[test]
fn unknown_setting_names_line_and_field() {
    let err = error_of("[runs]\nlayers = 2\nlayres = 4\n");
    assert!(
        err.contains("grid.toml:3") && err.contains("`layres`"),
        "{err}"
    );
}

#[test]
fn wrong_type_and_invalid_values_name_line_and_field() {
    let err = error_of("[runs]\nlayers = 2\n\nkernel = [3, \"five\"]\n");
    assert!(
        err.contains("grid.toml:4") && err.contains("`kernel`"),
        "{err}"
    );
    let err = error_of("[runs]\nkernel = [3, 4]\n");
    assert!(
        err.contains("grid.toml:2") && err.contains("kernel must be odd"),
        "{err}"
    );
    let err = error_of("[runs]\nlayout = \"diagonal\"\n");
    assert!(
        err.contains("grid.toml:2") && err.contains("diagonal"),
        "{err}"
    );
    let err = error_of("[runs]\nlr = -1.0\n");
    assert!(err.contains("lr must be a positive number"), "{err}");
}

#[test]
fn empty_axis_and_total_exclusion_are_errors() {
    let err = error_of("[runs]\nfilters = []\n");
    assert!(
        err.contains("grid.toml:2") && err.contains("empty list"),
        "{err}"
    );
    let err = error_of("[runs]\nlayers = 2\n[[exclude]]\nlayers = 2\n");
    assert!(err.contains("remove every run"), "{err}");
    let err = error_of("[runs]\nlayers = 2\n[[exclude]]\nlayerz = 2\n");
    assert!(
        err.contains("grid.toml:4") && err.contains("layerz"),
        "{err}"
    );
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let err = error_of("nmae = \"x\"\n[runs]\nlayers = 2\n");
    assert!(err.contains("grid.toml:1") && err.contains("nmae"), "{err}");
}

#[test]
fn repeated_values_are_one_run_and_excluded_datasets_are_not_used() {
    let text = "[runs]\ndataset = [\"mnist\", \"cifar10\"]\nlr = [1e-3, 0.001, 1e-2]\n\
                layers = [2, 2.0]\n[[exclude]]\ndataset = \"cifar10\"\n";
    let err = error_of(text);
    assert!(err.contains("`layers`"), "a float for an integer: {err}");
    let g = grid::parse(&text.replace(", 2.0]", "]"), "x.toml").unwrap();
    assert_eq!((g.len(), g.pairs()), (4, 2));
    assert_eq!(g.datasets(), ["mnist"]);
    let ids: BTreeSet<_> = runs(&g).into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 4);
}

/// Twenty million combinations (1000 seeds × 100 learning rates × 100 batch sizes × 2 layers ×
/// 1 layout): refused without a raised limit, then counted exactly in bounded memory, and the
/// first runs come out lazily.
#[test]
fn huge_grids_need_a_raised_limit_and_stream() {
    let list = |values: Vec<String>| format!("[{}]", values.join(","));
    let seeds = list((0..1000).map(|s| s.to_string()).collect());
    let lrs = list((1..=100).map(|i| format!("{}e-4", i)).collect());
    let batches = list((1..=100).map(|b| b.to_string()).collect());
    let text = format!(
        "[runs]\nlayout = \"parallel\"\nseed = {seeds}\nlr = {lrs}\nbatch_size = {batches}\n\
         layers = [2, 4]\n[[exclude]]\nseed = 7\nlayers = 4\n"
    );
    let err = format!("{:#}", grid::parse(&text, "big.toml").unwrap_err());
    assert!(
        err.contains("20000000 combinations") && err.contains("--max-runs 20000000"),
        "{err}"
    );
    let before = peak_rss_bytes();
    let g = grid::parse_limited(&text, "big.toml", 20_000_000).unwrap();
    assert_eq!(g.len(), 20_000_000 - 100 * 100);
    assert_eq!(g.pairs(), g.len(), "one layout: every run is its own pair");
    let first: Vec<RunSpec> = g.runs().take(3).map(Result::unwrap).collect();
    assert_eq!(
        first.iter().map(|r| r.config.layers).collect::<Vec<_>>(),
        [2, 4, 2]
    );
    let grown = peak_rss_bytes().saturating_sub(before);
    // Expanded in memory, the grid would take tens of GB.
    assert!(grown < 100_000_000, "peak memory grew by {grown} bytes");
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn staged_layouts_join_their_family_and_leave_sequential_and_parallel_ids_alone() {
    let base = "name = \"t\"\n[runs]\nlayers = [2, 4]\nfilters = 4\n";
    let ends = grid::parse(base, "x.toml").unwrap();
    let text = format!("{base}layout = [\"sequential\", \"staged-2\", \"parallel\"]\n");
    let g = grid::parse(&text, "x.toml").unwrap();
    assert_eq!(
        (g.len(), g.pairs()),
        (6, 2),
        "three layouts of two families"
    );
    let all = runs(&g);
    for r in runs(&ends) {
        assert!(
            all.iter().any(|t| t.id == r.id),
            "id of {} kept",
            r.config.layout
        );
    }
    for staged in all.iter().filter(|r| r.config.layout == Layout::Staged(2)) {
        let family: Vec<_> = all.iter().filter(|r| r.pair_id == staged.pair_id).collect();
        assert_eq!(
            family.len(),
            3,
            "a family holds every layout of one configuration"
        );
        assert!(
            family
                .iter()
                .all(|r| r.config.layers == staged.config.layers)
        );
    }
}

#[test]
fn a_number_of_stages_that_does_not_divide_the_layers_is_a_clear_error() {
    let text = "name = \"t\"\n[runs]\nlayers = [3, 4]\nlayout = \"staged-2\"\n";
    let err = match grid::parse(text, "grid.toml") {
        Err(e) => format!("{e:#}"),
        Ok(g) => format!("{:#}", g.runs().find_map(|r| r.err()).unwrap()),
    };
    assert!(
        err.contains("staged-2 needs a number of layers divisible by 2, got 3"),
        "{err}"
    );
    let err = error_of("[runs]\nlayout = \"staged-0\"\n");
    assert!(err.contains("grid.toml:2"), "{err}");
    assert!(
        err.contains("expected sequential, parallel or staged-D"),
        "{err}"
    );
}

/// The study's design promise: every dataset holds at least 10 families (a configuration and
/// seed, every arrangement present) in each Q bin. Counted here from nets actually built, against
/// `plan::compared_per_q_bin` (which counts from the architecture's formula).
#[test]
fn study_preset_holds_ten_families_per_q_bin_and_dataset() {
    use std::collections::HashMap;
    let g = grid::load(std::path::Path::new("configs/study-cpu.toml")).unwrap();
    let mut families: HashMap<(String, String), (usize, Vec<Layout>)> = HashMap::new();
    for run in runs(&g) {
        let cfg = &run.config;
        let (shape, available) = match cfg.dataset.as_str() {
            "mnist" => ([1, 28, 28], 60_000),
            "cifar10" => ([3, 32, 32], 50_000),
            other => panic!("the study uses mnist and cifar10, not {other}"),
        };
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        shallow::model::Net::new(&vs.root(), cfg.architecture(shape, 10), cfg.seed).unwrap();
        let params = shallow::model::parameter_count(&vs);
        let examples = cfg.train_limit.unwrap_or(available).min(available);
        let q = (examples * 10) as f64 / params as f64;
        let bin = [1.0, 3.0, 10.0].iter().filter(|&&edge| q >= edge).count();
        let family = families
            .entry((cfg.dataset.clone(), run.pair_id.clone()))
            .or_insert((bin, Vec::new()));
        assert_eq!(family.0, bin, "one Q for every arrangement of {cfg:?}");
        family.1.push(cfg.layout);
    }
    let mut counted: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for ((dataset, _), (bin, layouts)) in &families {
        assert!(
            layouts.len() >= 3,
            "a family has ≥ 3 arrangements: {layouts:?}"
        );
        assert!(layouts.contains(&Layout::Sequential) && layouts.contains(&Layout::Parallel));
        counted.entry(dataset.clone()).or_default()[*bin] += 1;
    }
    assert_eq!(
        counted.keys().collect::<Vec<_>>(),
        ["cifar10", "mnist"],
        "both datasets"
    );
    for (dataset, bins) in &counted {
        assert!(bins.iter().all(|&n| n >= 10), "{dataset}: {bins:?}");
    }
    assert_eq!(
        shallow::sweep::plan::compared_per_q_bin(&g, &shallow::sweep::plan::DataFacts::catalog())
            .unwrap(),
        counted
    );
    let seeds: BTreeSet<u64> = runs(&g).iter().map(|r| r.config.seed).collect();
    assert!(seeds.len() >= 3, "seeds: {seeds:?}");
}

/// Every setting of `RunConfig` (what `shallow train --help` lists) is a grid key: a grid giving
/// it its own default value parses and yields the same runs' configs as leaving it out, and a
/// grid key no `RunConfig` field has is refused. Adding a field to `RunConfig` needs no other edit.
#[test]
fn every_run_setting_is_a_grid_key_and_nothing_else_is() {
    let base = "[runs]\ndataset = \"mnist\"\nlayout = \"parallel\"\n";
    let plain = runs(&grid::parse(base, "plain.toml").unwrap());
    let defaults = shallow::train::settings::defaults(Layout::Parallel);
    let texts = shallow::train::settings::value_texts(&defaults);
    let mut help = Vec::new();
    <shallow::train::settings::RunConfig as clap::Args>::augment_args(clap::Command::new("train"))
        .get_arguments()
        .for_each(|a| help.push(a.get_id().to_string()));
    let keys: BTreeSet<String> = grid::settings().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        keys,
        help.into_iter().collect(),
        "grid keys and train flags"
    );
    for setting in shallow::train::settings::described() {
        let name = setting.name;
        let value = match texts[name].as_str() {
            _ if ["dataset", "layout"].contains(&name) => continue, // in the base already
            "none" if setting.choices.is_empty() => continue,       // no default value to give
            t if t.parse::<f64>().is_ok() || t == "true" || t == "false" => t.to_owned(),
            t => format!("\"{t}\""),
        };
        let g = grid::parse(&format!("{base}{name} = {value}\n"), "one.toml")
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(
            runs(&g).iter().map(|r| &r.config).collect::<Vec<_>>(),
            plain.iter().map(|r| &r.config).collect::<Vec<_>>(),
            "{name} = {value}"
        );
    }
    let err = grid::parse(&format!("{base}colour = 1\n"), "bad.toml").unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown setting `colour`"),
        "{err:#}"
    );
}
