//! Who sent a request and how it was built: the TCP peer, the client
//! address behind trusted proxies, the session cookie, the request's
//! fingerprint and the first head as it came off the wire.

pub(crate) mod client_ip;
pub(crate) mod cluster;
pub(crate) mod connect_info;
pub(crate) mod facts;
pub(crate) mod fingerprint;
pub(crate) mod forwarded;
pub(crate) mod look;
pub(crate) mod names;
pub(crate) mod order;
pub(crate) mod peer;
pub(crate) mod session;
pub(crate) mod ua_profile;
pub(crate) mod user_agent;
pub(crate) mod wire;

pub use client_ip::{ClientIp, ClientIpConfig, ForwardedHeader, IpSource};
pub use cluster::Cluster;
pub use connect_info::GateConnectInfo;
pub use fingerprint::{Anomalies, Anomaly, Fingerprint, anomalies};
pub use look::Os;
pub use peer::PeerAddr;
pub use session::{SameSite, SessionCookie, SessionStats};
pub use ua_profile::ua_family;
pub use user_agent::UaFamily;
pub use wire::{HeadScanner, NameCasing, Scan, WireHead};
