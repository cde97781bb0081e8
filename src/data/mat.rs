//! MATLAB level-5 MAT files, the format of SVHN's `*_32x32.mat`: the numeric arrays a file holds,
//! by name. Covers what MATLAB's `save` (and SciPy's `savemat`) write for numeric matrices —
//! either byte order, compressed (v7) or not, small data elements; cell, struct, character and
//! sparse arrays are skipped, complex ones refused. Our own (about 250 lines) because the crate
//! that reads compressed v7 files, `matrw` 0.1.4, rejects every file SciPy writes: it takes the
//! header's free text to begin with "MATLAB 5.0 MAT-file, " (with the comma), SciPy writes
//! "MATLAB 5.0 MAT-file Platform: posix, …" (the format makes that text informative only); tried
//! 2026-12-02 on `tests/fixtures/svhn-*.mat`: "no variants matched at 0x0".
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

const HEADER: usize = 128;
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
/// `mxDOUBLE_CLASS` ..= `mxUINT64_CLASS`: the numeric array classes.
const NUMERIC_CLASSES: std::ops::RangeInclusive<u8> = 6..=15;
const COMPLEX_FLAG: u32 = 0x0800;

/// A numeric array's values in MATLAB's column-major order: bytes as stored when stored as
/// `uint8` (images stay compact), else converted to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    U8(Vec<u8>),
    F64(Vec<f64>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::U8(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value at `i` as a float.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            Values::U8(v) => f64::from(v[i]),
            Values::F64(v) => v[i],
        }
    }
}

/// A named numeric array of a MAT file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub name: String,
    /// Dimensions, first varying fastest.
    pub dims: Vec<usize>,
    pub values: Values,
}

/// Every numeric array of a MAT file.
pub fn read(path: &Path) -> Result<Vec<Array>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{}: not a readable MATLAB MAT file", path.display()))
}

/// Every numeric array of a MAT file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Vec<Array>> {
    ensure!(
        bytes.len() >= HEADER,
        "{} bytes, shorter than the 128-byte header",
        bytes.len()
    );
    if bytes.starts_with(b"MATLAB 7.3") {
        bail!("a v7.3 MAT file is HDF5, which this reader does not read; save it with -v7");
    }
    let order = match &bytes[126..128] {
        b"IM" => Order::Little,
        b"MI" => Order::Big,
        other => bail!("no MATLAB 5 endian indicator at byte 126 (found {other:?})"),
    };
    let mut arrays = vec![];
    let mut at = HEADER;
    while at < bytes.len() {
        let element = Element::at(bytes, at, order)?;
        match element.kind {
            MI_COMPRESSED => {
                let mut inflated = vec![];
                flate2::read::ZlibDecoder::new(element.data)
                    .read_to_end(&mut inflated)
                    .with_context(|| format!("compressed element at byte {at} does not inflate"))?;
                let inner = Element::at(&inflated, 0, order)
                    .with_context(|| format!("in the compressed element at byte {at}"))?;
                if inner.kind == MI_MATRIX {
                    arrays.extend(matrix(inner.data, order)?);
                }
            }
            MI_MATRIX => arrays.extend(matrix(element.data, order)?),
            _ => {}
        }
        at = element.next;
    }
    Ok(arrays)
}

#[derive(Debug, Clone, Copy)]
enum Order {
    Little,
    Big,
}

impl Order {
    fn bytes<const N: usize>(self, b: &[u8]) -> [u8; N] {
        let mut a: [u8; N] = b[..N].try_into().expect("N bytes");
        if let Order::Big = self {
            a.reverse();
        }
        a
    }

    fn u32(self, b: &[u8]) -> u32 {
        u32::from_le_bytes(self.bytes(b))
    }
}

/// One data element: its type, its data, and where the next element starts.
struct Element<'a> {
    kind: u32,
    data: &'a [u8],
    next: usize,
}

