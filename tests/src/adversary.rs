//! Tools for the adversarial suite: every RPC enumerated from the service descriptor and
//! called with raw protobuf bytes (so hostile encodings can be sent and new RPCs are covered
//! automatically), a wider catalogue of forged tokens, whole-database snapshots, a panic
//! detector, and a small seeded PRNG.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use todo_shared::db::Pool;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

use crate::{Running, SECRET, bad_authorizations, claims_for, forge, now_secs};

// ---------------------------------------------------------------------------------------------
// The service descriptor.

/// One RPC of a service, as the descriptor describes it.
#[derive(Debug, Clone)]
pub struct Rpc {
    /// e.g. `GetTask`.
    pub name: String,
    /// e.g. `/todo.task.v1.TaskService/GetTask`.
    pub path: String,
    /// The request message.
    pub input: DescriptorProto,
}

impl Rpc {
    /// The request field called `name`, if any.
    pub fn input_field(&self, name: &str) -> Option<&prost_types::FieldDescriptorProto> {
        self.input.field.iter().find(|f| f.name() == name)
    }

    /// Whether the request names a task by a string `id` field.
    pub fn takes_id(&self) -> bool {
        self.input_field("id").is_some_and(|f| f.r#type() == Type::String)
    }
}

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(todo_contract::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

/// Every RPC of `service` (a full name such as `todo.task.v1.TaskService`), in declaration
/// order, from the descriptor set compiled into the services.
pub fn rpcs(service: &str) -> Vec<Rpc> {
    let set = descriptor_set();
    let (package, name) = service.rsplit_once('.').expect("a full service name");
    let file = set
        .file
        .iter()
        .find(|f| f.package() == package && f.service.iter().any(|s| s.name() == name))
        .unwrap_or_else(|| panic!("service {service} is not in the descriptor set"));
    let svc = file.service.iter().find(|s| s.name() == name).expect("service");
    let rpcs: Vec<Rpc> = svc
        .method
        .iter()
        .map(|m| Rpc {
            name: m.name().to_owned(),
            path: format!("/{service}/{}", m.name()),
            input: message(&set, m.input_type()),
        })
        .collect();
    assert!(!rpcs.is_empty(), "{service} has no methods");
    rpcs
}

/// The message `full_name` (`.pkg.Name`) of the set.
fn message(set: &FileDescriptorSet, full_name: &str) -> DescriptorProto {
    let full_name = full_name.trim_start_matches('.');
    set.file
        .iter()
        .flat_map(|f| f.message_type.iter().map(move |m| (format!("{}.{}", f.package(), m.name()), m)))
        .find(|(name, _)| name == full_name)
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("message {full_name} is not in the descriptor set"))
}

/// A request for `rpc` that would succeed with a valid token, built from the descriptor alone:
/// `id` is `id`; any other `*_id` a fresh UUID; etags and page tokens left empty; other strings
/// a short text; integers 1; booleans true; messages absent. New RPCs get a plausible request
/// without anyone writing it.
pub fn sample_request(rpc: &Rpc, id: &str) -> Vec<u8> {
    let mut wire = Wire::new();
    for field in &rpc.input.field {
        let number = u32::try_from(field.number()).expect("field number");
        let name = field.name();
        match field.r#type() {
            Type::String if name == "id" => {
                wire.string(number, id);
            }
            Type::String if name.ends_with("_id") => {
                wire.string(number, &Uuid::new_v4().to_string());
            }
            Type::String if name.contains("etag") || name.contains("token") => {}
            Type::String => {
                wire.string(number, "adversarial probe");
            }
            Type::Bool | Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
                wire.varint(number, 1);
            }
            _ => {}
        }
    }
    wire.finish()
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire encoding by hand.

/// Builds protobuf bytes field by field, including encodings the generated code never emits.
#[derive(Debug, Default, Clone)]
pub struct Wire(Vec<u8>);

