//! Keys of the uniqueness reservations and lookup indexes. Usernames and emails appear only as
//! blind hashes (HMAC with the server secret), scoped to their organization.

use roster_vault::BlindIndex;

/// Blind hash of a normalized username within an organization.
pub fn username_hash(blind: &BlindIndex, org: &str, normalized: &str) -> String {
    blind.hash(&format!("username/{org}"), normalized)
}

/// Blind hash of a normalized email within an organization.
pub fn email_hash(blind: &BlindIndex, org: &str, normalized: &str) -> String {
    blind.hash(&format!("email/{org}"), normalized)
}

/// Reservation key that makes a username unique in its organization.
pub fn username_reservation(blind: &BlindIndex, org: &str, normalized: &str) -> String {
    format!("u/{org}/{}", username_hash(blind, org, normalized))
}

/// Reservation key that makes an email unique in its organization.
pub fn email_reservation(blind: &BlindIndex, org: &str, normalized: &str) -> String {
    format!("e/{org}/{}", email_hash(blind, org, normalized))
}

/// Reservation key that makes a custom token (its `jti`) single-use in its organization.
pub fn custom_token_reservation(org: &str, jti: &str) -> String {
    format!("t/{org}/{jti}")
}

/// What kind of unique value a reservation key guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationKind {
    /// A username.
    Username,
    /// An email.
    Email,
    /// An idempotency key.
    Idempotency,
    /// A custom token already used to sign in.
    CustomToken,
    /// Something else.
    Other,
}

/// Classifies a reservation key by its prefix.
pub fn reservation_kind(key: &str) -> ReservationKind {
    match key.split('/').next() {
        Some("u") => ReservationKind::Username,
        Some("e") => ReservationKind::Email,
        Some("i") => ReservationKind::Idempotency,
        Some("t") => ReservationKind::CustomToken,
        _ => ReservationKind::Other,
    }
}
