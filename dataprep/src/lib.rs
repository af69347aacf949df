//! dataprep
