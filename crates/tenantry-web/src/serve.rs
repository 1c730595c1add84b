//! The accept loop: what `axum::serve` does, plus a timer, so that hyper's header-read timeout applies, and a
//! deadline for a new connection's first byte. Without them (axum's own loop sets neither) a connection that
//! sends nothing, never finishes its request head or sits idle after a response stays open for good, and a
//! client can hold thousands of them. Shutdown stops accepting, lets requests in flight finish for at most
//! [`DRAIN`], and then returns.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// How long shutdown waits for requests in flight.
pub const DRAIN: Duration = Duration::from_secs(30);

pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Room past the service's own limit (body::head_limits), so that a request with too many header
        // fields gets its problem+json 431 rather than hyper's bare one.
        .max_headers(2 * crate::body::MAX_HEADER_FIELDS);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(header_timeout).keep_alive_timeout(header_timeout);
    let builder = std::sync::Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                // Out of file descriptors and the like: the listener stays, and trying again at once would spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            // The protocol is told by the first bytes, which hyper waits for without a timer.
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(header_timeout, stream.peek(&mut first)).await, Ok(Ok(1..))) {
                return;
            }
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!(seconds = DRAIN.as_secs(), "requests still in flight after the drain period; stopping anyway");
    }
}
