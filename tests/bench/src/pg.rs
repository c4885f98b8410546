//! PostgreSQL: the throw-away databases of a run, and the storage ceiling (pgbench running
//! each scenario's own SQL at the same concurrency).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::Result;
use crate::fixture::Fixture;
use crate::load::Kind;

/// The admin URL: a server where the harness may create and drop databases.
pub fn admin_url() -> String {
    std::env::var("BENCH_DATABASE_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{base}/{database}{query}")
}

pub async fn create_database(admin: &str, name: &str) -> Result<()> {
    let mut conn =
        PgConnection::connect(admin).await.map_err(|e| format!("cannot connect to BENCH_DATABASE_URL: {e}"))?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

pub async fn drop_database(admin: &str, name: &str) -> Result<()> {
    let mut conn = PgConnection::connect(admin).await?;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Revoked sessions the auth database starts with, so every task call's revocation check
/// looks up a populated set (as in a deployment where people log out), not an empty one.
pub const SEEDED_REVOKED_SESSIONS: i64 = 10_000;
/// User-wide revocations of session-less tokens seeded next to them.
pub const SEEDED_REVOKED_USERS: i64 = 1_000;

/// Appends the seeded revocations to auth-service's session-event log (random ids: they
/// match no caller, so every check is a miss, the common case).
pub async fn seed_revocations(auth_url: &str) -> Result<()> {
    let mut conn = PgConnection::connect(auth_url).await?;
    let (sessions, users) = (SEEDED_REVOKED_SESSIONS, SEEDED_REVOKED_USERS);
    let sql = format!(
        "INSERT INTO session_events (position, kind, user_id, session_id, not_before, created_at) \
         SELECT g, 'session_revoked', gen_random_uuid(), gen_random_uuid(), NULL, now() \
         FROM generate_series(1, {sessions}) g; \
         INSERT INTO session_events (position, kind, user_id, session_id, not_before, created_at) \
         SELECT g, 'tokens_revoked', gen_random_uuid(), NULL, now(), now() \
         FROM generate_series({sessions} + 1, {sessions} + {users}) g; \
         UPDATE session_event_head SET position = {sessions} + {users};"
    );
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

pub async fn server_version(admin: &str) -> Result<String> {
    let mut conn = PgConnection::connect(admin).await?;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(version)
}

async fn database_now(url: &str) -> Result<String> {
    let mut conn = PgConnection::connect(url).await?;
    let now: String = sqlx::query_scalar("SELECT now()::text").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(now)
}

/// The pgbench executable: `BENCH_PGBENCH`, else `pgbench` on PATH, else `/usr/bin/pgbench`.
pub fn pgbench_path() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("BENCH_PGBENCH") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("pgbench")).find(|p| p.is_file()));
    on_path.or_else(|| Some(PathBuf::from("/usr/bin/pgbench")).filter(|p| p.is_file()))
}

// The task statements are task-service's own text; auth-service's two lookups are copied
// verbatim from auth-service/src/store/postgres.rs (keep in step). `$n` are replaced per
// client below.
use task_service::store::postgres_sql::{DELETE_TASK, GET_TASK, INSERT_TASK, LIST_FIRST_PAGE, UPDATE_TASK};
const FIND_CREDENTIALS_SQL: &str = "SELECT id, email, created_at, password_hash FROM users WHERE email = $1";
const FIND_USER_SQL: &str = "SELECT id, email, created_at FROM users WHERE id = $1";

/// `sql` with `$1`, `$2`… replaced by `values` (pgbench `:variables`, which `-M prepared` turns
/// back into bound parameters, or `NULL::type` where the service binds NULL: pgbench cannot
/// bind a NULL).
fn bind(sql: &str, values: &[&str]) -> String {
    let mut out = sql.to_owned();
    // Highest first, so `$1` does not eat the front of `$10`.
    for (i, value) in values.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), value);
    }
    out
}

/// One script per client: client `c` runs `body(c)` (pgbench has no per-client variables,
/// so the script branches on `:client_id`; `\if` is evaluated by pgbench, no round trip).
fn per_client(clients: usize, body: impl Fn(usize) -> String) -> String {
    if clients == 1 {
        return format!("{}\n", body(0));
    }
    let mut script = String::new();
    for c in 0..clients {
        let keyword = if c == 0 { "\\if" } else { "\\elif" };
        let _ = writeln!(script, "{keyword} :client_id = {c}\n{}", body(c));
    }
    script.push_str("\\endif\n");
    script
}

