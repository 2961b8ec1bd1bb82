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

/// Reservation key that makes a username unique within a team.
pub fn team_username_reservation(
    blind: &BlindIndex,
    org: &str,
    team: &str,
    normalized: &str,
) -> String {
    format!(
        "g/{org}/{}",
        blind.hash(&format!("team-username/{org}/{team}"), normalized)
    )
}

/// Reservation key that makes a linked identity (provider and subject) unique in its
/// organization.
pub fn identity_reservation(
    blind: &BlindIndex,
    org: &str,
    provider: &str,
    subject: &str,
) -> String {
    format!(
        "p/{org}/{}",
        blind.hash(&format!("identity/{org}/{provider}"), subject)
    )
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
    /// A username within a team.
    TeamUsername,
    /// A linked identity.
    Identity,
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
        Some("g") => ReservationKind::TeamUsername,
        Some("p") => ReservationKind::Identity,
        _ => ReservationKind::Other,
    }
}
