//! Task values that are valid by construction, parsed from the requests at the edge.

use time::OffsetDateTime;
use todo_contract::task::v1 as pb;
use todo_shared::timestamp;
use todo_shared::validation::FieldViolations;
use uuid::Uuid;

pub const TITLE_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
/// Page size when the client asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Larger requests are served this many: a bound on the work and memory one call can ask for.
pub const MAX_PAGE_SIZE: u32 = 500;
pub const REQUEST_ID_MAX_CHARS: usize = 128;

/// A title: trimmed, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTitle(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TitleError {
    #[error("is required and must not be only whitespace")]
    Empty,
    #[error("must be at most {TITLE_MAX_CHARS} characters (got {0})")]
    TooLong(usize),
    #[error("must be one line of text, without control characters")]
    ControlCharacter,
}

impl TaskTitle {
    pub fn parse(raw: &str) -> Result<Self, TitleError> {
        let title = raw.trim();
        // PostgreSQL text cannot hold NUL, and a title is one line: refuse them all alike on
        // every backend rather than let the database decide. Unicode's own line and paragraph
        // separators are line breaks too, though not control characters.
        if title.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
            return Err(TitleError::ControlCharacter);
        }
        match title.chars().count() {
            0 => Err(TitleError::Empty),
            n if n > TITLE_MAX_CHARS => Err(TitleError::TooLong(n)),
            _ => Ok(Self(title.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description: at most 10,000 characters, kept as written (empty means none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    #[error("must be at most {DESCRIPTION_MAX_CHARS} characters (got {0})")]
    TooLong(usize),
    #[error("must not contain control characters other than tabs and line breaks")]
    ControlCharacter,
}

impl Description {
    pub fn parse(raw: &str) -> Result<Self, DescriptionError> {
        let chars = raw.chars().count();
        if chars > DESCRIPTION_MAX_CHARS {
            return Err(DescriptionError::TooLong(chars));
        }
        if raw.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
            return Err(DescriptionError::ControlCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUID such as 0192f0c1-7b5e-7c3a-9d4e-2f1a3b4c5d6e")]
pub struct BadId;

/// A task id from a request.
pub fn parse_task_id(raw: &str) -> Result<Uuid, BadId> {
    Uuid::try_parse(raw.trim()).map_err(|_| BadId)
}

/// A version tag as clients see it. Opaque to them; here, the row's version counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Etag(i64);

impl Etag {
    pub fn of_version(version: i64) -> Self {
        Self(version)
    }

    /// The version a client's etag names. An etag this service never issued names no version
    /// (`-1` matches no row), so the conditional change fails with ABORTED, as for a stale one.
    /// Matching is exact: the etag as issued (`"7"`) or its bare number (`7`), nothing that
    /// merely parses to the same number (`"07"`, `+7`, ` "7"`).
    pub fn expected_version(raw: &str) -> Option<i64> {
        if raw.is_empty() {
            return None;
        }
        let digits = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        Some(if canonical { digits.parse().unwrap_or(-1) } else { -1 })
    }
}

impl std::fmt::Display for Etag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub description: String,
    pub completed: bool,
    pub due_time: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

impl From<Task> for pb::Task {
    fn from(task: Task) -> Self {
        Self {
            // Straight into a buffer: `to_string` goes through the formatting machinery, once per
            // task of every page.
            id: task.id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned(),
            title: task.title,
            description: task.description,
            completed: task.completed,
            due_time: task.due_time.map(timestamp::to_proto),
            create_time: Some(timestamp::to_proto(task.created_at)),
            update_time: Some(timestamp::to_proto(task.updated_at)),
            etag: Etag::of_version(task.version).to_string(),
        }
    }
}

/// A client's idempotency key for CreateTask: 1 to 128 printable ASCII characters, no spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    #[error("must be at most {REQUEST_ID_MAX_CHARS} characters (got {0})")]
    TooLong(usize),
    #[error("must be printable ASCII without spaces, such as a UUID")]
    BadCharacter,
}

impl RequestId {
    /// `None` for an empty key: the request is not idempotent.
    pub fn parse(raw: &str) -> Result<Option<Self>, RequestIdError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RequestIdError::BadCharacter);
        }
        if raw.len() > REQUEST_ID_MAX_CHARS {
            return Err(RequestIdError::TooLong(raw.len()));
        }
        Ok(Some(Self(raw.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated CreateTask request.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub title: TaskTitle,
    pub description: Description,
    pub due_time: Option<OffsetDateTime>,
    pub request_id: Option<RequestId>,
}

impl NewTask {
    /// A digest of what the request asks to create, to tell a retry (same digest) from a
    /// reused request id (different digest). Length-prefixed so no two requests collide by
    /// moving text between fields.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest as _, Sha256};
        let mut digest = Sha256::new();
        for field in [self.title.as_str(), self.description.as_str()] {
            digest.update((field.len() as u64).to_be_bytes());
            digest.update(field.as_bytes());
        }
        match self.due_time {
            Some(due) => {
                digest.update([1]);
                digest.update(timestamp::to_unix_micros(due).to_be_bytes());
            }
            None => digest.update([0]),
        }
        digest.finalize().into()
    }
}

impl TryFrom<pb::CreateTaskRequest> for NewTask {
    type Error = FieldViolations;

    fn try_from(request: pb::CreateTaskRequest) -> Result<Self, Self::Error> {
        let mut v = FieldViolations::new();
        let title = v.check("title", TaskTitle::parse(&request.title));
        let description = v.check("description", Description::parse(&request.description));
        let due_time = request.due_time.as_ref().map(|ts| v.check("due_time", timestamp::from_proto(ts)));
        let request_id = v.check("request_id", RequestId::parse(&request.request_id));
        v.into_result(|| {
            Some(Self {
                title: title?,
                description: description?,
                due_time: due_time.map(|t| t.ok_or(())).transpose().ok()?,
                request_id: request_id?,
            })
        })
    }
}

/// The changes of a validated UpdateTask request: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskPatch {
    pub title: Option<TaskTitle>,
    pub description: Option<Description>,
    pub completed: Option<bool>,
    /// `Some(None)` clears the due time.
    pub due_time: Option<Option<OffsetDateTime>>,
    /// Apply only if the task is still at this version.
    pub expected_version: Option<i64>,
}

/// A validated UpdateTask request.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    pub id: Uuid,
    pub patch: TaskPatch,
}

impl TryFrom<pb::UpdateTaskRequest> for TaskUpdate {
    type Error = FieldViolations;

    fn try_from(request: pb::UpdateTaskRequest) -> Result<Self, Self::Error> {
        let mut v = FieldViolations::new();
        let id = v.check("id", parse_task_id(&request.id));
        let title = request.title.as_deref().map(|t| v.check("title", TaskTitle::parse(t)));
        let description = request.description.as_deref().map(|d| v.check("description", Description::parse(d)));
        let due_time = match (&request.due_time, request.clear_due_time) {
            (Some(_), true) => {
                v.add("clear_due_time", "cannot be combined with due_time: set one or the other");
                None
            }
            (Some(ts), false) => Some(v.check("due_time", timestamp::from_proto(ts)).map(Some)),
            (None, true) => Some(Some(None)),
            (None, false) => None,
        };
        let nothing_to_change = title.is_none()
            && description.is_none()
            && request.completed.is_none()
            && due_time.is_none()
            && v.is_empty();
        if nothing_to_change {
            v.add(
                "update",
                "no field to change: set at least one of title, description, completed, due_time or clear_due_time",
            );
        }
        v.into_result(|| {
            Some(Self {
                id: id?,
                patch: TaskPatch {
                    title: title.map(|t| t.ok_or(())).transpose().ok()?,
                    description: description.map(|d| d.ok_or(())).transpose().ok()?,
                    completed: request.completed,
                    due_time: due_time.map(|d| d.ok_or(())).transpose().ok()?,
                    expected_version: Etag::expected_version(&request.etag),
                },
            })
        })
    }
}

/// How many tasks a ListTasks page holds.
pub fn parse_page_size(raw: i32) -> Result<u32, String> {
    match raw {
        n if n < 0 => Err(format!("must not be negative (got {n}); use 0 for the default of {DEFAULT_PAGE_SIZE}")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(u32::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(TaskTitle::parse("  buy milk \n").unwrap().as_str(), "buy milk");
        assert_eq!(TaskTitle::parse(" \t "), Err(TitleError::Empty));
        assert!(TaskTitle::parse(&"é".repeat(200)).is_ok());
        assert_eq!(TaskTitle::parse(&"x".repeat(201)), Err(TitleError::TooLong(201)));
    }

    #[test]
    fn descriptions_are_bounded_in_characters() {
        assert!(Description::parse(&"é".repeat(10_000)).is_ok());
        assert!(Description::parse(&"x".repeat(10_001)).is_err());
    }

    #[test]
    fn control_characters_are_refused_except_layout_in_descriptions() {
        assert_eq!(TaskTitle::parse("nul\0title"), Err(TitleError::ControlCharacter));
        assert_eq!(TaskTitle::parse("two\nlines"), Err(TitleError::ControlCharacter));
        assert_eq!(TaskTitle::parse("two\u{2028}lines"), Err(TitleError::ControlCharacter));
        assert_eq!(TaskTitle::parse("two\u{2029}paragraphs"), Err(TitleError::ControlCharacter));
        assert!(Description::parse("line\u{2028}separator").is_ok());
        assert_eq!(Description::parse("a\0b"), Err(DescriptionError::ControlCharacter));
        assert!(Description::parse("line one\r\n\tline two").is_ok());
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(parse_page_size(0), Ok(50));
        assert_eq!(parse_page_size(7), Ok(7));
        assert_eq!(parse_page_size(501), Ok(500));
        assert_eq!(parse_page_size(i32::MAX), Ok(500));
        assert!(parse_page_size(-1).is_err());
    }

    #[test]
    fn etags_round_trip_and_foreign_ones_never_match() {
        let etag = Etag::of_version(3).to_string();
        assert_eq!(Etag::expected_version(&etag), Some(3));
        assert_eq!(Etag::expected_version(""), None);
        assert_eq!(Etag::expected_version("bogus"), Some(-1));
        assert_eq!(Etag::expected_version("3"), Some(3), "the bare number");
        assert_eq!(Etag::expected_version("\"0\""), Some(0));
        // Only the etag as issued: not whatever parses to the same number.
        for near in ["\"03\"", "03", "+3", "\"+3\"", " \"3\"", "\"3\" ", "\t3", "\"3", "3\"", "\"\"", "W/\"3\"", " "] {
            assert_eq!(Etag::expected_version(near), Some(-1), "{near:?}");
        }
    }

    #[test]
    fn empty_update_is_refused_and_due_time_conflicts_are_named() {
        let id = Uuid::now_v7().to_string();
        let empty = pb::UpdateTaskRequest { id: id.clone(), ..Default::default() };
        let fields: Vec<String> =
            TaskUpdate::try_from(empty).unwrap_err().fields().map(|(f, _)| f.to_owned()).collect();
        assert_eq!(fields, ["update"]);

        let both = pb::UpdateTaskRequest {
            id,
            due_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
            clear_due_time: true,
            ..Default::default()
        };
        let fields: Vec<String> = TaskUpdate::try_from(both).unwrap_err().fields().map(|(f, _)| f.to_owned()).collect();
        assert_eq!(fields, ["clear_due_time"]);
    }

    #[test]
    fn clear_due_time_alone_is_a_change() {
        let request =
            pb::UpdateTaskRequest { id: Uuid::now_v7().to_string(), clear_due_time: true, ..Default::default() };
        assert_eq!(TaskUpdate::try_from(request).unwrap().patch.due_time, Some(None));
    }
}
