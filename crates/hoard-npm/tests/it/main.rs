//! Tests of hoard-npm's public API, against what npm 10.8.2 really sends
//! (`tests/fixtures/`, captured from the real client).

mod fixtures;
mod fuzz;
mod packument;
mod routes;
mod search_login;

use std::path::PathBuf;

pub fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn name(s: &str) -> hoard_npm::PackageName {
    hoard_npm::PackageName::parse(s).unwrap()
}
