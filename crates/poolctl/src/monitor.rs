//! Reading live pool stats from a running poolkit monitor (`GET /pools`).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::error::Error;

/// What the monitor says about one pool's demand right now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct LiveDemand {
    /// Pool name.
    pub(crate) pool: String,
    /// Backend.
    pub(crate) backend: String,
    /// Connections in use.
    pub(crate) used: u64,
    /// Callers waiting.
    pub(crate) pending: u64,
    /// The pool's ceiling.
    pub(crate) max_size: u32,
    /// p95 acquire wait, seconds.
    pub(crate) wait_p95: f64,
    /// Acquire timeouts so far.
    pub(crate) timeouts: u64,
}

/// Splits `http://host:port[/base]` into the authority and the base path.
fn split_url(url: &str) -> Result<(String, String), Error> {
    let bad = || {
        Error::Usage(format!(
            "--monitor `{url}`: expected http://host:port of a poolkit monitor (https is not supported here)"
        ))
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

/// Fetches `/pools` from the monitor at `url` and reads each pool's demand.
/// `POOLKIT_MONITOR_TOKEN` is sent as a bearer token when set.
pub(crate) async fn fetch(url: &str) -> Result<Vec<LiveDemand>, Error> {
    let (authority, base) = split_url(url)?;
    let failed = |why: String| Error::Failed(format!("monitor at {url}: {why}"));
    let token = poolkit_core::env::process_lookup("POOLKIT_MONITOR_TOKEN");
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| failed(format!("cannot connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(conn);
        let mut req =
            hyper::Request::get(format!("{base}/pools")).header(hyper::header::HOST, &authority);
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(failed(format!(
                "GET {base}/pools answered {status}{}",
                if status == hyper::StatusCode::UNAUTHORIZED {
                    " (set POOLKIT_MONITOR_TOKEN)"
                } else {
                    ""
                }
            )));
        }
        parse(&body).map_err(failed)
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| failed("no answer within 10 s".into()))?
}

/// Reads the `/pools` JSON body.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<LiveDemand>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let pools = v
        .get("pools")
        .and_then(|p| p.as_array())
        .ok_or("no `pools` array in the answer")?;
    let u =
        |s: &serde_json::Value, k: &str| s.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    Ok(pools
        .iter()
        .filter_map(|p| {
            let s = p.get("stats")?;
            Some(LiveDemand {
                pool: p.get("name")?.as_str()?.to_owned(),
                backend: p
                    .get("backend")
                    .and_then(|b| b.as_str())
                    .unwrap_or("")
                    .to_owned(),
                used: u(s, "used"),
                pending: u(s, "pending"),
                max_size: u32::try_from(u(s, "max_size")).unwrap_or(u32::MAX),
                wait_p95: s
                    .get("wait")
                    .and_then(|w| w.get("p95"))
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(0.0),
                timeouts: u(s, "timeouts"),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9090").unwrap(),
            ("127.0.0.1:9090".into(), String::new())
        );
        assert_eq!(
            split_url("http://h/mon/").unwrap(),
            ("h:80".into(), "/mon".into())
        );
        assert!(split_url("https://h").is_err());
        assert!(split_url("http://user:pw@h").is_err());
    }
}
