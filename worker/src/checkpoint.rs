//! Checkpoints in object storage: `<output>/checkpoints/step-NNNNNNN/` holds the generator, the
//! critic and both optimisers as safetensors, `state.json` (step, data position, seed, config),
//! and `manifest.json` (sizes and SHA-256 of the others) written last: a folder without it is
//! torn and ignored. `<output>/checkpoints/latest` names the newest folder.
//!
//! [`save`] and [`load`] write and read a folder; [`Checkpoint::restore`] puts a loaded one back
//! into a [`Gan`] (a resumed run), and [`open_generator`] gives a checkpoint's generator ready to
//! render (`worker generate`, `worker eval`).

use std::collections::HashMap;

use base::Location;
use base::layout::{self, CHECKPOINTS, LATEST};
use dataprep::Position;
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use crate::config::{DeviceSpec, JobConfig};
use crate::gan::{Gan, StepMetrics};
use crate::{Error, Result};

const MANIFEST: &str = "manifest.json";
const STATE: &str = "state.json";
/// The tensor files of a checkpoint.
pub const GENERATOR: &str = "generator.safetensors";
/// Critic weights.
pub const CRITIC: &str = "critic.safetensors";
/// Both optimisers' moments and step counts.
pub const OPTIMIZER: &str = "optimizer.safetensors";

/// Everything about a run that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Generator steps completed.
    pub step: u64,
    /// Reader position after the last step.
    pub position: Position,
    /// The run's seed (per-step randomness is drawn from (seed, step)).
    pub seed: u64,
    /// Image channels of the dataset.
    pub channels: i64,
    /// Class names of the condition, by index.
    pub classes: Vec<String>,
    /// Metrics of the last step.
    pub metrics: Option<StepMetrics>,
    /// The resolved job config.
    pub config: JobConfig,
    /// Data-parallel ranks of the run that wrote it (1 for checkpoints from before ranks).
    #[serde(default = "one_rank")]
    pub world_size: u64,
}

fn one_rank() -> u64 {
    1
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    file: String,
    bytes: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointManifest {
    step: u64,
    files: Vec<FileEntry>,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// Its folder URL.
    pub url: String,
    /// Non-tensor state.
    pub state: TrainState,
    /// Generator variables by name.
    pub generator: HashMap<String, Tensor>,
    /// Critic variables by name.
    pub critic: HashMap<String, Tensor>,
    /// Optimiser state by name.
    pub optimizer: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// An [`Error::Checkpoint`] about this checkpoint.
    pub fn error(&self, message: String) -> Error {
        Error::Checkpoint {
            url: self.url.clone(),
            message,
        }
    }

    /// Copies its generator into `gan`; names a missing or mis-shaped variable.
    pub fn restore_generator(&self, gan: &mut Gan) -> Result<()> {
        gan.load_generator(&self.generator).map_err(|m| self.error(m))
    }

    /// Copies its generator, critic and both optimisers' state into `gan` (a resumed run).
    pub fn restore(&self, gan: &mut Gan) -> Result<()> {
        self.restore_generator(gan)?;
        gan.load_critic(&self.critic).map_err(|m| self.error(m))?;
        gan.load_optimizers(&self.optimizer).map_err(|m| self.error(m))
    }
}

/// The checkpoint at `url` (a checkpoint folder, or a job output: its latest) and its
/// generator on `device`: the networks its job describes, with the generator's saved weights.
pub async fn open_generator(url: &str, device: DeviceSpec) -> Result<(Checkpoint, Gan)> {
    let ckpt = load(&resolve(url).await?).await?;
    let device = crate::device::resolve(device)?;
    let state = &ckpt.state;
    let mut gan = Gan::for_job(&state.config, state.channels, state.classes.len() as i64, device);
    ckpt.restore_generator(&mut gan)?;
    Ok((ckpt, gan))
}

/// A CPU copy of a tensor in safetensors form.
struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Serialises named tensors as safetensors bytes.
pub fn to_safetensors<'a>(tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>) -> Result<Vec<u8>> {
    let mut owned = Vec::new();
    for (name, tensor) in tensors {
        let cpu = tensor.detach().to_device(Device::Cpu).contiguous();
        let dtype = Dtype::try_from(cpu.kind())?;
        let numel = cpu.numel();
        let mut bytes = vec![0u8; numel * cpu.kind().elt_size_in_bytes()];
        cpu.f_copy_data_u8(&mut bytes, numel)?;
        let shape = cpu.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), Owned { dtype, shape, bytes }));
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let views = owned.iter().map(|(name, o)| (name.as_str(), o));
    safetensors::tensor::serialize(views, &None).map_err(Error::Encode)
}

