//! Braid-HTTP on the wire, as the `braid-http` reference client speaks it
//! (draft-toomim-httpbis-braid-http-04): version lists, text ranges, the
//! patches of a PUT and the updates of a subscription. Pure: no I/O.

// Parses what clients send: no slicing or indexing that can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

/// Most versions a `Version` or `Parents` header may list.
pub const MAX_VERSIONS: usize = 64;
/// Longest version string taken.
pub const MAX_VERSION_LEN: usize = 256;
/// Most patches one PUT may carry.
pub const MAX_PATCHES: usize = 10_000;
/// Longest header line inside a `Patches: N` body.
const MAX_PATCH_HEADER: usize = 1024;

/// Why a Braid header or body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// `Version` or `Parents` is not a list of quoted strings.
    #[error("{0}: expected a list of quoted strings, such as \"a-1\", \"b-2\"")]
    VersionList(&'static str),
    /// Too many versions in one header, or one too long.
    #[error("{0}: more than {MAX_VERSIONS} versions, or one longer than {MAX_VERSION_LEN} bytes")]
    TooManyVersions(&'static str),
    /// `Content-Range` is not `text [START:END]`.
    #[error("Content-Range {0:?}: expected `text [START:END]` in Unicode code points")]
    Range(String),
    /// A range in another unit.
    #[error("Content-Range unit {0:?}: only `text` ranges are taken")]
    Unit(String),
    /// `Patches` is not a count.
    #[error("Patches: {0:?} is not a count")]
    PatchCount(String),
    /// Over [`MAX_PATCHES`].
    #[error("more than {MAX_PATCHES} patches in one update")]
    TooManyPatches,
    /// A block of a `Patches: N` body is malformed.
    #[error("patch {index} of the body: {why}")]
    PatchBlock {
        /// Which block (from 0).
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Patch content that is not UTF-8.
    #[error("patch content is not UTF-8 text")]
    NotUtf8,
    /// `Content-Range` and `Patches` together.
    #[error("Content-Range and Patches together: one patch in the headers, or several in the body")]
    RangeAndPatches,
}

/// A text patch: replace code points `start..end` of the text it was made
/// on with `content`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patch {
    /// First code point replaced.
    pub start: usize,
    /// One past the last code point replaced.
    pub end: usize,
    /// The new text.
    pub content: String,
}

/// What a PUT carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutBody {
    /// No range: the whole new content.
    Whole(Vec<u8>),
    /// Patches on the parents' text, all in its coordinates.
    Patches(Vec<Patch>),
}

/// Parses a `Version` or `Parents` header: comma-separated quoted strings
/// (structured-field strings, which the reference client writes as JSON
/// strings with non-ASCII escaped). An empty value is an empty list.
pub fn parse_versions(header: &'static str, value: &str) -> Result<Vec<String>, WireError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = serde_json::from_str(&format!("[{value}]")).map_err(|_| WireError::VersionList(header))?;
    if list.len() > MAX_VERSIONS || list.iter().any(|v| v.len() > MAX_VERSION_LEN) {
        return Err(WireError::TooManyVersions(header));
    }
    Ok(list)
}

/// A version list as a header value: JSON strings, non-ASCII escaped (as
/// the reference implementation writes them), comma-separated.
pub fn format_versions(versions: &[String]) -> String {
    versions.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")
}

/// One string as a quoted, ASCII-only header token.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// Parses `text [START:END]`.
pub fn parse_text_range(value: &str) -> Result<(usize, usize), WireError> {
    let value = value.trim();
    let (unit, range) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !unit.eq_ignore_ascii_case("text") {
        return Err(WireError::Unit(unit.to_owned()));
    }
    let bad = || WireError::Range(value.to_owned());
    let inner = range.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')).ok_or_else(bad)?;
    let (a, b) = inner.split_once(':').ok_or_else(bad)?;
    let start: usize = a.trim().parse().map_err(|_| bad())?;
    let end: usize = b.trim().parse().map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    Ok((start, end))
}

/// What a PUT's `Content-Range` and `Patches` headers and its body say.
pub fn parse_put(content_range: Option<&str>, patches: Option<&str>, body: Vec<u8>) -> Result<PutBody, WireError> {
    if content_range.is_some() && patches.is_some() {
        return Err(WireError::RangeAndPatches);
    }
    if let Some(n) = patches {
        let count: usize = n.trim().parse().map_err(|_| WireError::PatchCount(n.to_owned()))?;
        if count > MAX_PATCHES {
            return Err(WireError::TooManyPatches);
        }
        return parse_patch_blocks(count, &body).map(PutBody::Patches);
    }
    match content_range {
        Some(r) => {
            let (start, end) = parse_text_range(r)?;
            let content = String::from_utf8(body).map_err(|_| WireError::NotUtf8)?;
            Ok(PutBody::Patches(vec![Patch { start, end, content }]))
        }
        None => Ok(PutBody::Whole(body)),
    }
}

