//! The real npm client against a node: a node config with npm
//! repositories and a login user, an isolated npm environment (its own
//! userconfig, globalconfig, cache and HOME, pointed at the node only),
//! test packages, hand-built publish documents (the shape `npm publish`
//! sends) for the bad-input tests, and `npm login` driven through a pty.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::{Node, NodeOpts, RawResponse};

/// The npm repository of [`npm_opts`].
pub const NPM_REPO: &str = "npm";
/// A second npm repository, for tokens that grant the wrong repository.
pub const OTHER_REPO: &str = "npm-other";
/// The configured login user of [`npm_opts`] and their password.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct-horse-battery";

/// How long one npm command may take before the test fails (it is killed).
pub const NPM_TIMEOUT: Duration = Duration::from_secs(60);

/// A node with the npm repositories [`NPM_REPO`] (`allow_unpublish` as
/// given) and [`OTHER_REPO`], both with anonymous reads, and the user
/// [`USER`] for `npm login`.
pub fn npm_opts(allow_unpublish: bool) -> NodeOpts {
    let mut opts = NodeOpts::default();
    for (name, unpublish) in [(NPM_REPO, allow_unpublish), (OTHER_REPO, false)] {
        opts = opts
            .config("\n[[repos]]")
            .config(format!("name = {name:?}"))
            .config("format = \"npm\"")
            .config("anonymous_read = true")
            .config(format!("allow_unpublish = {unpublish}"));
    }
    opts.config("\n[[users]]")
        .config(format!("name = {USER:?}"))
        .config(format!(
            "password_sha256 = {:?}",
            crate::sha256_hex(PASSWORD.as_bytes())
        ))
}

/// `http://127.0.0.1:PORT/npm/`
pub fn registry_url(node: &Node) -> String {
    format!("{}/{NPM_REPO}/", node.url())
}

/// The registry at a serial: `http://127.0.0.1:PORT/npm/+at/{serial}/`.
pub fn registry_at(node: &Node, serial: u64) -> String {
    format!("{}/{NPM_REPO}/+at/{serial}/", node.url())
}

/// `node -p EXPR` in `project` (so `require` resolves its node_modules):
/// what it printed, trimmed. Panics, with node's stderr, if it fails.
pub fn node_eval(project: &Path, expr: &str) -> String {
    let out = Command::new("node")
        .arg("-p")
        .arg(expr)
        .current_dir(project)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "node -p {expr} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `sha512-<base64>`: npm's `integrity` of `bytes`.
pub fn sri_sha512(bytes: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes))
    )
}

