//! Random inputs of the model test: texts, titles, descriptions and due times, the task an
//! operation is aimed at, and the etag it sends.

use prost_types::Timestamp;
use todo_tests::adversary::Rng;
use uuid::Uuid;

use super::{Entry, Model};

/// A text of 1..=max characters from a mixed alphabet (multi-byte characters included).
fn text(rng: &mut Rng, max: usize) -> String {
    const ALPHABET: &[&str] = &["a", "b", "k", "z", "Q", "7", " ", "é", "ß", "中", "😀", "-", "'"];
    let len = 1 + rng.below(max);
    let mut s: String = (0..len).map(|_| *rng.pick(ALPHABET)).collect();
    if s.trim().is_empty() {
        s.push('x');
    }
    s
}

/// A title as a client might type it: surrounding whitespace the server trims.
pub(super) fn title(rng: &mut Rng) -> String {
    let pad =
        |rng: &mut Rng| if rng.chance(30) { (*rng.pick(&[" ", "  ", "\t", "\n "])).to_owned() } else { String::new() };
    format!("{}{}{}", pad(rng), text(rng, 24), pad(rng))
}

pub(super) fn description(rng: &mut Rng) -> String {
    if rng.chance(20) { String::new() } else { text(rng, 40) }
}

/// A due time anywhere from 1970 to 2096, with nanoseconds the server truncates to micros.
pub(super) fn due_time(rng: &mut Rng) -> Timestamp {
    Timestamp { seconds: (rng.next_u64() % 4_000_000_000) as i64, nanos: (rng.next_u64() % 1_000_000_000) as i32 }
}

pub(super) fn truncated(ts: &Timestamp) -> Timestamp {
    Timestamp { seconds: ts.seconds, nanos: ts.nanos - ts.nanos % 1_000 }
}

/// Whom a get, update or delete is aimed at.
pub(super) enum Target {
    Own(String),
    /// Another user's task, a deleted one, or an id that never existed: NOT_FOUND.
    NotMine(String),
}

pub(super) fn pick_target(rng: &mut Rng, model: &Model, user: usize) -> Target {
    let own: Vec<&String> = model.live.values().filter(|e| e.owner == user).map(|e| &e.task.id).collect();
    let others: Vec<&String> = model.live.values().filter(|e| e.owner != user).map(|e| &e.task.id).collect();
    let roll = rng.below(100);
    if roll < 70 && !own.is_empty() {
        Target::Own((*rng.pick(&own)).clone())
    } else if roll < 82 && !others.is_empty() {
        Target::NotMine((*rng.pick(&others)).clone())
    } else if roll < 92 && !model.deleted.is_empty() {
        Target::NotMine(rng.pick(&model.deleted).clone())
    } else {
        Target::NotMine(Uuid::now_v7().to_string())
    }
}

/// An etag to send: none, the current one, or a stale or foreign one (which must fail).
pub(super) fn etag_for(rng: &mut Rng, entry: Option<&Entry>) -> (String, bool) {
    match rng.below(10) {
        0..=4 => (String::new(), false),
        5..=7 => (entry.map(|e| e.task.etag.clone()).unwrap_or_else(|| "\"1\"".into()), false),
        _ => match entry {
            Some(e) if !e.old_etags.is_empty() => (rng.pick(&e.old_etags).clone(), true),
            _ => ((*rng.pick(&["\"0\"", "\"999\"", "bogus", "W/\"1\""])).to_owned(), true),
        },
    }
}
