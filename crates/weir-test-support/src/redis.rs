//! The machine's Redis (127.0.0.1:6379) for the Redis Streams source's tests: started when
//! it is down, and a writer of stream entries.

use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Where the tests' Redis listens.
pub const ADDRESS: &str = "127.0.0.1:6379";

/// Redis's URL, after making sure it runs: when nothing listens on [`ADDRESS`], runs
/// `redis-server --daemonize yes --port 6379 --save ''` and waits for it. Panics with what
/// to do when it cannot.
pub fn redis() -> String {
    let up =
        || TcpStream::connect_timeout(&ADDRESS.parse().unwrap(), Duration::from_secs(1)).is_ok();
    if !up() {
        let started = std::process::Command::new("redis-server")
            .args(["--daemonize", "yes", "--port", "6379", "--save", ""])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !up() {
            assert!(
                Instant::now() < deadline,
                "the Redis tests need Redis on {ADDRESS}; starting it with \
                 `redis-server --daemonize yes` gave {started:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    format!("redis://{ADDRESS}")
}

/// Appends one entry per item of `entries` (its fields, in order) to stream `key`, in
/// order, and returns their ids.
pub async fn xadd(key: &str, entries: &[Vec<(&str, Vec<u8>)>]) -> Vec<String> {
    xadd_at(&redis(), key, entries).await
}

/// [`xadd`] on the Redis database `url` names (`redis://127.0.0.1:6379/1`).
pub async fn xadd_at(url: &str, key: &str, entries: &[Vec<(&str, Vec<u8>)>]) -> Vec<String> {
    let client = ::redis::Client::open(url).expect("the Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("the tests connect to Redis");
    let mut pipe = ::redis::pipe();
    for fields in entries {
        pipe.cmd("XADD").arg(key).arg("*");
        for (name, value) in fields {
            pipe.arg(*name).arg(value.as_slice());
        }
    }
    pipe.query_async(&mut connection)
        .await
        .expect("Redis took the test's entries")
}
