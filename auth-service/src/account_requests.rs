//! ChangePassword and DeleteAccount requests, valid by construction.

use todo_contract::auth::v1 as pb;
use todo_shared::validation::FieldViolations;

use crate::domain::{Password, PasswordError};

/// A validated ChangePassword request. Whether the new password is the account's email is
/// checked by [`crate::accounts::Accounts::change_password`], which knows the email.
#[derive(Debug)]
pub struct PasswordChange {
    pub current: Password,
    pub new: Password,
}

impl TryFrom<pb::ChangePasswordRequest> for PasswordChange {
    type Error = FieldViolations;

    fn try_from(request: pb::ChangePasswordRequest) -> Result<Self, Self::Error> {
        let mut violations = FieldViolations::new();
        let current = violations.check("current_password", Password::parse_login(&request.current_password));
        let new = violations.check("new_password", Password::parse_new(&request.new_password));
        violations.into_result(|| Some(Self { current: current?, new: new? }))
    }
}

/// A validated DeleteAccount request.
#[derive(Debug)]
pub struct AccountDeletion {
    pub password: Password,
}

impl TryFrom<pb::DeleteAccountRequest> for AccountDeletion {
    type Error = FieldViolations;

    fn try_from(request: pb::DeleteAccountRequest) -> Result<Self, Self::Error> {
        let mut violations = FieldViolations::new();
        let password = violations.check("password", Password::parse_login(&request.password));
        violations.into_result(|| Some(Self { password: password? }))
    }
}

/// The violation for a new password equal to the account's email or its local part.
pub fn same_as_email() -> FieldViolations {
    let mut violations = FieldViolations::new();
    violations.add("new_password", PasswordError::SameAsEmail.to_string());
    violations
}
