//! Request validation of every request message of both services, on arbitrary protobuf bytes.
//!
//! The first byte picks the message; the rest is decoded with prost exactly as tonic decodes a
//! request body, and, when it decodes, goes through the same conversion the service runs
//! before anything else (the `TryFrom` impls, `parse_task_id`, `parse_page_size`,
//! `Etag::expected_version`, `PageTokens::decode`).
//!
//! Properties: never panics; whatever is accepted meets the documented limits (docs/reference.md "Status
//! codes"); whatever is refused names exactly the fields that break them; and everything SignUp
//! accepts, Login accepts too, with the same normalised email and password, so an account can
//! always log in. The oracles below restate each rule independently of the service code: when
//! a rule changes on purpose, change its oracle here too.
#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use auth_service::domain::{
    Credentials, EMAIL_MAX_CHARS, LOGIN_PASSWORD_MAX_CHARS, NewAccount, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use task_service::domain::{
    DEFAULT_PAGE_SIZE, DESCRIPTION_MAX_CHARS, Etag, MAX_PAGE_SIZE, NewTask, REQUEST_ID_MAX_CHARS, TITLE_MAX_CHARS,
    TaskUpdate, parse_page_size, parse_task_id,
};
use task_service::page_token::PageTokens;
use todo_fuzz::{SECRET, USER};
use todo_contract::auth::v1 as auth;
use todo_contract::task::v1 as task;
use todo_shared::timestamp;
use todo_shared::validation::FieldViolations;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 8 {
        0 => decode::<auth::SignUpRequest>(body).map(sign_up),
        1 => decode::<auth::LoginRequest>(body).map(login),
        2 => decode::<auth::GetCurrentUserRequest>(body).map(drop),
        3 => decode::<task::CreateTaskRequest>(body).map(create_task),
        4 => decode::<task::GetTaskRequest>(body).map(|r| task_id(&r.id)),
        5 => decode::<task::ListTasksRequest>(body).map(list_tasks),
        6 => decode::<task::UpdateTaskRequest>(body).map(update_task),
        _ => decode::<task::DeleteTaskRequest>(body).map(delete_task),
    };
});

/// As tonic's prost codec: a body that does not decode is refused before validation.
fn decode<M: Message + Default>(body: &[u8]) -> Option<M> {
    M::decode(body).ok()
}

/// The field names a refusal names, in order.
fn fields(v: &FieldViolations) -> Vec<String> {
    v.fields().map(|(f, _)| f.to_owned()).collect()
}

/// For each field the oracle knows: refused if and only if the oracle says it is bad.
fn assert_fields(result: Result<(), &FieldViolations>, expected_bad: &[(&str, bool)], request: &dyn std::fmt::Debug) {
    let named = result.err().map(fields).unwrap_or_default();
    for (field, bad) in expected_bad {
        assert_eq!(
            named.iter().any(|n| n == field),
            *bad,
            "field {field}: expected bad={bad}, got {named:?} for {request:?}"
        );
    }
    if result.is_err() {
        assert!(!named.is_empty(), "refused without naming a field: {request:?}");
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Trimmed, Unicode NFC, lower-cased (and NFC again: lower-casing can decompose).
fn normalise_email(raw: &str) -> String {
    raw.trim().nfc().collect::<String>().to_lowercase().nfc().collect()
}

/// The same list auth-service bundles ("one of the 10,000 most common passwords").
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../../auth-service/data/common-passwords.txt").lines().filter(|l| !l.is_empty()).collect()
});

/// Why SignUp must refuse this password, given the normalised email (when that is valid).
fn new_password_bad(raw: &str, email: Option<&str>) -> bool {
    // Counted once normalised (NFKC), as it is stored.
    let normalised: String = raw.nfkc().collect();
    if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&chars(&normalised)) {
        return true;
    }
    let folded = normalised.to_lowercase();
    COMMON_PASSWORDS.contains(folded.as_str())
        || email.is_some_and(|email| folded == email || Some(folded.as_str()) == email.split('@').next())
}

