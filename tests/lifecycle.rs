//! The server's life as a library and as a process: an in-process server
//! stopped by its shutdown future closes both listeners, and every log line
//! of the process names the subsystem it comes from.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn a_stopped_server_closes_its_data_and_admin_listeners() {
    let redis = Redis::start().await;
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&ProxyConfig::search(), &backend, &redis).await;
    let (data, admin) = (proxy.addr, proxy.admin);
    assert_eq!(proxy.get("/healthz").send().await.status, 200);
    drop(proxy);
    eventually("both listeners to close", || async {
        let closed = |addr| async move { tokio::net::TcpStream::connect(addr).await.is_err() };
        (closed(data).await && closed(admin).await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn log_lines_name_their_subsystem() {
    let backend = Backend::echo().await;
    let unreachable = format!("redis://127.0.0.1:{}", free_port());
    let proxy =
        Proxy::start_process_with(&ProxyConfig::search(), &backend.url(), &unreachable).await;
    let line = eventually("the redis-unreachable warning", || async {
        proxy
            .log()
            .lines()
            .find(|l| l.contains("redis is unreachable"))
            .map(str::to_owned)
    })
    .await;
    let json: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(json["span"]["name"], "redis.monitor", "{line}");
}
