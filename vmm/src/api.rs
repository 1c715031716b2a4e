//! The control API's wire format: HTTP/1.1 requests with JSON bodies on a Unix
//! socket, so `curl --unix-socket S http://oslet/v1/oslets` works. Every request is
//! parsed with hard limits and never panics; `docs/API.md` lists the calls.

/// Longest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without query.
    pub path: String,
    /// The body (empty unless Content-Length says otherwise).
    pub body: Vec<u8>,
}

/// Why a request is refused, with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Not HTTP/1.x, bad request line or header.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Head or body over the limits.
    #[error("request too large")]
    TooLarge,
    /// The request is not complete yet.
    #[error("incomplete request")]
    Incomplete,
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Malformed(_) | ApiError::Incomplete => 400,
            ApiError::TooLarge => 413,
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parses one request from `buf` (everything read so far). `Incomplete` means read more.
pub fn parse(buf: &[u8]) -> Result<Request, ApiError> {
    let Some(head_end) = find_head_end(buf) else {
        return Err(if buf.len() > MAX_HEAD {
            ApiError::TooLarge
        } else {
            ApiError::Incomplete
        });
    };
    if head_end > MAX_HEAD {
        return Err(ApiError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end - 4])
        .map_err(|_| ApiError::Malformed("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or(ApiError::Malformed("no request line"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::Malformed(
            "request line is not METHOD PATH VERSION",
        ));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ApiError::Malformed("not HTTP/1.x"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::Malformed("bad method"));
    }
    if !target.starts_with('/') {
        return Err(ApiError::Malformed("path must start with /"));
    }
    let mut length = 0usize;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(ApiError::Malformed("header without a colon"))?;
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| ApiError::Malformed("bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ApiError::Malformed(
                "chunked bodies are not accepted; send Content-Length",
            ));
        }
    }
    if length > MAX_BODY {
        return Err(ApiError::TooLarge);
    }
    let body_end = head_end.checked_add(length).ok_or(ApiError::TooLarge)?;
    if buf.len() < body_end {
        return Err(ApiError::Incomplete);
    }
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Request {
        method: method.to_string(),
        path,
        body: buf[head_end..body_end].to_vec(),
    })
}

/// What a request asks the supervisor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `GET /v1/oslets`.
    List,
    /// `GET /v1/oslets/NAME`.
    Show(String),
    /// `POST /v1/oslets/NAME/stop`.
    Stop(String),
    /// `POST /v1/oslets/NAME/start`.
    Start(String),
    /// `POST /v1/oslets/NAME/restart`.
    Restart(String),
    /// `GET /v1/oslets/NAME/logs`.
    Logs(String),
    /// `POST /v1/down`.
    Down,
    /// `GET /v1/ping`: is the supervisor alive.
    Ping,
    /// `GET /v1/links`: every link and the bytes each side has sent.
    Links,
    /// `POST /v1/oslets/NAME/console`: attach to its serial console (the connection
    /// becomes the console's byte stream after a 101 answer).
    Console(String),
}

/// Maps a request to a call, or (status, message).
pub fn route(req: &Request) -> Result<Call, (u16, String)> {
    let segs: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
    let call = match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["v1", "ping"]) => Call::Ping,
        ("GET", ["v1", "oslets"]) => Call::List,
        ("GET", ["v1", "links"]) => Call::Links,
        ("GET", ["v1", "oslets", name]) => Call::Show(name.to_string()),
        ("GET", ["v1", "oslets", name, "logs"]) => Call::Logs(name.to_string()),
        ("POST", ["v1", "oslets", name, "stop"]) => Call::Stop(name.to_string()),
        ("POST", ["v1", "oslets", name, "start"]) => Call::Start(name.to_string()),
        ("POST", ["v1", "oslets", name, "restart"]) => Call::Restart(name.to_string()),
        ("POST", ["v1", "oslets", name, "console"]) => Call::Console(name.to_string()),
        ("POST", ["v1", "down"]) => Call::Down,
        (_, ["v1", "ping" | "oslets" | "links" | "down", ..]) => {
            return Err((
                405,
                format!(
                    "{} {} is not an oslet API call; see docs/API.md",
                    req.method, req.path
                ),
            ))
        }
        _ => {
            return Err((
                404,
                format!("no such API path {}; see docs/API.md", req.path),
            ))
        }
    };
    Ok(call)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// A whole HTTP response.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error response: `{"error": "..."}`.
pub fn error_response(status: u16, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    response(status, "application/json", body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_curl_style_get_parses_and_routes() {
        let r = parse(b"GET /v1/oslets HTTP/1.1\r\nHost: oslet\r\nUser-Agent: curl/7.88\r\nAccept: */*\r\n\r\n").unwrap();
        assert_eq!(route(&r), Ok(Call::List));
    }

    #[test]
    fn a_post_with_a_body_waits_for_the_whole_body() {
        let full = b"POST /v1/oslets/db/stop HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse(&full[..full.len() - 1]), Err(ApiError::Incomplete));
        let r = parse(full).unwrap();
        assert_eq!(r.body, b"{}");
        assert_eq!(route(&r), Ok(Call::Stop("db".into())));
    }

    #[test]
    fn oversized_and_malformed_requests_are_refused() {
        assert_eq!(parse(&vec![b'a'; MAX_HEAD + 1]), Err(ApiError::TooLarge));
        assert_eq!(
            parse(b"POST /v1/down HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            Err(ApiError::TooLarge)
        );
        assert!(matches!(
            parse(b"GET /v1/oslets SPDY/3\r\n\r\n"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"get /v1 HTTP/1.1\r\n\r\n"),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET /v1 HTTP/1.1\r\nNoColon\r\n\r\n"),
            Err(ApiError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        let r = parse(b"GET /v2/x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&r).unwrap_err().0, 404);
        let r = parse(b"DELETE /v1/oslets/db HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(route(&r).unwrap_err().0, 405);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(r) = parse(&bytes) {
                let _ = route(&r);
            }
        }

        #[test]
        fn mutated_valid_requests_never_panic(pos in 0usize..80, byte in any::<u8>()) {
            let mut req = b"POST /v1/oslets/alpha/restart HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec();
            let p = pos % req.len();
            req[p] = byte;
            if let Ok(r) = parse(&req) {
                let _ = route(&r);
            }
        }
    }
}
