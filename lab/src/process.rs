//! Processes inside lab namespaces: long-running ones ([`LabProcess`]) and
//! one-shot commands with a timeout ([`exec_in`]).
//!
//! Every process is started as `ip netns exec NS PROGRAM ARGS..`. `ip` enters
//! the namespace and then `execvp`s the program in the same process, so the
//! PID we record is the program's own PID. Each process leads its own process
//! group, so a kill also reaches whatever it forked.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often waits poll a child. Short, because tests time failovers in
/// milliseconds; cheap, because `try_wait` is one `waitpid(WNOHANG)`.
const POLL: Duration = Duration::from_millis(10);

/// A long-running process in a lab namespace. Clones share one process; the
/// [`crate::Lab`] that started it keeps a clone and kills it on drop.
///
/// Invariant: the child is reaped only through the shared `Mutex<Child>`. So
/// until `try_wait` has reported an exit, the PID (and the process group of
/// the same number) still belongs to our child, at worst as a zombie, and a
/// signal can never hit an unrelated process that reused the PID.
#[derive(Clone, Debug)]
pub struct LabProcess {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ns: String,
    program: String,
    pid: u32,
    child: Mutex<Child>,
}

impl LabProcess {
    /// The PID of the program itself (not of a wrapper).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The namespace it runs in.
    #[must_use]
    pub fn ns(&self) -> &str {
        &self.inner.ns
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        // A panic while holding the lock cannot leave a Child half-updated.
        self.inner
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Its exit status, if it has exited (reaping it if needed).
    #[must_use]
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    #[must_use]
    pub fn is_running(&self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `sig` to the process (not its group). Returns `false` if it had
    /// already exited, so nothing was sent.
    pub fn signal(&self, sig: i32) -> Result<bool> {
        let mut child = self.child();
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        // Holding the lock means nobody can reap the child between the check
        // above and the kill below, so the PID is still ours (see the invariant).
        signal_pid(self.inner.pid.cast_signed(), sig).with_context(|| {
            format!("signalling {} (pid {})", self.inner.program, self.inner.pid)
        })?;
        Ok(true)
    }

    /// Waits up to `timeout` for the process to exit.
    #[must_use]
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGKILLs the whole process group and reaps the process. Idempotent.
    #[allow(
        clippy::must_use_candidate,
        reason = "called for its effect; the status is a bonus"
    )]
    pub fn kill_and_wait(&self) -> Option<ExitStatus> {
        let mut child = self.child();
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // The process leads its own group (pgid == pid), so this also takes
        // down anything it forked that stayed in the group.
        let _ = signal_pid(-self.inner.pid.cast_signed(), libc::SIGKILL);
        child.wait().ok()
    }
}

/// kill(2), with errno turned into an error.
pub(crate) fn signal_pid(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; callers make sure
    // the PID is theirs (see `LabProcess`).
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn netns_command<S: AsRef<OsStr>>(ns: &str, program: impl AsRef<OsStr>, args: &[S]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
    // Own process group: a timeout or Drop kills children too, and a Ctrl-C
    // aimed at the test runner does not race the lab's own cleanup.
    cmd.process_group(0);
    cmd
}

/// Starts `program args..` inside `ns`, with stdout and stderr appended to `log`.
pub fn spawn_in<S: AsRef<OsStr>>(
    ns: &str,
    program: impl AsRef<OsStr>,
    args: &[S],
    log: &Path,
) -> Result<LabProcess> {
    spawn_with_env(ns, program, args, log, &[])
}

pub(crate) fn spawn_with_env<S: AsRef<OsStr>>(
    ns: &str,
    program: impl AsRef<OsStr>,
    args: &[S],
    log: &Path,
    env: &[(&str, &str)],
) -> Result<LabProcess> {
    let program_name = program.as_ref().to_string_lossy().into_owned();
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = netns_command(ns, &program, args);
    cmd.stdout(out).stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {program_name} in {ns}"))?;
    Ok(LabProcess {
        inner: Arc::new(Inner {
            ns: ns.to_owned(),
            program: program_name,
            pid: child.id(),
            child: Mutex::new(child),
        }),
    })
}

/// Runs `program args..` inside `ns` to completion and returns its output.
/// If it is still running after `timeout`, its process group is killed (SIGKILL) and
/// the result is an error that carries whatever it had printed.
pub fn exec_in<S: AsRef<OsStr>>(
    ns: &str,
    program: impl AsRef<OsStr>,
    args: &[S],
    timeout: Duration,
) -> Result<Output> {
    let shown = format!(
        "`{}{}` in {ns}",
        program.as_ref().to_string_lossy(),
        args.iter().fold(String::new(), |s, a| s
            + " "
            + &a.as_ref().to_string_lossy())
    );
    let mut cmd = netns_command(ns, &program, args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    let stdout = Collector::start(child.stdout.take());
    let stderr = Collector::start(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = signal_pid(-child.id().cast_signed(), libc::SIGKILL);
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    // A grandchild that left our process group may still hold the pipes open;
    // give the readers a moment, then take what they have rather than hang.
    let stdout = stdout.finish(Duration::from_millis(500));
    let stderr = stderr.finish(Duration::from_millis(500));
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{shown} timed out after {timeout:?} and was killed\n--- stdout:\n{}\n--- stderr:\n{}",
            String::from_utf8_lossy(&stdout).trim_end(),
            String::from_utf8_lossy(&stderr).trim_end()
        ),
    }
}

/// Describes a finished command for an error message: status, stdout, stderr.
#[must_use]
pub fn describe_output(out: &Output) -> String {
    let status = match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => out.status.to_string(),
    };
    format!(
        "{status}\n--- stdout:\n{}\n--- stderr:\n{}",
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Reads a pipe to its end on a helper thread, so a chatty child never blocks
/// on a full pipe while we poll it.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Option<thread::JoinHandle<()>>,
}

impl Collector {
    fn start(pipe: Option<impl Read + Send + 'static>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let done = pipe.map(|mut pipe| {
            let buf = Arc::clone(&buf);
            thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&chunk[..n]);
                }
            })
        });
        Collector { buf, done }
    }

    fn finish(self, grace: Duration) -> Vec<u8> {
        if let Some(handle) = self.done {
            let deadline = Instant::now() + grace;
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(POLL);
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
            // Otherwise the reader thread is detached; it ends when the pipe closes.
        }
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
