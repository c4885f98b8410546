//! The task operations behind the RPCs, always on behalf of one authenticated user.

use std::sync::Arc;

use todo_shared::timestamp;
use uuid::Uuid;

use crate::domain::{NewTask, Task, TaskUpdate};
use crate::error::Error;
use crate::hub::Hub;
use crate::page_token::{Cursor, PageTokens};
use crate::store::{Change, ChangeKind, IdempotencyKey, PageQuery, TaskStore};
use todo_shared::validation::FieldViolations;

pub struct Tasks {
    store: Arc<dyn TaskStore>,
    page_tokens: PageTokens,
    /// Told of every change, so this process's WatchTasks streams look at once.
    hub: Arc<Hub>,
    /// `TASK_MAX_TASKS_PER_USER`.
    max_tasks: i64,
}

/// A validated ListTasks request.
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub page_size: u32,
    pub completed: Option<bool>,
    pub page_token: String,
}

#[derive(Debug)]
pub struct Page {
    pub tasks: Vec<Task>,
    pub next_page_token: Option<String>,
}

impl Tasks {
    pub fn new(store: Arc<dyn TaskStore>, page_tokens: PageTokens, hub: Arc<Hub>, max_tasks: i64) -> Self {
        Self { store, page_tokens, hub, max_tasks }
    }

    pub async fn create(&self, user_id: Uuid, new: NewTask) -> Result<Task, Error> {
        let now = timestamp::now();
        let task = Task {
            // v7: time-ordered, so inserts append to the primary-key index.
            id: Uuid::now_v7(),
            user_id,
            title: new.title.as_str().to_owned(),
            description: new.description.as_str().to_owned(),
            completed: false,
            due_time: new.due_time,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let fingerprint = new.fingerprint();
        let new_id = task.id;
        let (store, hub, max_tasks) = (Arc::clone(&self.store), Arc::clone(&self.hub), self.max_tasks);
        let stored = run_to_completion(async move {
            let key = new.request_id.as_ref().map(|id| IdempotencyKey { request_id: id.as_str(), fingerprint });
            let (stored, position) = store.insert_task(&task, key.as_ref(), max_tasks).await?;
            // None: a retry, which changed nothing.
            if let Some(position) = position {
                hub.changed(user_id, || Change { position, kind: ChangeKind::Upserted(stored.clone()) });
            }
            Ok(stored)
        })
        .await?;
        if stored.id == new_id {
            tracing::info!(task_id = %new_id, "task created");
        } else {
            tracing::info!(task_id = %stored.id, "create retried: returning the task its request_id created");
        }
        Ok(stored)
    }

    pub async fn get(&self, user_id: Uuid, id: Uuid) -> Result<Task, Error> {
        self.store.get_task(user_id, id).await?.ok_or(Error::NotFound)
    }

    pub async fn list(&self, user_id: Uuid, request: ListRequest) -> Result<Page, Error> {
        let after = if request.page_token.is_empty() {
            None
        } else {
            let cursor = self
                .page_tokens
                .decode(user_id, request.completed, &request.page_token)
                .map_err(|e| FieldViolations::single("page_token", e.to_string()))?;
            Some(cursor)
        };
        // One extra row tells whether another page follows, without a count query.
        let mut tasks = self
            .store
            .list_tasks(user_id, PageQuery { completed: request.completed, after, limit: request.page_size + 1 })
            .await?;
        let next_page_token = if tasks.len() > request.page_size as usize {
            tasks.truncate(request.page_size as usize);
            tasks.last().map(|last| {
                let cursor = Cursor { created_at_micros: timestamp::to_unix_micros(last.created_at), id: last.id };
                self.page_tokens.encode(user_id, request.completed, cursor)
            })
        } else {
            None
        };
        Ok(Page { tasks, next_page_token })
    }

    pub async fn update(&self, user_id: Uuid, update: TaskUpdate) -> Result<Task, Error> {
        let (store, hub) = (Arc::clone(&self.store), Arc::clone(&self.hub));
        let task = run_to_completion(async move {
            let (task, position) = store.update_task(user_id, update.id, &update.patch, timestamp::now()).await?;
            hub.changed(user_id, || Change { position, kind: ChangeKind::Upserted(task.clone()) });
            Ok(task)
        })
        .await?;
        tracing::info!(task_id = %task.id, version = task.version, "task updated");
        Ok(task)
    }

    pub async fn delete(&self, user_id: Uuid, id: Uuid, expected_version: Option<i64>) -> Result<(), Error> {
        let (store, hub) = (Arc::clone(&self.store), Arc::clone(&self.hub));
        run_to_completion(async move {
            let position = store.delete_task(user_id, id, expected_version).await?;
            hub.changed(user_id, || Change { position, kind: ChangeKind::Deleted(id) });
            Ok(())
        })
        .await?;
        tracing::info!(task_id = %id, "task deleted");
        Ok(())
    }
}

/// Runs a write and its hand-over to the watchers on a task of its own. A client that goes
/// away, or a deadline, drops the RPC's future at any await; a write that had committed by then
/// would never reach the watchers (in this process or, unannounced, on other replicas) until
/// their next bookmark. Spawned, it finishes whatever happens to the caller.
async fn run_to_completion<T: Send + 'static>(
    write: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    match tokio::spawn(write).await {
        Ok(result) => result,
        // As if it had run here: a bug's panic stays a panic.
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(Error::ShuttingDown),
    }
}
