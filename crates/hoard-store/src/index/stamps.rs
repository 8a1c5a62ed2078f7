//! Page stamps: for each project, the serial of the last event that
//! changed it, kept in memory as events are applied, so that a rendered
//! page can be cached for as long as its project stays unchanged rather
//! than until the next write anywhere.
//!
//! A stamp is not stored. After an open, everything counts as changed at
//! the serial the index opened at (the floor); a reset or a snapshot
//! install starts a new generation, so that nothing cached before it can
//! be mistaken for what came after, even at the same serial.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use hoard_core::{Change, RepoName, Serial};

/// Past this many tracked projects the maps start over from a new floor:
/// memory stays bounded, and the cost is one render per page afterwards.
const MAX_TRACKED: usize = 200_000;

/// What a cached page is valid for: pages rendered at views with equal
/// stamps are the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageStamp {
    pub generation: u64,
    pub serial: Serial,
}

impl fmt::Display for PageStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.generation, self.serial.0)
    }
}

/// What an event changes, as far as cached pages go.
#[derive(Debug, PartialEq, Eq)]
enum Touched<'a> {
    /// No page shows it (tokens, generic files).
    Nothing,
    /// One PyPI project or npm package of one repository.
    Project(&'a RepoName, &'a str),
    /// Any page may show it: repository settings (a virtual repository's
    /// members), users (npm maintainers).
    Everything,
}

fn touched(change: &Change) -> Touched<'_> {
    match change {
        Change::FileAdded { repo, project, .. }
        | Change::FilesYanked { repo, project, .. }
        | Change::OwnersChanged { repo, project, .. }
        | Change::MirrorFilesListed { repo, project, .. }
        | Change::MirrorFileCached { repo, project, .. } => Touched::Project(repo, project),
        Change::NpmPublished { repo, package, .. }
        | Change::NpmDistTagChanged { repo, package, .. }
        | Change::NpmDeprecated { repo, package, .. }
        | Change::NpmMirrorListed { repo, package, .. }
        | Change::NpmMirrorTarballCached { repo, package, .. }
        | Change::NpmUnpublished { repo, package, .. } => Touched::Project(repo, package),
        Change::TokenCreated { .. }
        | Change::TokenRevoked { .. }
        | Change::GenericFileStored { .. } => Touched::Nothing,
        Change::RepoCreated { .. }
        | Change::RepoSettingsChanged { .. }
        | Change::UserAdded { .. }
        | Change::UserChanged { .. }
        | Change::UserRemoved { .. } => Touched::Everything,
    }
}

#[derive(Default)]
pub(super) struct PageStamps {
    inner: Mutex<Stamps>,
}

#[derive(Default)]
struct Stamps {
    generation: u64,
    /// Everything counts as changed at the floor.
    floor: Serial,
    /// By repository, then project: looked up without building a key.
    projects: HashMap<RepoName, HashMap<String, Serial>>,
    tracked: usize,
    /// Per repository, the last serial that created a project in it: what
    /// its index page lists.
    listings: HashMap<RepoName, Serial>,
}

impl PageStamps {
    pub(super) fn new(floor: Serial) -> Self {
        PageStamps {
            inner: Mutex::new(Stamps {
                floor,
                ..Stamps::default()
            }),
        }
    }

    /// Records an applied event; `created` when it created its project.
    /// Called before the event's serial can be read as durable, so a
    /// reader that sees a serial also sees its stamp.
    pub(super) fn record(&self, serial: Serial, change: &Change, created: bool) {
        let mut s = self.lock();
        match touched(change) {
            Touched::Nothing => {}
            Touched::Everything => s.restart(serial),
            Touched::Project(repo, project) => {
                if s.tracked >= MAX_TRACKED {
                    s.restart(serial);
                    return;
                }
                let projects = s.projects.entry(repo.clone()).or_default();
                let added = projects.insert(project.to_owned(), serial).is_none();
                s.tracked += usize::from(added);
                if created {
                    s.listings.insert(repo.clone(), serial);
                }
            }
        }
    }

    /// A wholesale change of the state (a reset, a snapshot install)
    /// begins: until [`PageStamps::settle`], no stamp is older than the
    /// view that asks for it, so nothing is shared between views.
    pub(super) fn unsettle(&self) {
        let mut s = self.lock();
        s.generation += 1;
        s.restart(Serial(u64::MAX));
    }

    /// The wholesale change is done: everything counts as changed at
    /// `applied`, in a generation of its own.
    pub(super) fn settle(&self, applied: Serial) {
        let mut s = self.lock();
        s.generation += 1;
        s.restart(applied);
    }

