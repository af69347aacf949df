//! The data path end to end in-process: synthetic inputs -> pack -> manifest -> reader, for every
//! input kind, every storage kind, and every bad-input case.

mod util;

mod bad_input;
mod inputs;
mod reader;
mod storage;