fn sign_up(request: auth::SignUpRequest) {
    let result = NewAccount::try_from(request.clone());
    let email = normalise_email(&request.email);
    let email_bad = email.is_empty() || chars(&email) > EMAIL_MAX_CHARS;
    match &result {
        Ok(account) => {
            let accepted = account.email.as_str();
            assert_eq!(accepted, email, "email is not the trimmed, NFC, lower-cased input");
            assert!((1..=EMAIL_MAX_CHARS).contains(&chars(accepted)), "email length {}", chars(accepted));
            let (local, domain) = accepted.split_once('@').expect("an accepted email has an @");
            assert!(!local.is_empty() && domain.contains('.') && !domain.contains('@'), "shape of {accepted:?}");
            assert!(!accepted.chars().any(|c| c.is_whitespace() || c.is_control()), "bad character in {accepted:?}");
            assert!(
                !new_password_bad(&request.password, Some(accepted)),
                "password accepted against policy: {request:?}"
            );
            // Normalising twice changes nothing, so the stored email is its own login name.
            let again = NewAccount::try_from(auth::SignUpRequest {
                email: accepted.to_owned(),
                password: request.password.clone(),
            })
            .unwrap_or_else(|v| panic!("the normalised email {accepted:?} is refused: {v}"));
            assert_eq!(again.email.as_str(), accepted, "normalising is not idempotent");
            let password = std::str::from_utf8(account.password.as_bytes()).expect("UTF-8 password");
            assert!(unicode_normalization::is_nfkc(password), "password not NFKC-normalised");

            // Whoever signed up can log in with what they typed.
            let login = Credentials::try_from(auth::LoginRequest {
                email: request.email.clone(),
                password: request.password.clone(),
            })
            .unwrap_or_else(|v| panic!("signed up but cannot log in: {v}"));
            assert_eq!(login.email, accepted, "login normalises the email differently");
            assert_eq!(login.password.as_bytes(), account.password.as_bytes(), "login hashes another password");
        }
        Err(violations) => {
            let named = fields(violations);
            assert!(!named.is_empty(), "refused without naming a field");
            assert!(named.iter().all(|f| f == "email" || f == "password"), "unknown fields {named:?}");
            // The email's shape rules are checked on acceptance above; emptiness and length here.
            if email_bad {
                assert!(named.iter().any(|f| f == "email"), "bad email not reported: {request:?}");
            }
            let email_ok = !named.iter().any(|f| f == "email");
            let password_bad = new_password_bad(&request.password, email_ok.then_some(email.as_str()));
            assert_eq!(named.iter().any(|f| f == "password"), password_bad, "password verdict for {request:?}");
        }
    }
}

fn login(request: auth::LoginRequest) {
    let result = Credentials::try_from(request.clone());
    let email = normalise_email(&request.email);
    // No account can have an email with a control character (SignUp refuses them).
    let email_bad = email.is_empty() || chars(&email) > EMAIL_MAX_CHARS || email.chars().any(char::is_control);
    // Only emptiness and a generous cap on what was typed: a policy change must never lock
    // anyone out.
    let password_bad = !(1..=LOGIN_PASSWORD_MAX_CHARS).contains(&chars(&request.password));
    assert_fields(result.as_ref().map(drop), &[("email", email_bad), ("password", password_bad)], &request);
    if let Ok(credentials) = result {
        assert_eq!(credentials.email, email);
        let password = std::str::from_utf8(credentials.password.as_bytes()).expect("UTF-8 password");
        assert!(unicode_normalization::is_nfkc(password), "password not NFKC-normalised");
    }
}

