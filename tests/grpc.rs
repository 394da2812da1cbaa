//! gRPC through the gateway, end to end with tonic's client and server machinery: an HTTP/2
//! client on the TLS listener, HTTP/2 in clear (`h2c`) to a real gRPC upstream; unary and
//! server-streaming calls return their messages, trailers and status (`TE: trailers` kept,
//! trailers forwarded), an error status reaches the client, and the access log carries
//! `grpc_status`.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    text: String,
}

/// `Say`: one reply echoing the text; `NotFound` when the text is "missing".
struct Say;

impl tonic::server::UnaryService<Ask> for Say {
    type Response = Reply;
    type Future = std::future::Ready<Result<tonic::Response<Reply>, Status>>;
    fn call(&mut self, req: tonic::Request<Ask>) -> Self::Future {
        let ask = req.into_inner();
        std::future::ready(if ask.text == "missing" {
            Err(Status::not_found("no such order"))
        } else {
            Ok(tonic::Response::new(Reply {
                text: format!("said {}", ask.text),
            }))
        })
    }
}

/// `Count`: `count` replies, numbered.
struct Count;

type Replies = tokio_stream::Iter<std::vec::IntoIter<Result<Reply, Status>>>;

impl tonic::server::ServerStreamingService<Ask> for Count {
    type Response = Reply;
    type ResponseStream = Replies;
    type Future = std::future::Ready<Result<tonic::Response<Replies>, Status>>;
    fn call(&mut self, req: tonic::Request<Ask>) -> Self::Future {
        let ask = req.into_inner();
        let replies: Vec<_> = (1..=ask.count)
            .map(|i| {
                Ok(Reply {
                    text: format!("{} #{i}", ask.text),
                })
            })
            .collect();
        std::future::ready(Ok(tonic::Response::new(tokio_stream::iter(replies))))
    }
}

/// A gRPC server speaking h2c on 127.0.0.1:0, serving `test.Orders/Say` and `/Count`.
async fn grpc_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let mut grpc =
                            tonic::server::Grpc::new(ProstCodec::<Reply, Ask>::default());
                        let resp = match req.uri().path() {
                            "/test.Orders/Say" => grpc.unary(Say, req).await,
                            "/test.Orders/Count" => grpc.server_streaming(Count, req).await,
                            _ => Status::unimplemented("no such method").into_http(),
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// hyper's HTTP/2 client as the tower service tonic's client runs on.
#[derive(Clone)]
struct H2(http2::SendRequest<tonic::body::Body>);

impl tower_service::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A gRPC client over TLS (ALPN h2) to the gateway.
async fn client(pki: &Pki, gw: std::net::SocketAddr) -> tonic::client::Grpc<H2> {
    let tls = TlsClient::new(pki)
        .h2()
        .connect(gw, "localhost")
        .await
        .unwrap();
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    tonic::client::Grpc::with_origin(H2(send), "https://localhost".parse().unwrap())
}

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        "{}{}",
        listener("public", ""),
        route(
            "orders-grpc",
            "/test.Orders",
            &[&format!("http://{upstream}")],
            "upstream_protocol = \"h2c\""
        )
    )
}

async fn say(c: &mut tonic::client::Grpc<H2>, text: &str) -> Result<Reply, Status> {
    c.ready().await.unwrap();
    c.unary(
        tonic::Request::new(Ask {
            text: text.into(),
            count: 0,
        }),
        "/test.Orders/Say".parse().unwrap(),
        ProstCodec::<Ask, Reply>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_server_streaming_calls_pass_with_their_trailers_and_status() {
    let pki = Pki::generate();
    let up = grpc_upstream().await;
    let gw = Gateway::start(pki.dir(), &config(up)).await;
    let mut c = client(&pki, gw.addr()).await;

    assert_eq!(say(&mut c, "hello").await.unwrap().text, "said hello");
    let err = say(&mut c, "missing").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no such order");

    c.ready().await.unwrap();
    let mut stream = c
        .server_streaming(
            tonic::Request::new(Ask {
                text: "order".into(),
                count: 5,
            }),
            "/test.Orders/Count".parse().unwrap(),
            ProstCodec::<Ask, Reply>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        got.push(reply.text);
    }
    assert_eq!(
        got,
        (1..=5).map(|i| format!("order #{i}")).collect::<Vec<_>>()
    );
    // The status arrives in the trailers: read to the end, the stream reports it as OK.
    assert!(stream.trailers().await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_carries_the_grpc_status() {
    let pki = Pki::generate();
    let up = grpc_upstream().await;
    let path = write_config(pki.dir(), &config(up));
    let mut proc = ops::Proc::spawn(&path, "json");
    let addr = proc.listener_addr("public").await;
    let mut c = client(&pki, addr).await;
    say(&mut c, "hello").await.unwrap();
    say(&mut c, "missing").await.unwrap_err();
    for want in ["0", "5"] {
        let line = proc
            .wait_for_line(&format!("an access line with grpc_status {want}"), |l| {
                l.is_access() && l.text("grpc_status").as_deref() == Some(want)
            })
            .await;
        assert_eq!(line.str("route"), Some("orders-grpc"));
    }
}
