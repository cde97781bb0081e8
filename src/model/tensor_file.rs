//! Named tensors and string metadata as safetensors bytes, and back, every value exact: each
//! tensor keeps its dtype (f32, f64, bf16, f16, i64, u8, bool) and its bytes.
use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use safetensors::tensor::{Dtype, View};
use tch::{Device, Kind, Tensor};

/// A tensor's bytes on the host, for the safetensors writer.
pub(crate) struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

const KINDS: [(Kind, Dtype); 7] = [
    (Kind::Float, Dtype::F32),
    (Kind::Double, Dtype::F64),
    (Kind::BFloat16, Dtype::BF16),
    (Kind::Half, Dtype::F16),
    (Kind::Int64, Dtype::I64),
    (Kind::Uint8, Dtype::U8),
    (Kind::Bool, Dtype::BOOL),
];

impl Raw {
    /// `t`'s values as they are (copied to the host).
    pub(crate) fn of(t: &Tensor) -> Result<Raw> {
        let t = t.to_device(Device::Cpu).contiguous();
        let kind = t.kind();
        let dtype = KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, d)| *d)
            .ok_or_else(|| anyhow!("a tensor of kind {kind:?} cannot be written"))?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, numel);
        Ok(Raw {
            dtype,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            bytes,
        })
    }
}

/// `tensors` and `metadata` as the bytes of a safetensors file.
pub(crate) fn encode(
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let raws = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), Raw::of(t)?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(raws.iter().map(|(n, t)| (n, t)), &Some(metadata))
        .map_err(|e| anyhow!("cannot encode the tensors: {e:?}"))
}

/// The metadata and the tensors (on the CPU, by name) of safetensors `bytes`; a truncated or
/// otherwise unreadable file is an error.
pub(crate) fn decode(bytes: &[u8]) -> Result<(HashMap<String, String>, HashMap<String, Tensor>)> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("not a whole safetensors file: {e:?}"))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("its tensors are not readable: {e:?}"))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let Some((kind, _)) = KINDS.iter().find(|(_, d)| *d == view.dtype()) else {
            bail!("tensor {name} has dtype {:?}", view.dtype());
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::from_data_size(view.data(), &shape, *kind));
    }
    Ok((metadata, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_bit_for_bit_and_truncation_is_refused() {
        let base = Tensor::randn([3, 5], (Kind::Float, Device::Cpu)) * 1e3;
        let tensors: Vec<(String, Tensor)> = KINDS
            .iter()
            .map(|(kind, _)| (format!("{kind:?}"), base.to_kind(*kind)))
            .collect();
        let meta = HashMap::from([("k".to_owned(), "v".to_owned())]);
        let bytes = encode(&tensors, meta.clone()).unwrap();
        let (got_meta, got) = decode(&bytes).unwrap();
        assert_eq!(got_meta, meta);
        for (name, t) in &tensors {
            let back = &got[name];
            assert_eq!(back.kind(), t.kind(), "{name}");
            assert!(back.equal(t), "{name}");
        }
        for cut in [bytes.len() - 1, bytes.len() / 2, 7] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
