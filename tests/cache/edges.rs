//! The edges of one Redis: prefixes that would collide, and the counts a
//! cache keeps.

use fusebox::cache::{Cache, Write};

use crate::common::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_prefixes_on_one_redis_are_refused_and_the_docs_promise_holds() {
    let redis = RedisServer::start(&[]);
    let build = |name: &str, prefix: &str, db: u8| {
        Cache::builder()
            .name(name)
            .prefix(prefix)
            .redis_url(format!("{}/{db}", redis.url()))
            .build()
    };
    let app = build("app", "app:", 0).unwrap();
    let err = build("app-v2", "app:v2:", 0).unwrap_err();
    assert_eq!(err.field(), "prefix");
    assert!(
        err.to_string().contains("\"app\""),
        "names the other cache: {err}"
    );
    // Another database of the same server is another keyspace.
    let other_db = build("app-v2", "app:v2:", 1).unwrap();
    // Siblings never collide: what one writes, the other does not read.
    let sibling = build("apq", "apq:", 0).unwrap();
    assert_eq!(app.set("k", "a").await, Write::Done);
    assert_eq!(sibling.set("k", "b").await, Write::Done);
    assert_eq!(app.get("k").await.as_deref(), Some(&b"a"[..]));
    assert_eq!(sibling.get("k").await.as_deref(), Some(&b"b"[..]));
    // Once the first is gone, its prefix is free to nest with.
    drop(app);
    let v2 = build("app-v2", "app:v2:", 0).expect("app: is gone");
    drop((v2, other_db, sibling));
}
