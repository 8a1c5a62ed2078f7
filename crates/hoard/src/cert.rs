//! `hoard cert init|issue`: the cluster CA and node certificates (rcgen).
//! A node certificate's common name is the node id, which peers take as
//! the node's identity; its subject alternative names are the addresses
//! and host names that other nodes (and, for HTTPS, clients) use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Subcommand)]
pub(crate) enum CertCommand {
    /// Make the cluster CA: DIR/ca.pem (give it to every node and client)
    /// and DIR/ca-key.pem (keep it off the nodes).
    Init {
        /// Where the CA's files go.
        #[arg(long, default_value = "hoard-ca")]
        dir: PathBuf,
        /// The CA's name.
        #[arg(long, default_value = "hoard cluster CA")]
        name: String,
        /// How long the CA is valid, in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate for a node (both for node-to-node mutual TLS and
    /// for its HTTPS listener): OUT/NODE_ID.pem and OUT/NODE_ID-key.pem.
    Issue {
        /// The node's id (`node_id` in its config): its identity to peers.
        node_id: String,
        /// An address or host name the node is reached at (repeatable).
        #[arg(long = "san", value_name = "NAME_OR_IP", required = true)]
        sans: Vec<String>,
        /// The CA's directory, from `hoard cert init`.
        #[arg(long, default_value = "hoard-ca")]
        dir: PathBuf,
        /// Where the node's files go; default: the CA's directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// How long the certificate is valid, in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
}

pub(crate) fn run(command: CertCommand) -> anyhow::Result<ExitCode> {
    match command {
        CertCommand::Init { dir, name, days } => init(&dir, &name, days),
        CertCommand::Issue {
            node_id,
            sans,
            dir,
            out,
            days,
        } => issue(&node_id, &sans, &dir, out.as_deref().unwrap_or(&dir), days),
    }
}

fn validity(params: &mut CertificateParams, days: i64) -> anyhow::Result<()> {
    if days <= 0 {
        bail!("--days must be positive");
    }
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that lag the issuer's.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    Ok(())
}

/// Writes `path` (mode 0600 for keys), refusing to replace a file.
fn write_new(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn init(dir: &Path, name: &str, days: i64) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days)?;
    let cert = params.self_signed(&key)?;
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    write_new(&ca_key, &key.serialize_pem(), true)?;
    write_new(&ca, &cert.pem(), false)?;
    eprintln!(
        "wrote the cluster CA: {} (give it to every node and client) and {} (keep it safe, off the nodes)",
        ca.display(),
        ca_key.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn issue(
    node_id: &str,
    sans: &[String],
    dir: &Path,
    out: &Path,
    days: i64,
) -> anyhow::Result<ExitCode> {
    if node_id.is_empty() || node_id.contains(['/', '\\']) {
        bail!("invalid node id {node_id:?}");
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (make the CA with `hoard cert init --dir {}`)",
                path.display(),
                dir.display()
            )
        })
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?).context("the CA key")?;
    let issuer =
        Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).context("the CA certificate")?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // The same certificate serves as a server (its listeners) and as a
    // client (its calls to other nodes).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, days)?;
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let (cert_path, key_path) = (
        out.join(format!("{node_id}.pem")),
        out.join(format!("{node_id}-key.pem")),
    );
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    eprintln!(
        "wrote {} and {} for node {node_id} ({})",
        cert_path.display(),
        key_path.display(),
        sans.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
