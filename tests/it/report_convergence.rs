//! The report's section on converged nets, on stores of synthetic runs with known values: the
//! budget curve and the verdicts at the best held-out epoch against values computed here, and
//! the warning above the verdicts when runs hit their epoch cap still improving.
use crate::common;

use std::path::Path;

use common::synthetic::{Synthetic, config, fill, fill_with};
use shallow::data::Holdout;
use shallow::model::Layout;
use shallow::report::{self, equivalence::Margins};
use shallow::sweep::store::Location;
use shallow::train::stopping::StopRule;

/// Student's t quantile t(0.95; df = 2) (scipy.stats.t.ppf(0.95, 2)).
const T95_DF2: f64 = 2.919_985_580_353_725;

/// Three configurations (one seed each) holding out training examples: the sequential run's
/// test loss 1.0, the parallel run's 1.1, 1.3 and 1.2 (Δ = +10 %, +30 %, +20 %); held-out losses
/// are 1.1 × the test losses, so their relative Δ are the same.
fn held_out_runs(stop: StopRule) -> Vec<Synthetic> {
    let mut runs = Vec::new();
    for (i, par_loss) in [1.1, 1.3, 1.2].into_iter().enumerate() {
        for layout in [Layout::Sequential, Layout::Parallel] {
            let mut cfg = config("mnist", layout, 4 + i, 2);
            cfg.holdout = Some(Holdout::Count(100));
            cfg.stop = stop;
            runs.push(Synthetic {
                config: cfg,
                q: 2.0,
                train_loss: 0.1,
                val_loss: if layout == Layout::Parallel {
                    par_loss
                } else {
                    1.0
                },
                val_acc: 0.9,
                seconds: 1.0,
                diverged: false,
            });
        }
    }
    runs
}

fn csv_rows(path: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(path)
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn budget_curve_and_best_epoch_verdicts_match_values_computed_here() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    fill(&db, &held_out_runs(StopRule::None), 0);
    let out = tmp.path().join("report");
    report::generate(&Location::Sqlite(db), &out, &Margins::default()).unwrap();
    // Δ = 0.1, 0.3, 0.2 at every epoch (the synthetic losses scale both layouts alike).
    let (mean, se) = (0.2, 0.1 / 3f64.sqrt());
    let (lo, hi) = (mean - T95_DF2 * se, mean + T95_DF2 * se);
    let close = |field: &str, x: f64| (field.parse::<f64>().unwrap() - x).abs() < 1e-9;
    let budget = csv_rows(&out.join("tables/budget.csv"));
    assert_eq!(budget.len(), 4, "2 epochs × test and held-out");
    for row in &budget {
        assert_eq!(&row[0], "mnist");
        assert_eq!((&row[3], &row[4]), ("3", "3"), "configurations, pairs");
        assert!(
            close(&row[5], mean) && close(&row[6], lo) && close(&row[7], hi),
            "{row:?}"
        );
        // t = 3.46 on 2 degrees of freedom: p = 0.074, neither equivalent nor different.
        assert_eq!(&row[8], "inconclusive");
    }
    let best = csv_rows(&out.join("tables/best_epoch.csv"));
    let test_loss = best
        .iter()
        .find(|r| &r[1] == "test loss (relative)")
        .unwrap();
    assert!(close(&test_loss[5], mean), "{test_loss:?}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Converged nets"));
    assert!(md.contains("budget_mnist.svg"));
    assert!(out.join("plots/budget_mnist.png").is_file());
    assert!(!md.contains("Warning"), "no run still improving");
    assert_eq!(csv_rows(&out.join("tables/convergence.csv")).len(), 6);
}

#[test]
fn runs_still_improving_at_the_cap_put_a_warning_above_the_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    let still_improving = |r: &mut shallow::train::RunResult| {
        if let Some(c) = r.convergence.as_mut() {
            c.still_improving = r.config.layout == Layout::Sequential;
        }
    };
    fill_with(&db, &held_out_runs(StopRule::Plateau), 0, &still_improving);
    let out = tmp.path().join("report");
    report::generate(&Location::Sqlite(db), &out, &Margins::default()).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let warning = md.find("Warning: 3 of 6 runs (50 %)").expect("a warning");
    assert!(
        warning < md.find("## Verdicts").unwrap(),
        "above the verdicts"
    );
    assert!(
        md.contains("| mnist | sequential | 3 | 3 | 0 | 0 | 3 (100 %) |"),
        "{md}"
    );
    // The budget curve of a grid with a stopping rule: the pairs that trained each epoch.
    assert!(out.join("plots/budget_mnist.svg").exists());
    assert!(
        md.contains("held-out loss (relative)"),
        "verdicts at the best epoch"
    );
}
