//! The scale mode's data, loaded through SQL (`COPY`, not RPCs, so a million tasks take
//! seconds), written as task-service itself writes it: UUID v7 ids from the creation time,
//! one change-head row per user holding its position and count of tasks (which the quota
//! reads), and the change log's rows still inside the retention window. The service then
//! serves it as its own.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Result;

/// How far back the loaded tasks were created: a year of use.
const HISTORY: Duration = Duration::from_secs(365 * 24 * 3600);
/// task-service's default `TASK_CHANGE_RETENTION`: tasks created more recently than this
/// still have their change in the log.
const RETENTION: Duration = task_service::Config::DEFAULT_CHANGE_RETENTION;
/// Bytes of COPY data sent at a time.
const CHUNK: usize = 1 << 20;

/// One task to load. Its content follows from `bits`, so the same row loads the same
/// everywhere.
#[derive(Clone, Copy)]
pub struct TaskRow {
    pub created_micros: i64,
    /// Index into the dataset's users.
    pub user: u32,
    pub id: Uuid,
    bits: u64,
}

/// Users and their tasks, oldest first.
pub struct Dataset {
    pub users: Vec<Uuid>,
    pub rows: Vec<TaskRow>,
}

/// What a load did and how long it took.
pub struct Loaded {
    pub tasks: u64,
    pub users: u64,
    pub changes: u64,
    pub copy: Duration,
    pub vacuum: Duration,
    /// `pg_total_relation_size` of `tasks` (heap and indexes), bytes.
    pub tasks_bytes: i64,
}

/// xorshift64*: plenty for made-up data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

impl Dataset {
    /// `tasks` tasks dealt out to `users` in turn (so each gets `tasks / users.len()`, give
    /// or take one), created at random over the year before `now`. `seed` makes it
    /// repeatable: the same seed and users give the same rows.
    pub fn generate(users: Vec<Uuid>, tasks: usize, now: OffsetDateTime, seed: u64) -> Result<Self> {
        if users.is_empty() && tasks > 0 {
            return Err("a dataset with tasks needs at least one user".into());
        }
        let mut rng = Rng(seed | 1);
        let now_micros = micros(now);
        let history = HISTORY.as_micros() as u64;
        if now_micros < history as i64 {
            return Err("the clock says it is less than a year after 1970".into());
        }
        let count = users.len() as u64;
        let mut rows: Vec<TaskRow> = (0..tasks)
            .map(|i| {
                let user = (i as u64 % count) as u32;
                let created_micros = now_micros - rng.below(history) as i64 - 1;
                let mut random = [0u8; 10];
                random.copy_from_slice(&rng.next().to_le_bytes().repeat(2)[..10]);
                // Positive: checked against the history above.
                let millis = created_micros.unsigned_abs() / 1000;
                let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
                TaskRow { created_micros, user, id, bits: rng.next() }
            })
            .collect();
        rows.sort_unstable_by_key(|r| (r.created_micros, r.id));
        Ok(Self { users, rows })
    }

    /// Both datasets' users (`a`'s first) and rows, oldest first (ties by id, as ListTasks
    /// orders them). `b`, the large one, is taken rather than copied.
    pub fn merge(a: &Self, b: Self) -> Self {
        let offset = a.users.len() as u32;
        let mut users = a.users.clone();
        users.extend(b.users);
        let mut rows = b.rows;
        for row in &mut rows {
            row.user += offset;
        }
        rows.extend_from_slice(&a.rows);
        rows.sort_unstable_by_key(|r| (r.created_micros, r.id));
        Self { users, rows }
    }

    /// Each user's task ids, oldest first.
    pub fn ids_by_user(&self) -> Vec<Vec<Uuid>> {
        let mut ids = vec![Vec::new(); self.users.len()];
        for row in &self.rows {
            ids[row.user as usize].push(row.id);
        }
        ids
    }

