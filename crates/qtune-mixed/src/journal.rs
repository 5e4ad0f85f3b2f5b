//! The journal of a search: one line per finished unit of work, appended and
//! flushed as the search goes, so `--resume` continues an interrupted
//! search without redoing finished trials. Numbers are stored as the hex
//! bits of their f64, so a resumed search computes exactly what an
//! uninterrupted one does. The first line fingerprints the search (model,
//! tables, settings); a journal of another search is refused.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::PipelineError;

const MAGIC: &str = "# qtune search journal v1";

/// An open journal.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Records read back on resume, in order.
    records: Vec<Vec<String>>,
}

fn io_err(path: &Path, source: std::io::Error) -> PipelineError {
    PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encodes an f64 exactly.
pub fn f64_hex(x: f64) -> String {
    format!("{:016x}", x.to_bits())
}

/// Encodes an f32 exactly.
pub fn f32_hex(x: f32) -> String {
    format!("{:08x}", x.to_bits())
}

/// Decodes [`f32_hex`].
pub fn parse_f32_hex(s: &str) -> Option<f32> {
    u32::from_str_radix(s, 16).ok().map(f32::from_bits)
}

/// A key of sample tensors (names, types, shapes and every value), for
/// the fingerprint of a journal: a journal of other samples is refused.
pub fn samples_key(samples: &[Vec<(String, qtune_tensor::Tensor)>]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(samples.len() as u64).to_le_bytes());
    for s in samples {
        h.update(&(s.len() as u64).to_le_bytes());
        for (name, t) in s {
            h.update(name.as_bytes());
            h.update(b"\0");
            super::evaluator::hash_tensor(&mut h, t);
        }
    }
    format!("{:032x}", h.digest128())
}

/// A key of a graph: the content key (op, inputs, constants) of every
/// value with its name.
pub fn graph_key(g: &qtune_ir::Graph) -> String {
    let keys = super::evaluator::content_keys(g);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (id, v) in g.values() {
        h.update(v.name.as_bytes());
        h.update(b"\0");
        h.update(&keys[id.index()].to_le_bytes());
    }
    for &o in &g.outputs {
        h.update(&keys[o.index()].to_le_bytes());
    }
    format!("{:032x}", h.digest128())
}

/// The record of `journal` at `index`, if the journal holds it and its
/// first field is `kind`; a record of another kind is an error naming the
/// journal (the search went another way than the one that wrote it).
pub fn replayed<'j>(
    journal: Option<&'j Journal>,
    index: usize,
    kind: &str,
) -> Result<Option<&'j [String]>, PipelineError> {
    let Some(j) = journal else {
        return Ok(None);
    };
    match j.records().get(index) {
        None => Ok(None),
        Some(r) if r.first().map(String::as_str) == Some(kind) => Ok(Some(r)),
        Some(_) => Err(j.mismatch(index)),
    }
}

/// Decodes [`f64_hex`].
pub fn parse_f64_hex(s: &str) -> Option<f64> {
    u64::from_str_radix(s, 16).ok().map(f64::from_bits)
}

impl Journal {
    /// Opens the journal at `path`. With `resume`, an existing journal of
    /// the same `fingerprint` is read back and appended to; otherwise any
    /// old journal is replaced.
    pub fn open(path: &Path, fingerprint: &str, resume: bool) -> Result<Self, PipelineError> {
        let mut records: Vec<Vec<String>> = Vec::new();
        let header = format!("{MAGIC}\n# fingerprint {fingerprint}\n");
        if resume && path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
            let mut lines = text.lines();
            if lines.next() != Some(MAGIC) {
                return Err(PipelineError::Settings(format!(
                    "--resume: `{}` is not a qtune search journal",
                    path.display()
                )));
            }
            let fp = lines
                .next()
                .and_then(|l| l.strip_prefix("# fingerprint "))
                .unwrap_or("");
            if fp != fingerprint {
                return Err(PipelineError::Settings(format!(
                    "--resume: the journal `{}` was written by a run with other inputs (model, \
                     tables, samples or settings); remove it or run without --resume",
                    path.display()
                )));
            }
            // A line cut by the interruption (no newline) is dropped.
            let complete = text.ends_with('\n');
            let body: Vec<&str> = lines.collect();
            let n = body.len();
            for (i, l) in body.into_iter().enumerate() {
                if i + 1 == n && !complete {
                    break;
                }
                records.push(l.split('\t').map(str::to_string).collect());
            }
            // Rewrite without a cut line, then append.
            let mut text = header.clone();
            for r in &records {
                text.push_str(&r.join("\t"));
                text.push('\n');
            }
            qtune_tensor::write_atomic(path, |w| w.write_all(text.as_bytes()))
                .map_err(|e| io_err(path, e))?;
        } else {
            qtune_tensor::write_atomic(path, |w| w.write_all(header.as_bytes()))
                .map_err(|e| io_err(path, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            records,
        })
    }

    /// Records read back by `--resume`.
    pub fn records(&self) -> &[Vec<String>] {
        &self.records
    }

    /// Appends one record (one `write` of the whole line) and syncs it to
    /// the disk: a kill at any moment leaves whole records, and at most
    /// one line without its newline, which [`Journal::open`] drops.
    pub fn append(&mut self, fields: &[String]) -> Result<(), PipelineError> {
        let mut line = fields.join("\t");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_err(&self.path, e))
    }

    /// Removes the journal once the search's outputs are written.
    pub fn finish(self) -> Result<(), PipelineError> {
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(|e| io_err(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The error for record `index` (0-based) not matching the work it
    /// should replace.
    pub fn mismatch(&self, index: usize) -> PipelineError {
        PipelineError::Settings(format!(
            "--resume: record {} of `{}` does not match this search; remove the journal or run without --resume",
            index + 1,
            self.path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_reads_complete_records() {
        let dir = std::env::temp_dir().join(format!("qtune-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("j");
        let mut j = Journal::open(&p, "abc", false).unwrap();
        j.append(&["layer".into(), "a".into(), f64_hex(0.1)])
            .unwrap();
        drop(j);
        // An interrupted write leaves a partial line.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"layer\tb").unwrap();
        drop(f);
        let j = Journal::open(&p, "abc", true).unwrap();
        assert_eq!(j.records().len(), 1);
        assert_eq!(parse_f64_hex(&j.records()[0][2]), Some(0.1));
        drop(j);
        assert!(Journal::open(&p, "other", true).is_err());
        let j = Journal::open(&p, "abc", false).unwrap();
        assert!(j.records().is_empty());
        j.finish().unwrap();
        assert!(!p.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
