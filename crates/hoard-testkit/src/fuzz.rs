//! Property and fuzz tests on the stable toolchain: a proptest strategy
//! runs a thousand cases in CI, or for a time budget in the long run
//! (`HOARD_FUZZ_SECS`, see `tests/fuzz-long.sh`). A failing input is saved
//! in `<crate>/tests/regressions/<target>.txt` and replayed first on every
//! later run: committed, each crash the fuzzer found stays a regression
//! test.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs `test` on values of `strategy`: `HOARD_FUZZ_CASES` cases (1000 by
/// default), or, with `HOARD_FUZZ_SECS`, rounds of 10,000 until that many
/// seconds have passed. `crate_dir` is the crate's
/// `env!("CARGO_MANIFEST_DIR")`. Panics with the shrunk failing input.
pub fn fuzz<S>(
    crate_dir: &str,
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let path: &'static str =
        Box::leak(format!("{crate_dir}/tests/regressions/{target}.txt").into_boxed_str());
    let budget = env_u64("HOARD_FUZZ_SECS").map(Duration::from_secs);
    let cases = env_u64("HOARD_FUZZ_CASES").unwrap_or(1000) as u32;
    let started = Instant::now();
    let mut total = 0u64;
    loop {
        let round = if budget.is_some() { 10_000 } else { cases };
        let mut runner = TestRunner::new(Config {
            cases: round,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz target {target} failed (saved to {path}): {e}");
        }
        total += u64::from(round);
        if budget.is_none_or(|b| started.elapsed() >= b) {
            break;
        }
    }
    eprintln!(
        "fuzz {target}: {total} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Bytes of `base` with a few of them changed, cut or duplicated: inputs
/// near a valid one reach deeper into a parser than random bytes do.
pub fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let len = base.len().max(1);
    proptest::collection::vec((0..len, any::<u8>(), 0u8..4), 0..8).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (at, byte, kind) in edits {
            if bytes.is_empty() {
                bytes.push(byte);
                continue;
            }
            let at = at % bytes.len();
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.truncate(at),
                2 => bytes.insert(at, byte),
                _ => {
                    let tail = bytes[at..].to_vec();
                    bytes.extend_from_slice(&tail[..tail.len().min(64)]);
                }
            }
        }
        bytes
    })
}
