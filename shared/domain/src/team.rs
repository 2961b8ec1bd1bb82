//! Teams (docs/teams.md) as an aggregate on the stream `team-<id>`: a name, and every change of
//! its membership. A membership is recorded on both sides in one atomic append: the team's
//! stream says who joined or left (`MemberAdded`, `MemberRemoved`: the team's version moves on
//! every change of its members, so a deletion that read them at a version cannot miss one),
//! the user's stream says which teams it is in (`TeamJoined`, `TeamLeft`: a rename claims its
//! team-level username in each of them). The team's state is small — its name and how many
//! members it has — so a team of any size loads in constant time; who the members are is a
//! read model.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, Decision, Recorded};
use crate::error::DomainError;
use crate::events::KeyedEvents;
use crate::values::UserId;
use crate::{event_set, json_as_is, one_part};

/// Prefix of team stream names.
pub const TEAM_STREAM_PREFIX: &str = "team-";
/// Longest team name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Most roles of one membership.
pub const MAX_ROLES: usize = 20;
/// Longest role, in characters.
pub const MAX_ROLE_CHARS: usize = 64;

/// A team was created (or its id taken again after a deletion).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TeamCreated {
    /// Its name.
    pub name: String,
}

/// A team's name changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TeamRenamed {
    /// The new name.
    pub name: String,
}

/// A user joined the team.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberAdded {
    /// The membership's id.
    pub membership_id: String,
    /// The member.
    pub user_id: String,
    /// Its roles in the team.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A membership's roles changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberRolesChanged {
    /// The membership's id.
    pub membership_id: String,
    /// The member.
    pub user_id: String,
    /// The roles now.
    pub roles: Vec<String>,
}

/// A membership ended: removed, the team deleted, or the user pruned or hard-deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberRemoved {
    /// The membership's id.
    pub membership_id: String,
    /// The member it was.
    pub user_id: String,
}

/// The team was deleted (after every membership ended: its last members' `MemberRemoved`
/// are in the same append).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TeamDeleted {}

one_part!(public: TeamCreated, TeamRenamed, MemberAdded, MemberRolesChanged, MemberRemoved, TeamDeleted);
json_as_is!(
    TeamCreated,
    TeamRenamed,
    MemberAdded,
    MemberRolesChanged,
    MemberRemoved,
    TeamDeleted
);

event_set! {
    /// Every event of a team.
    pub enum TeamEvent {
        /// See [`TeamCreated`].
        TeamCreated(TeamCreated) = 1,
        /// See [`TeamRenamed`].
        TeamRenamed(TeamRenamed) = 1,
        /// See [`MemberAdded`].
        MemberAdded(MemberAdded) = 1,
        /// See [`MemberRolesChanged`].
        MemberRolesChanged(MemberRolesChanged) = 1,
        /// See [`MemberRemoved`].
        MemberRemoved(MemberRemoved) = 1,
        /// See [`TeamDeleted`].
        TeamDeleted(TeamDeleted) = 1,
    }
}

impl KeyedEvents for TeamEvent {}

/// A team as its events made it (also its read-model row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Team {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// How many members it has.
    pub total: u64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its name or members last changed.
    pub updated_at: DateTime<Utc>,
    /// The stream version this state is at (the team's ETag).
    pub version: u64,
}

/// A membership as the read model keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    /// Its id.
    pub id: String,
    /// The team.
    pub team_id: String,
    /// The member.
    pub user_id: String,
    /// Its roles in the team.
    pub roles: Vec<String>,
    /// When it began.
    pub joined_at: DateTime<Utc>,
}

/// A membership to add.
#[derive(Clone, Debug)]
pub struct AddMember {
    /// The membership's id (chosen by the caller).
    pub membership_id: String,
    /// The member.
    pub user_id: UserId,
    /// Its roles (checked at the edge).
    pub roles: Vec<String>,
}

/// Commands to a team (validated at the edge: name and roles within their limits).
#[derive(Clone, Debug)]
pub enum TeamCommand {
    /// Create it (a deleted team's id may be taken again).
    Create {
        /// Its name.
        name: String,
    },
    /// Rename it.
    Rename(String),
    /// Record a new member (the user's side — not already a member — is the user's decision).
    Add(AddMember),
    /// Change a member's roles.
    ChangeRoles(MemberRolesChanged),
    /// End these memberships (each recorded as a member of the team by the user's side).
    Remove(Vec<MemberRemoved>),
    /// End these memberships, then delete the team: refused while it would keep members.
    Delete(Vec<MemberRemoved>),
}

impl Aggregate for Team {
    type Event = TeamEvent;
    type Command = TeamCommand;
    const STREAM_PREFIX: &'static str = TEAM_STREAM_PREFIX;

