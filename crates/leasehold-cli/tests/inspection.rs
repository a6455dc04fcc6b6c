//! `leasehold status` and `list` as an operator uses them on a shared Redis: every kind of
//! primitive shown, a lock without a TTL shown as such, keys of a foreign type skipped and
//! counted, and a listing that says when it stopped at its limit.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use leasehold_testkit::RedisServer;

fn leasehold(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .arg("--redis")
        .arg(url)
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run leasehold")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The table rows `list` printed (without its header).
fn rows(out: &Output) -> Vec<String> {
    stdout(out).lines().skip(1).map(str::to_string).collect()
}

fn client(server: &RedisServer) -> leasehold::Client {
    leasehold::Client::builder(server.url()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_skips_and_counts_keys_of_another_type_and_says_when_it_stops_at_its_limit() {
    let server = RedisServer::start();
    let c = client(&server);
    let mut guards = Vec::new();
    for i in 0..8 {
        let lock = c.lock(&format!("jobs/{i}")).unwrap();
        guards.push(lock.ttl(Duration::from_secs(60)).acquire().await.unwrap());
    }
    let mut con = server.connection();
    let _: () = redis::cmd("SET")
        .arg("leasehold:{jobs/foreign}")
        .arg("someone else's value")
        .query(&mut con)
        .unwrap();
    let url = server.url();

    let out = leasehold(&url, &["list", "jobs/*"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(rows(&out).len(), 8, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("skipped 1 name(s) whose key holds another type of value")
            && stderr(&out).contains("lock jobs/foreign"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("stopped after"), "{}", stderr(&out));

    let out = leasehold(&url, &["list", "jobs/*", "--limit", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let skipped = usize::from(stderr(&out).contains("skipped 1"));
    assert_eq!(rows(&out).len() + skipped, 5, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("stopped after 5 names (--limit 5)"),
        "{}",
        stderr(&out)
    );

    let out = leasehold(&url, &["list", "jobs/*", "--limit", "5", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["truncated"], true, "{v}");

    let out = leasehold(&url, &["list", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2), "a limit of 0 is a usage error");

    let out = leasehold(&url, &["status", "jobs/foreign"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another type of value"),
        "{}",
        stderr(&out)
    );
    for g in guards {
        g.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_list_show_semaphores_read_write_locks_and_a_lock_without_a_ttl() {
    let server = RedisServer::start();
    let c = client(&server);
    let sem = c.semaphore("pool", 3).unwrap();
    let p1 = sem.acquire().await.unwrap();
    let p2 = sem.acquire().await.unwrap();
    let table = c.rwlock("table").unwrap();
    let reader = table.read().await.unwrap();
    let index = c.rwlock("index").unwrap();
    let writer = index.write().await.unwrap();
    let mut con = server.connection();
    let _: () = redis::cmd("HSET")
        .arg("leasehold:{forever}")
        .arg("owner")
        .arg("a-script")
        .arg("token")
        .arg(7)
        .arg("count")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let url = server.url();

    let out = leasehold(&url, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = rows(&out);
    let kind_of = |name: &str| {
        rows.iter()
            .find(|r| r.starts_with(&format!("{name} ")))
            .and_then(|r| r.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(kind_of("pool").as_deref(), Some("semaphore"), "{rows:?}");
    assert_eq!(kind_of("table").as_deref(), Some("rwlock"), "{rows:?}");
    assert_eq!(kind_of("index").as_deref(), Some("rwlock"), "{rows:?}");
    assert_eq!(kind_of("forever").as_deref(), Some("lock"), "{rows:?}");
    assert_eq!(rows.len(), 4, "{rows:?}");
    let forever = rows.iter().find(|r| r.starts_with("forever ")).unwrap();
    assert!(forever.contains("no TTL"), "{forever}");
    let pool = rows.iter().find(|r| r.starts_with("pool ")).unwrap();
    assert!(pool.contains("2 permit(s)"), "{pool}");
    let idx = rows.iter().find(|r| r.starts_with("index ")).unwrap();
    assert!(idx.contains(&writer.fencing_token().to_string()), "{idx}");

    let out = leasehold(&url, &["status", "pool"]);
    let text = stdout(&out);
    assert!(
        text.contains("semaphore  pool") && text.contains("2 permit(s)"),
        "{text}"
    );
    for p in [&p1, &p2] {
        assert!(
            text.contains(&format!("token {}", p.fencing_token())),
            "{text}"
        );
    }
    let out = leasehold(&url, &["status", "table", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rwlock"]["reader_count"], 1, "{v}");
    assert_eq!(
        v["rwlock"]["readers"][0]["fencing_token"],
        reader.fencing_token(),
        "{v}"
    );

    let out = leasehold(&url, &["status", "forever"]);
    assert!(
        stdout(&out).contains("ttl        no TTL"),
        "{}",
        stdout(&out)
    );
    let out = leasehold(&url, &["status", "forever", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["holder"]["ttl_remaining_ms"].is_null(), "{v}");

    writer.release().await.unwrap();
    reader.release().await.unwrap();
    p1.release().await.unwrap();
    p2.release().await.unwrap();
}
