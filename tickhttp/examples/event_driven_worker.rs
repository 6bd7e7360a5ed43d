//! An application with its own event bus, running in every worker of the pool
//! (event-driven mode): the use case the reference system was built for.
//!
//! Each HTTP request becomes an event on the application's bus. Listeners handle events and
//! publish new ones; background tasks publish events too, when their timers fire. A request
//! is answered whenever the event that completes it is handled: often in the same tick,
//! sometimes in a later one, and out of order with other requests.
//!
//! ```text
//! cargo run --example event_driven_worker -- 127.0.0.1:8080 2      # ADDR [WORKERS]
//! curl http://127.0.0.1:8080/                     # this worker: id, pid, events handled
//! curl 'http://127.0.0.1:8080/slow?ms=800' &      # answered 800 ms later, by a timer event
//! curl http://127.0.0.1:8080/fast                 # meanwhile answered at once
//! kill -TERM <pid of the master>                  # graceful: /slow requests still get answers
//! ```
//!
//! The address may also come from the `ADDR` environment variable. With one worker, the
//! `/fast` answer above overtakes the `/slow` one inside a single event loop; pipelined
//! requests on one connection still get their responses in request order.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use tickhttp::pool::{WorkerPool, Workers};
use tickhttp::{Body, Error, Request, RequestId, Server, ServerConfig};

/// Longest delay `/slow` accepts.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// What travels on the bus.
enum Event {
    /// An HTTP request arrived (boxed: a request is large next to the other events).
    Request(Box<Request>),
    /// A delayed job finished: published by a background task when its timer fired.
    JobDone {
        id: RequestId,
        /// The tick in which the request arrived.
        received_tick: u64,
        waited: Duration,
    },
    /// The pool asked this worker to stop (SIGTERM, SIGINT or SIGQUIT to the master).
    ShuttingDown,
}

/// What a listener may touch while it handles an event.
struct Context<'a> {
    server: &'a mut Server,
    bus: &'a Bus,
    /// Loop turns so far; shows which tick answers what.
    tick: u64,
}

/// A subscriber: sees every event, in publication order.
trait Listener {
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_>) -> Result<(), Error>;
}

/// The application's event bus: a FIFO shared with background tasks (which run on the same
/// thread, inside `Server::wait`, so an `Rc<RefCell<_>>` is enough).
#[derive(Clone, Default)]
struct Bus {
    queue: Rc<RefCell<VecDeque<Event>>>,
}

impl Bus {
    fn publish(&self, event: Event) {
        self.queue.borrow_mut().push_back(event);
    }

    fn next(&self) -> Option<Event> {
        self.queue.borrow_mut().pop_front()
    }
}

/// Routes requests: answers the quick ones now, turns `/slow` into a background job.
struct Router {
    worker_id: u32,
    events_seen: Rc<Cell<u64>>,
    stopping: bool,
}

impl Listener for Router {
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_>) -> Result<(), Error> {
        let req = match event {
            Event::Request(req) => req,
            Event::ShuttingDown => {
                self.stopping = true;
                return Ok(());
            }
            Event::JobDone { .. } => return Ok(()),
        };
        let (id, tick) = (req.id(), cx.tick);
        match req.path() {
            "/" => {
                let body = format!(
                    "{{\"worker_id\":{},\"pid\":{},\"events\":{},\"tick\":{tick}}}\n",
                    self.worker_id,
                    std::process::id(),
                    self.events_seen.get()
                );
                cx.server.respond(id, text(StatusCode::OK, body))
            }
            "/fast" => cx.server.respond(
                id,
                text(
                    StatusCode::OK,
                    format!(
                        "fast: answered in tick {tick} (worker {})\n",
                        self.worker_id
                    ),
                ),
            ),
            "/slow" if self.stopping => cx.server.respond(
                id,
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
            ),
            "/slow" => {
                let ms = req.query_param("ms").and_then(|v| v.parse().ok());
                let Some(delay) = ms.map(Duration::from_millis).filter(|d| *d <= MAX_DELAY) else {
                    return cx.server.respond(
                        id,
                        text(StatusCode::BAD_REQUEST, "expected ?ms=0..10000\n".into()),
                    );
                };
                // The job runs in the background; the loop keeps serving meanwhile. When the
                // timer fires, the task publishes the event that completes the request.
                let (timer, bus, started) = (cx.server.timer(), cx.bus.clone(), Instant::now());
                cx.server.spawn(async move {
                    timer.sleep(delay).await;
                    bus.publish(Event::JobDone {
                        id,
                        received_tick: tick,
                        waited: started.elapsed(),
                    });
                });
                Ok(())
            }
            _ => cx
                .server
                .respond(id, text(StatusCode::NOT_FOUND, "not found\n".into())),
        }
    }
}

