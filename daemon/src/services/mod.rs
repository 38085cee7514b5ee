//! # Layout
//! The responders that run on the leader only, on the VIP.
//!
//! - `dhcp`: socket loop (raw/UDP) | pure handler `(request, view, now) -> Action` | pure allocator.
//! - `tftp`: socket loop | per-transfer session state machine | artifact file access.
//! - `vip`: adding/removing the VIP and gratuitous ARP.

pub mod dhcp;
pub mod link;
pub mod tftp;
pub mod vip;
