//! Account values that are valid by construction. Requests are parsed into these at the edge;
//! past it, no code sees an unchecked email or password.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use time::OffsetDateTime;
use todo_contract::auth::v1 as pb;
use todo_shared::validation::FieldViolations;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// Longest email address (RFC 5321 limits a forward path to 256 octets, minus the brackets).
pub const EMAIL_MAX_CHARS: usize = 254;
/// RFC 5321 §4.5.3.1.1.
const EMAIL_LOCAL_MAX_CHARS: usize = 64;
/// Password length bounds (OWASP ASVS 2.1.1 and 2.1.2: at least 8, allow at least 64).
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
/// Longest password accepted at login, as typed: far over any valid one, short of abuse.
pub const LOGIN_PASSWORD_MAX_CHARS: usize = 1024;

/// A normalised email address: trimmed, NFC, lower-cased, of a plausible shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("is required")]
    Empty,
    #[error("must be at most {EMAIL_MAX_CHARS} characters")]
    TooLong,
    #[error("is not a valid email address (expected name@example.com)")]
    Shape,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let email = normalise_email(raw);
        if email.is_empty() {
            return Err(EmailError::Empty);
        }
        if email.chars().count() > EMAIL_MAX_CHARS {
            return Err(EmailError::TooLong);
        }
        if !has_email_shape(&email) {
            return Err(EmailError::Shape);
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Emails are compared trimmed, in Unicode NFC and lower-cased, at sign-up and at login alike:
/// `é` typed as one code point or as `e` plus a combining accent is the same address, not two
/// look-alike accounts. (NFC, not NFKC: compatibility forms are different addresses to a mail
/// server.) Lower-casing can leave a decomposed sequence (`İ`), hence NFC once more.
fn normalise_email(raw: &str) -> String {
    let lower = raw.trim().nfc().collect::<String>().to_lowercase();
    lower.nfc().collect()
}

/// How an account created before emails were stored in NFC may have it stored: as typed then
/// (trimmed and lower-cased only), which for an accent typed decomposed is `raw`'s own form or
/// the fully decomposed one. Login falls back to these, and sign-up treats them as taken, so
/// no earlier account becomes unreachable or gains a look-alike twin.
pub fn earlier_email_spellings(normalised: &str, raw: &str) -> Vec<String> {
    let mut spellings = Vec::new();
    for spelling in [raw.trim().to_lowercase(), normalised.nfd().collect()] {
        if spelling != normalised && !spellings.contains(&spelling) {
            spellings.push(spelling);
        }
    }
    spellings
}

fn has_email_shape(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.chars().count() <= EMAIL_LOCAL_MAX_CHARS
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| !c.is_whitespace() && !c.is_control() && !"\"(),:;<>@[\\]".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// A password as the user typed it, Unicode-normalised (NFKC) so that the same password
/// typed on two keyboards (composed or decomposed accents, full-width digits) is the same
/// secret. `Debug` never prints it.
#[derive(Clone)]
pub struct Password(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("is required")]
    Empty,
    #[error("must be at least {PASSWORD_MIN_CHARS} characters")]
    TooShort,
    #[error("must be at most {PASSWORD_MAX_CHARS} characters")]
    TooLong,
    #[error("must be at most {LOGIN_PASSWORD_MAX_CHARS} characters")]
    TooLongForLogin,
    #[error(
        "is one of the 10,000 most common passwords, which attackers try first: choose another (a few unrelated words make a strong one)"
    )]
    Common,
    #[error("must not be your email address or the part of it before the @")]
    SameAsEmail,
}

/// The 10,000 most common passwords (lower-cased), most common first: the top of the xato
/// corpus as ordered by zxcvbn 4.5.0 (MIT). Compared case-insensitively after normalisation.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../data/common-passwords.txt").lines().filter(|l| !l.is_empty()).collect());

/// Builds the common-password set now rather than during the first sign-up.
pub fn load_password_blocklist() -> usize {
    COMMON_PASSWORDS.len()
}

