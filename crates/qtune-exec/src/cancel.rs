//! Cooperative cancellation of long work (a calibration, a search, a
//! deploy's checks) from another thread, for hosts such as the Python
//! package, whose Ctrl-C should stop the work, not only return control.
//!
//! [`request`] raises a process-wide flag; every graph run checks it before
//! each node ([`checkpoint`]) and, when it is up, unwinds with a
//! [`Cancelled`] payload through [`std::panic::resume_unwind`], which does
//! not run the panic hook (nothing is printed) and passes through rayon's
//! parallel sections to the thread that started the work. Destructors run
//! on the way, so temporary output files are removed and nothing
//! half-written is renamed into place. The host catches the unwind
//! (`catch_unwind`, then [`is_cancelled`] on the payload) and [`clear`]s the
//! flag. The command-line tools never raise it: Ctrl-C ends their process.
//!
//! The flag is process-wide: a request stops every run in the process.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The unwinding payload of cancelled work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// Asks every running graph run to stop at its next node.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Lowers the flag (after the cancelled work has unwound).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// Whether a cancellation is requested.
pub fn is_requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Unwinds with [`Cancelled`] if a cancellation is requested.
#[inline]
pub fn checkpoint() {
    if is_requested() {
        std::panic::resume_unwind(Box::new(Cancelled));
    }
}

/// Whether a `catch_unwind` payload is a cancellation.
pub fn is_cancelled(payload: &(dyn Any + Send)) -> bool {
    payload.is::<Cancelled>()
}
