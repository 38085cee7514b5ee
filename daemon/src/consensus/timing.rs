//! `cluster.timing_scale`: one multiplier for every Raft timer of
//! `node` and the failure detector's (`detect`), in a file of its own so
//! both can use it without importing each other.

/// `cluster.timing_scale` of node.toml: every timer of `node` (but the lease
/// check, which only gets more precise) and the failure detector's, times
/// this. Scaling them all alike keeps the timing argument in `node` intact.
/// Set once, before Raft starts; 1 until then (and in unit tests).
static TIMING_SCALE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Sets the timing scale for this process; later calls change nothing.
pub fn set_timing_scale(scale: u64) {
    let _ = TIMING_SCALE.set(scale.max(1));
}

/// `ms` times the timing scale.
#[must_use]
pub fn scaled_ms(ms: u64) -> u64 {
    ms.saturating_mul(TIMING_SCALE.get().copied().unwrap_or(1))
}

/// [`scaled_ms`] as a duration.
#[must_use]
pub fn scaled(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(scaled_ms(ms))
}