impl Password {
    /// A password for a new account: 8 to 128 characters once normalised, not a common one.
    /// Lengths are counted after normalisation, so the same password typed two ways is
    /// either accepted both times or refused both times.
    pub fn parse_new(raw: &str) -> Result<Self, PasswordError> {
        let password = Self::normalised(raw);
        match password.0.chars().count() {
            0 => Err(PasswordError::Empty),
            n if n < PASSWORD_MIN_CHARS => Err(PasswordError::TooShort),
            n if n > PASSWORD_MAX_CHARS => Err(PasswordError::TooLong),
            _ if COMMON_PASSWORDS.contains(password.0.to_lowercase().as_str()) => Err(PasswordError::Common),
            _ => Ok(password),
        }
    }

    /// Whether this is the account's email or its local part (case-insensitively).
    pub(crate) fn is_email_or_local_part(&self, email: &str) -> bool {
        let password = self.0.to_lowercase();
        let local = email.split('@').next().unwrap_or_default();
        password == email || password == local
    }

    /// A password offered at login: only emptiness and the length cap are checked, so a
    /// policy change never locks anyone out.
    ///
    /// The cap is on what was typed, and generous: NFKC can lengthen a password (`…` becomes
    /// `...`), and accounts created before lengths were counted after normalisation may hold
    /// one that is over 128 characters normalised.
    pub fn parse_login(raw: &str) -> Result<Self, PasswordError> {
        match raw.chars().count() {
            0 => Err(PasswordError::Empty),
            n if n > LOGIN_PASSWORD_MAX_CHARS => Err(PasswordError::TooLongForLogin),
            _ => Ok(Self::normalised(raw)),
        }
    }

    fn normalised(raw: &str) -> Self {
        Self(raw.nfkc().collect())
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
}

impl From<User> for pb::User {
    fn from(user: User) -> Self {
        Self {
            id: user.id.to_string(),
            email: user.email,
            create_time: Some(todo_shared::timestamp::to_proto(user.created_at)),
        }
    }
}

/// A validated SignUp request.
#[derive(Debug)]
pub struct NewAccount {
    pub email: Email,
    pub password: Password,
    /// See [`earlier_email_spellings`].
    pub earlier_spellings: Vec<String>,
}

impl TryFrom<pb::SignUpRequest> for NewAccount {
    type Error = FieldViolations;

    fn try_from(request: pb::SignUpRequest) -> Result<Self, Self::Error> {
        let mut violations = FieldViolations::new();
        let email = violations.check("email", Email::parse(&request.email));
        let mut password = violations.check("password", Password::parse_new(&request.password));
        if let (Some(email), Some(candidate)) = (&email, &password)
            && candidate.is_email_or_local_part(email.as_str())
        {
            violations.add("password", PasswordError::SameAsEmail.to_string());
            password = None;
        }
        let earlier_spellings =
            email.as_ref().map(|e| earlier_email_spellings(e.as_str(), &request.email)).unwrap_or_default();
        violations.into_result(|| Some(Self { email: email?, password: password?, earlier_spellings }))
    }
}

/// A validated Login request. The email is only normalised, not shape-checked: an address
/// that cannot exist simply matches no account, with the same answer as a wrong password.
#[derive(Debug)]
pub struct Credentials {
    pub email: String,
    pub password: Password,
    /// See [`earlier_email_spellings`].
    pub earlier_spellings: Vec<String>,
}

impl TryFrom<pb::LoginRequest> for Credentials {
    type Error = FieldViolations;

