//! The placement simulator behind `cairn simulate`.
//!
//! Owns the simulated cluster (nodes in zones, chunks, failures) and the
//! measurements; does not own placement: every chunk is placed by
//! [`cairn_meta::placement::Placer`], the code meta runs, so the figures are
//! those of the real schemes. Called by the CLI.
//!
//! Read first: [`SimConfig`], [`simulate`], [`SimReport`]; [`plot::svg`]
//! draws a report. Deterministic for a seed; no I/O.
//!
//! What is measured, per scheme: for `k` simultaneous node failures (k
//! distinct nodes drawn uniformly, many trials) the probability that some
//! chunk loses every copy and the expected fraction of chunks lost; load
//! balance (max and min over mean of chunks per node); and repair
//! parallelism, the number of distinct other nodes holding copies of a
//! failed node's chunks (all of them can take part in its repair).

pub mod plot;
pub mod prefetch;
mod simulate;

pub use simulate::{
    closed_form_random, simulate, FailureResult, LoadBalance, RepairParallelism, SchemeResult,
    SimConfig, SimReport,
};