/// 1 to 200 characters after trimming, one line (no control characters, no Unicode line or
/// paragraph separator).
fn title_bad(raw: &str) -> bool {
    let title = raw.trim();
    !(1..=TITLE_MAX_CHARS).contains(&chars(title))
        || title.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// At most 10,000 characters; tabs and line breaks are the only control characters allowed.
fn description_bad(raw: &str) -> bool {
    chars(raw) > DESCRIPTION_MAX_CHARS || raw.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// Empty (no key), or 1 to 128 printable ASCII characters without spaces.
fn request_id_bad(raw: &str) -> bool {
    !raw.is_empty() && (raw.len() > REQUEST_ID_MAX_CHARS || !raw.bytes().all(|b| b.is_ascii_graphic()))
}

fn timestamp_bad(ts: &prost_types::Timestamp) -> bool {
    // google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
    !(0..1_000_000_000).contains(&ts.nanos) || !(-62_135_596_800..=253_402_300_799).contains(&ts.seconds)
}

/// An accepted time is the client's, truncated to microseconds.
fn assert_time_kept(accepted: time::OffsetDateTime, sent: &prost_types::Timestamp) {
    let back = timestamp::to_proto(accepted);
    assert_eq!(back.seconds, sent.seconds, "due_time seconds changed");
    assert_eq!(back.nanos, sent.nanos - sent.nanos % 1_000, "due_time not truncated to microseconds");
    assert!((1..=9999).contains(&accepted.year()), "year {} out of range", accepted.year());
}

fn create_task(request: task::CreateTaskRequest) {
    let result = NewTask::try_from(request.clone());
    let due_bad = request.due_time.as_ref().is_some_and(timestamp_bad);
    assert_fields(
        result.as_ref().map(drop),
        &[
            ("title", title_bad(&request.title)),
            ("description", description_bad(&request.description)),
            ("due_time", due_bad),
            ("request_id", request_id_bad(&request.request_id)),
        ],
        &request,
    );
    if let Ok(new) = result {
        let title = new.title.as_str();
        assert_eq!(title, request.title.trim(), "title is not the trimmed input");
        assert!((1..=TITLE_MAX_CHARS).contains(&chars(title)), "title of {} characters accepted", chars(title));
        assert!(!title.chars().any(char::is_control), "control character in title {title:?}");
        assert_eq!(new.description.as_str(), request.description, "description changed");
        let request_id = new.request_id.as_ref().map(|id| id.as_str());
        assert_eq!(request_id, Some(request.request_id.as_str()).filter(|id| !id.is_empty()), "request_id changed");
        assert!(chars(new.description.as_str()) <= DESCRIPTION_MAX_CHARS);
        assert_eq!(new.due_time.is_some(), request.due_time.is_some(), "due_time appeared or vanished");
        if let (Some(accepted), Some(sent)) = (new.due_time, &request.due_time) {
            assert_time_kept(accepted, sent);
        }
    }
}

fn task_id(raw: &str) {
    match parse_task_id(raw) {
        Ok(id) => {
            // Any of the standard spellings of that UUID, and nothing else.
            let given = raw.trim().to_ascii_lowercase();
            let spellings =
                [id.hyphenated().to_string(), id.simple().to_string(), id.braced().to_string(), id.urn().to_string()];
            assert!(spellings.contains(&given), "{raw:?} accepted as {id}");
        }
        Err(_) => assert!(Uuid::try_parse(raw.trim()).is_err(), "the UUID {raw:?} was refused"),
    }
}

fn list_tasks(request: task::ListTasksRequest) {
    match parse_page_size(request.page_size) {
        Ok(size) => {
            assert!(request.page_size >= 0, "negative page size {} accepted", request.page_size);
            assert!((1..=MAX_PAGE_SIZE).contains(&size), "page size {size}");
            let expected = match request.page_size {
                0 => DEFAULT_PAGE_SIZE,
                n => u32::try_from(n).expect("non-negative").min(MAX_PAGE_SIZE),
            };
            assert_eq!(size, expected);
        }
        Err(_) => assert!(request.page_size < 0, "page size {} refused", request.page_size),
    }
    // The service decodes a non-empty page token for the caller and the filter. Nothing the
    // fuzzer writes was issued by this service (page_token.rs has its own target).
    if !request.page_token.is_empty() {
        let tokens = PageTokens::new(SECRET);
        if let Ok(cursor) = tokens.decode(USER, request.completed, &request.page_token) {
            panic!("forged page token {:?} accepted as {cursor:?}", request.page_token);
        }
    }
}

fn etag(raw: &str) {
    match Etag::expected_version(raw) {
        None => assert!(raw.is_empty(), "etag {raw:?} ignored"),
        Some(version) if version >= 1 => {
            // A version the service can have issued: the etag must be exactly its spelling,
            // quoted as issued or bare.
            let spellings = [format!("\"{version}\""), version.to_string()];
            assert!(spellings.iter().any(|s| s == raw), "etag {raw:?} read as version {version}");
        }
        Some(_) => {}
    }
}

fn update_task(request: task::UpdateTaskRequest) {
    let result = TaskUpdate::try_from(request.clone());
    let id_bad = Uuid::try_parse(request.id.trim()).is_err();
    let title_bad = request.title.as_deref().is_some_and(title_bad);
    let description_bad = request.description.as_deref().is_some_and(description_bad);
    let conflict = request.due_time.is_some() && request.clear_due_time;
    let due_bad = !conflict && request.due_time.as_ref().is_some_and(timestamp_bad);
    let nothing = request.title.is_none()
        && request.description.is_none()
        && request.completed.is_none()
        && request.due_time.is_none()
        && !request.clear_due_time
        && !id_bad;
    assert_fields(
        result.as_ref().map(drop),
        &[
            ("id", id_bad),
            ("title", title_bad),
            ("description", description_bad),
            ("due_time", due_bad),
            ("clear_due_time", conflict),
            ("update", nothing),
        ],
        &request,
    );
    etag(&request.etag);
    if let Ok(update) = result {
        let patch = &update.patch;
        assert_eq!(update.id, Uuid::try_parse(request.id.trim()).expect("accepted id parses"));
        assert!(
            patch.title.is_some()
                || patch.description.is_some()
                || patch.completed.is_some()
                || patch.due_time.is_some(),
            "accepted an update that changes nothing: {request:?}"
        );
        if let Some(title) = &patch.title {
            assert_eq!(Some(title.as_str()), request.title.as_deref().map(str::trim));
            assert!((1..=TITLE_MAX_CHARS).contains(&chars(title.as_str())));
        }
        assert_eq!(patch.title.is_some(), request.title.is_some());
        assert_eq!(patch.description.as_ref().map(|d| d.as_str()), request.description.as_deref());
        assert_eq!(patch.completed, request.completed);
        match (&patch.due_time, &request.due_time, request.clear_due_time) {
            (None, None, false) | (Some(None), None, true) => {}
            (Some(Some(accepted)), Some(sent), false) => assert_time_kept(*accepted, sent),
            other => panic!("due_time patch {other:?} does not follow the request"),
        }
        assert_eq!(patch.expected_version, Etag::expected_version(&request.etag));
    }
}

fn delete_task(request: task::DeleteTaskRequest) {
    task_id(&request.id);
    etag(&request.etag);
}
