//! Targets that keep real state, for `witness demo` and the tests: an OpenStorage
//! cluster-domains API (`storage.rs`) and a small authoritative DNS server taking TSIG-signed
//! RFC 2136 updates (`dns.rs`). The demo's plan steps reach them over real HTTP and DNS with
//! the production executors.

pub mod dns;
pub mod storage;
