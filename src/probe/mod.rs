//! Probes: this node's own checks of every site's targets (HTTP(S) GET, TCP connect), on each
//! site's schedule. One task per site, so a slow site never delays another; the targets of one
//! round run concurrently, each bounded by the site's probe timeout, so a slow target never
//! delays another and rounds never overlap. Rounds are jittered so that nodes do not probe in
//! lock-step. A round succeeds when any target answers as expected: the witness must only
//! declare a site down when it cannot reach it at all.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;

use crate::clock::Stopwatch;
use crate::config::{ProbeTarget, SiteConfig};

/// Why a probe failed, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Connect,
    /// The TLS handshake failed: an untrusted or mismatched certificate, usually.
    Tls,
    Status,
    Body,
    Other,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Tls => "tls",
            Failure::Status => "status",
            Failure::Body => "body",
            Failure::Other => "other",
        }
    }
}

/// The result of one round of probes of one site.
#[derive(Debug, Clone)]
pub struct Round {
    pub site: String,
    pub ok: bool,
}

pub struct ProbeMetrics {
    duration: HistogramVec,
    failures: IntCounterVec,
}

impl ProbeMetrics {
    pub fn register(registry: &Registry) -> ProbeMetrics {
        let duration = HistogramVec::new(
            HistogramOpts::new("witness_probe_duration_seconds", "Duration of one probe of one target.")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["site"],
        )
        .expect("static metric");
        let failures = IntCounterVec::new(
            Opts::new("witness_probe_failures_total", "Failed probes by site and reason."),
            &["site", "reason"],
        )
        .expect("static metric");
        registry.register(Box::new(duration.clone())).expect("unique metric");
        registry.register(Box::new(failures.clone())).expect("unique metric");
        ProbeMetrics { duration, failures }
    }
}

/// A site's probe targets, ready to run.
pub struct SiteProber {
    site: SiteConfig,
    http: reqwest::Client,
}

impl SiteProber {
    /// Probers for every site. Sites without a CA file of their own share one HTTP client:
    /// each client holds its own copy of the system's roots and its own pool, which at a
    /// thousand sites came to most of a node's memory.
    pub fn all(sites: &[SiteConfig]) -> anyhow::Result<Vec<SiteProber>> {
        let shared = Self::builder().build()?;
        sites.iter().map(|site| SiteProber::with(site, Some(&shared))).collect()
    }

    /// A prober with its own HTTP client.
    pub fn new(site: &SiteConfig) -> anyhow::Result<SiteProber> {
        SiteProber::with(site, None)
    }

    fn builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).pool_max_idle_per_host(1)
    }

    /// Builds the HTTP client for a site, with its CA file if one is configured (read now, so
    /// that a missing file stops the node at start-up with the file's name); without one,
    /// `shared` when given.
    fn with(site: &SiteConfig, shared: Option<&reqwest::Client>) -> anyhow::Result<SiteProber> {
        let mut builder = Self::builder();
        let ca_files: Vec<&Path> = site
            .probes
            .iter()
            .filter_map(|p| match p {
                ProbeTarget::Http { ca_file: Some(f), .. } => Some(f.as_path()),
                _ => None,
            })
            .collect();
        if !ca_files.is_empty() {
            let mut certs = Vec::new();
            for file in ca_files {
                let pem = std::fs::read(file)
                    .with_context(|| format!("site {}: cannot read probe ca_file {}", site.name, file.display()))?;
                certs.extend(reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                    format!("site {}: ca_file {} is not PEM certificates", site.name, file.display())
                })?);
            }
            builder = builder.tls_certs_only(certs);
        } else if let Some(shared) = shared {
            return Ok(SiteProber { site: site.clone(), http: shared.clone() });
        }
        Ok(SiteProber { site: site.clone(), http: builder.build()? })
    }

    /// Probes every target once, concurrently; true when any succeeded.
    pub async fn round(&self, metrics: &ProbeMetrics) -> bool {
        let results = join_all(self.site.probes.iter().map(|t| self.probe(t))).await;
        let mut any_ok = false;
        for (result, took) in results {
            metrics.duration.with_label_values(&[&self.site.name]).observe(took.as_secs_f64());
            match result {
                Ok(()) => any_ok = true,
                Err(f) => metrics.failures.with_label_values(&[&self.site.name, f.label()]).inc(),
            }
        }
        any_ok
    }

    async fn probe(&self, target: &ProbeTarget) -> (Result<(), Failure>, Duration) {
        let started = Stopwatch::start();
        let timeout = self.site.probe_timeout;
        let result = match tokio::time::timeout(timeout, self.check(target)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        };
        (result, started.elapsed())
    }

    async fn check(&self, target: &ProbeTarget) -> Result<(), Failure> {
        match target {
            ProbeTarget::Tcp { addr } => {
                tokio::net::TcpStream::connect(addr.as_str()).await.map(drop).map_err(|_| Failure::Connect)
            }
            ProbeTarget::Http { url, expect_status, body_contains, .. } => {
                let resp = self.http.get(url.clone()).send().await.map_err(|e| {
                    if e.is_timeout() {
                        Failure::Timeout
                    } else if is_tls(&e) {
                        Failure::Tls
                    } else if e.is_connect() {
                        Failure::Connect
                    } else {
                        Failure::Other
                    }
                })?;
                if resp.status().as_u16() != *expect_status {
                    return Err(Failure::Status);
                }
                if let Some(needle) = body_contains {
                    let body = resp.text().await.map_err(|_| Failure::Other)?;
                    if !body.contains(needle.as_str()) {
                        return Err(Failure::Body);
                    }
                }
                Ok(())
            }
        }
    }

    /// Probes the site every `probe_interval` (plus up to 10% jitter from `jitter`) until the
    /// receiver goes away.
    pub async fn run(self, metrics: &ProbeMetrics, out: mpsc::Sender<Round>, mut jitter: impl FnMut() -> f64) {
        let interval = self.site.probe_interval;
        loop {
            let started = Stopwatch::start();
            let ok = self.round(metrics).await;
            let round = Round { site: self.site.name.clone(), ok };
            if out.send(round).await.is_err() {
                return;
            }
            let pause = interval.mul_f64(1.0 + 0.1 * jitter()).saturating_sub(started.elapsed());
            tokio::time::sleep(pause).await;
        }
    }
}

/// Whether a request failed in the TLS handshake (reqwest reports that as a connect error).
/// rustls' error travels inside nested `io::Error`s, whose `source()` skips a level, so those
/// are unwrapped with `get_ref()`.
fn is_tls(e: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests;
