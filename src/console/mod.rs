//! The dispatch console: a web page served by `trunkd serve` at `/console/` on the
//! operator API's address, from files built into the binary (`src/console/assets/`).
//!
//! The page is plain JavaScript modules, HTML and CSS, with no build step and nothing
//! loaded from elsewhere: it works on a machine with no internet access, and a fresh
//! `cargo build` serves it without Node. It uses nothing but the operator API and its
//! event stream, with the operator's own tokens, so every action it offers is checked
//! again by the API. `assets/main.js` says how the page is put together.
//!
//! Every file is answered with a Content-Security-Policy that allows only this origin's
//! scripts, styles and API (no inline script, no other host, no framing), and
//! `Cache-Control: no-cache`, so a browser revalidates and a new trunkd's console is
//! never mixed with an old one's files.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One built-in file: its name under `/console/`, its media type and its bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal: $media_type:expr),* $(,)?) => {
        &[$(Asset {
            name: $name,
            media_type: $media_type,
            body: include_bytes!(concat!("assets/", $name)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
static ASSETS: &[Asset] = assets! {
    "index.html": "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "main.js": JS,
    "api.js": JS,
    "stream.js": JS,
    "model.js": JS,
    "dom.js": JS,
    "views.js": JS,
    "units.js": JS,
    "records.js": JS,
};

/// Only this origin's files and API; nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/console` (redirected to `/console/`), `/console/` (the page) and its files.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { (StatusCode::PERMANENT_REDIRECT, [(LOCATION, "/console/")]) }),
        )
        .route("/console/", get(|| async { file("index.html") }))
        .route(
            "/console/{name}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

/// The built-in file `name`, or 404.
fn file(name: &str) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file in the console\n").into_response();
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(a.media_type)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            ),
        ],
        a.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the page imports is one the binary serves.
    #[test]
    fn every_imported_module_is_built_in() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let from = line
                    .rsplit_once("from \"./")
                    .map(|(_, f)| f.trim_end_matches("\";"));
                let from = from.unwrap_or_else(|| panic!("{}: {line}: not a relative import", a.name));
                assert!(
                    ASSETS.iter().any(|b| b.name == from),
                    "{} imports {from}, which the console does not serve",
                    a.name
                );
            }
        }
    }
}
