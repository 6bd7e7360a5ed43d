//! Streaming responses: tokens sent one by one over server-sent events, fed by a background
//! task over many loop ticks, while the loop keeps serving other requests.
//!
//! ```sh
//! cargo run --example streaming -- 127.0.0.1:8080
//! curl -N 'http://127.0.0.1:8080/generate?prompt=hello+world'
//! ```
//!
//! The address may also come from the `ADDR` environment variable.

use std::time::Duration;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use tickhttp::{Body, Server, ServerConfig};

fn main() -> Result<(), tickhttp::Error> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen = addr
        .parse()
        .map_err(|_| tickhttp::Error::Mode("the first argument must be ADDR:PORT"))?;
    let mut server = Server::bind(ServerConfig::default().listen(listen))?;
    tickhttp::signal::shutdown_on_signals(&mut server, Duration::from_secs(5))?;
    println!(
        "listening on http://{}/generate?prompt=...",
        server.local_addr().unwrap_or(listen)
    );
    while server.is_running() {
        server.wait(None)?;
        while let Some(req) = server.get_request() {
            let prompt = req
                .query_param("prompt")
                .unwrap_or_else(|| "tick tock".into());
            // The response head goes out now; the body follows as the task produces it.
            let (tx, body) = Body::channel();
            let mut resp = http::Response::new(body);
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            server.respond(req.id(), resp)?;

            let timer = server.timer();
            server.spawn(async move {
                for token in prompt.split_whitespace() {
                    // Pretend each token takes a while to produce.
                    timer.sleep(Duration::from_millis(150)).await;
                    if tx.send(format!("data: {token}\n\n")).is_err() {
                        return; // the client went away: stop producing
                    }
                }
                let _ = tx.send("event: done\ndata: \n\n");
                // Dropping `tx` ends the body (the final chunk is sent).
            });
        }
    }
    Ok(())
}