    /// COPYs the dataset into a task-service database (migrated, with no tasks yet), then
    /// VACUUM ANALYZE: the planner's statistics and the visibility map a table that grew
    /// over a year would have from autovacuum.
    pub async fn load(&self, url: &str, now: OffsetDateTime) -> Result<Loaded> {
        let started = Instant::now();
        let mut conn = PgConnection::connect(url).await?;
        let retained_from = micros(now) - RETENTION.as_micros() as i64;
        let mut per_user = vec![0i64; self.users.len()];
        let mut changes = String::new();
        let mut change_count = 0u64;

        let mut copy = conn
            .copy_in_raw(
                "COPY tasks (id, user_id, title, description, completed, due_time, created_at, updated_at, version) \
                 FROM STDIN",
            )
            .await?;
        let mut buf = String::with_capacity(CHUNK + 1024);
        for row in &self.rows {
            let user = self.users[row.user as usize];
            per_user[row.user as usize] += 1;
            let content = Content::of(row);
            let created = timestamp(row.created_micros)?;
            let due = match content.due_micros {
                Some(at) => timestamp(at)?,
                None => "\\N".to_owned(),
            };
            let _ = writeln!(
                buf,
                "{}\t{user}\t{}\t{}\t{}\t{due}\t{created}\t{created}\t1",
                row.id,
                content.title,
                content.description,
                if content.completed { 't' } else { 'f' },
            );
            if row.created_micros >= retained_from {
                change_count += 1;
                let _ = writeln!(
                    changes,
                    "{user}\t{}\tupserted\t{}\t{}\t{}\t{}\t{due}\t{created}\t{created}\t1\t{created}",
                    per_user[row.user as usize],
                    row.id,
                    content.title,
                    content.description,
                    if content.completed { 't' } else { 'f' },
                );
            }
            if buf.len() >= CHUNK {
                copy.send(buf.as_bytes()).await?;
                buf.clear();
            }
        }
        copy.send(buf.as_bytes()).await?;
        let tasks = copy.finish().await?;

        let mut heads = String::new();
        for (user, count) in self.users.iter().zip(&per_user).filter(|(_, n)| **n > 0) {
            let _ = writeln!(heads, "{user}\t{count}\t{count}");
        }
        let mut copy = conn.copy_in_raw("COPY task_change_heads (user_id, position, tasks) FROM STDIN").await?;
        copy.send(heads.as_bytes()).await?;
        let users = copy.finish().await?;
        let mut copy = conn
            .copy_in_raw(
                "COPY task_changes (user_id, position, kind, task_id, title, description, completed, due_time, \
                 created_at, updated_at, version, recorded_at) FROM STDIN",
            )
            .await?;
        copy.send(changes.as_bytes()).await?;
        copy.finish().await?;
        let copied = started.elapsed();

        sqlx::raw_sql("VACUUM (ANALYZE) tasks, task_change_heads, task_changes").execute(&mut conn).await?;
        let tasks_bytes: i64 =
            sqlx::query_scalar("SELECT pg_total_relation_size('tasks')").fetch_one(&mut conn).await?;
        conn.close().await?;
        Ok(Loaded {
            tasks,
            users,
            changes: change_count,
            copy: copied,
            vacuum: started.elapsed() - copied,
            tasks_bytes,
        })
    }
}

/// What a loaded task says, made up from its row's bits: titles of 17 to 29 characters,
/// half with a description, half completed, a third with a due time. The text is COPY-escaped.
struct Content {
    title: String,
    description: String,
    completed: bool,
    due_micros: Option<i64>,
}

impl Content {
    fn of(row: &TaskRow) -> Self {
        const WORDS: [&str; 8] =
            ["groceries", "quarterly report", "dentist", "fix the bike", "call mum", "tax return", "read", "garden"];
        let b = row.bits;
        Self {
            title: copy_text(&format!("Task {:06}: {}", b % 1_000_000, WORDS[(b >> 20) as usize % WORDS.len()])),
            description: copy_text(if (b >> 24) & 1 == 0 { "" } else { crate::fixture::DESCRIPTION }),
            completed: (b >> 25) & 1 == 1,
            due_micros: (b >> 26)
                .is_multiple_of(3)
                .then(|| row.created_micros + ((b >> 30) % 30 + 1) as i64 * 86_400_000_000),
        }
    }
}

fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// `text` as a field of COPY's text format: backslash, tab, newline and carriage return
/// escaped (the only characters it treats specially).
fn copy_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// A timestamptz in PostgreSQL's own text form, UTC, to the microsecond.
pub fn timestamp(micros: i64) -> Result<String> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|e| format!("no timestamp {micros} µs after 1970: {e}"))?;
    Ok(format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    ))
}

#[cfg(test)]
mod tests {
    use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
    use task_service::store::postgres_sql::{INSERT_TASK, LIST_AFTER, LIST_FIRST_PAGE};
    use todo_shared::db::{DatabaseUrl, Pool, PoolSettings};

    use super::*;

