//! A pipe's two tasks, the writer and the reader, and its handshake.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::super::batch::answer_all;
use super::super::resp::{self, Read};
use super::super::slot::lock;
use super::{Phase, Pipe, PipeTarget, Taken};
use crate::backend::error::RedisError;

/// Gives the pipe's connection up when a task of it ends early (its
/// runtime shut down): the next call, on any runtime, makes a new one.
struct Ends<'a>(&'a Pipe, u64);

impl Drop for Ends<'_> {
    fn drop(&mut self) {
        self.0
            .give_up(self.1, RedisError::abandoned(), Phase::Idle, false);
    }
}

/// The pipe's writer: connects, then sends the queue, up to the batch size
/// a batch and [`DEPTH`] batches in flight, until the pipe is given up.
pub(super) async fn write(pipe: Arc<Pipe>, generation: u64) {
    let _ends = Ends(&pipe, generation);
    // Bounded by the first caller's deadline as well as the connect's.
    let first = lock(&pipe.state).queue.first().map(|w| w.deadline);
    let limit = Instant::now() + pipe.target.connect_timeout;
    let until = first.map_or(limit, |first| first.min(limit));
    let stream = match tokio::time::timeout_at(until, connect(&pipe.target)).await {
        Ok(Ok(stream)) => Arc::new(stream),
        // Refused a connection of its own (`maxclients`, a login the
        // redis-rs one passed with another handshake): this connection's
        // calls batch over redis-rs instead.
        Ok(Err(e)) => return pipe.hand_back(generation, e).await,
        Err(_) => return pipe.give_up(generation, RedisError::timeout(), Phase::Idle, false),
    };
    {
        let mut state = lock(&pipe.state);
        if state.generation != generation {
            return;
        }
        state.phase = Phase::Ready;
    }
    tokio::spawn(read(pipe.clone(), stream.clone(), generation));
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut late = Vec::new();
        let taken = {
            let mut state = lock(&pipe.state);
            if state.generation != generation {
                return;
            }
            pipe.take(&mut state, &mut out, &mut late)
        };
        answer_all(late, RedisError::timeout());
        let until = match taken {
            Taken::Nothing => {
                pipe.wake_writer.notified().await;
                // The callers woken with the one that woke this task run
                // first, and queue: they go out in this batch, not the next.
                tokio::task::yield_now().await;
                continue;
            }
            // Every call taken had given up or timed out.
            Taken::Answered => continue,
            Taken::Batch { until, first } => {
                if first {
                    pipe.wake_reader.notify_one();
                }
                until
            }
        };
        let mut at = 0;
        while at < out.len() {
            match stream.try_write(&out[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if tokio::time::timeout_at(until, stream.writable())
                        .await
                        .is_err()
                    {
                        return pipe.timed_out(generation);
                    }
                }
                Err(e) => return pipe.broken(generation, redis::RedisError::from(e).into()),
            }
        }
        out.clear();
        if out.capacity() > BIG {
            out = Vec::with_capacity(4096);
        }
    }
}

/// A buffer's size past which it is given back once empty (it held a
/// batch of large values).
const BIG: usize = 1 << 20;