impl Wire {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn raw_varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }

    fn key(&mut self, field: u32, wire_type: u8) -> &mut Self {
        self.raw_varint((u64::from(field) << 3) | u64::from(wire_type))
    }

    /// A varint field (int32, int64, bool, enum). Negative int32s are 10-byte varints.
    pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0).raw_varint(v)
    }

    /// A length-delimited field with arbitrary bytes (not necessarily UTF-8).
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2).raw_varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    pub fn fixed64(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn fixed32(&mut self, field: u32, v: u32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends bytes as they are (a truncated field, garbage).
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Unknown fields naming `victim` every way a careless server might read a user from: as a
/// string and as 16 raw bytes, on several unused field numbers, appended to a request.
pub fn smuggled_user_fields(victim: Uuid) -> Vec<u8> {
    let mut wire = Wire::new();
    wire.string(15, &victim.to_string())
        .bytes(16, victim.as_bytes())
        .string(99, &victim.to_string())
        .string(1000, &format!("user_id={victim}"))
        .string(536_870_911, &victim.to_string());
    wire.finish()
}

// ---------------------------------------------------------------------------------------------
// Raw calls.

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
    grpc.unary(request, path, RawCodec).await.map(tonic::Response::into_inner)
}

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

// ---------------------------------------------------------------------------------------------
// Tokens.

fn sign_hs256(signing_input: &str, secret: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("hmac key");
    mac.update(signing_input.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn jwt(algorithm: jsonwebtoken::Algorithm, claims: &serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        .expect("sign")
}

/// Every way of presenting a bad token this suite knows, for a token that would otherwise
/// name `user`: [`bad_authorizations`] plus transport-level, structural, algorithm and claim
/// attacks. Values are raw `authorization` bytes (some are not even ASCII); `None` sends none.
/// Each of them must give UNAUTHENTICATED.
pub fn token_attacks(user: Uuid) -> Vec<(String, Option<Vec<u8>>)> {
    let secret = SECRET.as_bytes();
    let good = forge("HS256", &claims_for(user), Some(secret));
    let parts: Vec<&str> = good.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let signed = |claims: &serde_json::Value| forge("HS256", claims, Some(secret));

    let mut attacks: Vec<(String, Option<String>)> =
        bad_authorizations(user).into_iter().map(|(label, value)| (label.to_owned(), value)).collect();
    let mut add = |label: &str, value: String| attacks.push((label.to_owned(), Some(value)));

    // The header value itself.
    add("`Bearer` alone", "Bearer".to_owned());
    add("`Bearer` and spaces", "Bearer    ".to_owned());
    add("token without a scheme", good.clone());
    add("Token scheme", format!("Token {good}"));
    add("Digest scheme", format!("Digest {good}"));
    add("Bearer glued to the token", format!("Bearer{good}"));
    add("valid token followed by junk", format!("Bearer {good} junk"));
    add("two tokens", format!("Bearer {good} {good}"));

    // Structure.
    add("one part", format!("Bearer {header}"));
    add("two parts", format!("Bearer {header}.{payload}"));
    add("two parts and a dot", format!("Bearer {header}.{payload}."));
    add("four parts", format!("Bearer {good}.{signature}"));
    add("four parts, last empty", format!("Bearer {good}."));
    add("five parts", format!("Bearer {good}.{header}.{payload}"));
    add("empty parts", "Bearer ..".to_owned());
    add("non-base64 characters", format!("Bearer {header}.{payload}.{}!*$", &signature[..signature.len() - 3]));
    add("standard base64 alphabet", format!("Bearer {}+/.{payload}.{signature}", &header[..header.len() - 2]));
    add("padded base64", format!("Bearer {header}==.{payload}.{signature}"));
    add("header not JSON", format!("Bearer {}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("not json")));
    add("payload not JSON", {
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode("not json"));
        format!("Bearer {input}.{}", sign_hs256(&input, secret))
    });
    add("payload a JSON array", {
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode("[1,2,3]"));
        format!("Bearer {input}.{}", sign_hs256(&input, secret))
    });
    add("oversized token (11 KiB, under the transport's header limit)", {
        let mut claims = claims_for(user);
        claims["padding"] = serde_json::json!("A".repeat(8 * 1024));
        format!("Bearer {}", forge("HS256", &claims, Some(b"another-secret-another-secret-another")))
    });
    add("oversized garbage (12 KiB)", format!("Bearer {}", "x".repeat(12 * 1024)));

    // Algorithms.
    for alg in ["none", "None", "NONE", "nOnE"] {
        add(&format!("alg {alg:?}, empty signature"), format!("Bearer {}", forge(alg, &claims_for(user), None)));
    }
    add("alg none with the real signature", {
        let unsigned = forge("none", &claims_for(user), None);
        format!("Bearer {unsigned}{signature}")
    });
    add("HS384 header over an HS256 signature", format!("Bearer {}", forge("HS384", &claims_for(user), Some(secret))));
    add("HS384 token", format!("Bearer {}", jwt(jsonwebtoken::Algorithm::HS384, &claims_for(user), secret)));
    add("HS512 header over an HS256 signature", format!("Bearer {}", forge("HS512", &claims_for(user), Some(secret))));
    add("RS256 header, HMAC signature (algorithm confusion)", {
        format!("Bearer {}", forge("RS256", &claims_for(user), Some(secret)))
    });
    add("ES256 header", format!("Bearer {}", forge("ES256", &claims_for(user), Some(secret))));
    add("EdDSA header", format!("Bearer {}", forge("EdDSA", &claims_for(user), Some(secret))));
    add("unknown alg", format!("Bearer {}", forge("HS257", &claims_for(user), Some(secret))));
    add("header without alg", {
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#);
        let input = format!("{header}.{payload}");
        format!("Bearer {input}.{}", sign_hs256(&input, secret))
    });

    // Signatures.
    add("one flipped signature bit", {
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("signature");
        bytes[0] ^= 0x01;
        format!("Bearer {header}.{payload}.{}", URL_SAFE_NO_PAD.encode(bytes))
    });
    add("last signature bit flipped", {
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("signature");
        *bytes.last_mut().expect("signature byte") ^= 0x01;
        format!("Bearer {header}.{payload}.{}", URL_SAFE_NO_PAD.encode(bytes))
    });
    add("truncated signature", format!("Bearer {header}.{payload}.{}", &signature[..22]));
    add("empty signature", format!("Bearer {header}.{payload}."));
    add("payload changed (longer expiry) without re-signing", {
        let mut claims = claims_for(user);
        claims["exp"] = serde_json::json!(now_secs() + 10 * 365 * 24 * 3600);
        format!("Bearer {header}.{}.{signature}", URL_SAFE_NO_PAD.encode(claims.to_string()))
    });
    add("signed with an empty key", format!("Bearer {}", forge("HS256", &claims_for(user), Some(b""))));
    add("signed with the secret plus one byte", {
        let mut longer = secret.to_vec();
        longer.push(b'!');
        format!("Bearer {}", forge("HS256", &claims_for(user), Some(&longer)))
    });

    // Claims, well signed.
    let mut expired = claims_for(user);
    expired["iat"] = serde_json::json!(now_secs() - 3600);
    expired["exp"] = serde_json::json!(now_secs() - 45);
    add("expired 45 s ago (beyond the 30 s leeway)", format!("Bearer {}", signed(&expired)));
    for claim in ["exp", "sub", "iss", "aud", "iat", "email", "jti"] {
        let mut claims = claims_for(user);
        claims.as_object_mut().expect("object").remove(claim);
        add(&format!("missing {claim}"), format!("Bearer {}", signed(&claims)));
    }
    for (label, claim, value) in [
        ("exp as a string", "exp", serde_json::json!((now_secs() + 3600).to_string())),
        ("exp as a float", "exp", serde_json::json!((now_secs() + 3600) as f64 + 0.5)),
        ("exp negative", "exp", serde_json::json!(-1)),
        ("exp null", "exp", serde_json::Value::Null),
        ("sub not a UUID", "sub", serde_json::json!("42")),
        ("sub empty", "sub", serde_json::json!("")),
        ("sub a path", "sub", serde_json::json!("../../admin")),
        ("sub a number", "sub", serde_json::json!(42)),
        ("sub a UUID with junk", "sub", serde_json::json!(format!("{user}x"))),
        ("iss empty", "iss", serde_json::json!("")),
        ("iss differs in case", "iss", serde_json::json!(crate::ISSUER.to_uppercase())),
        ("aud empty", "aud", serde_json::json!("")),
        ("aud differs in case", "aud", serde_json::json!(crate::AUDIENCE.to_uppercase())),
        ("aud a list without ours", "aud", serde_json::json!(["someone-else"])),
        ("iat far in the future", "iat", serde_json::json!(now_secs() + 3600)),
    ] {
        let mut claims = claims_for(user);
        claims[claim] = value;
        add(label, format!("Bearer {}", signed(&claims)));
    }

    let mut attacks: Vec<(String, Option<Vec<u8>>)> =
        attacks.into_iter().map(|(label, value)| (label, value.map(String::into_bytes))).collect();
    // Bytes no JWT can contain (obs-text, legal in a header value).
    let mut non_ascii = format!("Bearer {header}.{payload}.").into_bytes();
    non_ascii.extend_from_slice(&[0xC3, 0xA9, 0xFF, 0x80]);
    attacks.push(("non-ASCII bytes".to_owned(), Some(non_ascii)));
    attacks
}

// ---------------------------------------------------------------------------------------------
// Database state.

/// Every row of every table of the service (migration bookkeeping excluded), each rendered as
/// text, sorted: two equal snapshots mean nothing was written in between.
pub async fn snapshot(db: &crate::TestDb) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    match &db.pool {
        Pool::Postgres(pool) => {
            let mut conn = pool.acquire().await.expect("connection");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .expect("list tables");
            for table in tables {
                let sql = format!("SELECT CAST(t AS text) FROM \"{table}\" t ORDER BY 1");
                let rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.expect("snapshot");
                out.insert(table, rows);
            }
        }
        Pool::Sqlite(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_%' ESCAPE '\\'",
            )
            .fetch_all(pool)
            .await
            .expect("list tables");
            for table in tables {
                let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                    .bind(&table)
                    .fetch_all(pool)
                    .await
                    .expect("columns");
                let row = columns.iter().map(|c| format!("quote(\"{c}\")")).collect::<Vec<_>>().join(" || '|' || ");
                let sql = format!("SELECT {row} FROM \"{table}\" ORDER BY 1");
                let rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.expect("snapshot");
                out.insert(table, rows);
            }
        }
    }
    assert!(!out.is_empty(), "the snapshot found no tables");
    out
}

/// A stored task as the database has it (times left out: they are checked through the API).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub description: String,
    pub completed: bool,
    pub version: i64,
}

