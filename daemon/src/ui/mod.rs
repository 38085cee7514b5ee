//! # Layout
//! What operators type and see. Built on `api::client` and `api::dto` only.
//!
//! - `cli`: the `tandem` command line (clap), its exit codes and output.
//! - `logs`: `tandem logs --merge`, several nodes' logs as one story.
//! - `top`: `tandem top`, the ratatui console over every member's API.

pub mod cli;
pub mod logs;
pub mod top;