/// The pipe's reader: answers the batches in flight in order, each within
/// its first caller's deadline.
async fn read(pipe: Arc<Pipe>, stream: Arc<TcpStream>, generation: u64) {
    let _ends = Ends(&pipe, generation);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0, 0);
    loop {
        // Answers every batch whose replies are all here.
        let deadline = loop {
            let (kind, n, deadline) = {
                let state = lock(&pipe.state);
                if state.generation != generation {
                    return;
                }
                match state.in_flight.front() {
                    Some(s) => (s.kind, s.callers.len(), s.deadline),
                    None => break None,
                }
            };
            let (answers, used) = match resp::read_batch(kind, n, &buf[start..end]) {
                Ok(Read::Partial) => break Some(deadline),
                Ok(Read::Answers(answers, used)) => (Ok(answers), used),
                Ok(Read::Failed(e, used)) => (Err(e), used),
                Err(resp::Malformed) => {
                    return pipe.broken(generation, RedisError::unexpected_reply());
                }
            };
            start += used;
            let (sent, wake) = {
                let mut state = lock(&pipe.state);
                if state.generation != generation {
                    return;
                }
                let sent = state.in_flight.pop_front().expect("the batch read");
                (sent, !state.queue.is_empty())
            };
            if wake {
                pipe.wake_writer.notify_one();
            }
            let conn = pipe.conn.upgrade();
            if let Some(conn) = &conn {
                conn.answered_many(sent.callers.len());
            }
            match answers {
                Ok(answers) => {
                    // The errors of one batch are one failure: the first
                    // counts, the others echo it.
                    let (mut failed, mut breaks) = (false, None);
                    for (caller, answer) in sent.callers.into_iter().zip(answers) {
                        let answer = match answer {
                            Err(e) if std::mem::replace(&mut failed, true) => Err(e.echo()),
                            answer => answer,
                        };
                        if let Err(e) = &answer {
                            if e.breaks_connection() {
                                breaks = Some(e.clone());
                            }
                        }
                        let _ = caller.send(answer);
                    }
                    if let Some(e) = breaks {
                        return pipe.broken(generation, e.echo());
                    }
                }
                Err(e) => {
                    let breaks = e.breaks_connection();
                    answer_all(sent.callers, e.clone());
                    if breaks {
                        return pipe.broken(generation, e.echo());
                    }
                }
            }
        };
        if start == end {
            (start, end) = (0, 0);
            if buf.len() > BIG {
                buf = vec![0u8; 64 * 1024];
            }
        }
        let Some(deadline) = deadline else {
            pipe.wake_reader.notified().await;
            continue;
        };
        // Room for more: the unread tail moved to the front, or the buffer
        // grown for a reply bigger than it.
        if end == buf.len() {
            if start > 0 {
                buf.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            } else {
                buf.resize(buf.len() * 2, 0);
            }
        }
        // Readiness first: a batch just sent is rarely answered yet, and a
        // read that finds nothing is a system call for nothing.
        if tokio::time::timeout_at(deadline, stream.readable())
            .await
            .is_err()
        {
            return pipe.timed_out(generation);
        }
        match stream.try_read(&mut buf[end..]) {
            Ok(0) => {
                let closed = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return pipe.broken(generation, redis::RedisError::from(closed).into());
            }
            Ok(n) => end += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return pipe.broken(generation, redis::RedisError::from(e).into()),
        }
    }
}

/// The name a pipe's connection has in `CLIENT LIST`.
const NAME: &str = "fusebox-batch";

/// Connects and logs in as the connection's own handshake did.
async fn connect(target: &PipeTarget) -> Result<TcpStream, RedisError> {
    let io = |e: std::io::Error| RedisError::from(redis::RedisError::from(e));
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let mut hello = Vec::new();
    // Whether each reply must be `OK` for the pipe to be used.
    let mut replies: Vec<bool> = Vec::with_capacity(4);
    if let Some(password) = &target.password {
        match &target.username {
            Some(user) => {
                resp::put_array(&mut hello, 3);
                resp::put_bulk(&mut hello, b"AUTH");
                resp::put_bulk(&mut hello, user.as_bytes());
            }
            None => {
                resp::put_array(&mut hello, 2);
                resp::put_bulk(&mut hello, b"AUTH");
            }
        }
        resp::put_bulk(&mut hello, password.as_bytes());
        replies.push(true);
    }
    if target.db != 0 {
        resp::put_array(&mut hello, 2);
        resp::put_bulk(&mut hello, b"SELECT");
        resp::put_bulk(&mut hello, target.db.to_string().as_bytes());
        replies.push(true);
    }
    // At least one reply, so that a Redis with no room for the connection
    // (`maxclients`) says so now, not to a batch.
    resp::put_array(&mut hello, 1);
    resp::put_bulk(&mut hello, b"PING");
    replies.push(true);
    // Named, so that `CLIENT LIST` tells it from the others (a user
    // without the right to name it still gets it).
    resp::put_array(&mut hello, 3);
    resp::put_bulk(&mut hello, b"CLIENT");
    resp::put_bulk(&mut hello, b"SETNAME");
    resp::put_bulk(&mut hello, NAME.as_bytes());
    replies.push(false);
    let mut at = 0;
    while at < hello.len() {
        stream.writable().await.map_err(io)?;
        match stream.try_write(&hello[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io(e)),
        }
    }
    let mut buf = vec![0u8; 4096];
    let (mut start, mut end) = (0, 0);
    let mut replies = replies.into_iter().peekable();
    while let Some(&must) = replies.peek() {
        match resp::head(&buf[start..end]) {
            Ok(Some((resp::Head::Error(e), _))) if must => return Err(resp::server_error(e)),
            Ok(Some((_, used))) => {
                start += used;
                replies.next();
                continue;
            }
            Ok(None) if end < buf.len() => {}
            Ok(None) | Err(resp::Malformed) => return Err(RedisError::unexpected_reply()),
        }
        stream.readable().await.map_err(io)?;
        match stream.try_read(&mut buf[end..]) {
            Ok(0) => return Err(io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => end += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(stream)
}
