//! A connection of a backend's own for its batches: one task writes the
//! queued calls as `MGET`s and `SET`s, another reads the replies straight
//! into each caller's answer. Neither goes through redis-rs's connection
//! task, its parser or its `Value`s: one wake-up less between a caller and
//! Redis, and a value copied once.
//!
//! Only over plain TCP (TLS and leased connections batch over redis-rs:
//! see [`super::batch`]). It is made when the first batch forms, lives
//! and dies with its connection, and is never left with a caller waiting
//! past its deadline: the batch in flight is read within its first
//! caller's deadline or the pipe is given up, and everything queued or in
//! flight is answered as one failure.

mod tasks;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::batch::{answer_all, send, Answer, Kind, Waiting};
use super::conn::{backlogged, ConnState};
use super::resp;
use super::slot::lock;
use crate::backend::error::RedisError;

/// Batches in flight on a pipe before the calls queued wait for one to be
/// answered (and so gather into bigger ones).
const DEPTH: usize = 2;

/// Where a pipe connects, and how it logs in. (No `Debug`: it holds the
/// password.)
pub(super) struct PipeTarget {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) db: i64,
    pub(super) connect_timeout: Duration,
    pub(super) max_batch: usize,
}

impl PipeTarget {
    /// The target of a connection made from `info`, if a pipe can reach it
    /// (plain TCP, RESP2 login).
    pub(super) fn of(
        info: &redis::ConnectionInfo,
        connect_timeout: Duration,
        max_batch: usize,
    ) -> Option<Self> {
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        Some(PipeTarget {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
            connect_timeout,
            max_batch: max_batch.max(1),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    /// No connection: the next call queued makes one.
    Idle,
    Connecting,
    Ready,
    /// Not to be used (its connection is lost, or Redis refused it one):
    /// calls batch over redis-rs.
    Off,
    /// Its connection was dropped.
    Closed,
}

/// A batch written and not yet answered.
struct Sent {
    kind: Kind,
    callers: Vec<oneshot::Sender<Answer>>,
    /// Its first caller's deadline.
    deadline: Instant,
}

struct PipeState {
    phase: Phase,
    /// Bumped each time the pipe's connection is given up: a task of an
    /// earlier one stops.
    generation: u64,
    queue: Vec<Waiting>,
    in_flight: VecDeque<Sent>,
}

/// A connection's pipe (see the module's docs).
pub(super) struct Pipe {
    target: PipeTarget,
    /// The connection it belongs to: lost with it.
    conn: Weak<ConnState>,
    state: Mutex<PipeState>,
    /// Calls queued, room in flight, or the pipe given up.
    wake_writer: Notify,
    /// A batch in flight, or the pipe given up.
    wake_reader: Notify,
    /// The connection it belongs to, over which the calls queued on the
    /// pipe go when Redis refuses the pipe a connection of its own.
    fallback: OnceLock<redis::aio::MultiplexedConnection>,
    /// Set for good once the pipe is [`Phase::Off`] or [`Phase::Closed`]:
    /// calls then go over redis-rs without trying it (see
    /// [`super::batch::Batches::join`]).
    refused: AtomicBool,
}

impl Pipe {
    pub(super) fn new(target: PipeTarget, conn: Weak<ConnState>) -> Self {
        Pipe {
            target,
            conn,
            state: Mutex::new(PipeState {
                phase: Phase::Idle,
                generation: 0,
                queue: Vec::new(),
                in_flight: VecDeque::new(),
            }),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
            fallback: OnceLock::new(),
            refused: AtomicBool::new(false),
        }
    }

    /// Whether calls may be queued on the pipe: it is not
    /// [`Phase::Off`] or [`Phase::Closed`].
    pub(super) fn open(&self) -> bool {
        !self.refused.load(Relaxed)
    }

    /// Enters `phase`, flagging the pipe refused if it is one calls may
    /// not be queued in.
    fn enter(&self, state: &mut PipeState, phase: Phase) {
        state.phase = phase;
        if matches!(phase, Phase::Off | Phase::Closed) {
            self.refused.store(true, Relaxed);
        }
    }

    /// Queues a call to go out in the next batch, or hands it back if the
    /// pipe is not to be used (or there is no runtime to make it on).
    pub(super) fn queue(self: &Arc<Self>, waiting: Waiting) -> Result<(), Waiting> {
        let mut state = lock(&self.state);
        match state.phase {
            Phase::Off | Phase::Closed => Err(waiting),
            Phase::Idle => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Err(waiting);
                };
                state.phase = Phase::Connecting;
                state.queue.push(waiting);
                let generation = state.generation;
                drop(state);
                runtime.spawn(tasks::write(self.clone(), generation));
                Ok(())
            }
            Phase::Connecting | Phase::Ready => {
                let idle = state.queue.is_empty();
                state.queue.push(waiting);
                drop(state);
                if idle {
                    self.wake_writer.notify_one();
                }
                Ok(())
            }
        }
    }

    /// Sets the connection the pipe belongs to, for the calls it was
    /// given to go over if Redis refuses it one of its own.
    pub(super) fn fall_back_to(&self, conn: redis::aio::MultiplexedConnection) {
        let _ = self.fallback.set(conn);
    }

    /// Ends the pipe's connection of `generation` (if it is still the
    /// current one), entering `then`: what was queued and in flight, for
    /// the caller to answer.
    fn end(&self, generation: u64, then: Phase) -> Option<(Vec<Waiting>, VecDeque<Sent>)> {
        let taken = {
            let mut state = lock(&self.state);
            if state.generation != generation || state.phase == Phase::Closed {
                return None;
            }
            state.generation += 1;
            self.enter(&mut state, then);
            (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.in_flight),
            )
        };
        self.wake_writer.notify_one();
        self.wake_reader.notify_one();
        Some(taken)
    }

