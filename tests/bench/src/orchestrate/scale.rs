//! The scale mode (`--scale`): do the task operations cost the same on a large database as on
//! a small one?
//!
//! Two task databases, each with its own task-service process behind the same auth-service:
//! the small one holds only the measured users' tasks; the large one holds exactly the same
//! rows plus everybody else's (by default a million tasks over ten thousand users in all,
//! `--scale-tasks`), loaded with COPY. Only everybody else's data differs: the measured users
//! are the same sixteen (one per worker at 16 in flight), signed up and logged in for real,
//! with the same thousand tasks each, so ListTasks page 50 of 20 exists. Every scenario then
//! runs on the small and the large set alternately (small large, then large small, ...), as
//! the A/B mode does, so drift on a shared machine falls on both alike.

use std::time::Duration;

use time::OffsetDateTime;
use todo_contract::task::v1 as task_pb;
use todo_contract::task::v1::task_service_client::TaskServiceClient;
use uuid::Uuid;

use crate::bulk::{Dataset, Loaded};
use crate::fixture::{DeepPage, Fixture, SCALE_PAGE_SIZE as PAGE, User, authed, connect, sign_up_and_login};
use crate::load::Kind;
use crate::plans::{self, PlanInputs};
use crate::report::ScaleReport;
use crate::{Result, pg, procs};

use super::Harness;
use super::header::machine_header;

/// Users whose calls are measured: one per worker at 16 in flight.
const MEASURED_USERS: usize = 16;
/// Tasks of each measured user: page 50 of 20 must be a full page (the worker checks it).
const MEASURED_TASKS: usize = 1_000;
/// Tasks per user on average in the large set (a million over ten thousand users).
const TASKS_PER_OTHER_USER: usize = 100;
const DEEP_PAGE: usize = 50;
const _: () = assert!(MEASURED_TASKS >= DEEP_PAGE * PAGE);

/// The scenarios, in running order. CreateTask runs last: it adds rows to both sets alike
/// (tens of thousands to the measured users), which every scenario after it would see.
const SCENARIOS: &[Kind] = &[Kind::GetTask, Kind::ListFirstPage, Kind::ListPage50, Kind::UpdateTask, Kind::CreateTask];

fn describe(name: &str, loaded: &Loaded) -> String {
    format!(
        "- {name}: {} tasks of {} users, {} recent changes in the log; COPY {:.1} s, VACUUM ANALYZE {:.1} s; `tasks` with its indexes {:.0} MiB",
        loaded.tasks,
        loaded.users,
        loaded.changes,
        loaded.copy.as_secs_f64(),
        loaded.vacuum.as_secs_f64(),
        loaded.tasks_bytes as f64 / (1024.0 * 1024.0)
    )
}

