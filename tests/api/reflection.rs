//! Server reflection, v1 and v1alpha, on both services: each port lists what it serves and
//! nothing else, and describes its own service from its `.proto` file.

use std::collections::BTreeSet;

use todo_tests::*;

on_both_backends!(each_port_lists_only_its_own_services_and_describes_them);

const HEALTH: &str = "grpc.health.v1.Health";

/// Asks one question on a fresh reflection stream and returns the answer.
macro_rules! ask {
    ($version:ident, $channel:expr, $request:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::{ServerReflectionRequest, server_reflection_response::MessageResponse};
        let request = ServerReflectionRequest { host: String::new(), message_request: Some($request) };
        let mut client = ServerReflectionClient::new($channel);
        let mut answers = client.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
        let answer: Option<MessageResponse> = answers.message().await.unwrap().unwrap().message_response;
        answer.expect("an answer")
    }};
}

/// Services listed, and whether the service's own file comes back for its name, per version.
macro_rules! check_version {
    ($version:ident, $reflection:expr, $channel:expr, $service:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let listed: BTreeSet<String> =
            match ask!($version, $channel.clone(), MessageRequest::ListServices(String::new())) {
                MessageResponse::ListServicesResponse(list) => list.service.into_iter().map(|s| s.name).collect(),
                other => panic!("{}: ListServices answered {other:?}", $service),
            };
        // Exactly these: the other service's methods would answer UNIMPLEMENTED here.
        let expected: BTreeSet<String> = [$service, HEALTH, $reflection].map(str::to_owned).into();
        assert_eq!(listed, expected, "{} ({})", $service, stringify!($version));

        let symbol = MessageRequest::FileContainingSymbol($service.to_owned());
        match ask!($version, $channel.clone(), symbol) {
            MessageResponse::FileDescriptorResponse(files) => {
                let described = files.file_descriptor_proto.iter().any(|bytes| {
                    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice()).unwrap();
                    file.service.iter().any(|s| $service.ends_with(&format!(".{}", s.name())))
                });
                assert!(described, "{}: its own file describes it", $service);
            }
            other => panic!("{}: FileContainingSymbol answered {other:?}", $service),
        }
    }};
}

async fn each_port_lists_only_its_own_services_and_describes_them(backend: Backend) {
    let auth = start_auth(backend).await;
    let tasks = start_tasks(backend).await;
    for (running, service) in [(&auth, auth_service::SERVICE_NAME), (&tasks, task_service::SERVICE_NAME)] {
        let channel = running.channel().await;
        check_version!(v1, "grpc.reflection.v1.ServerReflection", channel, service);
        check_version!(v1alpha, "grpc.reflection.v1alpha.ServerReflection", channel, service);
    }
}
