//! Calls that arrive while their connection is busy, gathered into one:
//! `GET`s into one `MGET`, `SET`s into one pipeline. One command (or one
//! write to the socket), one reply, one parse, where each call alone would
//! cost Redis and the client a command each.
//!
//! There is no timer: a call that finds its connection idle goes out at
//! once, alone, so a lone call waits for nothing. Over plain TCP, a call
//! with no other in flight on its connection goes alone over it, and every
//! other call over the connection's [`Pipe`], a connection of its own for
//! batches: alone if it finds the pipe idle, else in its next batch.
//! Without a pipe (TLS, a pool's connections, or Redis refused it one) a
//! call goes alone while fewer than [`TURNS`] of its kind are in flight,
//! else it queues in the lane of its kind; when a turn ends, a task takes
//! the queue (up to the batch size) and sends it over the shared
//! connection, and goes on while calls keep queueing. The task, not a
//! caller, owns the round trip, so a caller cancelled mid-batch costs the
//! others nothing.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::conn::{backlogged, Conn, ConnState};
use super::pipe::Pipe;
use super::slot::lock;
use crate::backend::error::RedisError;
use crate::request::{CacheRequest, CacheResponse};

/// Calls of one kind that go out alone (each on a turn of its own) on a
/// connection without a [`Pipe`] before calls of that kind queue for a
/// batch: enough that a few concurrent callers never wait for each other
/// (with 1, 4 callers' median latency rose 65 %), few enough that many
/// callers batch well (64 callers: ~9 keys per `MGET`; with 1, ~31, and no
/// faster: the client's own work per call, not Redis, bounds the rate
/// where both share two cores).
pub(super) const TURNS: usize = 4;

/// Calls of one kind that go out alone over the shared connection beside
/// a [`Pipe`], each with no other call in flight on it when it came: one.
/// A lone caller's latency is steadiest there (over the pipe, where a
/// call needs two tasks besides its own, it was as often 9 µs as 21 µs,
/// with the kernel moving threads between cores, against 16 µs); any
/// other call goes over the pipe, alone if it finds the pipe idle.
const ALONE: usize = 1;

/// The kinds of call gathered: one lane each.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Get = 0,
    Set = 1,
    GetWithTtl = 2,
}

impl Kind {
    pub(super) fn of(request: &CacheRequest) -> Option<Kind> {
        match request {
            CacheRequest::Get(_) => Some(Kind::Get),
            CacheRequest::Set { .. } => Some(Kind::Set),
            CacheRequest::GetWithTtl(_) => Some(Kind::GetWithTtl),
            _ => None,
        }
    }
}

/// What a queued call is answered.
pub(super) type Answer = Result<CacheResponse, RedisError>;

/// A call queued for a batch.
pub(super) struct Waiting {
    pub(super) kind: Kind,
    pub(super) request: CacheRequest,
    pub(super) answer: oneshot::Sender<Answer>,
    /// When its caller's deadline passes: it is answered by then, sent or
    /// not (the caller waits on no timer of its own).
    pub(super) deadline: Instant,
}

#[derive(Default)]
struct Lane {
    /// Round trips of this kind in flight: lone calls and batches.
    turns: usize,
    waiting: Vec<Waiting>,
}

/// A connection's lanes.
#[derive(Default)]
pub(super) struct Batches {
    lanes: [Mutex<Lane>; 3],
}

/// How a call goes out.
pub(super) enum Join {
    /// At once, on a turn of its own (handed back with [`Batches::done`]).
    Now(CacheRequest),
    /// In a batch: its answer comes here.
    Queued(oneshot::Receiver<Answer>),
}

impl Batches {
    /// Queues `request` on the [`Pipe`], or (without one, or when it is
    /// not to be used) takes a turn for it or queues it in its lane.
    ///
    /// A queued call is answered by `deadline`: the pipe answers every
    /// batch within its first caller's deadline, and every turn ends
    /// within the response deadline of a call that joined before it (a
    /// lone call's own, or a batch's, which is its first caller's), and
    /// then its queue is sent or, past its deadline, answered as timed out.
    pub(super) fn join(
        &self,
        kind: Kind,
        request: CacheRequest,
        deadline: Instant,
        pipe: Option<&Arc<Pipe>>,
        alone: bool,
    ) -> Join {
        if let Some(pipe) = pipe.filter(|p| p.open()) {
            // A call with no other in flight on its connection goes alone
            // over the shared one; the others go over the pipe, alone if
            // they find it idle, else in its next batch.
            if alone {
                let mut lane = lock(&self.lanes[kind as usize]);
                if lane.turns < ALONE {
                    lane.turns += 1;
                    return Join::Now(request);
                }
            }
            let (answer, rx) = oneshot::channel();
            let waiting = Waiting {
                kind,
                request,
                answer,
                deadline,
            };
            return match pipe.queue(waiting) {
                Ok(()) => Join::Queued(rx),
                // Refused since it was looked at: as if there were none.
                Err(waiting) => self.join(kind, waiting.request, deadline, None, alone),
            };
        }
        let mut lane = lock(&self.lanes[kind as usize]);
        if lane.turns < TURNS {
            lane.turns += 1;
            return Join::Now(request);
        }
        let (answer, rx) = oneshot::channel();
        lane.waiting.push(Waiting {
            kind,
            request,
            answer,
            deadline,
        });
        Join::Queued(rx)
    }
}

