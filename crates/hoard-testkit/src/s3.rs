//! A real S3-compatible service for tests: moto's server (from PyPI, set
//! up once by `tests/tools/setup-moto.sh`) on a loopback port, with
//! buckets that tests create, list and cut off.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::tools::{set_up_once, target_dir};

/// Short timeouts for tests, where the service is on loopback and a hung
/// one should fail an upload within seconds.
pub const TEST_TIMEOUTS: &str = ", timeout_secs = 5, retries = 1";

/// The credentials that tests give both the service and hoard.
pub const ACCESS_KEY: &str = "hoard-test-key";
pub const SECRET_KEY: &str = "hoard-test-secret";

/// The venv's `moto_server`, set up once under the tools' lock.
pub fn moto_server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let venv = target_dir().join("test-tools").join("moto");
        let bin = venv.join("bin").join("moto_server");
        set_up_once("setup-moto.sh", &venv, || bin.is_file());
        bin
    })
}

/// The environment variable that runs every node of a test run with its
/// blobs in a bucket: `HOARD_TEST_BLOBS=s3 cargo test ...`.
pub const SUITE_BLOBS_ENV: &str = "HOARD_TEST_BLOBS";

/// With `HOARD_TEST_BLOBS=s3`, `opts` with its blobs in a bucket of its own
/// on one moto server shared by the whole test run; otherwise `opts`.
pub fn with_suite_blobs(mut opts: crate::NodeOpts) -> crate::NodeOpts {
    let wanted = std::env::var(SUITE_BLOBS_ENV).is_ok_and(|v| v == "s3");
    if !wanted || opts.extra_config.iter().any(|l| l.starts_with("blobs")) {
        return opts;
    }
    let server = suite_server();
    let bucket = crate::unique("suite-bucket-");
    server.create_bucket(&bucket);
    opts.extra_config
        .insert(0, server.blobs_config(&bucket, ""));
    for (k, v) in S3Server::credentials() {
        opts = opts.env(k, v);
    }
    opts
}

/// The moto server of a whole test run. It is started from a thread that
/// lives as long as the process, with a parent-death signal, so that it
/// dies with the test binary (a static is never dropped).
fn suite_server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(S3Server::start_with_parent_death());
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the moto server's thread")
    })
}

/// One moto server process, killed on drop.
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        S3Server::spawn(false)
    }

    /// A server that gets SIGKILL when the thread that started it ends.
    fn start_with_parent_death() -> S3Server {
        S3Server::spawn(true)
    }

    fn spawn(die_with_parent: bool) -> S3Server {
        let bin = moto_server_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("moto.log");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let out = File::create(&log).expect("create moto.log");
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out);
        if die_with_parent {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl is async-signal-safe; nothing else runs here.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start moto_server");
        let server = S3Server {
            child: Some(child),
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = crate::cluster::client();
        while http.get(server.endpoint()).send().is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `http://127.0.0.1:{port}`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates a bucket (path-style, as hoard addresses it).
    pub fn create_bucket(&self, bucket: &str) {
        let resp = crate::cluster::client()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .expect("create bucket");
        assert!(
            resp.status().is_success(),
            "create bucket {bucket}: {resp:?}"
        );
    }

    /// Every key in `bucket` with its size (ListObjectsV2, all pages).
    pub fn objects(&self, bucket: &str) -> Vec<(String, u64)> {
        let http = crate::cluster::client();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{bucket}?list-type=2", self.endpoint());
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            let body = http
                .get(&url)
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.text())
                .expect("list bucket");
            for object in body.split("<Contents>").skip(1) {
                let key = between(object, "<Key>", "</Key>").expect("Key");
                let size = between(object, "<Size>", "</Size>")
                    .and_then(|s| s.parse().ok())
                    .expect("Size");
                out.push((key.to_owned(), size));
            }
            token = between(&body, "<NextContinuationToken>", "</NextContinuationToken>")
                .map(str::to_owned);
            if token.is_none() {
                return out;
            }
        }
    }

    /// Freezes the server (SIGSTOP): connections are accepted and never
    /// answered, as when a service hangs.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("moto_server runs");
        // SAFETY: a signal to our own child process.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal moto_server");
    }

    /// The `[blobs]` line of a node that keeps its blobs in `bucket`, for
    /// `NodeOpts::extra_config`; `extra` adds keys (`, retries = 1`).
    pub fn blobs_config(&self, bucket: &str, extra: &str) -> String {
        format!(
            "blobs = {{ kind = \"s3\", bucket = \"{bucket}\", endpoint = \"{}\"{extra} }}",
            self.endpoint()
        )
    }

    /// The environment that hands hoard the test credentials.
    pub fn credentials() -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process must go on to die of SIGKILL anyway.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
