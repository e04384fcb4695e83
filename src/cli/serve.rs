//! `witness serve`: run one node until SIGTERM or SIGINT, then shut down cleanly; on SIGHUP,
//! load tokens and certificates again from the config file. Under systemd (`Type=notify`) it
//! says READY once it serves and STOPPING when it begins to shut down.

use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;

use super::Exit;
use crate::config::Config;
use crate::node::Node;

#[derive(clap::Args)]
pub struct Args {
    /// Path to the node's TOML config file.
    #[arg(long)]
    config: PathBuf,
    /// Overrides node.data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve on this already-bound, listening TCP socket instead of binding node.listen
    /// (inetd / socket-activation style; the tests pass a port-0 socket this way).
    #[arg(long, value_name = "FD")]
    listen_fd: Option<RawFd>,
}

pub fn run(args: Args) -> Exit {
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Usage;
        }
    };
    if let Some(dir) = args.data_dir {
        config.node.data_dir = dir;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return Exit::Failed;
        }
    };
    runtime.block_on(serve(config, args.config, args.listen_fd))
}

async fn serve(config: Config, path: PathBuf, listen_fd: Option<RawFd>) -> Exit {
    let listener = match listener(listen_fd, config.node.listen, "node.listen").await {
        Ok(l) => l,
        Err(msg) => {
            tracing::error!("{msg}");
            return Exit::Failed;
        }
    };
    let running = match Node::start(config, listener).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return Exit::Failed;
        }
    };
    // Ready means serving (the API answers, Raft runs), not "the cluster has a quorum": a node
    // must come up, and be counted up, while its peers are still down.
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("install SIGHUP handler");
    sd_notify("READY=1");
    let exit = loop {
        tokio::select! {
            signal = &mut signal => {
                tracing::info!(signal, "shutting down");
                break Exit::Ok;
            }
            reason = running.fatal() => {
                // Never retry a failed fsync: exit and let the supervisor restart from disk.
                tracing::error!(%reason, "fatal Raft error: exiting");
                break Exit::Failed;
            }
            _ = hangup.recv() => reload(&running.node, &path),
        }
    };
    sd_notify("STOPPING=1");
    running.shutdown().await;
    exit
}

/// Tokens and certificates from the config file as it is now; anything wrong leaves the node
/// as it was. Other settings take effect only at the next start.
fn reload(node: &Node, path: &std::path::Path) {
    let result = Config::load(path).map_err(|e| anyhow::anyhow!("{e}")).and_then(|config| node.reload(&config));
    match result {
        Ok(()) => tracing::info!(config = %path.display(), "SIGHUP: tokens and certificates reloaded"),
        Err(e) => tracing::error!(config = %path.display(), "SIGHUP: reload refused, nothing changed: {e:#}"),
    }
}

/// Tells systemd `state` when it started us with `Type=notify` (`NOTIFY_SOCKET` set); a no-op
/// otherwise. A failure to tell is logged, never fatal.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (Linux): systemd's default.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}

/// The socket passed as `listen_fd`, or a new one bound to `addr` (config field `field`).
pub(super) async fn listener(
    listen_fd: Option<RawFd>,
    addr: std::net::SocketAddr,
    field: &str,
) -> Result<tokio::net::TcpListener, String> {
    match listen_fd {
        Some(fd) => {
            // SAFETY: the caller hands this process ownership of an open listening socket on
            // `fd` (documented contract of --listen-fd); nothing else in the process uses it.
            let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            std_listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
                .map_err(|e| format!("--listen-fd {fd}: not a usable listening TCP socket: {e}"))
        }
        None => {
            tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {field} = {addr}: {e}"))
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers at once (a signal arriving before the returned
/// future is first polled is not lost, nor fatal) and resolves to the first that arrives.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
