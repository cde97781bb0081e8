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
    let design = Design::of(factors, y)?;
    design.decompose(&design.gram(&vec![1.0; y.len()]))
}

/// The observations coded once: for each, the indicator columns it has a 1 in (the intercept
/// first, then one treatment-coded column per factor whose level is not its first, sorted), so
/// that a weighted Gram matrix — all a least-squares fit needs — costs O(n·k²) and each fit
/// O(p³), whatever the number of observations.
struct Design<'a> {
    names: Vec<&'a str>,
    /// Per observation, its columns that are 1.
    ones: Vec<Vec<usize>>,
    y: &'a [f64],
    /// Per factor, its columns.
    columns: Vec<std::ops::Range<usize>>,
    /// Columns of the design; `y` is the one after them in the Gram matrix.
    width: usize,
}

/// The Gram matrix of the design columns and `y` (the last row and column), each observation
/// weighted.
type Gram = Vec<Vec<f64>>;

impl<'a> Design<'a> {
    fn of(factors: &'a [Factor], y: &'a [f64]) -> Option<Design<'a>> {
        let n = y.len();
        if n < 2 || factors.iter().any(|(_, levels)| levels.len() != n) {
            return None;
        }
        let mut ones = vec![vec![0]; n];
        let mut columns = Vec::with_capacity(factors.len());
        let mut width = 1;
        for (_, levels) in factors {
            let mut distinct: Vec<&String> = levels.iter().collect();
            distinct.sort();
            distinct.dedup();
            for (row, level) in ones.iter_mut().zip(levels) {
                let index = distinct
                    .binary_search(&level)
                    .expect("a level of its own factor");
                if index > 0 {
                    row.push(width + index - 1);
                }
            }
            columns.push(width..width + distinct.len() - 1);
            width += distinct.len() - 1;
        }
        Some(Design {
            names: factors.iter().map(|(name, _)| name.as_str()).collect(),
            ones,
            y,
            columns,
            width,
        })
    }

    fn gram(&self, weights: &[f64]) -> Gram {
        let mut g = vec![vec![0.0; self.width + 1]; self.width + 1];
        for ((row, &w), &y) in self.ones.iter().zip(weights).zip(self.y) {
            if w == 0.0 {
                continue;
            }
            for &a in row {
                for &b in row {
                    g[a][b] += w;
                }
                g[a][self.width] += w * y;
            }
            g[self.width][self.width] += w * y * y;
        }
        let y_column: Vec<f64> = g.iter().map(|row| row[self.width]).collect();
        g[self.width] = y_column;
        g
    }

    /// The decomposition of the weighted observations whose Gram matrix is `g`.
    fn decompose(&self, g: &Gram) -> Option<Anova> {
        let all: Vec<usize> = (0..self.width).collect();
        let (full_rss, full_rank) = least_squares(g, &all);
        let weight = g[0][0];
        let total = g[self.width][self.width] - g[0][self.width].powi(2) / weight;
        if total <= 1e-14 * g[self.width][self.width] {
            return None;
        }
        let terms = self
            .columns
            .iter()
            .zip(&self.names)
            .map(|(left_out, name)| {
                let kept: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|c| !left_out.contains(c))
                    .collect();
                let (rss, rank) = least_squares(g, &kept);
                Term {
                    name: (*name).to_owned(),
                    sum_sq: (rss - full_rss).max(0.0),
                    df: full_rank - rank,
                }
            })
            .collect();
        Some(Anova {
            terms,
            residual: full_rss.max(0.0),
            residual_df: (weight.round() as usize).saturating_sub(full_rank),
            total,
        })
    }
}

/// A column whose squared norm, once the columns before it are projected out, is at most this
/// share of its own is taken as aliased with them (as the columns of confounded settings are) and
/// dropped. Far below any real remainder of 0/1 columns (≥ ~1/n of the norm), far above rounding.
const ALIASED: f64 = 1e-9;

/// Residual sum of squares of `y` (the Gram matrix's last column) on the span of the design
/// columns `kept`, and the span's rank: the rows of the Cholesky factor of their Gram matrix,
/// one per column in turn — Gram–Schmidt on inner products — dropping aliased columns.
fn least_squares(g: &Gram, kept: &[usize]) -> (f64, usize) {
    let y = g.len() - 1;
    // Each row: the accepted column's inner products with the columns after it and with y, once
    // the columns before it are projected out, over its own remaining norm.
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let reduced = |rows: &[Vec<f64>], a: usize, b: usize| {
        g[a][b] - rows.iter().map(|r| r[a] * r[b]).sum::<f64>()
    };
    for (i, &j) in kept.iter().enumerate() {
        let remainder = reduced(&rows, j, j);
        if g[j][j] > 0.0 && remainder > ALIASED * g[j][j] {
            let norm = remainder.sqrt();
            let mut row = vec![0.0; g.len()];
            for &c in kept[i + 1..].iter().chain([&y]) {
                row[c] = reduced(&rows, j, c) / norm;
            }
            rows.push(row);
        }
    }
    (reduced(&rows, y, y), rows.len())
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
    let design = Design::of(factors, y)?;
    let n = y.len();
    let anova = design.decompose(&design.gram(&vec![1.0; n]))?;
    let shares = |a: &Anova| -> Vec<f64> {
        a.terms
            .iter()
            .map(|t| t.sum_sq / a.total)
            .chain([a.residual / a.total])
            .collect()
    };
    let observed = shares(&anova);
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut draws: Vec<Vec<f64>> = vec![Vec::new(); observed.len()];
    let mut weights = vec![0.0; n];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        // A resample of the configurations, as how many times each was drawn.
        weights.iter_mut().for_each(|w| *w = 0.0);
        for _ in 0..n {
            weights[rng.gen_range(0..n)] += 1.0;
        }
        if let Some(a) = design.decompose(&design.gram(&weights)) {
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