/// Parses the safetensors bytes of `file` in the checkpoint at `url` into named CPU tensors.
pub fn from_safetensors(bytes: &[u8], url: &str, file: &str) -> Result<HashMap<String, Tensor>> {
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| undecodable(url, file, e))?;
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| Ok((name, Tensor::try_from(view)?)))
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The URL of step `step`'s checkpoint folder under `output` (what [`save`] returns).
pub fn folder_url(output: &Location, step: u64) -> String {
    output
        .join(CHECKPOINTS)
        .join(&layout::checkpoint_folder(step))
        .url()
        .to_string()
}

/// Writes a checkpoint for `state.step` under `output`; returns its folder URL.
pub async fn save(output: &Location, files: Vec<(&'static str, Vec<u8>)>, state: &TrainState) -> Result<String> {
    let name = layout::checkpoint_folder(state.step);
    let folder = output.join(CHECKPOINTS).join(&name);
    // A folder left by an interrupted write of the same step is replaced: uncommit it first.
    folder.delete(MANIFEST).await?;
    let mut entries = Vec::new();
    let state_json = serde_json::to_vec_pretty(state).expect("state serialises");
    for (file, bytes) in files.into_iter().chain([(STATE, state_json)]) {
        entries.push(FileEntry {
            file: file.to_string(),
            bytes: bytes.len() as u64,
            sha256: sha256(&bytes),
        });
        folder.put(file, bytes).await?;
    }
    let manifest = CheckpointManifest {
        step: state.step,
        files: entries,
    };
    folder
        .put(
            MANIFEST,
            serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
        )
        .await?;
    output.join(CHECKPOINTS).put(LATEST, name.clone().into_bytes()).await?;
    Ok(folder.url().to_string())
}

/// The newest complete checkpoint folder under a job output, if any. Torn folders (no
/// manifest) newer than it are reported with a warning and skipped.
pub async fn latest(output: &Location) -> Result<Option<Location>> {
    let checkpoints = output.join(CHECKPOINTS);
    let mut names: Vec<(u64, String)> = checkpoints
        .list_dirs()
        .await?
        .into_iter()
        .filter_map(|n| Some((layout::step_of(&n, "")?, n)))
        .collect();
    names.sort();
    for (_, name) in names.into_iter().rev() {
        let folder = checkpoints.join(&name);
        if folder.get_opt(MANIFEST).await?.is_some() {
            return Ok(Some(folder));
        }
        tracing::warn!(checkpoint = %folder.url(), "torn checkpoint (no manifest.json): ignored, using an older one");
    }
    Ok(None)
}

/// Resolves `url` to a checkpoint folder: a folder with a manifest, or a job output (its latest).
pub async fn resolve(url: &str) -> Result<Location> {
    let location = Location::parse(url)?;
    if location.get_opt(MANIFEST).await?.is_some() {
        return Ok(location);
    }
    latest(&location).await?.ok_or_else(|| Error::Checkpoint {
        url: url.to_string(),
        message: "neither a checkpoint folder (no manifest.json) nor a job output with a complete checkpoint".into(),
    })
}

fn undecodable(url: &str, file: &str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::CheckpointFile {
        url: url.to_string(),
        file: file.to_string(),
        source: Box::new(source),
    }
}

/// Reads and verifies a checkpoint folder.
pub async fn load(folder: &Location) -> Result<Checkpoint> {
    let url = folder.url().to_string();
    let bad = |message: String| Error::Checkpoint {
        url: url.clone(),
        message,
    };
    let manifest: CheckpointManifest =
        serde_json::from_slice(&folder.get(MANIFEST).await?).map_err(|e| undecodable(&url, MANIFEST, e))?;
    let mut contents = HashMap::new();
    for entry in &manifest.files {
        let bytes = folder.get(&entry.file).await?;
        if bytes.len() as u64 != entry.bytes || sha256(&bytes) != entry.sha256 {
            return Err(bad(format!(
                "{} does not match its manifest entry (corrupt or replaced)",
                entry.file
            )));
        }
        contents.insert(entry.file.clone(), bytes);
    }
    let file = |name: &str| {
        contents
            .get(name)
            .ok_or_else(|| bad(format!("{name} is not in the manifest")))
    };
    let state: TrainState = serde_json::from_slice(file(STATE)?).map_err(|e| undecodable(&url, STATE, e))?;
    Ok(Checkpoint {
        generator: from_safetensors(file(GENERATOR)?, &url, GENERATOR)?,
        critic: from_safetensors(file(CRITIC)?, &url, CRITIC)?,
        optimizer: from_safetensors(file(OPTIMIZER)?, &url, OPTIMIZER)?,
        state,
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(width: i64, output: &str) -> JobConfig {
        let text = format!(
            "[data]\nurl = \"/nowhere\"\ncondition = \"label\"\n[model]\nimage_size = 32\nz_dim = 8\nwidth = {width}\n\
             [train]\nseed = 3\n[output]\nurl = \"{output}\"\n"
        );
        JobConfig::from_toml(&text, "test").unwrap()
    }

    fn state(config: &JobConfig, step: u64) -> TrainState {
        TrainState {
            step,
            position: Position::default(),
            seed: config.train.seed,
            channels: 3,
            classes: vec!["a".into(), "b".into()],
            metrics: None,
            config: config.clone(),
            world_size: 1,
        }
    }

    /// Saves `gan` as the checkpoint of `state` under `output`; returns its folder URL.
    fn save_gan(runtime: &tokio::runtime::Runtime, output: &Location, gan: &Gan, state: &TrainState) -> String {
        let files = vec![
            (GENERATOR, to_safetensors(gan.generator_tensors().iter()).unwrap()),
            (CRITIC, to_safetensors(gan.critic_tensors().iter()).unwrap()),
            (
                OPTIMIZER,
                to_safetensors(gan.optimizer_tensors().iter().map(|(n, t)| (n, t))).unwrap(),
            ),
        ];
        runtime.block_on(save(output, files, state)).unwrap()
    }

    fn same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> bool {
        a.len() == b.len() && a.iter().all(|(name, t)| b.get(name).is_some_and(|u| t.equal(u)))
    }

    #[test]
    fn a_checkpoints_generator_opens_with_its_saved_weights_and_a_resumed_gan_gets_everything() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap();
        let output = Location::parse(url).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let config = job(8, url);
        // Weights other than a fresh build's: another seed.
        let mut other = config.clone();
        other.train.seed = 11;
        let saved = Gan::for_job(&other, 3, 2, Device::Cpu);
        let folder = save_gan(&runtime, &output, &saved, &state(&config, 5));
        assert_eq!(folder, folder_url(&output, 5));

        // A job output and a checkpoint folder both name it.
        for name in [url, folder.as_str()] {
            let (ckpt, gan) = runtime.block_on(open_generator(name, DeviceSpec::Cpu)).unwrap();
            assert_eq!(ckpt.url, folder);
            assert_eq!(ckpt.state.step, 5);
            assert_eq!((gan.spec.width, gan.spec.z_dim, gan.spec.classes), (8, 8, 2));
            assert!(same(&gan.generator_tensors(), &saved.generator_tensors()));
            // Only the generator is restored.
            assert!(!same(&gan.critic_tensors(), &saved.critic_tensors()));
        }

        let ckpt = runtime.block_on(async { load(&resolve(url).await?).await }).unwrap();
        let mut resumed = Gan::for_job(&config, 3, 2, Device::Cpu);
        ckpt.restore(&mut resumed).unwrap();
        assert!(same(&resumed.generator_tensors(), &saved.generator_tensors()));
        assert!(same(&resumed.critic_tensors(), &saved.critic_tensors()));
    }

    #[test]
    fn a_generator_that_does_not_fit_its_jobs_networks_is_a_checkpoint_error() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap();
        let output = Location::parse(url).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // Tensors of width 8 under a state whose job says width 16.
        let narrow = Gan::for_job(&job(8, url), 3, 2, Device::Cpu);
        let folder = save_gan(&runtime, &output, &narrow, &state(&job(16, url), 2));
        let error = runtime.block_on(open_generator(url, DeviceSpec::Cpu)).unwrap_err();
        let Error::Checkpoint { url: at, message } = &error else {
            panic!("not a checkpoint error: {error:?}");
        };
        assert_eq!(at, &folder);
        assert!(message.contains("has shape"), "{message}");
    }
}
