//! A trained net as a file: its variables (weights and batch-norm statistics) in the
//! safetensors format, with what it takes to use them in the file's metadata — the
//! architecture, the images' normalisation and the run's settings, each as JSON. Any
//! safetensors reader opens it; `bench/shallow_net.py` builds the PyTorch module.
//!
//! Names and shapes (L units of F channels, stacked along the first axis):
//! `stem.weight` F×C×k×k, `stem.bias` F, `units.weight` L·F×F×k×k, `units.bias` L·F (without
//! batch norm), `units.bn.{weight,bias,running_mean,running_var}` L·F (with it),
//! `head.weight` M×features, `head.bias` M.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use safetensors::tensor::Dtype;
use tch::{Device, Kind, Tensor, nn};

use super::{Architecture, Net};
use crate::data::Normalisation;

/// The `format` entry of the metadata: what wrote the file, and the version of its layout.
pub const FORMAT: &str = "shallow-net/1";

/// The file of run `run_id`'s net in a folder of saved nets (`--save-nets`, `serve --nets`).
pub fn file_in(dir: &Path, run_id: &str) -> std::path::PathBuf {
    dir.join(format!("{run_id}.{EXTENSION}"))
}

/// The extension of a saved net's file.
pub const EXTENSION: &str = "safetensors";

/// What a saved net's metadata holds besides its variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub architecture: Architecture,
    pub normalisation: Normalisation,
    /// The run's settings (`RunConfig` as JSON).
    pub settings: serde_json::Value,
}

/// Writes named tensors (f32, or i64 for integer ones) and `metadata` to the safetensors file
/// `path`, whole or not at all.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(name, t)| {
            let t = match t.kind() {
                Kind::Int64 => t.shallow_clone(),
                _ => t.to_kind(Kind::Float),
            };
            (name.clone(), t)
        })
        .collect();
    let bytes = super::tensor_file::encode(&tensors, metadata)
        .with_context(|| format!("cannot encode the tensors for {}", path.display()))?;
    crate::files::write_atomically(path, |file| Ok(file.write_all(&bytes)?))
}

/// Writes a [`Net`]'s named variables (`state`, as its variable store names them) and `meta` to
/// `path`, whole or not at all.
pub fn save(path: &Path, state: &[(String, Tensor)], meta: &Metadata) -> Result<()> {
    let info = HashMap::from([
        ("format".to_owned(), FORMAT.to_owned()),
        (
            "architecture".to_owned(),
            serde_json::to_string(&meta.architecture)?,
        ),
        (
            "normalisation".to_owned(),
            serde_json::to_string(&meta.normalisation)?,
        ),
        ("settings".to_owned(), meta.settings.to_string()),
    ]);
    write_tensors(path, state, info)
}

/// Reads a net [`save`] wrote: its variables in a new store on `device`, the net over them
/// (in eval mode when evaluated), and its metadata. A file of another format, or whose
/// variables do not fit its architecture, is refused saying which.
pub fn load(path: &Path, device: Device) -> Result<(nn::VarStore, Net, Metadata)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (meta, tensors) = decode(&bytes).with_context(|| format!("{}", path.display()))?;
    let mut vars = nn::VarStore::new(device);
    let net = Net::new(&vars.root(), meta.architecture, 0)?;
    let mut expected = vars.variables();
    ensure!(
        tensors.len() == expected.len(),
        "{}: {} tensors, but its architecture has {}",
        path.display(),
        tensors.len(),
        expected.len()
    );
    tch::no_grad(|| -> Result<()> {
        for (name, tensor) in &tensors {
            let Some(var) = expected.get_mut(name) else {
                bail!(
                    "{}: tensor {name} is not a variable of its architecture",
                    path.display()
                );
            };
            ensure!(
                var.size() == tensor.size(),
                "{}: tensor {name} is {:?}, its architecture needs {:?}",
                path.display(),
                tensor.size(),
                var.size()
            );
            var.copy_(tensor);
        }
        Ok(())
    })?;
    vars.freeze();
    Ok((vars, net, meta))
}

fn decode(bytes: &[u8]) -> Result<(Metadata, Vec<(String, Tensor)>)> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("not a safetensors file: {e:?}"))?;
    let info = header.metadata().clone().unwrap_or_default();
    let entry = |key: &str| {
        info.get(key)
            .with_context(|| format!("not a net saved by shallow: no '{key}' in its metadata"))
    };
    let format = entry("format")?;
    ensure!(
        format == FORMAT,
        "a net saved as '{format}'; this version of shallow reads '{FORMAT}'"
    );
    let meta = Metadata {
        architecture: serde_json::from_str(entry("architecture")?)
            .context("its architecture is not readable")?,
        normalisation: serde_json::from_str(entry("normalisation")?)
            .context("its normalisation is not readable")?,
        settings: serde_json::from_str(entry("settings")?)
            .context("its settings are not readable")?,
    };
    meta.architecture.validate()?;
    let tensors = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("its tensors are not readable: {e:?}"))?;
    let tensors = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            ensure!(view.dtype() == Dtype::F32, "tensor {name} is not f32");
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            Ok((name, Tensor::from_slice(&values).view(shape.as_slice())))
        })
        .collect::<Result<_>>()?;
    Ok((meta, tensors))
}
