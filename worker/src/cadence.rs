//! When a run does its periodic work. [`Cadence`] reads the job's `train.steps`,
//! `sample_every`, `checkpoint_every` and `eval_every` and answers, for each completed step, what
//! is [`Due`]: a sample grid, a checkpoint, an evaluation. The trainer asks it after every step;
//! nothing else decides.

use crate::config::TrainConfig;

/// What a run does after a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// Rank 0 renders the label-swap grid (`samples/step-N.png`).
    pub sample: bool,
    /// Every rank commits a checkpoint (rank 0 writes it).
    pub checkpoint: bool,
    /// Rank 0 evaluates the generator (`eval/step-N.json`).
    pub evaluate: bool,
}

impl Due {
    /// Whether anything is due (rank 0 then writes, and the other ranks wait for it).
    pub fn any(self) -> bool {
        self.sample || self.checkpoint || self.evaluate
    }
}

/// The schedule of a run's samples, checkpoints and evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    steps: u64,
    sample_every: u64,
    checkpoint_every: u64,
    eval_every: u64,
}

impl Cadence {
    /// The schedule a job's `[train]` settings ask for.
    pub fn new(train: &TrainConfig) -> Self {
        Self {
            steps: train.steps,
            sample_every: train.sample_every,
            checkpoint_every: train.checkpoint_every,
            eval_every: train.eval_every,
        }
    }

    /// Whether the run evaluates at all (`eval_every` is set).
    pub fn evaluates(&self) -> bool {
        self.eval_every > 0
    }

    /// What is due after step `step` (the first step is 1): samples and checkpoints every
    /// `sample_every` and `checkpoint_every` steps and at the last step (only there when the
    /// setting is 0); evaluations every `eval_every` steps and at the last step, never when
    /// `eval_every` is 0.
    pub fn at(&self, step: u64) -> Due {
        let every = |n: u64| n > 0 && step.is_multiple_of(n);
        let last = step == self.steps;
        Due {
            sample: every(self.sample_every) || last,
            checkpoint: every(self.checkpoint_every) || last,
            evaluate: self.evaluates() && (every(self.eval_every) || last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cadence(steps: u64, sample_every: u64, checkpoint_every: u64, eval_every: u64) -> Cadence {
        Cadence::new(&TrainConfig {
            steps,
            sample_every,
            checkpoint_every,
            eval_every,
            ..TrainConfig::default()
        })
    }

    /// The steps of a run at which `what` is due.
    fn due_at(cadence: Cadence, what: impl Fn(Due) -> bool) -> Vec<u64> {
        (1..=cadence.steps).filter(|&s| what(cadence.at(s))).collect()
    }

    #[test]
    fn evaluations_are_due_every_n_steps_and_at_the_end() {
        let never = cadence(10, 0, 0, 0);
        assert!(!never.evaluates());
        assert_eq!(due_at(never, |d| d.evaluate), [] as [u64; 0]);
        let every_4 = cadence(10, 0, 0, 4);
        assert!(every_4.evaluates());
        assert_eq!(due_at(every_4, |d| d.evaluate), [4, 8, 10]);
        assert_eq!(due_at(cadence(8, 0, 0, 4), |d| d.evaluate), [4, 8]);
    }

    #[test]
    fn checkpoints_are_due_every_n_steps_and_at_the_end_even_when_unset() {
        assert_eq!(due_at(cadence(10, 0, 3, 0), |d| d.checkpoint), [3, 6, 9, 10]);
        assert_eq!(due_at(cadence(10, 0, 0, 0), |d| d.checkpoint), [10]);
        assert_eq!(due_at(cadence(10, 0, 20, 0), |d| d.checkpoint), [10]);
    }

    #[test]
    fn samples_are_due_every_n_steps_and_at_the_end_even_when_unset() {
        assert_eq!(due_at(cadence(7, 2, 0, 0), |d| d.sample), [2, 4, 6, 7]);
        assert_eq!(due_at(cadence(7, 0, 0, 0), |d| d.sample), [7]);
    }

    #[test]
    fn each_kind_of_work_follows_its_own_setting() {
        let c = cadence(12, 4, 6, 3);
        assert_eq!(
            c.at(3),
            Due {
                sample: false,
                checkpoint: false,
                evaluate: true
            }
        );
        assert_eq!(
            c.at(4),
            Due {
                sample: true,
                checkpoint: false,
                evaluate: false
            }
        );
        assert_eq!(
            c.at(6),
            Due {
                sample: false,
                checkpoint: true,
                evaluate: true
            }
        );
        assert_eq!(
            c.at(12),
            Due {
                sample: true,
                checkpoint: true,
                evaluate: true
            }
        );
        assert_eq!(c.at(5), Due::default());
        assert!(!c.at(5).any() && c.at(3).any() && c.at(4).any() && c.at(6).any());
        // The steps at which anything is due.
        assert_eq!(due_at(c, Due::any), [3, 4, 6, 8, 9, 12]);
    }
}