/// Every row of `tasks`, by id.
pub async fn task_rows(db: &crate::TestDb) -> BTreeMap<Uuid, TaskRow> {
    const SQL: &str = "SELECT id, user_id, title, description, completed, version FROM tasks";
    type Row = (Uuid, Uuid, String, String, bool, i64);
    let rows: Vec<Row> = match &db.pool {
        Pool::Postgres(pool) => {
            sqlx::query_as(SQL).fetch_all(&mut pool.acquire().await.expect("connection")).await.expect("tasks")
        }
        Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await.expect("tasks"),
    };
    rows.into_iter()
        .map(|(id, user_id, title, description, completed, version)| {
            (id, TaskRow { id, user_id, title, description, completed, version })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Health and panics.

/// Asserts the service answers health for the server and for `service` with SERVING.
pub async fn assert_serving(running: &Running, service: &str) {
    let mut health = HealthClient::new(running.channel().await);
    for name in ["", service] {
        let status = health
            .check(HealthCheckRequest { service: name.to_owned() })
            .await
            .unwrap_or_else(|e| panic!("health check {name:?}: {e:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "health of {name:?}");
    }
}

static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

/// Starts recording every panic of the process whose location is outside the test code
/// (`tests/`): a panic in a service, in tonic, prost or hyper. Idempotent. The previous hook
/// still runs, so panics are printed as usual.
pub fn watch_panics() {
    let mut installed = false;
    PANICS.get_or_init(|| {
        installed = true;
        Mutex::new(Vec::new())
    });
    if installed {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| l.file().to_owned()).unwrap_or_default();
            if !location.starts_with("tests/") && !location.contains("/tests/") {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let thread = std::thread::current().name().unwrap_or("?").to_owned();
                if let Some(panics) = PANICS.get() {
                    panics
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(format!("{location} on thread {thread}: {message}"));
                }
            }
            previous(info);
        }));
    }
}

/// The panics [`watch_panics`] has recorded so far.
pub fn service_panics() -> Vec<String> {
    PANICS.get().map(|p| p.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Randomness.

/// SplitMix64: a tiny, seedable, good-enough PRNG for tests (not for anything secret).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed from the clock, for runs that should differ.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
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
