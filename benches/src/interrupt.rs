//! Ctrl-C handling. SIGINT, SIGTERM and SIGHUP only set a flag; every wait
//! in the benches calls [`check`], which turns the flag into an error. The
//! error unwinds to `main` like any other, so the lab's `Drop` kills the
//! servers and clients and deletes the namespaces.
//!
//! The lab's processes lead their own process groups, so a Ctrl-C typed at
//! the terminal reaches only this process, never them directly.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only performs
        // an atomic store, which is async-signal-safe; the sigaction struct
        // is fully initialised (zeroed, then the fields we use).
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            // SA_RESTART: blocking calls elsewhere (waitpid, reads) resume
            // instead of failing with EINTR; the waits poll the flag anyway.
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(sig, &raw const action, std::ptr::null_mut())
        };
        if rc != 0 {
            bail!(
                "installing the handler for signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Fails once a signal has arrived.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}
