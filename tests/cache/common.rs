//! A redis-server of each test's own, on a free port, that the test can
//! kill, pause, restart or fill; and the metrics the cache emits.
#![allow(dead_code)] // shared by several test binaries, each using part of it

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A redis-server child process on 127.0.0.1, killed on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    paused: bool,
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl RedisServer {
    /// Starts a server with no persistence, plus `extra` arguments
    /// (e.g. `["--maxmemory", "2mb"]`), and waits until it answers.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            paused: false,
        };
        server.spawn();
        server
    }

    /// This server's own directory: nothing it saves is loaded by another
    /// (a `dump.rdb` in the working directory would be).
    fn dir(&self) -> std::path::PathBuf {
        let name = format!("fusebox-redis-{}-{}", std::process::id(), self.port);
        std::env::temp_dir().join(name)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir();
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&dir)
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it with `sudo apt-get install redis-server`"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command over a fresh connection (RESP2, inline), returning
    /// the raw reply line(s). Bounded by a 2 s timeout.
    pub(crate) fn cmd(&self, args: &[&str]) -> String {
        raw_command(self.port, args, None).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// As [`cmd`](Self::cmd), authenticating first.
    pub(crate) fn cmd_auth(&self, password: &str, args: &[&str]) -> String {
        raw_command(self.port, args, Some(password)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn ping(&self) -> bool {
        raw_command(self.port, &["PING"], None)
            .is_ok_and(|r| r.contains("PONG") || r.contains("NOAUTH"))
    }

    /// SIGKILL, and wait for the process to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(&child, "CONT");
                self.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the kernel still accepts connections; nothing answers.
    pub(crate) fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child, "STOP");
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub(crate) fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal(child, "CONT");
            self.paused = false;
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} failed");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

fn raw_command(port: u16, args: &[&str], password: Option<&str>) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("address"),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut send = |args: &[&str]| -> std::io::Result<()> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(out.as_bytes())
    };
    let mut replies = 1;
    if let Some(p) = password {
        send(&["AUTH", p])?;
        replies += 1;
    }
    send(args)?;
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    for _ in 0..replies {
        text.clear();
        read_reply(&mut reader, &mut text)?;
    }
    Ok(text)
}

/// Reads one RESP2 reply into `out` (bulk strings as their text).
fn read_reply(r: &mut impl BufRead, out: &mut String) -> std::io::Result<()> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::other("connection closed"));
    }
    let body = line.trim_end().to_owned();
    match body.as_bytes().first() {
        Some(b'$') => {
            let n: i64 = body[1..].parse().map_err(std::io::Error::other)?;
            if n < 0 {
                out.push_str("(nil)");
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                out.push_str(&String::from_utf8_lossy(&buf[..n as usize]));
            }
        }
        Some(b'*') => {
            let n: i64 = body[1..].parse().map_err(std::io::Error::other)?;
            for _ in 0..n.max(0) {
                read_reply(r, out)?;
                out.push('\n');
            }
        }
        _ => out.push_str(&body),
    }
    Ok(())
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snapshotter
    })
}

/// Installs the test binary's metrics recorder (call before building).
pub(crate) fn metrics() {
    snapshotter();
}

/// Counter totals and the last gauge values so far: a snapshot drains the
/// recorder (counters and gauges read 0 after it), so they are kept here.
#[derive(Default)]
struct Seen {
    counters: Vec<(metrics::Key, u64)>,
    /// The last value other than 0 each gauge was read at.
    gauges: Vec<(metrics::Key, f64)>,
}

fn seen() -> std::sync::MutexGuard<'static, Seen> {
    static SEEN: Mutex<Seen> = Mutex::new(Seen {
        counters: Vec::new(),
        gauges: Vec::new(),
    });
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key().clone();
        match value {
            DebugValue::Counter(n) => match seen.counters.iter_mut().find(|(k, _)| *k == key) {
                Some((_, total)) => *total += n,
                None => seen.counters.push((key, n)),
            },
            DebugValue::Gauge(v) if v.into_inner() != 0.0 => {
                let v = v.into_inner();
                match seen.gauges.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, last)) => *last = v,
                    None => seen.gauges.push((key, v)),
                }
            }
            _ => {}
        }
    }
    seen
}

fn matches(key: &metrics::Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

/// The sum of counter `name` over every label set containing all of
/// `labels`.
pub(crate) fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    seen()
        .counters
        .iter()
        .filter(|(key, _)| matches(key, name, labels))
        .map(|(_, n)| n)
        .sum()
}

/// The last value (other than 0) of gauge `name` with `labels`, if any.
pub(crate) fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    seen()
        .gauges
        .iter()
        .find(|(key, _)| matches(key, name, labels))
        .map(|(_, v)| *v)
}

/// A Redis configuration whose deadlines fit a loaded 2-core machine, for
/// tests where what is tested is which calls fail, not how fast.
pub(crate) fn roomy(url: &str) -> fusebox::redis::RedisConfig {
    fusebox::redis::RedisConfig::builder(url)
        .connect_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(300))
        .build()
        .expect("a valid configuration")
}

/// Runs `f` until it returns true, for at most `limit`; returns whether it
/// did.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Every metric key seen so far, names and labels, as text.
pub(crate) fn metric_keys() -> Vec<String> {
    let seen = seen();
    let counters = seen.counters.iter().map(|(k, _)| k);
    let gauges = seen.gauges.iter().map(|(k, _)| k);
    counters.chain(gauges).map(|k| format!("{k:?}")).collect()
}
