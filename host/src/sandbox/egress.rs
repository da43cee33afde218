//! The egress proxy: the only way to the network for a tool with an
//! `egress` list. It is an HTTP `CONNECT` proxy on the host's loopback,
//! started for one tool invocation, that opens tunnels to the listed
//! `host:port` pairs and refuses everything else (plain-HTTP requests
//! included); landlock lets the tool connect to the proxy's port and no
//! other. A target can therefore not turn such a tool against internal
//! hosts, whatever its manifests or configuration say.
//!
//! Refused and opened tunnels are recorded so the run's audit says what the
//! tool tried to reach.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to an allowed host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `name:port` as configured: a host name or IP literal (`[v6]:port`) and a
/// port.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("`{s}` is not `host:port` (for example `index.crates.io:443`)");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        (host, port)
    } else {
        s.rsplit_once(':').ok_or_else(bad)?
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !valid || port == 0 {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// What a proxy saw.
#[derive(Debug, Clone, Default)]
pub struct EgressLog {
    /// Tunnels opened, as `host:port`.
    pub opened: Vec<String>,
    /// Requests refused, as `host:port` (or the request line).
    pub refused: Vec<String>,
}

/// A running proxy; dropping it closes the listener and every tunnel.
pub struct EgressProxy {
    port: u16,
    log: Arc<Mutex<EgressLog>>,
    stop: CancellationToken,
}

impl EgressProxy {
    /// Starts a proxy on `127.0.0.1` (an ephemeral port) allowing `allow`;
    /// must be called within a tokio runtime.
    pub fn start(allow: Vec<(String, u16)>) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let port = listener.local_addr()?.port();
        let log = Arc::new(Mutex::new(EgressLog::default()));
        let stop = CancellationToken::new();
        let allow = Arc::new(allow);
        {
            let (log, stop) = (log.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stop.cancelled() => break,
                    };
                    let Ok((client, _)) = accepted else { continue };
                    let (allow, log, stop) = (allow.clone(), log.clone(), stop.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = serve(client, &allow, &log) => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            });
        }
        Ok(EgressProxy { port, log, stop })
    }

    /// The loopback port the tool must use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, for the tool's proxy settings.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What was opened and refused so far.
    pub fn log(&self) -> EgressLog {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(mut client: TcpStream, allow: &[(String, u16)], log: &Mutex<EgressLog>) {
    let record = |refused: bool, what: String| {
        let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
        if refused {
            l.refused.push(what);
        } else {
            l.opened.push(what);
        }
    };
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Some(h)) => h,
        _ => return,
    };
    let line = head.lines().next().unwrap_or_default().to_string();
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !method.eq_ignore_ascii_case("CONNECT") {
        record(true, crate::text::clip_bytes(line.clone(), 256));
        let _ = refuse(
            &mut client,
            "405 Method Not Allowed",
            "only CONNECT tunnels (HTTPS) are allowed",
        )
        .await;
        return;
    }
    let wanted = match parse_host_port(target) {
        Ok(w) => w,
        Err(e) => {
            record(true, crate::text::clip_bytes(target.to_string(), 256));
            let _ = refuse(&mut client, "400 Bad Request", &e).await;
            return;
        }
    };
    let shown = format!("{}:{}", wanted.0, wanted.1);
    if !allow.contains(&wanted) {
        record(true, shown.clone());
        let _ = refuse(
            &mut client,
            "403 Forbidden",
            &format!("egress to {shown} is not allowed for this tool"),
        )
        .await;
        return;
    }
    let upstream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((wanted.0.as_str(), wanted.1)),
    )
    .await;
    let mut upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = refuse(
                &mut client,
                "502 Bad Gateway",
                &format!("cannot reach {shown}: {e}"),
            )
            .await;
            return;
        }
        Err(_) => {
            let _ = refuse(
                &mut client,
                "504 Gateway Timeout",
                &format!("{shown} did not answer"),
            )
            .await;
            return;
        }
    };
    record(false, shown);
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads up to the end of the request head (`\r\n\r\n`); `None` when the
/// client closed, sent garbage or too much.
async fn read_head(client: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the head may be consumed (the TLS
    // handshake follows it on the same connection).
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() >= MAX_HEAD || client.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    String::from_utf8(buf).ok()
}

async fn refuse(client: &mut TcpStream, status: &str, why: &str) -> std::io::Result<()> {
    let body = format!("toolhost egress proxy: {why}\n");
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(reply.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            parse_host_port("Index.Crates.io:443").unwrap(),
            ("index.crates.io".into(), 443)
        );
        assert_eq!(parse_host_port("[::1]:8080").unwrap(), ("::1".into(), 8080));
        for bad in ["crates.io", "a:b", "a:0", ":443", "a b:1", "host:70000"] {
            assert!(
                parse_host_port(bad).unwrap_err().contains("host:port"),
                "{bad}"
            );
        }
    }

    async fn ask(port: u16, request: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = vec![0u8; 512];
        let n = s.read(&mut out).await.unwrap();
        String::from_utf8_lossy(&out[..n]).into_owned()
    }

    #[tokio::test]
    async fn only_allowed_tunnels_open() {
        // An "internal service" the proxy must not reach, and an allowed one.
        let internal = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let internal_port = internal.local_addr().unwrap().port();
        let allowed = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let allowed_port = allowed.local_addr().unwrap().port();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = allowed.accept().await {
                let mut b = [0u8; 4];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(b"pong").await;
                }
            }
        });
        let proxy = EgressProxy::start(vec![("127.0.0.1".into(), allowed_port)]).unwrap();

        let denied = ask(
            proxy.port(),
            &format!("CONNECT 127.0.0.1:{internal_port} HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .await;
        assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
        let plain = ask(proxy.port(), "GET http://127.0.0.1/ HTTP/1.1\r\n\r\n").await;
        assert!(plain.starts_with("HTTP/1.1 405"), "{plain}");

        let mut s = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        s.write_all(format!("CONNECT 127.0.0.1:{allowed_port} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = vec![0u8; 39];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200 Connection established\r\n\r\n");
        s.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        s.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");

        let log = proxy.log();
        assert_eq!(log.opened, [format!("127.0.0.1:{allowed_port}")]);
        assert_eq!(log.refused.len(), 2, "{:?}", log.refused);
        assert!(log.refused[0].ends_with(&internal_port.to_string()));
        // Nothing ever reached the internal service.
        let accepted = tokio::time::timeout(Duration::from_millis(200), internal.accept()).await;
        assert!(accepted.is_err(), "the proxy connected to a refused host");
    }
}
