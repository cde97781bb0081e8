//! Statistics for comparing the layouts: means, medians, seeded bootstrap confidence intervals,
//! the Wilcoxon signed-rank test, and the paired t-test and TOST equivalence test.
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{ContinuousCDF, StudentsT};

pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

pub fn median(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    // Selection, not a sort: the bootstrap takes thousands of medians of large samples.
    let mut values = xs.to_vec();
    let (below, &mut upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        upper
    } else {
        let lower = below
            .iter()
            .copied()
            .max_by(f64::total_cmp)
            .unwrap_or(upper);
        (lower + upper) / 2.0
    }
}

/// Linear-interpolation quantile (numpy's default) of sorted data.
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Resamples of the bootstrap; enough for stable 95% percentile intervals.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Fixed so that a report is reproducible.
pub const BOOTSTRAP_SEED: u64 = 2023;

/// 95% percentile-bootstrap interval of `statistic` over `xs`; `None` for fewer than 2 values.
pub fn bootstrap_ci(xs: &[f64], statistic: fn(&[f64]) -> f64) -> Option<(f64, f64)> {
    let singletons: Vec<usize> = (0..xs.len()).collect();
    cluster_bootstrap_ci(xs, &singletons, statistic)
}

/// 95% percentile-bootstrap interval of `statistic` over `xs`, resampling whole clusters
/// (`clusters[i]` is the cluster of `xs[i]`): values of one cluster — the seeds of one
/// configuration, say — are not independent, and resampling them one by one would make the
/// interval too narrow. `None` for fewer than 2 clusters. With one value per cluster it is
/// [`bootstrap_ci`], draw for draw.
pub fn cluster_bootstrap_ci<K: Hash + Eq>(
    xs: &[f64],
    clusters: &[K],
    statistic: fn(&[f64]) -> f64,
) -> Option<(f64, f64)> {
    let groups = grouped(xs, clusters);
    if groups.len() < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut resample = Vec::with_capacity(xs.len());
    let stats: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            resample.clear();
            for _ in 0..groups.len() {
                resample.extend_from_slice(&groups[rng.gen_range(0..groups.len())]);
            }
            statistic(&resample)
        })
        .collect();
    Some(percentile_interval(stats))
}

/// [`cluster_bootstrap_ci`] of the mean, draw for draw, from each cluster's sum and size: no
/// resample is built, so a draw costs the clusters, not the values (the report's cells on a
/// store of 100,000s of runs). Equal to it up to the rounding of the sums' order.
pub fn cluster_bootstrap_mean_ci<K: Hash + Eq>(xs: &[f64], clusters: &[K]) -> Option<(f64, f64)> {
    cluster_bootstrap_means_ci(&[xs], clusters).map(|cis| cis[0])
}

/// [`cluster_bootstrap_mean_ci`] of each of `columns` (values of the same clusters), from one
/// sequence of draws: each interval is the one it would have alone, for the cost of one.
pub fn cluster_bootstrap_means_ci<K: Hash + Eq>(
    columns: &[&[f64]],
    clusters: &[K],
) -> Option<Vec<(f64, f64)>> {
    assert!(
        columns.iter().all(|c| c.len() == clusters.len()),
        "one cluster per value"
    );
    // Per cluster, in order of first appearance: its size and, per column, its sum.
    let mut index: HashMap<&K, usize> = HashMap::new();
    let mut sizes: Vec<usize> = Vec::new();
    let mut sums: Vec<Vec<f64>> = vec![Vec::new(); columns.len()];
    for (i, k) in clusters.iter().enumerate() {
        let c = *index.entry(k).or_insert_with(|| {
            sizes.push(0);
            sums.iter_mut().for_each(|s| s.push(0.0));
            sizes.len() - 1
        });
        sizes[c] += 1;
        for (s, column) in sums.iter_mut().zip(columns) {
            s[c] += column[i];
        }
    }
    let m = sizes.len();
    if m < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut stats = vec![Vec::with_capacity(BOOTSTRAP_RESAMPLES); columns.len()];
    let mut totals = vec![0.0; columns.len()];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        totals.fill(0.0);
        let mut n = 0;
        for _ in 0..m {
            let c = rng.gen_range(0..m);
            n += sizes[c];
            for (total, s) in totals.iter_mut().zip(&sums) {
                *total += s[c];
            }
        }
        for (column, total) in stats.iter_mut().zip(&totals) {
            column.push(total / n as f64);
        }
    }
    Some(stats.into_iter().map(percentile_interval).collect())
}

