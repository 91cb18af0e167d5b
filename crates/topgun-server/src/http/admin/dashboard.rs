//! The static admin dashboard under `/admin` (`TOPGUN_ADMIN_DIR`, COMPAT §1): the files of a
//! built single-page app, served as they are. The dashboard signs in through
//! `POST /api/auth/login` and calls the admin API with the token it gets, so its files need no
//! token: they hold no data.
//!
//! Invariants:
//! * only regular files inside the directory are served: a path with `..`, a backslash, a
//!   NUL or a hidden segment is 404, and a symbolic link leading out of the directory is 404;
//! * a path that names no file and has no extension is a route of the app: it gets
//!   `index.html`, so that reloading a deep link works;
//! * a file over [`FILE_BYTES_MAX`] is not read (500): a dashboard's files are small, and a
//!   request must not make the server hold an arbitrary file in memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::http::Host;

/// The largest file served.
pub const FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// `GET /admin` and everything under it.
pub async fn serve<H: Host>(State(host): State<Arc<H>>, uri: Uri) -> Response {
    // The dashboard is part of the admin plane: absent where the plane is (COMPAT §3.1).
    if !host.auth_required() && !host.admin_plane_without_auth() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(dir) = host.admin_dir() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(relative) = relative_path(uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match find(dir, &relative).await {
        Some(file) => read(&file).await,
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The file a request path names under `/admin`, as a relative path; `None` when the path
/// could step outside the directory or names a hidden file.
fn relative_path(path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix("/admin")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mut relative = PathBuf::new();
    for segment in rest.split('/').filter(|s| !s.is_empty()) {
        let bad = segment.starts_with('.') || segment.contains(['\\', '\0', ':']);
        if bad {
            return None;
        }
        relative.push(segment);
    }
    Some(relative)
}

/// The file to answer with: the one named, its directory's `index.html`, or — for an app
/// route (no extension) — the dashboard's `index.html`; each only if it is a regular file
/// whose real path is inside `dir`.
async fn find(dir: &Path, relative: &Path) -> Option<PathBuf> {
    let root = tokio::fs::canonicalize(dir).await.ok()?;
    let named = root.join(relative);
    let mut candidates = vec![named.clone(), named.join("index.html")];
    if relative.extension().is_none() {
        candidates.push(root.join("index.html"));
    }
    for candidate in candidates {
        let Ok(real) = tokio::fs::canonicalize(&candidate).await else {
            continue;
        };
        let is_file = tokio::fs::metadata(&real).await.is_ok_and(|m| m.is_file());
        if is_file && real.starts_with(&root) {
            return Some(real);
        }
    }
    None
}

/// A file's bytes with its content type.
async fn read(file: &Path) -> Response {
    let too_big = tokio::fs::metadata(file)
        .await
        .map_or(true, |m| m.len() > FILE_BYTES_MAX);
    if too_big {
        tracing::warn!(file = %file.display(), "dashboard file over 16 MiB or unreadable");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match tokio::fs::read(file).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(file))], bytes).into_response(),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "dashboard file unreadable");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The content type of a dashboard file, by its extension.
fn content_type(file: &Path) -> &'static str {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_stay_inside_the_directory() {
        assert_eq!(relative_path("/admin"), Some(PathBuf::new()));
        assert_eq!(relative_path("/admin/"), Some(PathBuf::new()));
        assert_eq!(
            relative_path("/admin/assets/app.js"),
            Some(PathBuf::from("assets/app.js"))
        );
        for bad in [
            "/admin/../secret",
            "/admin/.env",
            "/admin/a/.git/config",
            "/admin/a\\..\\b",
            "/administrator",
            "/admin/c:/x",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("a/app.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
    }
}
