//! The smallest tickhttp application: a standalone poll loop.
//!
//! ```sh
//! cargo run --example hello -- 127.0.0.1:8080
//! curl http://127.0.0.1:8080/anything
//! ```
//! The address may also come from the `ADDR` environment variable. With a second argument
//! (seconds), it stops by itself after that long.

use std::time::{Duration, Instant};

use tickhttp::{Server, ServerConfig};

fn main() -> Result<(), tickhttp::Error> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let run_for = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let listen = addr
        .parse()
        .map_err(|_| tickhttp::Error::Mode("the first argument must be ADDR:PORT"))?;
    let mut server = Server::bind(ServerConfig::default().listen(listen))?;
    // Ctrl-C starts a graceful shutdown; the loop ends when it is done.
    tickhttp::signal::shutdown_on_signals(&mut server, Duration::from_secs(5))?;
    println!(
        "listening on http://{}/",
        server.local_addr().unwrap_or(listen)
    );
    let started = Instant::now();
    while server.is_running() {
        if run_for.is_some_and(|d| started.elapsed() > d) {
            server.shutdown(Duration::from_secs(1));
        }
        // Blocks in epoll: no CPU is used while nothing happens.
        server.wait(Some(Duration::from_millis(500)))?;
        while let Some(req) = server.get_request() {
            let body = format!("Hello from {} {}\n", req.method(), req.path());
            server.respond(req.id(), http::Response::new(body.into()))?;
        }
    }
    Ok(())
}