/// `f` of every item, computed on every core, in the items' order. For independent bootstraps
/// (Table 2's cells): each seeds its own generator, so the results do not depend on the threads.
pub fn map_on_every_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return mine;
                        };
                        mine.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The 2.5 % and 97.5 % quantiles of bootstrap statistics.
pub(crate) fn percentile_interval(mut stats: Vec<f64>) -> (f64, f64) {
    stats.sort_by(f64::total_cmp);
    (
        quantile_sorted(&stats, 0.025),
        quantile_sorted(&stats, 0.975),
    )
}

/// The values of `xs` grouped by their cluster (`clusters[i]` is the cluster of `xs[i]`), clusters
/// in order of first appearance.
pub fn grouped<K: Hash + Eq>(xs: &[f64], clusters: &[K]) -> Vec<Vec<f64>> {
    assert_eq!(xs.len(), clusters.len(), "one cluster per value");
    let mut index: HashMap<&K, usize> = HashMap::new();
    let mut groups: Vec<Vec<f64>> = Vec::new();
    for (&x, k) in xs.iter().zip(clusters) {
        let i = *index.entry(k).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(x);
    }
    groups
}

/// Result of a two-sided Wilcoxon signed-rank test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wilcoxon {
    /// min(W+, W−), as scipy reports it.
    pub statistic: f64,
    pub p_value: f64,
    /// Pairs with a non-zero difference (zeros are dropped, Wilcoxon's convention).
    pub n: usize,
}

/// Largest n for which the exact null distribution is used (when there are no ties), as scipy.
const EXACT_UP_TO: usize = 50;

/// Two-sided Wilcoxon signed-rank test of `d` (paired differences) against a zero median: exact
/// for n ≤ 50 without ties, otherwise the normal approximation with tie correction (and, as
/// scipy's default, no continuity correction). Matches `scipy.stats.wilcoxon` (default `zero_method="wilcox"`).
pub fn wilcoxon(d: &[f64]) -> Option<Wilcoxon> {
    let nonzero: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    let n = nonzero.len();
    if n == 0 {
        return None;
    }
    let ranks = average_ranks(&nonzero.iter().map(|x| x.abs()).collect::<Vec<_>>());
    let w_plus: f64 = nonzero
        .iter()
        .zip(&ranks)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let statistic = w_plus.min(total - w_plus);
    let has_ties = ranks.iter().any(|r| r.fract() != 0.0) || {
        let mut sorted = ranks.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.windows(2).any(|w| w[0] == w[1])
    };
    let p_value = if n <= EXACT_UP_TO && !has_ties {
        exact_two_sided(n, statistic)
    } else {
        normal_two_sided(n, statistic, &ranks)
    };
    Some(Wilcoxon {
        statistic,
        p_value: p_value.min(1.0),
        n,
    })
}

/// Ranks 1..n of `xs`, ties getting the average of their ranks.
fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// P(W ≤ w) · 2 under H0, from the distribution of the sum of a random subset of 1..=n.
fn exact_two_sided(n: usize, w: f64) -> f64 {
    let max = n * (n + 1) / 2;
    let mut counts = vec![0f64; max + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            counts[s] += counts[s - k];
        }
    }
    let total = 2f64.powi(n as i32);
    let below: f64 = counts[..=(w.floor() as usize)].iter().sum();
    2.0 * below / total
}

