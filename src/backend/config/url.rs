//! What a Redis URL says beyond what the client reads from it: the
//! protocol to speak, and what is wrong with one it refused.

use redis::ProtocolVersion;

/// The settings with the client's name unset and RESP3 on unless the URL
/// asks for another protocol; and whether that is RESP3.
pub(super) fn protocol(
    url: &str,
    settings: redis::RedisConnectionInfo,
) -> (redis::RedisConnectionInfo, bool) {
    let mut settings = settings.set_skip_set_lib_name();
    if !url.contains("protocol=") {
        settings = settings.set_protocol(ProtocolVersion::RESP3);
    }
    let resp3 = settings.protocol() == ProtocolVersion::RESP3;
    (settings, resp3)
}

/// What is wrong with a `redis://` or `rediss://` URL the client refused,
/// where it can be told: the port or the database (never the password).
pub(super) fn url_fault(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // `[::1]:6379`, `host:6379`, `host`.
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Some(format!("the port `{port}` is not a number from 1 to 65535"));
        }
    }
    let db = path.split(['?', '#']).next().unwrap_or("");
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Some(format!("the database `{db}` is not a number (as in `/0`)"));
    }
    None
}
