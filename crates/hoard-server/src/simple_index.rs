//! A repository's root index page (`/{repo}/simple/`): every project of
//! the repository, or of a virtual one's members, first spelling first.
//!
//! A short index is rendered whole and cached, as every page is. A long
//! one (PyPI's has 600,000 projects) is streamed: the listing is read from
//! the index one project at a time on a blocking thread and sent in chunks,
//! so that memory stays bounded by a chunk and the first bytes go out at
//! once; its body is kept for the page cache only while it fits.

use std::iter::Peekable;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use hoard_core::{RepoName, Serial};
use hoard_pypi::{IndexRenderer, ProjectLink, SimpleFormat};
use hoard_store::{ProjectState, StoreError};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::http::ResBody;
use crate::node::Node;
use crate::page_cache::CachedPage;

/// Projects rendered on the request's own thread before the page is
/// streamed instead (about 100 KB of HTML: a few milliseconds).
const STREAM_AFTER: usize = 2_000;
/// Bytes per chunk of a streamed page.
const CHUNK: usize = 64 << 10;
/// Chunks in flight between the rendering thread and the connection.
const CHUNKS_IN_FLIGHT: usize = 4;
/// The largest streamed body also kept for the page cache (PyPI's root
/// page is about 30 MB of HTML).
const CACHE_STREAMED_MAX: usize = 48 << 20;

/// The index page: from the cache, rendered whole, or streamed.
pub enum IndexPage {
    Cached(Arc<CachedPage>),
    /// Too long to render on the request's thread: the body streams, with
    /// no `ETag` (the next request gets the cached page, with one).
    Streamed(Response<ResBody>),
}

/// The index page of `sources` as of `view`, cached under `key`.
pub fn index_page(
    node: &Arc<Node>,
    key: String,
    sources: &[RepoName],
    view: Serial,
    format: SimpleFormat,
) -> Result<IndexPage, ApiError> {
    if let Some(page) = node.page_cache.get(&key) {
        return Ok(IndexPage::Cached(page));
    }
    let mut listing = Listing::new(node, sources, view);
    let mut renderer = IndexRenderer::new(format);
    let mut body = renderer.head();
    for _ in 0..STREAM_AFTER {
        match listing.next() {
            Some(p) => renderer.push_project(&mut body, &link(p?)),
            None => {
                body.push_str(&renderer.tail(listing.last_created.0));
                return Ok(IndexPage::Cached(node.page_cache.insert(key, body)));
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let node = node.clone();
    tokio::task::spawn_blocking(move || stream_rest(&node, key, listing, renderer, body, &tx));
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx).map(|c| c.map(Frame::data));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    Ok(IndexPage::Streamed(response))
}

/// Renders the rest of a long listing in chunks; keeps the whole body for
/// the page cache while it fits. A failure mid-way ends the body with an
/// error, so the client sees a broken transfer, not a short index.
fn stream_rest(
    node: &Node,
    key: String,
    mut listing: Listing,
    mut renderer: IndexRenderer,
    mut chunk: String,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut whole = Some(String::new());
    let send = |chunk: &mut String, whole: &mut Option<String>| -> bool {
        if let Some(w) = whole.as_mut() {
            if w.len() + chunk.len() <= CACHE_STREAMED_MAX {
                w.push_str(chunk);
            } else {
                *whole = None;
            }
        }
        tx.blocking_send(Ok(Bytes::from(std::mem::take(chunk))))
            .is_ok()
    };
    loop {
        match listing.next() {
            Some(Ok(p)) => {
                renderer.push_project(&mut chunk, &link(p));
                if chunk.len() >= CHUNK && !send(&mut chunk, &mut whole) {
                    return; // the client went away
                }
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "the index page could not be read to its end");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
            None => break,
        }
    }
    chunk.push_str(&renderer.tail(listing.last_created.0));
    if send(&mut chunk, &mut whole) {
        match whole {
            Some(body) => {
                node.page_cache.insert(key, body);
            }
            None => {
                node.page_cache
                    .renders
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

fn link(p: ProjectState) -> ProjectLink {
    ProjectLink {
        name: p.display_name,
        normalized: p.name,
    }
}

type Projects = Box<dyn Iterator<Item = Result<ProjectState, StoreError>> + Send>;

/// The projects of several repositories merged in name order, each name
/// once, as the first repository that has it spells it; and the serial
/// of the last project created among them (what the page shows).
struct Listing {
    sources: Vec<Peekable<Projects>>,
    last_created: Serial,
}

impl Listing {
    fn new(node: &Node, repos: &[RepoName], view: Serial) -> Listing {
        Listing {
            sources: repos
                .iter()
                .map(|r| (Box::new(node.index.projects_iter(r, Some(view))) as Projects).peekable())
                .collect(),
            last_created: Serial::ZERO,
        }
    }
}

impl Iterator for Listing {
    type Item = Result<ProjectState, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let project = if let [only] = self.sources.as_mut_slice() {
            only.next()?
        } else {
            self.next_merged()?
        };
        if let Ok(p) = &project {
            self.last_created = self.last_created.max(p.created);
        }
        Some(project)
    }
}

impl Listing {
    /// The smallest next name of all sources, from the first source that
    /// has it; the others' entries of that name are skipped.
    fn next_merged(&mut self) -> Option<Result<ProjectState, StoreError>> {
        let mut best: Option<(usize, String)> = None;
        for (i, source) in self.sources.iter_mut().enumerate() {
            match source.peek() {
                None => {}
                Some(Err(_)) => return source.next(),
                Some(Ok(head)) if best.as_ref().is_none_or(|(_, name)| head.name < *name) => {
                    best = Some((i, head.name.clone()));
                }
                Some(Ok(_)) => {}
            }
        }
        let (first, name) = best?;
        let project = self.sources[first].next()?;
        for source in &mut self.sources {
            while let Some(Ok(same)) =
                source.next_if(|next| next.as_ref().is_ok_and(|n| n.name == name))
            {
                self.last_created = self.last_created.max(same.created);
            }
        }
        Some(project)
    }
}
