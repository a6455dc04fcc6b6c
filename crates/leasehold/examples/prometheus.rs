//! leasehold's metrics in Prometheus's text format, through `metrics-exporter-prometheus`.
//!
//! ```sh
//! cargo run -p leasehold --example prometheus            # a private redis-server
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run -p leasehold --example prometheus
//! ```
//!
//! A service would serve the same text over HTTP instead: enable the exporter's
//! `http-listener` feature and call
//! `PrometheusBuilder::new().with_http_listener(([127, 0, 0, 1], 9000)).install()`.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Install the recorder first; the client describes its series when it is built.
    let handle = PrometheusBuilder::new().install_recorder()?;

    let private;
    let url = match std::env::var("REDIS_URL") {
        Ok(url) => url,
        Err(_) => {
            private = leasehold_testkit::RedisServer::start();
            private.url()
        }
    };
    let client = leasehold::Client::new(&url)?;
    // A bounded label for dashboards: the group, not the (unbounded) lock name.
    let lock = client
        .lock("invoices/2026-12")?
        .metrics_group("billing")
        .ttl(Duration::from_secs(10));
    for _ in 0..3 {
        let guard = lock.acquire().await?;
        guard.release().await?;
    }
    let _held = lock.acquire().await?;
    print!("{}", handle.render());
    client.shutdown().await;
    Ok(())
}
