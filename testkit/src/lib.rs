//! A redis-server of the caller's own, on a free port, that it can kill,
//! pause with SIGSTOP, restart or fill: for fusebox's tests, examples and
//! benches alike, so that none of them keeps a copy.
//!
//! Nothing here depends on fusebox or on a Redis client: commands go over a
//! plain TCP socket in RESP2, so a test can check what reached Redis without
//! trusting the code under test.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod cluster;
mod sentinel;

pub use cluster::RedisCluster;
pub use sentinel::RedisSentinel;

/// The one line a caller prints when `redis-server` cannot be started.
pub const INSTALL_HINT: &str = "install redis-server with `sudo apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)";

/// A redis-server child process on 127.0.0.1, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    /// A config file's text, written to the server's directory before its
    /// first start and passed first (Sentinel needs one it can rewrite).
    conf: Option<String>,
    paused: bool,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl RedisServer {
    /// Starts a server with no persistence, plus `extra` arguments
    /// (e.g. `["--maxmemory", "2mb"]`), and waits until it answers.
    ///
    /// # Panics
    ///
    /// If `redis-server` cannot be started, with [`INSTALL_HINT`].
    pub fn start(extra: &[&str]) -> Self {
        Self::try_start(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`start`](Self::start), saying why not instead of panicking:
    /// examples and benches fall back to what runs without Redis.
    pub fn try_start(extra: &[&str]) -> Result<Self, String> {
        Self::try_start_on(free_port(), extra)
    }

    /// As [`try_start`](Self::try_start), on `port`.
    pub fn try_start_on(port: u16, extra: &[&str]) -> Result<Self, String> {
        let mut server = RedisServer {
            child: None,
            port,
            args: extra.iter().map(|s| s.to_string()).collect(),
            conf: None,
            paused: false,
        };
        server.spawn()?;
        Ok(server)
    }

    /// As [`try_start_on`](Self::try_start_on), with a config file of text
    /// `conf` given first (kept across restarts, as the server rewrote it).
    pub fn try_start_with_conf(port: u16, conf: &str, extra: &[&str]) -> Result<Self, String> {
        let mut server = RedisServer {
            child: None,
            port,
            args: extra.iter().map(|s| s.to_string()).collect(),
            conf: Some(conf.to_owned()),
            paused: false,
        };
        server.spawn()?;
        Ok(server)
    }

    /// This server's own directory: nothing it saves is loaded by another
    /// (a `dump.rdb` in the working directory would be).
    fn dir(&self) -> std::path::PathBuf {
        let name = format!("fusebox-redis-{}-{}", std::process::id(), self.port);
        std::env::temp_dir().join(name)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("a directory for redis-server: {e}"))?;
        let mut command = Command::new("redis-server");
        if let Some(text) = &self.conf {
            let file = dir.join("redis.conf");
            if !file.exists() {
                std::fs::write(&file, text).map_err(|e| format!("a config file: {e}"))?;
            }
            command.arg(file);
        }
        let child = command
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&dir)
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server ({e}): {INSTALL_HINT}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("redis-server on port {port} exited at start ({status}): are its arguments valid for this version?"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!(
            "redis-server on port {port} did not answer within 10 s"
        ))
    }

    /// The port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command over a fresh connection (RESP2, inline), returning
    /// the raw reply line(s). Bounded by a 2 s timeout.
    pub fn cmd(&self, args: &[&str]) -> String {
        raw_command(self.port, args, None).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// As [`cmd`](Self::cmd), saying why not instead of panicking (a killed
    /// or paused server).
    pub fn try_cmd(&self, args: &[&str]) -> Result<String, String> {
        if self.child.is_none() {
            return Err(format!("redis-server on port {} is not running", self.port));
        }
        raw_command(self.port, args, None).map_err(|e| format!("{args:?}: {e}"))
    }

    /// As [`cmd`](Self::cmd), authenticating first.
    pub fn cmd_auth(&self, password: &str, args: &[&str]) -> String {
        raw_command(self.port, args, Some(password)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn ping(&self) -> bool {
        raw_command(self.port, &["PING"], None)
            .is_ok_and(|r| r.contains("PONG") || r.contains("NOAUTH"))
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
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
    ///
    /// # Panics
    ///
    /// If it does not come back within 10 s.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGSTOP: the kernel still accepts connections; nothing answers.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child, "STOP");
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal(child, "CONT");
            self.paused = false;
        }
    }
}

/// Runs one command on the server at 127.0.0.1:`port` over a fresh
/// connection (RESP2), as [`RedisServer::cmd`] does, from any thread.
pub fn command(port: u16, args: &[&str]) -> Result<String, String> {
    raw_command(port, args, None).map_err(|e| format!("{args:?}: {e}"))
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
