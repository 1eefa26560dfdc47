//! The web page, served from the binary: one HTML file, its script, diff
//! and style, and the reference Braid-HTTP client (`braid-http` 1.3.80 from
//! npm, unmodified; see `page/vendor/README.md`).

/// The page's files by name: content type and bytes.
pub(crate) fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match name {
        "index.html" => ("text/html; charset=utf-8", include_bytes!("../page/index.html")),
        "app.js" => ("text/javascript; charset=utf-8", include_bytes!("../page/app.js")),
        "style.css" => ("text/css; charset=utf-8", include_bytes!("../page/style.css")),
        "diff.js" => ("text/javascript; charset=utf-8", include_bytes!("../page/diff.js")),
        "braid-http-client.js" => ("text/javascript; charset=utf-8", include_bytes!("../page/vendor/braid-http-client.js")),
        _ => return None,
    })
}
