//! Organization settings (API.md §3 `/v1/settings`), kept as events on the organization's
//! `settings` stream.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the stream holding an organization's settings events.
pub const SETTINGS_STREAM: &str = "settings";

/// Whether usernames must be unique (by normalized form) within the organization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UniqueUsernames {
    /// Duplicates allowed.
    No,
    /// Enforced by the application (the default).
    #[default]
    App,
}

/// An organization's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrgSettings {
    /// See [`UniqueUsernames`].
    #[serde(default)]
    pub enforce_unique_usernames: UniqueUsernames,
}

/// The settings event: the organization's settings after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SettingsChanged {
    /// The new settings.
    pub settings: OrgSettings,
}

/// Event type name of [`SettingsChanged`].
pub const SETTINGS_CHANGED: &str = "SettingsChanged";
