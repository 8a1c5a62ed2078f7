//! Loading a node's configuration: defaults, then a TOML file, then
//! `HOARD_*` environment variables (e.g. `HOARD_HTTP_LISTEN`).

use std::path::Path;

use anyhow::Context as _;
use hoard_server::NodeConfig;

/// Top-level keys that may come from the environment. Other `HOARD_*`
/// variables (`HOARD_TOKEN`, say) belong to the CLI, not the node.
const ENV_KEYS: &[&str] = &[
    "node_id",
    "http_listen",
    "grpc_listen",
    "public_url",
    "data_dir",
    "max_upload_bytes",
    "body_timeout_secs",
    "min_serial_wait_secs",
    "index_cache_mib",
    "log_format",
    "role",
    "upstreams",
    "primary_url",
    "replica_writes",
    "fetch_concurrency",
    "catch_up_log_secs",
    "pypi_upstream",
    "npm_upstream",
];

pub fn load(file: Option<&Path>) -> anyhow::Result<NodeConfig> {
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        if !file.is_file() {
            anyhow::bail!("config file {} does not exist", file.display());
        }
        builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
    }
    let env: config::Map<String, String> = std::env::vars()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("HOARD_")?.to_ascii_lowercase();
            ENV_KEYS
                .contains(&key.as_str())
                .then_some((format!("HOARD_{}", key.to_ascii_uppercase()), v))
        })
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("HOARD")
            .prefix_separator("_")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("upstreams")
            .source(Some(env)),
    );
    let config: NodeConfig = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .with_context(|| match file {
            Some(f) => format!("reading the configuration {}", f.display()),
            None => "reading the configuration from the environment".into(),
        })?;
    let mut config = config;
    config.apply_default_upstreams();
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cluster/configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            seen += 1;
        }
        assert!(seen >= 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hoard.toml");
        std::fs::write(&path, "http_listn = \"127.0.0.1:1\"\n").unwrap();
        let err = format!("{:#}", load(Some(&path)).unwrap_err());
        assert!(err.contains("http_listn"), "{err}");
        std::fs::write(&path, "role = \"replica\"\n").unwrap();
        let err = format!("{:#}", load(Some(&path)).unwrap_err());
        assert!(err.contains("upstreams"), "{err}");
    }
}