    /// The stamp of a page at `view` showing `project` of `repos` (its
    /// index page, for `None`). A stamp past the view (an event applied
    /// but not yet durable) falls back to the view itself.
    pub(super) fn stamp(
        &self,
        repos: &[RepoName],
        project: Option<&str>,
        view: Serial,
    ) -> PageStamp {
        let s = self.lock();
        let last = repos
            .iter()
            .map(|repo| {
                let changed = match project {
                    Some(p) => s.projects.get(repo).and_then(|projects| projects.get(p)),
                    None => s.listings.get(repo),
                };
                changed.copied().unwrap_or_default().max(s.floor)
            })
            .max()
            .unwrap_or(s.floor);
        PageStamp {
            generation: s.generation,
            serial: last.min(view),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stamps> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Stamps {
    fn restart(&mut self, floor: Serial) {
        self.floor = floor;
        self.projects.clear();
        self.listings.clear();
        self.tracked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoard_core::Sha256;

    fn repo(name: &str) -> RepoName {
        name.parse().unwrap()
    }

    fn yank(r: &str, project: &str) -> Change {
        Change::FilesYanked {
            repo: repo(r),
            project: project.into(),
            filenames: vec![],
            reason: None,
        }
    }

    #[test]
    fn a_change_moves_only_its_own_projects_stamp() {
        let stamps = PageStamps::new(Serial(10));
        let a = [repo("a")];
        assert_eq!(stamps.stamp(&a, Some("x"), Serial(10)).serial, Serial(10));
        stamps.record(Serial(11), &yank("a", "x"), false);
        stamps.record(Serial(12), &yank("a", "y"), false);
        // x is unchanged since 11, whatever the view after it.
        assert_eq!(stamps.stamp(&a, Some("x"), Serial(12)).serial, Serial(11));
        assert_eq!(stamps.stamp(&a, Some("x"), Serial(40)).serial, Serial(11));
        assert_eq!(stamps.stamp(&a, Some("y"), Serial(40)).serial, Serial(12));
        // An untouched project counts as changed at the floor.
        assert_eq!(stamps.stamp(&a, Some("z"), Serial(40)).serial, Serial(10));
        // Another repository's project of the same name is another page.
        assert_eq!(
            stamps.stamp(&[repo("b")], Some("y"), Serial(40)).serial,
            Serial(10)
        );
        // A virtual repository's page changes with any member's.
        let both = [repo("b"), repo("a")];
        assert_eq!(
            stamps.stamp(&both, Some("y"), Serial(40)).serial,
            Serial(12)
        );
    }

    #[test]
    fn a_stamp_past_the_view_falls_back_to_the_view() {
        let stamps = PageStamps::new(Serial(0));
        stamps.record(Serial(5), &yank("a", "x"), false);
        assert_eq!(
            stamps.stamp(&[repo("a")], Some("x"), Serial(4)).serial,
            Serial(4)
        );
    }

    #[test]
    fn the_listing_moves_only_when_a_project_is_created() {
        let stamps = PageStamps::new(Serial(1));
        let a = [repo("a")];
        stamps.record(Serial(2), &yank("a", "x"), true);
        stamps.record(Serial(3), &yank("a", "x"), false);
        assert_eq!(stamps.stamp(&a, None, Serial(3)).serial, Serial(2));
        assert_eq!(stamps.stamp(&a, Some("x"), Serial(3)).serial, Serial(3));
    }

    #[test]
    fn settings_and_users_move_everything_and_tokens_nothing() {
        let stamps = PageStamps::new(Serial(1));
        let a = [repo("a")];
        stamps.record(
            Serial(2),
            &Change::TokenRevoked {
                hash: Sha256::of(b"t"),
            },
            false,
        );
        assert_eq!(stamps.stamp(&a, Some("x"), Serial(9)).serial, Serial(1));
        stamps.record(Serial(3), &Change::UserRemoved { name: "u".into() }, false);
        assert_eq!(stamps.stamp(&a, Some("x"), Serial(9)).serial, Serial(3));
        assert_eq!(stamps.stamp(&a, None, Serial(9)).serial, Serial(3));
    }

    #[test]
    fn a_wholesale_change_shares_nothing_with_what_came_before() {
        let stamps = PageStamps::new(Serial(7));
        let a = [repo("a")];
        let before = stamps.stamp(&a, Some("x"), Serial(7));
        stamps.unsettle();
        let during = stamps.stamp(&a, Some("x"), Serial(7));
        assert_ne!(before, during);
        assert_eq!(during.serial, Serial(7));
        stamps.settle(Serial(7));
        let after = stamps.stamp(&a, Some("x"), Serial(7));
        assert_ne!(after, before);
        assert_ne!(after, during);
    }
}
