//! Raw calls: message bytes sent and received as they are (with raw metadata), what a client
//! can observe of an error, and unary calls over raw HTTP/2 for what tonic will not send.

use std::str::FromStr as _;

use prost::bytes::{Buf as _, BufMut as _};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::Running;

/// Sends and receives message bytes as they are: the server decodes exactly what the test wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Request metadata as raw (key, value bytes) pairs; values may be any header-legal bytes.
pub type Metadata = Vec<(String, Vec<u8>)>;

/// `authorization: Bearer <token>`.
pub fn bearer_metadata(token: &str) -> Metadata {
    vec![("authorization".to_owned(), format!("Bearer {token}").into_bytes())]
}

/// Calls the unary RPC at `path` with `body` as the encoded request and returns the encoded
/// response.
pub async fn call_raw(channel: &Channel, path: &str, body: Vec<u8>, metadata: &Metadata) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let mut request = tonic::Request::new(body);
    for (key, value) in metadata {
        if key.ends_with("-bin") {
            let key = tonic::metadata::BinaryMetadataKey::from_bytes(key.as_bytes()).expect("metadata key");
            request.metadata_mut().append_bin(key, tonic::metadata::BinaryMetadataValue::from_bytes(value));
        } else {
            let key = MetadataKey::from_bytes(key.as_bytes()).expect("metadata key");
            let value = MetadataValue::try_from(value.as_slice()).expect("header-legal metadata value");
            request.metadata_mut().append(key, value);
        }
    }
    let path = PathAndQuery::from_str(path).expect("path");
    // As a server-streaming call, which a unary RPC answers with one message: so streaming
    // RPCs (WatchTasks) are probed too. Their stream stays open: what arrives until it has
    // been quiet for a moment is the answer.
    let mut stream = grpc.server_streaming(request, path, RawCodec).await?.into_inner();
    let mut answer = Vec::new();
    loop {
        match tokio::time::timeout(STREAM_QUIET, stream.message()).await {
            Ok(Ok(Some(message))) => answer.extend(message),
            Ok(Ok(None)) | Err(_) => return Ok(answer),
            Ok(Err(status)) => return Err(status),
        }
    }
}

/// How long a streaming answer may be silent before the probe takes what it has.
const STREAM_QUIET: std::time::Duration = std::time::Duration::from_millis(300);

/// What a client can observe of an error, for byte-for-byte comparisons: the code, the
/// message, the details bytes and the names of the metadata entries.
pub fn observable(status: &Status) -> (Code, String, Vec<u8>, Vec<String>) {
    let mut keys: Vec<String> = status
        .metadata()
        .keys()
        .map(|k| match k {
            tonic::metadata::KeyRef::Ascii(k) => k.as_str().to_owned(),
            tonic::metadata::KeyRef::Binary(k) => k.as_str().to_owned(),
        })
        .collect();
    keys.sort();
    (status.code(), status.message().to_owned(), status.details().to_vec(), keys)
}
/// The grpc-status and grpc-message of a unary call sent as raw HTTP/2, one message frame with
/// the given compressed flag and payload. For what a tonic client cannot be made to send.
pub async fn raw_h2_status(
    running: &Running,
    path: &str,
    headers: &[(&str, &str)],
    flag: u8,
    payload: &[u8],
) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{}{path}", running.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, mut body) = client.send_request(request.body(()).unwrap(), false).unwrap();
    let mut framed = vec![flag];
    framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(payload);
    // A server that refuses on the headers alone (an unknown grpc-encoding) may answer and
    // close the stream before the frame goes out; the answer is what is checked.
    let _ = body.send_data(bytes::Bytes::from(framed), true);
    let response = response.await.unwrap();
    let (head, mut rest) = response.into_parts();
    // A refusal before any message comes as headers only; otherwise the status is in trailers.
    let trailers = if head.headers.contains_key("grpc-status") {
        head.headers
    } else {
        while rest.data().await.is_some() {}
        rest.trailers().await.unwrap().unwrap()
    };
    let text = |name: &str| trailers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (text("grpc-status"), text("grpc-message"))
}