/// Hex sha1 of `bytes` (npm's `shasum`). A plain implementation of
/// FIPS 180-4, so that the harness needs no extra crate.
pub fn sha1_hex(bytes: &[u8]) -> String {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = bytes.to_vec();
    let bit_len = (bytes.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().fold(String::new(), |mut s, x| {
        write!(s, "{x:08x}").unwrap();
        s
    })
}

/// What one npm command did.
#[derive(Debug)]
pub struct NpmOutput {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl NpmOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout and stderr together, for looking for a message.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for NpmOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// An npm environment of its own: a temp dir with the userconfig (the
/// registry and, once set, a token), an empty globalconfig, the cache and
/// HOME. npm only ever sees its registry URL (a node's, or a fixture's).
pub struct Npm {
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT/npm/`
    pub registry: String,
    /// `//127.0.0.1:PORT/npm/`: the key prefix of the token line.
    pub nerf: String,
    cache: u32,
    projects: u32,
}

impl Npm {
    /// A fresh environment for `node`'s npm repository, without a token.
    pub fn new(node: &Node) -> Npm {
        Npm::for_registry(&registry_url(node))
    }

    /// A fresh environment, without a token, for any registry (e.g. a
    /// fixture upstream); `registry` ends with `/`.
    pub fn for_registry(registry: &str) -> Npm {
        let dir = tempfile::Builder::new()
            .prefix("hoard-npm-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::write(dir.path().join("globalconfig"), "").unwrap();
        let registry = registry.to_string();
        let nerf = registry
            .trim_start_matches("https:")
            .trim_start_matches("http:")
            .to_string();
        let npm = Npm {
            dir,
            registry,
            nerf,
            cache: 0,
            projects: 0,
        };
        npm.write_userconfig(None);
        npm
    }

    /// [`Npm::new`] with `token` as the registry's `_authToken`.
    pub fn with_token(node: &Node, token: &str) -> Npm {
        let npm = Npm::new(node);
        npm.write_userconfig(Some(token));
        npm
    }

    /// Rewrite the userconfig: the registry, and the token if any.
    pub fn write_userconfig(&self, token: Option<&str>) {
        let mut s = format!("registry={}\n", self.registry);
        if let Some(t) = token {
            writeln!(s, "{}:_authToken={t}", self.nerf).unwrap();
        }
        std::fs::write(self.userconfig(), s).unwrap();
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn userconfig(&self) -> PathBuf {
        self.dir.path().join("npmrc")
    }

    /// The userconfig's text.
    pub fn userconfig_text(&self) -> String {
        std::fs::read_to_string(self.userconfig()).unwrap_or_default()
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join(format!("cache{}", self.cache))
    }

    /// Use a new, empty cache from now on (so that nothing is answered from
    /// the old one, e.g. after a restart of the node).
    pub fn fresh_cache(&mut self) {
        self.cache += 1;
    }

    /// A new empty project dir (a private `package.json`).
    pub fn project(&mut self) -> PathBuf {
        self.projects += 1;
        let dir = self.dir.path().join(format!("project{}", self.projects));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.json"),
            r#"{"name":"hoard-npm-project","version":"1.0.0","private":true}"#,
        )
        .unwrap();
        dir
    }

    /// A package dir for `name@version`, ready for `npm publish`: its
    /// `index.js` exports `{name, version}` (and `extra`, to make the
    /// tarball differ).
    pub fn package(&self, name: &str, version: &str, keywords: &[&str], extra: &str) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join("packages")
            .join(name.replace('/', "+"))
            .join(version);
        std::fs::create_dir_all(&dir).unwrap();
        let mut manifest = json!({
            "name": name,
            "version": version,
            "description": format!("{name}, a hoard test package"),
            "main": "index.js",
            "license": "MIT",
            "keywords": keywords,
        });
        if name.starts_with('@') {
            manifest["publishConfig"] = json!({ "access": "public" });
        }
        std::fs::write(
            dir.join("package.json"),
            serde_json::to_string_pretty(&manifest).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("index.js"),
            format!(
                "module.exports = {{ name: {name:?}, version: {version:?}, extra: {extra:?} }};\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("README.md"), format!("# {name}\n")).unwrap();
        dir
    }

    /// Write a package and `npm publish` it; panics unless npm succeeds.
    pub fn publish(&self, name: &str, version: &str, keywords: &[&str]) -> NpmOutput {
        let dir = self.package(name, version, keywords, "");
        let out = self.run(&dir, &["publish"]);
        assert!(out.success(), "{out}");
        out
    }

    /// The npm command line: `npm ARGS --userconfig … --cache …`, isolated
    /// from the environment, killed after [`NPM_TIMEOUT`].
    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("-k")
            .arg("5")
            .arg(NPM_TIMEOUT.as_secs().to_string())
            .arg("npm");
        // Our defaults first: later flags win, so a test can pass `--audit`.
        cmd.arg("--userconfig")
            .arg(self.userconfig())
            .arg("--globalconfig")
            .arg(self.dir.path().join("globalconfig"))
            .arg("--cache")
            .arg(self.cache_dir())
            .args(["--no-audit", "--no-fund", "--no-update-notifier"])
            .args(["--color=false", "--progress=false"]);
        cmd.args(args).current_dir(cwd);
        self.isolate(&mut cmd);
        cmd
    }

    /// Environment for npm (and for python3 driving npm in a pty).
    fn isolate(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let upper = key.to_ascii_uppercase();
            if upper.starts_with("NPM_")
                || upper.starts_with("NODE_")
                || upper.ends_with("_PROXY")
                || upper == "PREFIX"
            {
                cmd.env_remove(key);
            }
        }
        cmd.env("HOME", self.dir.path().join("home"))
            .env("npm_config_update_notifier", "false")
            .env("NO_UPDATE_NOTIFIER", "1")
            .env("NO_PROXY", "*")
            .env("no_proxy", "*")
            .env("NO_COLOR", "1");
    }

    /// Run npm with `args` in `cwd`.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> NpmOutput {
        let cmd = self.command(cwd, args);
        finish(cmd, format!("npm {}", args.join(" ")))
    }

    /// Run npm and return its stdout; panics (with everything npm printed)
    /// unless it exits 0.
    pub fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args);
        assert!(out.success(), "{out}");
        out.stdout
    }

    /// Run npm and return what it did; panics if it exits 0.
    pub fn fails(&self, cwd: &Path, args: &[&str]) -> NpmOutput {
        let out = self.run(cwd, args);
        assert!(!out.success(), "expected npm to fail: {out}");
        out
    }

    /// `npm view ARGS --json`, parsed.
    pub fn view_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["view"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.ok(self.root(), &all);
        if out.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("npm view --json: {e}: {out}"))
    }

    /// `npm view PKG versions --json` as a list (npm prints a bare string
    /// when there is one version).
    pub fn versions(&self, pkg: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![pkg, "versions"];
        args.extend_from_slice(extra);
        match self.view_json(&args) {
            Value::String(s) => vec![s],
            Value::Array(a) => a
                .into_iter()
                .map(|v| v.as_str().expect("a version string").to_string())
                .collect(),
            Value::Null => Vec::new(),
            other => panic!("npm view {pkg} versions --json printed {other}"),
        }
    }

    /// `npm login` (extra args e.g. `--auth-type=legacy`) in a pty,
    /// answering the `Username:` and `Password:` prompts.
    pub fn login_pty(&self, user: &str, password: &str, extra: &[&str]) -> NpmOutput {
        let mut args = vec!["login"];
        args.extend_from_slice(extra);
        self.run_pty(&args, &[("Username:", user), ("Password:", password)])
    }

    /// `npm adduser` in a pty, answering `Username:`, `Password:` and
    /// `Email:`.
    pub fn adduser_pty(&self, user: &str, password: &str, email: &str) -> NpmOutput {
        self.run_pty(
            &["adduser"],
            &[
                ("Username:", user),
                ("Password:", password),
                ("Email:", email),
            ],
        )
    }

    /// npm with `args` in a pty (in the environment's root dir), answering
    /// each prompt once, in any order.
    pub fn run_pty(&self, args: &[&str], answers: &[(&str, &str)]) -> NpmOutput {
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(PTY_DRIVER);
        for (prompt, answer) in answers {
            cmd.arg(format!("{prompt}={answer}"));
        }
        cmd.arg("--");
        let npm = self.command(self.root(), args);
        cmd.arg(npm.get_program());
        cmd.args(npm.get_args());
        cmd.current_dir(self.root());
        self.isolate(&mut cmd);
        finish(cmd, format!("npm {} (in a pty)", args.join(" ")))
    }
}