impl<'a> Element<'a> {
    fn at(bytes: &'a [u8], at: usize, order: Order) -> Result<Element<'a>> {
        let tag = bytes
            .get(at..at + 8)
            .with_context(|| format!("truncated data element tag at byte {at}"))?;
        let first = order.u32(tag);
        if first >> 16 != 0 {
            // Small data element: type and size share the first word, up to 4 bytes of data.
            let size = (first >> 16) as usize;
            ensure!(size <= 4, "small data element of {size} bytes at byte {at}");
            return Ok(Element {
                kind: first & 0xffff,
                data: &tag[4..4 + size],
                next: at + 8,
            });
        }
        let size = order.u32(&tag[4..]) as usize;
        let start = at + 8;
        let data = start
            .checked_add(size)
            .and_then(|end| bytes.get(start..end))
            .with_context(|| {
                format!("data element at byte {at} claims {size} bytes past the end")
            })?;
        // Elements are padded to 8 bytes, compressed ones are not.
        let padded = if first == MI_COMPRESSED {
            size
        } else {
            size.div_ceil(8) * 8
        };
        Ok(Element {
            kind: first,
            data,
            next: start + padded,
        })
    }
}

/// A matrix element's array, if it is numeric.
fn matrix(data: &[u8], order: Order) -> Result<Option<Array>> {
    let flags = Element::at(data, 0, order).context("array flags")?;
    ensure!(
        flags.kind == MI_UINT32 && flags.data.len() == 8,
        "malformed array flags"
    );
    let flags_word = order.u32(flags.data);
    let dims_element = Element::at(data, flags.next, order).context("array dimensions")?;
    ensure!(
        dims_element.kind == MI_INT32,
        "array dimensions are not int32"
    );
    let dims: Vec<usize> = dims_element
        .data
        .chunks_exact(4)
        .map(|d| i32::from_le_bytes(order.bytes(d)))
        .map(|d| usize::try_from(d).context("negative array dimension"))
        .collect::<Result<_>>()?;
    let name = Element::at(data, dims_element.next, order).context("array name")?;
    let name_text = String::from_utf8_lossy(name.data).into_owned();
    if !NUMERIC_CLASSES.contains(&((flags_word & 0xff) as u8)) {
        return Ok(None);
    }
    ensure!(
        flags_word & COMPLEX_FLAG == 0,
        "array '{name_text}' is complex"
    );
    let real = Element::at(data, name.next, order)
        .with_context(|| format!("values of array '{name_text}'"))?;
    let values = decode(real.kind, real.data, order)
        .with_context(|| format!("values of array '{name_text}'"))?;
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .context("array dimensions overflow")?;
    ensure!(
        values.len() == count,
        "array '{name_text}' holds {} values, its dimensions {dims:?} say {count}",
        values.len()
    );
    Ok(Some(Array {
        name: name_text,
        dims,
        values,
    }))
}

/// Stored values of any numeric type.
fn decode(kind: u32, data: &[u8], order: Order) -> Result<Values> {
    fn each<const N: usize>(data: &[u8], order: Order, f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        data.chunks_exact(N).map(|c| f(order.bytes(c))).collect()
    }
    let size = match kind {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        other => bail!("unsupported data type {other}"),
    };
    ensure!(
        data.len().is_multiple_of(size),
        "{} bytes are not a whole number of {size}-byte values",
        data.len()
    );
    Ok(match kind {
        MI_UINT8 => Values::U8(data.to_vec()),
        MI_INT8 => Values::F64(data.iter().map(|&b| f64::from(b as i8)).collect()),
        MI_INT16 => Values::F64(each(data, order, |b| f64::from(i16::from_le_bytes(b)))),
        MI_UINT16 => Values::F64(each(data, order, |b| f64::from(u16::from_le_bytes(b)))),
        MI_INT32 => Values::F64(each(data, order, |b| f64::from(i32::from_le_bytes(b)))),
        MI_UINT32 => Values::F64(each(data, order, |b| f64::from(u32::from_le_bytes(b)))),
        MI_SINGLE => Values::F64(each(data, order, |b| f64::from(f32::from_le_bytes(b)))),
        MI_DOUBLE => Values::F64(each(data, order, f64::from_le_bytes)),
        MI_INT64 => Values::F64(each(data, order, |b| i64::from_le_bytes(b) as f64)),
        _ => Values::F64(each(data, order, |b| u64::from_le_bytes(b) as f64)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data element in `order`, padded to 8 bytes.
    fn element(big: bool, kind: u32, data: &[u8]) -> Vec<u8> {
        let word = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = [word(kind), word(data.len() as u32)].concat();
        out.extend(data);
        out.resize(out.len().div_ceil(8) * 8, 0);
        out
    }

    /// A MAT file of one array of `class`, its values stored as `kind`.
    fn file(big: bool, class: u32, dims: &[i32], kind: u32, values: &[u8]) -> Vec<u8> {
        let word = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let dims: Vec<u8> = dims
            .iter()
            .flat_map(|d| {
                if big {
                    d.to_be_bytes()
                } else {
                    d.to_le_bytes()
                }
            })
            .collect();
        let body = [
            element(big, MI_UINT32, &[word(class), word(0)].concat()),
            element(big, MI_INT32, &dims),
            element(big, MI_INT8, b"v"),
            element(big, kind, values),
        ]
        .concat();
        let mut out = vec![b' '; 124];
        out.extend(if big { [1, 0] } else { [0, 1] });
        out.extend(if big { b"MI" } else { b"IM" });
        out.extend(element(big, MI_MATRIX, &body));
        out
    }

    #[test]
    fn every_numeric_type_in_either_byte_order() {
        type Encode = fn(i8) -> Vec<u8>;
        let cases: [(u32, Encode); 9] = [
            (MI_INT8, |v| vec![v as u8]),
            (MI_INT16, |v| i16::from(v).to_le_bytes().to_vec()),
            (MI_UINT16, |v| (v as u16).to_le_bytes().to_vec()),
            (MI_INT32, |v| i32::from(v).to_le_bytes().to_vec()),
            (MI_UINT32, |v| (v as u32).to_le_bytes().to_vec()),
            (MI_SINGLE, |v| f32::from(v).to_le_bytes().to_vec()),
            (MI_DOUBLE, |v| f64::from(v).to_le_bytes().to_vec()),
            (MI_INT64, |v| i64::from(v).to_le_bytes().to_vec()),
            (MI_UINT64, |v| (v as u64).to_le_bytes().to_vec()),
        ];
        for (kind, encode) in cases {
            for big in [false, true] {
                let values: Vec<u8> = [3i8, 10, 7, 1, 9, 2]
                    .iter()
                    .flat_map(|&v| {
                        let mut b = encode(v);
                        if big {
                            b.reverse();
                        }
                        b
                    })
                    .collect();
                let arrays = parse(&file(big, 6, &[3, 2], kind, &values)).unwrap();
                assert_eq!(arrays.len(), 1, "type {kind}");
                assert_eq!(
                    (arrays[0].name.as_str(), &arrays[0].dims[..]),
                    ("v", &[3, 2][..])
                );
                let read: Vec<f64> = (0..6).map(|i| arrays[0].values.get(i)).collect();
                assert_eq!(
                    read,
                    [3.0, 10.0, 7.0, 1.0, 9.0, 2.0],
                    "type {kind}, big {big}"
                );
            }
        }
        let bytes = parse(&file(true, 9, &[2, 1], MI_UINT8, &[4, 200])).unwrap();
        assert_eq!(bytes[0].values, Values::U8(vec![4, 200]));
    }

    #[test]
    fn other_arrays_are_skipped_and_bad_ones_refused() {
        // A cell array (class 1) is no numeric array.
        assert!(
            parse(&file(false, 1, &[1, 1], MI_UINT8, &[0]))
                .unwrap()
                .is_empty()
        );
        let err = parse(&file(false, 6 | COMPLEX_FLAG, &[1, 1], MI_UINT8, &[0])).unwrap_err();
        assert!(err.to_string().contains("complex"), "{err}");
        let err = parse(&file(false, 9, &[2, 2], MI_UINT8, &[1, 2, 3])).unwrap_err();
        assert!(err.to_string().contains("say 4"), "{err}");
        let err = parse(&file(false, 9, &[3], MI_DOUBLE, &[0; 12])).unwrap_err();
        assert!(format!("{err:#}").contains("whole number"), "{err:#}");
        let mut v73 = b"MATLAB 7.3 MAT-file".to_vec();
        v73.resize(200, 0);
        assert!(parse(&v73).unwrap_err().to_string().contains("HDF5"));
    }
}
