//! The framework ceiling: a bare tonic server (no interceptor, no tracing, no gRPC-web, no
//! database) implementing both services with canned answers of the same shapes and sizes as
//! the real ones, driven by the same load generator.

use std::net::SocketAddr;
use std::sync::Arc;

use todo_contract::auth::v1 as auth_pb;
use todo_contract::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use todo_contract::task::v1 as task_pb;
use todo_contract::task::v1::task_service_server::{TaskService, TaskServiceServer};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::Result;
use crate::fixture::{DESCRIPTION, LIST_TASKS};

struct Echo {
    task: task_pb::Task,
    list: task_pb::ListTasksResponse,
    login: auth_pb::LoginResponse,
    user: auth_pb::User,
}

fn timestamp(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 123_456_000 })
}

fn task(i: usize) -> task_pb::Task {
    task_pb::Task {
        id: format!("019ab4d2-7c31-7e55-8f0e-{i:012x}"),
        title: format!("Seeded task {i}"),
        description: DESCRIPTION.to_owned(),
        completed: false,
        due_time: Some(prost_types::Timestamp { seconds: 1_798_761_600, nanos: 0 }),
        create_time: timestamp(1_795_000_000),
        update_time: timestamp(1_795_000_000),
        etag: "\"1\"".to_owned(),
    }
}

impl Echo {
    fn new() -> Self {
        let user = auth_pb::User {
            id: "6f1c1f9e-3f0b-4d43-9a43-6a1d0c1e2b7a".to_owned(),
            email: "user-123456-42@bench.example.com".to_owned(),
            create_time: timestamp(1_795_000_000),
        };
        Self {
            task: task(0),
            list: task_pb::ListTasksResponse {
                tasks: (0..LIST_TASKS).map(task).collect(),
                next_page_token: String::new(),
            },
            // A real access token for these claims is about 330 characters.
            login: auth_pb::LoginResponse {
                access_token: "x".repeat(330),
                token_type: "bearer".to_owned(),
                expires_in: 604_800,
                user: Some(user.clone()),
                refresh_token: "r".repeat(43),
                refresh_token_expires_in: 2_592_000,
                session_id: "0b7d2f8e-5a41-4c1e-9e7f-3c2a1b0d9e8f".to_owned(),
            },
            user,
        }
    }
}

#[tonic::async_trait]
impl TaskService for Echo {
    async fn create_task(
        &self,
        _: Request<task_pb::CreateTaskRequest>,
    ) -> Result<Response<task_pb::CreateTaskResponse>, Status> {
        Ok(Response::new(task_pb::CreateTaskResponse { task: Some(self.task.clone()) }))
    }

    async fn get_task(
        &self,
        request: Request<task_pb::GetTaskRequest>,
    ) -> Result<Response<task_pb::GetTaskResponse>, Status> {
        // The load generator checks that the answer names the task it asked for.
        let task = task_pb::Task { id: request.into_inner().id, ..self.task.clone() };
        Ok(Response::new(task_pb::GetTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        _: Request<task_pb::ListTasksRequest>,
    ) -> Result<Response<task_pb::ListTasksResponse>, Status> {
        Ok(Response::new(self.list.clone()))
    }

    async fn update_task(
        &self,
        _: Request<task_pb::UpdateTaskRequest>,
    ) -> Result<Response<task_pb::UpdateTaskResponse>, Status> {
        Ok(Response::new(task_pb::UpdateTaskResponse { task: Some(self.task.clone()) }))
    }

    async fn delete_task(
        &self,
        _: Request<task_pb::DeleteTaskRequest>,
    ) -> Result<Response<task_pb::DeleteTaskResponse>, Status> {
        Ok(Response::new(task_pb::DeleteTaskResponse {}))
    }

    type WatchTasksStream = tokio_stream::Empty<Result<task_pb::WatchTasksResponse, Status>>;

    async fn watch_tasks(
        &self,
        _: Request<task_pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        Err(Status::unimplemented("the echo server does not stream"))
    }
}

#[tonic::async_trait]
impl AuthService for Echo {
    async fn sign_up(&self, _: Request<auth_pb::SignUpRequest>) -> Result<Response<auth_pb::SignUpResponse>, Status> {
        Ok(Response::new(auth_pb::SignUpResponse { user: Some(self.user.clone()) }))
    }

    async fn login(&self, _: Request<auth_pb::LoginRequest>) -> Result<Response<auth_pb::LoginResponse>, Status> {
        Ok(Response::new(self.login.clone()))
    }

    async fn get_current_user(
        &self,
        _: Request<auth_pb::GetCurrentUserRequest>,
    ) -> Result<Response<auth_pb::GetCurrentUserResponse>, Status> {
        Ok(Response::new(auth_pb::GetCurrentUserResponse { user: Some(self.user.clone()) }))
    }

    async fn refresh(&self, _: Request<auth_pb::RefreshRequest>) -> Result<Response<auth_pb::RefreshResponse>, Status> {
        let login = &self.login;
        Ok(Response::new(auth_pb::RefreshResponse {
            access_token: login.access_token.clone(),
            token_type: login.token_type.clone(),
            expires_in: login.expires_in,
            refresh_token: login.refresh_token.clone(),
            refresh_token_expires_in: login.refresh_token_expires_in,
        }))
    }

    async fn logout(&self, _: Request<auth_pb::LogoutRequest>) -> Result<Response<auth_pb::LogoutResponse>, Status> {
        Ok(Response::new(auth_pb::LogoutResponse { revoked_sessions: 1 }))
    }

    async fn list_sessions(
        &self,
        _: Request<auth_pb::ListSessionsRequest>,
    ) -> Result<Response<auth_pb::ListSessionsResponse>, Status> {
        Ok(Response::new(auth_pb::ListSessionsResponse { sessions: Vec::new() }))
    }

    async fn revoke_session(
        &self,
        _: Request<auth_pb::RevokeSessionRequest>,
    ) -> Result<Response<auth_pb::RevokeSessionResponse>, Status> {
        Ok(Response::new(auth_pb::RevokeSessionResponse {}))
    }

    async fn change_password(
        &self,
        _: Request<auth_pb::ChangePasswordRequest>,
    ) -> Result<Response<auth_pb::ChangePasswordResponse>, Status> {
        Ok(Response::new(auth_pb::ChangePasswordResponse { revoked_sessions: 0 }))
    }

    async fn delete_account(
        &self,
        _: Request<auth_pb::DeleteAccountRequest>,
    ) -> Result<Response<auth_pb::DeleteAccountResponse>, Status> {
        Ok(Response::new(auth_pb::DeleteAccountResponse {}))
    }
}

/// `todo-bench echo-server [addr]`: serves until SIGTERM; prints `listening <addr>` once bound.
pub async fn serve(addr: Option<&str>) -> Result<()> {
    let addr: SocketAddr =
        addr.unwrap_or("127.0.0.1:0").parse().map_err(|e| format!("echo-server: bad address: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let echo = Arc::new(Echo::new());
    tonic::transport::Server::builder()
        .add_service(TaskServiceServer::from_arc(echo.clone()))
        .add_service(AuthServiceServer::from_arc(echo))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            todo_shared::server::shutdown_signal(),
        )
        .await?;
    Ok(())
}
