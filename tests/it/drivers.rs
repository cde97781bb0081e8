//! Which settings drive Δ: the ANOVA against statsmodels on committed fixtures
//! (`tests/fixtures/make_anova_fixture.py`), and the report's per-value Δ and importances
//! against values computed here.
use crate::common;

use std::path::Path;

use common::synthetic::{Synthetic, config, fill, seeded_pair};
use shallow::model::{Head, Layout};
use shallow::report::anova::{self, Factor};
use shallow::report::{self, equivalence::Margins};
use shallow::sweep::store::Location;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The columns of a CSV file, by header.
fn columns(text: &str) -> Vec<(String, Vec<String>)> {
    let mut lines = text.lines();
    let mut cols: Vec<(String, Vec<String>)> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|h| (h.to_owned(), Vec::new()))
        .collect();
    for line in lines {
        for (col, cell) in cols.iter_mut().zip(line.split(',')) {
            col.1.push(cell.to_owned());
        }
    }
    cols
}

#[test]
fn type_two_sums_of_squares_match_statsmodels_anova_lm() {
    for design in ["balanced", "unbalanced"] {
        let data = columns(&fixture(&format!("anova-{design}.csv")));
        let (y, factors): (Vec<_>, Vec<_>) = data.into_iter().partition(|(h, _)| h == "delta");
        let y: Vec<f64> = y[0].1.iter().map(|v| v.parse().unwrap()).collect();
        let factors: Vec<Factor> = factors;
        let got = anova::type2(&factors, &y).unwrap();
        let want = columns(&fixture(&format!("anova-{design}-statsmodels.csv")));
        let (terms, sum_sq, df) = (&want[0].1, &want[1].1, &want[2].1);
        for ((term, ss), df) in terms.iter().zip(sum_sq).zip(df) {
            let ss: f64 = ss.parse().unwrap();
            let df = df.parse::<f64>().unwrap() as usize;
            let (got_ss, got_df) = if term == "Residual" {
                (got.residual, got.residual_df)
            } else {
                let t = got.terms.iter().find(|t| &t.name == term).unwrap();
                (t.sum_sq, t.df)
            };
            assert!(
                (got_ss - ss).abs() <= 1e-9 * ss.abs().max(1e-12),
                "{design} {term}: sum of squares {got_ss} here, {ss} by statsmodels"
            );
            assert_eq!(got_df, df, "{design} {term}: df");
        }
    }
}

/// Four configurations (filters 4/8 × flatten/GAP head), two seeds each, Δ = 0.1·[gap] +
/// 0.3·[filters = 8] exactly: per value the mean of its configurations' Δ, and shares of the
/// variation of 0.9 (filters) and 0.1 (head), nothing left over.
#[test]
fn delta_per_setting_value_and_importances_match_values_computed_here() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    let mut runs = Vec::new();
    let delta = |filters: usize, head: Head| {
        0.1 * f64::from(u8::from(head == Head::Gap)) + 0.3 * f64::from(u8::from(filters == 8))
    };
    for filters in [4, 8] {
        for head in [Head::Flatten, Head::Gap] {
            for seed in [0, 1] {
                for (layout, loss) in [
                    (Layout::Sequential, 1.0),
                    (Layout::Parallel, 1.0 + delta(filters, head)),
                ] {
                    let mut c = config("mnist", layout, filters, 2);
                    c.head = head;
                    c.seed = seed;
                    runs.push(Synthetic {
                        config: c,
                        q: 2.0,
                        train_loss: 0.1,
                        val_loss: loss,
                        val_acc: 0.9,
                        seconds: 1.0,
                        diverged: false,
                    });
                }
            }
        }
    }
    fill(&db, &runs, 0);
    let out = tmp.path().join("report");
    report::generate(&Location::Sqlite(db), &out, &Margins::default()).unwrap();

    let table = columns(&std::fs::read_to_string(out.join("tables/drivers.csv")).unwrap());
    let col = |name: &str| &table.iter().find(|(h, _)| h == name).unwrap().1;
    let mut checked = 0;
    for i in 0..col("setting").len() {
        if col("delta_of")[i] != "val loss (relative)" {
            continue;
        }
        let (setting, value) = (col("setting")[i].as_str(), col("value")[i].as_str());
        let configs: Vec<f64> = [4, 8]
            .into_iter()
            .flat_map(|f| [Head::Flatten, Head::Gap].map(|h| (f, h)))
            .filter(|&(f, h)| match setting {
                "filters" => f.to_string() == value,
                "head" => (h == Head::Gap) == (value == "gap"),
                other => panic!("{other} does not vary"),
            })
            .map(|(f, h)| delta(f, h))
            .collect();
        let want = configs.iter().sum::<f64>() / configs.len() as f64;
        let got: f64 = col("mean")[i].parse().unwrap();
        assert!(
            (got - want).abs() < 1e-12,
            "{setting}={value}: {got} vs {want}"
        );
        assert_eq!(
            (col("configurations")[i].as_str(), col("pairs")[i].as_str()),
            ("2", "4")
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "filters 4, 8 and head flatten, gap");

    let shares = columns(&std::fs::read_to_string(out.join("tables/importance.csv")).unwrap());
    let names = &shares[1].1;
    let values: Vec<f64> = shares[2].1.iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(names, &["filters", "head", "residual"]);
    for (got, want) in values.iter().zip([0.9, 0.1, 0.0]) {
        assert!((got - want).abs() < 1e-9, "{names:?}: {values:?}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("**mnist**: Δ of the validation loss depends mostly on `filters` (90 %"),
        "{md}"
    );
}

/// A sampled grid's setting with many values (30 training sizes here) is broken down by 12
/// ranges of consecutive values, each holding its values' configurations, and enters the
/// importance model as those 12 levels (11 df), not as 30.
#[test]
fn a_setting_with_many_values_is_broken_down_by_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    let sizes: Vec<usize> = (0..30).map(|i| 1000 + 10 * i).collect();
    let mut runs = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        for head in [Head::Flatten, Head::Gap] {
            let mut pair = seeded_pair("mnist", 4, 0, (1.0, 1.0 + 0.01 * i as f64));
            for run in &mut pair {
                run.config.train_limit = Some(size);
                run.config.head = head;
            }
            runs.extend(pair);
        }
    }
    fill(&db, &runs, 0);
    let out = tmp.path().join("report");
    report::generate(&Location::Sqlite(db), &out, &Margins::default()).unwrap();
    let table = columns(&std::fs::read_to_string(out.join("tables/drivers.csv")).unwrap());
    let col = |name: &str| &table.iter().find(|(h, _)| h == name).unwrap().1;
    let ranges: Vec<(String, usize)> = (0..col("setting").len())
        .filter(|&i| {
            col("setting")[i] == "train_limit" && col("delta_of")[i] == "val loss (relative)"
        })
        .map(|i| {
            (
                col("value")[i].clone(),
                col("configurations")[i].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges.len(), 12, "{ranges:?}");
    assert_eq!(ranges[0], ("1000–1010".to_owned(), 4), "{ranges:?}");
    assert_eq!(ranges[11].0, "1270–1290", "{ranges:?}");
    assert_eq!(
        ranges.iter().map(|r| r.1).sum::<usize>(),
        60,
        "every configuration once"
    );
    let shares = columns(&std::fs::read_to_string(out.join("tables/importance.csv")).unwrap());
    let of = |name: &str| &shares.iter().find(|(h, _)| h == name).unwrap().1;
    let row = of("setting")
        .iter()
        .position(|s| s == "train_limit")
        .unwrap();
    assert_eq!(of("df")[row], "11");
}
