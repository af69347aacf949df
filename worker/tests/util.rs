//! Shared fixtures: a synthetic CelebA packed at 32x32, and small jobs on it.

use std::path::{Path, PathBuf};

use dataprep::celeba::Dialect;
use dataprep::imaging::{Crop, Recipe};
use dataprep::pack::{PackOptions, pack};
use dataprep::synth::{SynthOptions, synth_celeba};
use worker::config::JobConfig;

/// Synthesises `count` images and packs them at 32x32 under `dir/packed`; returns the dataset URL.
pub(crate) fn packed_celeba(dir: &Path, count: usize, seed: u64) -> String {
    let input = dir.join("celeba");
    synth_celeba(
        &input,
        &SynthOptions {
            count,
            seed,
            dialect: Dialect::Official,
        },
    )
    .expect("synth");
    let source = dataprep::celeba::scan(&input).expect("scan");
    let out = dir.join("packed");
    let location = base::Location::parse(out.to_str().unwrap()).unwrap();
    let options = PackOptions {
        shard_mb: 0.5,
        row_group: 64,
        ..PackOptions::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(pack(source, Recipe::square(Crop::Center, 32, 3), &location, &options))
        .expect("pack");
    out.to_str().unwrap().to_string()
}

/// A small, fast job on `data` writing to `output`.
pub(crate) fn small_job(data: &str, output: &Path) -> JobConfig {
    let text = format!(
        r#"
[data]
url = "{data}"
condition = "Blond_Hair"
[model]
image_size = 32
z_dim = 16
width = 16
[train]
batch_size = 8
steps = 4
checkpoint_every = 2
sample_every = 2
sample_rows = 3
device = "cpu"
lr = 1e-4
[output]
url = "{}"
"#,
        output.display()
    );
    JobConfig::from_toml(&text, "test job").unwrap()
}

/// The runtime the trainer's I/O runs on, shared by the tests (the trainer blocks the test's
/// own thread, which is not one of the runtime's).
pub(crate) fn io() -> &'static tokio::runtime::Handle {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| tokio::runtime::Runtime::new().expect("tokio runtime"))
        .handle()
}

/// Path of the repository root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Serialises the tests that run libtorch: concurrent tests share libtorch's intra-op thread pool,
/// which changes how reductions are split and so the last bits of results (and, through training,
/// much more), while a training process runs one job at a time.
pub(crate) fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A loopback address with a port free a moment ago (rank 0's store listens there).
pub(crate) fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// Starts `world_size` `worker train` processes on `file` as the ranks of one group on loopback
/// (stderr piped, for the caller's messages).
pub(crate) fn train_ranks(file: &Path, world_size: usize) -> Vec<std::process::Child> {
    let address = free_address();
    (0..world_size)
        .map(|rank| {
            std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
                .arg("train")
                .arg("--config")
                .arg(file)
                .args(["--rank", &rank.to_string(), "--world-size", &world_size.to_string()])
                .args(["--rendezvous", &address, "--bind-host", "127.0.0.1"])
                .args(["--ranks-on-host", &world_size.to_string()])
                .env("GANTRY_GROUP_SECRET", "test-group")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}