fn normal_two_sided(n: usize, w: f64, ranks: &[f64]) -> f64 {
    let n = n as f64;
    let mean = n * (n + 1.0) / 4.0;
    let mut tie_term = 0.0;
    let mut sorted = ranks.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut i = 0;
    while i < sorted.len() {
        let j = sorted[i..].iter().take_while(|r| **r == sorted[i]).count();
        let t = j as f64;
        tie_term += t * t * t - t;
        i += j;
    }
    let var = n * (n + 1.0) * (2.0 * n + 1.0) / 24.0 - tie_term / 48.0;
    let z = (w - mean).abs() / var.sqrt();
    2.0 * normal_sf(z)
}

/// Upper tail of the standard normal distribution.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * statrs::function::erf::erfc(z / std::f64::consts::SQRT_2)
}

/// The significance level of every test in the report.
pub const ALPHA: f64 = 0.05;

/// A paired comparison of differences `d` with Student's t: the mean, its standard error, and the
/// tests against zero (difference) and against the margins ±m (equivalence, TOST).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedT {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator).
    pub sd: f64,
    /// Two-sided p of H0: mean = 0 (scipy.stats.ttest_1samp / ttest_rel).
    pub p_difference: f64,
    /// 95% confidence interval of the mean.
    pub ci95: (f64, f64),
    /// 90% confidence interval of the mean: TOST at level α = 0.05 rejects non-equivalence exactly
    /// when it lies inside (−m, m).
    pub ci90: (f64, f64),
}

fn students_t(df: f64) -> StudentsT {
    StudentsT::new(0.0, 1.0, df).expect("df is positive")
}

/// The paired t statistics of `d`; `None` with fewer than 2 differences or no spread at all.
pub fn paired_t(d: &[f64]) -> Option<PairedT> {
    let n = d.len();
    if n < 2 {
        return None;
    }
    let m = mean(d);
    let sd = (d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    if !(sd > 0.0 && sd.is_finite()) {
        return None;
    }
    let se = sd / (n as f64).sqrt();
    let t = students_t((n - 1) as f64);
    let half = |level: f64| t.inverse_cdf(1.0 - (1.0 - level) / 2.0) * se;
    Some(PairedT {
        n,
        mean: m,
        sd,
        p_difference: 2.0 * t.sf((m / se).abs()),
        ci95: (m - half(0.95), m + half(0.95)),
        ci90: (m - half(0.90), m + half(0.90)),
    })
}

/// Two one-sided tests of H0: |mean| ≥ m against H1: −m < mean < m. The p-value is the larger of
/// the two one-sided p-values (statsmodels' `ttost_paired(x1, x2, -m, m)`).
pub fn tost_p(t: &PairedT, margin: f64) -> f64 {
    let se = t.sd / (t.n as f64).sqrt();
    let dist = students_t((t.n - 1) as f64);
    let p_lower = dist.sf((t.mean + margin) / se);
    let p_upper = dist.cdf((t.mean - margin) / se);
    p_lower.max(p_upper)
}

/// Largest number of pairs the sample-size estimate looks at.
const MAX_PAIRS: usize = 1_000_000;

/// How many pairs in all, if the observed mean and spread held, the test that could settle the
/// question would need at level α: TOST (equivalence) while |mean| < m, else the t-test
/// (difference). `None` beyond a million pairs or for a mean of exactly ±m.
pub fn pairs_needed(t: &PairedT, margin: f64) -> Option<usize> {
    let (gap, level) = if t.mean.abs() < margin {
        (margin - t.mean.abs(), 1.0 - ALPHA)
    } else {
        (t.mean.abs(), 1.0 - ALPHA / 2.0)
    };
    if gap <= 0.0 {
        return None;
    }
    let enough = |n: usize| {
        let quantile = students_t((n - 1) as f64).inverse_cdf(level);
        quantile * t.sd / (n as f64).sqrt() <= gap
    };
    // The condition is monotone in n: bisect between 2 and MAX_PAIRS.
    if !enough(MAX_PAIRS) {
        return None;
    }
    let (mut lo, mut hi) = (2, MAX_PAIRS);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if enough(mid) { hi = mid } else { lo = mid + 1 }
    }
    Some(lo)
}