    fn apply(state: Option<Self>, event: &TeamEvent, at: Recorded<'_>) -> Option<Self> {
        let mut team = match (state, event) {
            (_, TeamEvent::TeamDeleted(_)) => return None,
            (None, TeamEvent::TeamCreated(c)) => Team {
                id: at.id.to_owned(),
                name: c.name.clone(),
                total: 0,
                created_at: at.at,
                updated_at: at.at,
                version: at.version,
            },
            (None, _) => return None,
            (Some(team), TeamEvent::TeamCreated(_)) => team,
            (Some(mut team), TeamEvent::TeamRenamed(r)) => {
                team.name.clone_from(&r.name);
                team
            }
            (Some(mut team), TeamEvent::MemberAdded(_)) => {
                team.total += 1;
                team
            }
            (Some(mut team), TeamEvent::MemberRemoved(_)) => {
                team.total = team.total.saturating_sub(1);
                team
            }
            (Some(team), TeamEvent::MemberRolesChanged(_)) => team,
        };
        team.updated_at = at.at;
        team.version = at.version;
        Some(team)
    }

    fn decide(
        state: Option<&Self>,
        command: &TeamCommand,
    ) -> Result<Decision<TeamEvent>, DomainError> {
        Ok(match (state, command) {
            (None, TeamCommand::Create { name }) => {
                Decision::event(TeamEvent::TeamCreated(TeamCreated { name: name.clone() }))
            }
            (Some(_), TeamCommand::Create { .. }) => {
                return Err(DomainError::Conflict("a team with this id exists"));
            }
            (None, _) => return Err(DomainError::NotFound),
            (Some(team), TeamCommand::Rename(name)) => Decision::when(team.name != *name, || {
                TeamEvent::TeamRenamed(TeamRenamed { name: name.clone() })
            }),
            (Some(_), TeamCommand::Add(add)) => {
                Decision::event(TeamEvent::MemberAdded(MemberAdded {
                    membership_id: add.membership_id.clone(),
                    user_id: add.user_id.to_string(),
                    roles: add.roles.clone(),
                }))
            }
            (Some(_), TeamCommand::ChangeRoles(change)) => {
                Decision::event(TeamEvent::MemberRolesChanged(change.clone()))
            }
            (Some(_), TeamCommand::Remove(removed)) => Decision {
                events: removed
                    .iter()
                    .cloned()
                    .map(TeamEvent::MemberRemoved)
                    .collect(),
                ..Decision::nothing()
            },
            (Some(team), TeamCommand::Delete(removed)) => {
                if (removed.len() as u64) < team.total {
                    return Err(DomainError::Conflict("the team still has members"));
                }
                let mut events: Vec<TeamEvent> = removed
                    .iter()
                    .cloned()
                    .map(TeamEvent::MemberRemoved)
                    .collect();
                events.push(TeamEvent::TeamDeleted(TeamDeleted {}));
                Decision {
                    events,
                    ..Decision::nothing()
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: u64) -> Recorded<'static> {
        Recorded {
            id: "t1",
            org: "default",
            at: Utc::now(),
            version,
        }
    }

    fn fold(events: &[TeamEvent]) -> Option<Team> {
        events
            .iter()
            .enumerate()
            .fold(None, |s, (i, e)| Team::apply(s, e, at(i as u64 + 1)))
    }

    fn removed(user: &str) -> MemberRemoved {
        MemberRemoved {
            membership_id: format!("m-{user}"),
            user_id: user.into(),
        }
    }

    #[test]
    fn members_count_and_a_team_with_members_is_not_deleted_without_them() {
        let create = Team::decide(None, &TeamCommand::Create { name: "A".into() }).unwrap();
        let mut events = create.events;
        let team = fold(&events).unwrap();
        let add = |u: &str| {
            TeamCommand::Add(AddMember {
                membership_id: format!("m-{u}"),
                user_id: UserId::parse(u).unwrap(),
                roles: vec!["owner".into()],
            })
        };
        events.extend(Team::decide(Some(&team), &add("a")).unwrap().events);
        events.extend(Team::decide(Some(&team), &add("b")).unwrap().events);
        let team = fold(&events).unwrap();
        assert_eq!((team.total, team.version), (2, 3));
        assert!(matches!(
            Team::decide(Some(&team), &TeamCommand::Delete(vec![removed("a")])),
            Err(DomainError::Conflict(_))
        ));
        let delete = TeamCommand::Delete(vec![removed("a"), removed("b")]);
        events.extend(Team::decide(Some(&team), &delete).unwrap().events);
        assert_eq!(fold(&events), None);
        assert_eq!(
            Team::decide(None, &TeamCommand::Rename("B".into())).unwrap_err(),
            DomainError::NotFound
        );
    }
}
