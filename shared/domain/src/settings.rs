//! Organization settings (docs/contract.md §3 `/v1/settings`), kept as events on the organization's
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
    /// Enforced within each team: a username collides only with the usernames of users who
    /// share a team with it.
    Team,
}

/// An organization's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrgSettings {
    /// See [`UniqueUsernames`].
    #[serde(default)]
    pub enforce_unique_usernames: UniqueUsernames,
    /// Whether `POST /v1/guests` creates guest users (off by default).
    #[serde(default)]
    pub allow_guests: bool,
    /// Whether `POST /v1/sessions/anonymous` hands out anonymous tokens (off by default).
    #[serde(default)]
    pub allow_anonymous: bool,
}

/// The settings event: the organization's settings after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SettingsChanged {
    /// The new settings.
    pub settings: OrgSettings,
}

crate::one_part!(public: SettingsChanged);
crate::json_as_is!(SettingsChanged);

crate::event_set! {
    /// Every event of an organization's settings.
    pub enum SettingsEvent {
        /// See [`SettingsChanged`].
        SettingsChanged(SettingsChanged) = 1,
    }
}

impl crate::events::KeyedEvents for SettingsEvent {}

/// An organization's settings as an aggregate on its `settings` stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings(pub OrgSettings);

/// Replaces the settings (unchanged settings record nothing).
#[derive(Clone, Debug)]
pub struct ChangeSettings(pub OrgSettings);

impl crate::aggregate::Aggregate for Settings {
    type Event = SettingsEvent;
    type Command = ChangeSettings;
    const STREAM_PREFIX: &'static str = SETTINGS_STREAM;

    fn apply(
        _state: Option<Self>,
        event: &SettingsEvent,
        _at: crate::aggregate::Recorded<'_>,
    ) -> Option<Self> {
        let SettingsEvent::SettingsChanged(change) = event;
        Some(Settings(change.settings.clone()))
    }

    fn decide(
        state: Option<&Self>,
        command: &ChangeSettings,
    ) -> Result<crate::aggregate::Decision<SettingsEvent>, crate::DomainError> {
        let current = state.map(|s| &s.0).cloned().unwrap_or_default();
        Ok(crate::aggregate::Decision::when(
            current != command.0,
            || {
                SettingsEvent::SettingsChanged(SettingsChanged {
                    settings: command.0.clone(),
                })
            },
        ))
    }
}