/// A call's connection, and the turn it took with [`Join::Now`] if it
/// did: given back when dropped (answered or cancelled), to a batch of the
/// calls queued meanwhile if there are any.
pub(super) struct Caller {
    pub(super) conn: Arc<Conn>,
    /// The lane and batch size of the turn held.
    pub(super) turn: Option<(Kind, usize)>,
}

impl Drop for Caller {
    fn drop(&mut self) {
        if let Some((kind, max)) = self.turn {
            hand_on(&self.conn, kind, max);
        }
    }
}

/// Gives a turn back, or hands it to a task that sends the queue.
fn hand_on(conn: &Arc<Conn>, kind: Kind, max: usize) {
    let mut lane = lock(&conn.state.batches.lanes[kind as usize]);
    if lane.waiting.is_empty() {
        lane.turns -= 1;
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            drop(lane);
            runtime.spawn(flush(conn.clone(), kind, max));
        }
        // No runtime to send them from (it is shutting down): the queued
        // calls are answered as a broken connection, not left to wait.
        Err(_) => {
            lane.turns -= 1;
            lane.waiting.clear();
        }
    }
}

/// The turn a [`flush`] holds, given back if the task is dropped (its
/// runtime shut down) with calls queued.
struct Held<'a>(&'a Conn, Kind);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut lane = lock(&self.0.state.batches.lanes[self.1 as usize]);
        lane.turns -= 1;
        if lane.turns == 0 {
            // No turn is left to send them: their callers hear at once.
            lane.waiting.clear();
        }
    }
}

/// Sends the lane's queue, `max` calls a batch, until it is empty.
async fn flush(conn: Arc<Conn>, kind: Kind, max: usize) {
    let held = Held(&conn, kind);
    loop {
        let batch: Vec<Waiting> = {
            let mut lane = lock(&conn.state.batches.lanes[kind as usize]);
            if lane.waiting.is_empty() {
                lane.turns -= 1;
                std::mem::forget(held);
                return;
            }
            let n = lane.waiting.len().min(max);
            lane.waiting.drain(..n).collect()
        };
        send(&conn.state, conn.inner.clone(), kind, batch).await;
    }
}

/// Sends the calls of `batch` (all of `kind`) over `inner` in one round
/// trip, within the earliest deadline among them, and answers each.
/// Callers that gave up (cancelled) are not sent; those past their
/// deadline are answered so, unsent.
pub(super) async fn send(
    state: &ConnState,
    mut inner: redis::aio::MultiplexedConnection,
    kind: Kind,
    batch: Vec<Waiting>,
) {
    let now = Instant::now();
    let (batch, late): (Vec<Waiting>, Vec<Waiting>) = batch
        .into_iter()
        .filter(|w| !w.answer.is_closed())
        .partition(|w| w.deadline > now);
    answer_all(late.into_iter().map(|w| w.answer), RedisError::timeout());
    let Some(until) = batch.iter().map(|w| w.deadline).min() else {
        return;
    };
    let round_trip = async {
        match kind {
            Kind::Get => get_many(&mut inner, &batch).await,
            Kind::Set => set_all(&mut inner, &batch).await,
            Kind::GetWithTtl => get_many_with_ttl(&mut inner, &batch).await,
        }
    };
    // Bounded by the earliest deadline of its callers.
    let answers = match tokio::time::timeout_at(until, round_trip).await {
        Ok(answers) => answers,
        Err(_) => {
            // As a call's own timeout does, unless the runtime is too
            // backlogged to have read the answer: the connection may be
            // stuck.
            if !backlogged() {
                state.lose();
            }
            Err(RedisError::timeout())
        }
    };
    match answers {
        Ok(answers) => {
            state.answered_many(batch.len());
            for (w, answer) in batch.into_iter().zip(answers) {
                let _ = w.answer.send(answer);
            }
        }
        Err(e) => {
            if e.breaks_connection() {
                state.lose();
            }
            answer_all(batch.into_iter().map(|w| w.answer), e);
        }
    }
}

