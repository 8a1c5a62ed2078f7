//! `hoard audit`: the audit trail of a node, from its `/+audit`.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::cli::Target;

/// `--since`: a duration back from now (`90m`, `24h`, `7d`), a date
/// (`2026-12-01`, midnight UTC), or an RFC 3339 time; in µs since the epoch.
pub(crate) fn parse_since(text: &str, now: time::OffsetDateTime) -> anyhow::Result<i64> {
    let text = text.trim();
    let ago = |n: &str, unit: i64| -> anyhow::Result<i64> {
        let n: i64 = n
            .parse()
            .with_context(|| format!("{text:?} is not a duration"))?;
        Ok((now - time::Duration::seconds(n * unit)).unix_timestamp_nanos() as i64 / 1000)
    };
    if let Some(n) = text
        .strip_suffix('m')
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        return ago(n, 60);
    }
    if let Some(n) = text
        .strip_suffix('h')
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        return ago(n, 3600);
    }
    if let Some(n) = text
        .strip_suffix('d')
        .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        return ago(n, 86_400);
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    match time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339) {
        Ok(t) => Ok((t.unix_timestamp_nanos() / 1000) as i64),
        Err(_) => bail!("--since {text:?}: use 90m, 24h, 7d, 2026-12-01 or 2026-12-01T09:30:00Z"),
    }
}

pub(crate) async fn run(
    target: &Target,
    repo: Option<String>,
    since: Option<String>,
    actor: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut query = vec![];
    if let Some(repo) = &repo {
        query.push(("repo", repo.clone()));
    }
    if let Some(actor) = &actor {
        query.push(("actor", actor.clone()));
    }
    if let Some(since) = &since {
        let us = parse_since(since, time::OffsetDateTime::now_utc())?;
        query.push(("since_us", us.to_string()));
    }
    let url = format!("{}/+audit", target.url()?);
    let client = reqwest::Client::new();
    let mut after = 0u64;
    let mut printed = false;
    loop {
        let mut q = query.clone();
        q.push(("after", after.to_string()));
        let page_url = reqwest::Url::parse_with_params(&url, &q)
            .with_context(|| format!("{url} is not a URL"))?;
        let response = client
            .get(page_url)
            .bearer_auth(target.token()?)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{url} answered {status}: {}", text.trim());
        }
        let page: Value = serde_json::from_str(&text).context("the audit trail is not JSON")?;
        for entry in page["entries"].as_array().into_iter().flatten() {
            if json {
                println!("{entry}");
                continue;
            }
            if !printed {
                println!(
                    "{:<8} {:<24} {:<20} {:<12} {:<10} {:<22} {:<16} DETAIL",
                    "SERIAL", "TIME", "ACTOR", "USER", "NODE", "KIND", "REPO"
                );
                printed = true;
            }
            let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            println!(
                "{:<8} {:<24} {:<20} {:<12} {:<10} {:<22} {:<16} {}",
                entry["serial"],
                s(&entry["time"]),
                s(&entry["actor"]),
                s(&entry["user"]),
                s(&entry["node"]),
                s(&entry["kind"]),
                s(&entry["repo"]),
                s(&entry["detail"]),
            );
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_dates_and_times() {
        let now = time::macros::datetime!(2026-12-02 12:00 UTC);
        let us = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1000) as i64;
        assert_eq!(
            parse_since("2h", now).unwrap(),
            us(time::macros::datetime!(2026-12-02 10:00 UTC))
        );
        assert_eq!(
            parse_since("1d", now).unwrap(),
            us(time::macros::datetime!(2026-12-01 12:00 UTC))
        );
        assert_eq!(
            parse_since("2026-12-01", now).unwrap(),
            us(time::macros::datetime!(2026-12-01 0:00 UTC))
        );
        assert_eq!(
            parse_since("2026-12-01T09:30:00Z", now).unwrap(),
            us(time::macros::datetime!(2026-12-01 9:30 UTC))
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
