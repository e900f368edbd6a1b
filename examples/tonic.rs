//! A gRPC service behind floodguard: tonic's `Server::builder().layer`,
//! served over floodguard's connection gate.
//!
//! ```text
//! cargo run --example tonic --features tonic            # self-contained demo, exits by itself
//! cargo run --example tonic --features tonic -- 50051   # serve on 127.0.0.1:50051 until Ctrl-C
//! ```
//!
//! The demo starts a `helloworld.Greeter` server on a free port of
//! 127.0.0.1, sends it 10 `SayHello` calls as fast as it can, and prints
//! each outcome: the first five pass, the rest are refused with
//! `RESOURCE_EXHAUSTED` and the `grpc-retry-pushback-ms` and `retry-after`
//! hints floodguard puts in the status metadata. It then waits as long as
//! the server asked, calls once more, prints the guard's and the gate's
//! counters, and exits.
//!
//! The guard has two rules: 5 calls a second per client address (GCRA,
//! burst 5) and a ceiling of 1000 a second for the whole service. The gate
//! refuses connections from banned addresses at accept and caps each
//! address's open and new connections.
//!
//! There is no `.proto` file and no build script: the messages derive
//! `prost::Message` and the service and client are the few lines
//! `tonic-prost-build` would generate from
//!
//! ```proto
//! syntax = "proto3";
//! package helloworld;
//! service Greeter { rpc SayHello (HelloRequest) returns (HelloReply); }
//! message HelloRequest { string name = 1; }
//! message HelloReply { string message = 1; }
//! ```
//!
//! so `grpcurl -plaintext -proto hello.proto -d '{"name":"x"}' 127.0.0.1:50051
//! helloworld.Greeter/SayHello` works against the server started with a
//! port.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use floodguard::http::Gate;
use floodguard::http::{Guard, GuardDecision, Rule};
use tonic::codegen::BoxFuture;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};

mod greeter;
use greeter::{GreeterClient, GreeterServer, HelloReply, HelloRequest};

/// The handler. The guard left its decision in the request's extensions.
fn say_hello(req: tonic::Request<HelloRequest>) -> BoxFuture<tonic::Response<HelloReply>, Status> {
    Box::pin(async move {
        let client = req
            .extensions()
            .get::<GuardDecision>()
            .and_then(GuardDecision::client_ip);
        let who = client.map_or_else(|| "somewhere".to_owned(), |ip| ip.to_string());
        let message = format!("Hello {} (from {who})", req.into_inner().name);
        Ok(tonic::Response::new(HelloReply { message }))
    })
}

/// The value of a metadata entry of a refusal, or "-".
fn meta<'a>(status: &'a Status, key: &str) -> &'a str {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let port: Option<u16> = match std::env::args().nth(1) {
        Some(arg) => Some(
            arg.parse()
                .map_err(|_| format!("usage: tonic [PORT], got {arg:?}"))?,
        ),
        None => None,
    };

    let guard = Guard::builder()
        .rule(
            Rule::per_ip("per-ip")
                .gcra(5, Duration::from_secs(1))
                .burst(5),
        )
        .rule(Rule::global("ceiling").gcra(1000, Duration::from_secs(1)))
        .build()?;
    // The gate asks the guard about each connection, so banned and
    // blocklisted addresses are turned away before any HTTP/2 is spoken.
    let verdict = guard.clone();
    let gate = Gate::builder()
        .max_connections_per_ip(16)
        .new_connections_per_ip(10, Duration::from_secs(1), 20)
        .verdict(move |ip| verdict.accept_verdict(ip))
        .build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let incoming = gate.listen(listener).into_incoming();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .layer(guard.layer())
        .add_service(GreeterServer::new(say_hello))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    let server = tokio::spawn(server);

    if port.is_some() {
        println!("helloworld.Greeter on {addr}; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    } else {
        // Bound the whole demo, so it cannot hang whatever happens.
        tokio::time::timeout(Duration::from_secs(20), demo(addr)).await??;
    }

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server).await???;
    let s = guard.stats();
    println!(
        "\nguard: {} requests, {} admitted, {} refused by a rate limit, {} refused as blocked",
        s.requests, s.admitted, s.refused_rate_limit, s.refused_blocked
    );
    for r in &s.rules {
        let l = &r.limiter;
        println!(
            "  rule {:<8} {} admitted, {} denied, {} keys held",
            r.name, l.admitted, l.denied, l.occupancy
        );
    }
    let g = gate.stats();
    println!(
        "gate: {} connections accepted, {} refused, {} open",
        g.accepted,
        g.refused_banned + g.refused_per_ip + g.refused_per_prefix + g.refused_rate,
        g.open
    );
    Ok(())
}

/// Ten calls in a row, then one more after the pushback the server asked
/// for.
async fn demo(addr: SocketAddr) -> Result<(), Box<dyn Error>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = GreeterClient::new(channel);
    println!("10 calls to {addr} as fast as possible (limit: 5 a second per client, burst 5)");
    let mut pushback = None;
    for i in 1..=10 {
        match client.say_hello(&format!("call {i}")).await {
            Ok(reply) => println!("{i:>2}  OK                  {}", reply.into_inner().message),
            Err(status) if status.code() == Code::ResourceExhausted => {
                let ms = meta(&status, "grpc-retry-pushback-ms");
                println!(
                    "{i:>2}  RESOURCE_EXHAUSTED  {:?}: grpc-retry-pushback-ms={ms} retry-after={} ratelimit={}",
                    status.message(),
                    meta(&status, "retry-after"),
                    meta(&status, "ratelimit"),
                );
                pushback = ms.parse::<u64>().ok().map(Duration::from_millis);
            }
            Err(status) => return Err(status.into()),
        }
    }
    if let Some(wait) = pushback {
        println!("waiting {wait:?} as the server asked");
        tokio::time::sleep(wait).await;
        match client.say_hello("after the pushback").await {
            Ok(reply) => println!("11  OK                  {}", reply.into_inner().message),
            Err(status) => println!("11  {:?} {:?}", status.code(), status.message()),
        }
    }
    Ok(())
}
