//! How much of Δ's variation across configurations each setting explains: the main-effects
//! linear model of the per-configuration Δ on the grid's varied settings (each a categorical
//! factor, treatment-coded) and each setting's **type II** sum of squares — how much the residual
//! sum of squares grows when that setting alone leaves the model. For a full factorial grid this
//! is the classical ANOVA decomposition (types I, II and III agree); for a grid with `[[exclude]]`
//! rules (unbalanced, settings partly confounded) type II stays honest: a setting is credited
//! only with what the others cannot explain, so confounded variation is credited to none
//! (statsmodels' `anova_lm(typ=2)`, tested against it). Interactions are not modelled.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::stats::{BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED};

/// One setting's share of the variation.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub name: String,
    /// Type II sum of squares.
    pub sum_sq: f64,
    /// Its degrees of freedom (levels − 1, less any aliased with other settings).
    pub df: usize,
}

/// The decomposition of the variation of `y` around its mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Anova {
    pub terms: Vec<Term>,
    pub residual: f64,
    pub residual_df: usize,
    /// Total sum of squares around the mean.
    pub total: f64,
}

/// A factor: its name and each observation's level.
pub type Factor = (String, Vec<String>);

/// The type II decomposition of `y` over `factors`; `None` with fewer than two observations or
/// no variation.
pub fn type2(factors: &[Factor], y: &[f64]) -> Option<Anova> {
    let n = y.len();
    if n < 2 || factors.iter().any(|(_, levels)| levels.len() != n) {
        return None;
    }
    let columns: Vec<Vec<Vec<f64>>> = factors.iter().map(|(_, l)| dummies(l)).collect();
    let fit = |leave_out: Option<usize>| {
        let mut design = vec![vec![1.0; n]];
        for (i, c) in columns.iter().enumerate() {
            if Some(i) != leave_out {
                design.extend(c.iter().cloned());
            }
        }
        least_squares(design, y)
    };
    let (full_rss, full_rank) = fit(None);
    let mean = y.iter().sum::<f64>() / n as f64;
    let total: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    if total <= 0.0 {
        return None;
    }
    let terms = factors
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let (rss, rank) = fit(Some(i));
            Term {
                name: name.clone(),
                sum_sq: (rss - full_rss).max(0.0),
                df: full_rank - rank,
            }
        })
        .collect();
    Some(Anova {
        terms,
        residual: full_rss,
        residual_df: n - full_rank,
        total,
    })
}

/// Treatment-coded indicator columns of a factor: one per level after the first (sorted).
fn dummies(levels: &[String]) -> Vec<Vec<f64>> {
    let mut distinct: Vec<&String> = levels.iter().collect();
    distinct.sort();
    distinct.dedup();
    distinct
        .iter()
        .skip(1)
        .map(|level| {
            levels
                .iter()
                .map(|l| f64::from(u8::from(l == *level)))
                .collect()
        })
        .collect()
}

/// Residual sum of squares of `y` on the span of `columns`, and the span's rank: modified
/// Gram–Schmidt, dropping a column whose remainder is below 1e-10 of its norm (aliased with
/// earlier ones, as confounded settings are).
fn least_squares(mut columns: Vec<Vec<f64>>, y: &[f64]) -> (f64, usize) {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for column in &mut columns {
        let norm = dot(column, column).sqrt();
        for q in &basis {
            let r = dot(q, column);
            column.iter_mut().zip(q).for_each(|(c, q)| *c -= r * q);
        }
        let remainder = dot(column, column).sqrt();
        if norm > 0.0 && remainder > 1e-10 * norm {
            column.iter_mut().for_each(|c| *c /= remainder);
            basis.push(std::mem::take(column));
        }
    }
    let mut residual = y.to_vec();
    for q in &basis {
        let r = dot(q, &residual);
        residual.iter_mut().zip(q).for_each(|(e, q)| *e -= r * q);
    }
    (dot(&residual, &residual), basis.len())
}

