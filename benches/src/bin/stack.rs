//! `stack <client> <n>`: `n` sequential GETs of one key against a
//! `redis-server` of its own, through `raw` (a redis-rs
//! `MultiplexedConnection`) or `cache` (a fusebox `Cache` with its
//! defaults), for counting the client side's instructions and allocations
//! per call with `valgrind --tool=callgrind` (run it with `n` = 0 and with
//! `n` > 0, and take the difference over `n`).

use fusebox::cache::Cache;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(client), Some(n)) = (
        args.next(),
        args.next().and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: stack <raw|cache> <n>");
        std::process::exit(2);
    };
    let server = fusebox_testkit::RedisServer::start(&[]);
    server.cmd(&["SET", "k", "v"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut raw = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        // Deadlines far from the ones valgrind's slowness would hit.
        let config = fusebox::backend::RedisConfig::builder(server.url())
            .connect_timeout(std::time::Duration::from_secs(5))
            .checkout_timeout(std::time::Duration::from_secs(5))
            .response_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let cache = Cache::builder()
            .name("stack")
            .redis(config)
            .build()
            .unwrap();
        // Both connected and warm before the calls counted.
        let _: Option<Vec<u8>> = redis::cmd("GET")
            .arg("k")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(cache.get("k").await.is_some());
        let mut hits = 0;
        for _ in 0..n {
            hits += usize::from(match client.as_str() {
                "raw" => redis::cmd("GET")
                    .arg("k")
                    .query_async::<Option<Vec<u8>>>(&mut raw)
                    .await
                    .unwrap()
                    .is_some(),
                _ => cache.get("k").await.is_some(),
            });
        }
        println!("{client}: {hits} of {n} hits");
    });
}
