//! `LEASEHOLD_REDIS_SERVER` selects the binary. One test in its own binary,
//! because it changes the process environment.

use leasehold_testkit::RedisServer;

#[test]
fn binary_env_var_is_used_and_a_bad_value_explains_the_fix() {
    std::env::set_var("LEASEHOLD_REDIS_SERVER", "/nonexistent/bin/redis-server");
    let error = RedisServer::builder().try_start().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    let message = error.to_string();
    assert!(
        message.contains("/nonexistent/bin/redis-server"),
        "{message}"
    );
    assert!(
        message.contains("apt-get install -y redis-server"),
        "{message}"
    );

    // A bare name is looked up in PATH.
    std::env::set_var("LEASEHOLD_REDIS_SERVER", "redis-server");
    let server = RedisServer::start();
    let pong: String = redis::cmd("PING").query(&mut server.connection()).unwrap();
    assert_eq!(pong, "PONG");
}
