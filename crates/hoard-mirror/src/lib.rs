//! Fetching from upstream indexes, for mirror repositories.
//!
//! This crate owns: the upstream HTTP client ([`UpstreamClient`]: TLS,
//! timeouts, bounded retries with backoff, bounded redirects, gzip);
//! node-local page freshness ([`Freshness`]: TTL, validators, negative
//! caching); collapsing concurrent fills of one key into one
//! ([`SingleFlight`]); and what an upstream PyPI page or npm packument adds
//! to a mirror's index ([`plan_pypi_refresh`], [`plan_npm_refresh`]). What
//! is recorded goes through the server's writer, like every other write:
//! this crate never touches the index.

mod client;
mod flight;
mod freshness;
mod npm;
mod pypi;

pub use client::{download_limit, Page, PageResponse, UpstreamClient, UpstreamError, Validators};
pub use flight::SingleFlight;
pub use freshness::{Freshness, PageState};
pub use npm::{plan_npm_refresh, KnownNpmVersion, NpmRefresh};
pub use pypi::{plan_pypi_refresh, KnownFile, PypiRefresh};