    /// As the workspace's other PostgreSQL tests: no server named, a clear failure (or
    /// `cargo test -- --skip postgres`), never a pass that did not run.
    fn admin() -> String {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => panic!(
                "TEST_DATABASE_URL is not set: point it at a PostgreSQL server the tests may create databases on, \
                 or skip the PostgreSQL tests with `cargo test --workspace -- --skip postgres`"
            ),
        }
    }

    async fn insert(conn: &mut PgConnection, user: Uuid, max_tasks: i64) -> Result<Option<i64>> {
        let now = OffsetDateTime::now_utc();
        Ok(sqlx::query_scalar(INSERT_TASK)
            .bind(Uuid::now_v7())
            .bind(user)
            .bind("Created after the load")
            .bind("")
            .bind(false)
            .bind(None::<OffsetDateTime>)
            .bind(now)
            .bind(now)
            .bind(1i64)
            .bind(max_tasks)
            .fetch_optional(conn)
            .await?)
    }

    /// `assert_eq!` as an error, so the test still drops its database after a mismatch.
    fn same<T: PartialEq + std::fmt::Debug>(got: T, want: T) -> Result<()> {
        if got == want { Ok(()) } else { Err(format!("got {got:?}, expected {want:?}").into()) }
    }

    fn ids(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Uuid>> {
        Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    /// The checks of the test below, on a migrated database at `url`.
    async fn loaded_rows_are_served(url: &str) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let first = Dataset::generate(vec![alice], 45, now, 1)?;
        let others = Dataset::generate(vec![bob], 30, now, 2)?;
        let everyone = Dataset::merge(&first, others);
        let loaded = everyone.load(url, now).await?;
        same((loaded.tasks, loaded.users), (75, 2))?;
        same(&everyone.ids_by_user()[0], &first.ids_by_user()[0])?;
        let mut db = PgConnection::connect(url).await?;

        let head: (i64, i64) = sqlx::query_as("SELECT position, tasks FROM task_change_heads WHERE user_id = $1")
            .bind(alice)
            .fetch_one(&mut db)
            .await?;
        same(head, (45, 45))?;
        // Each retained change sits at its task's place in the user's history (1 = oldest).
        let changes: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT task_id, position FROM task_changes WHERE user_id = $1 ORDER BY position")
                .bind(alice)
                .fetch_all(&mut db)
                .await?;
        let history = &first.ids_by_user()[0];
        for (task, position) in &changes {
            same(history.iter().position(|id| id == task).map(|i| i as i64 + 1), Some(*position))?;
        }
        let all: i64 = sqlx::query_scalar("SELECT count(*) FROM task_changes").fetch_one(&mut db).await?;
        same(u64::try_from(all).ok(), Some(loaded.changes))?;

        // The service's pages are ids_by_user newest first: the first 20, then the next 20
        // after the first page's last row (the keyset cursor a page token carries).
        let newest_first: Vec<Uuid> = history.iter().rev().copied().collect();
        let rows = sqlx::query(LIST_FIRST_PAGE).bind(alice).bind(None::<bool>).bind(20i64).fetch_all(&mut db).await?;
        same(ids(&rows)?, newest_first[..20].to_vec())?;
        let last: OffsetDateTime = rows[19].try_get(6)?;
        let rows = sqlx::query(LIST_AFTER)
            .bind(alice)
            .bind(None::<bool>)
            .bind(20i64)
            .bind(last)
            .bind(newest_first[19])
            .fetch_all(&mut db)
            .await?;
        same(ids(&rows)?, newest_first[20..40].to_vec())?;

        // The quota counts the loaded tasks: full at 45, and the next create takes position 46.
        same(insert(&mut db, alice, 45).await?, None)?;
        same(insert(&mut db, alice, 46).await?, Some(46))?;
        db.close().await?;
        Ok(())
    }

    /// What the scale mode relies on: rows loaded by COPY are read back through task-service's
    /// own statements in the order `ids_by_user` gives, with each change at its task's place,
    /// and the quota counts them exactly.
    #[tokio::test]
    async fn postgres_loaded_rows_are_served_as_the_service_writes_them() {
        let admin = admin();
        let name = format!("todo_bench_bulk_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.expect("TEST_DATABASE_URL reachable");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await.expect("create");
        let url = crate::pg::with_database(&admin, &name);
        let outcome = async {
            let pool = Pool::connect_lazy(&DatabaseUrl::parse(&url)?, &PoolSettings::default())?;
            pool.migrate(&task_service::store::MIGRATIONS).await?;
            pool.close().await;
            loaded_rows_are_served(&url).await
        }
        .await;
        // Dropped whatever the outcome: the checks return their mismatches as errors.
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
            .execute(&mut conn)
            .await
            .expect("drop");
        outcome.expect("load and read back");
    }

    #[test]
    fn timestamps_are_postgres_text() {
        assert_eq!(timestamp(0).ok().as_deref(), Some("1970-01-01 00:00:00.000000+00"));
        assert_eq!(timestamp(1_798_761_600_123_456).ok().as_deref(), Some("2027-01-01 00:00:00.123456+00"));
    }

    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        assert_eq!(copy_text("a\tb\nc\rd\\e f"), "a\\tb\\nc\\rd\\\\e f");
    }
}
