//! The fuzz targets' inputs, replayed in `cargo test` (issue 8): every file
//! of `fuzz/corpus/<target>/` (seeds from real captures and the repo's
//! config files) and `fuzz/regressions/<target>/` (every input that once
//! crashed a target) goes through the same body the target runs,
//! `tandem::fuzzing::<target>`. A failure names the file.

use std::path::{Path, PathBuf};

use tandem::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs every input of `target`; returns how many ran.
fn replay(target: &str) -> usize {
    let body = TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map_or_else(|| panic!("no fuzz target {target}"), |(_, f)| *f);
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is empty: the target has no seeds"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target} fails on {} input(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
    corpus.len() + regressions.len()
}

#[test]
fn every_target_is_replayed_here() {
    let mut names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    let dir = fuzz_dir().join("fuzz_targets");
    let mut on_disk: Vec<String> = files(&dir)
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    on_disk.sort();
    assert_eq!(
        names, on_disk,
        "fuzz/fuzz_targets and tandem::fuzzing::TARGETS differ"
    );
}

#[test]
fn dhcp_decode_handle() {
    replay("dhcp_decode_handle");
}

#[test]
fn tftp_packet() {
    replay("tftp_packet");
}

#[test]
fn tftp_session() {
    replay("tftp_session");
}

#[test]
fn raft_frame() {
    replay("raft_frame");
}

#[test]
fn node_config() {
    replay("node_config");
}

#[test]
fn service_config() {
    replay("service_config");
}

/// The snapshot seed is one the decoder accepts (so the fuzzer starts from
/// the accepting path), and the bomb of 65 MiB of JSON in 2.5 KiB of zstd is
/// refused by the decoder itself, not only by the target's check.
#[test]
fn snapshot_seed_decodes_and_the_bomb_is_refused() {
    use tandem::consensus::TypeConfig;
    use tandem::store::SnapshotPayload;

    let seed = std::fs::read(fuzz_dir().join("corpus/raft_frame/snapshot-lab")).expect("seed");
    let p = SnapshotPayload::<TypeConfig>::decode(&seed).expect("the seed snapshot decodes");
    assert_eq!(p.state.leases.len(), 2);
    let bomb = std::fs::read(fuzz_dir().join("regressions/raft_frame/zstd-bomb-65mib-of-json"))
        .expect("bomb");
    assert!(bomb.len() < 4096);
    let err = SnapshotPayload::<TypeConfig>::decode(&bomb).expect_err("the bomb is refused");
    assert!(err.to_string().contains("larger than"), "{err}");
}
