//! actix-web 4 peer server for side-by-side comparisons with tickhttp.
//!
//! Usage: actix-hello ADDR [--workers N]
//!
//! Routes: GET /plaintext, GET /json, anything else 404 (actix's default).
//! Each actix worker is a thread with its own single-threaded runtime.

use std::process::exit;

use actix_web::http::header::ContentType;
use actix_web::{web, App, HttpResponse, HttpServer};

static PLAINTEXT: &str = "Hello, World!";
// A constant body: the benchmark measures the HTTP layer, not a JSON encoder.
static JSON: &str = r#"{"message":"Hello, World!"}"#;

async fn plaintext() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body(PLAINTEXT)
}

async fn json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(JSON)
}

fn usage() -> ! {
    eprintln!("usage: actix-hello ADDR [--workers N]");
    exit(2)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| usage());
    let mut workers = 1usize;
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--workers", Some(n)) => workers = n.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if workers == 0 {
        usage();
    }

    HttpServer::new(|| {
        App::new()
            .route("/plaintext", web::get().to(plaintext))
            .route("/json", web::get().to(json))
    })
    // Same as the other servers: no Nagle delay on small responses.
    .tcp_nodelay(true)
    .workers(workers)
    .backlog(4096)
    .bind(&addr)?
    .run()
    .await
}
