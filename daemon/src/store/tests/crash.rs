//! Crash consistency, in the style of redb's `tests/crash_consistency.rs`
//! but with a real process kill: a child process (this test binary re-run
//! in the writer role) appends and applies in a loop, printing every index
//! whose append was acknowledged as flushed; the parent SIGKILLs it at a
//! random moment, reopens the store and checks that
//!
//! - the database opens cleanly;
//! - every acknowledged index is present, with a valid checksum, and the
//!   log has no hole;
//! - the state machine is at or behind the log, and its tables equal a
//!   replay of the log up to its `last_applied` (it may lose non-durable
//!   applies, never mix them).
//!
//! The parent does this for several rounds on the same directory, and each
//! new writer first re-applies what the crash lost, as openraft would.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{EntryOf, VoteOf};
use openraft::EntryPayload;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{append, apply, grant, C};
use crate::model::State;
use crate::store::Store;

/// Set (to the data dir) in the child's environment: selects the writer role.
const WRITER_ENV: &str = "TANDEM_CRASH_WRITER";
/// The writer stops by itself after this long, should the parent not kill it.
const WRITER_LIMIT: Duration = Duration::from_secs(30);

#[test]
#[ignore = "the writer role of crash_leaves_every_acknowledged_entry; it runs it"]
fn crash_writer_role() {
    let dir = std::env::var(WRITER_ENV).expect("only run by crash_leaves_every_acknowledged_entry");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(writer(std::path::PathBuf::from(dir)));
}

async fn writer(dir: std::path::PathBuf) {
    let store = Store::<C>::open(&dir).expect("writer: open");
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let last = ls
        .get_log_state()
        .await
        .unwrap()
        .last_log_id
        .map_or(0, |l| l.index);
    let applied = sm.applied_state().await.unwrap().0.map_or(0, |l| l.index);
    // Recovery: re-apply what the last crash lost, as openraft does from `committed`.
    if applied < last {
        let unapplied = ls
            .get_log_reader()
            .await
            .try_get_log_entries(applied + 1..=last)
            .await
            .unwrap();
        apply(&mut sm, unapplied).await;
    }
    let term = ls
        .get_log_reader()
        .await
        .read_vote()
        .await
        .unwrap()
        .map_or(0, |v| v.leader_id.term)
        + 1;
    ls.save_vote(&VoteOf::<C>::new_committed(term, 1))
        .await
        .unwrap();

    let mut rng = StdRng::seed_from_u64(u64::from(std::process::id()));
    let mut next = last + 1;
    let deadline = Instant::now() + WRITER_LIMIT;
    while Instant::now() < deadline {
        let n = rng.random_range(1..=16);
        let entries: Vec<EntryOf<C>> = (next..next + n)
            .map(|i| {
                grant(
                    term,
                    i,
                    Ipv4Addr::new(10, 0, rng.random_range(0..2), rng.random_range(1..=200)),
                    rng.random_range(1..=64),
                )
            })
            .collect();
        append(&mut ls, entries.clone()).await;
        // Acknowledged: the flush callback fired. println! goes through a
        // line-buffered stdout, so the parent sees the line at once.
        println!("acked {}", next + n - 1);
        next += n;
        apply(&mut sm, entries).await;
    }
}

#[test]
fn crash_leaves_every_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let name = format!(
        "{}::crash_writer_role",
        module_path!().split_once("::").unwrap().1
    );
    let mut rng = StdRng::seed_from_u64(0x7a6d);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut durable = 0;
    for round in 1..=4 {
        println!("=== round {round}: start writer");
        let mut child = Process::new(&exe)
            .args([
                "--exact",
                &name,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(i) = line.strip_prefix("acked ") {
                    let _ = tx.send(i.parse::<u64>().unwrap());
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("writer acknowledged nothing");
        assert!(
            first > durable,
            "round {round}: writer restarted at {first}, before {durable}"
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(20..600)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: writer ended on its own before the kill"
        );
        reader.join().unwrap();
        let acked = rx.try_iter().fold(first, u64::max);
        println!("=== round {round}: killed after ack of {acked}; reopening");
        rt.block_on(check_after_crash(dir.path(), acked));
        durable = acked;
    }
}

async fn check_after_crash(dir: &std::path::Path, acked: u64) {
    let store = Store::<C>::open(dir).expect("store does not reopen after SIGKILL");
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let state = ls.get_log_state().await.unwrap();
    let last = state.last_log_id.expect("empty log after crash").index;
    assert!(
        last >= acked,
        "acknowledged index {acked} lost: log ends at {last}"
    );
    // Reading verifies every checksum and that there is no hole.
    let entries = ls
        .get_log_reader()
        .await
        .try_get_log_entries(1..=last)
        .await
        .expect("log unreadable after crash");
    assert_eq!(entries.len() as u64, last, "log has a hole");
    assert!(
        ls.get_log_reader()
            .await
            .read_vote()
            .await
            .unwrap()
            .is_some(),
        "vote lost"
    );

    let applied = sm.applied_state().await.unwrap().0.map_or(0, |l| l.index);
    assert!(
        applied <= last,
        "state machine at {applied} is ahead of the log at {last}"
    );
    let mut replay = State::default();
    for e in &entries[..applied as usize] {
        if let EntryPayload::Normal(cmd) = &e.payload {
            replay.apply(cmd);
        }
    }
    let view = store.view();
    assert_eq!(view.applied_index(), Some(applied).filter(|a| *a > 0));
    assert!(
        view.read(|s| *s == replay),
        "state at {applied} is not the replay of the log up to it"
    );
    println!(
        "    log ends at {last}, applied {applied}, {} leases",
        replay.leases.len()
    );
}
