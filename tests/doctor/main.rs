//! The `fusebox-doctor` binary against a real redis-server: its report,
//! its JSON for scripts, its exit codes.

#[path = "../cache/common.rs"]
mod common;

use std::process::Command;

use common::RedisServer;

fn doctor(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fusebox-doctor"))
        .args(args)
        .output()
        .expect("run fusebox-doctor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn json_output_parses_and_the_exit_code_is_the_verdict() {
    // No maxmemory: a warning (Redis grows until the OS kills it).
    let redis = RedisServer::start(&[]);
    redis.cmd(&["SET", "k", "v"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}", redis.port());
    let (code, stdout, stderr) = doctor(&["--json", "--seconds", "1", &url]);
    assert_eq!(code, Some(1), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(json["verdict"], "warning");
    assert_eq!(json["seconds_watched"], 1);
    assert_eq!(json["report"]["name"], "doctor");
    assert_eq!(json["report"]["status"], "degraded");
    assert_eq!(json["report"]["info"]["policy"], "noeviction");
    assert!(json["report"]["info"]["used_memory"].as_u64().unwrap() > 0);
    // Not growing: no sizing, said as null.
    assert!(json["maxmemory_for_48h"].is_null());
    assert!(
        !stdout.contains("s3cret"),
        "the URL's password is never printed"
    );

    // With room to spare: healthy, and the text report.
    let roomy = RedisServer::start(&["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"]);
    let (code, stdout, _) = doctor(&[&roomy.url(), "1"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("status: healthy"), "{stdout}");
    assert!(stdout.contains("verdict: clear (exit code 0)"), "{stdout}");
    assert!(stdout.contains("sizing:"), "{stdout}");

    // Redis down: critical, said as soon as it is seen, not after the
    // whole watch.
    let url = format!("redis://127.0.0.1:{}", common::free_port());
    let start = std::time::Instant::now();
    let (code, stdout, _) = doctor(&["--seconds", "60", &url]);
    assert_eq!(code, Some(2));
    assert!(stdout.contains("status: down"), "{stdout}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );

    // Bad arguments: 3, with the usage.
    let (code, _, stderr) = doctor(&["--seconds", "zero"]);
    assert_eq!(code, Some(3));
    assert!(stderr.contains("usage:"), "{stderr}");
}

#[test]
fn a_cluster_node_gets_one_line_per_primary() {
    let cluster = fusebox_testkit::RedisCluster::start(
        3,
        0,
        &[
            "--cluster-require-full-coverage",
            "no",
            "--maxmemory",
            "100mb",
        ],
    );
    let (code, stdout, stderr) = doctor(&["--seconds", "1", &cluster.nodes()[1].url()]);
    assert!(code.is_some_and(|c| c < 3), "{stderr}");
    assert!(stdout.contains("cluster: 3 primaries"), "{stdout}");
    for node in cluster.nodes() {
        let line = format!("  127.0.0.1:{}: ", node.port());
        assert!(stdout.contains(&line), "{line} in {stdout}");
    }
    let (_, json, _) = doctor(&["--json", "--seconds", "1", &cluster.nodes()[0].url()]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["report"]["nodes"].as_array().map(Vec::len), Some(3));
}

#[test]
fn a_sentinel_url_watches_the_primary_it_names() {
    let set = fusebox_testkit::RedisSentinel::start(0, 1);
    set.nodes()[0].cmd(&["SET", "k", "v"]);
    let (code, stdout, stderr) = doctor(&["--seconds", "1", &set.url()]);
    assert!(code.is_some_and(|c| c < 2), "{stdout}{stderr}");
    assert!(stdout.contains("keys: 1 (1 without TTL"), "{stdout}");
}

#[test]
fn an_expiry_policy_is_a_dry_run_until_applied() {
    let redis = RedisServer::start(&[]);
    for i in 0..40 {
        redis.cmd(&["SET", &format!("jobs:done:{i}"), "x"]);
    }
    redis.cmd(&["SET", "jobs:done:kept", "x", "EX", "1000"]);
    redis.cmd(&["SET", "user:1", "x"]);
    let ttl = |key: &str| -> i64 {
        let reply = redis.cmd(&["TTL", key]);
        reply.trim().trim_start_matches(':').parse().unwrap()
    };

    // The finding names the pattern and the line that would hold it.
    let (_, stdout, _) = doctor(&[&redis.url(), "1"]);
    assert!(
        stdout.contains("advice: give `jobs:done:*` keys a TTL")
            && stdout.contains(".expire(\"jobs:done:*\""),
        "{stdout}"
    );

    // A dry run: counted, nothing changed.
    let (_, stdout, stderr) = doctor(&["--json", "--expire", "jobs:done:*=72h", &redis.url(), "2"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect(&stderr);
    assert_eq!(json["expiry_applied"], false);
    let policy = &json["report"]["expiry"][0];
    assert_eq!(policy["pattern"], "jobs:done:*");
    assert_eq!(policy["ttl_secs"], 72 * 3600);
    assert!(policy["would_expire"].as_u64().unwrap() >= 40, "{policy}");
    assert_eq!(policy["expired"], 0);
    assert_eq!(ttl("jobs:done:0"), -1);

    // Applied: every matching key without TTL has it; nothing else moved.
    let (_, stdout, _) = doctor(&["--expire", "jobs:done:*=72h", "--apply", &redis.url(), "2"]);
    assert!(
        stdout.contains("expiry: `jobs:done:*` → 3.0 days: 40 keys given a TTL"),
        "{stdout}"
    );
    for i in [0, 39] {
        let t = ttl(&format!("jobs:done:{i}"));
        assert!(t > 72 * 3600 - 60 && t <= 72 * 3600, "{t}");
    }
    assert!((1..=1000).contains(&ttl("jobs:done:kept")));
    assert_eq!(ttl("user:1"), -1);

    // Bad policies are refused with the usage, exit code 3.
    for bad in [
        &["--expire", "jobs:*"][..],
        &["--expire", "jobs:*=3w"],
        &["--expire", "jobs:*=0s"],
        &["--apply"],
    ] {
        let (code, _, stderr) = doctor(bad);
        assert_eq!(code, Some(3), "{bad:?}: {stderr}");
    }
}

#[test]
fn svg_draws_the_watch_memory_levels_forecast_and_alerts() {
    // 10 MiB of limit, about 5 used: the 20 % level fires at the first poll.
    let redis = RedisServer::start(&["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"]);
    let value = "x".repeat(200);
    for batch in 0..20 {
        let keys: Vec<String> = (0..1000).map(|i| format!("leak:{batch}:{i}")).collect();
        let mut args = vec!["MSET"];
        for k in &keys {
            args.extend([k.as_str(), &value]);
        }
        redis.cmd(&args);
    }
    let dir = std::env::temp_dir().join(format!("fusebox-doctor-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("memory.svg");
    let url = redis.url();
    let (code, stdout, stderr) = doctor(&["--svg", path.to_str().unwrap(), "--seconds", "2", &url]);
    assert!(code.is_some_and(|c| c <= 2), "{stdout}{stderr}");
    let svg = std::fs::read_to_string(&path).expect("the SVG was written");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for part in [
        "Redis memory, MiB",
        "maxmemory",
        "20 %",
        "90 %",
        "48 h leeway",
        "memory above 20 %",
    ] {
        assert!(svg.contains(part), "{part} missing");
    }
    assert!(svg.matches("<path d=\"M").count() >= 1, "the memory line");
    // Without a writable place: a clear error, exit 3.
    let (code, _, stderr) = doctor(&["--svg", "/nonexistent/dir/x.svg", "--seconds", "1", &url]);
    assert_eq!(code, Some(3));
    assert!(stderr.contains("cannot write"), "{stderr}");
}
