//! A run's identity in the store: ids that are hashes of its settings, so that the same settings
//! queued twice (by two grids, or one grid twice) are one run.
use sha2::{Digest, Sha256};

use crate::train::RunConfig;

/// One run with its stable identity.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Hash of the canonical resolved config.
    pub id: String,
    /// Hash of the config without its layout: the sequential and parallel runs of one
    /// configuration share it.
    pub pair_id: String,
    pub config: RunConfig,
}

impl RunSpec {
    /// The run of `config`, its ids computed.
    pub fn of(config: RunConfig) -> RunSpec {
        RunSpec {
            id: run_id(&config),
            pair_id: pair_id(&config),
            config,
        }
    }
}

/// Canonical form of a config: JSON with keys sorted (serde_json's map is ordered).
fn canonical(value: &serde_json::Value) -> String {
    serde_json::to_string(value).expect("a JSON value serialises")
}

/// 16 hex digits of the SHA-256 of `text`: ids and file names.
pub fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

pub fn run_id(config: &RunConfig) -> String {
    short_hash(&canonical(
        &serde_json::to_value(config).expect("config serialises"),
    ))
}

pub fn pair_id(config: &RunConfig) -> String {
    let mut value = serde_json::to_value(config).expect("config serialises");
    value
        .as_object_mut()
        .expect("config is an object")
        .remove("layout");
    short_hash(&canonical(&value))
}

/// Runs with the same fusion key can be trained together ([`RunConfig::fusion_group`]).
pub fn fusion_key(config: &RunConfig) -> String {
    run_id(&config.fusion_group())
}
