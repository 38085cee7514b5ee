//! # Layout
//! The DHCP (IPv4) responder.
//!
//! - [`handler`]: the pure decision `(request, state view, offers, now) -> Action`.
//! - [`allocator`]: the outstanding-offer table and the free-address picker.
//! - [`options`]: reply-option helpers (boot file choice, iPXE detection, size trimming).

pub mod allocator;
pub mod handler;
pub mod options;
pub mod server;
