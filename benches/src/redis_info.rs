//! What Redis says of itself, for the benches that measure its CPU.

/// The CPU time Redis's process has used, in µs (`INFO cpu`: user and
/// system); 0 if it did not answer.
pub async fn redis_process_cpu(admin: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(admin)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| ["used_cpu_sys", "used_cpu_user"].contains(name))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum::<f64>()
        * 1e6
}

/// One field (`calls`, `usec`…) of one command's line in `INFO
/// commandstats` (`cmdstat_get:calls=3,usec=12,…`); 0 if absent.
pub fn command_stat(commandstats: &str, command: &str, field: &str) -> f64 {
    commandstats
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.strip_prefix("cmdstat_") == Some(command))
        .and_then(|(_, stats)| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}
