//! Virtual repositories: which members serve a name.

use hoard_core::{RepoKind, VirtualSettings};
use hoard_store::RepoState;

use crate::error::ApiError;
use crate::node::Node;

/// The members of a virtual repository that exist, in order, and which of
/// them serve a project or package: one that a hosted member has (as
/// `hosted_has` says) hides the mirrored ones of the same name (dependency
/// confusion), unless `merge_mirrored`.
pub fn virtual_sources(
    node: &Node,
    settings: &VirtualSettings,
    hosted_has: impl Fn(&RepoState) -> Result<bool, ApiError>,
) -> Result<Vec<RepoState>, ApiError> {
    let mut members = Vec::new();
    for name in &settings.members {
        match node.index.repo(name)? {
            Some(member) => members.push(member),
            None => tracing::warn!(member = %name, "a virtual repository's member does not exist"),
        }
    }
    let mut shadowed = false;
    if !settings.merge_mirrored {
        for m in &members {
            if matches!(m.settings.kind, RepoKind::Hosted) && hosted_has(m)? {
                shadowed = true;
                break;
            }
        }
    }
    Ok(members
        .into_iter()
        .filter(|m| match m.settings.kind {
            RepoKind::Hosted => true,
            RepoKind::Mirror(_) => !shadowed,
            RepoKind::Virtual(_) => false,
        })
        .collect())
}

/// The member that writes to a virtual repository go to.
pub fn upload_target(
    node: &Node,
    repo: &RepoState,
    settings: &VirtualSettings,
) -> Result<RepoState, ApiError> {
    settings
        .upload_to
        .as_ref()
        .and_then(|m| node.index.repo(m).ok().flatten())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{} is virtual and has no upload_to repository",
                repo.name
            ))
            .closing()
        })
}
