//! # Layout
//! The responders that run on the leader only, on the VIP.
//!
//! - `dhcp`: socket loop (raw/UDP) | pure handler `(request, view, now) -> Action` | pure allocator.
//! - `tftp`: socket loop | per-transfer session state machine | artifact file access.
//! - `http`: HTTP boot on the VIP: artifacts by name (ranges, `ETag`s) and iPXE
//!   scripts rendered from boot profiles.
//! - `artifacts`: what the HTTP server looks artifacts up through.
//! - `link`: layer-2 frames and sockets on the service interface (raw sends to
//!   clients without an address, gratuitous ARP, the ARP receiver).
//! - `artifacts`: the content-addressed artifact store and its replication
//!   (unlike the responders, it runs on every node).
//! - `vip`: adding/removing the VIP, gratuitous ARP and ARP duty.

pub mod artifacts;
pub mod dhcp;
pub mod http;
pub mod link;
pub mod tftp;
pub mod vip;