fn finish(mut cmd: Command, cmdline: String) -> NpmOutput {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
    let out = NpmOutput {
        cmdline,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    };
    assert!(
        !matches!(out.status.code(), Some(124) | Some(137)),
        "npm did not finish within {NPM_TIMEOUT:?} and was killed: {out}"
    );
    out
}

/// Runs a command in a pty and answers prompts:
/// `python3 -c PTY_DRIVER 'Prompt:=answer' … -- cmd args…`. Prints what the
/// command printed; exits with its exit code (124 after 50 s).
const PTY_DRIVER: &str = r#"
import os, pty, select, signal, sys, time
i = sys.argv.index("--")
pairs = [a.split("=", 1) for a in sys.argv[1:i]]
cmd = sys.argv[i + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
buf = b""
deadline = time.time() + 50
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if not r:
        continue
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    buf += chunk
    sys.stdout.write(chunk.decode(errors="replace"))
    sys.stdout.flush()
    for p in pairs:
        if p[0].encode() in buf:
            time.sleep(0.1)
            os.write(fd, (p[1] + "\r").encode())
            buf = b""
            pairs.remove(p)
            break
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    sys.exit(124)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// A package tarball as `npm pack` makes it: a gzipped tar with
/// `package/package.json`, `package/index.js` and `package/README.md`, and
/// `padding` bytes of incompressible data ([`pseudo_random`] with seed 7) in
/// `package/padding.bin` when non-zero. With padding, the gzip level is the
/// fastest: the bulk of the tarball would not compress anyway.
///
/// [`pseudo_random`]: crate::artifacts::pseudo_random
pub fn npm_tarball(name: &str, version: &str, padding: usize) -> Vec<u8> {
    let manifest = json!({ "name": name, "version": version, "main": "index.js" });
    let mut members: Vec<(String, Vec<u8>)> = vec![
        (
            "package/package.json".into(),
            serde_json::to_vec_pretty(&manifest).unwrap(),
        ),
        (
            "package/index.js".into(),
            format!("module.exports = {version:?};\n").into_bytes(),
        ),
        (
            "package/README.md".into(),
            format!("# {name}\n").into_bytes(),
        ),
    ];
    let level = if padding > 0 {
        members.push((
            "package/padding.bin".into(),
            crate::artifacts::pseudo_random(padding, 7),
        ));
        flate2::Compression::fast()
    } else {
        flate2::Compression::default()
    };
    npm_pack(&members, level)
}

/// A gzipped tar of `members` (paths and contents, in that order) written as
/// `npm pack` writes its files, so that npm extracts it like a real package.
pub(crate) fn npm_pack(members: &[(String, Vec<u8>)], level: flate2::Compression) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), level);
    let mut tar = tar::Builder::new(gz);
    for (path, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        // npm packs every file with this mtime (1985-10-26).
        h.set_mtime(499_162_500);
        h.set_cksum();
        tar.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The document `npm publish` sends for `name@version` with `tarball`
/// (shape of `crates/hoard-npm/tests/fixtures/publish-unscoped-1.0.0.json`):
/// one version with `dist` (integrity, shasum, tarball URL), `dist-tags`
/// `latest`, and one base64 attachment `{name}-{version}.tgz`. `registry`
/// ends with `/`.
pub fn publish_doc(registry: &str, name: &str, version: &str, tarball: &[u8]) -> Value {
    publish_doc_with(registry, name, version, tarball, &json!({}))
}

/// [`publish_doc`] with more fields in the version's manifest: each field of
/// the object `manifest` (e.g. `dependencies`, `keywords`, `engines`,
/// `readme`) is set in `versions[version]`, replacing the default. A
/// `description` there is the document's top-level one too, as with npm.
pub fn publish_doc_with(
    registry: &str,
    name: &str,
    version: &str,
    tarball: &[u8],
    manifest: &Value,
) -> Value {
    let basename = name.rsplit('/').next().unwrap_or(name);
    let attachment = format!("{name}-{version}.tgz");
    let mut meta = json!({
        "name": name,
        "version": version,
        "description": "a hand-built publish",
        "main": "index.js",
        "license": "MIT",
        "_id": format!("{name}@{version}"),
        "readme": format!("# {name}\n"),
        "_nodeVersion": "20.20.2",
        "_npmVersion": "10.8.2",
        "dist": {
            "integrity": sri_sha512(tarball),
            "shasum": sha1_hex(tarball),
            "tarball": format!("{registry}{name}/-/{basename}-{version}.tgz"),
        },
    });
    let fields = manifest
        .as_object()
        .expect("the manifest fields are an object");
    for (k, v) in fields {
        meta[k] = v.clone();
    }
    let description = meta["description"].clone();
    let mut versions = serde_json::Map::new();
    versions.insert(version.to_string(), meta);
    let mut attachments = serde_json::Map::new();
    attachments.insert(
        attachment,
        json!({
            "content_type": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(tarball),
            "length": tarball.len(),
        }),
    );
    json!({
        "_id": name,
        "name": name,
        "description": description,
        "dist-tags": { "latest": version },
        "versions": versions,
        "access": null,
        "_attachments": attachments,
    })
}

/// `PUT {path}` (sent exactly as given, e.g. `/npm/%2e%2e`) with a JSON
/// body over a raw socket, with `Authorization: Bearer` when a token is
/// given.
pub fn put_raw(node: &Node, path: &str, token: Option<&str>, body: &[u8]) -> RawResponse {
    let mut head = format!(
        "PUT {path} HTTP/1.1\r\nContent-Type: application/json\r\nAccept: */*\r\n\
         User-Agent: npm/10.8.2 node/v20.20.2 linux x64 workspaces/false\r\n\
         Npm-Command: publish\r\nContent-Length: {}",
        body.len()
    );
    if let Some(t) = token {
        write!(head, "\r\nAuthorization: Bearer {t}").unwrap();
    }
    node.raw(&head, body)
}

/// The `error` string of an npm JSON error answer; panics (with the answer)
/// if the body is not `{"error": "<non-empty>"}` served as JSON.
pub fn json_error(resp: &RawResponse) -> String {
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "an npm error should be JSON, got Content-Type {ct:?}: {resp}"
    );
    let v: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("the error body is not JSON ({e}): {resp}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the error body has no \"error\" string: {resp}"));
    assert!(!msg.trim().is_empty(), "empty error message: {resp}");
    msg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_matches_known_vectors() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            sha1_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            sha1_hex(&vec![b'a'; 1_000_000]),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn tarball_is_gzipped_tar_with_package_json() {
        use std::io::Read as _;

        let t = npm_tarball("bench-npm", "1.2.3", 1000);
        assert_eq!(&t[..2], &[0x1f, 0x8b]);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&t[..]));
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            if path == "package/package.json" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert!(s.contains("\"version\": \"1.2.3\""));
            }
            names.push(path);
        }
        assert_eq!(
            names,
            [
                "package/package.json",
                "package/index.js",
                "package/README.md",
                "package/padding.bin"
            ]
        );
    }

    #[test]
    fn publish_doc_declares_the_digests_and_extra_fields() {
        let t = npm_tarball("bench-npm", "1.0.0", 0);
        let deps = json!({ "ms": "^2.1.3" });
        let doc = publish_doc_with(
            "http://127.0.0.1:1/npm/",
            "bench-npm",
            "1.0.0",
            &t,
            &json!({ "description": "other", "dependencies": deps }),
        );
        let att = &doc["_attachments"]["bench-npm-1.0.0.tgz"];
        assert_eq!(att["length"], t.len());
        let data = base64::engine::general_purpose::STANDARD
            .decode(att["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, t);
        let v = &doc["versions"]["1.0.0"];
        assert_eq!(v["dist"]["shasum"], sha1_hex(&t));
        assert_eq!(v["dist"]["integrity"], sri_sha512(&t));
        assert_eq!(
            v["dist"]["tarball"],
            "http://127.0.0.1:1/npm/bench-npm/-/bench-npm-1.0.0.tgz"
        );
        assert_eq!(v["dependencies"], deps);
        assert_eq!(v["description"], "other");
        assert_eq!(doc["description"], "other");
        assert_eq!(v["license"], "MIT");
    }

    /// The digests of a tarball that npm 10.8.2 published (a fixture).
    #[test]
    fn digests_match_npm() {
        let path = crate::tools::workspace_root()
            .join("crates/hoard-npm/tests/fixtures/publish-unscoped-1.0.0.json");
        let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let data = doc["_attachments"]["hoard-demo-1.0.0.tgz"]["data"]
            .as_str()
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let dist = &doc["versions"]["1.0.0"]["dist"];
        assert_eq!(sha1_hex(&bytes), dist["shasum"].as_str().unwrap());
        assert_eq!(sri_sha512(&bytes), dist["integrity"].as_str().unwrap());
    }
}