impl Harness {
    pub(super) async fn run_scale(&mut self, total_tasks: usize) -> Result<ScaleReport> {
        let pg_version = pg::server_version(&self.admin).await?;
        let mut header = machine_header(&pg_version, &self.options);
        let busy = tokio::task::spawn_blocking(|| procs::machine_busy(Duration::from_secs(1))).await?;
        header.push(format!("- Machine busy before the run: {busy:.0}% of one core"));
        header.push(format!(
            "- {} rounds per measurement, small and large alternately; A = small, B = large",
            self.options.rounds
        ));
        for line in &header {
            eprintln!("{line}");
        }
        for name in self.planned_databases.clone() {
            pg::create_database(&self.admin, &name).await?;
            self.databases.push(name);
        }
        let large_db = format!("{}_large", self.planned_databases[1]);
        pg::create_database(&self.admin, &large_db).await?;
        self.databases.push(large_db.clone());
        let large_url = pg::with_database(&self.admin, &large_db);

        let auth = self.start("auth", &self.exe_dir.join("auth-service"), &[], &[])?;
        self.procs[auth].wait_serving(Duration::from_secs(30)).await?;
        pg::seed_revocations(&self.auth_url).await?;
        let task_bin = self.exe_dir.join("task-service");
        let auth_url = ("AUTH_SERVICE_URL", self.url_of(auth));
        let small = self.start("task-small", &task_bin, &[], std::slice::from_ref(&auth_url))?;
        let large = self.start("task-large", &task_bin, &[], &[auth_url, ("DATABASE_URL", large_url.clone())])?;
        self.procs[small].wait_serving(Duration::from_secs(30)).await?;
        self.procs[large].wait_serving(Duration::from_secs(30)).await?;

        let auth_channel = connect(self.procs[auth].addr).await?;
        let prefix = format!("scale-{}", std::process::id());
        let mut users = Vec::new();
        for i in 0..MEASURED_USERS {
            users.push(sign_up_and_login(auth_channel.clone(), i, &prefix).await?);
        }
        // The fixture's ListTasks(100) user, which the scale mode does not use.
        let list_user = sign_up_and_login(auth_channel, MEASURED_USERS, &prefix).await?;
        let ids: Vec<Uuid> = users.iter().map(|u| u.id.parse()).collect::<Result<_, _>>()?;

        let now = OffsetDateTime::now_utc();
        let measured = Dataset::generate(ids, MEASURED_USERS * MEASURED_TASKS, now, 0x5EED_0001)?;
        let others_tasks = total_tasks.saturating_sub(MEASURED_USERS * MEASURED_TASKS);
        let other_users = (total_tasks / TASKS_PER_OTHER_USER).saturating_sub(MEASURED_USERS).max(1);
        let others =
            Dataset::generate((0..other_users).map(|_| Uuid::new_v4()).collect(), others_tasks, now, 0x5EED_0002)?;
        let everyone = Dataset::merge(&measured, others);
        eprintln!("{} loading the small data set", self.elapsed());
        let small_loaded = measured.load(&self.tasks_url, now).await?;
        eprintln!("{} loading the large data set ({} tasks)", self.elapsed(), everyone.rows.len());
        let large_loaded = everyone.load(&large_url, now).await?;
        drop(everyone);
        let data = vec![
            describe("Small", &small_loaded),
            describe("Large", &large_loaded),
            format!(
                "- Measured: the same {MEASURED_USERS} users in both, {MEASURED_TASKS} tasks each created over the last year \
                 (identical rows); GetTask and UpdateTask pick any of the user's tasks, ListTasks pages are {PAGE}"
            ),
        ];
        for line in &data {
            eprintln!("{} {line}", self.elapsed());
        }

        let ids_by_user = measured.ids_by_user();
        for (user, ids) in users.iter_mut().zip(&ids_by_user) {
            user.tasks = ids.iter().map(Uuid::to_string).collect();
        }
        for user in &mut users {
            user.deep_page = Some(self.deep_page(small, large, user).await?);
        }
        let cursor_row = {
            let newest_first: Vec<_> = measured.rows.iter().rev().filter(|r| r.user == 0).collect();
            let row = newest_first.get((DEEP_PAGE - 1) * PAGE - 1).ok_or("the measured user has too few tasks")?;
            (crate::bulk::timestamp(row.created_micros)?, row.id)
        };
        let plan_inputs = PlanInputs {
            user: measured.users[0],
            task: *ids_by_user[0].get(MEASURED_TASKS / 2).ok_or("no task to explain")?,
            cursor: cursor_row,
        };
        self.fixture = Some(std::sync::Arc::new(Fixture {
            users,
            list_user,
            mixed_pool: std::sync::Mutex::new(Vec::new()),
            any_task: true,
        }));

        // Explained on the data as loaded, before the measurements add to it.
        let plans = plans::explain(&large_url, &plan_inputs).await?;
        let small_plans = plans::explain(&self.tasks_url, &plan_inputs).await?;
        let mut comparisons = Vec::new();
        for &kind in SCENARIOS {
            for &n in &self.options.in_flight.clone() {
                comparisons.push(self.alternate(kind, n, (auth, small), (auth, large)).await?);
            }
        }
        Ok(ScaleReport { header, data, comparisons, plans, small_plans })
    }

    /// Walks `user`'s list on the small set to page 50 of 20: its token and first task, which
    /// the large set (same rows for this user) must answer the same.
    async fn deep_page(&self, small: usize, large: usize, user: &User) -> Result<DeepPage> {
        let mut client = TaskServiceClient::new(connect(self.procs[small].addr).await?);
        let mut token = String::new();
        for _ in 1..DEEP_PAGE {
            let request = task_pb::ListTasksRequest { page_size: PAGE as i32, page_token: token, ..Default::default() };
            token = client.list_tasks(authed(request, &user.bearer)).await?.into_inner().next_page_token;
            if token.is_empty() {
                return Err(format!("{} has fewer than {DEEP_PAGE} pages", user.email).into());
            }
        }
        let first_of = async |addr| -> Result<String> {
            let mut client = TaskServiceClient::new(connect(addr).await?);
            let request =
                task_pb::ListTasksRequest { page_size: PAGE as i32, page_token: token.clone(), ..Default::default() };
            let page = client.list_tasks(authed(request, &user.bearer)).await?.into_inner();
            Ok(page.tasks.first().map(|t| t.id.clone()).unwrap_or_default())
        };
        let first_id = first_of(self.procs[small].addr).await?;
        if first_of(self.procs[large].addr).await? != first_id {
            return Err("page 50 differs between the small and the large data set".into());
        }
        Ok(DeepPage { token, first_id })
    }
}