/// A pgbench script: its text, its weight, and how many service calls one run of it stands for.
struct Script {
    name: &'static str,
    text: String,
    weight: u32,
    calls: u32,
}

/// The storage ceiling of one scenario.
#[derive(Debug, Clone)]
pub struct StorageCeiling {
    /// Statements per second, in service calls (a create-then-delete script counts two).
    pub calls_per_sec: f64,
    pub failed: u64,
    /// PostgreSQL CPU (all backends) per call in core-µs, sampled while pgbench's connections
    /// are open (a backend's CPU time disappears from `/proc` when it exits).
    pub postgres_us_per_call: Option<f64>,
}

/// Which database a scenario's SQL runs in.
pub enum Db {
    Auth,
    Tasks,
}

fn scripts(kind: Kind, clients: usize, fixture: &Fixture) -> Option<(Db, Vec<Script>)> {
    let users = fixture.users.len();
    let get = |c: usize| format!("{};", bind(GET_TASK, &[&format!(":t{}", c % users), &format!(":u{}", c % users)]));
    let update = |c: usize| {
        let (t, u) = (format!(":t{}", c % users), format!(":u{}", c % users));
        let sql = bind(
            UPDATE_TASK,
            &[&t, &u, ":title", "NULL::text", ":no", ":no", "NULL::timestamptz", ":now", "NULL::bigint"],
        );
        format!("{sql};")
    };
    // The service sends a fresh UUID v7; pgbench cannot make a UUID, so the server does
    // (`id` is a pgbench variable holding one, or the call to make one).
    let insert = |c: usize, id: &str| {
        let u = format!(":u{}", c % users);
        bind(INSERT_TASK, &[id, &u, ":title", ":descr", ":no", ":due", ":now", ":now", ":one", ":maxtasks"])
    };
    let one = |name, text: String| Script { name, text, weight: 1, calls: 1 };
    Some(match kind {
        Kind::Login => (
            Db::Auth,
            vec![one(
                "login",
                per_client(clients, |c| format!("{};", bind(FIND_CREDENTIALS_SQL, &[&format!(":e{}", c % users)]))),
            )],
        ),
        Kind::GetCurrentUser => (
            Db::Auth,
            vec![one(
                "get-current-user",
                per_client(clients, |c| format!("{};", bind(FIND_USER_SQL, &[&format!(":u{}", c % users)]))),
            )],
        ),
        Kind::GetTask => (Db::Tasks, vec![one("get-task", per_client(clients, get))]),
        Kind::UpdateTask => (Db::Tasks, vec![one("update-task", per_client(clients, update))]),
        Kind::CreateTask => (
            Db::Tasks,
            vec![one("create-task", per_client(clients, |c| format!("{};", insert(c, "gen_random_uuid()"))))],
        ),
        Kind::ListTasks => (
            Db::Tasks,
            vec![one("list-tasks", format!("{};\n", bind(LIST_FIRST_PAGE, &[":lu", "NULL::boolean", ":lim"])))],
        ),
        Kind::Mixed => {
            let list = |c: usize| {
                format!("{};", bind(LIST_FIRST_PAGE, &[&format!(":u{}", c % users), "NULL::boolean", ":lim20"]))
            };
            // A delete needs a row to delete: each one removes the row its script just inserted,
            // under an id the server made first (one trivial statement more than the service).
            let create_delete = |c: usize| {
                let u = format!(":u{}", c % users);
                format!(
                    "SELECT gen_random_uuid() AS id \\gset\n{};\n{};",
                    insert(c, ":id"),
                    bind(DELETE_TASK, &[":id", &u, "NULL::bigint", ":now"])
                )
            };
            (
                Db::Tasks,
                vec![
                    Script { name: "mixed-get", text: per_client(clients, get), weight: 50, calls: 1 },
                    Script { name: "mixed-list", text: per_client(clients, list), weight: 20, calls: 1 },
                    Script { name: "mixed-update", text: per_client(clients, update), weight: 10, calls: 1 },
                    Script {
                        name: "mixed-create-delete",
                        text: per_client(clients, create_delete),
                        weight: 10,
                        calls: 2,
                    },
                ],
            )
        }
        // A Refresh is a locked transaction of several statements: no single-script ceiling.
        // The scale mode's list scenarios run without ceilings.
        Kind::GetTaskOneUser | Kind::Refresh | Kind::ListFirstPage | Kind::ListPage50 => return None,
    })
}

