//! The search for a server's highest offered rate whose trial loses under
//! 1 % of its exchanges, in a bounded number of trials.
//!
//! ```text
//!  start ──pass──▶ ×1.5 ──pass──▶ ×1.5 ──fail──┐
//!    │                                        ▼
//!    └──fail──▶ ×0.7 … until a pass     bisect (geometric mean) between
//!                                       the best pass and the lowest fail
//!                                       until they are within 10 %
//! ```
//!
//! Pure: a closure runs one trial, so the strategy is tested against fake
//! servers of known capacity.

use anyhow::Result;

use crate::round_sig;

/// A trial passes when it loses less than this fraction of its exchanges.
pub const MAX_LOSS: f64 = 0.01;
/// Growth of the offered rate while every trial passes.
const UP: f64 = 1.5;
/// Shrink of the offered rate while every trial fails.
const DOWN: f64 = 0.7;
/// The search stops once the best pass and the lowest fail are this close.
const CLOSE_ENOUGH: f64 = 1.1;
/// perfdhcp's rate is an integer; below this a server is not worth a figure.
pub const MIN_RATE: u32 = 10;

/// The outcome of one trial at one offered rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trial {
    /// The offered rate (`perfdhcp -r`).
    pub offered: u32,
    /// Completed exchanges per second.
    pub achieved: f64,
    /// Fraction of exchanges lost (see [`crate::perfdhcp::Report::loss`]).
    pub loss: f64,
}

impl Trial {
    #[must_use]
    pub fn passed(&self) -> bool {
        self.loss < MAX_LOSS
    }
}

/// Every trial of a search, in order.
#[derive(Clone, Debug, Default)]
pub struct Search {
    pub trials: Vec<Trial>,
}

impl Search {
    /// The passing trial with the most completed exchanges per second.
    #[must_use]
    pub fn best(&self) -> Option<Trial> {
        self.trials
            .iter()
            .copied()
            .filter(Trial::passed)
            .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
    }
}

/// Runs at most `max_trials` trials, the first at `start` exchanges/s (see
/// the module diagram). An error from `trial` ends the search with it.
pub fn find_max_rate(
    start: u32,
    max_trials: usize,
    mut trial: impl FnMut(u32) -> Result<Trial>,
) -> Result<Search> {
    let mut search = Search::default();
    let mut best_pass: Option<u32> = None;
    let mut lowest_fail: Option<u32> = None;
    let mut rate = start.max(MIN_RATE);
    while search.trials.len() < max_trials {
        let t = trial(rate)?;
        search.trials.push(t);
        if t.passed() {
            best_pass = Some(best_pass.map_or(rate, |b| b.max(rate)));
        } else {
            lowest_fail = Some(lowest_fail.map_or(rate, |f| f.min(rate)));
        }
        let next = match (best_pass, lowest_fail) {
            (Some(pass), None) => scaled(pass, UP),
            (None, Some(fail)) => {
                if fail <= MIN_RATE {
                    break;
                }
                scaled(fail, DOWN).max(MIN_RATE)
            }
            (Some(pass), Some(fail)) => {
                if f64::from(fail) <= f64::from(pass) * CLOSE_ENOUGH {
                    break;
                }
                scaled(pass, (f64::from(fail) / f64::from(pass)).sqrt())
            }
            (None, None) => unreachable!("a trial was just recorded"),
        };
        // Rounding can land on a rate already tried (close brackets): stop
        // rather than repeat it.
        if search.trials.iter().any(|t| t.offered == next) {
            break;
        }
        rate = next;
    }
    Ok(search)
}

/// `rate × factor`, rounded to two significant digits (three above 1000, so
/// that bisection still moves).
#[allow(
    clippy::cast_sign_loss,
    reason = "round_sig returns a non-negative value"
)]
fn scaled(rate: u32, factor: f64) -> u32 {
    let x = f64::from(rate) * factor;
    let digits = if x >= 1000.0 { 3 } else { 2 };
    round_sig(x, digits) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that serves everything up to `capacity` and loses the excess.
    fn fake(capacity: f64) -> impl FnMut(u32) -> Result<Trial> {
        move |r| {
            let offered = f64::from(r);
            let achieved = offered.min(capacity);
            Ok(Trial {
                offered: r,
                achieved,
                loss: 1.0 - achieved / offered,
            })
        }
    }

    #[test]
    fn converges_from_below_and_from_above() {
        for (start, capacity) in [(100, 1234.0), (20_000, 5200.0), (300, 310.0), (50, 57.0)] {
            let s = find_max_rate(start, 10, fake(capacity)).unwrap();
            let best = s
                .best()
                .unwrap_or_else(|| panic!("no pass from {start} for capacity {capacity}: {s:?}"));
            assert!(
                best.achieved <= capacity / (1.0 - MAX_LOSS),
                "{best:?} above capacity {capacity}"
            );
            assert!(
                best.achieved >= capacity * 0.85,
                "{best:?} too far below capacity {capacity}: {s:?}"
            );
            assert!(s.trials.len() <= 10);
        }
    }

    #[test]
    fn respects_the_trial_budget() {
        let s = find_max_rate(10, 3, fake(1e9)).unwrap();
        assert_eq!(
            s.trials.iter().map(|t| t.offered).collect::<Vec<_>>(),
            [10, 15, 23]
        );
    }

    #[test]
    fn a_dead_server_has_no_best_and_stops_at_the_floor() {
        let s = find_max_rate(1000, 20, |r| {
            Ok(Trial {
                offered: r,
                achieved: 0.0,
                loss: 1.0,
            })
        })
        .unwrap();
        assert_eq!(s.best(), None);
        assert_eq!(s.trials.last().unwrap().offered, MIN_RATE);
        assert!(s.trials.len() < 20, "it stops at the floor: {s:?}");
    }

    #[test]
    fn best_is_the_highest_passing_throughput_not_the_last_trial() {
        let mut outcomes = vec![
            Trial {
                offered: 200,
                achieved: 199.0,
                loss: 0.0,
            },
            Trial {
                offered: 300,
                achieved: 250.0,
                loss: 0.2,
            },
            Trial {
                offered: 240,
                achieved: 238.0,
                loss: 0.005,
            },
        ]
        .into_iter();
        let s = find_max_rate(200, 3, |_| Ok(outcomes.next().unwrap())).unwrap();
        assert_eq!(s.best().unwrap().offered, 240);
    }

    #[test]
    fn trial_errors_end_the_search() {
        assert!(find_max_rate(100, 5, |_| anyhow::bail!("perfdhcp crashed")).is_err());
    }
}
