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
