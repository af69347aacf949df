//! The trainer: numerics against PyTorch, exact resume, artifacts, bad input, and the proof that
//! conditioning works (a classifier fitted on real data recognises the requested class).

mod util;

mod artifacts;
mod bad_input;
mod fit;
mod numerics;
mod parallel;
mod quality;
mod resume;
