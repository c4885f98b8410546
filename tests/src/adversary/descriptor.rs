//! The service descriptor: every RPC of a service, enumerated from the descriptor set compiled
//! into the services, and a plausible request for each built from the descriptor alone.

use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use uuid::Uuid;

use super::Wire;

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
