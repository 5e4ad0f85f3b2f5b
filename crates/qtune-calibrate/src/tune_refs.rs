//! The float activations the tuner reads (every tensor of the first
//! `tune_num` batches), held in memory up to a byte budget and beyond it in
//! an unnamed scratch file, read back when a tuning job needs them. At
//! 640x640 (ppocr_v4_det640) five batches hold about 3 GB; under the budget
//! the process keeps at most the budget plus the tensors of the jobs being
//! tuned. The bytes read back are the bytes written, so the tuned thresholds
//! do not depend on the budget.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use qtune_exec::Values;
use qtune_ir::ValueId;
use qtune_tensor::{DType, Tensor, TensorData};

use crate::PipelineError;

enum Kept {
    Memory(Tensor),
    Disk {
        offset: u64,
        bytes: usize,
        dtype: DType,
        dims: Vec<usize>,
    },
}

/// The kept activations of each tuning batch.
pub struct TuneRefs {
    batches: Vec<Mutex<Vec<Option<Kept>>>>,
    budget: usize,
    in_memory: AtomicUsize,
    spill: Mutex<Option<File>>,
    spill_end: AtomicU64,
    /// Bytes written to the scratch file (reported).
    pub spilled: AtomicU64,
}

impl TuneRefs {
    /// Room for `batches` batches of `value_count` values, `budget` bytes of
    /// them in memory.
    pub fn new(batches: usize, value_count: usize, budget: usize) -> Self {
        TuneRefs {
            batches: (0..batches)
                .map(|_| Mutex::new((0..value_count).map(|_| None).collect()))
                .collect(),
            budget,
            in_memory: AtomicUsize::new(0),
            spill: Mutex::new(None),
            spill_end: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Keeps `tensor` as value `id` of batch `batch`: in memory while the
    /// budget allows, else in the scratch file.
    pub fn insert(&self, batch: usize, id: ValueId, tensor: &Tensor) -> Result<(), PipelineError> {
        let bytes = tensor.numel() * tensor.dtype().size_bytes();
        let fits = self
            .in_memory
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + bytes <= self.budget).then_some(used + bytes)
            })
            .is_ok();
        let kept = if fits {
            Kept::Memory(tensor.clone())
        } else {
            let raw = to_bytes(tensor);
            let offset = self.spill_end.fetch_add(raw.len() as u64, Ordering::SeqCst);
            self.write_at(&raw, offset).map_err(scratch_error)?;
            self.spilled.fetch_add(raw.len() as u64, Ordering::Relaxed);
            Kept::Disk {
                offset,
                bytes: raw.len(),
                dtype: tensor.dtype(),
                dims: tensor.dims().to_vec(),
            }
        };
        let mut slots = lock(&self.batches[batch]);
        if let Some(slot) = slots.get_mut(id.index()) {
            *slot = Some(kept);
        }
        Ok(())
    }

    /// Keeps every tensor of one batch's run.
    pub fn insert_all(&self, batch: usize, values: &Values) -> Result<(), PipelineError> {
        for (id, t) in values.iter() {
            self.insert(batch, id, t)?;
        }
        Ok(())
    }

    /// The values `ids` of every batch, as [`Values`] (those not kept are
    /// absent).
    pub fn load(&self, ids: &[ValueId]) -> Result<Vec<Values>, PipelineError> {
        let mut out = Vec::with_capacity(self.batches.len());
        for batch in &self.batches {
            let mut values = Values::default();
            for &id in ids {
                let t = match lock(batch).get(id.index()) {
                    Some(Some(Kept::Memory(t))) => t.clone(),
                    Some(Some(Kept::Disk {
                        offset,
                        bytes,
                        dtype,
                        dims,
                    })) => self.read_tensor(*offset, *bytes, *dtype, dims.clone())?,
                    _ => continue,
                };
                values.insert(id, t);
            }
            out.push(values);
        }
        Ok(out)
    }

    /// Bytes kept in memory.
    pub fn in_memory_bytes(&self) -> usize {
        self.in_memory.load(Ordering::SeqCst)
    }

    /// Value `id` of batch `batch`, if kept.
    pub fn get(&self, batch: usize, id: ValueId) -> Result<Option<Tensor>, PipelineError> {
        let Some(slots) = self.batches.get(batch) else {
            return Ok(None);
        };
        let disk = match lock(slots).get(id.index()) {
            Some(Some(Kept::Memory(t))) => return Ok(Some(t.clone())),
            Some(Some(Kept::Disk {
                offset,
                bytes,
                dtype,
                dims,
            })) => (*offset, *bytes, *dtype, dims.clone()),
            _ => return Ok(None),
        };
        let (offset, bytes, dtype, dims) = disk;
        Ok(Some(self.read_tensor(offset, bytes, dtype, dims)?))
    }

    /// The tensor spilled at `offset` (`bytes` long). An f32 tensor (the
    /// float references) is read straight into its buffer on a
    /// little-endian machine, where the file's bytes are its layout.
    fn read_tensor(
        &self,
        offset: u64,
        bytes: usize,
        dtype: DType,
        dims: Vec<usize>,
    ) -> Result<Tensor, PipelineError> {
        if dtype == DType::F32 && cfg!(target_endian = "little") {
            let mut v = vec![0f32; bytes / 4];
            self.read_at(bytemuck::cast_slice_mut(&mut v), offset)
                .map_err(scratch_error)?;
            return Ok(Tensor::new(dims, TensorData::F32(v.into()))?);
        }
        let mut raw = vec![0u8; bytes];
        self.read_at(&mut raw, offset).map_err(scratch_error)?;
        from_bytes(&raw, dtype, dims)
    }

    fn write_at(&self, raw: &[u8], offset: u64) -> io::Result<()> {
        let mut spill = lock(&self.spill);
        if spill.is_none() {
            *spill = Some(scratch_file()?);
        }
        match spill.as_ref() {
            Some(f) => f.write_all_at(raw, offset),
            None => Err(io::Error::other("no scratch file")),
        }
    }

    fn read_at(&self, raw: &mut [u8], offset: u64) -> io::Result<()> {
        let spill = lock(&self.spill);
        match spill.as_ref() {
            Some(f) => f.read_exact_at(raw, offset),
            None => Err(io::Error::other("no scratch file")),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn scratch_error(e: io::Error) -> PipelineError {
    PipelineError::Settings(format!(
        "scratch file in `{}`: {e}",
        std::env::temp_dir().display()
    ))
}

/// A file in the temporary directory, unlinked at once: it disappears with
/// the process however the process ends.
fn scratch_file() -> io::Result<File> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        ".qtune-tune-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

fn to_bytes(t: &Tensor) -> Vec<u8> {
    match t.data() {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        TensorData::U8(v) => v.to_vec(),
        TensorData::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The tensor spilled as `raw`. The fixed-size chunks (`as_chunks`, not
/// `chunks_exact`) let the conversion compile to a plain copy on
/// little-endian machines: with `chunks_exact` it was 4 % of run_qtable on
/// YOLOX, which reads every float reference back once per layer.
fn from_bytes(raw: &[u8], dtype: DType, dims: Vec<usize>) -> Result<Tensor, PipelineError> {
    let data = match dtype {
        DType::F32 => TensorData::F32(
            raw.as_chunks::<4>()
                .0
                .iter()
                .map(|&c| f32::from_le_bytes(c))
                .collect::<Vec<_>>()
                .into(),
        ),
        DType::I64 => TensorData::I64(
            raw.as_chunks::<8>()
                .0
                .iter()
                .map(|&c| i64::from_le_bytes(c))
                .collect::<Vec<_>>()
                .into(),
        ),
        DType::I32 => TensorData::I32(
            raw.as_chunks::<4>()
                .0
                .iter()
                .map(|&c| i32::from_le_bytes(c))
                .collect::<Vec<_>>()
                .into(),
        ),
        DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect::<Vec<_>>().into()),
        DType::U8 => TensorData::U8(raw.to_vec().into()),
        DType::I8 => TensorData::I8(
            raw.iter()
                .map(|&b| i8::from_le_bytes([b]))
                .collect::<Vec<_>>()
                .into(),
        ),
    };
    Ok(Tensor::new(dims, data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_tensors_come_back_bit_for_bit() {
        let a = Tensor::from_f32(
            vec![2, 3],
            vec![f32::NAN, -0.0, 1.5, f32::INFINITY, 3.0, -7.25],
        )
        .unwrap();
        let b = Tensor::from_i64(vec![3], vec![i64::MIN, 0, i64::MAX]).unwrap();
        let c = Tensor::from_bool(vec![2], vec![true, false]).unwrap();
        let ids: Vec<ValueId> = (0..3).map(ValueId::from_index).collect();
        // Budget 0: everything spills; a large budget: nothing does.
        for budget in [0, 1 << 20] {
            let refs = TuneRefs::new(2, 3, budget);
            for batch in 0..2 {
                refs.insert(batch, ids[0], &a).unwrap();
                refs.insert(batch, ids[1], &b).unwrap();
                refs.insert(batch, ids[2], &c).unwrap();
            }
            let spilled = refs.spilled.load(Ordering::Relaxed);
            assert_eq!(spilled > 0, budget == 0);
            let back = refs.load(&ids[..2]).unwrap();
            assert_eq!(back.len(), 2);
            for v in &back {
                let x = v.get(ids[0]).unwrap().as_f32().unwrap();
                let bits: Vec<u32> = x.iter().map(|f| f.to_bits()).collect();
                let want: Vec<u32> = a.as_f32().unwrap().iter().map(|f| f.to_bits()).collect();
                assert_eq!(bits, want);
                assert_eq!(v.get(ids[1]), Some(&b));
                assert!(v.get(ids[2]).is_none(), "not asked for");
            }
        }
    }
}