    fn try_from(request: pb::LoginRequest) -> Result<Self, Self::Error> {
        let mut violations = FieldViolations::new();
        let email = normalise_email(&request.email);
        if email.is_empty() {
            violations.add("email", EmailError::Empty.to_string());
        } else if email.chars().count() > EMAIL_MAX_CHARS {
            violations.add("email", EmailError::TooLong.to_string());
        } else if email.chars().any(char::is_control) {
            // No account can have one (sign-up refuses them), and PostgreSQL cannot even
            // compare a string holding NUL.
            violations.add("email", EmailError::Shape.to_string());
        }
        let password = violations.check("password", Password::parse_login(&request.password));
        let earlier_spellings = earlier_email_spellings(&email, &request.email);
        violations.into_result(|| Some(Self { email, password: password?, earlier_spellings }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ten_thousand_most_common_passwords_are_refused_in_any_case() {
        assert_eq!(load_password_blocklist(), 10_000);
        for common in ["password", "Password123", "QWERTYUIOP", "iloveyou", "ｐａｓｓｗｏｒｄ"] {
            assert_eq!(Password::parse_new(common).err(), Some(PasswordError::Common), "{common}");
        }
        assert!(Password::parse_new("plum-kettle-orbit-42").is_ok());
        // Logging in with one still works: the policy applies to new passwords only.
        assert!(Password::parse_login("password").is_ok());
    }

    #[test]
    fn a_password_equal_to_the_email_or_its_local_part_is_refused() {
        for (email, password) in
            [("Ada.Lovelace@example.com", "ada.lovelace"), ("zq-unique-1@example.com", "ZQ-UNIQUE-1@example.com")]
        {
            let request = pb::SignUpRequest { email: email.into(), password: password.into() };
            let err = NewAccount::try_from(request).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid request: password: {}", PasswordError::SameAsEmail),
                "{email}"
            );
        }
        let fine = pb::SignUpRequest { email: "ada@example.com".into(), password: "ada-lovelace-1815".into() };
        assert!(NewAccount::try_from(fine).is_ok());
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(Email::parse("  Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "plainaddress",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@exa mple.com",
            ".ada@example.com",
            "ada.@example.com",
            "a..da@example.com",
            "ada@-example.com",
            "ada@example..com",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Shape), "{bad}");
        }
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn plausible_emails_are_accepted() {
        for good in ["a@b.co", "first.last+tag@sub.example.org", "josé@exämple.de", "x_y-z@a-b.io"] {
            assert!(Email::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn password_length_is_counted_in_characters() {
        assert_eq!(Password::parse_new("1234567").unwrap_err(), PasswordError::TooShort);
        assert!(Password::parse_new("9x4!kq2z").is_ok());
        assert!(Password::parse_new(&"é".repeat(128)).is_ok());
        assert_eq!(Password::parse_new(&"é".repeat(129)).unwrap_err(), PasswordError::TooLong);
        assert_eq!(Password::parse_new("").unwrap_err(), PasswordError::Empty);
    }

    #[test]
    fn password_length_is_counted_after_normalisation() {
        // Four ligatures are twelve letters once normalised ("ffi" x 4): long enough.
        assert!(Password::parse_new("\u{fb03}\u{fb03}\u{fb03}\u{fb03}").is_ok());
        // 128 accented letters typed decomposed are 256 code points, 128 characters.
        let decomposed = "e\u{301}".repeat(128);
        assert!(Password::parse_new(&decomposed).is_ok());
        assert!(Password::parse_login(&decomposed).is_ok());
        // At login only what was typed is capped: an ellipsis normalises to three dots.
        assert!(Password::parse_login(&"\u{2026}".repeat(100)).is_ok());
        assert_eq!(Password::parse_login(&"x".repeat(1025)).unwrap_err(), PasswordError::TooLongForLogin);
        assert_eq!(Password::parse_new(&"e\u{301}".repeat(129)).unwrap_err(), PasswordError::TooLong);
    }

    #[test]
    fn composed_and_decomposed_emails_are_the_same_address() {
        let composed = Email::parse("Jos\u{e9}@Example.com").unwrap();
        let decomposed = Email::parse("  jose\u{301}@example.COM ").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed.as_str(), "jos\u{e9}@example.com");
        // Compatibility forms stay distinct (NFC, not NFKC).
        assert_ne!(Email::parse("\u{ff41}da@example.com").unwrap().as_str(), "ada@example.com");
    }

    #[test]
    fn composed_and_decomposed_passwords_are_the_same_secret() {
        let composed = Password::parse_new("caf\u{e9}-password").unwrap();
        let decomposed = Password::parse_new("cafe\u{301}-password").unwrap();
        assert_eq!(composed.as_bytes(), decomposed.as_bytes());
    }

    #[test]
    fn password_debug_is_redacted() {
        let password = Password::parse_new("hunter2hunter2").unwrap();
        assert!(!format!("{password:?}").contains("hunter"));
    }

    #[test]
    fn signup_reports_every_bad_field() {
        let request = pb::SignUpRequest { email: "nope".into(), password: "short".into() };
        let violations = NewAccount::try_from(request).unwrap_err();
        let fields: Vec<_> = violations.fields().map(|(f, _)| f).collect();
        assert_eq!(fields, ["email", "password"]);
    }
}
