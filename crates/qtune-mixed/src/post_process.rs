//! `--post_process FILE.py` and `--global_compare_layers` (spec section
//! 3.14, TPU-MLIR's `mix_precision.py`).
//!
//! # post_process
//!
//! The file defines `PostProcess(data)`: `data` is a dict name -> numpy array
//! (the model outputs) and the function returns a dict name -> array, whose
//! key order matters because the losses zip the keys in order.
//!
//! TPU-MLIR re-imports the file for every sample. qtune imports it once, in
//! one persistent `python3` child for the whole search ([`PostProcess`]), and
//! exchanges arrays with it as `.npy` payloads over the child's stdin and
//! stdout. The Python side is a small driver embedded in the binary
//! (`post_process/driver.py`, run with `python3 -B -c`). Module-level state
//! of the script therefore persists between calls, where TPU-MLIR would
//! start afresh each time.
//!
//! ## Protocol
//!
//! All integers are little endian. An *array list* is `u32 count`, then per
//! array `u32 name_len`, the UTF-8 name, `u64 npy_len` and one `.npy`
//! payload (header and data, as `numpy.save` writes it).
//!
//! * Child, once, after importing numpy and the script: `b'R'`, `u32 len`
//!   and a UTF-8 line naming the Python and numpy versions; or an error
//!   frame, after which it exits.
//! * qtune, per call: `b'Q'` and an array list (the outputs).
//! * Child, per call: `b'O'` and an array list, in the order of the
//!   returned dict; or an error frame, after which it keeps serving.
//! * Error frame: `b'E'`, one kind byte, `u32 len` and a UTF-8 message.
//!   Kinds: `N` numpy not importable, `M` script missing, `I` importing the
//!   script raised, `F` no callable `PostProcess`, `X` PostProcess raised,
//!   `T` the result is not a dict of str -> numpy array, `D` an output dtype
//!   qtune cannot read (message `name\ndtype`), `P` protocol violation.
//! * qtune closes the child's stdin to end it; the child exits 0.
//!
//! The driver first moves the protocol to private duplicates of fd 0 and 1,
//! then points fd 0 at `/dev/null` and fd 1 at stderr (and `sys.stdout` at
//! `sys.stderr`): prints from `PostProcess`, even from C code, land on
//! qtune's stderr and cannot corrupt the protocol. The child's stderr is
//! inherited.
//!
//! ## Element types
//!
//! Outputs may be float32, float64, int64, int32, bool, uint8 or int8 arrays,
//! or numpy scalars of those types (read as 0-d arrays). float64 is accepted
//! and narrowed to float32, as qtune's npz reader does: qtune computes its
//! losses in float32. Other types (float16, object, ...) are an error that
//! names the output and its dtype.
//!
//! ## Failure
//!
//! Nothing here panics or waits forever on the child: if it exits, the next
//! read sees end of file and [`PostProcess::apply`] returns
//! [`PostProcessError::ChildDied`] with its exit status; every later call
//! returns that error too. A `PostProcess` that raises, or returns something
//! unreadable, leaves the child serving. (A `PostProcess` that never returns
//! is the script's own infinite loop and is not timed out.)

use std::ffi::OsStr;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use qtune_tensor::{NpyError, Tensor, npy_from_bytes, npy_to_bytes};

use crate::PipelineError;

/// The Python half of the protocol, embedded in the binary.
const DRIVER: &str = include_str!("post_process/driver.py");

/// The interpreter [`PostProcess::start`] runs (looked up on `PATH`).
pub const DEFAULT_PYTHON: &str = "python3";

/// How long the child gets to exit once its stdin is closed (or its stdout
/// has ended) before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// What went wrong with a `--post_process` script. [`PipelineError::PostProcess`]
/// wraps it with the script's path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostProcessError {
    #[error(
        "cannot start the Python interpreter `{python}` ({source}); --post_process needs python3 with numpy on PATH"
    )]
    PythonNotFound {
        python: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the Python interpreter `{python}` cannot import numpy ({message}); install it, e.g. `pip install numpy`"
    )]
    NumpyMissing { python: String, message: String },
    #[error("the script file does not exist")]
    ScriptMissing,
    #[error("importing the script raised:\n{traceback}")]
    ImportFailed { traceback: String },
    #[error("expected a callable `PostProcess(data)`: {found}")]
    NoPostProcess { found: String },
    #[error("PostProcess raised:\n{traceback}")]
    Raised { traceback: String },
    #[error("PostProcess must return a dict of str -> numpy array: {found}")]
    BadReturn { found: String },
    #[error(
        "PostProcess output `{name}` has dtype {dtype}; expected float32, float64 (read as float32), int64, int32, bool, uint8 or int8"
    )]
    UnsupportedDtype { name: String, dtype: String },
    #[error("cannot encode input `{name}` as npy: {source}")]
    Encode {
        name: String,
        #[source]
        source: NpyError,
    },
    #[error("the python3 process {status} {when}")]
    ChildDied { when: &'static str, status: String },
    #[error("protocol error with the python3 process: {0}")]
    Protocol(String),
}

