//! The trainer: numerics against PyTorch, exact resume, artifacts, bad input, the proof that
//! conditioning works (a classifier fitted on real data recognises the requested class), and the
//! built-in evaluation.

mod util;

mod artifacts;
mod bad_input;
mod evaluation;
mod fit;
mod numerics;
mod parallel;
mod quality;
mod resume;
