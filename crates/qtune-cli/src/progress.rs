//! The progress bar the tools draw on stderr, and where the library's
//! console lines go (stdout, unless `--quiet`).

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qtune_calibrate::Progress;

/// A progress bar on stderr, one per stage; hidden when stderr is not a
/// terminal or with --quiet.
pub(crate) struct Bar {
    pub(crate) visible: bool,
    pub(crate) bar: Mutex<Option<ProgressBar>>,
    /// Console lines are not printed.
    pub(crate) quiet: bool,
}

impl Bar {
    /// The bar of a command run with `--quiet` or not.
    pub(crate) fn new(quiet: bool) -> Self {
        Bar {
            visible: !quiet && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            quiet,
        }
    }
}

impl qtune::Reporter for Bar {
    fn line(&self, line: &str) {
        if !self.quiet {
            println!("{line}");
        }
    }
    fn warning(&self, line: &str) {
        eprintln!("{line}");
    }
    fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }
}

/// Warnings on stderr, nothing else (no progress, no console lines).
pub(crate) struct Stderr;

impl Progress for Stderr {}

impl qtune::Reporter for Stderr {
    fn warning(&self, line: &str) {
        eprintln!("{line}");
    }
}

impl Progress for Bar {
    fn start(&self, stage: &str, total: usize) {
        let target = if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(u64::try_from(total).unwrap_or(0)), target);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed} (ETA {eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(stage.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }
    fn advance(&self, n: usize) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(u64::try_from(n).unwrap_or(0));
        }
    }
    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}
