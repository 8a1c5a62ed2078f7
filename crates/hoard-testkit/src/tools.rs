//! Locating the workspace, the `hoard` binary and the Python tools (twine,
//! uv, python3).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (this package is `crates/hoard-testkit` in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/hoard-testkit is two levels below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the
/// workspace root when relative), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The `hoard` binary: `HOARD_BIN` if set, else built once per test process
/// with `cargo build -p hoard --bin hoard`.
pub fn hoard_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("HOARD_BIN").filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "HOARD_BIN={} is not a file", bin.display());
            return bin;
        }
        // Build with the same package selection and targets as `cargo test
        // --workspace`, so that dependencies get the same unified features
        // and are reused, not compiled a second time just for the binary.
        let status = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--bins", "--tests"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --workspace --bins --tests failed"
        );
        let bin = target_dir().join("debug").join("hoard");
        assert!(bin.is_file(), "no binary at {}", bin.display());
        bin
    })
}

/// `promtool` (Debian's `prometheus` package), installed on first use
/// where it is missing.
pub fn promtool() -> &'static Path {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| apt_tool("promtool", "prometheus"))
}

/// Headless `chromium` (Debian's package), installed on first use where
/// it is missing.
pub fn chromium() -> &'static Path {
    static CHROMIUM: OnceLock<PathBuf> = OnceLock::new();
    CHROMIUM.get_or_init(|| apt_tool("chromium", "chromium"))
}

/// `tests/tools/apt-tool.sh COMMAND PACKAGE`: the command, from Debian's
/// package where it is missing.
fn apt_tool(command: &str, package: &str) -> PathBuf {
    let script = workspace_root().join("tests/tools/apt-tool.sh");
    let status = Command::new("bash")
        .arg(&script)
        .args([command, package])
        .status()
        .expect("run tests/tools/apt-tool.sh");
    assert!(
        status.success(),
        "{} {command} {package} failed",
        script.display()
    );
    PathBuf::from(command)
}

/// Paths to the Python tools used by the tests.
#[derive(Debug)]
pub struct PyTools {
    /// The tool venv (`<target>/test-tools/venv`).
    pub venv: PathBuf,
    pub twine: PathBuf,
    pub uv: PathBuf,
    /// A python3 to make fresh venvs with (`python3 -m venv DIR`).
    pub python3: PathBuf,
}

/// The Python tools, set up once (per machine: `tests/tools/setup.sh` is
/// idempotent, and an exclusive `flock` keeps parallel test processes from
/// racing on it).
pub fn py_tools() -> &'static PyTools {
    static TOOLS: OnceLock<PyTools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let root = target_dir().join("test-tools");
        let venv = root.join("venv");
        let tools = PyTools {
            twine: venv.join("bin").join("twine"),
            uv: venv.join("bin").join("uv"),
            python3: venv.join("bin").join("python3"),
            venv: venv.clone(),
        };
        let ready = || tools.twine.is_file() && tools.uv.is_file() && tools.python3.exists();
        set_up_once("setup.sh", &venv, ready);
        tools
    })
}

/// Runs `tests/tools/{script} VENV` unless `ready()`: once per machine,
/// as the scripts are idempotent and an exclusive `flock` on
/// `test-tools/setup.lock` keeps parallel test processes from racing.
pub(crate) fn set_up_once(script: &str, venv: &Path, ready: impl Fn() -> bool) {
    if ready() {
        return;
    }
    let root = target_dir().join("test-tools");
    fs::create_dir_all(&root).expect("create test-tools dir");
    let lock = File::create(root.join("setup.lock")).expect("create setup.lock");
    // SAFETY: flock on a file descriptor that we own and keep open.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock setup.lock");
    if !ready() {
        let path = workspace_root().join("tests/tools").join(script);
        let status = Command::new("bash")
            .arg(&path)
            .arg(venv)
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
        assert!(status.success(), "{} failed", path.display());
    }
    // The lock is released when `lock` is closed.
    drop(lock);
    assert!(ready(), "{script} did not set up {}", venv.display());
}

/// The bin directory of a venv with devpi-server 6 (`devpi-init`,
/// `devpi-server`, `devpi-export`), set up once by
/// `tests/tools/setup-devpi.sh` under the same lock as [`py_tools`].
pub fn devpi_bin() -> &'static Path {
    static DEVPI: OnceLock<PathBuf> = OnceLock::new();
    DEVPI.get_or_init(|| {
        let root = target_dir().join("test-tools");
        let venv = root.join("devpi");
        let bin = venv.join("bin");
        let ready = || {
            ["devpi-init", "devpi-server", "devpi-export"]
                .iter()
                .all(|tool| bin.join(tool).is_file())
        };
        set_up_once("setup-devpi.sh", &venv, ready);
        bin
    })
}

/// Remove from `cmd` every environment variable that could send a Python
/// client anywhere but the node under test (package indexes, find-links,
/// proxies, config files, CA bundles), and set a few that keep the clients quiet and
/// non-interactive.
pub fn isolate_python_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let upper = key.to_ascii_uppercase();
        if upper.starts_with("PIP_")
            || upper.starts_with("UV_")
            || upper.starts_with("TWINE_")
            || upper.starts_with("PYTHON")
            || upper.ends_with("_PROXY")
            || upper == "VIRTUAL_ENV"
            || upper == "CONDA_PREFIX"
            // requests lets these override a client's own CA option
            // (twine --cert), so a test could not choose its CA.
            || upper == "REQUESTS_CA_BUNDLE"
            || upper == "CURL_CA_BUNDLE"
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
        .env("PYTHONDONTWRITEBYTECODE", "1")
}
