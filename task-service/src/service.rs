//! The gRPC adapter: take the caller from the extensions, convert the request, call
//! [`Tasks`], convert the answer back.

use std::sync::Arc;

use todo_contract::task::v1 as pb;
use todo_contract::task::v1::task_service_server::TaskService;
use todo_shared::auth::AuthenticatedUser;
use todo_shared::validation::FieldViolations;
use tonic::{Request, Response, Status};

use crate::domain::{Etag, NewTask, TaskUpdate, parse_page_size, parse_task_id};
use crate::error::Error;
use crate::tasks::{ListRequest, Tasks};
use crate::watch::{WatchStream, Watchers};

pub struct TaskApi {
    tasks: Arc<Tasks>,
    watchers: Arc<Watchers>,
}

impl TaskApi {
    pub fn new(tasks: Arc<Tasks>, watchers: Arc<Watchers>) -> Self {
        Self { tasks, watchers }
    }
}

fn caller<T>(request: &Request<T>) -> Result<uuid::Uuid, Status> {
    AuthenticatedUser::from_request(request).map(|user| user.id)
}

fn task_id(raw: &str) -> Result<uuid::Uuid, Error> {
    parse_task_id(raw).map_err(|e| FieldViolations::single("id", e.to_string()).into())
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let user = caller(&request)?;
        let new = NewTask::try_from(request.into_inner()).map_err(Error::from)?;
        let task = self.tasks.create(user, new).await?;
        Ok(Response::new(pb::CreateTaskResponse { task: Some(task.into()) }))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Result<Response<pb::GetTaskResponse>, Status> {
        let user = caller(&request)?;
        let id = task_id(&request.get_ref().id)?;
        let task = self.tasks.get(user, id).await?;
        Ok(Response::new(pb::GetTaskResponse { task: Some(task.into()) }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let user = caller(&request)?;
        let request = request.into_inner();
        let page_size = parse_page_size(request.page_size)
            .map_err(|reason| Error::from(FieldViolations::single("page_size", reason)))?;
        let page = self
            .tasks
            .list(user, ListRequest { page_size, completed: request.completed, page_token: request.page_token })
            .await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: page.tasks.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn update_task(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Result<Response<pb::UpdateTaskResponse>, Status> {
        let user = caller(&request)?;
        let update = TaskUpdate::try_from(request.into_inner()).map_err(Error::from)?;
        let task = self.tasks.update(user, update).await?;
        Ok(Response::new(pb::UpdateTaskResponse { task: Some(task.into()) }))
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let user = caller(&request)?;
        let id = task_id(&request.get_ref().id)?;
        let expected_version = Etag::expected_version(&request.get_ref().etag);
        self.tasks.delete(user, id, expected_version).await?;
        Ok(Response::new(pb::DeleteTaskResponse {}))
    }

    type WatchTasksStream = WatchStream;

    async fn watch_tasks(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let caller = AuthenticatedUser::from_request(&request)?.clone();
        let stream = self.watchers.open(caller, &request.get_ref().resume_token).await?;
        Ok(Response::new(stream))
    }
}
