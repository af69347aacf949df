//! Checkpoints in object storage: `<output>/checkpoints/step-NNNNNNN/` holds the generator, the
//! critic and both optimisers as safetensors, `state.json` (step, data position, seed, config),
//! and `manifest.json` (sizes and SHA-256 of the others) written last: a folder without it is
//! torn and ignored. `<output>/checkpoints/latest` names the newest folder.

use std::collections::HashMap;

use base::Location;
use dataprep::Position;
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use crate::config::JobConfig;
use crate::gan::StepMetrics;
use crate::{Error, Result};

/// Folder of checkpoints inside a job output.
pub const CHECKPOINTS: &str = "checkpoints";
const MANIFEST: &str = "manifest.json";
const STATE: &str = "state.json";
const LATEST: &str = "latest";
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

/// Folder name of the checkpoint at `step`.
pub fn folder_name(step: u64) -> String {
    format!("step-{step:07}")
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
    output.join(CHECKPOINTS).join(&folder_name(step)).url().to_string()
}

/// Writes a checkpoint for `state.step` under `output`; returns its folder URL.
pub async fn save(output: &Location, files: Vec<(&'static str, Vec<u8>)>, state: &TrainState) -> Result<String> {
    let name = folder_name(state.step);
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
    let mut names: Vec<String> = checkpoints
        .list_dirs()
        .await?
        .into_iter()
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    for name in names.into_iter().rev() {
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
