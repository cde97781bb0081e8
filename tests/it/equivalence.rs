//! The report's equivalence verdicts: the t-test, TOST and sample-size statistics against values
//! computed independently (statsmodels 0.15 and scipy 1.17, written here as numbers), verdicts on
//! synthetic pairs built to be equivalent, different and too few, and the seed-noise columns.
use crate::common;

use common::synthetic::{Synthetic, config, fill, seeded_pair};
use shallow::model::Layout;
use shallow::report::equivalence::{self, Margins, Quantity, Verdict};
use shallow::report::{self, analysis, stats};
use shallow::sweep::store::{Location, SqliteStore, Store};

const EQUIVALENT: [f64; 12] = [
    0.004, -0.006, 0.001, 0.003, -0.002, 0.005, -0.001, 0.002, 0.0, -0.003, 0.006, 0.001,
];
const DIFFERENT: [f64; 8] = [-0.05, -0.07, -0.04, -0.06, -0.08, -0.05, -0.06, -0.03];
const TOO_FEW: [f64; 3] = [0.01, -0.03, 0.02];
const ACCURACY: [f64; 10] = [0.3, -0.2, 0.9, 0.1, 0.4, -0.5, 0.6, 0.2, 0.0, 0.7];

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

/// (data, margin, statsmodels `ttost_paired(d, 0, -m, m)` p, scipy `ttest_1samp(d, 0)` p,
/// statsmodels `tconfint_mean` at 90 % and 95 %, pairs needed by the search written in Python).
type Reference = (&'static [f64], f64, f64, f64, (f64, f64), (f64, f64), usize);

#[test]
fn t_test_tost_and_intervals_match_statsmodels_and_scipy() {
    let cases: [Reference; 4] = [
        (
            &EQUIVALENT,
            0.02,
            4.509237498478801e-10,
            0.42520437537710465,
            (-0.0009738535781641075, 0.0026405202448307745),
            (-0.0013815033490035896, 0.0030481700156702565),
            2,
        ),
        (
            &DIFFERENT,
            0.02,
            0.9997715256274213,
            2.612313878184901e-05,
            (-0.065741251060711, -0.04425874893928898),
            (-0.06840615938677157, -0.04159384061322842),
            3,
        ),
        (
            &TOO_FEW,
            0.02,
            0.16031688975662126,
            1.0,
            (-0.04460351650050166, 0.04460351650050166),
            (-0.06572410607728427, 0.06572410607728427),
            7,
        ),
        (
            &ACCURACY,
            0.5,
            0.04786695473562969,
            0.09573390947125945,
            (0.0036828509197662784, 0.4963171490802337),
            (-0.05396823522731481, 0.5539682352273148),
            10,
        ),
    ];
    for (d, margin, tost, ttest, ci90, ci95, need) in cases {
        let t = stats::paired_t(d).unwrap();
        assert!(close(stats::tost_p(&t, margin), tost, 1e-6), "{d:?}");
        assert!(close(t.p_difference, ttest, 1e-6), "{d:?}");
        for (ours, theirs) in [(t.ci90, ci90), (t.ci95, ci95)] {
            assert!((ours.0 - theirs.0).abs() < 1e-9 && (ours.1 - theirs.1).abs() < 1e-9);
        }
        assert_eq!(stats::pairs_needed(&t, margin), Some(need), "{d:?}");
    }
    assert!(stats::paired_t(&[0.1]).is_none(), "one pair has no spread");
    assert!(stats::paired_t(&[0.1, 0.1]).is_none(), "zero spread");
}

#[test]
fn verdicts_follow_tost_then_the_t_test() {
    let t = |d: &[f64]| stats::paired_t(d).unwrap();
    let v = |d: &[f64], m: f64, lower: bool| equivalence::verdict(Some(&t(d)), m, lower).0;
    assert_eq!(v(&EQUIVALENT, 0.02, true), Verdict::Equivalent);
    assert_eq!(v(&DIFFERENT, 0.02, true), Verdict::ParallelBetter);
    assert_eq!(v(&DIFFERENT, 0.02, false), Verdict::SequentialBetter);
    assert_eq!(v(&TOO_FEW, 0.02, true), Verdict::Inconclusive);
    // TOST p = 0.048 < 0.05 although the t-test's p = 0.096 is "not significant" either way.
    assert_eq!(v(&ACCURACY, 0.5, false), Verdict::Equivalent);
    assert_eq!(v(&ACCURACY, 0.45, false), Verdict::Inconclusive);
    assert_eq!(
        equivalence::verdict(None, 0.02, true).0,
        Verdict::Inconclusive
    );
}

/// Pairs of `dataset` whose relative validation-loss differences are `d` (and accuracy points
/// `acc`, where given), one configuration per pair.
fn pairs_of(dataset: &str, d: &[f64], acc: &[f64], runs: &mut Vec<Synthetic>) {
    for (i, &rel) in d.iter().enumerate() {
        let seq_loss = 0.5 + 0.01 * i as f64;
        for layout in [Layout::Sequential, Layout::Parallel] {
            let par = layout == Layout::Parallel;
            runs.push(Synthetic {
                config: config(dataset, layout, 4 + i, 2),
                q: 2.0,
                train_loss: 0.1,
                val_loss: if par {
                    seq_loss * (1.0 + rel)
                } else {
                    seq_loss
                },
                val_acc: 0.9
                    + if par {
                        acc.get(i).unwrap_or(&0.0) / 100.0
                    } else {
                        0.0
                    },
                seconds: 1.0,
                diverged: false,
            });
        }
    }
}

#[test]
fn report_opens_with_verdicts_on_equivalent_different_and_too_few_pairs() {
    let mut runs = Vec::new();
    pairs_of("mnist", &EQUIVALENT, &ACCURACY, &mut runs);
    pairs_of("cifar10", &DIFFERENT, &[], &mut runs);
    pairs_of("kmnist", &TOO_FEW, &[], &mut runs);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    fill(&db, &runs, 0);
    let rows = SqliteStore::open(&db).unwrap().runs().unwrap();
    let pairs = analysis::pairs(&rows);
    let margins = Margins::default();
    let verdicts = equivalence::equivalence(&pairs, &margins);
    let find = |group: &str, q: Quantity| {
        verdicts
            .iter()
            .find(|r| r.group == group && r.quantity == q)
            .unwrap()
    };
    let mnist = find("mnist", Quantity::RelValLoss);
    assert_eq!((mnist.verdict, mnist.n), (Verdict::Equivalent, 12));
    assert!(close(mnist.tost_p.unwrap(), 4.509237498478801e-10, 1e-5));
    let mnist_acc = find("mnist", Quantity::ValAccPoints);
    assert_eq!(mnist_acc.verdict, Verdict::Equivalent);
    // ACCURACY and two pairs without a difference: statsmodels gives p = 0.013537785304624746.
    assert!(close(mnist_acc.tost_p.unwrap(), 0.013537785304624746, 1e-5));
    assert_eq!(
        find("cifar10", Quantity::RelValLoss).verdict,
        Verdict::ParallelBetter
    );
    let kmnist = find("kmnist", Quantity::RelValLoss);
    assert_eq!(
        (kmnist.verdict, kmnist.n_needed),
        (Verdict::Inconclusive, Some(7))
    );
    let sentence = equivalence::sentence(kmnist, &margins);
    assert!(sentence.contains("about 7 pairs (4 more)"), "{sentence}");

    let out = tmp.path().join("report");
    let files = report::generate(&Location::Sqlite(db.clone()), &out, &margins).unwrap();
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    let first_section = md.find("\n## ").map(|i| &md[i..]).unwrap();
    assert!(first_section.starts_with("\n## Verdicts"), "{md}");
    assert!(md.contains("EQUIVALENT WITHIN ±2.00 %"), "{md}");
    assert!(md.contains("PARALLEL BETTER") && md.contains("INCONCLUSIVE"));
    assert!(
        !md.to_lowercase().contains("parity"),
        "no parity from a p-value"
    );
    let csv = std::fs::read_to_string(out.join("tables/equivalence.csv")).unwrap();
    assert!(
        csv.starts_with("group,quantity,margin,n,pairs,mean_delta"),
        "{csv}"
    );
    assert!(csv.contains("kmnist,val loss (relative),0.02,3,"), "{csv}");
}

#[test]
fn seed_noise_is_the_median_difference_between_seeds_of_one_configuration() {
    // Two configurations × seeds 0, 1, 2. Sequential val losses 1.0, 1.1, 1.2 (config A) and
    // 2.0, 2.0, 2.4 (config B); parallel = sequential × 1.05 in every pair.
    let mut runs = Vec::new();
    for (filters, losses) in [(4, [1.0, 1.1, 1.2]), (8, [2.0, 2.0, 2.4])] {
        for (seed, loss) in losses.into_iter().enumerate() {
            runs.extend(seeded_pair(
                "mnist",
                filters,
                seed as u64,
                (loss, loss * 1.05),
            ));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    fill(&db, &runs, 0);
    let rows = SqliteStore::open(&db).unwrap().runs().unwrap();
    let pairs = analysis::pairs(&rows);
    assert_eq!(pairs.len(), 6, "pairs are per seed");
    let rows = equivalence::equivalence(&pairs, &Margins::default());
    let row = rows
        .iter()
        .find(|r| r.group == "mnist" && r.quantity == Quantity::RelValLoss)
        .unwrap();
    // Seed pairs (a, b), |b − a| / a: A: 0.1, 0.2, 1/11; B: 0, 0.2, 0.2 → median of
    // {0, 0.0909, 0.1, 0.2, 0.2, 0.2} = 0.15, the same in both layouts (a common factor).
    for spread in [row.seeds.sequential, row.seeds.parallel] {
        let (median, n) = spread.unwrap();
        assert_eq!(n, 6);
        assert!((median - 0.15).abs() < 1e-12, "{median}");
    }
    assert!((row.median_abs - 0.05).abs() < 1e-12);
}

/// Seeds of one configuration are not independent evidence: the tests take one Δ per
/// configuration, the mean of its seeds' pairs. Four configurations × three seeds whose Δ differ
/// much between configurations and little between seeds: as 12 independent pairs the TOST would
/// call it equivalent (p = 0.0075), as 4 configurations it cannot (scipy 1.17 on the four means).
#[test]
fn the_tests_take_one_difference_per_configuration() {
    let means = [0.02, -0.015, 0.025, -0.02];
    let mut runs = Vec::new();
    for (c, mean) in means.into_iter().enumerate() {
        for (seed, jitter) in [-0.001, 0.0, 0.001].into_iter().enumerate() {
            let losses = (0.5, 0.5 * (1.0 + mean + jitter));
            runs.extend(seeded_pair("mnist", 4 + c, seed as u64, losses));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("r.db");
    fill(&db, &runs, 0);
    let rows = SqliteStore::open(&db).unwrap().runs().unwrap();
    let margins = Margins::default();
    let verdicts = equivalence::equivalence(&analysis::pairs(&rows), &margins);
    let row = verdicts
        .iter()
        .find(|r| r.group == "mnist" && r.quantity == Quantity::RelValLoss)
        .unwrap();
    assert_eq!((row.n, row.pairs), (4, 12));
    let t = row.t.unwrap();
    assert!(close(t.mean, 0.0025, 1e-9), "{t:?}");
    assert!(close(t.p_difference, 0.8436717205313303, 1e-6), "{t:?}");
    assert!(close(t.ci90.0, -0.024885776594834364, 1e-6), "{t:?}");
    assert!(close(t.ci90.1, 0.02988577659483437, 1e-6), "{t:?}");
    assert!(close(row.tost_p.unwrap(), 0.11483192895876748, 1e-6));
    assert_eq!(row.verdict, Verdict::Inconclusive);
    let sentence = equivalence::sentence(row, &margins);
    assert!(
        sentence.contains("n = 4 configurations (12 pairs)"),
        "{sentence}"
    );
}

#[test]
fn margins_parse_with_clear_errors() {
    let m: Margins = "loss=5%,acc=1".parse().unwrap();
    assert_eq!((m.val_loss, m.val_acc_points), (0.05, 1.0));
    let m: Margins = "acc=0.25".parse().unwrap();
    assert_eq!((m.val_loss, m.val_acc_points), (0.02, 0.25));
    for (bad, says) in [
        ("loss=2", "in percent"),
        ("loss=-2%", "positive"),
        ("acc=x", "not a number"),
        ("speed=3", "unknown key 'speed'"),
        ("loss", "key=value"),
    ] {
        let err = bad.parse::<Margins>().unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
    let out = std::process::Command::new(common::shallow_bin())
        .args(["report", "missing.db", "--margin", "loss=two%"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--margin") && stderr.contains("not a number"),
        "{stderr}"
    );
}