/// One persistent `python3` child running a `--post_process` script.
///
/// Calls are sequential (`&mut self`); parallel trials share one instance
/// behind a mutex or start one each. Dropping it closes the child's stdin
/// and reaps the child (killing it after a short grace period).
pub struct PostProcess {
    script: PathBuf,
    python: String,
    version: String,
    child: Child,
    /// `None` once closed: the child is gone or being shut down.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Set once the child has died; every later call reports it.
    dead: Option<PostProcessError>,
}

impl std::fmt::Debug for PostProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostProcess")
            .field("script", &self.script)
            .field("python", &self.python)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl PostProcess {
    /// Starts `python3` (from `PATH`) on `script`: imports numpy and the
    /// script and checks that it defines a callable `PostProcess`.
    pub fn start(script: &Path) -> Result<Self, PipelineError> {
        Self::start_with(OsStr::new(DEFAULT_PYTHON), script)
    }

    /// [`PostProcess::start`] with an explicit interpreter (a name looked up
    /// on `PATH`, or a path).
    pub fn start_with(python: &OsStr, script: &Path) -> Result<Self, PipelineError> {
        let python_name = python.to_string_lossy().into_owned();
        let fail = |problem: PostProcessError| PipelineError::PostProcess {
            script: script.to_path_buf(),
            problem: Box::new(problem),
        };
        if !script.is_file() {
            return Err(fail(PostProcessError::ScriptMissing));
        }
        let mut child = Command::new(python)
            .arg("-B")
            .arg("-c")
            .arg(DRIVER)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| {
                fail(PostProcessError::PythonNotFound {
                    python: python_name.clone(),
                    source,
                })
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            // Both are piped above, so std always provides them.
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(PostProcessError::Protocol(
                "the child's pipes are missing".into(),
            )));
        };
        let mut this = PostProcess {
            script: script.to_path_buf(),
            python: python_name,
            version: String::new(),
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            dead: None,
        };
        match this.read_ready() {
            Ok(version) => {
                this.version = version;
                Ok(this)
            }
            // The child exits after a start-up error; Drop reaps it.
            Err(problem) => Err(fail(problem)),
        }
    }

    /// The script this child runs.
    pub fn script(&self) -> &Path {
        &self.script
    }

    /// The child's Python and numpy versions, e.g. `Python 3.11.7, numpy 2.4.6`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Applies the script's `PostProcess` to `outputs` and returns its dict,
    /// in the order the dict holds its keys.
    pub fn apply(
        &mut self,
        outputs: &[(String, Tensor)],
    ) -> Result<Vec<(String, Tensor)>, PipelineError> {
        self.call(outputs)
            .map_err(|problem| PipelineError::PostProcess {
                script: self.script.clone(),
                problem: Box::new(problem),
            })
    }

    fn call(
        &mut self,
        outputs: &[(String, Tensor)],
    ) -> Result<Vec<(String, Tensor)>, PostProcessError> {
        if let Some(dead) = &self.dead {
            return Err(PostProcessError::ChildDied {
                when: "earlier",
                status: match dead {
                    PostProcessError::ChildDied { status, .. } => status.clone(),
                    other => format!("is unusable ({other})"),
                },
            });
        }
        let mut request = Vec::new();
        request.push(b'Q');
        push_array_list(&mut request, outputs)?;
        let sent = match self.stdin.as_mut() {
            // One write of the whole request: the pipe is unbuffered.
            Some(stdin) => stdin.write_all(&request),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        if sent.is_err() {
            // The child is gone (broken pipe). Whatever it wrote before
            // dying explains it best; otherwise report its exit status.
            return Err(match self.read_frame_tag() {
                Ok(b'E') => self.read_error(),
                _ => self.died("while qtune was sending the outputs"),
            });
        }
        match self.read_frame_tag() {
            Ok(b'O') => self.read_array_list(),
            Ok(b'E') => Err(self.read_error()),
            Ok(tag) => Err(self.protocol(format!("unexpected reply tag {tag:#04x}"))),
            Err(_) => Err(self.died("during PostProcess")),
        }
    }

    fn read_ready(&mut self) -> Result<String, PostProcessError> {
        match self.read_frame_tag() {
            Ok(b'R') => {
                let bytes = self.read_sized(4, "while starting")?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Ok(b'E') => Err(self.read_error()),
            Ok(tag) => Err(self.protocol(format!("unexpected start-up tag {tag:#04x}"))),
            Err(_) => Err(self.died("while starting")),
        }
    }

    fn read_frame_tag(&mut self) -> io::Result<u8> {
        let mut tag = [0u8; 1];
        self.stdout.read_exact(&mut tag)?;
        Ok(tag[0])
    }

    /// Reads a length-prefixed byte string whose length field is `width`
    /// bytes (4 or 8). A short read means the child died (`when`).
    fn read_sized(
        &mut self,
        width: usize,
        when: &'static str,
    ) -> Result<Vec<u8>, PostProcessError> {
        let mut len = [0u8; 8];
        if self.stdout.read_exact(&mut len[..width]).is_err() {
            return Err(self.died(when));
        }
        let len = u64::from_le_bytes(len);
        // Read through `take` rather than pre-allocating `len` bytes, so a
        // corrupt length cannot make qtune allocate an absurd buffer.
        let mut bytes = Vec::new();
        match (&mut self.stdout).take(len).read_to_end(&mut bytes) {
            Ok(n) if u64::try_from(n).is_ok_and(|n| n == len) => Ok(bytes),
            Ok(_) | Err(_) => Err(self.died(when)),
        }
    }

    fn read_error(&mut self) -> PostProcessError {
        let mut kind = [0u8; 1];
        if self.stdout.read_exact(&mut kind).is_err() {
            return self.died("mid-reply");
        }
        let message = match self.read_sized(4, "mid-reply") {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return e,
        };
        match kind[0] {
            b'N' => PostProcessError::NumpyMissing {
                python: self.python.clone(),
                message,
            },
            b'M' => PostProcessError::ScriptMissing,
            b'I' => PostProcessError::ImportFailed { traceback: message },
            b'F' => PostProcessError::NoPostProcess { found: message },
            b'X' => PostProcessError::Raised { traceback: message },
            b'T' => PostProcessError::BadReturn { found: message },
            b'D' => {
                let (name, dtype) = message.split_once('\n').unwrap_or((&message, "?"));
                PostProcessError::UnsupportedDtype {
                    name: name.to_string(),
                    dtype: dtype.to_string(),
                }
            }
            b'P' => self.protocol(message),
            other => self.protocol(format!("unknown error kind {other:#04x}: {message}")),
        }
    }

    fn read_array_list(&mut self) -> Result<Vec<(String, Tensor)>, PostProcessError> {
        let mut count = [0u8; 4];
        if self.stdout.read_exact(&mut count).is_err() {
            return Err(self.died("mid-reply"));
        }
        let count = u32::from_le_bytes(count);
        let mut out = Vec::new();
        for _ in 0..count {
            let name = self.read_sized(4, "mid-reply")?;
            let name = match String::from_utf8(name) {
                Ok(name) => name,
                Err(_) => return Err(self.protocol("an output name is not UTF-8".into())),
            };
            let payload = self.read_sized(8, "mid-reply")?;
            match npy_from_bytes(&payload) {
                Ok(tensor) => out.push((name, tensor)),
                // The driver checks dtypes first; this is a second line of
                // defence. The reply was read whole, so the child keeps
                // serving.
                Err(NpyError::UnsupportedType { descr }) => {
                    return Err(PostProcessError::UnsupportedDtype { name, dtype: descr });
                }
                Err(e) => {
                    return Err(self.protocol(format!("output `{name}`: {e}")));
                }
            }
        }
        Ok(out)
    }

    /// Marks the child as unusable after a protocol violation (the stream
    /// position is lost) and ends it.
    fn protocol(&mut self, message: String) -> PostProcessError {
        self.shut_down();
        self.dead = Some(PostProcessError::Protocol(message.clone()));
        PostProcessError::Protocol(message)
    }

    /// The child's stdout ended: reap it and describe its exit.
    fn died(&mut self, when: &'static str) -> PostProcessError {
        let status = match self.shut_down() {
            Some(status) => describe(status),
            None => "stopped answering and was killed".to_string(),
        };
        self.dead = Some(PostProcessError::ChildDied {
            when,
            status: status.clone(),
        });
        PostProcessError::ChildDied { when, status }
    }

    /// Closes the child's stdin and waits for it to exit, killing it after
    /// [`EXIT_GRACE`]. Returns its exit status if it exited by itself.
    fn shut_down(&mut self) -> Option<ExitStatus> {
        // Dropping our end of the pipe is what tells the driver to exit.
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) | Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for PostProcess {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("exited ({status})"),
    }
}

fn push_array_list(
    buffer: &mut Vec<u8>,
    arrays: &[(String, Tensor)],
) -> Result<(), PostProcessError> {
    let count = u32::try_from(arrays.len())
        .map_err(|_| PostProcessError::Protocol(format!("{} arrays are too many", arrays.len())))?;
    buffer.extend_from_slice(&count.to_le_bytes());
    for (name, tensor) in arrays {
        let name_len = u32::try_from(name.len())
            .map_err(|_| PostProcessError::Protocol(format!("name `{name}` is too long")))?;
        let payload = npy_to_bytes(tensor).map_err(|source| PostProcessError::Encode {
            name: name.clone(),
            source,
        })?;
        // usize is at most 64 bits on every platform Rust supports.
        let payload_len = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        buffer.extend_from_slice(&name_len.to_le_bytes());
        buffer.extend_from_slice(name.as_bytes());
        buffer.extend_from_slice(&payload_len.to_le_bytes());
        buffer.extend_from_slice(&payload);
    }
    Ok(())
}

/// The largest distance from 1 that `--global_compare_layers` rates may sum
/// to. TPU-MLIR demands `sum(rates) == 1` exactly, which rejects the
/// reasonable `a:0.1,b:0.2,c:0.7` (0.1 + 0.2 + 0.7 is not 1.0 in binary
/// floating point); qtune allows this rounding slack instead.
pub const COMPARE_RATE_SUM_TOLERANCE: f64 = 1e-9;

/// Parses `--global_compare_layers`: `a,b` (every rate 1.0) or
/// `a:0.3,b:0.7` (rates given for all layers or for none, each finite and
/// not negative, summing to 1 within [`COMPARE_RATE_SUM_TOLERANCE`]).
///
/// Items are trimmed; a rate follows the last `:` of an item, so a name may
/// itself contain `:` only when a rate is given (`x:0:1.0` is layer `x:0`).
/// An empty string (the flag's default) gives an empty list: compare the
/// graph outputs.
pub fn parse_compare_layers(s: &str) -> Result<Vec<(String, f64)>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut layers: Vec<(String, Option<f64>)> = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("--global_compare_layers `{s}`: empty layer name"));
        }
        let (name, rate) = match item.rsplit_once(':') {
            Some((name, rate)) => {
                let value: f64 = rate.trim().parse().map_err(|_| {
                    format!("--global_compare_layers `{s}`: rate `{rate}` of layer `{name}` is not a number")
                })?;
                if !value.is_finite() || value < 0.0 {
                    return Err(format!(
                        "--global_compare_layers `{s}`: rate {rate} of layer `{name}` must be a finite number >= 0"
                    ));
                }
                (name.trim(), Some(value))
            }
            None => (item, None),
        };
        if name.is_empty() {
            return Err(format!(
                "--global_compare_layers `{s}`: empty layer name in `{item}`"
            ));
        }
        if layers.iter().any(|(n, _)| n == name) {
            return Err(format!(
                "--global_compare_layers `{s}`: layer `{name}` is listed twice"
            ));
        }
        layers.push((name.to_string(), rate));
    }
    let with_rate = layers.iter().filter(|(_, r)| r.is_some()).count();
    if with_rate == 0 {
        return Ok(layers.into_iter().map(|(n, _)| (n, 1.0)).collect());
    }
    if let Some((name, _)) = layers.iter().find(|(_, r)| r.is_none()) {
        return Err(format!(
            "--global_compare_layers `{s}`: rates must be given for every layer or for none, but `{name}` has none"
        ));
    }
    let rated: Vec<(String, f64)> = layers
        .into_iter()
        .map(|(n, r)| (n, r.unwrap_or(1.0)))
        .collect();
    let sum: f64 = rated.iter().map(|(_, r)| r).sum();
    if (sum - 1.0).abs() > COMPARE_RATE_SUM_TOLERANCE {
        return Err(format!(
            "--global_compare_layers `{s}`: the rates sum to {sum}, expected 1 (within {COMPARE_RATE_SUM_TOLERANCE:e})"
        ));
    }
    Ok(rated)
}

#[cfg(test)]
mod tests;