/// `count` blocks of `Content-Length` and `Content-Range` headers, a blank
/// line and the content, separated by blank lines.
fn parse_patch_blocks(count: usize, mut rest: &[u8]) -> Result<Vec<Patch>, WireError> {
    let mut out = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let bad = |why: &'static str| WireError::PatchBlock { index, why };
        while let Some((b'\r' | b'\n', tail)) = rest.split_first() {
            rest = tail;
        }
        let (mut length, mut range) = (None, None);
        loop {
            let eol = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("headers without an end"))?;
            if eol > MAX_PATCH_HEADER {
                return Err(bad("header line too long"));
            }
            let (line, tail) = rest.split_at(eol);
            rest = tail.get(1..).unwrap_or_default();
            let line = std::str::from_utf8(line).map_err(|_| bad("header not UTF-8"))?.trim_end_matches('\r');
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| bad("header line without a colon"))?;
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = Some(value.trim().parse::<usize>().map_err(|_| bad("bad content-length"))?),
                "content-range" => range = Some(parse_text_range(value)?),
                _ => {}
            }
        }
        let length = length.ok_or_else(|| bad("no content-length"))?;
        let (start, end) = range.ok_or_else(|| bad("no content-range"))?;
        if length > rest.len() {
            return Err(bad("content shorter than its content-length"));
        }
        let (content, tail) = rest.split_at(length);
        rest = tail;
        let content = String::from_utf8(content.to_vec()).map_err(|_| WireError::NotUtf8)?;
        out.push(Patch { start, end, content });
    }
    Ok(out)
}

/// One update of a subscription (or the body of a multiresponse).
#[derive(Clone, Debug, Default)]
pub struct Update<'a> {
    /// The version it produces.
    pub version: &'a [String],
    /// The version it was made on (empty: a snapshot).
    pub parents: &'a [String],
    /// A whole body (a snapshot); else `patches`.
    pub body: Option<&'a [u8]>,
    /// Patches on the parents' text.
    pub patches: &'a [Patch],
    /// `Content-Type` of a body.
    pub content_type: Option<&'a str>,
}