/// Runs `kind`'s SQL with pgbench: `clients` connections, prepared statements (as sqlx
/// uses), for `secs` seconds.
#[allow(clippy::too_many_arguments)]
pub async fn storage_ceiling(
    pgbench: &Path,
    kind: Kind,
    clients: usize,
    secs: u64,
    fixture: &Fixture,
    auth_url: &str,
    tasks_url: &str,
    work_dir: &Path,
) -> Result<Option<StorageCeiling>> {
    let Some((db, scripts)) = scripts(kind, clients, fixture) else { return Ok(None) };
    let url = match db {
        Db::Auth => auth_url,
        Db::Tasks => tasks_url,
    };
    let mut args: Vec<String> = vec![
        "-n".into(),
        "-M".into(),
        "prepared".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        clients.min(2).to_string(),
        "-T".into(),
        secs.max(1).to_string(),
    ];
    for script in &scripts {
        let path = work_dir.join(format!("{}-{clients}.sql", script.name));
        std::fs::write(&path, &script.text)?;
        args.push("-f".into());
        args.push(format!("{}@{}", path.display(), script.weight));
    }
    let mut define = |name: String, value: &str| {
        args.push("-D".into());
        args.push(format!("{name}={value}"));
    };
    for (i, user) in fixture.users.iter().enumerate().take(clients) {
        define(format!("u{i}"), &user.id);
        define(format!("t{i}"), &user.tasks[0]);
        define(format!("e{i}"), &user.email);
    }
    define("lu".into(), &fixture.list_user.id);
    define("lim".into(), "101");
    define("lim20".into(), "21");
    define("title".into(), "Benchmark task 0-0");
    define("descr".into(), crate::fixture::DESCRIPTION);
    define("no".into(), "false");
    define("one".into(), "1");
    define("maxtasks".into(), "1000000000");
    define("due".into(), "2027-01-01 00:00:00+00");
    define("now".into(), &database_now(url).await?);
    args.push(url.to_owned());

    let child = std::process::Command::new(pgbench)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let run = tokio::task::spawn_blocking(move || child.wait_with_output());
    // Sample PostgreSQL's CPU inside the run, while pgbench's backends are alive.
    let (margin, total) = (0.3, secs.max(1) as f64);
    let mut sampled = None;
    if total > 2.0 * margin + 0.2 {
        tokio::time::sleep(std::time::Duration::from_secs_f64(margin)).await;
        let (t0, c0) = (std::time::Instant::now(), crate::procs::postgres_cpu_seconds());
        tokio::time::sleep(std::time::Duration::from_secs_f64(total - 2.0 * margin)).await;
        sampled = Some((t0.elapsed().as_secs_f64(), crate::procs::postgres_cpu_seconds() - c0));
    }
    let output = run.await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("pgbench failed ({}): {stderr}{stdout}", output.status).into());
    }
    let number_after = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).find(|s| !s.is_empty())?.parse().ok()
    };
    let calls_per_sec = if scripts.len() == 1 {
        stdout.lines().find(|l| l.starts_with("tps = ")).and_then(|l| number_after(l, "tps = "))
    } else {
        // " - 1234 transactions (50.0% of total, tps = 123.4)", one per script, in order.
        let per_script: Vec<f64> = stdout
            .lines()
            .filter(|l| l.contains(" transactions ("))
            .filter_map(|l| number_after(l, "tps = "))
            .collect();
        (per_script.len() == scripts.len())
            .then(|| per_script.iter().zip(&scripts).map(|(tps, s)| tps * f64::from(s.calls)).sum())
    }
    .ok_or_else(|| format!("cannot read the tps from pgbench's output:\n{stdout}"))?;
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("number of failed transactions:"))
        .and_then(|l| number_after(l, ":"))
        .map_or(0, |n| n as u64);
    let postgres_us_per_call = sampled.map(|(secs, cpu)| cpu * 1e6 / (calls_per_sec * secs).max(1.0));
    Ok(Some(StorageCeiling { calls_per_sec, failed, postgres_us_per_call }))
}
