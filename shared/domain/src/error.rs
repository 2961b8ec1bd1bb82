//! Domain errors: exact variants, so the HTTP layer can map each to a status and a stable code.

use serde::Serialize;

/// One invalid field of a request, with a path such as `users[3].email` or `set.custom.a`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct FieldError {
    /// Where the problem is (a field name, a dotted path, or an indexed path inside a batch).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error with `prefix` in front of its field (`users[3]` + `email` → `users[3].email`).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// Why the aggregate refused a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The command's input breaks a validation rule; every broken rule is listed.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// The user does not exist (never created, or hard-deleted).
    #[error("user not found")]
    NotFound,
    /// A user with this id already exists.
    #[error("a user with this id already exists")]
    IdTaken,
    /// The user is deleted; it must be restored before it can change.
    #[error("user is deleted")]
    UserDeleted,
    /// A wallet change would take a balance below zero.
    #[error("wallet balance of {currency} would become negative ({balance} + {change})")]
    WalletNegative {
        /// The currency that would go negative.
        currency: String,
        /// Its balance now.
        balance: i64,
        /// The requested change.
        change: i64,
    },
    /// The command conflicts with the aggregate's state (it exists, or has ended).
    #[error("{0}")]
    Conflict(&'static str),
    /// A purpose token is wrong, used, superseded or expired (one answer for all of them).
    #[error("token not valid")]
    TokenInvalid,
    /// The user does not hold what the command gives up (an identity not linked to it).
    #[error("{0}")]
    NotHeld(&'static str),
    /// A wallet change would overflow a 64-bit balance.
    #[error("wallet balance of {currency} would overflow")]
    WalletOverflow {
        /// The currency that would overflow.
        currency: String,
    },
}

impl DomainError {
    /// A validation error about a single field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}