/// A setting's importance: its type II sum of squares as a share of the total variation, with a
/// 95 % percentile-bootstrap interval resampling configurations.
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    pub name: String,
    pub share: f64,
    pub ci: Option<(f64, f64)>,
    pub df: usize,
}

/// The settings ranked by their share of the variation of `y` (one value per configuration),
/// largest first, with the share nobody explains (the residual) as the last entry named
/// "residual". `None` when [`type2`] is.
pub fn importances(factors: &[Factor], y: &[f64]) -> Option<Vec<Importance>> {
    let anova = type2(factors, y)?;
    let shares = |a: &Anova| -> Vec<f64> {
        a.terms
            .iter()
            .map(|t| t.sum_sq / a.total)
            .chain([a.residual / a.total])
            .collect()
    };
    let observed = shares(&anova);
    let n = y.len();
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut draws: Vec<Vec<f64>> = vec![Vec::new(); observed.len()];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        let pick: Vec<usize> = (0..n).map(|_| rng.gen_range(0..n)).collect();
        let factors: Vec<Factor> = factors
            .iter()
            .map(|(name, l)| (name.clone(), pick.iter().map(|&i| l[i].clone()).collect()))
            .collect();
        let y: Vec<f64> = pick.iter().map(|&i| y[i]).collect();
        if let Some(a) = type2(&factors, &y) {
            for (d, s) in draws.iter_mut().zip(shares(&a)) {
                d.push(s);
            }
        }
    }
    let names = anova.terms.iter().map(|t| (t.name.clone(), t.df));
    let mut ranked: Vec<Importance> = names
        .chain([("residual".to_owned(), anova.residual_df)])
        .zip(observed)
        .zip(draws)
        .map(|(((name, df), share), d)| Importance {
            name,
            share,
            ci: (d.len() >= 2).then(|| super::stats::percentile_interval(d)),
            df,
        })
        .collect();
    let residual = ranked.pop().expect("the residual entry");
    ranked.sort_by(|a, b| b.share.total_cmp(&a.share));
    ranked.push(residual);
    Some(ranked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor(name: &str, levels: &[&str]) -> Factor {
        (name.into(), levels.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_balanced_two_by_two_splits_the_total_exactly() {
        // y = 1·[a = 1] + 3·[b = 1], no noise and no interaction: all of the variation is the
        // settings', a's share 1/10 and b's 9/10 (each level half the observations).
        let a = factor("a", &["0", "1", "0", "1"]);
        let b = factor("b", &["0", "0", "1", "1"]);
        let y = [0.0, 1.0, 3.0, 4.0];
        let anova = type2(&[a.clone(), b.clone()], &y).unwrap();
        assert!((anova.total - 10.0).abs() < 1e-12);
        assert!((anova.terms[0].sum_sq - 1.0).abs() < 1e-12);
        assert!((anova.terms[1].sum_sq - 9.0).abs() < 1e-12);
        assert!(anova.residual.abs() < 1e-12);
        assert_eq!((anova.terms[0].df, anova.residual_df), (1, 1));
        let ranked = importances(&[a, b], &y).unwrap();
        assert_eq!(ranked[0].name, "b");
        assert!((ranked[0].share - 0.9).abs() < 1e-12);
    }

    #[test]
    fn a_setting_aliased_with_another_is_credited_with_nothing() {
        // c always equals a: neither explains anything the other does not.
        let a = factor("a", &["0", "1", "0", "1", "0", "1"]);
        let c = factor("c", &["x", "y", "x", "y", "x", "y"]);
        let y = [0.0, 1.0, 0.1, 1.1, -0.1, 0.9];
        let anova = type2(&[a, c], &y).unwrap();
        assert!(anova.terms.iter().all(|t| t.sum_sq < 1e-12 && t.df == 0));
        assert_eq!(anova.residual_df, 4);
    }
}
