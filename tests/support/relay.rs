//! A userspace TCP relay that delays what it forwards (`tc netem` is not available here): each
//! chunk read on one side is written on the other once `delay` plus a seeded jitter has passed,
//! in order, in both directions. Dropped with its task.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use witness::rng::SplitMix64;

pub struct Relay {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Listens on `listen` and forwards every connection to `target`, each way delayed by
    /// `delay` ± up to `jitter`.
    pub async fn start(listen: &str, target: SocketAddr, delay: Duration, jitter: Duration, seed: u64) -> Relay {
        let listener = TcpListener::bind(listen).await.expect("relay bind");
        let addr = listener.local_addr().unwrap();
        let rng = Arc::new(Mutex::new(SplitMix64::new(seed)));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rng = rng.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let one = pipe(cr, sw, delay, jitter, rng.clone());
                    let other = pipe(sr, cw, delay, jitter, rng);
                    let _ = tokio::join!(one, other);
                });
            }
        });
        Relay { addr, task }
    }
}

/// Copies `from` to `to`, each chunk held back until its due time; due times never decrease,
/// so the stream stays in order.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    jitter: Duration,
    rng: Arc<Mutex<SplitMix64>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut last_due = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let spread = jitter.as_micros() as u64;
        let offset = if spread == 0 { 0 } else { rng.lock().unwrap().below(2 * spread + 1) };
        let wait = (delay + Duration::from_micros(offset)).saturating_sub(jitter);
        last_due = last_due.max(Instant::now() + wait);
        if tx.send((last_due, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
