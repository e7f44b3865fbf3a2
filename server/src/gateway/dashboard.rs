//! The web dashboard: one HTML page with its script, style sheet and icon, embedded in the binary
//! (no build step) and served at `/` and `/assets/…`. It talks to the JSON API under `/v1/` only.
//!
//! The assets are public: they hold no data, and the page asks for the API token when the API answers
//! 401. Every asset is served with a Content-Security-Policy that allows only this origin (no inline
//! script or style, no framing), `nosniff`, and `no-cache` so a new binary's page is picked up at once.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

use super::routes::Body;

const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("dashboard/index.html"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/app.js"),
    },
    Asset {
        path: "/assets/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/style.css"),
    },
    Asset {
        path: "/assets/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("dashboard/favicon.svg"),
    },
];

/// The asset at `path` for a GET or HEAD, or `None` when `path` is not a dashboard asset (other
/// methods on asset paths fall through to the router's 404 or 405 too).
pub(super) fn serve(method: &Method, path: &str) -> Option<Response<Body>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let path = if path == "/index.html" { "/" } else { path };
    let asset = ASSETS.iter().find(|asset| asset.path == path)?;
    let body = if method == Method::HEAD {
        Empty::new().boxed_unsync()
    } else {
        Full::new(Bytes::from_static(asset.body)).boxed_unsync()
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_served_with_their_type_and_security_headers() {
        let response = serve(&Method::GET, "/assets/app.js").unwrap();
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            headers[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'")
        );
        assert!(serve(&Method::GET, "/index.html").is_some());
    }

    #[test]
    fn unknown_paths_and_other_methods_are_not_assets() {
        assert!(serve(&Method::GET, "/assets/missing.js").is_none());
        assert!(serve(&Method::POST, "/").is_none());
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style() {
        let page = std::str::from_utf8(include_bytes!("dashboard/index.html")).unwrap();
        assert!(
            !page.contains("<script>"),
            "inline scripts are refused by the CSP"
        );
        assert!(
            !page.contains("style="),
            "inline styles are refused by the CSP"
        );
    }
}