/// Answers the requests whose jobs finished: a response in a later tick.
struct Replies {
    worker_id: u32,
}

impl Listener for Replies {
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_>) -> Result<(), Error> {
        if let Event::JobDone {
            id,
            received_tick,
            waited,
        } = event
        {
            let body = format!(
                "slow: received in tick {received_tick}, answered in tick {} after {} ms \
                 (worker {})\n",
                cx.tick,
                waited.as_millis(),
                self.worker_id
            );
            // If the client left meanwhile, this is a no-op.
            cx.server.respond(*id, text(StatusCode::OK, body))?;
        }
        Ok(())
    }
}

/// Counts events (what `/` reports).
struct Stats {
    events_seen: Rc<Cell<u64>>,
}

impl Listener for Stats {
    fn on_event(&mut self, _: &Event, _: &mut Context<'_>) -> Result<(), Error> {
        self.events_seen.set(self.events_seen.get() + 1);
        Ok(())
    }
}

/// The event-driven worker: called once per worker process; returns when the pool stops.
fn run(worker_id: u32, server: &mut Server) -> Result<(), Error> {
    let bus = Bus::default();
    let events_seen = Rc::new(Cell::new(0));
    let mut listeners: Vec<Box<dyn Listener>> = vec![
        Box::new(Stats {
            events_seen: Rc::clone(&events_seen),
        }),
        Box::new(Router {
            worker_id,
            events_seen,
            stopping: false,
        }),
        Box::new(Replies { worker_id }),
    ];
    let mut tick = 0;
    let mut announced_stop = false;
    // `is_running` turns false once a graceful stop has drained every request in flight.
    while server.is_running() {
        // Blocks in epoll until a request arrives or a task's timer fires; tasks run inside.
        server.wait(None)?;
        tick += 1;
        if server.is_shutting_down() && !announced_stop {
            announced_stop = true;
            bus.publish(Event::ShuttingDown);
        }
        while let Some(req) = server.get_request() {
            bus.publish(Event::Request(Box::new(req)));
        }
        // Handle everything published so far, including events the listeners publish now.
        while let Some(event) = bus.next() {
            let mut cx = Context {
                server: &mut *server,
                bus: &bus,
                tick,
            };
            for listener in &mut listeners {
                listener.on_event(&event, &mut cx)?;
            }
        }
    }
    eprintln!("worker {worker_id}: stopped after {tick} ticks");
    Ok(())
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .or_else(|| std::env::var("ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let workers = match args.next() {
        Some(n) => Workers::Count(n.parse()?),
        None => Workers::Auto,
    };
    let pool = WorkerPool::builder()
        .workers(workers)
        .server_config(ServerConfig::default().listen(listen))
        .shutdown_timeout(Duration::from_secs(15))
        .event_driven(run)
        .build()?; // binds here: a busy port fails before any fork
    println!(
        "listening on http://{}/ ({}, {} workers)",
        pool.local_addr(),
        pool.architecture(),
        pool.worker_count()
    );
    let metrics = pool.run()?; // until SIGTERM, SIGINT or SIGQUIT
    eprintln!(
        "pool stopped: {} connections dispatched",
        metrics.dispatched
    );
    Ok(())
}
