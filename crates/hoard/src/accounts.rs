//! `hoard user`, `hoard owner`, and `hoard token list|revoke`: accounts
//! through a node's admin API. Passwords are read from the terminal
//! without echo (or one line of stdin), never from the command line,
//! where `ps` and shell history would keep them.

use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::cli::{admin_post, Target};

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Add a user; the password is prompted for (or read from stdin).
    Add {
        #[command(flatten)]
        target: Target,
        name: String,
        /// The user may change any package, and manage users and owners.
        #[arg(long)]
        admin: bool,
        /// Shown by `npm owner ls`.
        #[arg(long)]
        email: Option<String>,
    },
    /// Set a user's password (an admin, or the user with their own token).
    Passwd {
        #[command(flatten)]
        target: Target,
        name: String,
    },
    /// Remove a user: their tokens stop working at once, on every node
    /// that has applied the removal.
    Remove {
        #[command(flatten)]
        target: Target,
        name: String,
    },
    /// List users (no password hashes).
    List {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub(crate) enum OwnerCommand {
    /// Add an owner to a PyPI project or an npm package. Naming an owner
    /// for a project not uploaded yet reserves the name for them.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        project: String,
        user: String,
    },
    /// Remove an owner.
    #[command(alias = "rm")]
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        project: String,
        user: String,
    },
    /// List the owners of a project.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        repo: String,
        #[arg(long)]
        project: String,
    },
}

/// Reads a password: twice, without echo, on a terminal; else one line
/// of stdin (for scripts: `printf '%s\n' "$PW" | hoard user add …`).
fn read_password(prompt: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("{prompt}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password on stdin");
    }
    Ok(password)
}

pub(crate) async fn user(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add {
            target,
            name,
            admin,
            email,
        } => {
            let password = read_password(&format!("password for {name}"))?;
            let body =
                json!({ "name": name, "password": password, "admin": admin, "email": email });
            let answer = admin_post(&target, "users/add", &body).await?;
            eprintln!("added user {name} at serial {}", answer["serial"]);
        }
        UserCommand::Passwd { target, name } => {
            let password = read_password(&format!("new password for {name}"))?;
            let body = json!({ "name": name, "password": password });
            let answer = admin_post(&target, "users/passwd", &body).await?;
            eprintln!(
                "changed the password of {name} at serial {}",
                answer["serial"]
            );
        }
        UserCommand::Remove { target, name } => {
            let answer = admin_post(&target, "users/remove", &json!({ "name": name })).await?;
            eprintln!(
                "removed user {name} at serial {}; their tokens no longer work",
                answer["serial"]
            );
        }
        UserCommand::List { target } => {
            let answer = admin_post(&target, "users/list", &json!({})).await?;
            println!(
                "{:<24} {:<6} {:<8} {:<30} EMAIL",
                "NAME", "ADMIN", "SERIAL", "PASSWORD"
            );
            for u in answer["users"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<6} {:<8} {:<30} {}",
                    text(&u["name"]),
                    u["admin"].as_bool().unwrap_or(false),
                    u["created_serial"],
                    text(&u["password"]),
                    text(&u["email"]),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn owner(command: OwnerCommand) -> anyhow::Result<ExitCode> {
    let (target, endpoint, body) = match command {
        OwnerCommand::Add {
            target,
            repo,
            project,
            user,
        } => (
            target,
            "owners/add",
            json!({ "repo": repo, "project": project, "user": user }),
        ),
        OwnerCommand::Remove {
            target,
            repo,
            project,
            user,
        } => (
            target,
            "owners/remove",
            json!({ "repo": repo, "project": project, "user": user }),
        ),
        OwnerCommand::List {
            target,
            repo,
            project,
        } => (
            target,
            "owners/list",
            json!({ "repo": repo, "project": project }),
        ),
    };
    let answer = admin_post(&target, endpoint, &body).await?;
    let owners: Vec<&str> = answer["owners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if owners.is_empty() {
        eprintln!(
            "{} has no owners: only admins may change it",
            answer["project"]
        );
    }
    for owner in owners {
        println!("{owner}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn token_list(target: &Target, user: Option<String>) -> anyhow::Result<ExitCode> {
    let answer = admin_post(target, "tokens/list", &json!({ "user": user })).await?;
    println!(
        "{:<14} {:<28} {:<16} {:<16} {:<7} {:<8} EXPIRES / PROJECTS",
        "ID", "LABEL", "USER", "REPO", "PERM", "SERIAL"
    );
    for t in answer["tokens"].as_array().into_iter().flatten() {
        let expires = match t["expires_us"].as_i64() {
            Some(us) if t["expired"].as_bool() == Some(true) => format!("expired ({us} µs)"),
            Some(us) => format!("at {} s since the epoch", us / 1_000_000),
            None => "never".to_owned(),
        };
        let projects = match t["projects"].as_array() {
            Some(list) => list.iter().map(text).collect::<Vec<_>>().join(","),
            None => "*".to_owned(),
        };
        println!(
            "{:<14} {:<28} {:<16} {:<16} {:<7} {:<8} {expires} / {projects}",
            text(&t["id"]),
            text(&t["label"]),
            text(&t["user"]),
            t["repo"].as_str().unwrap_or("*"),
            text(&t["perm"]),
            t["created_serial"],
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn token_revoke(target: &Target, id: &str) -> anyhow::Result<ExitCode> {
    let answer = admin_post(target, "tokens/revoke", &json!({ "id": id })).await?;
    eprintln!(
        "revoked token {id} at serial {}; every node refuses it once it has applied that serial",
        answer["serial"]
    );
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}