/// Fails every call of a batch with `e`, as one failure of one round
/// trip: the breaker hears it once, from the first caller; the others carry
/// the same reason as an echo it ignores. (Each caller then reads a
/// timeout as its own kind of call says: see `RedisBackend::call`.)
pub(super) fn answer_all(
    callers: impl IntoIterator<Item = oneshot::Sender<Answer>>,
    e: RedisError,
) {
    let mut first = true;
    for answer in callers {
        let e = if std::mem::take(&mut first) {
            e.clone()
        } else {
            e.clone().echo()
        };
        let _ = answer.send(Err(e));
    }
}

/// One `MGET` for the batch's `GET`s.
async fn get_many(
    conn: &mut redis::aio::MultiplexedConnection,
    batch: &[Waiting],
) -> Result<Vec<Answer>, RedisError> {
    let size: usize = batch
        .iter()
        .map(|w| match &w.request {
            CacheRequest::Get(key) => key.len(),
            _ => 0,
        })
        .sum();
    let mut cmd = redis::Cmd::with_capacity(batch.len() + 1, size + 4);
    cmd.arg("MGET");
    for w in batch {
        if let CacheRequest::Get(key) = &w.request {
            cmd.arg(&key[..]);
        }
    }
    let values: Vec<Option<Vec<u8>>> = cmd.query_async(conn).await?;
    if values.len() != batch.len() {
        return Err(RedisError::unexpected_reply());
    }
    Ok(values
        .into_iter()
        .map(|v| Ok(CacheResponse::Value(v.map(Bytes::from))))
        .collect())
}

/// One pipeline for the batch's `SET`s, each answered on its own (an
/// error reply fails its own call only).
async fn set_all(
    conn: &mut redis::aio::MultiplexedConnection,
    batch: &[Waiting],
) -> Result<Vec<Answer>, RedisError> {
    let mut pipe = redis::Pipeline::with_capacity(batch.len());
    pipe.ignore_errors();
    for w in batch {
        if let CacheRequest::Set { key, value, ttl } = &w.request {
            pipe.add_command(super::super::commands::set_cmd(key, value, *ttl));
        }
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(conn).await?;
    if replies.len() != batch.len() {
        return Err(RedisError::unexpected_reply());
    }
    Ok(replies
        .into_iter()
        .map(|r| match r {
            Ok(_) => Ok(CacheResponse::Written(true)),
            Err(e) => Err(RedisError::from(e).on_write()),
        })
        .collect())
}

/// One `MGET` and a `PTTL` per key, in one pipeline, for the batch's
/// `GET`s with TTL (a near cache's reads that missed it).
async fn get_many_with_ttl(
    conn: &mut redis::aio::MultiplexedConnection,
    batch: &[Waiting],
) -> Result<Vec<Answer>, RedisError> {
    let keys = batch.iter().filter_map(|w| match &w.request {
        CacheRequest::GetWithTtl(key) => Some(&key[..]),
        _ => None,
    });
    let mut mget = redis::cmd("MGET");
    for key in keys.clone() {
        mget.arg(key);
    }
    let mut all = redis::Pipeline::with_capacity(batch.len() + 1);
    all.add_command(mget);
    for key in keys {
        all.cmd("PTTL").arg(key);
    }
    let mut replies: Vec<redis::Value> = all.query_async(conn).await?;
    if replies.len() != batch.len() + 1 {
        return Err(RedisError::unexpected_reply());
    }
    let ttls = replies.split_off(1);
    let values: Vec<Option<Vec<u8>>> = redis::from_redis_value(replies.swap_remove(0))
        .map_err(|_| RedisError::unexpected_reply())?;
    if values.len() != batch.len() {
        return Err(RedisError::unexpected_reply());
    }
    Ok(values
        .into_iter()
        .zip(ttls)
        .map(|(v, ttl)| {
            let pttl: i64 =
                redis::from_redis_value(ttl).map_err(|_| RedisError::unexpected_reply())?;
            let ttl = super::super::commands::ttl_of(pttl);
            Ok(CacheResponse::ValueWithTtl(
                v.map(|v| (Bytes::from(v), ttl)),
            ))
        })
        .collect())
}