    /// Turns the pipe off after Redis refused it a connection (`e`): the
    /// calls queued go over the connection it belongs to instead, as
    /// later ones will (or, without it, are answered `e`).
    async fn hand_back(&self, generation: u64, e: RedisError) {
        let Some((queue, _)) = self.end(generation, Phase::Off) else {
            return;
        };
        let (Some(conn), Some(inner)) = (self.conn.upgrade(), self.fallback.get()) else {
            return answer_all(queue.into_iter().map(|w| w.answer), e);
        };
        let mut kinds: [Vec<Waiting>; 3] = Default::default();
        for w in queue {
            kinds[w.kind as usize].push(w);
        }
        for (kind, mut calls) in [Kind::Get, Kind::Set, Kind::GetWithTtl]
            .into_iter()
            .zip(kinds)
        {
            while !calls.is_empty() {
                let rest = calls.split_off(calls.len().min(self.target.max_batch));
                send(
                    &conn,
                    inner.clone(),
                    kind,
                    std::mem::replace(&mut calls, rest),
                )
                .await;
            }
        }
    }

    /// Gives up the pipe's connection of `generation` (if it is still the
    /// current one), answering everything queued or in flight with `e` as
    /// one failure; then either lets the next batch make a new one
    /// ([`Phase::Idle`]) or not ([`Phase::Off`]), and with `lose` flags its
    /// connection never to be used again.
    fn give_up(&self, generation: u64, e: RedisError, then: Phase, lose: bool) {
        let Some((queue, in_flight)) = self.end(generation, then) else {
            return;
        };
        if lose {
            if let Some(conn) = self.conn.upgrade() {
                conn.lose();
            }
        }
        let callers = in_flight
            .into_iter()
            .flat_map(|s| s.callers)
            .chain(queue.into_iter().map(|w| w.answer));
        answer_all(callers, e);
    }

    /// Stops the pipe for good: its connection was dropped.
    pub(super) fn close(&self) {
        {
            let mut state = lock(&self.state);
            self.enter(&mut state, Phase::Closed);
            state.generation += 1;
            state.queue.clear();
            state.in_flight.clear();
        }
        self.wake_writer.notify_one();
        self.wake_reader.notify_one();
    }

    /// Gives up after `e` broke the connection (or the replies' order).
    fn broken(&self, generation: u64, e: RedisError) {
        self.give_up(generation, e, Phase::Off, true);
    }

    /// Gives up after a batch's deadline passed unanswered: the connection
    /// too, unless this process was too busy to read the answer.
    fn timed_out(&self, generation: u64) {
        if backlogged() {
            self.give_up(generation, RedisError::timeout(), Phase::Idle, false);
        } else {
            self.give_up(generation, RedisError::timeout(), Phase::Off, true);
        }
    }
}

/// What the writer took from the queue.
enum Taken {
    /// Nothing: the queue is empty, or the batches in flight are as many
    /// as may be.
    Nothing,
    /// Only calls that gave up or timed out.
    Answered,
    /// A batch (one of each kind of call in it) to write by `until`;
    /// `first` if no other was in flight (the reader waits to be told).
    Batch { until: Instant, first: bool },
}

impl Pipe {
    /// Takes up to a batch of calls from the queue, writes their commands
    /// into `out` and counts them in flight. Callers that gave up are not
    /// sent; those past their deadline go into `late`, unsent.
    fn take(
        &self,
        state: &mut PipeState,
        out: &mut Vec<u8>,
        late: &mut Vec<oneshot::Sender<Answer>>,
    ) -> Taken {
        if state.in_flight.len() >= DEPTH || state.queue.is_empty() {
            return Taken::Nothing;
        }
        let now = Instant::now();
        // Every call at the front already past its deadline is answered
        // now, not a batch's worth at a time (the queue is in order of
        // deadline: they are all at the front).
        let past = state.queue.iter().take_while(|w| w.deadline <= now).count();
        late.extend(
            state
                .queue
                .drain(..past)
                .filter(|w| !w.answer.is_closed())
                .map(|w| w.answer),
        );
        let n = state.queue.len().min(self.target.max_batch);
        let mut kinds: [Vec<Waiting>; 3] = Default::default();
        for w in state.queue.drain(..n) {
            if w.answer.is_closed() {
            } else if w.deadline <= now {
                late.push(w.answer);
            } else {
                let of_kind = &mut kinds[w.kind as usize];
                if of_kind.capacity() == 0 {
                    // Sized once: most batches are of one kind.
                    of_kind.reserve(n);
                }
                of_kind.push(w);
            }
        }
        let first = state.in_flight.is_empty();
        let mut until = None;
        for (kind, calls) in [Kind::Get, Kind::Set, Kind::GetWithTtl]
            .into_iter()
            .zip(kinds)
        {
            // The queue is in order of deadline: the first is the earliest.
            let Some(first) = calls.first().map(|w| w.deadline) else {
                continue;
            };
            until = Some(until.map_or(first, |u: Instant| u.min(first)));
            resp::put_batch(out, kind, calls.iter().map(|w| &w.request));
            state.in_flight.push_back(Sent {
                kind,
                callers: calls.into_iter().map(|w| w.answer).collect(),
                deadline: first,
            });
        }
        match until {
            Some(until) => Taken::Batch { until, first },
            None => Taken::Answered,
        }
    }
}
