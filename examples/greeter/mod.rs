//! `helloworld.Greeter`, written by hand as tonic-prost-build would
//! generate it, so neither `protoc` nor a build script is needed. Shared by
//! `examples/tonic.rs` and `tests/grpc.rs`.
//!
//! ```proto
//! service Greeter { rpc SayHello (HelloRequest) returns (HelloReply); }
//! message HelloRequest { string name = 1; }
//! message HelloReply { string message = 1; }
//! ```
#![allow(dead_code)]

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::BoxFuture;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

/// The `SayHello` handler a server runs.
pub type Handler =
    fn(tonic::Request<HelloRequest>) -> BoxFuture<tonic::Response<HelloReply>, Status>;

/// The server side: routes `SayHello` to its handler, as generated code
/// would.
#[derive(Clone)]
pub struct GreeterServer {
    handler: Handler,
}

impl GreeterServer {
    pub fn new(handler: Handler) -> Self {
        GreeterServer { handler }
    }
}

impl tonic::server::NamedService for GreeterServer {
    const NAME: &'static str = "helloworld.Greeter";
}

impl tower::Service<http::Request<tonic::body::Body>> for GreeterServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != SAY_HELLO {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let handler = tower::service_fn(self.handler);
        Box::pin(async move {
            let codec = ProstCodec::<HelloReply, HelloRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(handler, req).await)
        })
    }
}

/// The client side, as generated code would have it.
pub struct GreeterClient {
    inner: tonic::client::Grpc<Channel>,
}

impl GreeterClient {
    pub fn new(channel: Channel) -> Self {
        GreeterClient {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    pub async fn say_hello(&mut self, name: &str) -> Result<tonic::Response<HelloReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("service not ready: {e}")))?;
        let req = tonic::Request::new(HelloRequest {
            name: name.to_owned(),
        });
        let path = http::uri::PathAndQuery::from_static(SAY_HELLO);
        self.inner.unary(req, path, ProstCodec::default()).await
    }
}