/// An update as a block of a `209 Multiresponse` stream: a status line,
/// headers (`Parents` always, empty for a snapshot: clients read it), the
/// body or patches, and a blank line pair before the next.
pub fn encode_update(u: &Update<'_>) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut head =
        format!("HTTP 200 OK\r\nVersion: {}\r\nParents: {}\r\n", format_versions(u.version), format_versions(u.parents));
    if let Some(t) = u.content_type {
        head.push_str(&format!("Content-Type: {t}\r\n"));
    }
    match (u.body, u.patches) {
        (Some(body), _) => {
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(body);
        }
        (None, [one]) => {
            head.push_str(&format!(
                "Content-Length: {}\r\nContent-Range: text [{}:{}]\r\n\r\n",
                one.content.len(),
                one.start,
                one.end
            ));
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(one.content.as_bytes());
        }
        (None, patches) => {
            head.push_str(&format!("Patches: {}\r\n\r\n", patches.len()));
            out.extend_from_slice(head.as_bytes());
            for (i, p) in patches.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"\r\n\r\n");
                }
                out.extend_from_slice(
                    format!("Content-Length: {}\r\nContent-Range: text [{}:{}]\r\n\r\n", p.content.len(), p.start, p.end)
                        .as_bytes(),
                );
                out.extend_from_slice(p.content.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::string_slice, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn version_lists_parse_as_the_reference_client_writes_them() {
        assert_eq!(parse_versions("Version", "\"alice-4\"").unwrap(), vec!["alice-4"]);
        assert_eq!(parse_versions("Parents", "\"a-1\", \"b-2\"").unwrap(), vec!["a-1", "b-2"]);
        assert_eq!(parse_versions("Parents", "").unwrap(), Vec::<String>::new());
        assert_eq!(parse_versions("Parents", "\"\\u00e9-1\"").unwrap(), vec!["é-1"]);
        for bad in ["alice-4", "\"a", "\"a\",", "[\"a\"]", "1, 2", "\"a\" \"b\""] {
            assert_eq!(parse_versions("Parents", bad), Err(WireError::VersionList("Parents")), "{bad:?}");
        }
        let many = vec!["\"x\""; MAX_VERSIONS + 1].join(",");
        assert_eq!(parse_versions("Parents", &many), Err(WireError::TooManyVersions("Parents")));
        let long = format!("\"{}\"", "x".repeat(MAX_VERSION_LEN + 1));
        assert_eq!(parse_versions("Parents", &long), Err(WireError::TooManyVersions("Parents")));
    }

    #[test]
    fn ranges_are_text_code_points() {
        assert_eq!(parse_text_range("text [5:5]"), Ok((5, 5)));
        assert_eq!(parse_text_range("text [2:7]"), Ok((2, 7)));
        assert_eq!(parse_text_range(" text  [ 2 : 7 ] "), Ok((2, 7)));
        assert!(matches!(parse_text_range("json .a"), Err(WireError::Unit(_))));
        for bad in ["text [7:2]", "text [a:b]", "text 2:7", "text [-1:2]", "text", "text [99999999999999999999:1]"] {
            assert!(matches!(parse_text_range(bad), Err(WireError::Range(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_put_is_a_whole_body_one_patch_or_patch_blocks() {
        assert_eq!(parse_put(None, None, b"abc".to_vec()), Ok(PutBody::Whole(b"abc".to_vec())));
        assert_eq!(
            parse_put(Some("text [1:2]"), None, "é".as_bytes().to_vec()),
            Ok(PutBody::Patches(vec![Patch { start: 1, end: 2, content: "é".into() }]))
        );
        // As braid-http's fetch writes several patches.
        let body = "content-length: 2\r\ncontent-range: text [0:0]\r\n\r\nhi\r\n\r\ncontent-length: 0\r\ncontent-range: text [3:5]\r\n\r\n\r\n";
        assert_eq!(
            parse_put(None, Some("2"), body.as_bytes().to_vec()),
            Ok(PutBody::Patches(vec![
                Patch { start: 0, end: 0, content: "hi".into() },
                Patch { start: 3, end: 5, content: String::new() },
            ]))
        );
        assert!(matches!(parse_put(None, Some("x"), Vec::new()), Err(WireError::PatchCount(_))));
        assert!(matches!(parse_put(None, Some("2"), b"content-length: 1\r\n".to_vec()), Err(WireError::PatchBlock { .. })));
        assert!(matches!(
            parse_put(None, Some("1"), b"content-length: 9\r\ncontent-range: text [0:0]\r\n\r\nab".to_vec()),
            Err(WireError::PatchBlock { index: 0, .. })
        ));
        assert_eq!(parse_put(Some("text [0:0]"), None, vec![0xff]), Err(WireError::NotUtf8));
        assert_eq!(parse_put(Some("text [0:0]"), Some("1"), Vec::new()), Err(WireError::RangeAndPatches));
    }

    #[test]
    fn updates_are_encoded_as_the_draft_shows() {
        let v = vec!["srv-4".to_owned()];
        let snap = encode_update(&Update {
            version: &v,
            body: Some(b"hello"),
            content_type: Some("text/plain"),
            ..Default::default()
        });
        assert_eq!(
            String::from_utf8(snap).unwrap(),
            "HTTP 200 OK\r\nVersion: \"srv-4\"\r\nParents: \r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello\r\n\r\n"
        );
        let (v2, p) = (vec!["bob-5".to_owned()], vec!["srv-4".to_owned()]);
        let one = [Patch { start: 5, end: 5, content: " world".into() }];
        let up = encode_update(&Update { version: &v2, parents: &p, patches: &one, ..Default::default() });
        assert_eq!(
            String::from_utf8(up).unwrap(),
            "HTTP 200 OK\r\nVersion: \"bob-5\"\r\nParents: \"srv-4\"\r\nContent-Length: 6\r\nContent-Range: text [5:5]\r\n\r\n world\r\n\r\n"
        );
    }

    #[test]
    fn non_ascii_versions_are_escaped_and_read_back() {
        let v = vec!["é\"\\😀-1".to_owned(), "plain:2".to_owned()];
        let header = format_versions(&v);
        assert!(header.is_ascii());
        assert_eq!(parse_versions("Version", &header).unwrap(), v);
    }

    proptest! {
        /// Any header value is a list or an error, never a panic.
        #[test]
        fn any_version_header_parses_or_fails(s in any::<String>()) {
            let _ = parse_versions("Parents", &s);
        }

        /// Any version list survives a round trip through a header.
        #[test]
        fn version_lists_round_trip(v in proptest::collection::vec(".{0,40}", 0..8)) {
            prop_assert_eq!(parse_versions("Version", &format_versions(&v)).unwrap(), v);
        }

        /// Any body parses to patches or an error, never a panic.
        #[test]
        fn any_patch_body_parses_or_fails(n in 0usize..5, body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_put(None, Some(&n.to_string()), body);
        }

        /// Patches encoded as blocks read back as they were.
        #[test]
        fn patch_blocks_round_trip(ps in proptest::collection::vec((0usize..100, 0usize..5, ".{0,6}"), 2..6)) {
            let patches: Vec<Patch> = ps.into_iter().map(|(s, l, c)| Patch { start: s, end: s + l, content: c }).collect();
            let v = vec!["v".to_owned()];
            let block = encode_update(&Update { version: &v, parents: &v, patches: &patches, ..Default::default() });
            let text = String::from_utf8(block).unwrap();
            let body = text.split_once("\r\n\r\n").unwrap().1;
            prop_assert_eq!(parse_put(None, Some(&patches.len().to_string()), body.as_bytes().to_vec()), Ok(PutBody::Patches(patches)));
        }
    }
}
