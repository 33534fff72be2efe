//! Group commit for a database with one writer (SQLite). Each change runs in a savepoint
//! of a transaction shared with the changes queued beside it, and the transaction
//! commits once for all of them: one fsync per batch instead of one per change, so
//! writes under load wait for the disk once rather than in a queue of disk waits.
//!
//! A change answers only after the commit that holds it (a 2xx still means on disk); a
//! change that fails rolls back to its savepoint and answers at once, leaving the others
//! of its batch alone.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use sqlx::{Connection, Database, Executor, Pool};
use tokio::sync::{mpsc, oneshot};

use crate::ContentError;

/// The future of one change, borrowing the writer's connection.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

type Value = Box<dyn Any + Send>;
type Run<C> =
    Box<dyn for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, Result<Value, ContentError>> + Send>;

/// A queued change and where its answer goes.
pub(crate) struct Job<C> {
    run: Run<C>,
    reply: oneshot::Sender<Result<Value, ContentError>>,
}

/// Changes per transaction: bounds how long the first of a batch waits for the rest.
const MAX_BATCH: usize = 256;

/// The writer's queue; one task drains it (see [`run`]).
pub(crate) fn queue<C>() -> (mpsc::Sender<Job<C>>, mpsc::Receiver<Job<C>>) {
    mpsc::channel(4 * MAX_BATCH)
}

fn stopped() -> ContentError {
    ContentError::Unavailable("the content writer has stopped".into())
}

/// Queues `change` and waits until the transaction that holds it has committed.
pub(crate) async fn submit<C, R, F>(
    queue: &mpsc::Sender<Job<C>>,
    change: F,
) -> Result<R, ContentError>
where
    C: Send + 'static,
    R: Send + 'static,
    F: for<'c> FnOnce(&'c mut C) -> BoxFuture<'c, Result<R, ContentError>> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let run: Run<C> = Box::new(move |conn| {
        Box::pin(async move { change(conn).await.map(|r| Box::new(r) as Value) })
    });
    queue
        .send(Job { run, reply })
        .await
        .map_err(|_| stopped())?;
    let value = answer.await.map_err(|_| stopped())??;
    value
        .downcast::<R>()
        .map(|r| *r)
        .map_err(|_| ContentError::Internal("a change answered with another type".into()))
}

/// Drains the queue until every sender is gone: takes what is waiting (at most
/// [`MAX_BATCH`]), runs each change in its own savepoint, commits, then answers.
pub(crate) async fn run<DB>(pool: Pool<DB>, mut queue: mpsc::Receiver<Job<DB::Connection>>)
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        batch(&pool, jobs.drain(..)).await;
    }
}

/// Answers every change of a batch that could not start with the error that stopped it.
fn refuse_all<C>(jobs: impl Iterator<Item = Job<C>>, e: ContentError) {
    for job in jobs {
        let _ = job.reply.send(Err(e.clone()));
    }
}

async fn batch<DB>(pool: &Pool<DB>, jobs: impl Iterator<Item = Job<DB::Connection>>)
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return refuse_all(jobs, e.into()),
    };
    let mut done = Vec::new();
    let mut tx = match Connection::begin(&mut *conn).await {
        Ok(tx) => tx,
        Err(e) => return refuse_all(jobs, e.into()),
    };
    for job in jobs {
        // A nested begin is a savepoint: a failed change takes back only its own rows.
        let outcome = match Connection::begin(&mut *tx).await {
            Ok(mut sp) => match (job.run)(&mut *sp).await {
                Ok(v) => sp.commit().await.map(|()| v).map_err(ContentError::from),
                Err(e) => {
                    drop(sp.rollback().await);
                    Err(e)
                }
            },
            Err(e) => Err(ContentError::from(e)),
        };
        match outcome {
            Ok(v) => done.push((job.reply, v)),
            Err(e) => {
                let _ = job.reply.send(Err(e));
            }
        }
    }
    match tx.commit().await {
        Ok(()) => done.into_iter().for_each(|(reply, v)| {
            let _ = reply.send(Ok(v));
        }),
        Err(e) => {
            let e = ContentError::from(e);
            done.into_iter().for_each(|(reply, _)| {
                let _ = reply.send(Err(e.clone()));
            });
        }
    }
}
